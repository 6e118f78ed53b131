"""Bisection on parity failure, and the static HTML report."""

import json
import re

import onnx
import pytest


@pytest.mark.parametrize("model,target", [("seed_torch_encoder", "keras"), ("seed_torch_encoder", "torch")])
def test_zero_tolerance_names_first_divergence(tmp_path, cli, model, target):
    out = tmp_path / "out"
    proc = cli("convert", model, "--to", target, "--out", str(out), "--atol", "0", "--rtol", "0")
    assert proc.returncode == 1, proc.stderr
    report = json.loads((out / "report.json").read_text())
    first = report["parity"]["first_divergence"]
    assert set(first) == {"onnx_node", "op_type", "target_layer", "max_abs_err", "max_rel_err"}
    nodes = {n.name: n.op_type for n in onnx.load(str(out / "normalized.onnx")).graph.node}
    assert nodes.get(first["onnx_node"]) == first["op_type"]  # a real node of normalized.onnx
    code = (out / "model.py").read_text()
    assert re.search(rf"\b{re.escape(first['target_layer'])} = ", code)  # a real variable of model.py
    assert first["max_abs_err"] > 0
    assert "first divergence" in proc.stdout and first["onnx_node"] in proc.stdout
    page = (out / "report.html").read_text()
    assert first["onnx_node"] in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_passing_conversion_has_report_html_without_bisection(tmp_path):
    from pipeline.convert import Options, convert

    result = convert(Options(model="seed_torch_encoder", out=str(tmp_path / "out")))
    assert result.exit_code == 0 and "first_divergence" not in result.report["parity"]
    assert (tmp_path / "out" / "report.html").is_file() and "report.html" in result.report["artifacts"]
