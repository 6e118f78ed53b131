"""Matrix products: MatMul, Gemm, Einsum.

A product with a constant 2-D weight is a layer (``nn.Linear`` / ``layers.Dense``): the
reader finds it, with the constant bias ``Add`` after it and, for the
``Reshape(x, (-1, K)) -> MatMul -> Reshape(back)`` that tf2onnx writes for a Dense on an
N-D input, the two reshapes, since both layers act on the last axis of any tensor.
Everything else is the plain product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from ...normalize.graph import const_array, named_dims, static_shape
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation, py_literal
from ..registry import Op, register


@dataclass
class Layer:
    """``y = x @ weight + bias`` as one layer; ``absorbed`` nodes (reshape back, Add) end at its output."""

    weight: np.ndarray  # (in, out): ONNX's orientation, x @ weight
    bias: np.ndarray | None
    x: ir.Value
    absorbed: list[ir.Node] = field(default_factory=list)


def linear_nd(node: ir.Node):
    """``Reshape(x, (-1, K)) -> MatMul(W) -> Reshape(back)``: a layer on ``x`` itself.

    Returns the original input and the reshape back, or None.  The first Reshape's
    translator asks this too: it is then not written at all.
    """
    w = const_array(node.inputs[1]) if node.op_type == "MatMul" else None
    flat = node.inputs[0].producer()
    if w is None or w.ndim != 2 or flat is None or flat.op_type != "Reshape":
        return None
    if len(flat.outputs[0].consumers()) != 1 or flat.outputs[0].is_graph_output():
        return None
    x = flat.inputs[0]
    shape, flat_shape = named_dims(x), static_shape(flat.outputs[0])
    if shape is None or len(shape) < 3 or shape[-1] != w.shape[0]:
        return None
    target = const_array(flat.inputs[1])
    flat_to_rows = target is not None and target.tolist() == [-1, w.shape[0]]  # whatever the sizes before
    if not flat_to_rows and (not all(isinstance(d, int) for d in shape)
                             or flat_shape != (int(np.prod(shape[:-1])), w.shape[0])):
        return None
    users = node.outputs[0].consumers()
    if len(users) != 1 or node.outputs[0].is_graph_output() or users[0].op_type != "Reshape":
        return None
    if named_dims(users[0].outputs[0]) != list(shape[:-1]) + [w.shape[1]]:
        return None
    return x, users[0]


def _bias_vector(c: np.ndarray | None, units: int) -> np.ndarray | None:
    """Gemm's C as one bias per output unit, if it is one (a scalar, ``(units,)`` or ``(1, units)``)."""
    if c is None:
        return None
    if c.size == 1 or (c.shape[-1] == units and c.size == units):
        return np.broadcast_to(c.reshape(-1), (units,)).astype(np.float32)
    return None


@dataclass
class Product:
    """A Gemm written as a plain product: ``alpha * A' @ B' + beta * C``."""

    alpha: float
    beta: float
    trans_a: bool
    trans_b: bool
    has_c: bool


@register
class MatMul(Op):
    types = ("MatMul",)

    def read(self, t: Translation) -> Layer | None:
        w = t.const(1)
        if w is None or w.ndim != 2 or t.const(0) is not None:
            return None
        nd = linear_nd(t.node)
        if nd is not None:
            x, back = nd
            bias, add = t.following_bias(w.shape[1], back)
            return Layer(w, bias, x, [back] + ([add] if add is not None else []))
        bias, add = t.following_bias(w.shape[1])
        return Layer(w, bias, t.value(0), [add] if add is not None else [])

    def torch(self, t: Translation, plan: Layer | None) -> None:
        if plan is None:
            t.assign(f"torch.matmul({t.inp(0)}, {t.inp(1)})")
        else:
            _torch_layer(t, plan)

    def keras(self, t: Translation, plan: Layer | None) -> None:
        if plan is None:
            t.assign(f"ops.matmul({t.inp(0)}, {t.inp(1)})")
        else:
            _keras_layer(t, plan)


@register
class Gemm(Op):
    types = ("Gemm",)

    def read(self, t: Translation) -> Layer | Product:
        alpha, beta = t.float("alpha", 1.0), t.float("beta", 1.0)
        ta, tb = bool(t.int("transA", 0)), bool(t.int("transB", 0))
        w = t.const(1)
        if w is not None and alpha == 1.0 and not ta and t.const(0) is None:
            weight = w.T if tb else w
            c = t.const(2) if t.has_input(2) else None
            bias = _bias_vector(c, weight.shape[1]) if beta == 1.0 else None
            if not t.has_input(2) or bias is not None:
                return Layer(np.ascontiguousarray(weight), bias, t.value(0))
        return Product(alpha, beta, ta, tb, t.has_input(2))

    def torch(self, t: Translation, plan) -> None:
        if isinstance(plan, Layer):
            _torch_layer(t, plan)
            return
        a = f"{t.inp(0)}.T" if plan.trans_a else t.inp(0)
        b = f"{t.inp(1)}.T" if plan.trans_b else t.inp(1)
        expr = f"torch.matmul({a}, {b})"
        if plan.alpha != 1.0:
            expr = f"{py_literal(np.float32(plan.alpha))} * {expr}"
        if plan.has_c:
            c = t.inp(2) if plan.beta == 1.0 else f"{py_literal(np.float32(plan.beta))} * {t.inp(2)}"
            expr = f"{expr} + {c}"
        t.assign(expr)

    def keras(self, t: Translation, plan) -> None:
        if isinstance(plan, Layer):
            _keras_layer(t, plan)
            return
        a = f"ops.transpose({t.inp(0)})" if plan.trans_a else t.inp(0)
        b = f"ops.transpose({t.inp(1)})" if plan.trans_b else t.inp(1)
        expr = f"ops.matmul({a}, {b})"
        if plan.alpha != 1.0:
            expr = f"ops.multiply({py_literal(np.float32(plan.alpha))}, {expr})"
        if not plan.has_c:
            t.assign(expr)
            return
        c = t.inp(2) if plan.beta == 1.0 else f"ops.multiply({py_literal(np.float32(plan.beta))}, {t.inp(2)})"
        expr, note = K.add(expr, static_shape(t.node.outputs[0]), c, static_shape(t.value(2)))
        t.assign(expr, comment=note)


def _finish(t: Translation, plan: Layer, expr: str) -> None:
    """Assign the layer's call to the last absorbed node's output (or this node's)."""
    if not plan.absorbed:
        t.assign(expr)
        return
    name = t.gen.var(plan.absorbed[-1].outputs[0])
    t.gen.emit(f"{name} = {expr}")
    for node in plan.absorbed:
        t.absorb(node, name)


def _torch_layer(t: Translation, plan: Layer) -> None:
    in_f, out_f = plan.weight.shape
    args = [str(in_f), str(out_f)] + ([] if plan.bias is not None else ["bias=False"])
    mod = T.module(t, f"nn.Linear({', '.join(args)})",
                   {"weight": np.ascontiguousarray(plan.weight.T), "bias": plan.bias})
    _finish(t, plan, f"self.{mod}({t.gen.expr(plan.x)})")


def _keras_layer(t: Translation, plan: Layer) -> None:
    args = [str(plan.weight.shape[1])] + ([] if plan.bias is not None else ["use_bias=False"])
    weights = [np.ascontiguousarray(plan.weight)] + ([plan.bias] if plan.bias is not None else [])
    _finish(t, plan, K.layer(t, "Dense", args, weights, t.gen.expr(plan.x)))


@register
class Einsum(Op):
    types = ("Einsum",)

    def read(self, t: Translation) -> str:
        return t.str("equation").replace(" ", "")

    def torch(self, t: Translation, eq: str) -> None:
        t.assign(f"torch.einsum({eq!r}, {t.inps()})")

    def keras(self, t: Translation, eq: str) -> None:
        t.assign(f"ops.einsum({eq!r}, {t.inps()})")
