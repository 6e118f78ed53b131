"""Reductions: Reduce*, ArgMax/ArgMin, CumSum, TopK."""

from __future__ import annotations
