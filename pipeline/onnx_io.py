"""Write and run ``onnx_ir`` models without copying their weights several times over.

``ir.save(model, "m.onnx")`` builds the whole ``ModelProto`` and serializes it in one
piece: for a 400 MB model that peaks at about 4x the weights (the proto, upb's growing
output buffer, the final bytes).  Saving with external data instead streams tensor by
tensor and costs next to nothing.  The two helpers here build on that:

- ``save_inline`` writes the usual single-file ``.onnx`` (weights inside) by streaming:
  the graph without its large initializers is written first, then each initializer as
  a message of its own.  Protobuf merges repeated occurrences of an embedded message
  field and appends repeated fields, so the file parses to the same model.
- ``external_copy`` writes the model with external data into a folder, for
  onnxruntime to load from a path instead of from serialized bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

LARGE_BYTES = 1 << 20  # initializers above this size are streamed one by one
SHARE_MIN_BYTES = 1 << 10  # share_weights: smaller tensors stay inline (onnx's own external-data threshold)


# Weights above this size are worth a prompt gc.collect() once their holder is dropped (graphs and
# Keras models are webs of reference cycles); a collection costs ~0.3 s beside both frameworks.
COLLECT_BYTES = 64 << 20


def initializer_bytes(model: ir.Model) -> int:
    """Total size of the main graph's initializers, in bytes."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_inline(model: ir.Model, path) -> None:
    """Save ``model`` to ``path`` as one self-contained ``.onnx`` file, streaming large weights.

    The graph is serialized with its large weights held out (see ``_held_out``), then each
    of them is appended as a message of its own, straight from its bytes: every weight is
    written once, straight from its array.  The model is not changed.
    """
    path = Path(path)
    with _held_out(model) as held:
        proto = ir.to_proto(model)
    names = {value.name for value, _ in held}
    kept = [t for t in proto.graph.initializer if t.name not in names]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as out:
            out.write(proto.SerializeToString())
            del proto
            for value, tensor in held:
                _write_initializer(out, value.name, tensor)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


_PACKED_TYPES = frozenset(getattr(ir.DataType, t) for t in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(ir.DataType, t))


def _write_initializer(out, name: str, tensor) -> None:
    """Append ``ModelProto{graph{initializer: [tensor, bytes inline]}}`` to ``out``, writing the
    tensor's bytes straight from its array: no serialized copy of them is built.

    The wire format by hand: field 7 (graph) of ModelProto holds field 5 (initializer) of
    GraphProto, a TensorProto whose name, type and dims ``onnx`` serializes and whose
    ``raw_data`` (field 9) follows them."""
    if tensor.dtype in _PACKED_TYPES:  # numpy holds these unpacked; tobytes() packs them as ONNX does
        raw = memoryview(tensor.tobytes())
    else:
        raw = memoryview(np.ascontiguousarray(tensor.numpy())).cast("B")
    meta = onnx.TensorProto(name=name, data_type=tensor.dtype.value, dims=[int(d) for d in tensor.shape])
    head = meta.SerializeToString() + b"\x4a" + _varint(raw.nbytes)  # raw_data: field 9, length-delimited
    tensor_len = len(head) + raw.nbytes
    initializer = b"\x2a" + _varint(tensor_len)  # GraphProto.initializer: field 5
    graph = b"\x3a" + _varint(len(initializer) + tensor_len)  # ModelProto.graph: field 7
    out.write(graph + initializer + head)
    out.write(raw)


@contextmanager
def _held_out(model: ir.Model, dtypes=None):
    """Within ``with``: the main graph's large weights (of ``dtypes``, default every non-string
    type) replaced by placeholders that serialize as a few bytes; yields ``[(value, tensor)]``.

    ``ir.to_proto`` then gives the graph without its weights, which go their own way (appended
    to a file one by one).  The weights are put back afterwards."""
    held = []
    try:
        for value in model.graph.initializers.values():
            tensor = value.const_value
            if (tensor is None or tensor.nbytes < LARGE_BYTES or tensor.dtype == ir.DataType.STRING
                    or (dtypes is not None and tensor.dtype not in dtypes)):
                continue
            held.append((value, tensor))
            value.const_value = ir.ExternalTensor("held-out", 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                                                  name=value.name)
        yield held
    finally:
        for value, tensor in held:
            value.const_value = tensor


@contextmanager
def external_copy(model: ir.Model):
    """Yield the path of a temporary copy of ``model`` with its weights as external data."""
    with tempfile.TemporaryDirectory(prefix="pipeline-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path, external_data="model.data")
        yield str(path)


# -- one copy of the ONNX weights for source.onnx and normalized.onnx ---------------------------
#
# Both graphs are kept for debugging, but most of their weights are the same bytes: a pass that
# does not touch a weight leaves it as it was.  ``externalize`` moves the exported file's weights
# into ``ONNX_DATA`` beside it (right after the export, while little else is in memory) and
# returns where each distinct tensor went; ``save_shared`` writes ``normalized.onnx`` pointing at
# those bytes for every weight no pass changed and appends only the others.  onnxruntime,
# ``onnx.load`` and ``onnx_ir.load`` read both files from their folder.

ONNX_DATA = "onnx.data"


def _stored_once(out, raw: bytes, index: dict[tuple[bytes, int], int]) -> tuple[int, int]:
    """``(offset, length)`` of ``raw`` in the data file open for appending as ``out``: where
    ``index`` already has these bytes, else appended now and added to ``index``."""
    key = _key(raw)
    if key not in index:
        index[key] = out.seek(0, os.SEEK_END)
        out.write(raw)
    return index[key], key[1]


def _key(raw: bytes) -> tuple[bytes, int]:
    return hashlib.sha1(raw).digest(), len(raw)


def _point_to(tensor: onnx.TensorProto, data: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", data), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=k, value=v)


def externalize(path, data: str = ONNX_DATA, metadata: dict[str, str] | None = None) -> dict[tuple[bytes, int], int]:
    """Move the inline weights (``SHARE_MIN_BYTES`` and up) of the ``.onnx`` file ``path`` into
    ``data`` beside it, each distinct tensor once; return ``{(sha1, length): offset}`` for
    ``save_shared``.  ``metadata`` entries are set in the model's ``metadata_props`` on the way.

    Works on the protobuf itself, so the graph is byte for byte the one written before except
    for where its weights live (and the metadata).  Peak memory is about twice the file (its
    bytes and the parsed graph).  A file that already keeps weights outside keeps them there
    (an empty index)."""
    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    if metadata:
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        if metadata:
            _save_replacing(proto, path)
        return {}
    index: dict[tuple[bytes, int], int] = {}
    with open(path.parent / data, "ab") as out:
        for tensor in proto.graph.initializer:
            if not tensor.HasField("raw_data"):
                continue
            raw = tensor.raw_data
            if len(raw) < SHARE_MIN_BYTES:
                continue
            offset, length = _stored_once(out, raw, index)
            del raw
            _point_to(tensor, data, offset, length)
    _save_replacing(proto, path)
    return index


def _save_replacing(proto, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    onnx.save(proto, str(partial))
    os.replace(partial, path)


def save_shared(model: ir.Model, path, index: dict[tuple[bytes, int], int], data: str = ONNX_DATA) -> None:
    """Save ``model`` to ``path`` with its weights in ``data`` beside it: a tensor whose bytes are
    in ``index`` (``externalize``) points there, any other is appended (and added to ``index``).

    The model is not changed; one tensor's bytes at a time are copied."""
    path = Path(path)
    swapped: list[tuple[ir.Value, object]] = []
    try:
        with open(path.parent / data, "ab") as out:
            for value in model.graph.initializers.values():
                tensor = value.const_value
                if tensor is None or tensor.nbytes < SHARE_MIN_BYTES or tensor.dtype == ir.DataType.STRING:
                    continue
                raw = tensor.tobytes()
                offset, length = _stored_once(out, raw, index)
                del raw
                swapped.append((value, tensor))
                value.const_value = ir.ExternalTensor(data, offset, length, tensor.dtype, shape=tensor.shape,
                                                      name=value.name, base_dir=str(path.parent))
        proto = ir.to_proto(model)
        partial = path.with_name(f".{path.name}.partial")
        onnx.save(proto, str(partial))
        os.replace(partial, path)
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
