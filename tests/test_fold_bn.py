"""``--fold-bn``: the opt-in ``FoldBatchNorm`` pass and its plumbing.

Unit tests build small ONNX graphs with ``onnx.helper``, run them under
onnxruntime (the referee, graph optimizations off) before and after the pass,
and require the outputs to agree within 1e-5 -- plus the structural effect
(BatchNormalization gone, or left alone when folding is not allowed).  The
end-to-end tests export a torch ``Conv2d + BatchNorm2d`` to ``.onnx`` and
convert it with the real CLI, with and without ``--fold-bn``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.batch import _fingerprint, validate
from pipeline.convert import Options, convert
from pipeline.errors import BadInput
from pipeline.normalize import FoldBatchNorm, RefreshShapes, normalize, pass_plan
from pipeline.normalize.graph import const_array
from pipeline.referee import run_onnx

TOL = 1e-5


class Graph:
    """A tiny ONNX graph builder: ``op(...)`` returns the output name."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inputs, self.inits = [], [], []
        self.n = 0

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, array, name: str | None = None) -> str:
        self.n += 1
        name = name or f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def randn(self, *shape, name: str | None = None) -> str:
        return self.const(self.rng.standard_normal(shape), name)

    def op(self, op_type: str, *inputs, out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"v{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type.lower()}{self.n}", **attrs))
        return out

    def bn(self, x: str, channels: int, out: str | None = None, eps: float = 1e-3) -> str:
        """An inference BatchNormalization with non-trivial scale, shift, mean and variance."""
        r = self.rng
        return self.op("BatchNormalization", x, self.const(r.uniform(0.5, 2.0, channels)),
                       self.const(r.standard_normal(channels)), self.const(r.standard_normal(channels)),
                       self.const(r.uniform(0.2, 2.0, channels)), out=out, epsilon=eps)

    def model(self, *outputs) -> ir.Model:
        graph = helper.make_graph(self.nodes, "g", self.inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                                  self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        model = ir.from_proto(proto)
        RefreshShapes()(model)
        return model


def ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def node(model: ir.Model, op_type: str) -> ir.Node:
    (found,) = [n for n in model.graph if n.op_type == op_type]
    return found


def fold(model: ir.Model, expect_change: bool = True, seed: int = 1) -> ir.Model:
    """Run FoldBatchNorm; onnxruntime's outputs before and after must agree within TOL."""
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal([int(d) for d in v.shape]).astype(np.float32) for v in model.graph.inputs}
    names = [v.name for v in model.graph.outputs]
    before = run_onnx(model, feeds)
    assert bool(FoldBatchNorm()(model).modified) == expect_change
    RefreshShapes()(model)
    assert [v.name for v in model.graph.outputs] == names, "public output names must survive"
    after = run_onnx(model, feeds)
    for name, ref, got in zip(names, before, after):
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL, err_msg=name)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    return model


# --------------------------------------------------------------------------- Conv / ConvTranspose


@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_bn(with_bias):
    g = Graph(1)
    x = g.input("x", [2, 3, 7, 7])
    ins = [x, g.randn(4, 3, 3, 3, name="conv1.weight")] + ([g.randn(4)] if with_bias else [])
    g.bn(g.op("Conv", *ins, pads=[1, 1, 1, 1]), 4, out="y")
    model = fold(g.model("y"))
    assert ops(model) == ["Conv"]
    conv = node(model, "Conv")
    assert conv.inputs[1].name == "conv1.weight", "a weight only this Conv uses keeps its name"
    assert const_array(conv.inputs[2]).shape == (4,)


def test_grouped_conv_bn():
    g = Graph(2)
    x = g.input("x", [1, 6, 8, 8])
    g.bn(g.op("Conv", x, g.randn(9, 2, 3, 3), g.randn(9), group=3, strides=[2, 2]), 9, out="y")
    model = fold(g.model("y"))
    assert ops(model) == ["Conv"]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_transpose_bn(group, with_bias):
    g = Graph(3)
    x = g.input("x", [2, 4, 5, 5])
    # ConvTranspose weight: (C_in, C_out / group, kH, kW) -> 3 * group output channels.
    ins = [x, g.randn(4, 3, 3, 3)] + ([g.randn(3 * group)] if with_bias else [])
    g.bn(g.op("ConvTranspose", *ins, group=group, strides=[2, 2], pads=[1, 0, 0, 1]), 3 * group, out="y")
    model = fold(g.model("y"))
    assert ops(model) == ["ConvTranspose"]
    assert const_array(node(model, "ConvTranspose").inputs[2]).shape == (3 * group,)


def test_conv1d_bn_with_relu_after():
    g = Graph(4)
    x = g.input("x", [2, 3, 10])
    g.op("Relu", g.bn(g.op("Conv", x, g.randn(5, 3, 3)), 5), out="y")
    assert ops(fold(g.model("y"))) == ["Conv", "Relu"]


# --------------------------------------------------------------------------- Gemm / MatMul


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 5)])
def test_gemm_bn(trans_b, c_shape):
    g = Graph(5)
    a = g.input("a", [3, 4])
    ins = [a, g.randn(*((5, 4) if trans_b else (4, 5)))] + ([g.randn(*c_shape)] if c_shape else [])
    g.bn(g.op("Gemm", *ins, transB=trans_b, alpha=0.7, beta=1.3), 5, out="y")
    model = fold(g.model("y"))
    assert ops(model) == ["Gemm"]
    assert node(model, "Gemm").attributes.get_float("beta") == 1.0


def test_matmul_bn_becomes_matmul_add():
    g = Graph(6)
    a = g.input("a", [3, 4])
    g.bn(g.op("MatMul", a, g.randn(4, 5)), 5, out="y")
    model = fold(g.model("y"))
    assert ops(model) == ["MatMul", "Add"]


def test_matmul_rank3_is_left_alone():
    # BN's channel axis 1 is a row axis of A here, not a column of the weight.
    g = Graph(7)
    a = g.input("a", [2, 3, 4])
    g.bn(g.op("MatMul", a, g.randn(4, 5)), 3, out="y")
    assert "BatchNormalization" in ops(fold(g.model("y"), expect_change=False))


# --------------------------------------------------------------------------- TF's lowered BatchNorm: Mul + Add


@pytest.mark.parametrize("op,const_first,cshape", [
    ("Conv", False, (4, 1, 1)), ("Conv", True, (1, 4, 1, 1)), ("ConvTranspose", False, (1, 4, 1, 1)),
])
def test_conv_channel_mul_add(op, const_first, cshape):
    """Keras BatchNormalization reaches ONNX as Mul + Add by per-channel constants after the Conv."""
    g = Graph(13)
    x = g.input("x", [2, 3 if op == "Conv" else 4, 6, 6])
    w = g.randn(4, 3, 3, 3) if op == "Conv" else g.randn(4, 2, 3, 3)  # ConvTranspose: group 2 -> 4 channels
    conv = g.op(op, x, w, g.randn(4), **({"group": 2} if op == "ConvTranspose" else {}))
    c = g.const(g.rng.uniform(0.5, 2.0, cshape))
    mul = g.op("Mul", *((c, conv) if const_first else (conv, c)))
    g.op("Add", mul, g.randn(*cshape), out="y")
    model = fold(g.model("y"))
    assert ops(model) == [op]


@pytest.mark.parametrize("cshape", [(1, 1, 1, 6), (4, 6, 6), None])
def test_other_muls_are_left_alone(cshape):
    g = Graph(14)
    x = g.input("x", [1, 3, 6, 6])
    conv = g.op("Conv", x, g.randn(4, 3, 3, 3), pads=[1, 1, 1, 1])
    other = g.input("m", [1, 4, 1, 1]) if cshape is None else g.randn(*cshape)
    g.op("Mul", conv, other, out="y")
    assert ops(fold(g.model("y"), expect_change=False)) == ["Conv", "Mul"]


# --------------------------------------------------------------------------- left alone


def test_shared_producer_is_left_alone():
    g = Graph(8)
    x = g.input("x", [1, 3, 6, 6])
    c = g.op("Conv", x, g.randn(4, 3, 3, 3), pads=[1, 1, 1, 1])
    g.bn(c, 4, out="y")
    g.op("Relu", c, out="z")
    model = fold(g.model("y", "z"), expect_change=False)
    assert ops(model) == ["Conv", "BatchNormalization", "Relu"]


def test_producer_that_is_a_graph_output_is_left_alone():
    g = Graph(9)
    x = g.input("x", [1, 3, 6, 6])
    c = g.op("Conv", x, g.randn(4, 3, 3, 3), out="c")
    g.bn(c, 4, out="y")
    assert "BatchNormalization" in ops(fold(g.model("c", "y"), expect_change=False))


def test_other_producers_and_runtime_weights_are_left_alone():
    g = Graph(10)
    x = g.input("x", [1, 4, 6, 6])
    w = g.input("w", [4, 4, 1, 1])
    g.bn(g.op("Relu", x), 4, out="y")
    g.bn(g.op("Conv", x, w), 4, out="z")
    assert ops(fold(g.model("y", "z"), expect_change=False)).count("BatchNormalization") == 2


def test_shared_weight_is_copied_not_rewritten():
    g = Graph(11)
    x = g.input("x", [1, 3, 6, 6])
    w = g.randn(4, 3, 3, 3, name="shared")
    g.bn(g.op("Conv", x, w), 4, out="y")
    g.op("Conv", x, w, out="z")
    model = fold(g.model("y", "z"))
    convs = [n for n in model.graph if n.op_type == "Conv"]
    assert "BatchNormalization" not in ops(model)
    assert sorted(c.inputs[1].name == "shared" for c in convs) == [False, True]


# --------------------------------------------------------------------------- plumbing


def test_pass_plan_has_fold_bn_only_when_asked():
    assert "fold_batch_norm" not in [n for n, _ in pass_plan("torch", "source")]
    names = [n for n, _ in pass_plan("keras", "source", fold_bn=True)]
    assert names.index("fold_batch_norm") == names.index("fuse_conv_bias") + 1
    assert names.index("fold_batch_norm") < names.index("channels_last")


@pytest.mark.parametrize("fold_bn", [False, True])
def test_normalize_checks_the_fold(fold_bn):
    g = Graph(12)
    x = g.input("x", [1, 3, 6, 6])
    g.op("Relu", g.bn(g.op("Conv", x, g.randn(4, 3, 3, 3)), 4), out="y")
    model = g.model("y")
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    result = normalize(model, "torch", inputs=feeds, atol=TOL, rtol=TOL, fold_bn=fold_bn)
    records = {r.name: r for r in result.passes}
    assert ("BatchNormalization" in ops(model)) != fold_bn
    assert ("fold_batch_norm" in records) == fold_bn
    if fold_bn:
        assert records["fold_batch_norm"].changed and records["fold_batch_norm"].max_abs_err <= TOL


def test_batch_schema_fold_bn(tmp_path):
    base = {"models": [{"name": "a", "model": "m.onnx"}]}
    plain = validate(base, "b.yaml")["entries"][0]
    off = validate({**base, "defaults": {"fold_bn": False}}, "b.yaml")["entries"][0]
    on = validate({**base, "defaults": {"fold_bn": True}}, "b.yaml")["entries"][0]
    entry_off = validate({"models": [{"name": "a", "model": "m.onnx", "fold_bn": False}],
                          "defaults": {"fold_bn": True}}, "b.yaml")["entries"][0]
    assert on["fold_bn"] is True and entry_off["fold_bn"] is False
    assert _fingerprint(plain) == _fingerprint(off) == _fingerprint(entry_off)
    assert _fingerprint(on) != _fingerprint(plain), "turning fold_bn on must re-run the entry"
    with pytest.raises(BadInput, match=r"models\[0\]\.fold_bn: expected true or false"):
        validate({"models": [{"name": "a", "model": "m.onnx", "fold_bn": "yes"}]}, "b.yaml")


# --------------------------------------------------------------------------- end to end (CLI)


@pytest.fixture(scope="module")
def conv_bn_onnx(tmp_path_factory):
    """A torch Conv2d + BatchNorm2d (non-trivial running statistics) exported to .onnx."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    with torch.no_grad():
        bn = module[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    module.eval()
    path = tmp_path_factory.mktemp("conv_bn") / "conv_bn.onnx"
    # optimize=False: the exporter's own optimizer would already fold the BatchNorm.
    torch.onnx.export(module, (torch.randn(2, 3, 9, 9),), str(path), dynamo=True, optimize=False, input_names=["x"])
    return path


@pytest.mark.parametrize("fold_bn", [False, True])
def test_cli_onnx_to_torch(cli, tmp_path, conv_bn_onnx, fold_bn):
    out = tmp_path / "out"
    proc = cli("convert", str(conv_bn_onnx), "--to", "torch", "--out", str(out), "--quiet",
               *(["--fold-bn"] if fold_bn else []))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    code = (out / "model.py").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["passed"] and report["fold_bn"] is fold_bn
    assert ("nn.BatchNorm2d(" in code) != fold_bn, code
    assert code.count("nn.Conv2d(") == 1
    assert ("fold_batch_norm" in [p["name"] for p in report["passes"]]) == fold_bn


def test_keras_conv_bn_to_torch_folds_only_when_asked(tmp_path):
    """Keras Conv2D / Conv2DTranspose + BatchNormalization: kept by default, folded with fold_bn."""
    from pipeline.quiet import import_tensorflow

    _, keras = import_tensorflow()
    L = keras.layers
    x = keras.Input(shape=(7, 7, 3), batch_size=2, name="x")
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(x)))
    model = keras.Model(x, L.BatchNormalization()(L.Conv2DTranspose(5, 3, strides=2)(h)))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32") for v in layer.weights])
    path = tmp_path / "conv_bn.keras"
    model.save(path)
    codes = {}
    for fold_bn in (False, True):
        result = convert(Options(model=str(path), out=str(tmp_path / f"out_{fold_bn}"), fold_bn=fold_bn))
        assert result.exit_code == 0, result.report["parity"]
        codes[fold_bn] = (result.out_dir / "model.py").read_text()
    assert codes[False].count("nn.BatchNorm2d(") == 2, codes[False]
    forward = codes[True].split("def forward")[1]
    assert "BatchNorm" not in codes[True] and " * " not in forward and " + " not in forward, codes[True]
    assert "nn.Conv2d(3, 4, kernel_size=3, padding=1)" in codes[True]
    assert "nn.ConvTranspose2d(4, 5, kernel_size=3, stride=2)" in codes[True]
