"""An independent oracle for the correctness tests: the source framework itself.

``pipeline``'s own verdict (``report.json["parity"]``) is computed by the code under
test; a test that only reads it asks the pipeline whether the pipeline is right.
This helper shares no code with ``pipeline``:

- it imports the generated ``model.py`` from the output folder by path (``importlib``)
  and calls its ``load()``, as a user would;
- it runs the SOURCE model itself — the ``nn.Module`` or ``keras.Model`` object the test
  built (for a test that starts from an ``.onnx`` graph it wrote, onnxruntime on that
  graph, the ONNX spec's reference implementation) — never ``source.onnx`` and never
  the report;
- on fresh inputs drawn from its own seeded generator (not the pipeline's parity
  inputs, which come from ``pipeline.spec.make_inputs``);
- and judges with its own tolerance rule written here (not ``pipeline.referee.compare``).

``report.json`` is read for one thing only: ``interface``, the permutation per input and
output that ``--layout target`` applies (a channels-first source input is fed to the
converted model channels-last).  The output permutations are keyed by output name, so
the names come from ``report["parity"]["outputs"]`` in order; nothing else of the report
is used.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ATOL = RTOL = 1e-4  # the README's default tolerance, restated here on purpose
ORACLE_SEED = 20_251_203  # not the pipeline's parity seed (0)


@dataclass
class Verdict:
    passed: bool
    max_abs_err: float
    max_rel_err: float  # max|got - ref| / max|ref|, as the README defines it
    detail: list[str]


# -- inputs ----------------------------------------------------------------------

def fresh_inputs(specs: dict, seed: int = ORACLE_SEED, int_range: tuple[int, int] = (0, 8)) -> dict[str, np.ndarray]:
    """Seeded inputs for ``{name: shape}`` or ``{name: (shape, dtype)}``.

    Floats are standard normal; integers uniform in ``int_range`` (ids, masks: the caller
    knows what its model takes).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in specs.items():
        shape, dtype = (spec[0], spec[1]) if len(spec) == 2 and isinstance(spec[1], str) else (spec, "float32")
        if np.dtype(dtype).kind in "iu":
            out[name] = rng.integers(*int_range, size=tuple(shape)).astype(dtype)
        elif np.dtype(dtype).kind == "b":
            out[name] = rng.integers(0, 2, size=tuple(shape)).astype(bool)
        else:
            out[name] = rng.standard_normal(tuple(shape)).astype(dtype)
    return out


def keras_specs(model) -> dict:
    """``{name: (shape, dtype)}`` of a functional keras.Model with fixed batch size."""
    return {t.name: (tuple(t.shape), str(t.dtype)) for t in model.inputs}


# -- running each side -------------------------------------------------------------------

def _flatten(out, sort_dicts: bool) -> list:
    if isinstance(out, dict):
        return [v for k in (sorted(out) if sort_dicts else out) for v in _flatten(out[k], sort_dicts)]
    if isinstance(out, (list, tuple)):
        return [v for o in out for v in _flatten(o, sort_dicts)]
    return [out]


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def run_torch(module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    names = [p for p in inspect.signature(module.forward).parameters if p in inputs] or list(inputs)
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names])
    return [_numpy(o) for o in _flatten(out, sort_dicts=False)]


def run_keras(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    names = [t.name for t in model.inputs]
    xs = [inputs[n] for n in names] if all(n in inputs for n in names) else list(inputs.values())
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    return [_numpy(o) for o in _flatten(out, sort_dicts=True)]


def run_onnx_file(path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on a graph the TEST wrote (the reference for ONNX-built cases)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in inputs.items() if k in names})


def run_source(source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    if isinstance(source, (str, Path)):
        return run_onnx_file(source, inputs)
    if hasattr(source, "state_dict") and hasattr(source, "forward"):
        return run_torch(source, inputs)
    return run_keras(source, inputs)


def load_generated(out_dir):
    """Import ``out_dir/model.py`` under a fresh module name and call its ``load()``."""
    path = Path(out_dir) / "model.py"
    name = f"_oracle_generated_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module.load()


def run_generated(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return run_torch(model, inputs) if hasattr(model, "state_dict") else run_keras(model, inputs)


# -- the rule ---------------------------------------------------------------------------

def judge(ref: list[np.ndarray], got: list[np.ndarray], atol: float = ATOL, rtol: float = RTOL) -> Verdict:
    """Every output: same count, shape and dtype; reference finite; |got-ref| <= atol + rtol*|ref|."""
    detail = []
    if len(ref) != len(got):
        return Verdict(False, float("inf"), float("inf"), [f"{len(got)} outputs, expected {len(ref)}"])
    worst_abs = worst_rel = 0.0
    passed = True
    for i, (r, g) in enumerate(zip(ref, got)):
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape or r.dtype != g.dtype:
            detail.append(f"output {i}: {g.dtype}{list(g.shape)}, expected {r.dtype}{list(r.shape)}")
            passed, worst_abs, worst_rel = False, float("inf"), float("inf")
            continue
        if r.size == 0:
            continue
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        if not np.all(np.isfinite(r64)):
            detail.append(f"output {i}: the source gives non-finite values: the check proves nothing")
            passed = False
            continue
        err = np.abs(g64 - r64)
        err = np.where(np.isnan(err), np.inf, err)
        ok = err <= atol + rtol * np.abs(r64)
        abs_err = float(err.max())
        scale = float(np.abs(r64).max())
        rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
        if not ok.all():
            passed = False
            detail.append(f"output {i}: {int((~ok).sum())} of {r.size} elements off, max abs err {abs_err:.3g}")
    return Verdict(passed, worst_abs, worst_rel, detail)


def _interface(out_dir) -> tuple[dict, dict]:
    """Input and output permutations from ``report.json["interface"]`` (``--layout target``)."""
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        return {}, {}
    report = json.loads(path.read_text())
    interface = report.get("interface") or {}
    in_perms = interface.get("inputs", {})
    out_perms = interface.get("outputs", {})
    names = [o["name"] for o in report.get("parity", {}).get("outputs", [])]
    return in_perms, {i: out_perms[n] for i, n in enumerate(names) if n in out_perms}


def verify(out_dir, source, specs: dict | None = None, inputs: dict[str, np.ndarray] | None = None,
           atol: float = ATOL, rtol: float = RTOL, seed: int = ORACLE_SEED,
           int_range: tuple[int, int] = (0, 8)) -> Verdict:
    """Run the source and the generated model on fresh inputs and judge them.

    ``source``: the nn.Module / keras.Model the test converted (or the path of the .onnx
    graph the test wrote).  Inputs: ``inputs`` as given, else drawn from ``specs``
    (``{name: shape}`` or ``{name: (shape, dtype)}``; a keras.Model's own when omitted).
    """
    if inputs is None:
        if specs is None:
            specs = keras_specs(source)
        inputs = fresh_inputs(specs, seed, int_range)
    ref = run_source(source, inputs)
    in_perms, out_perms = _interface(out_dir)
    feed = {k: (np.ascontiguousarray(v.transpose(in_perms[k])) if k in in_perms else v) for k, v in inputs.items()}
    ref = [r.transpose(out_perms[i]) if i in out_perms else r for i, r in enumerate(ref)]
    got = run_generated(load_generated(out_dir), feed)
    return judge(ref, got, atol, rtol)


def assert_matches(out_dir, source, **kwargs) -> Verdict:
    """``verify`` and fail the test with the details when the two disagree."""
    verdict = verify(out_dir, source, **kwargs)
    assert verdict.passed, f"independent oracle: {verdict.detail}"
    return verdict
