"""The importers take the weights out of the graph they translate (pipeline/importers).

After ``importers.generate`` the ONNX graph keeps its structure but no initializer
values: the weights then exist once, in the target's copies, not also in the graph
(at 100 M parameters that copy took the PyTorch -> Keras import from 2.4x to 3.4x the
weights; ``make bench`` measures it).  The generated model still computes what
onnxruntime computes on the original file.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import importers, normalize
from pipeline.parity import run_generated
from pipeline.referee import laid_out_inputs, run_onnx


def conv_dense(path) -> str:
    """x (2, 3, 6, 6) -> Conv 3x3 (4 filters, bias) -> Relu -> Flatten -> Gemm (5 units)."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [init("w", 4, 3, 3, 3), init("b", 4), init("fc_w", 5, 144), init("fc_b", 5)],
    )
    out = path / "conv_dense.onnx"
    out.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                      ir_version=10).SerializeToString())
    return str(out)


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_generate_releases_initializers_and_still_matches(tmp_path, target):
    path = conv_dense(tmp_path)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = run_onnx(path, {"x": x})
    model = normalize.load(path)
    result = normalize.normalize(model, target)
    initializers = list(result.model.graph.initializers.values())
    assert initializers and all(v.const_value is not None for v in initializers)
    nodes_before = len(list(result.model.graph))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    importers.generate(target, result.model, out_dir, "conv_dense", path, result.interface, "onnx")
    assert all(v.const_value is None for v in result.model.graph.initializers.values())
    assert len(list(result.model.graph)) == nodes_before
    feed = laid_out_inputs({"x": x}, result.interface)
    got = run_generated(out_dir, target, [feed["x"]])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
