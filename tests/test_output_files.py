"""What a conversion writes (issue 11): each weight once in the target's format, the ONNX graphs
beside it sharing one copy of theirs, an ``.onnx`` source read where it is, and ``--profile``.

Sizes are judged against the weights PyTorch itself counts; values against onnxruntime on the
file as it was written inline, and against the PyTorch module run directly.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from pipeline.convert import Options, convert, format_profile
from pipeline.referee import run_onnx
from pipeline.spec import parse_input

CONV_NET = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3)).eval()
"""


def _folder_bytes(folder) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


@pytest.mark.parametrize("target,weights_file", [("torch", "model.safetensors"), ("keras", "model.weights.h5")])
def test_each_weight_written_once(tmp_path, target, weights_file):
    import torch

    path = tmp_path / "net.py"
    path.write_text(CONV_NET)
    out = tmp_path / "out"
    result = convert(Options(model=f"{path}:build", to=target, out=str(out), inputs=[parse_input("input=1,32,8,8")]))
    assert result.exit_code == 0
    module: dict = {}
    exec(CONV_NET, module)
    weight_bytes = sum(p.numel() * 4 for p in module["build"]().parameters())  # PyTorch's own count

    files = _folder_bytes(out)
    assert "model.keras" not in files  # Keras: the .weights.h5 model.py loads, not a second copy
    assert weight_bytes <= files[weights_file] <= 1.1 * weight_bytes + 64 * 1024  # + the format's headers
    # source.onnx and normalized.onnx share onnx.data: the passes change none of these weights.
    assert {"source.onnx", "normalized.onnx", "onnx.data"} <= files.keys()
    assert files["onnx.data"] <= 1.1 * weight_bytes
    assert files["source.onnx"] + files["normalized.onnx"] < 0.2 * weight_bytes
    assert set(result.report["artifacts"]) == set(files)

    x = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = module["build"]()(torch.from_numpy(x)).numpy()
    got = run_onnx(str(out / "source.onnx"), {"input": x})[0]  # its weights read from onnx.data
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _matmul_onnx(path, ir_version=10):
    w = np.random.default_rng(0).standard_normal((600, 600)).astype(np.float32)  # 1.4 MB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 600])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 600])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=ir_version), str(path))
    return w


def test_onnx_source_is_read_in_place_and_profiled(tmp_path):
    path = tmp_path / "mm.onnx"
    w = _matmul_onnx(path)
    before = path.read_bytes()
    out = tmp_path / "out"
    result = convert(Options(model=str(path), to="torch", out=str(out)))
    assert result.exit_code == 0
    report = result.report
    assert report["onnx_source"] == str(path) and path.read_bytes() == before
    files = _folder_bytes(out)
    assert "source.onnx" not in files and "normalized.onnx" in files
    assert files["model.safetensors"] <= 1.1 * w.nbytes + 4096

    prof = report["profile"]
    assert [p["name"] for p in prof["passes"]] == [p["name"] for p in report["passes"]]
    assert all(set(p) >= {"pass", "shapes", "check"} for p in prof["passes"])
    text = format_profile(report)
    assert "read in place" in text and "fold_constants" in text and "onnxruntime" in text


def test_onnx_source_that_needs_fixing_is_copied(tmp_path):
    """IR version 12 is stamped 11 for onnxruntime: then the fixed copy is what every stage reads."""
    path = tmp_path / "mm12.onnx"
    _matmul_onnx(path, ir_version=12)
    result = convert(Options(model=str(path), to="torch", out=str(tmp_path / "out")))
    assert result.exit_code == 0 and result.report["onnx_source"] is None
    assert onnx.load(str(tmp_path / "out" / "source.onnx")).ir_version == 11
