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

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx_ir as ir

LARGE_BYTES = 1 << 20  # initializers above this size are streamed one by one


# Weights above this size are worth a prompt gc.collect() once their holder is dropped (graphs and
# Keras models are webs of reference cycles); a collection costs ~0.3 s beside both frameworks.
COLLECT_BYTES = 64 << 20


def initializer_bytes(model: ir.Model) -> int:
    """Total size of the main graph's initializers, in bytes."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_inline(model: ir.Model, path) -> None:
    """Save ``model`` to ``path`` as one self-contained ``.onnx`` file, streaming large weights.

    The model is not changed.  Peak memory is about three times the largest tensor.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        skeleton = Path(tmp) / "skeleton.onnx"
        ir.save(model, skeleton, external_data="weights.bin", size_threshold_bytes=LARGE_BYTES)
        proto = onnx.load(str(skeleton), load_external_data=False)  # small: the large weights are outside
        streamed = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        kept = [t for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as out, open(Path(tmp) / "weights.bin", "rb") as data:
            out.write(proto.SerializeToString())
            for tensor in streamed:
                out.write(_initializer_message(tensor, data))
        os.replace(partial, path)


def _initializer_message(tensor: onnx.TensorProto, data) -> bytes:
    """``ModelProto{graph{initializer: [tensor with its bytes inline]}}``, serialized."""
    info = {e.key: e.value for e in tensor.external_data}
    data.seek(int(info.get("offset", 0)))
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = data.read(int(info["length"]))
    return onnx.ModelProto(graph=onnx.GraphProto(initializer=[inline])).SerializeToString()


@contextmanager
def external_copy(model: ir.Model):
    """Yield the path of a temporary copy of ``model`` with its weights as external data."""
    with tempfile.TemporaryDirectory(prefix="pipeline-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path, external_data="model.data")
        yield str(path)
