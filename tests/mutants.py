"""Deliberate translator bugs, for checking that the suite notices them (not part of ``make test``).

A pytest plugin: ``PIPELINE_MUTANT=NAME PYTHONPATH=tests .venv/bin/python -m pytest -p mutants
tests/...`` monkeypatches one translator helper in the test process before any test runs (the
importer files are not edited; CLI tests run the pipeline in a subprocess, which stays
unmutated).  A mutant the selected tests do not fail on is a hole in the tests.

Mutants (each an off-by-one a translator author could plausibly write):

- ``torch_pad_swap``: PyTorch target, an asymmetric convolution pad gets its odd pixel at the
  start instead of the end (``(0, 1)`` written as ``(1, 0)``: TensorFlow's vs the other convention);
- ``torch_pad_axes``: PyTorch target, ``F.pad`` / ``ZeroPadNd`` order with the spatial axes
  reversed (the last-axis-first rule forgotten);
- ``keras_same_lower``: Keras target, ONNX pads with the odd pixel at the START are taken for
  Keras ``padding="same"`` (which puts it at the end).
"""

from __future__ import annotations

import os


def _torch_pad_swap():
    from pipeline.importers.ops import conv

    original = conv.conv_padding

    def conv_padding(pads, kernel, strides, dilations):
        padding, pairs = original(pads, kernel, strides, dilations)
        return padding, (None if pairs is None else [(e, b) for b, e in pairs])

    conv.conv_padding = conv_padding


def _torch_pad_axes():
    from pipeline.importers import torch_emit

    original = torch_emit.pad_order
    torch_emit.pad_order = lambda pairs: original(list(reversed(list(pairs))))


def _keras_same_lower():
    from pipeline.importers import keras_emit
    from pipeline.importers.ops import pool

    original = keras_emit.same_pads

    def same_pads(*args, upper=True, **kwargs):
        return original(*args, upper=not upper, **kwargs)

    keras_emit.same_pads = pool.same_pads = same_pads


MUTANTS = {"torch_pad_swap": _torch_pad_swap, "torch_pad_axes": _torch_pad_axes,
           "keras_same_lower": _keras_same_lower}


def pytest_configure(config):
    name = os.environ.get("PIPELINE_MUTANT", "")
    if name:
        MUTANTS[name]()


def pytest_report_header(config):
    name = os.environ.get("PIPELINE_MUTANT", "")
    return f"PIPELINE_MUTANT={name} (a deliberate translator bug is active)" if name else None
