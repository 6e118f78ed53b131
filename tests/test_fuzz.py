"""Property-based conv/pool fuzzing, fast profile (part of ``make test``).

Hypothesis draws small Conv / ConvTranspose / MaxPool / AveragePool graphs (1-D to
3-D, every padding mode, strides, dilation, groups, output_padding, ceil_mode, batch
1 and > 1, optional Flatten/Reshape -> Dense head) in three renderings — a raw ONNX
graph, a real Keras model, a real PyTorch module — and converts each through the
real pipeline.  The property: every conversion passes parity (max abs error <= 1e-4
against the source, judged by the pipeline's own parity stage).  A refusal (exit 3)
passes only when an entry of the known-gaps table (tests/known_gaps.py, listed in
the README) covers it; a refusal outside it, a mismatch, a crash or any other exit
code fails the test.

The default ``ci`` profile is derandomized (the same few hundred cases every run);
``FUZZ_PROFILE=dev`` draws more, at random.  ``make fuzz`` runs the deep profile
(bench/fuzz.py).  See tests/fuzz_cases.py for the case model and the rules that
keep invalid cases (and cases onnxruntime cannot referee) out.
"""

from __future__ import annotations

import pytest
from fuzz_cases import (
    MAX_ABS_ERR,
    Case,
    Layer,
    TARGETS,
    cases,
    keras_model,
    onnx_model,
    profile,
    run_case,
    scratch_dir,
    torch_model,
)
from hypothesis import example, given, settings

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")

_WORK = scratch_dir("pipeline-fuzz-")


_COLLECT: list = []  # [list]: profile_cases() is collecting; check() records instead of converting


def check(case) -> None:
    """Convert ``case`` to every target; each must pass, or be refused for a known gap."""
    if _COLLECT:
        _COLLECT[0].append(case)
        return
    outcome = run_case(case, _WORK)
    assert [v.target for v in outcome.verdicts] == list(TARGETS[case.render])
    assert outcome.ok, outcome.describe()
    for v in outcome.verdicts:
        if v.status == "pass":
            assert v.exit_code == 0 and v.max_abs_err <= MAX_ABS_ERR, outcome.describe()
        else:
            assert v.status == "known_gap" and v.exit_code == 3 and v.reason, outcome.describe()


# Explicit cases: features the derandomized ci profile would otherwise miss
# (test_profile_has_every_feature counts them), run in every profile.
ONNX_EXAMPLES = [
    Case("onnx", 3, 1, 4, (3, 3, 3), (Layer("conv", (2, 2, 2), (1, 1, 1), (1, 1, 1), "valid", pads=(), filters=4,
                                            groups=2, activation="relu"),), seed=1),
]
KERAS_EXAMPLES = [
    Case("keras", 1, 2, 2, (10,), (
        Layer("conv", (3,), (1,), (1,), "causal", filters=2, groups=2, activation="tanh"),
        Layer("conv", (2,), (1,), (1,), "valid", kind="depthwise", depth_multiplier=2),
        Layer("maxpool", (2,), (2,), (1,), "valid")), head="flatten", units=3, seed=2),
    Case("keras", 3, 1, 1, (2, 3, 2), (Layer("convT", (2, 2, 2), (2, 2, 2), (1, 1, 1), "valid", filters=2,
                                             output_padding=(1, 1, 1)),), seed=3),
]
TORCH_EXAMPLES = [
    Case("torch", 2, 2, 2, (7, 6), (
        Layer("conv", (2, 2), (1, 1), (1, 1), "same", filters=2, activation="leaky_relu"),
        Layer("conv", (3, 3), (1, 1), (1, 1), "explicit", pads=(1, 1, 1, 1), filters=3, padding_mode="reflect"),
        Layer("avgpool", (3, 3), (2, 2), (1, 1), "explicit", pads=(1, 1, 1, 1), ceil_mode=True,
              count_include_pad=True)), seed=4),
]


def _with_examples(examples):
    def wrap(test):
        for case in reversed(examples):
            test = example(case=case)(test)
        return test
    return wrap


@profile("onnx")
@_with_examples(ONNX_EXAMPLES)
@given(case=cases("onnx"))
def test_onnx_graph_converts_to_torch_and_keras(case):
    check(case)


@profile("keras")
@_with_examples(KERAS_EXAMPLES)
@given(case=cases("keras"))
def test_keras_model_converts_to_torch(case):
    check(case)


@profile("torch")
@_with_examples(TORCH_EXAMPLES)
@given(case=cases("torch"))
def test_torch_module_converts_to_keras(case):
    check(case)


# -- the generators reach every feature they claim ------------------------------


def _any(pred):
    """A case predicate true when some layer satisfies ``pred(case, layer)``."""
    return lambda c: any(pred(c, layer) for layer in c.layers)


FEATURES = {
    "onnx": [
        ("1-D", lambda c: c.rank == 1),
        ("2-D", lambda c: c.rank == 2),
        ("3-D", lambda c: c.rank == 3),
        ("SAME_UPPER", _any(lambda c, la: la.padding == "same_upper")),
        ("SAME_LOWER", _any(lambda c, la: la.padding == "same_lower")),
        ("VALID", _any(lambda c, la: la.padding == "valid")),
        ("asymmetric pads", _any(lambda c, la: la.pads and la.pads[:c.rank] != la.pads[c.rank:])),
        ("grouped 3-D conv", _any(lambda c, la: c.rank == 3 and la.op == "conv" and la.groups > 1)),
        ("ConvTranspose output_padding", _any(lambda c, la: la.op == "convT" and any(la.output_padding))),
        ("max pool", _any(lambda c, la: la.op == "maxpool")),
        ("ceil_mode pool", _any(lambda c, la: la.ceil_mode)),
        ("dilated max pool", _any(lambda c, la: la.op == "maxpool" and max(la.dilation) > 1)),
        ("AveragePool count_include_pad", _any(lambda c, la: la.op == "avgpool" and la.count_include_pad)),
        ("an activation between layers", lambda c: any(la.activation != "none" for la in c.layers[:-1])),
        ("four layers", lambda c: len(c.layers) == 4),
        ("two layers and a dense head, batch > 1", lambda c: len(c.layers) >= 2 and c.head != "none" and c.batch > 1),
    ],
    "keras": [
        ("causal Conv1D", _any(lambda c, la: la.padding == "causal")),
        ("separable", _any(lambda c, la: la.kind == "separable")),
        ("depthwise with depth_multiplier", _any(lambda c, la: la.kind == "depthwise" and la.depth_multiplier > 1)),
        ("grouped Conv (groups > 1)", _any(lambda c, la: la.op == "conv" and la.kind == "plain" and la.groups > 1)),
        ("Conv3DTranspose output_padding", _any(lambda c, la: c.rank == 3 and la.op == "convT" and any(la.output_padding))),
        ("max pooling", _any(lambda c, la: la.op == "maxpool")),
        ("same pooling, even size", _any(lambda c, la: la.op in ("maxpool", "avgpool") and la.padding == "same")),
        ("an activation", _any(lambda c, la: la.activation != "none")),
        ("more than two layers", lambda c: len(c.layers) > 2),
    ],
    "torch": [
        ("padding='same', even kernel", _any(lambda c, la: la.padding == "same" and la.kernel[0] % 2 == 0)),
        ("F.pad before a conv", _any(lambda c, la: la.op == "conv" and la.padding == "pad_layer")),
        ("padding_mode='reflect'", _any(lambda c, la: la.padding_mode == "reflect")),
        ("grouped ConvTranspose", _any(lambda c, la: la.op == "convT" and la.groups > 1)),
        ("ConvTranspose output_padding", _any(lambda c, la: la.op == "convT" and any(la.output_padding))),
        ("max pooling", _any(lambda c, la: la.op == "maxpool")),
        ("ceil_mode avg pool", _any(lambda c, la: la.op == "avgpool" and la.ceil_mode)),
        ("avg pool count_include_pad", _any(lambda c, la: la.op == "avgpool" and la.count_include_pad)),
        ("an activation", _any(lambda c, la: la.activation != "none")),
        ("more than two layers", lambda c: len(c.layers) > 2),
    ],
}
FEATURE_PARAMS = [(r, label, p) for r, items in FEATURES.items() for label, p in items]
FEATURE_IDS = [f"{r}-{label}" for r, label, _ in FEATURE_PARAMS]


PROPERTY_TESTS = {"onnx": test_onnx_graph_converts_to_torch_and_keras,
                  "keras": test_keras_model_converts_to_torch,
                  "torch": test_torch_module_converts_to_keras}


_PROFILE_CASES: dict = {}


def profile_cases(render: str) -> list:
    """The cases the property test of ``render`` runs under the current FUZZ_PROFILE
    (``ci``: derandomized, so the very cases CI converts), collected without converting."""
    if render not in _PROFILE_CASES:
        _COLLECT[:] = [[]]
        try:
            PROPERTY_TESTS[render]()
            _PROFILE_CASES[render] = _COLLECT[0]
        finally:
            _COLLECT.clear()
    return _PROFILE_CASES[render]


@pytest.mark.parametrize("render,label,predicate", FEATURE_PARAMS, ids=FEATURE_IDS)
def test_generator_reaches(render, label, predicate):
    """The feature is among the cases this profile really converts (no conversion runs here).

    Stronger than asking hypothesis to find such a case anywhere in 2000 draws, as this test
    did before: a feature the generator can reach but the ci profile never draws is tested
    by nobody."""
    seen = profile_cases(render)
    assert any(predicate(c) for c in seen), f"no {label!r} in the {len(seen)} {render} cases of this profile"


def test_examples_are_valid_cases():
    from fuzz_cases import valid

    for case in ONNX_EXAMPLES + KERAS_EXAMPLES + TORCH_EXAMPLES:
        assert valid(case), case


@pytest.mark.parametrize("render", sorted(FEATURES))
def test_profile_has_every_feature(render):
    """Every feature the README claims for the fuzz is in the cases this profile really runs."""
    seen = profile_cases(render)
    counts = {label: sum(1 for c in seen if predicate(c)) for label, predicate in FEATURES[render]}
    missing = [label for label, n in counts.items() if n == 0]
    assert not missing, f"{render}: {len(seen)} cases, none with {missing}; counts {counts}"


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
