"""Hugging Face BERT and GPT-2 with a symbolic batch and sequence length, wav2vec2 with a
symbolic audio length (issue 14, item 8).

Like ``test_shapes_models.py``, each conversion is judged against the source itself: the
generated ``model.py`` is imported and run at several size sets (1 and odd sizes among them)
next to the ``transformers`` model (``models/hf_zoo.py``: tiny configs, random weights,
nothing downloaded), never through ``report.json``'s own verdict.  Each conversion takes a few seconds (the
models are tiny), so none is marked slow.

The masks are what users feed: ones, then zeros where a sequence is padded (every batch has
a shorter row).  GPT-2's conversion states ``attention_mask``'s values as ``1..8`` for the
pipeline's own parity: a random mask whose first position is 0 leaves a query row of the
causal mask with nothing to attend to, where torch.onnx's export of ``scaled_dot_product_attention``
already differs from PyTorch (an additive ``-3.4e38`` for the boolean mask, so such a row
averages every value where PyTorch gives 0) -- the static conversion has the same limit.
"""

from __future__ import annotations

import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from test_shapes_import import converted

import pipeline.quiet  # noqa: F401  (silences TensorFlow before anything imports it)

TEXT_SIZES = [(2, 8), (1, 1), (3, 13), (5, 32)]  # (B, S); 32 = the position table's rows, S's maximum
AUDIO_SIZES = [(2, 400), (1, 30), (3, 257), (1, 1013)]  # (B, T): torch proves T >= 30, no stride


def _body(out) -> str:
    """``model.py`` without its docstring (which states the example sizes on purpose)."""
    return (out / "model.py").read_text().split('"""', 2)[2]


def _text(b: int, s: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and a right-padded mask: the first row full, the others of random lengths."""
    ids = rng.integers(0, 64, (b, s)).astype(np.int64)
    lengths = np.concatenate([[s], rng.integers(1, s + 1, b - 1)])
    return ids, (np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)


def _run(module, to: str, inputs: list[np.ndarray]) -> np.ndarray:
    model = module.load()
    if to == "torch":
        import torch

        with torch.no_grad():
            return model(*[torch.from_numpy(x) for x in inputs]).numpy()
    return np.asarray(model(inputs if len(inputs) > 1 else inputs[0], training=False))


def _check(module, to: str, source, sizes, draw) -> None:
    import torch

    rng = np.random.default_rng(7)
    for size in sizes:
        inputs = draw(*size, rng)
        with torch.no_grad():
            want = source(*[torch.from_numpy(x) for x in inputs]).numpy()
        got = _run(module, to, inputs)
        assert got.shape == want.shape, size
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"sizes {size}")


def _symbols(out) -> dict:
    import json

    report = json.loads((out / "report.json").read_text())
    assert not report["pinned"], report["pinned"]
    checked = [s for s in report["parity"]["shapes"] if "skipped" not in s]
    assert len(checked) >= 3 and all(s["passed"] for s in checked)
    return {s["name"]: s for s in report["symbols"]}


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_bert_any_batch_and_length(tmp_path, to):
    """BERT's padding mask (a GatherND over ``Range(B)`` x ``Range(S)``), its position ids
    (``position_ids[:, :S]``) and token types (a gather of a buffer, broadcast to (B, S))."""
    from models.hf_zoo import bert

    out, module = converted(tmp_path, "hf_zoo:bert", to, "input_ids=B=2,S=8:int64", "attention_mask=B=2,S=8:int64")
    symbols = _symbols(out)
    assert symbols["S"]["constraint"]["max"] == 32  # torch.export's bound: the position table's rows
    body = _body(out)
    assert "batch_size" not in body and "GatherND" not in body and "gather_nd" not in body
    if to == "keras":
        assert body.count("keras.Input(shape=(None,)") == 2
    _check(module, to, bert(), TEXT_SIZES, _text)


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_gpt2_any_batch_and_length(tmp_path, to):
    """GPT-2's causal mask (``Range(S)`` compared with itself) and padding mask, positions
    ``Range(S)`` into its position table, the qkv split over a varying length."""
    from models.hf_zoo import gpt2

    out, module = converted(tmp_path, "hf_zoo:gpt2", to, "input_ids=B=2,S=8:int64",
                            "attention_mask=B=2,S=8:int64:1..8")
    _symbols(out)
    assert "batch_size" not in _body(out)
    _check(module, to, gpt2(), TEXT_SIZES, _text)


def _audio(b: int, t: int, rng) -> tuple[np.ndarray]:
    return (rng.standard_normal((b, t)).astype(np.float32),)


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_wav2vec2_any_audio_length(tmp_path, to):
    """wav2vec2's frames, ``floor(floor(T/5)/2) - 1``, are no product of the input's sizes: the
    attention mask's broadcast and its ``Range`` read them off the features computed before."""
    from models.hf_zoo import wav2vec2

    out, module = converted(tmp_path, "hf_zoo:wav2vec2", to, "input_values=B=2,T=400")
    symbols = _symbols(out)
    # torch's range (T >= 30), not the stride its named-Dim export suggested (T = 10*_T, which
    # only simplified its guards): the conversion holds at every length the source takes
    assert symbols["T"]["constraint"] == {"min": 30, "multiple_of": 1, "offset": 0}
    body = _body(out)
    assert "batch_size" not in body and not re.search(r"(?<![\w.])(400|39|79)(?![\w.])", body), body
    if to == "keras":
        assert "keras.Input(shape=(None,)" in body
    _check(module, to, wav2vec2(), AUDIO_SIZES, _audio)


@pytest.mark.slow
@pytest.mark.parametrize("to", ["keras", "torch"])
@pytest.mark.parametrize("family", ["distilbert", "roberta", "t5_encoder", "llama"])
def test_other_text_models_any_batch_and_length(tmp_path, family, to):
    """The zoo's other text models with B and S: RoBERTa's positions are a cumulative sum of the
    mask (CumSum over a varying length), T5's relative position buckets broadcast a constant to
    (S, S), Llama's rotary positions and causal mask are ``Range(S)``."""
    import models.hf_zoo as zoo

    out, module = converted(tmp_path, f"hf_zoo:{family}", to, "input_ids=B=2,S=8:int64",
                            "attention_mask=B=2,S=8:int64:1..8")
    _symbols(out)
    assert "batch_size" not in _body(out)
    sizes = TEXT_SIZES if family != "roberta" else [*TEXT_SIZES[:-1], (5, 30)]  # its positions start at 2
    _check(module, to, getattr(zoo, family)(), sizes, _text)
