"""Generated names never shadow Python builtins, keywords or the generated file's globals.

An ONNX graph may name its nodes and values anything: ``max``, ``input``,
``class``, ``1x``...  The generated ``model.py`` must still be valid Python
whose variables do not rebind ``max`` or ``input``, and (PyTorch) whose
submodules and buffers do not hide ``nn.Module`` methods such as ``train`` or
``float``.  The reference sets come from Python and torch themselves.
"""

from __future__ import annotations

import ast
import builtins
import keyword

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.convert import Options, convert
from pipeline.importers.codegen import Names

NASTY = ["max", "min", "pow", "input", "class", "lambda", "1x", "sum", "id", "type", "len", "float", "self", "os"]


def forbidden() -> set[str]:
    return set(dir(builtins)) | set(keyword.kwlist)


def test_names_take_never_returns_a_builtin_or_keyword():
    names = Names()
    bad = {}
    for hint in NASTY + sorted(dir(builtins)) + keyword.kwlist:
        name = names.take(hint)
        if not name.isidentifier() or name in forbidden():
            bad[hint] = name
    assert not bad, bad


def _onnx_file(path) -> str:
    """input -> Conv 'class' -> Relu 'lambda' -> Sigmoid 'min' -> Max 'max' -> Abs 'pow' -> Add 'sum' / Mul 'type'."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "train.weight", "train.bias"], ["1x"], name="class", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["1x"], ["max"], name="lambda"),
        helper.make_node("Sigmoid", ["max"], ["min"], name="min"),
        helper.make_node("Max", ["max", "min"], ["pow"], name="max"),
        helper.make_node("Abs", ["pow"], ["abs"], name="pow"),
        helper.make_node("Add", ["abs", "input"], ["sum"], name="sum"),
        helper.make_node("Mul", ["pow", "float"], ["id"], name="type"),
    ]
    graph = helper.make_graph(
        nodes, "names", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 5, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 5, 5]) for n in ("sum", "id")],
        [init("train.weight", 3, 3, 3, 3), init("train.bias", 3), init("float", 1, 3, 1, 1)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    out = path / "names.onnx"
    out.write_bytes(model.SerializeToString())
    return str(out)


def bound_names(code: str) -> set[str]:
    """Every name the generated module binds: assignment targets, function arguments, defs."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def self_attributes(code: str) -> set[str]:
    """Names of ``self.X = ...`` and ``register_buffer("X", ...)`` in the generated nn.Module."""
    attrs = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            attrs.add(node.attr)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register_buffer":
            attrs.add(node.args[0].value)
    return attrs


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_nasty_onnx_names_convert_with_parity(tmp_path, to):
    result = convert(Options(model=_onnx_file(tmp_path), to=to, out=str(tmp_path / "out")))
    assert result.exit_code == 0, result.report["parity"]
    code = (result.out_dir / "model.py").read_text()
    bound = bound_names(code)
    # The module's own definitions are the only builtin-looking names allowed (none here).
    assert not bound & forbidden(), sorted(bound & forbidden())
    assert "input" not in bound and "max" not in bound and "min" not in bound and "pow" not in bound
    if to == "torch":
        from torch import nn

        attrs = self_attributes(code)
        clashing = {a for a in attrs if hasattr(nn.Module, a)}
        assert not clashing, f"submodules/buffers hiding nn.Module attributes: {sorted(clashing)}\n{code}"
        # The conv (weight 'train.weight') and the buffer 'float' are still there, under safe names.
        assert any(a.startswith("train") for a in attrs) and any(a.startswith("float") for a in attrs), code


SEQUENTIAL = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)), nn.Flatten(), nn.Linear(144, 5)).eval()
"""


@pytest.mark.parametrize("to,pattern", [
    ("torch", r"self\.{name} = nn\."),
    ("keras", r"name='{name}'"),
])
def test_sequential_modules_named_after_their_op_and_index(tmp_path, to, pattern):
    """nn.Sequential's numbered modules ('0.weight', '2.1.weight') read as conv_0, bn_2_1, linear_4."""
    import re

    from pipeline.spec import InputSpec

    path = tmp_path / "seq.py"
    path.write_text(SEQUENTIAL)
    result = convert(Options(model=f"{path}:build", to=to, out=str(tmp_path / to), inputs=[InputSpec("input", (2, 3, 8, 8))]))
    assert result.exit_code == 0, result.report["parity"]
    code = (result.out_dir / "model.py").read_text()
    for name in ("conv_0", "conv_2_0", "bn_2_1", "linear_4"):
        assert re.search(pattern.format(name=name), code), (name, code)
    assert not re.search(r"\bv_0\b", code), code
