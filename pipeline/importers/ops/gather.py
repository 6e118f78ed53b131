"""Indexing: Gather (embedding lookups), GatherElements, GatherND."""

from __future__ import annotations
