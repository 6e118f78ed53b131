"""Find the first node where the generated model and onnxruntime part ways.

onnxruntime runs ``normalized.onnx`` with every intermediate tensor exposed as
an output.  The generated ``model.py`` runs unchanged; its intermediates are
read from the local variables of ``forward`` (PyTorch) or ``build`` (Keras) as
the function returns — the generator knows which variable holds which ONNX
node's output.  Comparing in topological order gives the first divergence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir

from .parity import _as_list, _to_numpy, load_generated
from .referee import compare, session


def onnx_intermediates(model: ir.Model, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # normalized.onnx keeps its weights in onnx.data beside it: read them before the graph is
    # serialized (onnxruntime gets bytes, which cannot name a file relative to anything).
    ir.external_data.load_to_model(model)
    clone = ir.from_proto(ir.to_proto(model))
    present = {v.name for v in clone.graph.outputs}
    for node in clone.graph:
        for v in node.outputs:
            if v.name and v.name not in present and v.type is not None:
                clone.graph.outputs.append(v)
                present.add(v.name)
    sess = session(ir.to_proto(clone).SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(None, {k: v for k, v in feed.items() if k in wanted})))


def _capture_locals(function_name: str, path: Path, run):
    """Run ``run()`` and return every local ``function_name`` in ``path`` had, as it ran."""
    captured: dict = {}
    target = str(path.resolve())

    def local(frame, event, arg):  # every line: model.py drops (``del``) values after their last use
        if event in ("line", "return"):
            captured.update(frame.f_locals)
        return local

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == function_name and frame.f_code.co_filename == target:
            return local
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = run()
    finally:
        sys.settrace(old)
    return captured, result


def generated_intermediates(out_dir: Path, target: str, ordered_inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    path = Path(out_dir) / "model.py"
    if target == "torch":
        import torch

        model = load_generated(path)
        args = [torch.from_numpy(np.ascontiguousarray(x)) for x in ordered_inputs]
        with torch.no_grad():
            found, _ = _capture_locals("forward", path, lambda: model(*args))
        return {k: _to_numpy(v) for k, v in found.items() if hasattr(v, "detach")}
    import keras

    found, model = _capture_locals("build", path, lambda: load_generated(path))
    tensors = {k: v for k, v in found.items() if isinstance(v, keras.KerasTensor)}
    names = [k for k in tensors if not any(t is tensors[k] for t in model.inputs)]
    probe = keras.Model(model.inputs, [tensors[k] for k in names])
    x = ordered_inputs if len(ordered_inputs) > 1 else ordered_inputs[0]
    values = _as_list(probe(x, training=False))
    return {k: _to_numpy(v) for k, v in zip(names, values)}


def first_divergence(model: ir.Model, node_vars: dict[str, list[str]], feed: dict[str, np.ndarray],
                     out_dir: Path, target: str, atol: float, rtol: float) -> dict:
    """Per-node errors in topological order and the first node outside tolerance."""
    reference = onnx_intermediates(model, feed)
    ordered = [feed[v.name] for v in model.graph.inputs]
    got = generated_intermediates(out_dir, target, ordered)
    rows = []
    first = None
    for node in model.graph:
        for var in node_vars.get(node.name or "", []):
            if var not in got:
                continue
            for value in node.outputs:
                ref = reference.get(value.name)
                if ref is None or ref.shape != got[var].shape:
                    continue
                c = compare(value.name, ref, got[var], atol, rtol)
                row = {"onnx_node": node.name, "op_type": node.op_type, "target_layer": var,
                       "max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err, "passed": c.passed}
                rows.append(row)
                if first is None and not c.passed:
                    first = {k: row[k] for k in ("onnx_node", "op_type", "target_layer", "max_abs_err", "max_rel_err")}
                break
    return {"first_divergence": first, "nodes": rows}
