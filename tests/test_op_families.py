"""The op registry and the families read by the lead (activation, elementwise, linear, shape,
gather, reduce): forms of a node the old per-target translators got wrong or crashed on,
each checked against the ONNX spec's reference implementation in both targets.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_graphs import converted_matches, graph, ort_outputs
from pipeline.convert import Options, convert
from pipeline.errors import Unsupported
from pipeline.importers import registry

TARGETS = ("torch", "keras")
rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 5)).astype(np.float32) * 2


# -- the registry ------------------------------------------------------------------------


def test_every_registered_op_has_both_emitters_or_a_stated_refusal():
    for domain, op_type, op in registry.entries():
        for target in registry.TARGETS:
            assert op.emitter(target) is not None or op.refusals.get(target), (op_type, target)


def test_registering_an_op_twice_for_overlapping_opsets_raises():
    class Again(registry.Op):
        types = ("Relu",)
        since = 14

        def torch(self, t, plan):
            pass

        def keras(self, t, plan):
            pass

    with pytest.raises(registry.DuplicateOp, match="Relu is registered twice"):
        registry.register(Again)


def test_op_facts_come_from_the_registry():
    unary = registry.ops_with("unary")
    assert {"Relu", "Clip", "Tan", "Atan", "Cast", "Dropout"} <= unary
    assert "Add" in registry.ops_with("binary") and "Add" not in unary
    assert "ReduceLogSum" in registry.ops_with("reduce")


# -- activation ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_clip_with_opset_10_attribute_bounds(tmp_path, target):
    """Opset < 11 gives the bounds as attributes: Keras ignored them, PyTorch crashed."""
    path = graph(tmp_path, [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=1.25)], {"x": X}, ["y"], opset=10)
    converted_matches(tmp_path, path, {"x": X}, target)


@pytest.mark.parametrize("target", TARGETS)
def test_clip_without_bounds_and_with_one_bound(tmp_path, target):
    nodes = [helper.make_node("Clip", ["x"], ["a"]), helper.make_node("Clip", ["a", "", "hi"], ["y"])]
    path = graph(tmp_path, nodes, {"x": X}, ["y"], {"hi": np.array(0.3, np.float32)}, opset=13)
    converted_matches(tmp_path, path, {"x": X}, target)


def test_clip_with_a_bound_computed_at_run_time(tmp_path):
    """A bound that is a graph input (a rank-0 tensor, which only PyTorch models take) is ``torch.clamp``'s tensor."""
    lo = np.array(0.3, np.float32)
    path = graph(tmp_path, [helper.make_node("Clip", ["x", "lo"], ["y"])], {"x": X, "lo": lo}, ["y"], opset=13)
    converted_matches(tmp_path, path, {"x": X, "lo": lo}, "torch")


@pytest.mark.parametrize("target", TARGETS)
def test_softsign_and_softmax_before_opset_13(tmp_path, target):
    """Before opset 13, Softmax(axis=1) of a 3-D tensor normalizes over axes 1 and 2 together.

    onnx's reference evaluator (1.19) applies the opset-13 rule to opset 11 too; onnxruntime
    follows the opset-11 spec, so it is the reference here."""
    nodes = [helper.make_node("Softsign", ["x"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=1)]
    path = graph(tmp_path, nodes, {"x": X}, ["y"], opset=11)
    converted_matches(tmp_path, path, {"x": X}, target, reference=ort_outputs)


# -- elementwise --------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_integer_division_truncates_toward_zero(tmp_path, target):
    a = np.array([[7, -7, 7, -7, 6]], np.int64)
    b = np.array([[2, 2, -2, -2, 3]], np.int64)
    path = graph(tmp_path, [helper.make_node("Div", ["a", "b"], ["y"])], {"a": a}, ["y"], {"b": b}, opset=14)
    converted_matches(tmp_path, path, {"a": a}, target)


def test_dropout_mask_output(tmp_path):
    """At inference the mask is all true: a constant output, which PyTorch returns and a
    functional Keras model cannot (refused, exit 3, naming it)."""
    path = graph(tmp_path, [helper.make_node("Dropout", ["x"], ["y", "mask"])], {"x": X}, ["y", "mask"], opset=13)
    converted_matches(tmp_path, path, {"x": X}, "torch")
    with pytest.raises(Unsupported, match="mask.*constant output"):
        convert(Options(model=str(path), to="keras", out=str(tmp_path / "k")))


# -- linear -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_gemm_with_a_full_matrix_c(tmp_path, target):
    """C of shape (M, N) is no bias vector: the product, then C (it crashed as a bias)."""
    a = rng.standard_normal((3, 5)).astype(np.float32)
    consts = {"w": rng.standard_normal((5, 4)).astype(np.float32), "c": rng.standard_normal((3, 4)).astype(np.float32)}
    path = graph(tmp_path, [helper.make_node("Gemm", ["a", "w", "c"], ["y"])], {"a": a}, ["y"], consts, opset=13)
    converted_matches(tmp_path, path, {"a": a}, target)


# -- shape --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_slice_with_negative_steps(tmp_path, target):
    consts = {"starts": np.array([-1, 3], np.int64), "ends": np.array([-100, 0], np.int64),
              "axes": np.array([2, 1], np.int64), "steps": np.array([-2, -1], np.int64)}
    x = rng.standard_normal((2, 4, 7)).astype(np.float32)
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    path = graph(tmp_path, [node], {"x": x}, ["y"], consts, opset=13)
    converted_matches(tmp_path, path, {"x": x}, target)


@pytest.mark.parametrize("target", TARGETS)
def test_slice_and_pad_with_attributes_before_opset_10_and_11(tmp_path, target):
    nodes = [helper.make_node("Slice", ["x"], ["s"], starts=[1], ends=[4], axes=[2]),
             helper.make_node("Pad", ["s"], ["y"], pads=[0, 0, 1, 0, 0, 2], value=0.5)]
    path = graph(tmp_path, nodes, {"x": X}, ["y"], opset=9)
    converted_matches(tmp_path, path, {"x": X}, target)


# -- gather and reduce --------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_gather_with_negative_indices(tmp_path, target):
    """ONNX counts negative indices from the end; index_select and tf.gather do not (IndexError before)."""
    consts = {"idx": np.array([[-1, 0], [2, -3]], np.int64)}
    d = rng.standard_normal((2, 8)).astype(np.float32)  # 8 rows: the pipeline's own int inputs are drawn in [0, 8)
    ids = np.array([-2, 1, -8], np.int64)
    nodes = [helper.make_node("Gather", ["x", "idx"], ["a"], axis=2),
             helper.make_node("Gather", ["d", "ids"], ["b"], axis=1)]
    path = graph(tmp_path, nodes, {"x": X, "d": d, "ids": ids}, ["a", "b"], consts, opset=13)
    converted_matches(tmp_path, path, {"x": X, "d": d, "ids": ids}, target)


@pytest.mark.parametrize("target", TARGETS)
def test_reduce_over_an_empty_axis_and_reduce_log_sum(tmp_path, target):
    """The max over no elements is -inf (the spec's value; both frameworks' max refuse empty
    input); exp() of it makes the output finite, so parity can judge it (exp(-inf) = 0)."""
    empty = np.zeros((2, 0, 4), np.float32)
    nodes = [helper.make_node("ReduceMax", ["e", "axes"], ["m"], keepdims=1),
             helper.make_node("Exp", ["m"], ["em"]),
             helper.make_node("Abs", ["p"], ["a"]),
             helper.make_node("ReduceLogSum", ["a", "axes"], ["l"], keepdims=0)]
    consts = {"axes": np.array([1], np.int64)}
    path = graph(tmp_path, nodes, {"e": empty, "p": X}, ["em", "l"], consts, opset=18)
    converted_matches(tmp_path, path, {"e": empty, "p": X}, target)


def test_a_sequence_the_importers_cannot_write_is_refused_not_called_bad_input(tmp_path):
    """SplitToSequence read at a run-time position keeps its sequence: onnxruntime must still
    run the graph (normalize used to retype the sequence as a tensor, which onnxruntime refused
    with exit 2 as if the model were bad); the importer then refuses the sequence ops (exit 3)."""
    x = rng.standard_normal((1, 8, 6)).astype(np.float32)
    i = np.array(1, np.int64)
    nodes = [helper.make_node("SplitToSequence", ["x", "sizes"], ["seq"], axis=1),
             helper.make_node("SequenceAt", ["seq", "i"], ["y"])]
    path = graph(tmp_path, nodes, {"x": x, "i": i}, ["y"], {"sizes": np.array([3, 5], np.int64)}, opset=18)
    with pytest.raises(Unsupported, match="SequenceAt"):
        convert(Options(model=str(path), to="torch", out=str(tmp_path / "out")))


@pytest.mark.parametrize("mode", ["edge", "wrap", "reflect"])
@pytest.mark.parametrize("target", TARGETS)
def test_pad_modes(tmp_path, target, mode):
    """TensorFlow has no edge or wrap padding (PyTorch's replicate and circular): Keras crashed."""
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    consts = {"pads": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)}
    path = graph(tmp_path, [helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)], {"x": x}, ["y"], consts, opset=18)
    converted_matches(tmp_path, path, {"x": x}, target)
