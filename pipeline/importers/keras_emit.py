"""What every Keras emitter shares: layers, constants, the channels-last check, padding, safe adds.

Layout-sensitive ops arrive wrapped by the ``ChannelsLast`` pass as
``T_pin(cl->cf) -> op -> T_pin(cf->cl)``; the pinned transposes are not emitted,
so a Keras layer reads and writes the channels-last tensors Keras layers expect.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..normalize.graph import PIN_IN, PIN_OUT, pin_role
from ..normalize.padding import same_pads
from .codegen import Translation, py_literal, tuple_or_int

KERAS_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8", 3: "int8"}


def channels_last(t: Translation) -> bool:
    """True if the node sits between pinned transposes (channels-last), False for rank <= 2."""
    producer = t.value(0).producer()
    consumer = t.only_consumer()
    if producer is not None and pin_role(producer) == PIN_IN and consumer is not None and pin_role(consumer) == PIN_OUT:
        return True
    if t.rank(0) <= 2:
        return False
    t.unsupported("layout-sensitive op was not lowered to channels-last")


def layer(t: Translation, cls: str, args: list[str], weights: list | None, x: str, name: str | None = None) -> str:
    """``layers.<cls>(args, name=...)(x)``, its weights registered under the layer's unique name."""
    unique = t.gen.add_layer(name or t.layer_hint(), weights or [])
    return f"layers.{cls}({', '.join(args + [f'name={unique!r}'])})({x})"


def new_constant(t: Translation, arr: np.ndarray, hint: str) -> str:
    """An array computed while generating (not an ONNX value), stored with the model's constants."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 0:
        return py_literal(arr)
    return t.gen.constant(ir.Value(name=f"{t.layer_hint()}_{hint}"), arr)


def tf_3d_same_shifts(in_sizes, kernel, strides, dil) -> bool:
    """Whether TF's CPU 3-D convolution or pooling would shift its ``"same"`` windows: where the
    kernel is shorter than the stride (a negative total padding) it does that instead of
    padding nothing, so explicit padding is needed there."""
    return len(in_sizes) == 3 and any((-(-n // s) - 1) * s + (k - 1) * d + 1 < n
                                      for n, k, s, d in zip(in_sizes, kernel, strides, dil))


def spatial_padding(t: Translation, x: str, nd: int, pads, kernel, strides, dil, allow_causal=False):
    """Return (padding string, x) — possibly after an explicit ZeroPadding layer."""
    if not any(pads):
        return "valid", x
    # Keras' "same" pads by (k - 1) * d over a stride-1 axis whatever its size; over a strided
    # one the amount depends on the size, so a varying size there gets the explicit pads.
    dims = t.dims(0)[2:]
    varying = [not isinstance(n, int) for n in dims]
    in_sizes = [1 if v else n for v, n in zip(varying, dims)]
    same = (not any(v and s != 1 for v, s in zip(varying, strides))
            and pads == same_pads(in_sizes, kernel, strides, dil, upper=True))
    if same and not tf_3d_same_shifts(in_sizes, kernel, strides, dil):
        return "same", x
    begins, ends = pads[:nd], pads[nd:]
    if allow_causal and nd == 1 and strides == [1] and begins[0] == dil[0] * (kernel[0] - 1) and ends[0] == 0:
        return "causal", x
    pairs = tuple((int(b), int(e)) for b, e in zip(begins, ends))
    padding = pairs[0] if nd == 1 else pairs
    name = t.gen.add_layer(t.layer_hint() + "_pad", [])
    var = t.gen.names.take(t.layer_hint() + "_padded")
    note = "asymmetric padding, made explicit" if begins != ends else "explicit padding: Keras 'same' would pad differently here"
    t.gen.emit(f"{var} = layers.ZeroPadding{nd}D({padding}, name={name!r})({x})", note)
    return "valid", var


def pool_pad(t: Translation, x: str, pads, is_max: bool) -> str:
    """``x`` (channels-last) padded by ONNX ``pads``: with -inf before a max, zeros before a mean."""
    nd = len(pads) // 2
    width = [(0, 0)] + [(int(b), int(e)) for b, e in zip(pads[:nd], pads[nd:])] + [(0, 0)]
    fill = ", constant_values=float('-inf')" if is_max else ""
    var = t.gen.names.take(t.layer_hint() + "_padded")
    t.gen.emit(f"{var} = ops.pad({x}, {width}{fill})", "explicit pooling padding")
    return var


def _misplaced(x1: tuple, x2: tuple) -> bool:
    big = [i for i, d in enumerate(x2) if d != 1]
    if len(big) != 1 or len(x1) < 2 or x2[big[0]] not in (x1[1], x1[-1]):
        return False
    bias_axis = len(x1) - 1 if x1[-1] == x2[big[0]] else 1
    return len(x2) > len(x1) or len(x1) - len(x2) + big[0] != bias_axis


def add(a: str, a_shape: tuple | None, b: str, b_shape: tuple | None) -> tuple[str, str | None]:
    """``a + b`` as Keras code that adds along ONNX's broadcast axes, and a note if reordered.

    Keras' TensorFlow backend runs ``ops.add(x1, x2)`` as ``tf.nn.bias_add`` whenever
    ``x2`` has a single axis longer than 1 and its length is ``x1``'s axis-1 or last-axis
    length; the bias then goes on the last axis (or axis 1), wherever ``x2``'s axis
    actually lines up (a GroupNorm was 0.22 off through it).  Swapping the operands, or
    ``a - (-b)``, keeps the broadcast ONNX means.
    """
    if a_shape is None or b_shape is None or not _misplaced(a_shape, b_shape):
        return f"ops.add({a}, {b})", None
    note = "operands in this order: ops.add would add the second one on the wrong axis"
    if not _misplaced(b_shape, a_shape):
        return f"ops.add({b}, {a})", note
    return f"ops.subtract({a}, ops.negative({b}))", note


# Layers a generated model.py defines for itself, written only where used.
HELPERS = {
    "ReshapeTo": '''
@keras.saving.register_keras_serializable(package="pipeline")
class ReshapeTo(layers.Layer):
    """Reshape to sizes known at run time only: a functional model is built before the sizes
    of its inputs are.  Each size is an int, or ``[factor, [input, axis], ...]``: the factor
    times those axes' sizes of the tensors given after ``x`` (one may be -1: what is left)."""

    def __init__(self, sizes, **kwargs):
        super().__init__(**kwargs)
        self.sizes = sizes

    def call(self, inputs):
        x, refs = inputs[0], inputs[1:]
        shape = []
        for size in self.sizes:
            if isinstance(size, int):
                shape.append(size)
                continue
            value = size[0]
            for i, axis in size[1:]:
                value = value * ops.shape(refs[i])[axis]
            shape.append(value)
        return self.apply(x, shape)

    def apply(self, x, shape):
        return ops.reshape(x, shape)

    def compute_output_shape(self, input_shape):
        return tuple(size if isinstance(size, int) and size >= 0 else None for size in self.sizes)

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes}
''',
    "BroadcastTo": '''
@keras.saving.register_keras_serializable(package="pipeline")
class BroadcastTo(ReshapeTo):
    """Broadcast to sizes known at run time only (given as ``ReshapeTo``'s)."""

    def apply(self, x, shape):
        return ops.broadcast_to(x, shape)
''',
}


def reshape_to(t: Translation, x: str, dims: list, helper: str = "ReshapeTo") -> str:
    """``ReshapeTo(sizes)([x, *inputs])``: each varying size a product of the model inputs' axes
    (``helper="BroadcastTo"``: broadcast to them).

    One size that is no such product (a division, a sum) is ``-1`` in a reshape, what is left;
    more, or any in a broadcast, are refused (``t.unsupported``)."""

    places = t.gen.symbol_places()
    refs: list[ir.Value] = []
    sizes = []
    inferred = [d for d in dims if not isinstance(d, int) and _product_of(d, places) is None]
    for d in dims:
        if isinstance(d, int):
            sizes.append(d)
            continue
        if len(inferred) == 1 and d is inferred[0] and helper == "ReshapeTo":
            sizes.append(-1)  # the one size that is no product: what is left
            continue
        found = _product_of(d, places)
        if found is None:
            verb = "reshape" if helper == "ReshapeTo" else "broadcast"
            t.unsupported(f"a {verb} to the size {d}, which is no product of the inputs' sizes")
        factor, symbols = found
        entry = []
        for symbol in symbols:
            value, axis = places[symbol]
            if value not in refs:
                refs.append(value)
            entry.append([refs.index(value), axis])
        sizes.append([factor, *entry])
    if sizes.count(-1) == 1 and sum(isinstance(z, list) for z in sizes) == 0:
        return f"ops.reshape({x}, {tuple(sizes)})"
    t.gen.helpers.update({"ReshapeTo", helper})  # BroadcastTo is a ReshapeTo
    name = t.gen.add_layer(t.layer_hint() + ("_reshape" if helper == "ReshapeTo" else "_expand"), [])
    args = ", ".join([x] + [t.gen.expr(v) for v in refs])
    return f"{helper}({sizes}, name={name!r})([{args}])"


def _product_of(d, places: dict):
    """``d`` as ``(factor, [symbol, ...])`` when it is an integer times the inputs' sizes, else None."""
    import sympy

    factor, symbols = 1, []
    for part in sympy.Mul.make_args(sympy.expand(d)):
        if part.is_Integer:
            factor *= int(part)
        elif part.is_Symbol and part.name in places:
            symbols.append(part.name)
        elif part.is_Pow and part.base.is_Symbol and part.base.name in places and part.exp.is_Integer:
            symbols += [part.base.name] * int(part.exp)
        else:
            return None
    return factor, symbols


__all__ = ["KERAS_DTYPES", "add", "channels_last", "layer", "new_constant", "pool_pad", "spatial_padding",
           "tf_3d_same_shifts", "tuple_or_int"]
