"""Pooling forms the ONNX backend node tests found refused or broken.

Each case writes a one-node ONNX graph, converts it through the real pipeline (whose
parity stage runs onnxruntime on the same inputs: the reference, never the code under
test) and checks the exit code, the parity numbers and which form the code took.

- MaxPool's second output (Indices): ``return_indices=True`` for PyTorch, the plane
  offsets and column-major order added; a refusal naming the output for Keras, and for
  PyTorch where the pool needs explicit padding;
- LpPool and GlobalLpPool (the p-norm of each window): ``nn.LPPoolNd`` where it is exact,
  the taps' sum of ``|x| ** p`` otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import pytest  # noqa: E402
from onnx import helper  # noqa: E402

from pipeline.convert import Options, convert  # noqa: E402
from pipeline.errors import Unsupported  # noqa: E402
from test_ops_conv import converted, graph  # noqa: E402  (the same one-node graphs and parity check)


@pytest.mark.parametrize("shape, attrs", [
    ((2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 3, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 1], storage_order=1)),
    ((1, 2, 9), dict(kernel_shape=[3], strides=[2], dilations=[2], ceil_mode=1)),
    ((1, 2, 4, 5, 6), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2])),
])
def test_maxpool_indices_to_torch(tmp_path, shape, attrs):
    """Indices count into the whole input flattened (N, C, spatial), padding not counted."""
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], **attrs)
    code = converted(tmp_path, graph(tmp_path, node, {"x": shape}), "torch")
    assert "return_indices=True" in code


def test_maxpool_indices_are_refused_naming_the_output(tmp_path):
    """Keras has no argmax pooling; PyTorch's indices would count the explicit -inf padding."""
    node = helper.make_node("MaxPool", ["x"], ["y", "where_max"], kernel_shape=[3, 3], pads=[2, 0, 0, 1])
    path = graph(tmp_path, node, {"x": (1, 2, 6, 6)})
    for to in ("keras", "torch"):
        with pytest.raises(Unsupported, match=r"MaxPool output 'where_max' \(Indices\)"):
            convert(Options(model=str(path), to=to, out=str(tmp_path / to)))


def test_maxpool_unread_indices_are_ignored(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])
    converted(tmp_path, graph(tmp_path, node, {"x": (1, 2, 6, 6)}, outputs=["y"]), "keras")


@pytest.mark.parametrize("to", ["torch", "keras"])
@pytest.mark.parametrize("attrs, native", [
    (dict(kernel_shape=[3, 2], strides=[2, 2]), True),  # p = 2: nn.LPPool2d is exact
    (dict(kernel_shape=[3, 3], strides=[2, 1], p=3, pads=[1, 0, 2, 1]), False),  # odd p: |x| needed
    (dict(kernel_shape=[2, 2], dilations=[2, 1], ceil_mode=1, p=1, strides=[2, 2]), False),
])
def test_lp_pool(tmp_path, to, attrs, native):
    node = helper.make_node("LpPool", ["x"], ["y"], **attrs)
    code = converted(tmp_path, graph(tmp_path, node, {"x": (1, 3, 8, 7)}), to)
    if to == "torch":
        assert ("nn.LPPool2d(" in code) == native


@pytest.mark.parametrize("to", ["torch", "keras"])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool(tmp_path, to, p):
    node = helper.make_node("GlobalLpPool", ["x"], ["y"], p=p)
    converted(tmp_path, graph(tmp_path, node, {"x": (2, 3, 5, 4)}), to)
