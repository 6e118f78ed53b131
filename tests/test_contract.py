"""The CLI contract: MODEL forms, exit codes, report fields, layouts, atomic output."""

import json
import textwrap

import pytest

from pipeline.convert import Options, convert
from pipeline.errors import BadInput
from pipeline.parity import load_generated

KERAS_SAME_STRIDED = """
import keras
import numpy as np

def build():
    keras.utils.set_random_seed(3)
    x = keras.Input(shape={shape}, batch_size=2, name="x")
    y = keras.layers.{layer}(5, {kernel}, strides=2, padding="same", bias_initializer="random_normal")(x)
    return keras.Model(x, y)
"""


@pytest.mark.parametrize("layer,shape,kernel,pad", [
    ("Conv1D", (11, 3), 4, "nn.ZeroPad1d((1, 2))"),
    ("Conv2D", (10, 9, 3), 4, "nn.ZeroPad2d((1, 2, 1, 1))"),
])
def test_keras_same_strided_even_kernel_is_asymmetric(tmp_path, layer, shape, kernel, pad):
    # TF "same", stride 2, kernel 4: total padding = (ceil(n/2)-1)*2 + 4 - n, extra at the end.
    path = tmp_path / "m.py"
    path.write_text(KERAS_SAME_STRIDED.format(layer=layer, shape=shape, kernel=kernel))
    result = convert(Options(model=f"{path}:build", to="torch", out=str(tmp_path / "out")))
    assert result.exit_code == 0
    assert result.report["parity"]["outputs"][0]["max_abs_err"] <= 1e-5
    code = (tmp_path / "out" / "model.py").read_text()
    assert pad in code, code
    assert "padding=" not in code.split(pad)[1].split("\n")[1]  # the conv itself pads nothing


def test_keras_conv1d_flatten_dense_keeps_element_order(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent("""
        import keras

        def build():
            keras.utils.set_random_seed(4)
            x = keras.Input(shape=(12, 3), batch_size=2, name="x")
            y = keras.layers.Conv1D(4, 3, padding="same", activation="relu", bias_initializer="random_normal")(x)
            y = keras.layers.Flatten()(y)
            y = keras.layers.Dense(5, bias_initializer="random_normal")(y)
            return keras.Model(x, y)
    """))
    result = convert(Options(model=f"{path}:build", out=str(tmp_path / "out")))
    assert result.exit_code == 0
    assert result.report["parity"]["outputs"][0]["max_abs_err"] <= 1e-5
    code = (tmp_path / "out" / "model.py").read_text()
    # Flatten must see Keras' (N, L, C) order: the permute back to channels-last stays before it.
    assert "nn.Linear(48, 5)" in code
    forward = code.split("def forward")[1]
    assert forward.index("permute(0, 2, 1)", forward.index("conv")) < forward.index("reshape")


UNSEEN_TORCH = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, image):
        y = torch.relu(self.bn(self.conv(image)))
        y = y.mean(dim=(2, 3))
        return torch.softmax(self.head(y), dim=-1)

def make():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net.eval()
"""


def test_unseen_factory_through_cli(tmp_path, cli):
    path = tmp_path / "unseen.py"
    path.write_text(UNSEEN_TORCH)
    out = tmp_path / "out"
    proc = cli("convert", f"{path}:make", "--to", "keras", "--out", str(out), "--input", "image=2,3,16,16")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    for key in ("source", "target", "parity", "timings_s", "artifacts"):
        assert key in report
    assert report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4
    code = (out / "model.py").read_text()
    assert "layers.Conv2D(8, 3, strides=2" in code and "layers.BatchNormalization(" in code


GROUPED_TORCH = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU()).eval()
"""


def test_grouped_conv_to_keras_keeps_stderr_to_progress(tmp_path, cli):
    """Keras runs a grouped Conv2D jit-compiled; XLA's start-up lines on fd 2 stay out of the
    user's terminal (parity runs the generated model): stderr is progress lines only."""
    path = tmp_path / "grouped.py"
    path.write_text(GROUPED_TORCH)
    proc = cli("convert", f"{path}:make", "--to", "keras", "--out", str(tmp_path / "out"), "--input", "input=1,4,8,8")
    assert proc.returncode == 0, proc.stderr
    assert "groups=2" in (tmp_path / "out" / "model.py").read_text()
    stray = [line for line in proc.stderr.splitlines() if not line.startswith("  ")]
    assert not stray, proc.stderr


def test_layout_target_drops_boundary_permutes(tmp_path):
    result = convert(Options(model="seed_keras_conv1d", out=str(tmp_path / "out"), layout="target",
                             inputs=[], atol=1e-4))
    assert result.exit_code == 0
    code = (tmp_path / "out" / "model.py").read_text()
    assert ".permute(" not in code
    assert result.report["interface"]["inputs"] == {"x": [0, 2, 1]}
    model = load_generated(tmp_path / "out" / "model.py")
    import torch

    y = model(torch.zeros(256, 21, 237))
    assert tuple(y.shape) == (256, 1024, 237)


def test_onnx_file_round_trip_and_tolerance_failure(tmp_path, cli):
    first = tmp_path / "enc"
    assert convert(Options(model="seed_torch_encoder", out=str(first))).exit_code == 0
    # An .onnx file is a MODEL too; converting into torch is a round trip for this PyTorch model.
    # Its batch is the symbol B (a dim_param); source.onnx records its example size (4), and
    # --dim gives another.
    proc = cli("convert", str(first / "source.onnx"), "--to", "torch", "--out", str(tmp_path / "rt"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "rt" / "report.json").read_text())["symbols"][0]["example"] == 4
    proc = cli("convert", str(first / "source.onnx"), "--to", "torch", "--dim", "B=3", "--out", str(tmp_path / "rt"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "rt" / "report.json").read_text())["symbols"][0]["example"] == 3
    # Zero tolerance on a float computation fails parity: exit 1, report kept.
    proc = cli("convert", str(first / "source.onnx"), "--to", "keras", "--dim", "B=4", "--out", str(tmp_path / "strict"),
               "--atol", "0", "--rtol", "0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "strict" / "report.json").read_text())
    assert report["parity"]["passed"] is False


@pytest.mark.parametrize("args,needle", [
    (["no_such_model"], "unknown MODEL"),
    (["missing.onnx", "--to", "torch"], "not found"),
    (["seed_torch_encoder", "--input", "mixture=4,x"], "--input"),
    (["seed_torch_encoder", "--input", "wrong=4,10,128"], "do not match"),
    (["seed_torch_encoder", "--layout", "sideways"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, cli, args, needle):
    proc = cli("convert", *args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unsupported_ops_listed_all_at_once(tmp_path, cli):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Foo", ["a"], ["b"], name="first_custom", domain="my.domain"),
             helper.make_node("Bar", ["b"], ["y"], name="second_custom", domain="my.domain")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.domain", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    proc = cli("convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert proc.returncode == 3, proc.stderr
    assert "first_custom" in proc.stderr and "second_custom" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_run_keeps_earlier_good_output(tmp_path):
    out = tmp_path / "out"
    assert convert(Options(model="seed_torch_encoder", out=str(out))).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(BadInput):
        convert(Options(model="seed_torch_encoder", out=str(out), inputs=[], layout="source", to="keras",
                        atol=-1))
    failing = convert(Options(model="seed_torch_encoder", out=str(out), atol=0, rtol=0))
    assert failing.exit_code == 1 and failing.out_dir.name == "out.failed"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_batch_isolates_a_broken_entry(tmp_path, cli):
    config = tmp_path / "b.yaml"
    config.write_text(textwrap.dedent(f"""
        output_dir: {tmp_path / 'out'}
        models:
          - name: broken
            model: does_not_exist
          - name: enc
            model: seed_torch_encoder
    """))
    proc = cli("batch", str(config))
    assert proc.returncode == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    statuses = {e["name"]: e["status"] for e in summary["entries"]}
    assert statuses == {"broken": "error", "enc": "passed"}
    assert "broken" in proc.stdout and "enc" in proc.stdout


@pytest.mark.parametrize("text,needle", [
    ("models:\n  - name: a\n    model: [unclosed\n", "line"),
    ("models:\n  - name: a\n    model: seed_torch_encoder\n    inputs: {mixture: [4, x]}\n", "models[0].inputs.mixture"),
    ("models:\n  - name: a\n", "models[0].model"),
])
def test_batch_yaml_errors_name_the_place(tmp_path, cli, text, needle):
    config = tmp_path / "b.yaml"
    config.write_text(text)
    proc = cli("batch", str(config))
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
