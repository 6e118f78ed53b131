"""Resize and Upsample against the ONNX spec: the reference evaluator is the referee.

onnxruntime 1.23 departs from the spec for ``align_corners`` when ``in * scale`` is not a
whole number (it maps with the rounded output size, as PyTorch's ``align_corners=True``
does): the ONNX backend tests ``test_resize_downsample_scales_{linear,cubic}_align_corners``
caught the old translations matching onnxruntime and not the spec.  Each case here
converts a one-node graph and runs the generated ``model.py`` against
``onnx.reference.ReferenceEvaluator`` (never against the code under test).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx_ir as ir  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from pipeline import importers, normalize  # noqa: E402
from pipeline.convert import Options, convert  # noqa: E402
from pipeline.parity import run_generated  # noqa: E402
from pipeline.referee import run_onnx  # noqa: E402

F32 = TensorProto.FLOAT
X = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 4)  # the spec's own example input


def resize_model(x_shape, out_shape, opset=19, op="Resize", inputs=("x", "", "scales"), consts=None, **attrs):
    node = helper.make_node(op, list(inputs), ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, x_shape)],
                              [helper.make_tensor_value_info("y", F32, out_shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def translate_and_run(tmp_path, model: onnx.ModelProto, target: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Normalize and import ``model`` for ``target`` (no parity run: onnxruntime is not the referee here),
    then run the generated model.py on ``x``."""
    out = tmp_path / target
    out.mkdir()
    res = normalize.normalize(ir.serde.deserialize_model(model), target, "source", None, 1e-4, 1e-4)
    importers.generate(target, res.model, out, "t", "test", res.interface, "onnx")
    return run_generated(out, target, [x])[0], (out / "model.py").read_text()


def spec(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_downsampling_align_corners_follows_the_spec_not_onnxruntime(tmp_path, target, mode):
    """Scales 0.6 on 2 x 4: the spec maps width with (4 - 1) / (2.4 - 1), not (4 - 1) / (2 - 1)."""
    model = resize_model([1, 1, 2, 4], [1, 1, 1, 2], mode=mode, coordinate_transformation_mode="align_corners",
                         consts={"scales": np.array([1, 1, 0.6, 0.6], np.float32)})
    want = spec(model, X)
    assert not np.allclose(run_onnx_model(tmp_path, model, X), want, atol=1e-3)  # why the spec is the referee
    got, code = translate_and_run(tmp_path, model, target, X)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "nn.Upsample" not in code and "Resizing" not in code


def run_onnx_model(tmp_path, model, x):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return run_onnx(str(path), {"x": x})[0]


CASES = {  # name -> (x shape, output shape, attributes, scales or sizes)
    "nearest_default_half_pixel_round_prefer_floor": ([2, 3, 5, 4], [2, 3, 8, 10], {}, ("sizes", [2, 3, 8, 10])),
    "nearest_downsample_round_prefer_ceil_asymmetric": (
        [1, 2, 7, 9], [1, 2, 4, 5], {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_ceil"},
        ("scales", [1, 1, 0.6, 0.6])),
    "cubic_half_pixel_exclude_outside": (
        [1, 2, 5, 6], [1, 2, 9, 8], {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
        ("sizes", [1, 2, 9, 8])),
    "linear_asymmetric_3d": ([1, 2, 3, 4, 5], [1, 2, 6, 6, 10], {"mode": "linear", "coordinate_transformation_mode":
                                                                 "asymmetric"}, ("scales", [1, 1, 2, 1.5, 2])),
    "linear_half_pixel_symmetric": ([1, 1, 4, 5], [1, 1, 6, 7], {"mode": "linear", "coordinate_transformation_mode":
                                                                "half_pixel_symmetric"}, ("scales", [1, 1, 1.7, 1.5])),
}


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_resize_without_a_matching_layer_follows_the_spec(tmp_path, target, case):
    """Modes no PyTorch or Keras layer computes as the spec does: the spec's per-axis weights instead
    (both targets used to refuse most of these)."""
    x_shape, out_shape, attrs, (kind, values) = CASES[case]
    dtype = np.float32 if kind == "scales" else np.int64
    inputs = ("x", "", "scales") if kind == "scales" else ("x", "", "", "sizes")
    model = resize_model(x_shape, out_shape, inputs=inputs, consts={kind: np.array(values, dtype)}, **attrs)
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    got, _ = translate_and_run(tmp_path, model, target, x)
    np.testing.assert_allclose(got, spec(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,op", [(9, "Upsample"), (10, "Resize")])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_opset_9_and_10_forms_map_asymmetrically(tmp_path, opset, op, mode):
    """Upsample and Resize-10 take (X, scales) and map ``o / scale``; Keras read Resize-10 as
    half_pixel (the later default) and PyTorch refused nearest.  onnxruntime runs both opsets."""
    model = resize_model([1, 2, 3, 4], [1, 2, 6, 8], opset=opset, op=op, inputs=("x", "scales"), mode=mode,
                         consts={"scales": np.array([1, 1, 2, 2], np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for target in ("torch", "keras") if op == "Resize" else ("torch",):
        result = convert(Options(model=str(path), to=target, out=str(tmp_path / f"out_{target}")))
        assert result.exit_code == 0, result.report["parity"]["stages"]


def test_upsample_7_scales_attribute(tmp_path):
    """Upsample-7 gives the scales as an attribute (nearest by whole factors: each element repeated,
    which is how the reference evaluator's Upsample reads the spec; it takes no attribute form)."""
    model = resize_model([1, 2, 3, 4], [1, 2, 6, 12], opset=8, op="Upsample", inputs=("x",),
                         scales=[1.0, 1.0, 2.0, 3.0])
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    got, code = translate_and_run(tmp_path, model, "torch", x)
    np.testing.assert_array_equal(got, x.repeat(2, axis=2).repeat(3, axis=3))
    assert "nn.Upsample(scale_factor=(2.0, 3.0), mode=\"nearest\")" in code, code
