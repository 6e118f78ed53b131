"""One ONNX graph builder for the tests: tiny graphs, converted through the real pipeline and
checked against the ONNX spec's own reference implementation (``onnx.reference``) or
onnxruntime, never against the code under test.

    path = graph(tmp_path, [helper.make_node("Clip", ["x"], ["y"], min=-0.5)], {"x": x}, ["y"], opset=10)
    code = converted_matches(tmp_path, path, {"x": x}, "torch")
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from pipeline.convert import Options, convert  # noqa: E402
from pipeline.parity import load_generated  # noqa: E402

IR_FOR_OPSET = {opset: 7 if opset < 13 else 8 if opset < 15 else 10 for opset in range(1, 24)}


def graph(tmp_path, nodes, inputs: dict[str, np.ndarray], outputs: list[str], consts: dict | None = None,
          opset: int = 18, name: str = "g"):
    """Write ``nodes`` as ``name.onnx``: ``inputs`` give the graph inputs' names, dtypes and shapes,
    ``consts`` the initializers; outputs take the types ONNX's shape inference finds."""
    graph_proto = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=IR_FOR_OPSET[opset])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def spec_outputs(path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """What the ONNX spec says the graph computes (``onnx.reference.ReferenceEvaluator``)."""
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(str(path)).run(None, feed)]


def run_generated(out_dir, target: str, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Load the generated ``model.py`` ourselves and run it (not through the pipeline's parity)."""
    model = load_generated(out_dir / "model.py")
    if target == "torch":
        import torch

        with torch.no_grad():
            out = model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in xs])
        out = out if isinstance(out, (tuple, list)) else [out]
        return [o.numpy() for o in out]
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    out = out if isinstance(out, (tuple, list)) else [out]
    return [np.asarray(o) for o in out]


def ort_outputs(path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def converted_matches(tmp_path, path, feed: dict[str, np.ndarray], target: str, atol: float = 1e-5,
                      reference=spec_outputs) -> str:
    """Convert ``path`` to ``target``; the generated model must match ``reference`` (the spec's
    reference implementation by default; ``ort_outputs`` where that one departs from the spec) on
    ``feed`` (exactly for integers and booleans).  Returns the generated ``model.py``."""
    out = tmp_path / f"out_{target}"
    result = convert(Options(model=str(path), to=target, out=str(out)))
    assert result.exit_code == 0, result.report["parity"]
    want = reference(path, feed)
    names = [i.name for i in onnx.load(str(path)).graph.input]
    got = run_generated(out, target, [feed[n] for n in names])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
        else:
            np.testing.assert_array_equal(g, w)
    return (out / "model.py").read_text()
