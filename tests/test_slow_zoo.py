"""Slow: whole model zoos (`make test-slow`).  Not part of the default run.

``test_keras_application_to_torch`` runs bench/keras_zoo.py's ``convert_app`` in a fresh
process (the code behind `make zoo`): a keras.applications model with ``weights=None`` at
the smallest input it accepts, normalization statistics randomized, converted to PyTorch;
it must pass parity and match Keras within a max relative error of 1e-4.  The models are
listed from ``keras.applications`` itself, not by hand: all 40 of Keras 3.15, about 17
minutes on 2 cores (the whole sweep takes well under the 40 minutes that would call for
one model per family).
"""

from pathlib import Path

import pytest

from pipeline.convert import Options, convert
from pipeline.sources import import_file
from pipeline.spec import InputSpec

keras_zoo = import_file(Path(__file__).resolve().parent.parent / "bench" / "keras_zoo.py", prefix="keras_zoo")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(keras_zoo.applications()))
def test_keras_application_to_torch(tmp_path, name):
    row = keras_zoo.run_isolated(name, tmp_path, timeout=3600)  # own process: ConvNeXtXLarge needs the memory
    assert "error" not in row, row
    assert row["exit_code"] == 0, row
    assert row["max_rel_err"] <= 1e-4, row


@pytest.mark.slow
def test_convnext_t_sized_torch_to_keras(tmp_path):
    result = convert(Options(model="models/torch_zoo.py:convnext_t", to="keras", out=str(tmp_path / "out"),
                             inputs=[InputSpec("x", (1, 3, 224, 224))]))
    assert result.exit_code == 0
    assert result.report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4
