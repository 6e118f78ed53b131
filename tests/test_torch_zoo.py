"""PyTorch model families -> Keras (issue: real PyTorch models into Keras).

Each family in models/torch_zoo.py is written with its own building blocks;
conversion must match PyTorch to a relative error of 1e-4, from the factory
and from the exported .onnx file.
"""

import json

import pytest

from models.torch_zoo import SHAPES
from pipeline.convert import Options, convert
from pipeline.spec import InputSpec

FAMILIES = sorted(SHAPES)


def _specs(name):
    specs = []
    for k, v in SHAPES[name].items():
        specs.append(InputSpec(k, v[0], v[1]) if isinstance(v[1], str) else InputSpec(k, tuple(v)))
    return specs


@pytest.mark.parametrize("family", FAMILIES)
def test_family_converts_to_keras(tmp_path, family):
    result = convert(Options(model=f"models/torch_zoo.py:{family}", to="keras", out=str(tmp_path / "out"),
                             inputs=_specs(family)))
    assert result.exit_code == 0, json.dumps(result.report["parity"]["stages"], indent=1)
    for out in result.report["parity"]["outputs"]:
        assert out["max_rel_err"] <= 1e-4
    code = (tmp_path / "out" / "model.py").read_text()
    assert "import torch" not in code and "onnx" not in code.split('"""')[-1]
    # The same family given as the exported .onnx file converts too.
    again = convert(Options(model=str(tmp_path / "out" / "source.onnx"), to="keras", out=str(tmp_path / "k")))
    assert again.exit_code == 0
    for out in again.report["parity"]["outputs"]:
        assert out["max_rel_err"] <= 1e-4


def test_round_trip_into_pytorch(tmp_path):
    result = convert(Options(model="models/torch_zoo.py:resnet", to="torch", out=str(tmp_path / "rt"),
                             inputs=_specs("resnet")))
    assert result.exit_code == 0
    assert "nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False)" in (tmp_path / "rt" / "model.py").read_text()


@pytest.mark.parametrize("family", ["resnet", "mobilenet"])
def test_pure_cnn_layout_target_has_no_transpose(tmp_path, family):
    result = convert(Options(model=f"models/torch_zoo.py:{family}", to="keras", out=str(tmp_path / "out"),
                             inputs=_specs(family), layout="target"))
    assert result.exit_code == 0
    code = (tmp_path / "out" / "model.py").read_text()
    assert "ops.transpose" not in code and "Permute" not in code
    assert result.report["interface"]["inputs"] == {"x": [0, 2, 3, 1]}
    assert "keras.Input(shape=(32, 32, 3)" in code
