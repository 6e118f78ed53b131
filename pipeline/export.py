"""Stage 1: export the source model to ONNX (the hub).

- PyTorch: ``torch.onnx.export(..., dynamo=True)`` (the exporter PyTorch maintains).
- Keras / TensorFlow: tf2onnx on a traced ``tf.function`` with a fixed input signature.
- ONNX: copied as it is.

The exported file keeps the source's names: graph inputs are the model's input
names, and Keras outputs are named after the layers that produce them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .errors import BadInput, PipelineError
from .quiet import import_tensorflow, import_torch, native_stderr_to_log
from .sources import Source

DEFAULT_KERAS_OPSET = 18


class ExportError(PipelineError):
    """The source framework's exporter failed (exit 2: the model cannot be read as given)."""


def export(source: Source, inputs: dict[str, np.ndarray], path: Path, opset: int | None = None) -> None:
    """Write ``source`` as ONNX to ``path``."""
    path = Path(path)
    if source.framework == "onnx":
        shutil.copyfile(source.obj, path)
        return
    if source.framework == "torch":
        _export_torch(source, inputs, path, opset)
    elif source.framework == "keras":
        _export_keras(source, path, opset)
    elif source.framework == "tf":
        _export_savedmodel(source, path, opset)
    else:  # pragma: no cover - resolve() only yields the above
        raise BadInput(f"cannot export a {source.framework} model")


def _export_torch(source: Source, inputs, path: Path, opset: int | None) -> None:
    torch = import_torch()
    model = getattr(source.obj, "program", None) or source.obj
    args = tuple(torch.from_numpy(inputs[s.name]) for s in source.inputs)
    # optimize=False: torch.onnx's optimizer rewrites `x + 1e-8` to `x` (it treats the
    # epsilon as zero), which turns a PyTorch 0 into NaN.  Our passes fold constants exactly.
    kwargs = {"dynamo": True, "verbose": False, "optimize": False, "input_names": [s.name for s in source.inputs]}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with torch.no_grad(), native_stderr_to_log():
            program = torch.onnx.export(model, args, **kwargs)
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {_torch_export_reason(exc)}") from exc


def _torch_export_reason(exc: Exception) -> str:
    """One line saying why torch.onnx.export failed: the root exception from its
    "## Exception summary" section when there is one (its first line is boilerplate)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        summary = lines[lines.index("## Exception summary") + 1:]
        if summary:
            return re.sub(r"^<class '([\w.]+)'>:", lambda m: m.group(1).rsplit(".", 1)[-1] + ":", summary[0])[:300]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _tf2onnx(fn, specs, path: Path, opset: int | None, output_names: list[str]) -> None:
    tf, _ = import_tensorflow()
    import tf2onnx

    signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]
    try:
        with native_stderr_to_log():
            proto, _ = tf2onnx.convert.from_function(
                tf.function(fn), input_signature=signature, opset=opset or DEFAULT_KERAS_OPSET
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ExportError(f"tf2onnx failed: {type(exc).__name__}: {first}") from exc
    import onnx_ir as ir

    model = ir.from_proto(proto)
    _rename_outputs(model.graph, output_names)
    _erfc_to_erf(model.graph)
    ir.save(model, str(path))


def _export_keras(source: Source, path: Path, opset: int | None) -> None:
    model = source.obj

    def call(*xs):
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    _tf2onnx(call, source.inputs, path, opset, source.output_names)


def _export_savedmodel(source: Source, path: Path, opset: int | None) -> None:
    _, fn = source.obj
    names = [s.name for s in source.inputs]
    keys = source.output_names

    def call(*xs):
        out = fn(**dict(zip(names, xs)))
        return [out[k] for k in keys]

    _tf2onnx(call, source.inputs, path, opset, keys)


def _erfc_to_erf(graph) -> None:
    """tf2onnx passes TensorFlow's ``Erfc`` (Keras' exact gelu) through as an ONNX node,
    but ONNX has no Erfc: write it as ``1 - Erf(x)`` so the exported file is valid ONNX."""
    import onnx_ir as ir

    from .normalize.graph import add_initializer

    for node in [n for n in graph if n.op_type == "Erfc" and n.domain == ""]:
        x, out = node.inputs[0], node.outputs[0]
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32  # tf2onnx leaves some types unset
        one = add_initializer(graph, np.array(1.0, dtype=dtype), "one")
        erf = ir.node("Erf", [x], name=f"{node.name}_erf")
        sub = ir.node("Sub", [one, erf.outputs[0]], name=f"{node.name}_one_minus")
        erf.outputs[0].name = f"{node.name}_erf_out"
        graph.insert_before(node, [erf, sub])
        if out.type is not None:
            sub.outputs[0].type, sub.outputs[0].shape = out.type, out.shape
        public = out.name
        out.replace_all_uses_with(sub.outputs[0], replace_graph_outputs=True)
        graph.remove(node, safe=True)
        sub.outputs[0].name = public


def _rename_outputs(graph, names: list[str]) -> None:
    """Give graph outputs readable names (tf2onnx calls them ``Identity:0``)."""
    if len(names) != len(graph.outputs):
        return
    taken = {v.name for n in graph for v in (*n.inputs, *n.outputs) if v is not None}
    taken |= {v.name for v in graph.inputs} | set(graph.initializers)
    for value, new in zip(graph.outputs, names):
        if value.name != new and new not in taken:
            value.name = new
            taken.add(new)
