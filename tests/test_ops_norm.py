"""Normalization ops' optional outputs and old opset forms, on one-node graphs.

The ONNX backend node tests found LayerNormalization and training-mode BatchNormalization
crashing (``KeyError: value 'Mean' used before it is defined``) when their optional outputs
are graph outputs.  LayerNormalization's Mean and InvStdDev are now written as the spec's
expressions (checked against onnxruntime by the pipeline's parity run); training-mode
BatchNormalization is refused naming what it would compute.  BatchNormalization before
opset 7 (``is_test``) and 9 (``spatial``) is read for what it means, with the reference
evaluator as the referee where onnxruntime has no kernel.
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

from pipeline import importers  # noqa: E402
from pipeline.convert import Options, convert  # noqa: E402
from pipeline.errors import Unsupported  # noqa: E402
from pipeline.parity import run_generated  # noqa: E402

F32 = TensorProto.FLOAT
rng = np.random.default_rng(5)


def model(nodes, inputs, outputs, consts, opset):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F32, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, F32, s) for n, s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7 if opset < 15 else 9)


def convert_model(tmp_path, proto, target):
    path = tmp_path / f"{target}.onnx"
    onnx.save(proto, path)
    return convert(Options(model=str(path), to=target, out=str(tmp_path / target)))


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("axis,outputs", [(-1, ("y", "mean", "inv_std")), (1, ("y", "", "inv_std"))])
def test_layer_norm_mean_and_inv_std_dev_outputs(tmp_path, target, axis, outputs):
    shape = [2, 3, 4]
    norm = shape[axis:]
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], list(outputs), axis=axis, epsilon=1e-3)
    stat = shape[:axis % 3] + [1] * len(norm)
    outs = [(o, shape if o == "y" else stat) for o in outputs if o]
    proto = model([node], [("x", shape)], outs,
                  {"scale": rng.uniform(0.5, 1.5, norm).astype(np.float32),
                   "bias": rng.normal(size=norm).astype(np.float32)}, 18)
    result = convert_model(tmp_path, proto, target)
    stages = result.report["parity"]["stages"]
    assert result.exit_code == 0, stages
    assert len(stages["converted_vs_source"]) == len(outs), stages


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_training_mode_batch_norm_is_refused_naming_the_outputs(tmp_path, target):
    c = 3
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "running_mean", "running_var"],
                            training_mode=1, name="bn_train")
    proto = model([node], [("x", [2, c])], [("y", [2, c]), ("running_mean", [c]), ("running_var", [c])],
                  {k: rng.uniform(0.5, 1.5, c).astype(np.float32) for k in "sbmv"}, 15)
    with pytest.raises(Unsupported, match=r"bn_train.*training_mode=1.*running_mean, running_var"):
        convert_model(tmp_path, proto, target)


def generated(tmp_path, proto, target, x):
    """Import ``proto`` (no normalize passes: a rank-2 BatchNormalization needs no layout) and run it."""
    out = tmp_path / target
    out.mkdir()
    importers.generate(target, ir.serde.deserialize_model(proto), out, "t", "test", {}, "onnx")
    return run_generated(out, target, [x])[0]


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("opset,attrs", [(1, {"is_test": 1, "consumed_inputs": [0, 0, 0, 1, 1]}),
                                         (6, {"is_test": 1}), (7, {"spatial": 1})])
def test_old_batch_norm_forms_in_inference_mode(tmp_path, target, opset, attrs):
    """onnxruntime has no BatchNormalization before opset 7 and the reference evaluator's returns a
    tuple there: the spec's own formula is the referee."""
    c = 4
    consts = {"s": rng.uniform(0.5, 1.5, c), "b": rng.normal(size=c), "m": rng.normal(size=c),
              "v": rng.uniform(0.5, 1.5, c)}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3, **attrs)
    proto = model([node], [("x", [3, c])], [("y", [3, c])],
                  {k: v.astype(np.float32) for k, v in consts.items()}, opset)
    x = rng.normal(size=(3, c)).astype(np.float32)
    want = (x - consts["m"]) / np.sqrt(consts["v"] + 1e-3) * consts["s"] + consts["b"]  # the spec's formula
    np.testing.assert_allclose(generated(tmp_path, proto, target, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,attrs,why", [(6, {"is_test": 0}, "is_test=0"), (1, {}, "is_test=0"),
                                              (7, {"spatial": 0}, "spatial=0")])
def test_old_batch_norm_training_or_per_position_forms_are_refused(tmp_path, opset, attrs, why):
    c = 4
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)
    proto = model([node], [("x", [3, c])], [("y", [3, c])],
                  {k: np.ones(c, np.float32) for k in "sbmv"}, opset)
    out = tmp_path / "torch"
    out.mkdir()
    with pytest.raises(Unsupported, match=why):
        importers.generate("torch", ir.serde.deserialize_model(proto), out, "t", "test", {}, "onnx")


@pytest.mark.parametrize("target", ["torch", "keras"])
def test_scale_from_a_graph_input_takes_the_functional_form(tmp_path, target):
    """A BatchNormalization or LayerNormalization scale that is not a constant (here a graph input) was
    refused ("statistics must be a constant"): the functional forms take it as a tensor."""
    c, d = 3, 5
    consts = {"b": rng.normal(size=c), "m": rng.normal(size=c), "v": rng.uniform(0.5, 1.5, c),
              "ln_b": rng.normal(size=d)}
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
             helper.make_node("LayerNormalization", ["z", "ln_s", "ln_b"], ["ln"], axis=-1)]
    proto = model(nodes, [("x", [2, c, 4, 4]), ("s", [c]), ("z", [2, 4, d]), ("ln_s", [d])],
                  [("bn", [2, c, 4, 4]), ("ln", [2, 4, d])], {k: v.astype(np.float32) for k, v in consts.items()}, 18)
    result = convert_model(tmp_path, proto, target)
    stages = result.report["parity"]["stages"]
    assert result.exit_code == 0, stages
    assert len(stages["converted_vs_source"]) == 2, stages
    code = (tmp_path / target / "model.py").read_text()
    assert code.count("computed at run time") == 2, code
