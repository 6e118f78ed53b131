"""ONNX ops that Hugging Face transformers exports bring, checked one at a time on tiny graphs.

Each case writes a one- or two-node ONNX graph, converts the ``.onnx`` file to Keras
through the real pipeline, then runs the generated ``model.py`` and onnxruntime on the
same fresh inputs: onnxruntime is the reference, never the code under test.

- ``GatherND`` / ``GatherElements``: the padding-mask lookup and BERT's ``token_type_ids``
  buffer (whose constant GatherElements onnx's reference evaluator cannot fold);
- ``CumSum``: RoBERTa's position ids;
- ``SplitToSequence`` + ``SequenceAt``: GPT-2's ``qkv.split(n, dim)``, which the normalizer
  rewrites to one ``Split`` (onnx_ir's shape inference types the sequence as a tensor,
  which onnxruntime then refuses).
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
from pipeline.parity import load_generated  # noqa: E402
from pipeline.referee import run_onnx  # noqa: E402

ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}


def onnx_file(tmp_path, nodes, inputs: dict[str, np.ndarray], outputs: list[str], consts: dict | None = None):
    """Write a graph of ``nodes`` with the example ``inputs`` (for names, dtypes, shapes) and initializers ``consts``."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, ONNX_TYPES[v.dtype], v.shape) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for out in model.graph.output:  # give the outputs the types ONNX's own inference finds
        out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    return path


def convert_and_compare(tmp_path, path, feed: dict[str, np.ndarray]) -> str:
    """Convert ``path`` to Keras; the generated model must match onnxruntime on ``feed``.  Returns model.py."""
    result = convert(Options(model=str(path), to="keras", out=str(tmp_path / "out")))
    assert result.exit_code == 0, result.report["parity"]
    want = run_onnx(str(path), feed)
    model = load_generated(tmp_path / "out" / "model.py")
    names = [i.name for i in onnx.load(str(path)).graph.input]
    xs = [feed[n] for n in names]
    got = model(xs if len(xs) > 1 else xs[0], training=False)
    got = got if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(want)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)
    return (tmp_path / "out" / "model.py").read_text()


rng = np.random.default_rng(7)


def floats(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- GatherND -------------------------------------------------------------------

def test_gather_nd_constant_indices_like_a_padding_mask(tmp_path):
    """transformers' ``mask[batch_idx, kv_idx]``: constant (2, 1, 1, 8, 2) indices into (2, 8); one is negative."""
    b, k = np.meshgrid(np.arange(2), np.arange(8), indexing="ij")
    idx = np.stack([b, k], -1).reshape(2, 1, 1, 8, 2).astype(np.int64)
    idx[1, 0, 0, 3] = [-1, -5]  # same element as [1, 3]
    path = onnx_file(tmp_path, [helper.make_node("GatherND", ["x", "idx"], ["y"])], {"x": floats(2, 8)}, ["y"],
                     {"idx": idx})
    code = convert_and_compare(tmp_path, path, {"x": floats(2, 8)})
    assert "ops.take(ops.reshape(x, (16,))" in code


def test_gather_nd_runtime_indices(tmp_path):
    """Indices as a graph input: index tuples of length 2 into (8, 9, 3) -> (3, 3)."""
    path = onnx_file(tmp_path, [helper.make_node("GatherND", ["x", "idx"], ["y"])],
                     {"x": floats(8, 9, 3), "idx": np.zeros((3, 2), np.int64)}, ["y"])
    idx = np.array([[0, 0], [7, 8], [-1, -2]], np.int64)
    convert_and_compare(tmp_path, path, {"x": floats(8, 9, 3), "idx": idx})


def test_gather_nd_batch_dims(tmp_path):
    """``batch_dims=1``: each batch row indexes its own (8, 3) slice."""
    path = onnx_file(tmp_path, [helper.make_node("GatherND", ["x", "idx"], ["y"], batch_dims=1)],
                     {"x": floats(2, 8, 3), "idx": np.zeros((2, 4, 1), np.int64)}, ["y"])
    idx = np.array([[[0], [7], [3], [3]], [[1], [2], [-1], [0]]], np.int64)
    convert_and_compare(tmp_path, path, {"x": floats(2, 8, 3), "idx": idx})


# -- GatherElements -----------------------------------------------------------------

def test_gather_elements_of_two_constants_is_computed_once(tmp_path):
    """BERT's ``token_type_ids`` buffer (1, 32) read at positions (1, 8): a constant in model.py."""
    nodes = [helper.make_node("GatherElements", ["buf", "pos"], ["g"], axis=1),
             helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "gf"], ["y"])]
    buf = np.arange(32, dtype=np.int64).reshape(1, 32) * 3
    pos = np.array([[5, 0, 31, 2, 2, 9, -1, 7]], np.int64)
    path = onnx_file(tmp_path, nodes, {"x": floats(2, 8)}, ["y"], {"buf": buf, "pos": pos})
    code = convert_and_compare(tmp_path, path, {"x": floats(2, 8)})
    assert "take_along_axis" not in code


def test_gather_elements_indices_shorter_than_data(tmp_path):
    """ONNX lets the indices be smaller than the data on the other axes: (3, 8) data, (2, 4) indices."""
    idx = np.array([[0, 7, -1, 3], [2, 2, 5, -8]], np.int64)
    path = onnx_file(tmp_path, [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)],
                     {"x": floats(3, 8)}, ["y"], {"idx": idx})
    code = convert_and_compare(tmp_path, path, {"x": floats(3, 8)})
    assert "ops.take_along_axis(ops.slice(x" in code


def test_gather_elements_runtime_indices(tmp_path):
    path = onnx_file(tmp_path, [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=0)],
                     {"x": floats(8, 5), "idx": np.zeros((3, 5), np.int64)}, ["y"])
    idx = rng.integers(-8, 8, (3, 5)).astype(np.int64)
    convert_and_compare(tmp_path, path, {"x": floats(8, 5), "idx": idx})


# -- CumSum ---------------------------------------------------------------------------

@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(tmp_path, exclusive, reverse):
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    path = onnx_file(tmp_path, [node], {"x": floats(2, 6, 3)}, ["y"], {"axis": np.array(-2, np.int64)})
    convert_and_compare(tmp_path, path, {"x": floats(2, 6, 3)})


def test_cumsum_of_an_integer_mask_like_roberta_position_ids(tmp_path):
    """``cumsum(ids != pad) * (ids != pad) + pad``, in int32 as RoBERTa computes it."""
    nodes = [helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], ["keep"]),
             helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.INT32),
             helper.make_node("CumSum", ["mask", "axis"], ["c"]),
             helper.make_node("Mul", ["c", "mask"], ["p"]),
             helper.make_node("Cast", ["p"], ["y"], to=TensorProto.INT64)]
    path = onnx_file(tmp_path, nodes, {"ids": np.zeros((2, 8), np.int64)}, ["y"],
                     {"pad": np.array(1, np.int64), "axis": np.array(1, np.int64)})
    ids = np.array([[0, 1, 2, 1, 5, 6, 1, 1], [1, 1, 3, 4, 1, 7, 2, 0]], np.int64)
    convert_and_compare(tmp_path, path, {"ids": ids})


# -- SplitToSequence -> Split ------------------------------------------------------------

@pytest.mark.parametrize("split,positions", [
    (np.array(4, np.int64), [0, -1, 1]),  # GPT-2: qkv.split(n_embd, dim=2)
    (np.array(5, np.int64), [2, 0]),  # a shorter last piece (12 = 5 + 5 + 2)
    (np.array([3, 9], np.int64), [1, 0]),
])
def test_split_to_sequence_becomes_split(tmp_path, split, positions):
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=2)]
    outs = []
    for i, p in enumerate(positions):
        nodes.append(helper.make_node("SequenceAt", ["seq", f"p{i}"], [f"y{i}"]))
        outs.append(f"y{i}")
    consts = {"split": split, **{f"p{i}": np.array(p, np.int64) for i, p in enumerate(positions)}}
    path = onnx_file(tmp_path, nodes, {"x": floats(2, 3, 12)}, outs, consts)
    convert_and_compare(tmp_path, path, {"x": floats(2, 3, 12)})
    normalized = onnx.load(str(tmp_path / "out" / "normalized.onnx"))
    assert not {"SplitToSequence", "SequenceAt"} & {n.op_type for n in normalized.graph.node}


def test_split_to_sequence_without_split_squeezes_with_keepdims_0(tmp_path):
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=1, keepdims=0),
             helper.make_node("SequenceAt", ["seq", "p"], ["y"])]
    path = onnx_file(tmp_path, nodes, {"x": floats(2, 3, 4)}, ["y"], {"p": np.array(-1, np.int64)})
    convert_and_compare(tmp_path, path, {"x": floats(2, 3, 4)})


# -- additions TensorFlow would run as bias_add on the wrong axis ----------------------------
# Keras' ops.add(x1, x2) becomes tf.nn.bias_add when x2 has one axis longer than 1 whose
# length is x1's axis-1 or last-axis length: the shapes below make that axis the wrong one.

def test_sum_of_three_with_a_column_vector(tmp_path):
    """Sum(a (2, 4, 4), b (4, 1), c (4,)): b adds along axis 1, c along axis 2."""
    path = onnx_file(tmp_path, [helper.make_node("Sum", ["a", "b", "c"], ["y"])],
                     {"a": floats(2, 4, 4), "b": floats(4, 1), "c": floats(4)}, ["y"])
    convert_and_compare(tmp_path, path, {"a": floats(2, 4, 4), "b": floats(4, 1), "c": floats(4)})


def test_mean_with_a_column_vector(tmp_path):
    path = onnx_file(tmp_path, [helper.make_node("Mean", ["a", "b"], ["y"])],
                     {"a": floats(3, 3), "b": floats(3, 1)}, ["y"])
    convert_and_compare(tmp_path, path, {"a": floats(3, 3), "b": floats(3, 1)})


def test_gemm_with_a_column_bias(tmp_path):
    """Gemm(A, B, C) with C (4, 1) on a (4, 4) product: C adds along the rows."""
    path = onnx_file(tmp_path, [helper.make_node("Gemm", ["a", "b", "c"], ["y"])],
                     {"a": floats(4, 3), "b": floats(3, 4), "c": floats(4, 1)}, ["y"])
    convert_and_compare(tmp_path, path, {"a": floats(4, 3), "b": floats(3, 4), "c": floats(4, 1)})


def test_gather_nd_batch_dims_runtime_indices_square(tmp_path):
    """batch_dims=1 with runtime indices, as many batches as lookups: the per-batch offset
    (3, 1) added to the (3, 3) linear index must go along the batch axis.  (Axis 1 has 8
    entries: the pipeline's own parity feeds ids in [0, 8).)"""
    path = onnx_file(tmp_path, [helper.make_node("GatherND", ["x", "idx"], ["y"], batch_dims=1)],
                     {"x": floats(3, 8, 2), "idx": np.zeros((3, 3, 1), np.int64)}, ["y"])
    idx = np.array([[[0], [7], [2]], [[1], [1], [3]], [[6], [0], [2]]], np.int64)
    convert_and_compare(tmp_path, path, {"x": floats(3, 8, 2), "idx": idx})
