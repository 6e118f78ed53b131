"""``Squeeze`` with an empty ``axes`` tensor: onnxruntime squeezes every unit axis while ONNX
shape inference squeezes none.  normalize must keep onnxruntime's result (it is the referee),
and the importers must reproduce it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.convert import Options, convert
from pipeline.normalize import load, normalize
from pipeline.referee import run_onnx


def _model(path):
    """x (2,1,3,1) -> Squeeze(axes=[]) -> Relu -> y  (y is (2, 3) under onnxruntime)."""
    axes = numpy_helper.from_array(np.array([], np.int64), "axes")
    nodes = [helper.make_node("Squeeze", ["x", "axes"], ["s"], name="squeeze_all"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 3, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def test_normalize_keeps_onnxruntime_semantics(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path)
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 1)).astype(np.float32)
    want = run_onnx(onnx.load(path), {"x": x})[0]
    assert want.shape == (2, 3)  # onnxruntime squeezed both unit axes
    for target in ("torch", "keras"):
        result = normalize(load(path), target, "source", {"x": x}, 1e-6, 1e-6)  # raises if a pass changed results
        got = run_onnx(result.model, {"x": x})[0]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_converts(tmp_path, to):
    path = tmp_path / "m.onnx"
    _model(path)
    result = convert(Options(model=str(path), to=to, out=str(tmp_path / "out")))
    assert result.exit_code == 0, result.report["parity"]
    assert result.report["parity"]["outputs"][0]["max_abs_err"] == 0.0
