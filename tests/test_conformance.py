"""ONNX conformance, fast subset: node tests of the ops exported models use most.

Each case converts one of ONNX's own backend node tests to a target with the real
pipeline, runs the generated ``model.py`` on the test's inputs and compares with the
spec's expected outputs (``tests/node_tests.py``).  A case must pass or be refused
with exit 2/3 and a reason.  The cases that fail today are ``xfail(strict=True)`` with
what they do: a fix flips them to XPASS, and the entry comes out of ``FAILING``.

The whole suite (every in-scope test, both targets, both variants) is
``make conformance`` (``bench/conformance.py``); ``make test-slow`` runs it too.
"""

from __future__ import annotations

import pytest

import node_tests

# Single-op tests of the ops that dominate exported CNNs, transformers and audio models.
# Tests with several inputs run as exported models have them: inputs after the first as
# constants (weights, bounds, shapes).  Tests with one input run as shipped.
SUBSET = [
    "test_conv_with_strides_padding", "test_conv_with_autopad_same", "test_convtranspose_pads",
    "test_maxpool_2d_pads", "test_averagepool_2d_pads_count_include_pad", "test_globalaveragepool",
    "test_batchnorm_example", "test_batchnorm_example_training_mode", "test_instancenorm_example",
    "test_layer_normalization_4d_axis_negative_1", "test_relu", "test_sigmoid", "test_tanh", "test_gelu_tanh_1",
    "test_softmax_axis_1", "test_hardswish", "test_leakyrelu", "test_softsign", "test_gemm_all_attributes",
    "test_gemm_default_vector_bias", "test_matmul_4d", "test_add_bcast", "test_mul_bcast", "test_div_bcast",
    "test_concat_3d_axis_1", "test_reshape_reordered_all_dims", "test_transpose_all_permutations_2",
    "test_flatten_axis1", "test_slice_neg_steps", "test_gather_negative_indices", "test_unsqueeze_two_axes",
    "test_reduce_mean_keepdims_random", "test_resize_upsample_scales_linear", "test_clip_default_inbounds",
    "test_clip_example", "test_erf", "test_pow_bcast_array", "test_where_example", "test_einsum_batch_matmul",
    "test_cumsum_2d_axis_1",
]

# (test, target, variant) -> what it does today.  Measured with bench/conformance.py.
FAILING: dict[tuple[str, str, str], str] = {}  # every subset case passes or is refused with a reason


def _cases() -> list:
    params = []
    for name in SUBSET:
        model = node_tests.load_model(name)
        variant = "constants" if len(model.graph.input) > 1 else "shipped"
        for target in node_tests.TARGETS:
            marks = []
            why = FAILING.get((name, target, variant))
            if why:
                marks.append(pytest.mark.xfail(strict=True, reason=why))
            params.append(pytest.param(name, target, variant, marks=marks, id=f"{name}-{target}-{variant}"))
    return params


CASES = _cases()


@pytest.fixture(scope="module")
def verdicts(request) -> dict:
    """Every selected case run once, in two worker processes (a crash is one case's verdict)."""
    wanted = []
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if item.module is request.module and spec and {"name", "target", "variant"} <= set(spec.params):
            wanted.append({"test": spec.params["name"], "target": spec.params["target"],
                           "variant": spec.params["variant"]})
    pool = node_tests.Pool(workers=2, timeout=120, recycle=len(wanted) + 1)
    return {(r["test"], r["target"], r["variant"]): r for r in pool.run(wanted)}


def test_subset_is_in_scope():
    """Every subset test has a translator for each target: otherwise it measures nothing."""
    for name in SUBSET:
        model = node_tests.load_model(name)
        for target in node_tests.TARGETS:
            assert not node_tests.missing_ops(model, target), (name, target)


@pytest.mark.parametrize("name,target,variant", CASES)
def test_node_test_converts_or_is_refused(verdicts, name, target, variant):
    record = verdicts[(name, target, variant)]
    status = record["status"]
    if status == "refused":
        assert record["exit_code"] in (2, 3) and record["reason"], record
        return
    assert status == "pass", f"{status}: {record.get('error') or record.get('why')}"


RESULTS = node_tests.REPO / "bench" / "results" / "conformance.json"


@pytest.mark.slow
def test_whole_suite_has_no_new_failures():
    """Every in-scope node test, both targets, both variants: no internal error or wrong output
    beyond those recorded in ``bench/results/conformance.json`` (the last ``make conformance``)."""
    import json

    known = {(r["test"], r["target"], r["variant"]) for r in json.loads(RESULTS.read_text())["records"]
             if r["status"] in ("internal", "wrong")}
    tasks, _ = node_tests.plan(node_tests.test_names())
    tasks = [t for t in tasks if t["target"] != "onnxruntime"]
    records = list(node_tests.Pool(workers=2).run(tasks))
    new = [f"{r['test']} -> {r['target']} ({r['variant']}): {r['status']}: {r.get('error') or r.get('why')}"
           for r in records if r["status"] in ("internal", "wrong") and (r["test"], r["target"], r["variant"]) not in known]
    assert not new, "\n".join(new)


def test_helper_module_names_are_unique_across_tests_bench_and_models():
    """The case pool's workers are spawned processes that import ``node_tests`` by name from
    ``sys.path``; bench scripts put ``bench/`` first when a test imports them.  A module name
    in ``tests/`` that ``bench/`` or ``models/`` also holds made every worker import the wrong
    file (CI at 59b392c: 80 conformance cases "worker exit code 1")."""
    names = {}
    for folder in ("tests", "bench", "models"):
        for path in (node_tests.REPO / folder).glob("*.py"):
            names.setdefault(path.stem, []).append(folder)
    shared = {name: folders for name, folders in names.items() if len(folders) > 1}
    assert not shared, shared
