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
    return resize_graph([(x_shape, out_shape, op, inputs, consts or {}, attrs)], opset)


def resize_graph(cases, opset=19):
    """One graph with a node per case ``(x shape, y shape, op, input names, constants, attributes)``:
    inputs ``x``, ``x1``, ... and outputs ``y``, ``y1``, ... (one conversion checks them all)."""
    nodes, ins, outs, inits = [], [], [], []
    for i, (x_shape, out_shape, op, inputs, consts, attrs) in enumerate(cases):
        sfx = str(i) if i else ""
        names = [f"{n}{sfx}" if n else "" for n in inputs]
        nodes.append(helper.make_node(op, names, [f"y{sfx}"], **attrs))
        ins.append(helper.make_tensor_value_info(f"x{sfx}", F32, x_shape))
        outs.append(helper.make_tensor_value_info(f"y{sfx}", F32, out_shape))
        inits += [numpy_helper.from_array(np.asarray(v), f"{k}{sfx}") for k, v in consts.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
            for v in model.graph.input}


def translate_and_run(tmp_path, model: onnx.ModelProto, target: str, feed: dict) -> tuple[list, str]:
    """Normalize and import ``model`` for ``target`` (no parity run: onnxruntime is not the referee here),
    then run the generated model.py on ``feed``."""
    out = tmp_path / target
    out.mkdir()
    res = normalize.normalize(ir.serde.deserialize_model(model), target, "source", None, 1e-4, 1e-4)
    importers.generate(target, res.model, out, "t", "test", res.interface, "onnx")
    got = run_generated(out, target, [feed[v.name] for v in model.graph.input])
    return got, (out / "model.py").read_text()


def spec(model: onnx.ModelProto, feed: dict) -> list:
    return ReferenceEvaluator(model).run(None, feed)


def run_onnx_model(tmp_path, model, feed):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return run_onnx(str(path), feed)


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_downsampling_align_corners_follows_the_spec_not_onnxruntime(tmp_path, target):
    """Scales 0.6 on 2 x 4, linear and cubic: the spec maps the width with (4 - 1) / (2.4 - 1), not
    (4 - 1) / (2 - 1) as onnxruntime does (and PyTorch's align_corners=True)."""
    scales = {"scales": np.array([1, 1, 0.6, 0.6], np.float32)}
    model = resize_graph([([1, 1, 2, 4], [1, 1, 1, 2], "Resize", ("x", "", "scales"), scales,
                           {"mode": mode, "coordinate_transformation_mode": "align_corners"})
                          for mode in ("linear", "cubic")])
    feed = {"x": X, "x1": X}
    want = spec(model, feed)
    ort = run_onnx_model(tmp_path, model, feed)
    assert not any(np.allclose(o, w, atol=1e-3) for o, w in zip(ort, want))  # why the spec is the referee
    got, code = translate_and_run(tmp_path, model, target, feed)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert "nn.Upsample" not in code and "Resizing" not in code


CASES = [  # (x shape, output shape, attributes, (scales or sizes, values))
    ([2, 3, 5, 4], [2, 3, 8, 10], {}, ("sizes", [2, 3, 8, 10])),  # nearest, half_pixel, round_prefer_floor
    ([1, 2, 7, 9], [1, 2, 4, 5], {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_ceil"},
     ("scales", [1, 1, 0.6, 0.6])),
    ([1, 2, 5, 6], [1, 2, 9, 8], {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
     ("sizes", [1, 2, 9, 8])),
    ([1, 2, 3, 4, 5], [1, 2, 6, 6, 10], {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
     ("scales", [1, 1, 2, 1.5, 2])),
    ([1, 1, 4, 5], [1, 1, 6, 7], {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
     ("scales", [1, 1, 1.7, 1.5])),
    ([1, 2, 9, 8], [1, 2, 5, 3], {"mode": "linear", "antialias": 1}, ("sizes", [1, 2, 5, 3])),
    ([1, 2, 9, 8], [1, 2, 4, 4], {"mode": "cubic", "antialias": 1}, ("scales", [1, 1, 0.5, 0.5])),
    ([1, 2, 6, 4], [1, 2, 3, 2], {"keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]}, ("sizes", [3, 3])),
    ([1, 2, 5, 6], [1, 2, 4, 3], {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                                  "extrapolation_value": 7.0, "_roi": [0, 0, 0.3, -0.2, 1, 1, 0.9, 1.3]},
     ("sizes", [1, 2, 4, 3])),
]


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_resize_without_a_matching_layer_follows_the_spec(tmp_path, target):
    """Modes no PyTorch or Keras layer computes as the spec does (nearest modes, cubic options,
    half_pixel_symmetric, antialiasing, keep_aspect_ratio_policy, tf_crop_and_resize): the spec's per-axis weights
    instead.  Both targets used to refuse most of these."""
    cases = []
    for x_shape, out_shape, attrs, (kind, values) in CASES:
        dtype = np.float32 if kind == "scales" else np.int64
        attrs = dict(attrs)
        consts = {kind: np.array(values, dtype)}
        roi = attrs.pop("_roi", None)
        if roi is not None:  # tf_crop_and_resize's box, past the input's edges on the width
            consts["roi"] = np.array(roi, np.float32)
        inputs = ("x", "roi" if roi else "", "scales") if kind == "scales" else ("x", "roi" if roi else "", "", "sizes")
        cases.append((x_shape, out_shape, "Resize", inputs, consts, attrs))
    model = resize_graph(cases)
    feed = feeds(model)
    got, _ = translate_and_run(tmp_path, model, target, feed)
    for i, (g, w) in enumerate(zip(got, spec(model, feed))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"case {CASES[i]}")


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("opset,op", [(9, "Upsample"), (10, "Resize")])
def test_opset_9_and_10_forms_map_asymmetrically(tmp_path, target, opset, op):
    """Upsample and Resize-10 take (X, scales) and map ``o / scale``: Keras read Resize-10 as
    half_pixel (the later default) and had no Upsample; PyTorch refused nearest.  Checked
    against onnxruntime, which runs both opsets."""
    scales = {"scales": np.array([1, 1, 2, 2], np.float32)}
    model = resize_graph([([1, 2, 3, 4], [1, 2, 6, 8], op, ("x", "scales"), scales, {"mode": mode})
                          for mode in ("nearest", "linear")], opset)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = convert(Options(model=str(path), to=target, out=str(tmp_path / "out")))
    assert result.exit_code == 0, result.report["parity"]["stages"]


def test_upsample_7_scales_attribute(tmp_path):
    """Upsample-7 gives the scales as an attribute (nearest by whole factors: each element repeated,
    which is how the reference evaluator's Upsample reads the spec; it takes no attribute form)."""
    model = resize_model([1, 2, 3, 4], [1, 2, 6, 12], opset=8, op="Upsample", inputs=("x",),
                         scales=[1.0, 1.0, 2.0, 3.0])
    feed = feeds(model, 2)
    got, code = translate_and_run(tmp_path, model, "torch", feed)
    np.testing.assert_array_equal(got[0], feed["x"].repeat(2, axis=2).repeat(3, axis=3))
    assert "nn.Upsample(scale_factor=(2.0, 3.0), mode=\"nearest\")" in code, code
