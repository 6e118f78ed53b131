"""ReverseSequence with sequences shorter than the time axis (the ONNX backend tests
``test_reversesequence_{batch,time}`` were refused): each sequence reversed over its own
length, the padding after it left in place.  Checked against onnxruntime by the pipeline's
parity run, for both layouts ((T, B, ...) and (B, T, ...)) and both targets.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pipeline.convert import Options, convert  # noqa: E402

F32 = TensorProto.FLOAT


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_reverse_sequence_of_given_lengths(tmp_path, target):
    nodes = [helper.make_node("ReverseSequence", ["x", "lens_t"], ["rev_t"], time_axis=0, batch_axis=1),
             helper.make_node("ReverseSequence", ["x", "lens_b"], ["rev_b"], time_axis=1, batch_axis=0)]
    shape = [4, 4, 3]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F32, shape)],
        [helper.make_tensor_value_info(n, F32, shape) for n in ("rev_t", "rev_b")],
        [numpy_helper.from_array(np.array([4, 3, 2, 1], np.int64), "lens_t"),
         numpy_helper.from_array(np.array([1, 2, 4, 3], np.int64), "lens_b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = convert(Options(model=str(path), to=target, out=str(tmp_path / target)))
    stages = result.report["parity"]["stages"]
    assert result.exit_code == 0, stages
    assert len(stages["converted_vs_source"]) == 2 and all(s["passed"] for s in stages["converted_vs_source"])
    assert "each sequence reversed over its own length" in (tmp_path / target / "model.py").read_text()
