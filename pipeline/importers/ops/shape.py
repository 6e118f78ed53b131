"""Shape and layout plumbing: Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Concat, Split, Slice, Expand, Tile, Pad, DepthToSpace, SpaceToDepth."""

from __future__ import annotations
