"""Unit tests for the normalize passes (``pipeline/normalize``).

Every test builds a small ONNX graph, runs it under onnxruntime, applies a pass
(or one transpose rule), runs it again and asserts that the outputs did not
change -- and that the pass had the structural effect it exists for.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.normalize import (
    ChannelsLast,
    Cleanup,
    ExplicitPads,
    FuseConvBias,
    InterfaceLayout,
    RefreshShapes,
    SqueezeUnitConv,
    TransposeOptimizer,
    normalize,
    pass_plan,
)
from pipeline.normalize import transpose as T
from pipeline.normalize.graph import (
    PIN_IN,
    PIN_KEY,
    PIN_OUT,
    compose,
    const_array,
    is_pinned,
    perm_of,
    static_shape,
    to_first,
    to_last,
)
from pipeline.normalize.select import WhereFromMasks
from pipeline.referee import run_onnx

F, I64 = TensorProto.FLOAT, TensorProto.INT64
NHWC_TO_NCHW, NCHW_TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


# --------------------------------------------------------------------------- helpers


class G:
    """A tiny graph builder over ``onnx.helper``: ``g.op(...)`` returns the output name."""

    def __init__(self, opset: int = 18):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def _name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def input(self, name: str, shape, dtype=F) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, array, hint: str = "c") -> str:
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs, pin: str | None = None, out: str | None = None, **attrs) -> str:
        out = out or self._name("v")
        node = helper.make_node(op_type, list(inputs), [out], name=self._name(op_type.lower()), **attrs)
        if pin:
            node.metadata_props.append(onnx.StringStringEntryProto(key=PIN_KEY, value=pin))
        self.nodes.append(node)
        return out

    def t(self, x: str, perm, pin: str | None = None) -> str:
        return self.op("Transpose", x, perm=list(perm), pin=pin)

    def proto(self, *outputs, types: dict | None = None) -> onnx.ModelProto:
        types = types or {}
        graph = helper.make_graph(
            self.nodes, "g", self.inputs,
            [helper.make_tensor_value_info(o, types.get(o, F), None) for o in outputs], self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=10)

    def model(self, *outputs, types: dict | None = None) -> ir.Model:
        model = ir.from_proto(self.proto(*outputs, types=types))
        RefreshShapes()(model)
        return model


def random_feeds(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(static_shape(v)).astype(np.float32) for v in model.graph.inputs}


def ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def nodes_of(model: ir.Model, op_type: str) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == op_type]


def n_transposes(model: ir.Model) -> int:
    return len(nodes_of(model, "Transpose"))


def validate(model: ir.Model, full_check: bool = True) -> None:
    """The rewritten graph is still a valid ONNX model (SSA names, types, shapes)."""
    proto = ir.to_proto(model)
    names = [*(i.name for i in proto.graph.input), *(i.name for i in proto.graph.initializer),
             *(o for n in proto.graph.node for o in n.output)]
    assert len(names) == len(set(names)), "value names must stay unique"
    # The checker insists on a rank for every graph output; skip it when one has none.
    if all(o.type.tensor_type.HasField("shape") for o in proto.graph.output):
        onnx.checker.check_model(proto, full_check=full_check)


class Rule:
    """Apply one transpose rule to every node until it no longer fires (a pass-like callable)."""

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, model: ir.Model):
        changed = False
        for _ in range(20):
            fired = False
            for node in T.topological_nodes(model.graph):
                if node.graph is not None and self.rule(model.graph, node):
                    fired = True
            changed |= fired
            if not fired:
                break
        return ir.passes.PassResult(model, changed)


def check(model: ir.Model, *passes, feeds=None, exact: bool = False, expect_change: bool = True,
          feed_perms: dict | None = None, out_perms: dict | None = None, full_check: bool = True) -> ir.Model:
    """Run ``passes`` on ``model`` in place; ORT outputs before and after must agree."""
    feeds = random_feeds(model) if feeds is None else feeds
    out_names = [v.name for v in model.graph.outputs]
    before = run_onnx(model, feeds)
    changed = False
    for p in passes:
        changed |= bool(p(model).modified)
        RefreshShapes()(model)
    if expect_change is not None:
        assert changed == expect_change
    assert [v.name for v in model.graph.outputs] == out_names, "public output names must survive"
    feed_perms, out_perms = feed_perms or {}, out_perms or {}
    after_feeds = {k: (v.transpose(feed_perms[k]) if k in feed_perms else v) for k, v in feeds.items()}
    after = run_onnx(model, after_feeds)
    for name, ref, got in zip(out_names, before, after):
        if name in out_perms:
            ref = ref.transpose(out_perms[name])
        assert got.shape == ref.shape, name
        assert got.dtype == ref.dtype, name
        if exact:
            np.testing.assert_array_equal(got, ref, err_msg=name)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=name)
    validate(model, full_check)
    return model


# --------------------------------------------------------------------------- merge_transposes


def test_merge_inverse_pair_cancels():
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    y = g.op("Relu", g.t(g.t(x, NCHW_TO_NHWC), NHWC_TO_NCHW), out="y")
    model = check(g.model(y), Rule(T.merge_transposes), exact=True)
    assert ops(model) == ["Relu"]


def test_merge_inverse_pair_between_input_and_output_keeps_an_identity():
    g = G()
    x = g.input("x", [2, 3, 4])
    g.op("Transpose", g.t(x, [2, 0, 1]), perm=[1, 2, 0], out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Identity"]


def test_merge_non_inverse_composes():
    p, q = [0, 2, 3, 1], [1, 0, 3, 2]
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    g.op("Transpose", g.t(x, p), perm=q, out="y")
    model = check(g.model("y"), Rule(T.merge_transposes), exact=True)
    (t,) = nodes_of(model, "Transpose")
    arr = np.arange(120).reshape(2, 3, 4, 5)
    assert np.array_equal(arr.transpose(perm_of(t)), arr.transpose(p).transpose(q))
    assert perm_of(t) == compose(p, q)


def test_merge_identity_and_default_perm():
    g = G()
    x = g.input("x", [2, 3, 4])
    a = g.op("Relu", g.t(x, [0, 1, 2]))
    b = g.op("Transpose", g.op("Transpose", a))  # no perm: reverse, twice
    g.op("Neg", b, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert n_transposes(model) == 0


def test_merge_keeps_inner_transpose_with_other_consumers():
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    t1 = g.t(x, NCHW_TO_NHWC)
    g.op("Transpose", t1, perm=NHWC_TO_NCHW, out="y")
    g.op("Relu", t1, out="z")
    model = check(g.model("y", "z"), Rule(T.merge_transposes), exact=True)
    assert n_transposes(model) == 1


# --------------------------------------------------------------------------- push_elementwise


def test_push_through_unary_cancels():
    g = G()
    x = g.input("x", [1, 5, 6, 3])
    r = g.op("Sigmoid", g.op("Relu", g.t(x, NHWC_TO_NCHW)))
    g.op("Transpose", r, perm=NCHW_TO_NHWC, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Relu", "Sigmoid"]


def test_push_through_unary_moves_transpose_to_the_output():
    g = G()
    x = g.input("x", [1, 5, 6, 3])
    g.op("Relu", g.op("Clip", g.t(x, NHWC_TO_NCHW), g.const(np.float32(-0.5)), g.const(np.float32(0.5))), out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Clip", "Relu", "Transpose"]
    assert perm_of(model.graph[2]) == NHWC_TO_NCHW
    assert model.graph.outputs[0].producer().op_type == "Transpose"


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max"])
@pytest.mark.parametrize("const_first", [False, True])
@pytest.mark.parametrize("cshape", [(3, 1, 1), (1, 3, 1, 1), (6,), (1, 1, 5, 6), ()])
def test_push_binary_with_relaid_constant(op, const_first, cshape):
    # x is NHWC; T makes it NCHW; the constant is laid out for NCHW and must be re-laid-out.
    rng = np.random.default_rng(1)
    c = (rng.standard_normal(cshape) + 3.0).astype(np.float32)
    g = G()
    x = g.input("x", [2, 5, 6, 3])
    t = g.t(x, NHWC_TO_NCHW)
    cn = g.const(c)
    a = g.op(op, *((cn, t) if const_first else (t, cn)))
    g.op("Transpose", a, perm=NCHW_TO_NHWC, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == [op]
    k = model.graph[0].inputs[0 if const_first else 1]
    arr = const_array(k)
    if c.size > 1:
        # The constant now broadcasts against NHWC data.
        full = c.reshape((1,) * (4 - c.ndim) + c.shape)
        np.testing.assert_array_equal(arr, full.transpose(NCHW_TO_NHWC))


def test_push_binary_with_two_transposed_operands():
    g = G()
    a = g.input("a", [2, 5, 6, 3])
    b = g.input("b", [2, 5, 6, 3])
    s = g.op("Mul", g.t(a, NHWC_TO_NCHW), g.t(b, NHWC_TO_NCHW))
    g.op("Relu", s, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Mul", "Relu", "Transpose"]


def test_push_where_with_three_transposed_operands():
    g = G()
    a = g.input("a", [2, 4, 3])
    b = g.input("b", [2, 4, 3])
    cond = g.op("Greater", g.t(a, [0, 2, 1]), g.const(np.float32(0.0)))
    w = g.op("Where", cond, g.t(a, [0, 2, 1]), g.t(b, [0, 2, 1]))
    g.op("Transpose", w, perm=[0, 2, 1], out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert n_transposes(model) == 0


def test_push_binary_blocked_by_mismatched_perms_and_shared_values():
    g = G()
    a = g.input("a", [2, 3, 4, 5])
    b = g.input("b", [2, 5, 3, 4])
    ta = g.t(a, NCHW_TO_NHWC)  # (2,4,5,3)
    g.op("Add", ta, g.t(b, NHWC_TO_NCHW), out="y")  # also (2,4,5,3), by a different perm
    g.op("Relu", ta, out="z")  # ta has two consumers
    model = check(g.model("y", "z"), TransposeOptimizer(), exact=True, expect_change=False)
    assert n_transposes(model) == 2


def test_push_binary_with_broadcast_to_higher_rank_is_left_alone():
    g = G()
    x = g.input("x", [3, 4])
    z = g.input("z", [2, 4, 3])
    g.op("Add", g.t(x, [1, 0]), z, out="y")
    check(g.model("y"), TransposeOptimizer(), exact=True, expect_change=False)


def test_pushed_transpose_moves_symbolic_sizes_with_their_axes():
    # With a varying batch the pushed op's output kept its old (B, 2, 4, 1) shape although its
    # data was now (B, 4, 1, 2); singleton_transpose then took the Transpose after it for one
    # that moves only unit axes and wrote a Reshape (found by the fuzz, torch -> keras).
    g = G()
    x = g.input("x", ["B", 4, 1, 2])
    s = g.op("Sigmoid", g.t(x, [0, 3, 1, 2]))
    g.op("Reshape", s, g.const(np.array([0, 8], np.int64)), out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True, feeds={"x": np.random.default_rng(0).standard_normal((3, 4, 1, 2)).astype(np.float32)})
    assert n_transposes(model) == 1


# --------------------------------------------------------------------------- push_pad


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_between_inverse_transposes_leaves_no_transpose(mode):
    # Keras' ZeroPadding2D inside a channels-first graph (MobileNetV2): T -> Pad -> T^-1.
    g = G()
    x = g.input("x", [2, 5, 6, 3])
    pads = g.const(np.array([0, 1, 0, 2, 0, 3, 1, 0], np.int64))  # every axis padded differently
    y = g.op("Pad", g.t(x, NHWC_TO_NCHW), pads, mode=mode)
    g.op("Transpose", y, perm=NCHW_TO_NHWC, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Pad"]


def test_pad_with_axes_input_moves_only_the_axes():
    g = G()
    x = g.input("x", [2, 5, 6, 3])
    pads = g.const(np.array([1, 2, 3, 0], np.int64))
    axes = g.const(np.array([2, -1], np.int64))
    y = g.op("Pad", g.t(x, NHWC_TO_NCHW), pads, "", axes)
    g.op("Relu", y, out="y")
    model = check(g.model("y"), Rule(T.push_pad), exact=True)
    assert ops(model) == ["Pad", "Transpose", "Relu"]


def test_pad_attribute_form_before_opset_11():
    g = G(opset=10)
    x = g.input("x", [2, 5, 6, 3])
    y = g.op("Pad", g.t(x, NHWC_TO_NCHW), pads=[0, 1, 0, 2, 0, 3, 1, 0], value=1.5)
    g.op("Transpose", y, perm=NCHW_TO_NHWC, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Pad"]


def test_pad_with_runtime_pads_is_left_alone():
    g = G()
    x = g.input("x", [2, 5, 6, 3])
    pads = g.input("pads", [8], I64)
    g.op("Pad", g.t(x, NHWC_TO_NCHW), pads, out="y")
    model = g.model("y")
    assert not Rule(T.push_pad)(model).modified


# --------------------------------------------------------------------------- push_axis_ops


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_push_softmax(op, axis):
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    s = g.op(op, g.t(x, NCHW_TO_NHWC), axis=axis)
    g.op("Transpose", s, perm=NHWC_TO_NCHW, out="y")
    model = check(g.model("y"), TransposeOptimizer())
    assert ops(model) == [op]
    assert model.graph[0].attributes.get_int("axis") == NCHW_TO_NHWC[axis % 4]


@pytest.mark.parametrize("perm,axis,new_axis", [
    ([0, 2, 3, 1], 1, 1), ([0, 1, 3, 2], 2, 2), ([0, 2, 3, 1], None, 1),  # [axis:] maps onto a trailing block
    ([0, 2, 3, 1], 3, None), ([1, 0, 2, 3], 1, None), ([0, 3, 1, 2], 2, None),  # it does not
])
def test_push_softmax_opset11_flattening_semantics(perm, axis, new_axis):
    # Before opset 13 Softmax normalizes over the flattened dims [axis:] (default 1), not one axis.
    g = G(opset=11)
    x = g.input("x", [2, 3, 4, 5])
    g.op("Softmax", g.t(x, perm), **({} if axis is None else {"axis": axis}), out="y")
    model = check(g.model("y"), TransposeOptimizer(), expect_change=new_axis is not None)
    if new_axis is None:
        assert ops(model) == ["Transpose", "Softmax"]
    else:
        assert ops(model) == ["Softmax", "Transpose"]
        assert model.graph[0].attributes.get_int("axis") == new_axis


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes,opset", [([1, 2], 18), ([1], 18), ([-2], 18), ([1, 2], 13), (None, 18)])
def test_push_reduce_mean(keepdims, axes, opset):
    g = G(opset=opset)
    x = g.input("x", [2, 3, 4, 5])
    t = g.t(x, NCHW_TO_NHWC)
    if axes is None:
        r = g.op("ReduceMean", t, keepdims=keepdims)
    elif opset >= 18:
        r = g.op("ReduceMean", t, g.const(np.array(axes, np.int64)), keepdims=keepdims)
    else:
        r = g.op("ReduceMean", t, axes=axes, keepdims=keepdims)
    g.op("Identity", r, out="y")
    model = check(g.model("y"), TransposeOptimizer())
    assert model.graph[0].op_type == "ReduceMean"
    assert model.graph[0].inputs[0].name == "x"
    kept_rank = 4 if keepdims else 4 - (4 if axes is None else len(axes))
    # Whatever transpose is left acts on the (smaller) reduced tensor.
    for t in nodes_of(model, "Transpose"):
        assert len(perm_of(t)) == kept_rank
    if keepdims == 0 and axes == [1, 2]:
        assert n_transposes(model) == 0  # (N, C) comes out in the same order either way


def test_reduce_with_runtime_axes_is_not_pushed():
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    ax = g.input("axes", [1], I64)
    g.op("ReduceSum", g.t(x, NCHW_TO_NHWC), ax, keepdims=1, out="y")
    model = g.model("y")
    feeds = random_feeds(model) | {"axes": np.array([1], np.int64)}
    check(model, TransposeOptimizer(), feeds=feeds, expect_change=None)
    feeds["axes"] = np.array([3], np.int64)
    check(model, TransposeOptimizer(), feeds=feeds, expect_change=None)


def test_squeeze_without_axes_is_not_pushed():
    g = G()
    x = g.input("x", [2, 1, 3, 1])
    g.op("Squeeze", g.t(x, [3, 0, 2, 1]), out="y")  # squeezes every unit axis
    check(g.model("y"), TransposeOptimizer(), expect_change=None)


@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_with_empty_axes(noop):
    g = G()
    x = g.input("x", [2, 3, 4])
    g.op("ReduceSum", g.t(x, [0, 2, 1]), g.const(np.zeros(0, np.int64)), keepdims=0,
         noop_with_empty_axes=noop, out="y")
    check(g.model("y"), TransposeOptimizer(), expect_change=None)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_push_argmax(keepdims):
    g = G()
    x = g.input("x", [2, 3, 4, 5])
    g.op("ArgMax", g.t(x, NCHW_TO_NHWC), axis=3, keepdims=keepdims, out="y")
    model = check(g.model("y", types={"y": I64}), TransposeOptimizer(), exact=True)
    assert model.graph[0].op_type == "ArgMax" and model.graph[0].attributes.get_int("axis") == 1


def test_push_concat_with_constant_operand():
    rng = np.random.default_rng(2)
    c = rng.standard_normal((2, 4, 5, 2)).astype(np.float32)
    g = G()
    a = g.input("a", [2, 3, 4, 5])
    b = g.input("b", [2, 1, 4, 5])
    cat = g.op("Concat", g.t(a, NCHW_TO_NHWC), g.const(c), g.t(b, NCHW_TO_NHWC), axis=-1)
    g.op("Transpose", cat, perm=NHWC_TO_NCHW, out="y")
    model = check(g.model("y"), TransposeOptimizer(), exact=True)
    assert ops(model) == ["Concat"]
    assert model.graph[0].attributes.get_int("axis") == 1


# --------------------------------------------------------------------------- squeeze / unsqueeze


def test_push_squeeze_removes_transpose():
    g = G()
    x = g.input("x", [2, 1, 3, 4])
    g.op("Squeeze", g.t(x, NCHW_TO_NHWC), g.const(np.array([3], np.int64)), out="y")
    model = check(g.model("y"), Rule(T.push_squeeze), exact=True)
    assert ops(model) == ["Squeeze"]
    assert const_array(model.graph[0].inputs[1]).tolist() == [1]


def test_push_squeeze_keeps_smaller_transpose():
    g = G()
    x = g.input("x", [2, 1, 3, 4])
    g.op("Squeeze", g.t(x, NHWC_TO_NCHW), g.const(np.array([-2], np.int64)), out="y")  # (2,4,1,3) -> (2,4,3)
    model = check(g.model("y"), Rule(T.push_squeeze), exact=True)
    assert ops(model) == ["Squeeze", "Transpose"]
    assert perm_of(model.graph[1]) == [0, 2, 1]


def test_push_unsqueeze_then_cancel():
    g = G()
    x = g.input("x", [2, 3, 4])
    u = g.op("Unsqueeze", g.t(x, [0, 2, 1]), g.const(np.array([2], np.int64)))  # (2,4,1,3)
    g.op("Transpose", u, perm=NHWC_TO_NCHW, out="y")  # (2,3,4,1)
    model = check(g.model("y"), Rule(T.push_unsqueeze), exact=True)
    assert ops(model) == ["Unsqueeze", "Transpose", "Transpose"]
    model = check(model, TransposeOptimizer(), exact=True)
    assert ops(model) == ["Unsqueeze"]


def test_push_unsqueeze_opset11_attribute_axes():
    g = G(opset=11)
    x = g.input("x", [2, 3, 4])
    g.op("Unsqueeze", g.t(x, [2, 0, 1]), axes=[0, -1], out="y")
    model = check(g.model("y"), Rule(T.push_unsqueeze), exact=True)
    assert ops(model) == ["Unsqueeze", "Transpose"]


@pytest.mark.parametrize("sq_axes,unsq_axes", [([1], [1]), ([1], [-3]), ([-2, 0], [0, 3])])
def test_cancel_unsqueeze(sq_axes, unsq_axes):
    g = G()
    x = g.input("x", [2, 3, 4])
    u = g.op("Unsqueeze", x, g.const(np.array(unsq_axes, np.int64)))
    s = g.op("Squeeze", u, g.const(np.array(sq_axes, np.int64)))
    g.op("Relu", s, out="y")
    model = check(g.model("y"), Rule(T.cancel_unsqueeze), exact=True)
    assert ops(model) == ["Relu"]


def test_cancel_unsqueeze_with_runtime_axes_is_left_alone():
    g = G()
    x = g.input("x", [2, 1, 3])
    u = g.op("Unsqueeze", x, g.input("a", [1], I64))
    g.op("Squeeze", u, g.input("b", [1], I64), out="y")
    model = g.model("y")
    feeds = random_feeds(model) | {"a": np.array([0], np.int64), "b": np.array([2], np.int64)}  # -> (1, 2, 3)
    model = check(model, TransposeOptimizer(), feeds=feeds, expect_change=False)
    assert ops(model) == ["Unsqueeze", "Squeeze"]


def test_cancel_unsqueeze_needs_the_same_axes():
    g = G()
    x = g.input("x", [2, 1, 4])
    u = g.op("Unsqueeze", x, g.const(np.array([1], np.int64)))  # (2,1,1,4)
    g.op("Squeeze", u, g.const(np.array([2], np.int64)), out="y")  # (2,1,4)
    model = check(g.model("y"), Rule(T.cancel_unsqueeze), exact=True, expect_change=False)
    assert ops(model) == ["Unsqueeze", "Squeeze"]
    model = check(model, TransposeOptimizer(), exact=True)  # merge_reshapes sees it is a no-op
    assert ops(model) == ["Identity"]


def test_singleton_transpose_and_merge_reshapes():
    g = G()
    x = g.input("x", [2, 3, 4])
    u = g.op("Unsqueeze", x, g.const(np.array([1], np.int64)))  # (2,1,3,4)
    t = g.t(u, [0, 2, 1, 3])  # (2,3,1,4): only the unit axis moves
    g.op("Reshape", t, g.const(np.array([6, 4], np.int64)), out="y")
    model = g.model("y")
    model = check(model, Rule(T.singleton_transpose), exact=True)
    assert ops(model) == ["Unsqueeze", "Reshape", "Reshape"]
    model = check(model, Rule(T.merge_reshapes), exact=True)
    assert ops(model) == ["Reshape"]
    assert model.graph[0].inputs[0].name == "x"
    assert const_array(model.graph[0].inputs[1]).tolist() == [6, 4]


def _view_from_input_sizes(g: G, inner=(-1, 8, 1), last: int = 8) -> ir.Model:
    """``x.reshape(inner).view(B, K, last)`` with ``B, K`` read off ``x`` (the seed-2 encoder's
    end, as torch.onnx writes it with a symbolic batch and length)."""
    x = g.input("x", ["B", "K", 8])
    r = g.op("Reshape", x, g.const(np.array(inner, np.int64)))
    shape = g.op("Shape", x)
    b = g.op("Slice", shape, g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64)))
    k = g.op("Slice", shape, g.const(np.array([1], np.int64)), g.const(np.array([2], np.int64)))
    g.op("Reshape", r, g.op("Concat", b, k, g.const(np.array([last], np.int64)), axis=0), out="y")
    return g.model("y")


def test_reshape_of_reshape_to_sizes_read_at_run_time():
    rng = np.random.default_rng(0)
    model = _view_from_input_sizes(G())
    original = ir.from_proto(ir.to_proto(model))
    check(model, Rule(T.reshape_of_reshape), exact=True,
          feeds={"x": rng.standard_normal((3, 5, 8)).astype(np.float32)})
    assert [n.op_type for n in model.graph if n.op_type == "Reshape"] == ["Reshape"]
    for size in [(1, 1, 8), (2, 7, 8)]:  # other sizes of B and K than the one checked above
        x = {"x": rng.standard_normal(size).astype(np.float32)}
        np.testing.assert_array_equal(run_onnx(model, x)[0], run_onnx(original, x)[0])


def test_reshape_of_reshape_keeps_a_zero_that_reads_the_inner_shape():
    # x.reshape(B, K, 8, 1).view(B, K, 0): the 0 keeps the inner tensor's size 8; on x it
    # would read x's size there (8 too, but the rule cannot know an unread 0 is harmless).
    model = _view_from_input_sizes(G(), inner=(0, 0, 8, 1), last=0)
    x = {"x": np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)}
    assert run_onnx(model, x)[0].shape == (3, 5, 8)
    assert not Rule(T.reshape_of_reshape)(model).modified


def test_singleton_transpose_is_not_applied_when_real_axes_move():
    g = G()
    x = g.input("x", [2, 3, 4])
    u = g.op("Unsqueeze", x, g.const(np.array([1], np.int64)))
    g.op("Reshape", g.t(u, [0, 3, 1, 2]), g.const(np.array([8, 3], np.int64)), out="y")
    model = check(g.model("y"), Rule(T.singleton_transpose), exact=True, expect_change=False)
    assert n_transposes(model) == 1


def test_transpose_without_perm_on_unknown_rank():
    g = G()
    x = g.input("x", None)
    t = g.op("Transpose", x)
    s = g.op("Squeeze", t, g.const(np.array([0], np.int64)))
    r = g.op("Relu", g.op("Transpose", g.op("Relu", s)))
    g.op("Concat", g.op("Transpose", r), g.op("Transpose", r), axis=0, out="y")
    model = g.model("y")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 1)).astype(np.float32)}
    check(model, TransposeOptimizer(), feeds=feeds, exact=True, expect_change=None)


# --------------------------------------------------------------------------- pinned transposes


def test_pinned_transposes_are_never_removed_or_merged():
    g = G()
    x = g.input("x", [1, 3, 4, 5])
    a = g.t(x, NCHW_TO_NHWC)                       # free, inverse of the next one
    b = g.t(a, NHWC_TO_NCHW, pin=PIN_IN)           # pinned
    c = g.op("Relu", b)
    d = g.t(c, NCHW_TO_NHWC, pin=PIN_OUT)          # pinned
    e = g.t(d, NHWC_TO_NCHW, pin=PIN_IN)           # pinned, inverse of the previous pinned one
    f = g.op("Relu", g.op("Neg", e))
    h = g.t(f, NCHW_TO_NHWC, pin=PIN_OUT)          # pinned
    k = g.t(h, [0, 1, 2, 3])                       # free identity: goes
    g.op("Transpose", k, perm=NHWC_TO_NCHW, out="y")  # free: stays (its input is pinned)
    model = g.model("y")
    pinned_before = [(n.name, n.metadata_props[PIN_KEY], tuple(perm_of(n))) for n in model.graph if is_pinned(n)]
    model = check(model, TransposeOptimizer(), exact=True)
    pinned_after = [(n.name, n.metadata_props[PIN_KEY], tuple(perm_of(n))) for n in model.graph if is_pinned(n)]
    assert pinned_after == pinned_before
    # The ops between pinned transposes stay between them.
    order = ops(model)
    assert order.count("Transpose") == 6
    assert order.index("Relu") < order.index("Neg")
    for n in model.graph:
        if n.op_type in ("Relu", "Neg"):
            assert n.outputs[0].consumers()[0].op_type != "Transpose" or is_pinned(n.outputs[0].consumers()[0])


# --------------------------------------------------------------------------- ExplicitPads


def _tf_same(n, k, s, d, upper):
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


@pytest.mark.parametrize("mode,expected", [("SAME_UPPER", [1, 1, 1, 2]), ("SAME_LOWER", [1, 2, 1, 1])])
def test_explicit_pads_conv_stride2_even_kernel(mode, expected):
    rng = np.random.default_rng(3)
    g = G()
    x = g.input("x", [1, 2, 10, 9])
    w = g.const(rng.standard_normal((3, 2, 4, 4)).astype(np.float32))
    g.op("Conv", x, w, auto_pad=mode, strides=[2, 2], out="y")
    model = check(g.model("y"), ExplicitPads())
    conv = model.graph[0]
    assert conv.attributes.get_string("auto_pad", "NOTSET") == "NOTSET"
    assert list(conv.attributes.get_ints("pads")) == expected
    upper = mode == "SAME_UPPER"
    b0, e0 = _tf_same(10, 4, 2, 1, upper)
    b1, e1 = _tf_same(9, 4, 2, 1, upper)
    assert expected == [b0, b1, e0, e1]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("n,k,s", [(11, 4, 2), (7, 3, 2), (8, 5, 3), (5, 1, 3)])
def test_explicit_pads_conv1d(mode, n, k, s):
    rng = np.random.default_rng(4)
    g = G()
    x = g.input("x", [2, 3, n])
    w = g.const(rng.standard_normal((2, 3, k)).astype(np.float32))
    g.op("Conv", x, w, auto_pad=mode, strides=[s], out="y")
    model = check(g.model("y"), ExplicitPads())
    pads = list(model.graph[0].attributes.get_ints("pads"))
    assert pads == ([0, 0] if mode == "VALID" else list(_tf_same(n, k, s, 1, mode == "SAME_UPPER")))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
def test_explicit_pads_dilated_same_follows_the_spec(mode, op):
    # onnxruntime cannot referee this one: its Conv refuses dilations with SAME, and its
    # MaxPool leaves the dilation out of the padding (output 3 instead of ceil(7/2) = 4).
    # The pass follows the spec (and TF): pad so that output = ceil(input / stride),
    # with the dilated kernel extent (k - 1) * d + 1.
    rng = np.random.default_rng(16)
    g = G()
    x = g.input("x", [1, 2, 7])
    if op == "Conv":
        g.op("Conv", x, g.const(rng.standard_normal((3, 2, 3)).astype(np.float32)), auto_pad=mode,
             strides=[2], dilations=[2], out="y")
    else:
        g.op("MaxPool", x, auto_pad=mode, kernel_shape=[3], strides=[2], dilations=[2], out="y")
    model = g.model("y")
    assert ExplicitPads()(model).modified
    pads = list(model.graph[0].attributes.get_ints("pads"))
    assert pads == list(_tf_same(7, 3, 2, 2, mode == "SAME_UPPER")) == ([2, 2])
    for v in model.graph.outputs:
        v.shape = None
    RefreshShapes()(model)
    validate(model)
    (out,) = run_onnx(model, random_feeds(model))
    assert out.shape == (1, out.shape[1], math.ceil(7 / 2))


@pytest.mark.parametrize("op,extra", [
    ("MaxPool", {}), ("MaxPool", {"ceil_mode": 1}),
    ("AveragePool", {}), ("AveragePool", {"count_include_pad": 1}),
    ("AveragePool", {"ceil_mode": 1, "count_include_pad": 1}),
])
@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_explicit_pads_pools(op, extra, mode):
    g = G(opset=19)
    x = g.input("x", [1, 2, 7, 8])
    g.op(op, x, auto_pad=mode, kernel_shape=[3, 2], strides=[2, 3], out="y", **extra)
    model = check(g.model("y"), ExplicitPads())
    node = model.graph[0]
    assert node.attributes.get_string("auto_pad", "NOTSET") == "NOTSET"
    upper = mode == "SAME_UPPER"
    (b0, e0), (b1, e1) = _tf_same(7, 3, 2, 1, upper), _tf_same(8, 2, 3, 1, upper)
    assert list(node.attributes.get_ints("pads")) == [b0, b1, e0, e1]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("k,s,outpad", [(3, 2, 0), (4, 2, 0), (3, 2, 1), (5, 3, 0), (2, 2, 0)])
def test_explicit_pads_conv_transpose(mode, k, s, outpad):
    rng = np.random.default_rng(5)
    g = G()
    x = g.input("x", [1, 2, 5, 4])
    w = g.const(rng.standard_normal((2, 3, k, k)).astype(np.float32))
    g.op("ConvTranspose", x, w, auto_pad=mode, strides=[s, s], output_padding=[outpad, outpad], out="y")
    model = g.model("y")
    ref = run_onnx(model, random_feeds(model))[0]
    assert ref.shape[2:] == (5 * s, 4 * s)  # SAME: output = input * stride
    # onnx's shape inference gives SAME + output_padding an extra pixel (11, not 10):
    # the declared output shape is stale, so the checker's shape pass is skipped then.
    model = check(model, ExplicitPads(), full_check=outpad == 0)
    pads = list(model.graph[0].attributes.get_ints("pads"))
    # ONNX spec: total = s*(n-1) + output_padding + (k-1)*d + 1 - n*s; the odd one goes at the end for SAME_UPPER.
    total = s * (5 - 1) + outpad + k - 5 * s
    small, large = total // 2, total - total // 2
    begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
    assert pads == [begin, begin, end, end]


@pytest.mark.parametrize("mode", ["NOTSET", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("out,total", [(10, 1), (8, 3), (12, -1)])
def test_explicit_pads_conv_transpose_output_shape(mode, out, total):
    # n=5, s=2, k=3: the full transposed conv is 11 long; output_shape asks for `out`.
    rng = np.random.default_rng(17)
    g = G()
    x = g.input("x", [1, 2, 5, 5])
    w = g.const(rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    g.op("ConvTranspose", x, w, auto_pad=mode, strides=[2, 2], output_shape=[out, out], out="y")
    model = check(g.model("y"), ExplicitPads())
    node = model.graph[0]
    assert node.attributes.get_string("auto_pad", "NOTSET") == "NOTSET"
    assert node.attributes.get_ints("output_shape") is None
    if total < 0:
        assert list(node.attributes.get_ints("pads")) == [0, 0, 0, 0]
        assert list(node.attributes.get_ints("output_padding")) == [-total, -total]
    else:  # ONNX spec: SAME_UPPER puts total // 2 first, SAME_LOWER and NOTSET put it last
        small, large = total // 2, total - total // 2
        b, e = (small, large) if mode == "SAME_UPPER" else (large, small)
        assert list(node.attributes.get_ints("pads")) == [b, b, e, e]


# --------------------------------------------------------------------------- FuseConvBias


@pytest.mark.parametrize("cshape", [(4, 1, 1), (1, 4, 1, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("const_first", [False, True])
def test_fuse_conv_bias(cshape, with_bias, const_first):
    rng = np.random.default_rng(6)
    g = G()
    x = g.input("x", [1, 3, 6, 6])
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    ins = [x, w] + ([g.const(rng.standard_normal(4).astype(np.float32))] if with_bias else [])
    conv = g.op("Conv", *ins, pads=[1, 1, 1, 1])
    c = g.const(rng.standard_normal(cshape).astype(np.float32))
    g.op("Add", *((c, conv) if const_first else (conv, c)), out="y")
    model = check(g.model("y"), FuseConvBias())
    assert ops(model) == ["Conv"]
    assert len(model.graph[0].inputs) == 3 and const_array(model.graph[0].inputs[2]).shape == (4,)


def test_fuse_conv_transpose_bias_grouped():
    rng = np.random.default_rng(7)
    g = G()
    x = g.input("x", [1, 4, 5, 5])
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))  # group 2 -> 6 output channels
    ct = g.op("ConvTranspose", x, w, group=2, strides=[2, 2])
    g.op("Add", ct, g.const(rng.standard_normal((6, 1, 1)).astype(np.float32)), out="y")
    model = check(g.model("y"), FuseConvBias())
    assert ops(model) == ["ConvTranspose"]


@pytest.mark.parametrize("cshape", [(1, 1, 1, 6), (4, 6, 6), (1,), None])
def test_fuse_conv_bias_leaves_other_adds(cshape):
    rng = np.random.default_rng(8)
    g = G()
    x = g.input("x", [1, 3, 6, 6])
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    conv = g.op("Conv", x, w, pads=[1, 1, 1, 1])
    other = g.input("b", [1, 4, 1, 1]) if cshape is None else g.const(rng.standard_normal(cshape).astype(np.float32))
    g.op("Add", conv, other, out="y")
    model = check(g.model("y"), FuseConvBias(), expect_change=False)
    assert ops(model) == ["Conv", "Add"]


# --------------------------------------------------------------------------- SqueezeUnitConv


def _tf_conv1d(g: G, x: str, cin: int, cout: int, k: int, stride: int, dilation: int, pads, tail: str, seed: int):
    """tf2onnx's Conv1D: ExpandDims(1) -> NHWC->NCHW -> Conv(1 x k) -> back to (N, L, C)."""
    rng = np.random.default_rng(seed)
    u = g.op("Unsqueeze", x, g.const(np.array([1], np.int64)))
    t = g.t(u, NHWC_TO_NCHW)
    w = g.const(rng.standard_normal((cout, cin, 1, k)).astype(np.float32))
    c = g.op("Conv", t, w, kernel_shape=[1, k], strides=[1, stride], dilations=[1, dilation], pads=pads)
    if tail == "squeeze_first":  # the pattern in the brief: Squeeze(2) -> (0, 2, 1)
        return g.t(g.op("Squeeze", c, g.const(np.array([2], np.int64))), [0, 2, 1])
    # tf2onnx's usual order: NCHW->NHWC -> Squeeze(1)
    return g.op("Squeeze", g.t(c, NCHW_TO_NHWC), g.const(np.array([1], np.int64)))


@pytest.mark.parametrize("tail", ["squeeze_first", "transpose_first"])
@pytest.mark.parametrize("k,stride,dilation,pads", [
    (3, 1, 1, [0, 1, 0, 1]), (4, 2, 1, [0, 1, 0, 2]), (3, 1, 2, [0, 0, 0, 0]),
])
def test_squeeze_unit_conv_tf_conv1d(tail, k, stride, dilation, pads):
    g = G()
    x = g.input("x", [2, 11, 3])
    h = _tf_conv1d(g, x, 3, 4, k, stride, dilation, pads, tail, seed=9)
    g.op("Relu", h, out="y")
    model = g.model("y")
    feeds = random_feeds(model)
    model = check(model, SqueezeUnitConv(), feeds=feeds)
    (conv,) = nodes_of(model, "Conv")
    assert len(static_shape(conv.inputs[1])) == 3
    model = check(model, TransposeOptimizer(), feeds=feeds)
    (conv,) = nodes_of(model, "Conv")
    assert const_array(conv.inputs[1]).ndim == 3
    assert list(conv.attributes.get_ints("kernel_shape")) == [k]
    assert list(conv.attributes.get_ints("strides")) == [stride]
    assert list(conv.attributes.get_ints("dilations")) == [dilation]
    assert list(conv.attributes.get_ints("pads")) == [pads[1], pads[3]]
    assert not {"Squeeze", "Unsqueeze", "Reshape"} & set(ops(model))
    assert n_transposes(model) == 2  # (N, L, C) -> (N, C, L) and back
    assert all(perm_of(t) == [0, 2, 1] for t in nodes_of(model, "Transpose"))


def test_squeeze_unit_conv_two_layers_and_graph_output():
    g = G()
    x = g.input("x", [2, 12, 3])
    h = _tf_conv1d(g, x, 3, 5, 3, 1, 1, [0, 1, 0, 1], "transpose_first", seed=10)
    rng = np.random.default_rng(11)
    u = g.op("Unsqueeze", h, g.const(np.array([1], np.int64)))
    t = g.t(u, NHWC_TO_NCHW)
    g.op("Conv", t, g.const(rng.standard_normal((2, 5, 1, 2)).astype(np.float32)), kernel_shape=[1, 2], out="y")
    model = g.model("y")
    model = check(model, SqueezeUnitConv(), TransposeOptimizer())
    convs = nodes_of(model, "Conv")
    assert len(convs) == 2 and all(const_array(c.inputs[1]).ndim == 3 for c in convs)
    assert model.graph.outputs[0].shape is not None and len(model.graph.outputs[0].shape) == 4


def test_squeeze_unit_conv_ignores_real_2d_conv():
    rng = np.random.default_rng(12)
    g = G()
    x = g.input("x", [1, 3, 1, 8])  # a size-1 axis that no Unsqueeze made
    g.op("Conv", x, g.const(rng.standard_normal((2, 3, 1, 3)).astype(np.float32)), out="y")
    check(g.model("y"), SqueezeUnitConv(), expect_change=False)


# --------------------------------------------------------------------------- ChannelsLast / InterfaceLayout


def _conv_relu_conv(g: G, x: str, seed: int = 13) -> str:
    rng = np.random.default_rng(seed)
    w1 = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    w2 = g.const(rng.standard_normal((2, 4, 3, 3)).astype(np.float32))
    c1 = g.op("Conv", x, w1, pads=[1, 1, 1, 1])
    return g.op("Conv", g.op("Relu", c1), w2, pads=[1, 1, 1, 1], out="y")


def _channels_last_model():
    g = G()
    _conv_relu_conv(g, g.input("x", [1, 3, 8, 8]))
    model = g.model("y")
    return check(model, ChannelsLast(), TransposeOptimizer(), feeds=random_feeds(model))


def test_channels_last_conv_relu_conv():
    model = _channels_last_model()
    transposes = nodes_of(model, "Transpose")
    pinned = [t for t in transposes if is_pinned(t)]
    free = [t for t in transposes if not is_pinned(t)]
    assert len(pinned) == 4 and len(free) == 2
    assert sorted(t.metadata_props[PIN_KEY] for t in pinned) == [PIN_IN, PIN_IN, PIN_OUT, PIN_OUT]
    for conv in nodes_of(model, "Conv"):
        up = conv.inputs[0].producer()
        (down,) = conv.outputs[0].consumers()
        assert is_pinned(up) and up.metadata_props[PIN_KEY] == PIN_IN and perm_of(up) == to_first(4)
        assert is_pinned(down) and down.metadata_props[PIN_KEY] == PIN_OUT and perm_of(down) == to_last(4)
    # The free ones sit at the boundary only; Relu runs on channels-last data between pins.
    assert {t.inputs[0].name for t in free} & {"x"}
    assert any(t.outputs[0].is_graph_output() for t in free)
    (relu,) = nodes_of(model, "Relu")
    assert is_pinned(relu.inputs[0].producer()) and is_pinned(relu.outputs[0].consumers()[0])


@pytest.mark.parametrize("rank", [3, 5])
def test_channels_last_other_ranks(rank):
    rng = np.random.default_rng(18)
    spatial = [6] * (rank - 2)
    g = G()
    x = g.input("x", [1, 3, *spatial])
    c = g.op("Conv", x, g.const(rng.standard_normal((4, 3, *[3] * (rank - 2))).astype(np.float32)))
    p = g.op("MaxPool", g.op("Relu", c), kernel_shape=[2] * (rank - 2), strides=[2] * (rank - 2))
    g.op("Add", p, g.const(rng.standard_normal((4, *[1] * (rank - 2))).astype(np.float32)), out="y")
    model = check(g.model("y"), ChannelsLast(), TransposeOptimizer())
    pinned = [t for t in nodes_of(model, "Transpose") if is_pinned(t)]
    assert len(pinned) == 4 and n_transposes(model) == 6
    assert all(perm_of(t) in (to_first(rank), to_last(rank)) for t in pinned)
    # Relu and the bias Add run channels-last: the trailing free transpose is the graph output.
    assert model.graph.outputs[0].producer().op_type == "Transpose"


def test_interface_layout_keras_target():
    model = _channels_last_model()
    layout = InterfaceLayout(channels_last_target=True)
    feeds = random_feeds(model)
    perm = to_last(4)
    model = check(model, layout, TransposeOptimizer(), feeds=feeds,
                  feed_perms={"x": perm}, out_perms={"y": perm})
    assert layout.interface == {"inputs": {"x": perm}, "outputs": {"y": perm}}
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert static_shape(model.graph.inputs[0]) == (1, 8, 8, 3)
    assert all(is_pinned(t) for t in nodes_of(model, "Transpose"))
    assert n_transposes(model) == 4


def test_interface_layout_torch_target():
    g = G()
    x = g.input("x", [1, 8, 8, 3])  # a channels-last source (tf2onnx)
    rng = np.random.default_rng(14)
    c = g.op("Conv", g.t(x, NHWC_TO_NCHW), g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)))
    g.op("Transpose", c, perm=NCHW_TO_NHWC, out="y")
    model = g.model("y")
    layout = InterfaceLayout(channels_last_target=False)
    perm = to_first(4)
    model = check(model, layout, TransposeOptimizer(), feed_perms={"x": perm}, out_perms={"y": perm})
    assert layout.interface == {"inputs": {"x": perm}, "outputs": {"y": perm}}
    assert ops(model) == ["Conv"]
    assert static_shape(model.graph.outputs[0]) == (1, 4, 6, 6)


def test_interface_layout_input_with_other_consumers():
    g = G()
    x = g.input("x", [1, 3, 4, 5])
    g.op("Relu", g.t(x, NCHW_TO_NHWC), out="y1")
    g.op("Sigmoid", x, out="y2")
    model = g.model("y1", "y2")
    layout = InterfaceLayout(channels_last_target=True)
    perm = to_last(4)
    model = check(model, layout, TransposeOptimizer(), feed_perms={"x": perm})
    assert layout.interface == {"inputs": {"x": perm}, "outputs": {}}
    assert n_transposes(model) == 1  # y2 still comes out channels-first
    assert model.graph.outputs[1].producer().op_type == "Transpose"


def test_interface_layout_leaves_other_tensors_alone():
    g = G()
    x = g.input("x", [1, 3, 4, 5])
    g.op("Relu", x, out="y")
    layout = InterfaceLayout(channels_last_target=True)
    check(g.model("y"), layout, expect_change=False)
    assert layout.interface == {"inputs": {}, "outputs": {}}


# --------------------------------------------------------------------------- where_from_masks


@pytest.mark.parametrize("dtype,expect_where", [(TensorProto.INT64, True), (TensorProto.INT32, True),
                                                (TensorProto.FLOAT, False)])
def test_where_from_masks(dtype, expect_where):
    """tf2onnx's select on integers (Keras' Embedding wraps negative ids so) -> Where; floats stay
    arithmetic (inf * 0 is NaN, so Where would differ)."""
    g = G()
    ids = g.input("ids", [2, 5], TensorProto.INT64)
    x = ids if dtype == TensorProto.INT64 else g.op("Cast", ids, to=dtype)
    negative = g.op("Less", g.op("Cast", x, to=TensorProto.FLOAT), g.const(np.array(0.0, np.float32)))
    wrapped = g.op("Add", x, g.const(np.array(7, helper.tensor_dtype_to_np_dtype(dtype))))
    picked = g.op("Mul", g.op("Cast", negative, to=dtype), wrapped)
    kept = g.op("Mul", x, g.op("Cast", g.op("Not", negative), to=dtype))
    g.op("Add", kept, picked, out="y")  # the other operand order
    model = g.model("y", types={"y": dtype})
    feeds = {"ids": np.array([[-7, -3, -1, 0, 2], [6, -2, 3, -6, 1]], np.int64)}
    check(model, WhereFromMasks(), Cleanup(), feeds=feeds, exact=True, expect_change=expect_where)
    assert ("Where" in ops(model)) == expect_where and ("Mul" in ops(model)) != expect_where


# --------------------------------------------------------------------------- grid_gathers


def _grid_mask(order: str = "bs", extra: int = 1, start_reversed: bool = False) -> ir.Model:
    """Hugging Face's vmap padding mask, ``mask[batch_idx, kv_idx]``, as torch.onnx writes it:
    GatherND over a grid of ``Range``s of sizes read off ``Shape`` (``order="sb"``: the data is
    (S, B) and its components come in grid order 3, 0; ``extra``: the grid's axis 1 is that
    long, so the result broadcasts; ``start_reversed``: the S component counts down, no iota)."""
    g = G()
    x = g.input("x", ["B", "S"] if order == "bs" else ["S", "B"])
    zero, one = g.const(np.array(0, np.int64)), g.const(np.array(1, np.int64))
    pos = {"B": 0, "S": 1} if order == "bs" else {"S": 0, "B": 1}

    def size(name):
        return g.op("Squeeze", g.op("Shape", x, start=pos[name], end=pos[name] + 1), g.const(np.array([0], np.int64)))

    b, s = size("B"), size("S")
    rb = g.op("Reshape", g.op("Range", zero, b, one), g.const(np.array([-1, 1, 1, 1], np.int64)))
    if start_reversed:
        iota_s = g.op("Range", g.op("Sub", s, one), g.const(np.array(-1, np.int64)), g.const(np.array(-1, np.int64)))
    else:
        iota_s = g.op("Add", g.op("Range", zero, s, one), zero)
    rs = g.op("Reshape", iota_s, g.const(np.array([1, 1, 1, -1], np.int64)))
    grid = g.op("Max", rb, rs, g.const(np.zeros((1, extra, 1, 1), np.int64)))
    shape = g.op("Shape", grid)
    last = g.const(np.array([-1], np.int64))
    parts = {k: g.op("Unsqueeze", g.op("Expand", r, shape), last) for k, r in (("B", rb), ("S", rs))}
    idx = g.op("Concat", *(parts[k] for k in (["B", "S"] if order == "bs" else ["S", "B"])), axis=-1)
    g.op("GatherND", x, idx, out="y")
    return g.model("y")


def _numpy_grid_mask(x: np.ndarray, order: str, extra: int) -> np.ndarray:
    x = x if order == "bs" else x.T
    return np.broadcast_to(x[:, None, None, :], (x.shape[0], extra, 1, x.shape[1]))


@pytest.mark.parametrize("order, extra", [("bs", 1), ("sb", 1), ("bs", 3)])
def test_grid_gathers_become_unsqueeze(order, extra):
    """The padding-mask GatherND over symbolic B and S is the mask with unit axes inserted
    (transposed first when the grid takes the data's axes in another order, broadcast where the
    grid is longer), exact at every size; no Range is left to compute at run time."""
    from pipeline.normalize.gather import GridGathers

    rng = np.random.default_rng(3)
    sizes = [(2, 5), (1, 1), (3, 7)]
    feeds = [{"x": rng.standard_normal(s if order == "bs" else s[::-1]).astype(np.float32)} for s in sizes]
    model = _grid_mask(order, extra)
    check(model, GridGathers(), Cleanup(), feeds=feeds[0], exact=True)
    assert "GatherND" not in ops(model) and "Unsqueeze" in ops(model)
    assert ("Transpose" in ops(model)) == (order == "sb") and ("Expand" in ops(model)) == (extra > 1)
    # the grid's Ranges are left only where the Expand reads its shape (which the importers do not write)
    assert ("Range" in ops(model)) == (extra > 1)
    for feed in feeds:  # every size, not only the one checked above
        (got,) = run_onnx(model, feed)
        np.testing.assert_array_equal(got, _numpy_grid_mask(feed["x"], order, extra))


def test_grid_gather_not_over_an_iota_is_left_alone():
    """A component that counts down is no iota: the GatherND stays (and still runs right)."""
    from pipeline.normalize.gather import GridGathers

    model = _grid_mask(start_reversed=True)
    feed = {"x": np.arange(10, dtype=np.float32).reshape(2, 5)}
    check(model, GridGathers(), feeds=feed, exact=True, expect_change=False)
    assert "GatherND" in ops(model)
    np.testing.assert_array_equal(run_onnx(model, feed)[0], feed["x"][:, None, None, ::-1])


# --------------------------------------------------------------------------- normalize() end to end


KERAS_LIKE = ["fold_constants", "loops_as_rnn", "where_from_masks", "grid_gathers", "explicit_pads", "squeeze_unit_conv",
              "transposes", "fuse_conv_bias", "channels_last", "transposes", "interface_layout", "transposes",
              "cleanup"]


def test_pass_plan_order():
    assert [n for n, _ in pass_plan("keras", "target")] == KERAS_LIKE
    assert [n for n, _ in pass_plan("torch", "source")] == [
        "fold_constants", "loops_as_rnn", "where_from_masks", "grid_gathers", "explicit_pads", "squeeze_unit_conv",
        "transposes", "fuse_conv_bias", "cleanup"]


@pytest.mark.parametrize("target,layout", [("keras", "source"), ("keras", "target"), ("torch", "target")])
def test_normalize_tf_style_graph(target, layout):
    # tf2onnx-style: NHWC input, transposes around a SAME conv, bias as a separate Add.
    rng = np.random.default_rng(15)
    g = G()
    x = g.input("x", [1, 9, 10, 3])
    t = g.t(x, NHWC_TO_NCHW)
    w = g.const(rng.standard_normal((4, 3, 4, 4)).astype(np.float32))
    c = g.op("Conv", t, w, auto_pad="SAME_UPPER", strides=[2, 2])
    b = g.op("Add", g.t(c, NCHW_TO_NHWC), g.const(rng.standard_normal(4).astype(np.float32)))
    g.op("Relu", b, out="y")
    model = g.model("y")
    feeds = random_feeds(model)
    ref = run_onnx(model, feeds)[0]
    result = normalize(model, target, layout, inputs=feeds, atol=1e-6, rtol=1e-6)  # raises PassBroke if a pass broke it
    RefreshShapes()(model)
    validate(model)
    assert all(n.attributes.get_string("auto_pad", "NOTSET") == "NOTSET" for n in model.graph)
    (conv,) = nodes_of(model, "Conv")
    assert len(conv.inputs) == 3 and "Add" not in ops(model)
    perm_in = result.interface["inputs"].get("x")
    perm_out = result.interface["outputs"].get("y")
    got = run_onnx(model, {"x": feeds["x"].transpose(perm_in) if perm_in else feeds["x"]})[0]
    np.testing.assert_allclose(got, ref.transpose(perm_out) if perm_out else ref, rtol=1e-6, atol=1e-6)
    if target == "torch" and layout == "target":
        assert n_transposes(model) == 0 and perm_in == NHWC_TO_NCHW
    if target == "keras":
        # The input is already channels-last: only the two pins around the conv remain.
        assert n_transposes(model) == 2 and all(is_pinned(t) for t in nodes_of(model, "Transpose"))


# --------------------------------------------------------------------------- randomized TransposeOptimizer


def _random_graph(rng: np.random.Generator, layout_ops: bool = False) -> tuple[ir.Model, int]:
    g = G()
    rank = int(rng.integers(3, 5))
    shape = [int(d) for d in rng.integers(1, 4, size=rank)]
    cur = g.input("x", shape)
    taps: list[str] = []  # intermediate values that are graph outputs too
    steps = int(rng.integers(4, 10))
    for step in range(steps):
        r = len(shape)
        kind = rng.choice(["transpose", "transpose", "relu", "add", "reduce", "squeeze", "unsqueeze", "fork",
                           "softmax", "concat", "reshape", "tap"] + ["conv", "pool"] * layout_ops)
        if kind in ("conv", "pool"):
            if not 3 <= r <= 5:
                continue
            if kind == "conv":
                cout = int(rng.integers(1, 4))
                w = g.const(rng.standard_normal((cout, shape[1], *[1] * (r - 2))).astype(np.float32))
                cur, shape = g.op("Conv", cur, w), [shape[0], cout, *shape[2:]]
            else:
                cur = g.op("MaxPool", cur, kernel_shape=[1] * (r - 2))
        elif kind == "tap":
            if cur != "x" and cur not in taps:
                taps.append(cur)
        elif kind == "concat":
            axis = int(rng.integers(0, r))
            oshape = list(shape)
            if rng.random() < 0.5:
                other = g.op("Relu", cur)
            else:
                oshape[axis] = int(rng.integers(1, 3))
                other = g.const(rng.standard_normal(oshape).astype(np.float32))
            cur = g.op("Concat", *((cur, other) if rng.random() < 0.5 else (other, cur)),
                       axis=axis - r if rng.random() < 0.5 else axis)
            shape = [d + oshape[axis] if i == axis else d for i, d in enumerate(shape)]
        elif kind == "reshape":
            if r < 3:
                continue
            a = int(rng.integers(0, r - 1))  # merge axes a and a + 1
            shape = shape[:a] + [shape[a] * shape[a + 1]] + shape[a + 2:]
            cur = g.op("Reshape", cur, g.const(np.array(shape, np.int64)))
        elif kind == "transpose":
            perm = [int(p) for p in rng.permutation(r)]
            cur, shape = g.t(cur, perm), [shape[p] for p in perm]
        elif kind == "relu":
            cur = g.op("Relu", cur)
        elif kind == "softmax":
            cur = g.op("Softmax", cur, axis=int(rng.integers(-r, r)))
        elif kind == "add":
            cshape = [d if rng.random() < 0.5 else 1 for d in shape][int(rng.integers(0, r + 1)):]
            c = g.const(rng.standard_normal(cshape).astype(np.float32))
            cur = g.op(str(rng.choice(["Add", "Mul", "Sub"])), *((cur, c) if rng.random() < 0.5 else (c, cur)))
        elif kind == "reduce":
            if r < 3:
                continue
            axes = sorted(int(a) for a in rng.choice(r, size=int(rng.integers(1, 3)), replace=False))
            keep = int(rng.integers(0, 2))
            written = [a - r if rng.random() < 0.5 else a for a in axes]
            cur = g.op(str(rng.choice(["ReduceSum", "ReduceMax"])), cur, g.const(np.array(written, np.int64)),
                       keepdims=keep)
            shape = [1 if i in axes else d for i, d in enumerate(shape)] if keep else \
                [d for i, d in enumerate(shape) if i not in axes]
        elif kind == "squeeze":
            ones = [i for i, d in enumerate(shape) if d == 1]
            if not ones or r < 3:
                continue
            axes = sorted(int(a) for a in rng.choice(ones, size=int(rng.integers(1, min(len(ones), r - 2) + 1)),
                                                      replace=False))
            cur = g.op("Squeeze", cur, g.const(np.array(axes, np.int64)))
            shape = [d for i, d in enumerate(shape) if i not in axes]
        elif kind == "unsqueeze":
            if r >= 5:
                continue
            a = int(rng.integers(0, r + 1))
            cur = g.op("Unsqueeze", cur, g.const(np.array([a if rng.random() < 0.5 else a - r - 1], np.int64)))
            shape = shape[:a] + [1] + shape[a:]
        elif kind == "fork":
            perm = [int(p) for p in rng.permutation(r)]
            left = g.op("Relu", g.t(cur, perm))
            right = g.t(cur, perm) if rng.random() < 0.5 else left
            cur, shape = g.op("Add", left, right), [shape[p] for p in perm]
    if cur == "x" or cur in taps:
        cur = g.op("Relu", cur)
    g.nodes[-1].output[0] = "y"
    model = g.model("y", *taps)
    return model, n_transposes(model)


def test_transpose_optimizer_random_chains():
    rng = np.random.default_rng(2024)
    for i in range(50):
        model, before = _random_graph(rng)
        text = onnx.printer.to_text(ir.to_proto(model))
        try:
            check(model, TransposeOptimizer(), feeds=random_feeds(model, seed=i), expect_change=None)
        except Exception as exc:
            raise AssertionError(f"graph {i}:\n{text}") from exc
        assert n_transposes(model) <= before, f"graph {i} gained transposes:\n{text}"


def test_channels_last_random_chains():
    rng = np.random.default_rng(7)
    for i in range(25):
        model, before = _random_graph(rng, layout_ops=True)
        n_layout = len([n for n in model.graph if n.op_type in ("Conv", "MaxPool")])
        text = onnx.printer.to_text(ir.to_proto(model))
        try:
            check(model, ChannelsLast(), TransposeOptimizer(), feeds=random_feeds(model, seed=i),
                  expect_change=None)
        except Exception as exc:
            raise AssertionError(f"graph {i}:\n{text}") from exc
        pinned = [t for t in nodes_of(model, "Transpose") if is_pinned(t)]
        assert len(pinned) == 2 * n_layout, f"graph {i}:\n{text}"
        assert n_transposes(model) - len(pinned) <= before + 2 * n_layout


# --------------------------------------------------------------------------- SqueezeUnitConv: ConvTranspose


def _tf_conv1d_transpose(g: G, x: str, cin: int, cout: int, k: int, stride: int, pads, seed: int,
                         group: int = 1, output_padding=None, output_shape=None) -> str:
    """tf2onnx's Conv1DTranspose: ExpandDims(1) -> NHWC->NCHW -> ConvTranspose(1 x k) -> Squeeze(2) -> (N, L, C)."""
    rng = np.random.default_rng(seed)
    u = g.op("Unsqueeze", x, g.const(np.array([1], np.int64)))
    t = g.t(u, NHWC_TO_NCHW)
    w = g.const(rng.standard_normal((cin, cout // group, 1, k)).astype(np.float32))
    attrs = dict(kernel_shape=[1, k], strides=[1, stride], dilations=[1, 1], pads=pads, group=group)
    if output_padding is not None:
        attrs["output_padding"] = output_padding
    if output_shape is not None:
        attrs["output_shape"] = output_shape
    c = g.op("ConvTranspose", t, w, **attrs)
    return g.t(g.op("Squeeze", c, g.const(np.array([2], np.int64))), [0, 2, 1])


@pytest.mark.parametrize("k,stride,pads,outpad,group", [
    (3, 2, [0, 0, 0, 1], None, 1),      # Keras "same", stride 2
    (3, 2, [0, 0, 0, 0], [0, 1], 1),    # "valid" with output_padding
    (4, 2, [0, 1, 0, 1], None, 2),      # grouped
    (3, 1, [0, 1, 0, 1], [0, 0], 1),
])
def test_squeeze_unit_conv_transpose(k, stride, pads, outpad, group):
    g = G()
    x = g.input("x", [2, 7, 4])
    h = _tf_conv1d_transpose(g, x, 4, 6, k, stride, pads, seed=21, group=group, output_padding=outpad)
    g.op("Relu", h, out="y")
    model = g.model("y")
    feeds = random_feeds(model)
    model = check(model, SqueezeUnitConv(), TransposeOptimizer(), feeds=feeds)
    (ct,) = nodes_of(model, "ConvTranspose")
    assert const_array(ct.inputs[1]).shape == (4, 6 // group, k)  # (C_in, C_out/g, k)
    assert list(ct.attributes.get_ints("kernel_shape")) == [k]
    assert list(ct.attributes.get_ints("strides")) == [stride]
    assert list(ct.attributes.get_ints("pads")) == [pads[1], pads[3]]
    if outpad is not None:
        assert list(ct.attributes.get_ints("output_padding")) == [outpad[1]]
    assert ct.attributes.get_int("group", 1) == group
    assert not {"Squeeze", "Unsqueeze", "Reshape"} & set(ops(model))
    assert n_transposes(model) == 2 and all(perm_of(t) == [0, 2, 1] for t in nodes_of(model, "Transpose"))


def test_squeeze_unit_conv_transpose_output_shape():
    g = G()
    x = g.input("x", [1, 5, 3])
    g.op("Relu", _tf_conv1d_transpose(g, x, 3, 2, 3, 2, [0, 0, 0, 0], seed=22, output_shape=[1, 10]), out="y")
    model = check(g.model("y"), SqueezeUnitConv())
    (ct,) = nodes_of(model, "ConvTranspose")
    assert list(ct.attributes.get_ints("output_shape")) == [10]
    assert static_shape(ct.outputs[0]) == (1, 2, 10)


@pytest.mark.parametrize("kh,pads,outpad", [(1, [0, 0, 0, 0], [1, 0]), (1, [-1, 0, 0, 0], None),
                                             (2, [0, 0, 0, 0], None)])
def test_squeeze_unit_conv_transpose_keeps_a_grown_unit_axis(kh, pads, outpad):
    # Output padding, a negative pad or a taller kernel on the inserted axis: it does not stay size 1.
    rng = np.random.default_rng(23)
    g = G()
    x = g.input("x", [1, 6, 3])
    t = g.t(g.op("Unsqueeze", x, g.const(np.array([1], np.int64))), NHWC_TO_NCHW)
    attrs = dict(kernel_shape=[kh, 3], strides=[2, 2], pads=pads)
    if outpad:
        attrs["output_padding"] = outpad
    w = g.const(rng.standard_normal((3, 2, kh, 3)).astype(np.float32))
    g.op("ConvTranspose", t, w, out="y", **attrs)
    model = check(g.model("y"), SqueezeUnitConv(), expect_change=False)
    assert static_shape(model.graph.outputs[0])[2] == 2
