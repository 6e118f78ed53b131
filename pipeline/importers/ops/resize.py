"""Resize and Upsample."""

from __future__ import annotations
