"""Pooling: max and average (ceil_mode, dilation, padding counted or not) and global pooling."""

from __future__ import annotations
