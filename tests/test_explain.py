"""`explain`: one layer, its exact equivalent in the other framework, checked."""

import pytest

from pipeline.errors import BadInput
from pipeline.explain import explain, parse_layer


def test_explains_seed_one_keras_conv1d():
    lines = []
    result = explain("keras.layers.Conv1D(filters=1024, kernel_size=5, padding='same')", (2, 237, 21), lines.append)
    text = "\n".join(lines)
    assert "nn.Conv1d(21, 1024, kernel_size=5, padding=2)" in text
    assert text.count("permute(0, 2, 1)") == 2
    assert "(2, 237, 21)" in text and "(2, 237, 1024)" in text
    assert ".transpose(2, 1, 0)" in text  # the kernel one-liner
    assert result["report"]["parity"]["passed"]


def test_explains_seed_two_torch_conv1d():
    lines = []
    explain("torch.nn.Conv1d(128, 64, kernel_size=1, bias=False)", (40, 128, 1), lines.append)
    text = "\n".join(lines)
    assert "layers.Conv1D(64, 1, use_bias=False" in text
    assert "(40, 64, 1)" in text and "PASS" in text


def test_explains_asymmetric_same_padding():
    lines = []
    explain("keras.layers.Conv1D(4, 4, strides=2, padding='same')", (1, 11, 3), lines.append)
    text = "\n".join(lines)
    assert "nn.ZeroPad1d((1, 2))" in text
    assert "asymmetric" in text


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "keras.layers.Conv1D(4, open('x').read())",
    "os.system('true')",
    "keras.layers.Conv1D(4, 3) + 1",
    "keras.layers.conv1d(4, 3)",
])
def test_refuses_anything_but_one_constructor(expr):
    with pytest.raises(BadInput):
        parse_layer(expr)


def test_cli_explain_bad_expression_is_one_line(cli):
    proc = cli("explain", "exec('1')", "--input-shape", "1,2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("pipeline:")]) == 1
