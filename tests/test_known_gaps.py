"""The known-gaps table (tests/known_gaps.py) is honest: every entry is pinned by a strict
xfail that exists, the README lists the same table, and the gaps that had no test of
their own get one here."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fuzz_cases import Case, Layer, run_case, scratch_dir  # noqa: E402
from known_gaps import GAPS, excusing, markdown_table  # noqa: E402

from pipeline.errors import Unsupported  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
_WORK = scratch_dir("pipeline-known-gaps-")


def statuses(case: Case) -> dict[str, str]:
    return {v.target: v.status for v in run_case(case, _WORK).verdicts}


# -- the table's own checks ----------------------------------------------------------

def _test_function(nodeid: str):
    path, name = nodeid.split("::")
    spec = importlib.util.spec_from_file_location(f"_gap_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("gap", GAPS, ids=[g.id for g in GAPS])
def test_every_gap_is_pinned_by_a_strict_xfail(gap):
    func = _test_function(gap.test)
    marks = [m for m in getattr(func, "pytestmark", []) if m.name == "xfail"]
    assert marks and marks[0].kwargs.get("strict") is True, f"{gap.test} is not xfail(strict=True)"
    assert gap.fuzz in ("refused", "filtered", "other")
    assert gap.fuzz != "refused" or gap.refusal, "a refusal gap needs the reason it excuses"


def test_readme_lists_the_same_table():
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README table: python tests/known_gaps.py"


def test_a_refusal_outside_the_table_is_not_excused():
    case = Case("onnx", 1, 1, 1, (5,), (Layer("conv", (3,), (1,), (1,), "valid", filters=1),))
    assert excusing(case, "Conv: some new reason the pipeline started refusing") is None


# -- strict xfails for the gaps that had none ---------------------------------------------

@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known gap ort-convtranspose-outpad-ge-stride: onnxruntime's ConvTranspose departs from "
                          "PyTorch when output_padding >= stride; the Keras model matches PyTorch, the ONNX stage not")
def test_convtranspose_output_padding_beyond_stride():
    layer = Layer("convT", (2, 3), (1, 2), (3, 2), "explicit", pads=(1, 0, 1, 0), filters=2, output_padding=(2, 1))
    assert statuses(Case("torch", 2, 1, 2, (4, 5), (layer,))) == {"keras": "pass"}


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known gap maxpool-window-only-padding: the max over padding only is -inf in PyTorch, "
                          "the lowest float in onnxruntime")
def test_dilated_maxpool_window_of_padding_only():
    # kernel 2, dilation 2, pads (1, 1) on a length-1 input: the one window's taps are -1 and 1
    layer = Layer("maxpool", (2,), (1,), (2,), "explicit", pads=(1, 1))
    assert statuses(Case("onnx", 1, 1, 1, (1,), (layer,))) == {"torch": "pass", "keras": "pass"}


@pytest.mark.parametrize("mode", ["replicate", "circular"])
def test_torch_conv_replicate_and_circular_padding_to_keras(mode):
    """Was a known gap (exit 4: TensorFlow has no EDGE / WRAP pad); now concatenated slices."""
    layer = Layer("conv", (3, 2), (1, 2), (1, 1), "explicit", pads=(1, 1, 1, 1), filters=2, padding_mode=mode)
    assert statuses(Case("torch", 2, 1, 2, (5, 6), (layer,))) == {"keras": "pass"}


@pytest.mark.xfail(strict=True, raises=Unsupported,
                   reason="known gap keras-recurrent-loop: a masked Keras GRU is a Loop tf2onnx writes, refused (exit 3)")
def test_keras_masked_gru_converts(tmp_path):
    from pipeline.convert import Options, convert
    from pipeline.quiet import import_tensorflow

    _, keras = import_tensorflow()
    x = keras.Input(shape=(7, 6), batch_size=2, name="x")
    model = keras.Model(x, keras.layers.GRU(5)(keras.layers.Masking(0.0)(x)))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    model.save(tmp_path / "model.keras")
    result = convert(Options(model=str(tmp_path / "model.keras"), to="torch", out=str(tmp_path / "out")))
    assert result.exit_code == 0
