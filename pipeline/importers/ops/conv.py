"""Convolutions: Conv and ConvTranspose in 1-D, 2-D and 3-D."""

from __future__ import annotations
