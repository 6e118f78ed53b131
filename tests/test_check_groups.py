"""normalize's grouped checks (issue 11): a layout pass and the transpose cleanup after it are
checked by one onnxruntime run, against the same reference, and a broken result is still caught
and named.  The broken pass here changes a constant, so onnxruntime's outputs differ for sure."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from pipeline import normalize as norm


def _model() -> ir.Model:
    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.ones((2, 3), np.float32), "c")])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10))


class Touch(ir.passes.InPlacePass):
    """Says it changed the graph; ``add`` is added to the constant (0: a harmless change)."""

    def __init__(self, add: float = 0.0, modified: bool = True):
        super().__init__()
        self.add, self.modified = add, modified

    def call(self, model):
        c = model.graph.initializers["c"]
        c.const_value = ir.tensor(c.const_value.numpy() + np.float32(self.add), name="c")
        return ir.passes.PassResult(model, self.modified)


def _run(monkeypatch, plan):
    monkeypatch.setattr(norm, "pass_plan", lambda *a, **k: plan)
    x = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    return norm.normalize(_model(), "keras", inputs=x)


def test_a_group_is_checked_once_and_a_break_names_both(monkeypatch):
    with pytest.raises(norm.PassBroke, match=r"passes 'channels_last', 'transposes' \(checked together\)"):
        _run(monkeypatch, [("channels_last", Touch(add=1.0)), ("transposes", Touch())])
    result = _run(monkeypatch, [("channels_last", Touch()), ("transposes", Touch())])
    first, second = result.passes
    assert first.checked_with == second.checked_with == ["channels_last", "transposes"]
    assert first.check_seconds == 0.0 and second.check_seconds > 0.0  # one onnxruntime run, after both
    assert first.max_abs_err == second.max_abs_err == 0.0


def test_a_group_whose_cleanup_changes_nothing_names_the_layout_pass(monkeypatch):
    with pytest.raises(norm.PassBroke, match=r"normalize pass 'channels_last' changed output"):
        _run(monkeypatch, [("channels_last", Touch(add=1.0)), ("transposes", Touch(modified=False))])


def test_passes_outside_a_group_are_checked_one_by_one(monkeypatch):
    with pytest.raises(norm.PassBroke, match=r"normalize pass 'fold_constants' changed output"):
        _run(monkeypatch, [("fold_constants", Touch(add=1.0)), ("transposes", Touch())])


def test_the_last_pass_is_checked(monkeypatch):
    with pytest.raises(norm.PassBroke, match=r"normalize pass 'cleanup' changed output"):
        _run(monkeypatch, [("fold_constants", Touch()), ("cleanup", Touch(add=1.0))])
