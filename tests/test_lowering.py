"""Channels-last lowering of the remaining layout-sensitive ops, and their PyTorch translators.

Three levels, each against an independent reference:

1. passes on small ONNX graphs: onnxruntime gives the same result before and after
   ``ChannelsLast`` + ``TransposeOptimizer``, and the graph has the expected shape
   (one fused op between pinned transposes, no free transpose inside);
2. PyTorch modules -> Keras (``--layout target``): the independent oracle
   (tests/oracle.py: the module and model.py run directly on fresh inputs) agrees,
   the native Keras layer is in ``model.py`` and no layout transpose is left;
3. ONNX graphs with the ops themselves -> PyTorch and -> Keras: the oracle with
   onnxruntime on the graph the test wrote as the reference, and the native
   ``torch.nn`` module named in ``model.py``.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx_ir as ir  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

import oracle  # noqa: E402  (tests/oracle.py)
from pipeline.convert import Options, convert  # noqa: E402
from pipeline.normalize import ChannelsLast, RefreshShapes, TransposeOptimizer  # noqa: E402
from pipeline.normalize.graph import PIN_IN, PIN_KEY, PIN_OUT, is_pinned, static_shape  # noqa: E402
from pipeline.referee import run_onnx  # noqa: E402
from pipeline.spec import InputSpec  # noqa: E402

F = TensorProto.FLOAT
HERE = os.path.abspath(__file__)
LAYOUT_PERMS = ("(0, 2, 3, 1)", "(0, 3, 1, 2)", "(0, 2, 1)")


# --------------------------------------------------------------------------- ONNX graphs


class G:
    """A tiny ONNX graph builder: ``g.op(...)`` returns the output name."""

    def __init__(self, opset: int = 18):
        self.opset, self.nodes, self.inputs, self.inits, self.n = opset, [], [], [], 0
        self.rng = np.random.default_rng(0)

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, F, list(shape)))
        return name

    def const(self, array) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def rand(self, *shape, low=-1.0, high=1.0) -> str:
        return self.const(self.rng.uniform(low, high, shape).astype(np.float32))

    def op(self, op_type: str, *inputs, out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"v{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type.lower()}{self.n}", **attrs))
        return out

    def proto(self, *outputs) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, F, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", self.inputs, outs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=10)

    def model(self, *outputs) -> ir.Model:
        model = ir.from_proto(self.proto(*outputs))
        RefreshShapes()(model)
        return model

    def save(self, path, *outputs) -> str:
        onnx.save(self.proto(*outputs), str(path))
        return str(path)


def feeds(model: ir.Model, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(static_shape(v)).astype(np.float32) for v in model.graph.inputs}


def lower(model: ir.Model) -> ir.Model:
    """ChannelsLast then the transpose optimizer; onnxruntime must agree before and after."""
    x = feeds(model)
    before = run_onnx(model, x)
    for p in (ChannelsLast(), TransposeOptimizer()):
        p(model)
        RefreshShapes()(model)
    after = run_onnx(model, x)
    for ref, got in zip(before, after):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(ir.to_proto(model))
    return model


def ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def the(model: ir.Model, op_type: str) -> ir.Node:
    (node,) = [n for n in model.graph if n.op_type == op_type]
    return node


def assert_wrapped(node: ir.Node) -> None:
    """``node`` runs channels-last: a pinned transpose on each side."""
    up = node.inputs[0].producer()
    (down,) = node.outputs[0].consumers()
    assert is_pinned(up) and up.metadata_props[PIN_KEY] == PIN_IN
    assert is_pinned(down) and down.metadata_props[PIN_KEY] == PIN_OUT


def free_transposes(model: ir.Model) -> int:
    return sum(1 for n in model.graph if n.op_type == "Transpose" and not is_pinned(n))


def conv(g: G, x: str, cin: int, cout: int) -> str:
    return g.op("Conv", x, g.rand(cout, cin, 3, 3), g.rand(cout), pads=[1, 1, 1, 1])


def group_norm_pattern(g: G, x: str, n: int, c: int, hw: int, groups: int, affine: bool = True) -> str:
    """What ``torch.onnx.export(nn.GroupNorm(groups, c))`` writes (constants folded)."""
    y = g.op("Reshape", x, g.const(np.array([n, groups, -1], np.int64)))
    y = g.op("InstanceNormalization", y, g.const(np.ones(groups, np.float32)), g.const(np.zeros(groups, np.float32)),
             epsilon=1e-5)
    y = g.op("Reshape", y, g.const(np.array([n, c, hw, hw], np.int64)))
    if affine:
        y = g.op("Add", g.op("Mul", y, g.rand(c, 1, 1, low=0.5, high=1.5)), g.rand(c, 1, 1))
    return y


# --------------------------------------------------------------------------- 1. passes


def assert_wrapped_chain(first: ir.Node, last: ir.Node) -> None:
    up, (down,) = first.inputs[0].producer(), last.outputs[0].consumers()
    assert is_pinned(up) and up.metadata_props[PIN_KEY] == PIN_IN
    assert is_pinned(down) and down.metadata_props[PIN_KEY] == PIN_OUT


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("opset", [17, 21])
def test_group_norm_pattern_runs_channels_last(groups, opset):
    g = G(opset)
    x = conv(g, g.input("x", [2, 3, 6, 6]), 3, 8)
    conv(g, group_norm_pattern(g, x, 2, 8, 6, groups), 8, 4)
    model = lower(g.model(g.nodes[-1].output[0]))
    if groups == 8:  # one group per channel: InstanceNormalization on x, the affine folded in
        assert_wrapped(the(model, "InstanceNormalization"))
        assert "Reshape" not in ops(model) and "Mul" not in ops(model) and "Add" not in ops(model)
    else:  # Reshape -> InstanceNormalization -> Reshape, wrapped as one channels-last layer
        first, last = [n for n in model.graph if n.op_type == "Reshape"]
        assert first.outputs[0].consumers()[0].op_type == "InstanceNormalization"
        assert_wrapped_chain(first, last)
        # the per-channel affine runs channels-last after it: its constants lie on the last axis
        for op in ("Mul", "Add"):
            assert static_shape(the(model, op).inputs[1]) == (1, 1, 1, 8)
    assert free_transposes(model) == 2  # the input's and the output's, nothing inside


@pytest.mark.parametrize("case", ["regroup", "mul_not_per_channel"])
def test_group_norm_near_misses(case):
    """A reshape back to another shape is no GroupNorm; an affine over W is not part of it."""
    g = G(18)
    x = g.input("x", [1, 8, 6, 6])
    y = g.op("Reshape", x, g.const(np.array([1, 2, -1], np.int64)))
    y = g.op("InstanceNormalization", y, g.const(np.ones(2, np.float32)), g.const(np.zeros(2, np.float32)))
    back = [1, 8, 36, 1] if case == "regroup" else [1, 8, 6, 6]
    y = g.op("Reshape", y, g.const(np.array(back, np.int64)))
    g.op("Mul", y, g.rand(6) if case == "mul_not_per_channel" else g.rand(8, 1, 1))
    model = lower(g.model(g.nodes[-1].output[0]))
    norm = the(model, "InstanceNormalization")
    if case == "regroup":  # wrapped alone, on its (1, 2, 36) input
        assert_wrapped(norm)
    else:
        first, last = [n for n in model.graph if n.op_type == "Reshape"]
        assert_wrapped_chain(first, last)
    assert "Mul" in ops(model)


def lrn_pattern(g: G, x: str, n: int, c: int, hw: int, size: int, alpha=1e-2, beta=0.75, k=2.0) -> str:
    """What ``torch.onnx.export(nn.LocalResponseNorm(size))`` writes for a 4-D input."""
    sq = g.op("Reshape", g.op("Mul", x, x), g.const(np.array([n, 1, c, hw, -1], np.int64)))
    pads = np.array([0, 0, size // 2, 0, 0, 0, 0, (size - 1) // 2, 0, 0], np.int64)
    avg = g.op("AveragePool", g.op("Pad", sq, g.const(pads)), kernel_shape=[size, 1, 1], strides=[1, 1, 1])
    avg = g.op("Squeeze", avg, g.const(np.array([1], np.int64)))
    avg = g.op("Reshape", avg, g.const(np.array([n, c, hw, hw], np.int64)))
    s = g.op("Add", g.op("Mul", avg, g.const(np.float32(alpha))), g.const(np.float32(k)))
    s = g.op("Pow", s, g.const(np.float32(beta)))
    return g.op("Div", x, s)


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn_pattern_becomes_one_op_for_odd_sizes(size):
    g = G(18)
    x = conv(g, g.input("x", [2, 3, 5, 5]), 3, 6)
    conv(g, lrn_pattern(g, x, 2, 6, 5, size), 6, 2)
    model = lower(g.model(g.nodes[-1].output[0]))
    if size % 2:
        lrn = the(model, "LRN")
        assert_wrapped(lrn)
        assert lrn.attributes.get_int("size") == size and free_transposes(model) == 2
    else:  # PyTorch centres an even window one channel earlier than ONNX's LRN: left as it is
        assert "LRN" not in ops(model) and "AveragePool" in ops(model)


@pytest.mark.parametrize("op, attrs, shape", [
    ("DepthToSpace", {"blocksize": 2, "mode": "DCR"}, [1, 8, 3, 4]),
    ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, [1, 8, 3, 4]),
    ("SpaceToDepth", {"blocksize": 2}, [1, 2, 4, 6]),
])
def test_depth_space_ops_are_wrapped(op, attrs, shape):
    g = G(18)
    y = g.op(op, g.op("Relu", g.input("x", shape)), **attrs)
    g.op("Sigmoid", y)
    model = lower(g.model(g.nodes[-1].output[0]))
    assert_wrapped(the(model, op))


def test_prelu_slope_per_channel_moves_channels_last():
    g = G(18)
    x = conv(g, g.input("x", [1, 3, 5, 5]), 3, 4)
    conv(g, g.op("PRelu", x, g.rand(4, 1, 1, low=0.0, high=0.5)), 4, 2)
    model = lower(g.model(g.nodes[-1].output[0]))
    prelu = the(model, "PRelu")
    assert is_pinned(prelu.inputs[0].producer()) and is_pinned(prelu.outputs[0].consumers()[0])
    assert static_shape(prelu.inputs[1]) == (1, 1, 1, 4)  # the slope, re-laid out on the channel axis
    assert free_transposes(model) == 2


def test_hand_written_channels_first_layer_norm_runs_channels_last():
    """ConvNeXt's LayerNorm2d: mean/var over axis 1 by hand, between two convs."""
    g = G(18)
    x = conv(g, g.input("x", [1, 3, 5, 5]), 3, 4)
    axes = g.const(np.array([1], np.int64))
    u = g.op("ReduceMean", x, axes)
    d = g.op("Sub", x, u)
    var = g.op("ReduceMean", g.op("Pow", d, g.const(np.float32(2.0))), axes)
    y = g.op("Div", g.op("Sub", x, u), g.op("Sqrt", g.op("Add", var, g.const(np.float32(1e-6)))))
    y = g.op("Add", g.op("Mul", g.rand(4, 1, 1), y), g.rand(4, 1, 1))
    conv(g, y, 4, 2)
    model = lower(g.model(g.nodes[-1].output[0]))
    assert free_transposes(model) == 2
    for mean in (n for n in model.graph if n.op_type == "ReduceMean"):
        assert ir.convenience.get_const_tensor(mean.inputs[1]).numpy().tolist() == [3]


def test_pixel_unshuffle_reshapes_run_channels_last():
    """PyTorch's PixelUnshuffle (reshape -> 6-D permute -> reshape on NCHW) between two convs."""
    g = G(18)
    x = conv(g, g.input("x", [2, 3, 6, 4]), 3, 4)
    y = g.op("Reshape", x, g.const(np.array([2, 4, 3, 2, 2, 2], np.int64)))
    y = g.op("Transpose", y, perm=[0, 1, 3, 5, 2, 4])
    conv(g, g.op("Reshape", y, g.const(np.array([2, 16, 3, 2], np.int64))), 16, 2)
    model = lower(g.model(g.nodes[-1].output[0]))
    assert free_transposes(model) == 3  # the boundary pair and the 6-D one, now on (N, H, W, C)
    (six,) = [n for n in model.graph if n.op_type == "Transpose" and len(n.attributes.get_ints("perm")) == 6]
    assert list(six.attributes.get_ints("perm")) == [0, 1, 3, 5, 2, 4]
    assert static_shape(six.inputs[0]) == (2, 3, 2, 2, 2, 4)


@pytest.mark.parametrize("shape, perm, target, moves", [
    ((2, 3, 4, 5), [0, 2, 3, 1], (2, 20, 3), True),  # merge H, W (neighbours in x too)
    ((2, 3, 4, 6), [0, 3, 1, 2], (2, 2, 3, 3, 4), True),  # split the moved axis
    ((2, 3, 4, 5), [0, 2, 3, 1], (2, 1, 4, 5, 3, 1), True),  # unit axes inserted
    ((2, 1, 4, 5), [0, 2, 3, 1], (2, 4, 5), True),  # unit axis dropped
    ((2, 3, 4, 5), [0, 2, 3, 1], (2, 60), False),  # flatten across the permutation: stays
    ((2, 3, 4, 6), [0, 3, 1, 2], (2, 8, 9), False),  # blocks that are neither a split nor a merge
])
def test_push_transpose_through_reshape(shape, perm, target, moves):
    g = G(18)
    y = g.op("Reshape", g.op("Transpose", g.op("Relu", g.input("x", shape)), perm=perm),
             g.const(np.array(target, np.int64)))
    g.op("Sigmoid", y, out="y")
    model = g.model("y")
    x = feeds(model)
    before = run_onnx(model, x)
    TransposeOptimizer()(model)
    RefreshShapes()(model)
    np.testing.assert_array_equal(run_onnx(model, x)[0], before[0])
    reshape = the(model, "Reshape")
    assert (reshape.inputs[0].producer().op_type != "Transpose") == moves


def test_group_normalization_keeps_its_shape_through_shape_inference():
    """ONNX's shape inference gives GroupNormalization no output shape; RefreshShapes fills it in."""
    g = G(18)
    y = g.op("GroupNormalization", g.input("x", [1, 4, 3, 3]), g.rand(2), g.rand(2), num_groups=2)
    g.op("Relu", y, out="z")
    model = g.model("z")
    assert static_shape(the(model, "Relu").inputs[0]) == (1, 4, 3, 3)


# --------------------------------------------------------------------------- 2. PyTorch -> Keras


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm, written by hand."""

    def __init__(self, c: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.rand(c) - 0.5)

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Norms(nn.Module):
    """GroupNorm with 1 < G < C, G == 1 and G == C, a per-channel PReLU, LocalResponseNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn2, self.gn1, self.gn8 = nn.GroupNorm(2, 8), nn.GroupNorm(1, 8), nn.GroupNorm(8, 8)
        self.act = nn.PReLU(8)
        self.lrn = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)
        self.head = nn.Conv2d(8, 4, 3, padding=1)
        with torch.no_grad():
            for gn in (self.gn2, self.gn1, self.gn8):
                gn.weight.uniform_(0.5, 1.5)
                gn.bias.uniform_(-0.5, 0.5)
            self.act.weight.uniform_(0.0, 0.5)

    def forward(self, x):
        x = self.gn1(self.gn2(self.conv(x)))
        return self.head(self.lrn(self.act(self.gn8(x))))


class ChannelAxis(nn.Module):
    """Softmax over channels, LayerNorm between permutes, ConvNeXt's LayerNorm2d, PixelShuffle/Unshuffle."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ln = nn.LayerNorm(8)
        self.ln2d = LayerNorm2d(8)
        self.shuffle, self.unshuffle = nn.PixelShuffle(2), nn.PixelUnshuffle(2)
        self.head = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        x = torch.softmax(self.conv(x), dim=1)
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(self.unshuffle(self.shuffle(self.ln2d(x))))


def _seeded(cls):
    """Built under a fixed seed, so the oracle can build the very same module again."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return cls()


def norms():
    return _seeded(Norms)


def channel_axis():
    return _seeded(ChannelAxis)


def layout_transposes(code: str) -> list[str]:
    """Lines of model.py that move the channel axis (a 3-D or 4-D transpose, or a Permute layer)."""
    return [line for line in code.splitlines()
            if "Permute" in line or set(re.findall(r"ops\.transpose\(\w+, (\([\d, ]+\))\)", line)) & set(LAYOUT_PERMS)]


@pytest.mark.parametrize("factory, layers", [
    ("norms", ["layers.GroupNormalization(groups=2,", "layers.GroupNormalization(groups=1,",
               "layers.GroupNormalization(groups=8,", "layers.PReLU(shared_axes=[1, 2]", "ops.matmul(ops.square("]),
    ("channel_axis", ["ops.softmax(", "axis=-1)", "layers.LayerNormalization(axis=-1", "ops.mean(",
                      "(0, 1, 4, 2, 5, 3)", "(0, 1, 3, 5, 2, 4)"]),
])
def test_torch_module_to_keras_channels_last(tmp_path, factory, layers):
    result = convert(Options(model=f"{HERE}:{factory}", to="keras", out=str(tmp_path / "k"), layout="target",
                             inputs=[InputSpec("x", (2, 3, 6, 6))]))
    assert result.exit_code == 0, result.report["parity"]
    module = globals()[factory]()
    assert oracle.assert_matches(tmp_path / "k", module, specs={"x": (2, 3, 6, 6)}).max_rel_err <= 1e-4
    code = (tmp_path / "k" / "model.py").read_text()
    for layer in layers:
        assert layer in code, layer
    assert "keras.Input(shape=(6, 6, 3)" in code
    assert layout_transposes(code) == []
    if factory == "norms":  # the GroupNorm affines are the layers' weights: the one constant is LRN's window
        assert code.count('C["') == 1


# --------------------------------------------------------------------------- 3. ONNX graphs -> PyTorch / Keras


def op_graph(opset: int) -> G:
    """Every op of this file in one graph: GroupNormalization, LRN, DepthToSpace
    (DCR), SpaceToDepth, DepthToSpace (CRD), InstanceNormalization, PRelu, LRN."""
    g = G(opset)
    x = g.input("x", [2, 8, 6, 6])
    n = 8 if opset >= 21 else 2
    y = g.op("GroupNormalization", x, g.rand(n, low=0.5, high=1.5), g.rand(n), num_groups=2, epsilon=1e-5)
    y = g.op("LRN", y, size=5, alpha=1e-2, beta=0.75, bias=2.0)
    y = g.op("DepthToSpace", y, blocksize=2, mode="DCR")  # (2, 2, 12, 12)
    y = g.op("SpaceToDepth", y, blocksize=2)  # (2, 8, 6, 6)
    y = g.op("DepthToSpace", y, blocksize=2, mode="CRD")
    y = g.op("InstanceNormalization", y, g.rand(2, low=0.5, high=1.5), g.rand(2), epsilon=1e-5)
    y = g.op("PRelu", y, g.rand(2, 1, 1, low=0.0, high=0.5))
    g.op("LRN", y, size=3, alpha=1e-2, beta=0.75, bias=2.0, out="y")
    return g


TORCH_MODULES = ["nn.GroupNorm(2, 8, eps=1e-05)", "nn.LocalResponseNorm(5,", "nn.PixelShuffle(2)",
                 "nn.InstanceNorm2d(2,", "nn.PReLU(2)", "nn.LocalResponseNorm(3,",
                 "permute(0, 3, 4, 1, 5, 2)", "permute(0, 3, 5, 1, 2, 4)"]


@pytest.mark.parametrize("opset", [18, 21])
def test_onnx_ops_to_torch(tmp_path, opset):
    path = op_graph(opset).save(tmp_path / "ops.onnx", "y")
    result = convert(Options(model=path, to="torch", out=str(tmp_path / "t")))
    assert result.exit_code == 0, result.report["parity"]
    assert oracle.assert_matches(tmp_path / "t", path, specs={"x": (2, 8, 6, 6)}).max_abs_err <= 1e-5
    code = (tmp_path / "t" / "model.py").read_text()
    for module in TORCH_MODULES:
        assert module in code, module


def test_onnx_ops_to_keras(tmp_path):
    path = op_graph(18).save(tmp_path / "ops.onnx", "y")
    result = convert(Options(model=path, to="keras", out=str(tmp_path / "k"), layout="target"))
    assert result.exit_code == 0, result.report["parity"]
    assert oracle.assert_matches(tmp_path / "k", path, specs={"x": (2, 8, 6, 6)}).max_abs_err <= 1e-5
    code = (tmp_path / "k" / "model.py").read_text()
    for layer in ["layers.GroupNormalization(groups=2,", "layers.GroupNormalization(groups=2,", "layers.PReLU("]:
        assert layer in code, layer
    assert code.count("ops.matmul(ops.square(") == 2 and layout_transposes(code) == []


def test_torch_group_norm_round_trip_is_nn_group_norm(tmp_path):
    result = convert(Options(model=f"{HERE}:norms", to="torch", out=str(tmp_path / "t"),
                             inputs=[InputSpec("x", (2, 3, 6, 6))]))
    assert result.exit_code == 0
    code = (tmp_path / "t" / "model.py").read_text()
    for module in ["self.gn2 = nn.GroupNorm(2, 8", "self.gn1 = nn.GroupNorm(1, 8", "self.gn8 = nn.GroupNorm(8, 8",
                   "self.act = nn.PReLU(8)"]:
        assert module in code, module
    assert "InstanceNorm" not in code


def test_keras_add_never_becomes_a_misplaced_bias_add(tmp_path):
    """Keras' TensorFlow ``ops.add(x, b)`` is ``tf.nn.bias_add`` on x's last axis when b looks
    like a bias of that length, even where b broadcasts along axis 1."""
    g = G(18)
    x = g.input("x", [2, 5, 5])
    g.op("Add", g.op("Relu", x), g.rand(5, 1), out="y")  # (2, 5, 5) + (5, 1): along axis 1
    path = g.save(tmp_path / "add.onnx", "y")
    result = convert(Options(model=path, to="keras", out=str(tmp_path / "k")))
    assert result.exit_code == 0, result.report["parity"]
    assert oracle.assert_matches(tmp_path / "k", path, specs={"x": (2, 5, 5)}).max_abs_err <= 1e-6
