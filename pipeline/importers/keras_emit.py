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


# Operations a generated model.py defines for itself, written only where used.  They are
# ``keras.Operation``s, not layers: they hold no weights, and a layer's call costs a tiny
# model measurably more (bench/shapes.py, seed_torch_encoder).
HELPERS = {
    "ReshapeTo": '''
@keras.saving.register_keras_serializable(package="pipeline")
class ReshapeTo(keras.Operation):
    """Reshape to sizes known at run time only: a functional model is built before the sizes
    of its inputs are.  Each size is an int, or ``[factor, [input, axis], ...]``: the factor
    times those axes' sizes of the tensors given after ``x`` (one may be -1: what is left)."""

    def __init__(self, sizes, name=None):
        super().__init__(name=name)
        self.sizes = sizes

    def call(self, x, *refs):
        shape = []
        for size in self.sizes:
            if isinstance(size, int):
                shape.append(size)
                continue
            value = size[0]
            for i, axis in size[1:]:
                known = refs[i].shape[axis]  # an int when called eagerly, None in a traced graph
                value = value * (ops.shape(refs[i])[axis] if known is None else known)
            shape.append(value)
        return self.apply(x, shape)

    def apply(self, x, shape):
        return ops.reshape(x, shape)

    def output_shape(self):
        return tuple(size if isinstance(size, int) and size >= 0 else None for size in self.sizes)

    def compute_output_spec(self, x, *refs):
        return keras.KerasTensor(self.output_shape(), dtype=x.dtype)

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
    "SliceTo": '''
@keras.saving.register_keras_serializable(package="pipeline")
class SliceTo(ReshapeTo):
    """The slice of ``x`` from ``begin`` of sizes known at run time only (given as ``ReshapeTo``'s)."""

    def __init__(self, sizes, begin, name=None):
        super().__init__(sizes, name=name)
        self.begin = begin

    def apply(self, x, shape):
        return ops.slice(x, self.begin, shape)

    def get_config(self):
        return {**super().get_config(), "begin": self.begin}
''',
    "Arange": '''
@keras.saving.register_keras_serializable(package="pipeline")
class Arange(ReshapeTo):
    """``start + delta * [0, 1, ..., n - 1]`` for a length ``n`` known at run time only (one
    ``ReshapeTo`` size, read off the tensors it is called on)."""

    def __init__(self, sizes, start=0, delta=1, value_dtype="int64", name=None):
        super().__init__(sizes, name=name)
        self.start, self.delta, self.value_dtype = start, delta, value_dtype

    def call(self, *refs):
        return super().call(None, *refs)

    def apply(self, x, shape):
        steps = ops.arange(shape[0], dtype=self.value_dtype)
        delta, start = ops.cast(self.delta, self.value_dtype), ops.cast(self.start, self.value_dtype)
        return ops.add(ops.multiply(steps, delta), start)

    def compute_output_spec(self, *refs):
        return keras.KerasTensor(self.output_shape(), dtype=self.value_dtype)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "delta": self.delta, "value_dtype": self.value_dtype}
''',
}


def reshape_to(t: Translation, x: str, dims: list, helper: str = "ReshapeTo", **config) -> str:
    """``ReshapeTo(sizes)(x, *refs)``: each varying size a product of the model inputs' axes,
    or the size of an axis of a tensor computed before that has it (``helper="BroadcastTo"``:
    broadcast to them; ``"SliceTo"``: ``x``'s slice of those sizes from ``config["begin"]``).

    One size that is neither (a division, a sum) is ``-1`` in a reshape, what is left; in a
    broadcast or a slice, or more than one in a reshape, it is refused (``t.unsupported``)."""

    sizes, refs = runtime_sizes(t, dims, rest=helper == "ReshapeTo")
    if helper == "ReshapeTo" and sizes.count(-1) == 1 and sum(isinstance(z, list) for z in sizes) == 0:
        return f"ops.reshape({x}, {tuple(sizes)})"
    t.gen.helpers.update({"ReshapeTo", helper})  # the others are ReshapeTo's
    suffix = {"ReshapeTo": "_reshape", "BroadcastTo": "_expand", "SliceTo": "_slice"}.get(helper, "_" + helper.lower())
    name = t.gen.add_layer(t.layer_hint() + suffix, [])
    args = ", ".join([x] + refs)
    extra = "".join(f", {k}={v!r}" for k, v in config.items())
    return f"{helper}({sizes}{extra}, name={name!r})({args})"


def runtime_sizes(t: Translation, dims: list, rest: bool = False) -> tuple[list, list[str]]:
    """``dims`` as sizes a ``ReshapeTo`` computes when it runs, and the tensors it reads them
    off: an int as is; a product of the model inputs' sizes as ``[factor, [ref, axis], ...]``;
    another size as ``[1, [ref, axis]]`` of a tensor computed earlier that has it on that axis
    (wav2vec2's frames, ``floor(floor(T/5)/2) - 1``, read off its features); with ``rest``,
    one size that is none of these as ``-1``.  Refused (``t.unsupported``) otherwise."""
    places = t.gen.symbol_places()
    refs: list[str] = []
    sizes: list = []

    def ref(expr: str) -> int:
        if expr not in refs:
            refs.append(expr)
        return refs.index(expr)

    unknown = [d for d in dims if not isinstance(d, int) and _product_of(d, places) is None]
    carried = {id(d): _carrier(t, d) for d in unknown}
    left = [d for d in unknown if carried[id(d)] is None]
    if rest and len(unknown) == 1:  # as before: a lone size that is no product is what is left
        left, carried = unknown, {}
    for d in dims:
        if isinstance(d, int):
            sizes.append(d)
            continue
        if rest and len(left) == 1 and d is left[0]:
            sizes.append(-1)
            continue
        if carried.get(id(d)) is not None:
            value, axis = carried[id(d)]
            sizes.append([1, [ref(value), axis]])
            continue
        found = _product_of(d, places)
        if found is None:
            t.unsupported(f"{t.op} to the size {d}, which is no product of the inputs' sizes and no size of a "
                          "tensor computed before")
        factor, symbols = found
        sizes.append([factor, *[[ref(t.gen.expr(places[s][0])), places[s][1]] for s in symbols]])
    return sizes, refs


def _carrier(t: Translation, d) -> tuple[str, int] | None:
    """A tensor computed before this node (its variable) and an axis on which its size is ``d``.

    The tensors a channels-last op reads and writes in Keras are left out: their axes are
    not the ONNX graph's (see ``channels_last``)."""
    from ..normalize.symbolic import dims as dims_of

    cache = t.gen.__dict__.setdefault("_dims_cache", {})
    for value, expr in list(t.gen.values.items()):
        if not isinstance(value, ir.Value) or not expr.isidentifier() or value.const_value is not None:
            continue
        maker = value.producer()
        if maker is None and not value.is_graph_input():
            continue
        if (maker is not None and pin_role(maker) == PIN_IN) or any(pin_role(c) == PIN_OUT for c in value.consumers()):
            continue
        if value not in cache:
            cache[value] = dims_of(value) or []
        for axis, size in enumerate(cache[value]):
            if not isinstance(size, int) and size == d:
                return expr, axis
    return None


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


__all__ = ["KERAS_DTYPES", "add", "channels_last", "layer", "new_constant", "pool_pad", "reshape_to", "runtime_sizes",
           "spatial_padding", "tf_3d_same_shifts", "tuple_or_int"]
