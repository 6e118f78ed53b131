"""Hugging Face transformers models -> Keras: models the rest of the tests have never seen.

``transformers`` is a test-only extra (pinned in pyproject's ``test`` extra and in
requirements.lock).  Every model is built offline from a tiny config with random
weights (models/hf_zoo.py; nothing is downloaded, HF_HUB_OFFLINE=1), converted by
the real pipeline from the factory and again from the exported ``.onnx``, and must
match PyTorch to a relative error of 1e-4.  Three quick families run by default;
the rest are ``slow`` (``make test-slow``).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from models.hf_zoo import SHAPES  # noqa: E402
from pipeline.convert import Options, convert  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.parity import load_generated  # noqa: E402
from pipeline.spec import InputSpec  # noqa: E402

MAX_REL_ERR = 1e-4
FAST = ["bert", "vit", "whisper_encoder"]
FAMILIES = FAST + sorted(set(SHAPES) - set(FAST))


def _specs(name: str) -> list[InputSpec]:
    """The zoo's INPUTS for ``name``: a shape, or (shape, dtype[, the range its values are drawn from])."""
    return [InputSpec(k, tuple(v[0]), v[1], value_range=tuple(v[2]) if len(v) > 2 else None)
            if isinstance(v[1], str) else InputSpec(k, tuple(v)) for k, v in SHAPES[name].items()]


def _assert_close_to_source(result) -> None:
    parity = result.report["parity"]
    assert result.exit_code == 0, parity["stages"]
    assert parity["outputs"], "no output was compared"
    for out in parity["outputs"]:
        assert out["max_rel_err"] <= MAX_REL_ERR, out


@pytest.mark.parametrize("family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_transformers_family_converts_to_keras(tmp_path, family):
    result = convert(Options(model=f"models/hf_zoo.py:{family}", to="keras", out=str(tmp_path / "out"),
                             inputs=_specs(family)))
    _assert_close_to_source(result)
    code = (tmp_path / "out" / "model.py").read_text()
    assert "import torch" not in code and "transformers" not in code.split('"""')[-1]
    # The exported .onnx file converts as well (its reference is then onnxruntime); its varying
    # batch is a dim_param, whose example size an ONNX file does not carry.
    examples = {s["name"]: s["example"] for s in result.report["symbols"]}
    again = convert(Options(model=str(tmp_path / "out" / "source.onnx"), to="keras", out=str(tmp_path / "again"),
                            dims=examples))
    _assert_close_to_source(again)


RAW_BERT = '''
import torch
from transformers import BertConfig, BertModel


def build():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    return BertModel(config).eval()
'''


def test_unwrapped_transformers_model_with_keyword_inputs(tmp_path):
    """As a user writes it: the factory returns ``BertModel`` itself, whose ``forward`` takes only
    optional keyword arguments and returns a ModelOutput.  ``--input`` names pick the arguments;
    the outputs are the ModelOutput's tensors (last_hidden_state, pooler_output), in order."""
    factory = tmp_path / "user_bert.py"
    factory.write_text(RAW_BERT)
    specs = [InputSpec("attention_mask", (2, 8), "int64"), InputSpec("input_ids", (2, 8), "int64")]
    result = convert(Options(model=f"{factory}:build", to="keras", out=str(tmp_path / "out"), inputs=specs))
    _assert_close_to_source(result)
    assert [o["shape"] for o in result.report["parity"]["outputs"]] == [[2, 8, 32], [2, 32]]

    # Independently of the parity report: the converted model against transformers itself,
    # on a batch whose second row is padded (the mask must take effect).
    ids = np.array([[5, 9, 2, 7, 1, 3, 3, 8], [4, 6, 11, 2, 0, 0, 0, 0]], np.int64)
    mask = (ids != 0).astype(np.int64)
    namespace: dict = {}
    exec(RAW_BERT, namespace)
    with torch.no_grad():
        want = namespace["build"]()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    keras_model = load_generated(tmp_path / "out" / "model.py")
    got = keras_model([ids, mask], training=False)
    for w, g in zip((want.last_hidden_state, want.pooler_output), got):
        w = w.numpy()
        assert np.abs(np.asarray(g) - w).max() <= MAX_REL_ERR * np.abs(w).max()


def test_keyword_only_model_without_inputs_names_its_arguments(tmp_path):
    factory = tmp_path / "user_bert.py"
    factory.write_text(RAW_BERT)
    with pytest.raises(BadInput, match=r"optional arguments \(input_ids, attention_mask.*--input input_ids="):
        convert(Options(model=f"{factory}:build", to="keras", out=str(tmp_path / "out")))
    with pytest.raises(BadInput, match=r"\['ids'\] are not arguments of forward\(\) \(input_ids, attention_mask"):
        convert(Options(model=f"{factory}:build", to="keras", out=str(tmp_path / "out"),
                        inputs=[InputSpec("ids", (2, 8), "int64")]))
    assert not (tmp_path / "out").exists()


BROKEN_EFFICIENTNET = '''
import torch
from transformers import EfficientNetConfig, EfficientNetModel


def build():
    # hidden_dim (2560, the B7 default) does not match the B0 widths: the model itself is inconsistent
    return EfficientNetModel(EfficientNetConfig(image_size=32, width_coefficient=1.0, depth_coefficient=0.5)).eval()
'''


@pytest.mark.slow
def test_model_that_fails_inside_torch_onnx_export_gives_one_line(tmp_path, cli):
    factory = tmp_path / "broken.py"
    factory.write_text(BROKEN_EFFICIENTNET)
    proc = cli("convert", f"{factory}:build", "--to", "keras", "--out", str(tmp_path / "out"),
               "--input", "pixel_values=1,3,32,32", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pipeline: error:")]
    # The batch is symbolic by default, so torch.export meets the model's error first.
    assert len(errors) == 1 and "export with symbolic dimensions failed: RuntimeError: running_mean" in errors[0], \
        errors
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_transformers_model_converts_with_the_network_unplugged(tmp_path):
    """Built from a config, never downloaded: the conversion runs in a namespace with no network."""
    import json
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed to unplug the network"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # only hf_zoo's own HF_HUB_OFFLINE
    env["PYTHONPATH"] = str(REPO)
    args = [f"--input={k}={','.join(map(str, v[0]))}:{v[1]}" for k, v in SHAPES["distilbert"].items()]
    proc = subprocess.run([unshare, "-n", sys.executable, "-m", "pipeline", "convert",
                           f"{REPO}/models/hf_zoo.py:distilbert", "--to", "keras", "--out", str(tmp_path / "out"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["parity"]["passed"]


DICT_OUTPUT = '''
import torch


class Heads(torch.nn.Module):
    """Returns a dict whose keys are not in alphabetical order, like a ModelOutput."""

    def forward(self, x):
        return {"logits": x * 2.0, "hidden": x.sum(-1)}


def build():
    return Heads()
'''


def test_dict_outputs_are_compared_in_the_exporters_order(tmp_path):
    """torch.onnx flattens a dict output in insertion order (tf.nest would sort): parity must too."""
    factory = tmp_path / "heads.py"
    factory.write_text(DICT_OUTPUT)
    result = convert(Options(model=f"{factory}:build", to="keras", out=str(tmp_path / "out"),
                             inputs=[InputSpec("x", (2, 3))]))
    _assert_close_to_source(result)
    assert [o["shape"] for o in result.report["parity"]["outputs"]] == [[2, 3], [2]]
