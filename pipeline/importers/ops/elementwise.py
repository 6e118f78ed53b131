"""Elementwise arithmetic, comparison and logic with numpy broadcasting; Where, Cast, Identity, Dropout.

Keras' TensorFlow backend runs some ``ops.add`` calls as ``tf.nn.bias_add`` on the wrong
axis (see ``keras_emit.add``): every Keras addition here goes through that guard.
"""

from __future__ import annotations

import numpy as np

from ...normalize.graph import static_shape
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register

# op -> (PyTorch infix operator or function, Keras function)
ARITHMETIC = {"Add": ("+", "ops.add"), "Sub": ("-", "ops.subtract"), "Mul": ("*", "ops.multiply"),
              "Div": ("/", "ops.divide"), "Pow": ("**", "ops.power")}
COMPARE = {"Equal": ("==", "ops.equal"), "Greater": (">", "ops.greater"), "Less": ("<", "ops.less"),
           "GreaterOrEqual": (">=", "ops.greater_equal"), "LessOrEqual": ("<=", "ops.less_equal")}
LOGIC = {"And": ("torch.logical_and", "ops.logical_and"), "Or": ("torch.logical_or", "ops.logical_or"),
         "Xor": ("torch.logical_xor", "ops.logical_xor")}


def _integer(t: Translation) -> bool:
    return bool(np.issubdtype(T.np_dtype(t), np.integer))


@register
class Binary(Op):
    """Two-input arithmetic, comparison and logic.

    Plan: the input that may be dropped because the node multiplies or divides by a
    constant 1 of the output's shape and type (``x * 1``, ``x / 1``), else None.
    """

    types = (*ARITHMETIC, *COMPARE, *LOGIC)
    traits = frozenset({"binary"})

    def read(self, t: Translation) -> int | None:
        for i in ((0, 1) if t.op == "Mul" else (1,) if t.op == "Div" else ()):
            one, other = t.const(i), t.node.inputs[1 - i]
            if (one is not None and one.size == 1 and float(one.reshape(())) == 1.0 and other.dtype == t.out_dtype()
                    and static_shape(other) is not None and static_shape(other) == static_shape(t.node.outputs[0])):
                return 1 - i
        return None

    def torch(self, t: Translation, keep: int | None) -> None:
        if keep is not None:
            t.alias(t.inp(keep))
            return
        a, b = t.inp(0), t.inp(1)
        if t.op in LOGIC:
            if (first := t.const(0)) is not None and first.ndim == 0:  # torch.logical_and takes no bool first
                a = f"torch.tensor({a})"
            t.assign(f"{LOGIC[t.op][0]}({a}, {b})")
        elif t.op == "Div" and _integer(t):
            t.assign(f"torch.div({a}, {b}, rounding_mode='trunc')")
        else:
            t.assign(f"{a} {(ARITHMETIC.get(t.op) or COMPARE[t.op])[0]} {b}")

    def keras(self, t: Translation, keep: int | None) -> None:
        if keep is not None:
            t.alias(t.inp(keep))
            return
        a, b = t.inp(0), t.inp(1)
        if t.op == "Add":
            expr, note = K.add(a, static_shape(t.value(0)), b, static_shape(t.value(1)))
            t.assign(expr, comment=note)
        elif t.op == "Div" and _integer(t):
            # ONNX truncates toward zero; floor_divide rounds down: one more where the signs differ and it is inexact
            q = f"ops.floor_divide({a}, {b})"
            fix = f"ops.logical_and(ops.not_equal(ops.mod({a}, {b}), 0), ops.not_equal(ops.less({a}, 0), ops.less({b}, 0)))"
            t.assign(f"ops.where({fix}, ops.add({q}, 1), {q})", comment="integer division truncates toward zero")
        else:
            fn = (ARITHMETIC.get(t.op) or COMPARE.get(t.op) or LOGIC[t.op])[1]
            t.assign(f"{fn}({a}, {b})")


@register
class Variadic(Op):
    """Max, Min, Sum and Mean of any number of inputs.

    Plan for Max/Min: the index of a constant scalar operand when there are two inputs
    (``torch.clamp``), else None.
    """

    types = ("Max", "Min", "Sum", "Mean")
    traits = frozenset({"binary"})

    def read(self, t: Translation) -> int | None:
        n = len(t.node.inputs)
        if t.op in ("Max", "Min") and n == 2:
            scalars = [i for i in range(2) if t.const(i) is not None and t.const(i).ndim == 0]
            if len(scalars) == 1 and t.const(1 - scalars[0]) is None:
                return scalars[0]
        return None

    def torch(self, t: Translation, bound: int | None) -> None:
        names = [t.inp(i) for i in range(len(t.node.inputs))]
        if t.op in ("Sum", "Mean"):
            expr = " + ".join(names)
            t.assign(f"({expr}) / {len(names)}" if t.op == "Mean" and len(names) > 1 else expr)
            return
        if bound is not None:
            t.assign(f"torch.clamp({names[1 - bound]}, {'min' if t.op == 'Max' else 'max'}={names[bound]})")
            return
        fn = "torch.maximum" if t.op == "Max" else "torch.minimum"
        expr = names[0]
        for other in names[1:]:
            expr = f"{fn}({expr}, {other})"
        t.assign(expr)

    def keras(self, t: Translation, bound: int | None) -> None:
        n = len(t.node.inputs)
        if t.op in ("Max", "Min"):
            fn = "ops.maximum" if t.op == "Max" else "ops.minimum"
            expr = t.inp(0)
            for i in range(1, n):
                expr = f"{fn}({expr}, {t.inp(i)})"
            t.assign(expr)
            return
        expr, shape = t.inp(0), static_shape(t.node.inputs[0])
        notes = []
        for i in range(1, n):
            other = static_shape(t.node.inputs[i])
            expr, note = K.add(expr, shape, t.inp(i), other)
            notes += [note] if note else []
            shape = None if shape is None or other is None else tuple(np.broadcast_shapes(shape, other))
        if t.op == "Mean" and n > 1:
            expr = f"ops.divide({expr}, {n}.0)"
        t.assign(expr, comment=notes[0] if notes else None)


@register
class Mod(Op):
    """``fmod=0``: the remainder takes the divisor's sign (Python's ``%``); ``fmod=1``: the dividend's (C's fmod)."""

    types = ("Mod",)
    traits = frozenset({"binary"})

    def read(self, t: Translation) -> bool:
        fmod = bool(t.int("fmod", 0))
        if not fmod and not _integer(t):
            t.unsupported("Mod with fmod=0 on floating-point inputs (the spec requires fmod=1 there)")
        return fmod

    def torch(self, t: Translation, fmod: bool) -> None:
        t.assign(f"{'torch.fmod' if fmod else 'torch.remainder'}({t.inp(0)}, {t.inp(1)})")

    def keras(self, t: Translation, fmod: bool) -> None:
        t.assign(f"{'ops.fmod' if fmod else 'ops.mod'}({t.inp(0)}, {t.inp(1)})")


@register
class BitShift(Op):
    types = ("BitShift",)
    traits = frozenset({"binary"})

    def read(self, t: Translation) -> bool:
        """True for a left shift."""
        return t.str("direction") == "LEFT"

    def torch(self, t: Translation, left: bool) -> None:
        t.assign(f"torch.bitwise_{'left' if left else 'right'}_shift({t.inp(0)}, {t.inp(1)})")

    def keras(self, t: Translation, left: bool) -> None:
        t.assign(f"ops.{'left' if left else 'right'}_shift({t.inp(0)}, {t.inp(1)})")


@register
class Where(Op):
    types = ("Where",)
    traits = frozenset({"binary"})

    def torch(self, t: Translation, plan) -> None:
        t.assign(f"torch.where({t.inp(0)}, {t.inp(1)}, {t.inp(2)})")

    def keras(self, t: Translation, plan) -> None:
        t.assign(f"ops.where({t.inp(0)}, {t.inp(1)}, {t.inp(2)})")


@register
class Cast(Op):
    types = ("Cast",)
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> int:
        to = t.int("to")
        if to not in T.DTYPE_NAMES or to not in K.KERAS_DTYPES:
            t.unsupported(f"cast to ONNX type {to}")
        return to

    def torch(self, t: Translation, to: int) -> None:
        t.assign(f"{t.inp(0)}.to({T.DTYPE_NAMES[to]})")

    def keras(self, t: Translation, to: int) -> None:
        t.assign(f"ops.cast({t.inp(0)}, {K.KERAS_DTYPES[to]!r})")


@register
class Identity(Op):
    """Identity, and Dropout at inference: the input itself; Dropout's mask, when read, is all true."""

    types = ("Identity", "Dropout")
    traits = frozenset({"unary"})

    def read(self, t: Translation) -> bool:
        """Whether Dropout's mask output is read."""
        if t.op == "Dropout" and t.has_input(2):
            training = t.const(2)
            if training is None or bool(training.reshape(())):
                t.unsupported("Dropout in training mode (random): convert the model in eval mode")
        outs = t.node.outputs
        return len(outs) > 1 and (bool(outs[1].uses()) or outs[1].is_graph_output())

    def torch(self, t: Translation, mask: bool) -> None:
        t.alias(t.inp(0))
        if mask:
            t.assign(f"torch.ones_like({t.inp(0)}, dtype=torch.bool)", 1, comment="inference: nothing dropped")

    def keras(self, t: Translation, mask: bool) -> None:
        t.alias(t.inp(0))
        if mask:
            t.assign(f"ops.ones_like({t.inp(0)}, dtype='bool')", 1, comment="inference: nothing dropped")
