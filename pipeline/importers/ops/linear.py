"""Matrix products: MatMul, Gemm, Einsum."""

from __future__ import annotations
