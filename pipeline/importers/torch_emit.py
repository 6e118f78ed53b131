"""What every PyTorch emitter shares: module and buffer registration, names, literals, padding.

The family files (``pipeline/importers/ops/*.py``) write PyTorch code through these
helpers, so a module is named, padded and registered the same way for every op.
"""

from __future__ import annotations

import re

import numpy as np

from .codegen import Translation, py_literal, shape_literal, tuple_or_int  # noqa: F401 (emitters import it from here)

DTYPE_NAMES = {
    1: "torch.float32", 10: "torch.float16", 11: "torch.float64", 16: "torch.bfloat16",
    7: "torch.int64", 6: "torch.int32", 5: "torch.int16", 3: "torch.int8", 2: "torch.uint8", 9: "torch.bool",
}


def shape_args(shape) -> str:
    """``(2, 3)`` for ``x.reshape(2, 3)``; ``(())`` for a scalar, as ``x.reshape()`` is an error."""
    return shape_literal(shape) if len(shape) else "(())"


def tuple_or_float(values) -> str:
    values = [float(v) for v in values]
    return repr(values[0]) if len(set(values)) == 1 else repr(tuple(values))


def pad_order(pairs) -> tuple[int, ...]:
    """ONNX (begin, end) per spatial axis -> ``F.pad`` order (last axis first)."""
    flat = []
    for b, e in reversed(pairs):
        flat += [int(b), int(e)]
    return tuple(flat)


_GENERATED = re.compile(r"[A-Z]\w*__\d+")  # tf2onnx's own node names: Conv__163, Resize__9


def hint(t: Translation) -> str:
    """The module's name: the layer's, else a Keras layer named by a neighbour, else the op's."""
    name = t.layer_hint()
    if not _GENERATED.fullmatch(name):
        return name
    near = [v.name for v in t.node.inputs[:1] if v is not None]
    near += [u.name for v in t.node.outputs for u in v.consumers()]
    for text in near:
        parts = [p for p in (text or "").split("/") if p]
        if len(parts) > 2:
            return parts[1]
    return t.op.lower()


def module(t: Translation, ctor: str, weights: dict | None = None, name: str | None = None) -> str:
    """Register ``self.<name> = <ctor>`` with its state-dict entries; returns the attribute name."""
    return t.gen.add_module(name or hint(t), ctor, weights or {})


def pad_first(t: Translation, x: str, pairs, nd: int, value: float | None = None,
              note: str = "asymmetric padding, made explicit") -> str:
    """``x`` padded by ``(begin, end)`` per spatial axis with an ``nn.ZeroPadNd`` (or ``ConstantPadNd``)."""
    order = pad_order(pairs)
    if value is None:
        mod = module(t, f"nn.ZeroPad{nd}d({order})", name=hint(t) + "_pad")
    else:
        mod = module(t, f"nn.ConstantPad{nd}d({order}, {py_literal(np.float32(value))})", name=hint(t) + "_pad")
    var = t.gen.names.take(hint(t) + "_padded")
    t.gen.emit(f"{var} = self.{mod}({x})", note)
    return var


def buffer(t: Translation, name: str, arr: np.ndarray) -> str:
    """A constant tensor saved with the weights: ``self.<name>``."""
    gen = t.gen
    attr = gen.layer_names.take(name)
    gen.names.used.add(attr)
    gen.buffers.append((attr, arr))
    gen.state[attr] = np.ascontiguousarray(arr)
    return f"self.{attr}"


def np_dtype(t: Translation, j: int = 0):
    """The numpy dtype of output ``j`` (float32 for types numpy cannot name)."""
    try:
        return t.out_dtype(j).numpy()
    except Exception:  # pragma: no cover - unusual dtypes
        return np.float32


# Functions a generated model.py defines for itself, written only where used.
HELPERS = {
    "same_padding": '''
def same_padding(x, kernel, stride, dilation, upper=True, value=0.0):
    """``x`` padded (with ``value``) as TensorFlow's (ONNX's) "same" does before a strided
    convolution or pooling: the amount depends on the size, known at run time only (the odd
    pixel at the end; at the start with ``upper=False``)."""
    pads = []
    for n, k, s, d in zip(reversed(x.shape[-len(kernel):]), reversed(kernel), reversed(stride), reversed(dilation)):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads += [total // 2, total - total // 2] if upper else [total - total // 2, total // 2]
    return F.pad(x, pads, value=value)
''',
}
