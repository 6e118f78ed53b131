"""The second referee: where onnxruntime departs from the ONNX spec, parity must not call a
conversion checked.  The expected outputs here are the spec's own (the backend node tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.referee import run_onnx, spec_opinion

NODE_TESTS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"


def _node_test(name: str):
    folder = NODE_TESTS / name
    model = onnx.load(str(folder / "model.onnx"))
    data = folder / "test_data_set_0"
    inputs = {i.name: numpy_helper.to_array(onnx.load_tensor(str(data / f"input_{k}.pb")))
              for k, i in enumerate(model.graph.input)}
    expected = [numpy_helper.to_array(onnx.load_tensor(str(data / f"output_{k}.pb")))
                for k in range(len(model.graph.output))]
    return folder / "model.onnx", inputs, expected, [o.name for o in model.graph.output]


def test_referees_disagree_where_onnxruntime_departs_from_the_spec():
    """onnxruntime 1.23's align_corners downsampling is not the spec's (its own node test says so)."""
    path, inputs, expected, names = _node_test("test_resize_downsample_scales_linear_align_corners")
    ort = run_onnx(str(path), inputs)
    assert not np.allclose(ort[0], expected[0], atol=1e-4)  # the premise: onnxruntime is off here
    opinion = spec_opinion(path, inputs, ort, names, 1e-4, 1e-4)
    assert opinion["ran"] and not opinion["agree"], opinion


def test_referees_agree_where_onnxruntime_follows_the_spec():
    path, inputs, expected, names = _node_test("test_resize_upsample_scales_linear")
    ort = run_onnx(str(path), inputs)
    np.testing.assert_allclose(ort[0], expected[0], atol=1e-5)
    opinion = spec_opinion(path, inputs, ort, names, 1e-4, 1e-4)
    assert opinion["ran"] and opinion["agree"], opinion


def test_the_reference_is_asked_only_where_onnxruntime_is_known_to_depart():
    """Elsewhere the reference has gaps of its own (Conv with auto_pad=VALID and strides)."""
    path, inputs, _, names = _node_test("test_conv_with_strides_padding")
    opinion = spec_opinion(path, inputs, run_onnx(str(path), inputs), names, 1e-4, 1e-4)
    assert not opinion["ran"] and "known to depart" in opinion["why"]


def test_the_reference_is_not_asked_where_it_departs_itself(tmp_path):
    """onnx.reference runs opset-11 Softmax by the opset-13 rule: no opinion there, said why."""
    path, inputs, _, names = _node_test("test_resize_upsample_scales_linear")
    model = onnx.load(str(path))
    model.graph.node.append(onnx.helper.make_node("Softmax", [model.graph.output[0].name], ["soft"], axis=1))
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", 11))
    file = tmp_path / "m.onnx"
    onnx.save(model, file)
    opinion = spec_opinion(file, inputs, [], names, 1e-4, 1e-4)
    assert not opinion["ran"] and "Softmax" in opinion["why"]
