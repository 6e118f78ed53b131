"""Property-based conv/pool fuzzing, fast profile (part of ``make test``).

Hypothesis draws small Conv / ConvTranspose / MaxPool / AveragePool graphs (1-D to
3-D, every padding mode, strides, dilation, groups, output_padding, ceil_mode, batch
1 and > 1, optional Flatten/Reshape -> Dense head) in three renderings — a raw ONNX
graph, a real Keras model, a real PyTorch module — and converts each through the
real pipeline.  The property: every conversion passes parity (max abs error <= 1e-4
against the source, judged by the pipeline's own parity stage) or is refused with
exit 3 and a reason.  A mismatch, a crash or any other exit code fails the test.

The default ``ci`` profile is derandomized (the same few hundred cases every run);
``FUZZ_PROFILE=dev`` draws more, at random.  ``make fuzz`` runs the deep profile
(bench/fuzz.py).  See tests/fuzz_cases.py for the case model and the rules that
keep invalid cases (and cases onnxruntime cannot referee) out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fuzz_cases import (
    MAX_ABS_ERR,
    TARGETS,
    cases,
    keras_model,
    onnx_model,
    profile,
    run_case,
    torch_model,
)
from hypothesis import find, given, settings

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")

_WORK = Path(tempfile.mkdtemp(prefix="pipeline-fuzz-"))


def check(case) -> None:
    """Convert ``case`` to every target; each must pass or be refused with a reason."""
    outcome = run_case(case, _WORK)
    assert [v.target for v in outcome.verdicts] == list(TARGETS[case.render])
    assert outcome.ok, outcome.describe()
    for v in outcome.verdicts:
        if v.status == "pass":
            assert v.exit_code == 0 and v.max_abs_err <= MAX_ABS_ERR, outcome.describe()
        else:
            assert v.exit_code == 3 and v.reason, outcome.describe()


@profile("onnx")
@given(case=cases("onnx"))
def test_onnx_graph_converts_to_torch_and_keras(case):
    check(case)


@profile("keras")
@given(case=cases("keras"))
def test_keras_model_converts_to_torch(case):
    check(case)


@profile("torch")
@given(case=cases("torch"))
def test_torch_module_converts_to_keras(case):
    check(case)


# -- the generators reach every feature they claim ------------------------------

FEATURES = {
    "onnx": [
        ("SAME_UPPER", lambda c: c.layers[0].padding == "same_upper"),
        ("SAME_LOWER", lambda c: c.layers[0].padding == "same_lower"),
        ("VALID", lambda c: c.layers[0].padding == "valid"),
        ("asymmetric pads", lambda c: c.layers[0].pads and c.layers[0].pads[:c.rank] != c.layers[0].pads[c.rank:]),
        ("grouped 3-D conv", lambda c: c.rank == 3 and c.layers[0].op == "conv" and c.layers[0].groups > 1),
        ("ConvTranspose output_padding", lambda c: c.layers[0].op == "convT" and any(c.layers[0].output_padding)),
        ("ceil_mode pool", lambda c: c.layers[0].ceil_mode),
        ("dilated max pool", lambda c: c.layers[0].op == "maxpool" and max(c.layers[0].dilation) > 1),
        ("two layers and a dense head, batch > 1", lambda c: len(c.layers) == 2 and c.head != "none" and c.batch > 1),
    ],
    "keras": [
        ("causal Conv1D", lambda c: c.layers[0].padding == "causal"),
        ("separable", lambda c: c.layers[0].kind == "separable"),
        ("depthwise with depth_multiplier", lambda c: c.layers[0].kind == "depthwise" and c.layers[0].depth_multiplier > 1),
        ("Conv3DTranspose output_padding", lambda c: c.rank == 3 and c.layers[0].op == "convT" and any(c.layers[0].output_padding)),
        ("same pooling, even size", lambda c: c.layers[0].op in ("maxpool", "avgpool") and c.layers[0].padding == "same" and c.sizes[0] % 2 == 0),
    ],
    "torch": [
        ("padding='same', even kernel", lambda c: c.layers[0].padding == "same" and c.layers[0].kernel[0] % 2 == 0),
        ("F.pad before a conv", lambda c: c.layers[0].op == "conv" and c.layers[0].padding == "pad_layer"),
        ("grouped ConvTranspose", lambda c: c.layers[0].op == "convT" and c.layers[0].groups > 1),
        ("ceil_mode avg pool", lambda c: c.layers[0].op == "avgpool" and c.layers[0].ceil_mode),
    ],
}


@pytest.mark.parametrize("render,label,predicate",
                         [(r, label, p) for r, items in FEATURES.items() for label, p in items],
                         ids=[f"{r}-{label}" for r, items in FEATURES.items() for label, _ in items])
def test_generator_reaches(render, label, predicate):
    """hypothesis.find raises if no generated case has the feature (no conversion runs)."""
    found = find(cases(render), predicate, settings=settings(profile(render), max_examples=2000))
    assert predicate(found)


@pytest.mark.parametrize("render", ["onnx", "keras", "torch"])
def test_case_shapes_match_the_frameworks(render):
    """out_sizes() — used to filter cases before building — agrees with the framework
    that runs the rendering (onnxruntime, Keras, PyTorch) on a few hundred cases."""
    import dataclasses

    import numpy as np

    seen = []

    @settings(profile(render), max_examples=40)
    @given(case=cases(render))
    def shapes(case):
        plain = dataclasses.replace(case, head="none")
        x = np.zeros(plain.input_shape(), np.float32)
        if render == "onnx":
            from pipeline.referee import run_onnx

            got = run_onnx(onnx_model(plain), {"x": x})[0].shape
        elif render == "keras":
            got = tuple(keras_model(plain)(x).shape)
        else:
            import torch

            with torch.no_grad():
                got = tuple(torch_model(plain)(torch.from_numpy(x)).shape)
        c, sizes = plain.shapes()[-1]
        want = (plain.batch, *sizes, c) if render == "keras" else (plain.batch, c, *sizes)
        assert tuple(got) == want, (plain, got, want)
        seen.append(case)

    shapes()
    assert len(seen) >= 20


def test_deep_fuzz_merges_worker_summaries():
    """``make fuzz`` with several workers: counts add up, worst errors and peak RSS are maxima,
    every failure is kept (bench/fuzz.py's merge)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("bench_fuzz", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def part(seed, passed, refused, err, reason, failures):
        return {"cases": passed + refused, "cases_by_rendering": {"onnx": passed + refused}, "seed": seed,
                "peak_rss_mb": 900 + seed, "conversions": {"onnx->torch": {
                    "pass": passed, "refused": refused, "mismatch": len(failures), "crash": 0,
                    "worst_passing_max_abs_err": err}},
                "refusals": {reason: refused}, "refusal_examples": {reason: f"case {seed}"},
                "failures_total": len(failures), "failures": failures}

    merged = bench.merge([part(0, 5, 2, 1e-6, "dilated pooling", []),
                          part(1, 7, 1, 3e-6, "dilated pooling", [{"case": "c", "verdicts": []}])], 12.0, 0)
    assert merged["cases"] == 15 and merged["cases_by_rendering"] == {"onnx": 15}
    counts = merged["conversions"]["onnx->torch"]
    assert (counts["pass"], counts["refused"], counts["mismatch"]) == (12, 3, 1)
    assert counts["worst_passing_max_abs_err"] == 3e-6 and merged["peak_rss_mb"] == 901
    assert merged["refusals"] == {"dilated pooling": 3} and merged["seeds"] == [0, 1]
    assert merged["failures_total"] == 1 and len(merged["failures"]) == 1
