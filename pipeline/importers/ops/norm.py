"""Normalization: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN."""

from __future__ import annotations
