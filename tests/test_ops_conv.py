"""Conv and ConvTranspose forms the ONNX backend node tests found refused or broken.

Each case writes a one-node ONNX graph, converts it through the real pipeline (whose
parity stage runs onnxruntime on the same inputs: the reference, never the code under
test) and checks the exit code, the parity numbers and which form the code took.

- the weight (and bias) as graph inputs: the functional form (``F.conv2d`` /
  ``keras.ops.conv``, the kernel transposed at run time), not "the weight must be a constant";
- ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID, made explicit pads by normalize.
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

MAX_REL_ERR = 1e-4


def graph(tmp_path, node, inputs: dict[str, tuple], consts: dict[str, np.ndarray] | None = None, opset: int = 18,
          outputs: list[str] | None = None):
    """A one-node model: float ``inputs`` (name -> shape), initializers ``consts``; the graph's
    outputs are ``outputs`` (default: every output of the node)."""
    outputs = outputs or list(node.output)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
                          [helper.make_empty_tensor_value_info(o) for o in outputs],
                          [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.output[:]
    inferred = {v.name: v for v in model.graph.value_info}
    model.graph.output.extend(inferred[o] for o in outputs)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    return path


def converted(tmp_path, path, to: str) -> str:
    """Convert ``path``; it must pass parity against onnxruntime within 1e-4.  Returns model.py."""
    result = convert(Options(model=str(path), to=to, out=str(tmp_path / to)))
    parity = result.report.get("parity") or {}
    assert result.exit_code == 0, result.report.get("error") or parity.get("stages")
    outputs = parity["stages"]["converted_vs_source"]
    assert outputs and all(o["passed"] and o["max_rel_err"] <= MAX_REL_ERR for o in outputs), outputs
    return (tmp_path / to / "model.py").read_text()


def floats(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_conv_weight_and_bias_as_graph_inputs(tmp_path, to):
    """Stride 2 and asymmetric pads on a weight and bias that only arrive at run time."""
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1])
    code = converted(tmp_path, graph(tmp_path, node, {"x": (2, 3, 9, 8), "w": (4, 3, 3, 2), "b": (4,)}), to)
    assert ("F.conv2d(" if to == "torch" else "ops.conv(") in code


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_grouped_dilated_conv_weight_as_graph_input_with_constant_bias(tmp_path, to):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, dilations=[2], strides=[2])
    path = graph(tmp_path, node, {"x": (1, 4, 15), "w": (6, 2, 3)}, {"b": floats(6, seed=1)})
    code = converted(tmp_path, path, to)
    assert ("F.conv1d(" if to == "torch" else "ops.conv(") in code


@pytest.mark.parametrize("to", ["torch", "keras"])
@pytest.mark.parametrize("pads, outpad", [([0, 0, 0, 0], [0, 0]), ([1, 0, 0, 1], [1, 1]), ([-1, 0, 0, 0], [0, 0])])
def test_conv_transpose_weight_as_graph_input(tmp_path, to, pads, outpad):
    """The functional transposed convolution, cut to ONNX's window (negative pads extend it)."""
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=pads,
                            output_padding=outpad)
    path = graph(tmp_path, node, {"x": (1, 3, 4, 5), "w": (3, 2, 3, 3)}, {"b": floats(2, seed=2)})
    code = converted(tmp_path, path, to)
    assert ("F.conv_transpose2d(" if to == "torch" else "ops.conv(") in code


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_grouped_dilated_conv_transpose_weight_as_graph_input(tmp_path, to):
    """Keras has no grouped or (on CPU) dilated transposed convolution: one convolution per group."""
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2, dilations=[2, 1], strides=[1, 3],
                            pads=[1, 0, 0, 2])
    path = graph(tmp_path, node, {"x": (1, 4, 5, 4), "w": (4, 3, 3, 2)})
    code = converted(tmp_path, path, to)
    assert ("F.conv_transpose2d(" if to == "torch" else "ops.conv(") in code


@pytest.mark.parametrize("to", ["torch", "keras"])
@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad(tmp_path, to, mode):
    """An even kernel with a stride: SAME_UPPER and SAME_LOWER put the odd pixel at opposite ends."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 2])
    converted(tmp_path, graph(tmp_path, node, {"x": (1, 2, 7, 6)}, {"w": floats(3, 2, 2, 4)}), to)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_weight_normalized_grouped_conv(tmp_path, to):
    """wav2vec2's positional convolution: ``weight = v * g / ||v||`` computed in the graph from
    initializers, grouped and padded.  Every input of the computation is a constant, so
    normalize folds it however large ``v`` is, and the weight is a plain layer's."""
    nodes = [helper.make_node("ReduceL2", ["v", "axes"], ["norm"], keepdims=1),
             helper.make_node("Div", ["g", "norm"], ["scale"]),
             helper.make_node("Mul", ["v", "scale"], ["w"]),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, pads=[40, 40])]
    consts = {"v": floats(16, 8, 80, seed=3), "g": floats(1, 1, 80, seed=4), "axes": np.array([0, 1], np.int64),
              "b": floats(16, seed=5)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 16, 100))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 16, 101))],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "g.onnx")
    code = converted(tmp_path, tmp_path / "g.onnx", to)
    assert ("nn.Conv1d(16, 16, kernel_size=80" if to == "torch" else "layers.Conv1D(16, 80") in code
