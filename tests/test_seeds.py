"""The two seed questions, converted end to end through the real CLI contract."""

import json
import re

import numpy as np

import oracle  # tests/oracle.py
from pipeline.convert import Options, convert
from pipeline.parity import load_generated


def test_seed_keras_conv1d_to_torch(tmp_path, cli):
    out = tmp_path / "conv1d"
    proc = cli("convert", "seed_keras_conv1d", "--to", "torch", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["source"] == "keras" and report["target"] == "torch"
    assert report["parity"]["passed"]
    from models.seed_keras_conv1d import build

    assert oracle.assert_matches(out, build()).max_abs_err <= 1e-5  # Keras itself vs model.py, fresh inputs
    assert set(report["timings_s"]) >= {"export", "normalize", "import", "parity"}
    for name in ("source.onnx", "normalized.onnx", "model.py", "model.safetensors", "report.json"):
        assert (out / name).is_file(), name
    code = (out / "model.py").read_text()
    # What a person would write: the Conv1d of the seed answer between two permutes.
    assert re.search(r"nn\.Conv1d\(21, 1024, kernel_size=5, padding=(2|\"same\")\)", code), code
    assert code.count(".permute(0, 2, 1)") == 2
    assert "onnxruntime" not in code and "pipeline" not in code.split('"""')[-1]
    # The docstring states the interface shapes; the batch varies by default.
    assert "(B, 237, 21)" in code and "(B, 237, 1024)" in code
    assert report["symbols"] == [{"name": "B", "example": 256, "places": [["x", 0]]}]
    assert [s["passed"] for s in report["parity"]["shapes"]] == [True, True, True]
    # TensorFlow's start-up noise stays hidden.
    assert "cuda" not in proc.stderr.lower() and "absl" not in proc.stderr


def test_seed_torch_encoder_to_keras(tmp_path):
    out = tmp_path / "encoder"
    result = convert(Options(model="seed_torch_encoder", to="keras", out=str(out)))
    assert result.exit_code == 0
    from models.seed_torch_encoder import INPUTS, build

    assert oracle.assert_matches(out, build(), specs=INPUTS).max_abs_err <= 1e-5  # PyTorch itself vs model.py
    code = (out / "model.py").read_text()
    assert re.search(r"layers\.Conv1D\(64, 1, use_bias=False\b", code), code
    assert "ops.transpose" not in code  # the (B*K, L, 1) view needs no transpose channels-last
    assert (out / "model.weights.h5").is_file()
    assert not (out / "model.keras").exists()  # each weight written once: model.py's load() reads the .weights.h5


def test_seed_encoder_keeps_epsilon_for_silent_frames(tmp_path):
    """torch.onnx's default optimizer drops `+ 1e-8`, turning a silent frame into NaN.

    The converted model must return what PyTorch returns: zeros, not NaN.
    """
    import torch

    from models.seed_torch_encoder import build

    out = tmp_path / "encoder"
    assert convert(Options(model="seed_torch_encoder", out=str(out))).exit_code == 0
    mixture = np.random.default_rng(1).standard_normal((4, 10, 128)).astype(np.float32)
    mixture[1, 3] = 0.0
    expected = build()(torch.from_numpy(mixture)).detach().numpy()
    got = np.asarray(load_generated(out / "model.py")(mixture, training=False))
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[1, 3] == 0)


def test_seed_batch_config(tmp_path, cli):
    text = (cli.__globals__["REPO"] / "configs" / "seeds.yaml").read_text()
    config = tmp_path / "seeds.yaml"
    config.write_text(text.replace("output_dir: build/", f"output_dir: {tmp_path / 'out'}"))
    proc = cli("batch", str(config))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["passed", "passed"]
    assert (tmp_path / "out" / "seed_keras_conv1d" / "model.py").is_file()
    assert (tmp_path / "out" / "seed_torch_encoder" / "model.py").is_file()
    # A re-run skips both: nothing changed since they passed.
    again = cli("batch", str(config))
    assert again.returncode == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["skipped", "skipped"]
