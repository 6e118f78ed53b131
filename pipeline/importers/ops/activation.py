"""Activations: elementwise functions of one tensor, and the softmax family.

Each op is one reader (what the ONNX node means, for every opset) and one emitter per
target.  The unary ops need no plan: the emitters are one template per op, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...normalize.patterns import channel_vector, module_name
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation, py_literal
from ..registry import Op, register

# op -> (PyTorch, Keras) expression of ``{x}``
UNARY = {
    "Relu": ("torch.relu({x})", "ops.relu({x})"),
    "Sigmoid": ("torch.sigmoid({x})", "ops.sigmoid({x})"),
    "Tanh": ("torch.tanh({x})", "ops.tanh({x})"),
    "Exp": ("torch.exp({x})", "ops.exp({x})"),
    "Log": ("torch.log({x})", "ops.log({x})"),
    "Sqrt": ("torch.sqrt({x})", "ops.sqrt({x})"),
    "Abs": ("torch.abs({x})", "ops.abs({x})"),
    "Neg": ("-{x}", "ops.negative({x})"),
    "Reciprocal": ("torch.reciprocal({x})", "ops.reciprocal({x})"),
    "Erf": ("torch.erf({x})", "ops.erf({x})"),
    "Floor": ("torch.floor({x})", "ops.floor({x})"),
    "Ceil": ("torch.ceil({x})", "ops.ceil({x})"),
    "Round": ("torch.round({x})", "ops.round({x})"),  # both round half to even, as ONNX
    "Sign": ("torch.sign({x})", "ops.sign({x})"),
    "Sin": ("torch.sin({x})", "ops.sin({x})"),
    "Cos": ("torch.cos({x})", "ops.cos({x})"),
    "Tan": ("torch.tan({x})", "ops.tan({x})"),
    "Atan": ("torch.atan({x})", "ops.arctan({x})"),
    "Softsign": ("F.softsign({x})", "ops.softsign({x})"),
    "Softplus": ("F.softplus({x})", "ops.softplus({x})"),
    "HardSwish": ("F.hardswish({x})", "ops.hard_swish({x})"),
    "Mish": ("F.mish({x})", "ops.multiply({x}, ops.tanh(ops.softplus({x})))"),
    "IsNaN": ("torch.isnan({x})", "ops.isnan({x})"),
    "Not": ("torch.logical_not({x})", "ops.logical_not({x})"),
}


@register
class Unary(Op):
    """Functions with no attributes that both frameworks name."""

    types = tuple(UNARY)
    traits = frozenset({"unary"})

    def torch(self, t: Translation, plan) -> None:
        t.assign(UNARY[t.op][0].format(x=t.inp(0)))

    def keras(self, t: Translation, plan) -> None:
        t.assign(UNARY[t.op][1].format(x=t.inp(0)))


@register
class IsInf(Op):
    types = ("IsInf",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> tuple[bool, bool]:
        return bool(t.int("detect_positive", 1)), bool(t.int("detect_negative", 1))

    def torch(self, t: Translation, which) -> None:
        pos, neg = which
        fn = "torch.isinf" if pos and neg else "torch.isposinf" if pos else "torch.isneginf" if neg else None
        t.assign(f"{fn}({t.inp(0)})" if fn else f"torch.zeros_like({t.inp(0)}, dtype=torch.bool)")

    def keras(self, t: Translation, which) -> None:
        pos, neg = which
        x = t.inp(0)
        expr = ("ops.isinf({x})" if pos and neg else "ops.equal({x}, float('inf'))" if pos
                else "ops.equal({x}, float('-inf'))" if neg else "ops.zeros_like({x}, dtype='bool')")
        t.assign(expr.format(x=x))


def _f32(value: float) -> str:
    return py_literal(np.float32(value))


@register
class LeakyRelu(Op):
    types = ("LeakyRelu",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> float:
        return t.float("alpha", 0.01)

    def torch(self, t: Translation, alpha: float) -> None:
        t.assign(f"F.leaky_relu({t.inp(0)}, {_f32(alpha)})")

    def keras(self, t: Translation, alpha: float) -> None:
        t.assign(f"ops.leaky_relu({t.inp(0)}, negative_slope={_f32(alpha)})")


@register
class ThresholdedRelu(Op):
    """``x`` where ``x > alpha``, else 0."""

    types = ("ThresholdedRelu",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> float:
        return t.float("alpha", 1.0)

    def torch(self, t: Translation, alpha: float) -> None:
        t.assign(f"F.threshold({t.inp(0)}, {_f32(alpha)}, 0.0)")

    def keras(self, t: Translation, alpha: float) -> None:
        x = t.inp(0)
        t.assign(f"ops.where(ops.greater({x}, {_f32(alpha)}), {x}, ops.zeros_like({x}))")


@register
class EluLike(Op):
    """Elu and Celu (``alpha``), Selu (``alpha``, ``gamma``; None when they are the standard ones)."""

    types = ("Elu", "Celu", "Selu")
    traits = frozenset({"unary"})

    def read(self, t: Translation):
        if t.op == "Selu":
            return t.selu_constants()
        return t.float("alpha", 1.0)

    def torch(self, t: Translation, p) -> None:
        x = t.inp(0)
        if t.op == "Selu":
            t.assign(f"F.selu({x})" if p is None else f"{_f32(p[1])} * F.elu({x}, {_f32(p[0])})")
            return
        t.assign(f"{'F.elu' if t.op == 'Elu' else 'F.celu'}({x}, {_f32(p)})")

    def keras(self, t: Translation, p) -> None:
        x = t.inp(0)
        if t.op == "Selu":  # ops.selu has the standard constants only
            t.assign(f"ops.selu({x})" if p is None else f"ops.multiply({_f32(p[1])}, ops.elu({x}, alpha={_f32(p[0])}))")
            return
        t.assign(f"{'ops.elu' if t.op == 'Elu' else 'ops.celu'}({x}, alpha={_f32(p)})")


@register
class Gelu(Op):
    types = ("Gelu",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> bool:
        """True for the tanh approximation."""
        approx = t.str("approximate", "none")
        if approx not in ("none", "tanh"):
            t.unsupported(f"Gelu approximate={approx!r}")
        return approx == "tanh"

    def torch(self, t: Translation, tanh: bool) -> None:
        t.assign(f"F.gelu({t.inp(0)}, approximate='tanh')" if tanh else f"F.gelu({t.inp(0)})")

    def keras(self, t: Translation, tanh: bool) -> None:
        t.assign(f"ops.gelu({t.inp(0)}, approximate={tanh})")


@register
class HardSigmoid(Op):
    """``clip(alpha * x + beta, 0, 1)``; PyTorch's ``hardsigmoid`` is alpha 1/6, beta 0.5."""

    types = ("HardSigmoid",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> tuple[float, float]:
        return t.float("alpha", 0.2), t.float("beta", 0.5)

    def torch(self, t: Translation, p) -> None:
        alpha, beta = p
        if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
            t.assign(f"F.hardsigmoid({t.inp(0)})")
        else:
            t.assign(f"torch.clamp({_f32(alpha)} * {t.inp(0)} + {_f32(beta)}, 0.0, 1.0)")

    def keras(self, t: Translation, p) -> None:
        alpha, beta = p
        t.assign(f"ops.clip(ops.add(ops.multiply({t.inp(0)}, {_f32(alpha)}), {_f32(beta)}), 0.0, 1.0)")


@dataclass
class Bound:
    """One side of a Clip: a constant, or a tensor computed at run time (``index`` of the input)."""

    value: np.ndarray | None = None
    index: int | None = None


@register
class Clip(Op):
    """``min(max(x, lo), hi)``; either bound may be absent.

    Opset 6 gives the bounds as attributes (absent: the type's extremes), opset 11 on
    as optional inputs, which may be computed at run time.
    """

    types = ("Clip",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> tuple[Bound | None, Bound | None]:
        if t.opset < 11:
            lo, hi = t.float("min", None), t.float("max", None)
            return (None if lo is None else Bound(np.float32(lo)),
                    None if hi is None else Bound(np.float32(hi)))
        bounds = []
        for i in (1, 2):
            if not t.has_input(i):
                bounds.append(None)
                continue
            arr = t.const(i)
            if arr is not None and arr.size != 1:
                t.unsupported(f"a Clip bound of shape {arr.shape} (the spec wants a scalar)")
            bounds.append(Bound(arr.reshape(())) if arr is not None else Bound(index=i))
        return bounds[0], bounds[1]

    @staticmethod
    def _relu6(lo: Bound | None, hi: Bound | None) -> bool:
        return (lo is not None and hi is not None and lo.value is not None and hi.value is not None
                and float(lo.value) == 0.0 and float(hi.value) == 6.0)

    @staticmethod
    def _expr(t: Translation, b: Bound) -> str:
        return py_literal(b.value) if b.value is not None else t.inp(b.index)

    def torch(self, t: Translation, p) -> None:
        lo, hi = p
        x = t.inp(0)
        if lo is None and hi is None:
            t.alias(x)
        elif self._relu6(lo, hi):
            t.assign(f"F.relu6({x})")
        else:
            args = ([f"min={self._expr(t, lo)}"] if lo else []) + ([f"max={self._expr(t, hi)}"] if hi else [])
            t.assign(f"torch.clamp({x}, {', '.join(args)})")

    def keras(self, t: Translation, p) -> None:
        lo, hi = p
        x = t.inp(0)
        if lo is None and hi is None:
            t.alias(x)
        elif self._relu6(lo, hi):
            t.assign(f"ops.relu6({x})")
        elif lo and hi:
            t.assign(f"ops.minimum(ops.maximum({x}, {self._expr(t, lo)}), {self._expr(t, hi)})")
        else:  # one bound: no infinite stand-in for the other, which an integer tensor could not take
            t.assign(f"ops.maximum({x}, {self._expr(t, lo)})" if lo else f"ops.minimum({x}, {self._expr(t, hi)})")


@register
class Softmax(Op):
    """Softmax and LogSoftmax over ``axis``.

    Before opset 13 the input is seen as 2-D: axes ``axis..`` flattened into one, which
    is the same as one axis only when ``axis`` is the last.  The plan is
    ``(axis, flattened)``.
    """

    types = ("Softmax", "LogSoftmax")

    def read(self, t: Translation) -> tuple[int, bool]:
        rank = t.rank(0)
        if t.opset < 13:
            axis = t.int("axis", 1) % max(rank, 1)
            return axis, axis < rank - 1
        return t.int("axis", -1) % max(rank, 1), False

    def torch(self, t: Translation, p) -> None:
        axis, flat = p
        fn = "torch.softmax" if t.op == "Softmax" else "torch.log_softmax"
        x = t.inp(0)
        if flat:
            t.assign(f"{fn}({x}.flatten({axis}), dim={axis}).reshape({x}.shape)",
                     comment="opset < 13: over every axis from the given one")
        else:
            rank = t.rank(0)
            t.assign(f"{fn}({x}, dim={-1 if axis == rank - 1 else axis})")

    def keras(self, t: Translation, p) -> None:
        axis, flat = p
        fn = "ops.softmax" if t.op == "Softmax" else "ops.log_softmax"
        x = t.inp(0)
        if flat:
            shape = t.shape(0)
            t.assign(f"ops.reshape({fn}(ops.reshape({x}, {tuple(shape[:axis]) + (-1,)}), axis=-1), {tuple(shape)})",
                     comment="opset < 13: over every axis from the given one")
        else:
            t.assign(f"{fn}({x}, axis={-1 if axis == t.rank(0) - 1 else axis})")


@register
class PRelu(Op):
    """``x`` where ``x >= 0``, else ``slope * x``; the slope broadcasts (one per channel, usually).

    Plan: the slope as a ``(C,)`` vector on axis 1 (PyTorch's ``nn.PReLU``), the constant
    slope laid out for Keras' ``layers.PReLU`` (shared over the batch), or None for the expression.
    """

    types = ("PRelu",)
    traits = frozenset({"binary"})

    def read(self, t: Translation):
        return t.const(1), t.shape(0)

    def torch(self, t: Translation, p) -> None:
        slope, shape = p
        x = t.inp(0)
        vec = channel_vector(slope, len(shape), shape[1]) if slope is not None and len(shape) >= 2 else None
        if vec is not None:
            one = slope.size == 1
            mod = T.module(t, "nn.PReLU()" if one else f"nn.PReLU({shape[1]})", {"weight": vec[:1] if one else vec},
                           name=module_name(t.node))
            t.assign(f"self.{mod}({x})")
            return
        t.assign(f"torch.where({x} >= 0, {x}, {x} * {t.inp(1)})")

    def keras(self, t: Translation, p) -> None:
        slope, shape = p
        x = t.inp(0)
        if slope is not None and len(shape) >= 2 and slope.ndim <= len(shape):
            full = slope.reshape((1,) * (len(shape) - slope.ndim) + slope.shape)
            if full.shape[0] == 1 and all(d in (1, n) for d, n in zip(full.shape, shape)):
                shared = [i for i in range(1, len(shape)) if full.shape[i] == 1]
                args = [f"shared_axes={shared}"] if shared else []
                t.assign(K.layer(t, "PReLU", args, [full[0].astype(np.float32)], x, name=module_name(t.node)))
                return
        t.assign(f"ops.where(ops.greater_equal({x}, 0.0), {x}, ops.multiply({x}, {t.inp(1)}))")
