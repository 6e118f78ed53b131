"""Stage 4: parity.  The same seeded inputs go through

1. the source model (PyTorch, Keras, TensorFlow, or onnxruntime for an ONNX file),
2. onnxruntime on ``source.onnx``,
3. onnxruntime on ``normalized.onnx``,
4. the generated ``model.py`` — loaded from disk exactly as a user would.

Each later stage is compared with the one it must equal; the conversion passes
only if every comparison is within tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .quiet import native_stderr_to_log
from .errors import BadInput
from .referee import spec_opinion, compare, laid_out_inputs, non_finite, run_onnx, session
from .sources import Source, import_file


def _as_list(out, sort_dicts: bool = True) -> list:
    """Flatten outputs in the order the exporter does: tf.nest sorts dict keys, torch's
    pytree keeps their insertion order (``sort_dicts=False``)."""
    if isinstance(out, dict):
        return [v for k in (sorted(out) if sort_dicts else out) for v in _as_list(out[k], sort_dicts)]
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat.extend(_as_list(o, sort_dicts))
        return flat
    return [out]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


def _output_names(source: Source, outputs: list) -> list[str]:
    """The source's output names for ``outputs``, ``#i`` past the ones it names."""
    return list(source.output_names) + [f"#{i}" for i in range(len(source.output_names), len(outputs))]


class SourceFails(BadInput):
    """The source model raised on the inputs it was called with (the cause is chained)."""


def run_source(source: Source, inputs: dict[str, np.ndarray], onnx_path: Path | None = None) -> list[np.ndarray]:
    """The source model's outputs on ``inputs``; BadInput (exit 2) when any is not finite.

    Parity compares NaN with NaN as equal, so a source that gives NaN (or an infinity) on
    the parity inputs would let a wrong conversion pass there: refuse to call it proven.
    A source that raises on them (a Keras model traced with open sizes that cannot add its
    branches at these) is bad input too: the example sizes are the user's to change.
    """
    try:
        outputs = _run_source(source, inputs, onnx_path)
    except Exception as exc:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())
        raise SourceFails(f"the source model fails on the example inputs ({shapes}): {type(exc).__name__}: "
                          f"{_gist(exc)}; choose other example sizes (--input, --dim)") from exc
    names = _output_names(source, outputs)
    reasons = [r for r in (non_finite(n, o) for n, o in zip(names, outputs)) if r]
    if reasons:
        raise BadInput(f"the source model's {'; '.join(reasons)} on the parity inputs, so parity cannot "
                       "prove the conversion; fix the model, or try other inputs (--seed, --input)")
    return outputs


def _run_source(source: Source, inputs: dict[str, np.ndarray], onnx_path: Path | None = None) -> list[np.ndarray]:
    if source.framework == "torch":
        from .quiet import import_torch

        torch = import_torch()
        args = [torch.from_numpy(inputs[s.name]) for s in source.inputs]
        with torch.no_grad():
            out = source.obj(*args)
        return [_to_numpy(o) for o in _as_list(out, sort_dicts=False)]
    if source.framework == "keras":
        from .sources import keras_call_inputs

        xs = [inputs[s.name] for s in source.inputs]
        with native_stderr_to_log():  # XLA announces itself on fd 2 (grouped convolutions run jit-compiled)
            out = source.obj(keras_call_inputs(source.obj, [s.name for s in source.inputs], xs), training=False)
        return [_to_numpy(o) for o in _as_list(out)]
    if source.framework == "tf":
        _, fn = source.obj
        import tensorflow as tf

        out = fn(**{s.name: tf.constant(inputs[s.name]) for s in source.inputs})
        return [_to_numpy(out[k]) for k in source.output_names]
    return run_onnx(str(onnx_path or source.obj), inputs)


def load_generated(path: Path):
    """Import ``path`` (a generated model.py) under a fresh module name and call its load()."""
    return import_file(path, "_pipeline_converted").load()


def run_generated(out_dir: Path, target: str, ordered_inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _run_loaded(load_generated(Path(out_dir) / "model.py"), target, ordered_inputs)


def check(source: Source, inputs: dict[str, np.ndarray], source_onnx: Path, normalized_onnx: Path,
          out_dir: Path, target: str, interface: dict, input_order: list[str], output_names: list[str],
          atol: float, rtol: float, reference: list[np.ndarray] | None = None, generated=None) -> dict:
    """Run all four executors and compare; return the ``parity`` section of the report.

    ``reference``: the source model's outputs when they were taken earlier (``run_source``).
    ``generated``: the generated model, loaded (:func:`load_generated`) for this check and
    :func:`check_shapes` both; loaded here when not given.
    """
    reference = run_source(source, inputs, source_onnx) if reference is None else reference
    exported = run_onnx(str(source_onnx), inputs)
    feed = laid_out_inputs(inputs, interface)
    normalized = run_onnx(str(normalized_onnx), feed)
    ordered = [feed[name] for name in input_order]
    converted = run_generated(out_dir, target, ordered) if generated is None else _run_loaded(generated, target, ordered)

    def laid_out(arrays):
        return [a.transpose(interface["outputs"][n]) if n in interface["outputs"] else a
                for a, n in zip(arrays, output_names)]

    stages = {}
    problems = []
    for label, ref, got in (
        ("onnx_vs_source", reference, exported),
        ("normalized_vs_onnx", laid_out(exported), normalized),
        ("converted_vs_source", laid_out(reference), converted),
    ):
        if len(ref) != len(got):
            problems.append(f"{label}: {len(got)} outputs, expected {len(ref)}")
            stages[label] = []
            continue
        stages[label] = [compare(n, r, g, atol, rtol).as_dict() for n, r, g in zip(output_names, ref, got)]
    spec = spec_opinion(source_onnx, inputs, exported, output_names, atol, rtol)
    if spec["ran"] and not spec["agree"]:
        worst = max(spec["outputs"], key=lambda c: c["max_abs_err"])
        problems.append(f"the referees disagree: onnxruntime and the ONNX spec's reference implementation differ on "
                        f"'{worst['name']}' by {worst['max_abs_err']:.3g}, so this conversion is not called checked")
    passed = not problems and all(c["passed"] for cs in stages.values() for c in cs)
    return {
        "passed": passed,
        "spec_referee": spec,
        "atol": atol,
        "rtol": rtol,
        "outputs": stages["converted_vs_source"],
        "stages": stages,
        "problems": problems,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
    }


# -- parity at several shapes ----------------------------------------------------------------
#
# A conversion with symbolic dimensions must be right at every size the source accepts, not
# only at the example it was exported with.  Besides the example sizes, it is checked at
# further size sets: every symbol at 1, every symbol at an odd size above its example (odd:
# strided spatial dimensions round there), and, when the source refuses one of those (a
# spatial size of 1 is often too small), each symbol at 1 on its own.  Sets the source
# model itself refuses are recorded as skipped, with its words.

EXTRA_SIZE_SETS = 2  # how many size sets besides the example ones a symbolic conversion is checked at


def candidate_size_sets(specs, constraints: dict[str, dict] | None = None) -> list[dict[str, int]]:
    """Size sets to try besides the examples, in order of preference; empty when nothing varies.

    ``constraints`` (``Source.constraints``: what the exporter proved a symbol's sizes must
    satisfy, ``multiple_of * n + offset >= min``, and ``<= max`` where given) moves each candidate
    size to the nearest size at or above it that the traced code holds for (at most ``max``)."""
    examples = {d.name: d.example for s in specs for d in s.symbols}
    if not examples:
        return []
    constraints = constraints or {}

    def fit(name: str, v: int) -> int:
        c = constraints.get(name)
        if not c:
            return v
        k, off = c["multiple_of"], c["offset"]
        v = max(v, c["min"])
        v += (-(v - off)) % k
        if c.get("max") is not None and v > c["max"]:  # the largest allowed size instead
            v = c["max"] - (c["max"] - off) % k
        return v

    def odd_above(e: int) -> int:
        return e + 1 if e % 2 == 0 else e + 2

    def odd_other(e: int) -> int:
        """An odd size other than ``e``: above a small example, about half of a large one
        (a batch of 256 is checked at 129, not 257: as telling, at half the cost)."""
        return odd_above(e) if e < 16 else (e // 2) | 1

    candidates = [{k: 1 for k in examples}, {k: odd_other(e) for k, e in examples.items()}]
    if len(examples) > 1:
        candidates += [{**examples, k: 1} for k in examples]
        candidates += [{**examples, k: odd_other(e)} for k, e in examples.items()]
    candidates.append({k: odd_above(e) for k, e in examples.items()})  # half was too small for the source
    candidates.append({k: 2 * e + 2 for k, e in examples.items()})  # when an example is 1, "all at 1" is no new set
    out = []
    for c in candidates:
        c = {k: fit(k, v) for k, v in c.items()}
        if c != examples and c not in out:
            out.append(c)
    return out


def reference_sets(source: Source, seed: int, onnx_path: Path | None = None,
                   wanted: int = EXTRA_SIZE_SETS) -> list[dict]:
    """Run the source model at further size sets (see above) while it is still loaded.

    Each entry: ``sizes``, and either ``inputs`` + ``reference`` (its outputs) or ``skipped``
    (why the source refused that set, or that an output is empty there).  Stops after
    ``wanted`` sets the source ran."""
    from .spec import make_inputs

    sets, ran = [], 0
    for sizes in candidate_size_sets(source.inputs, source.constraints):
        if ran >= wanted:
            break
        specs = [s.at(sizes) for s in source.inputs]
        inputs = make_inputs(specs, seed)
        try:
            reference = run_source(source, inputs, onnx_path)
        except Exception as exc:  # the source's own limit (e.g. a size too small to pool), not ours
            cause = exc.__cause__ if isinstance(exc, SourceFails) else exc
            first = _gist(cause)[:200]
            sets.append({"sizes": sizes, "skipped": f"the source model refuses these sizes: {type(cause).__name__}: {first}"})
            continue
        names = _output_names(source, reference)
        empty = [f"{name} {tuple(r.shape)}" for name, r in zip(names, reference) if r.size == 0]
        if empty:  # nothing to compare, and frameworks part ways there (PyTorch's pooling refuses
            # the output size 0 Keras gives): not a size the conversion can be proven at
            sets.append({"sizes": sizes, "skipped": f"the source model gives an empty output at these sizes: "
                                                    f"{', '.join(empty)}"})
            continue
        sets.append({"sizes": sizes, "inputs": inputs, "reference": reference})
        ran += 1
    return sets


def check_shapes(sets: list[dict], source_onnx: Path, normalized_onnx: Path, out_dir: Path, target: str,
                 interface: dict, input_order: list[str], output_names: list[str], atol: float,
                 rtol: float, generated=None) -> list[dict]:
    """Compare source vs onnxruntime(source.onnx) vs onnxruntime(normalized.onnx) vs the
    generated model at each size set of :func:`reference_sets`; one entry per set for
    ``report["parity"]["shapes"]``.

    Each executor is made once and run at every set in turn: one onnxruntime session per
    file, alive one at a time, and the generated model (``generated`` when :func:`check`
    loaded it already).  Made per set, a 100 M-parameter model's peak memory grew from 1.6x
    to 3.3x its weights (``bench/memory.py``).  An executor that raises at a set (a size
    baked into the graph or the code) fails that set, with its message."""
    ran = [entry for entry in sets if "skipped" not in entry]
    feeds = [laid_out_inputs(entry["inputs"], interface) for entry in ran]

    def converted():
        model = generated if generated is not None else load_generated(Path(out_dir) / "model.py")
        return lambda ordered: _run_loaded(model, target, ordered)

    outputs = {"exported": _each(lambda: _onnx_runner(source_onnx), [e["inputs"] for e in ran]),
               "normalized": _each(lambda: _onnx_runner(normalized_onnx), feeds),
               "converted": _each(converted, [[feed[n] for n in input_order] for feed in feeds])}
    results, done = [], iter(range(len(ran)))
    for entry in sets:
        if "skipped" in entry:
            results.append({"sizes": entry["sizes"], "passed": None, "skipped": entry["skipped"]})
            continue
        i = next(done)
        inputs, reference = entry["inputs"], entry["reference"]
        got, errors = {}, []
        for label in ("exported", "normalized", "converted"):
            value = outputs[label][i]
            if isinstance(value, Exception):
                first = (str(value).strip().splitlines() or [""])[0][:300]
                errors.append(f"{label} raised {type(value).__name__}: {first}")
            else:
                got[label] = value

        stages = {}
        for label, ref, key in (("onnx_vs_source", reference, "exported"),
                                ("normalized_vs_onnx", got.get("exported"), "normalized"),
                                ("converted_vs_source", reference, "converted")):
            if key not in got or ref is None:
                stages[label] = []
                continue
            r = _laid_out(ref, interface, output_names) if label != "onnx_vs_source" else ref
            g = got[key]
            if len(r) != len(g):
                errors.append(f"{label}: {len(g)} outputs, expected {len(r)}")
                stages[label] = []
                continue
            stages[label] = [compare(n, a, b, atol, rtol).as_dict() for n, a, b in zip(output_names, r, g)]
        passed = not errors and all(c["passed"] for cs in stages.values() for c in cs)
        results.append({"sizes": entry["sizes"], "passed": passed, "stages": stages, "problems": errors,
                        "inputs": {k: list(v.shape) for k, v in inputs.items()}})
    return results


def _onnx_runner(path: Path):
    """A function running ``path`` under onnxruntime (one session) on a dict of inputs."""
    sess = session(str(path))
    names = {i.name for i in sess.get_inputs()}
    return lambda inputs: _run_session(sess, {k: v for k, v in inputs.items() if k in names})


def _run_session(sess, feed: dict) -> list[np.ndarray]:
    return sess.run(None, feed)


def _each(make, feeds: list) -> list:
    """``make()``'s executor run on each feed in turn: its outputs, or the exception it (or
    ``make`` itself) raised there.  The executor is dropped before the next one is made."""
    if not feeds:
        return []
    try:
        run = make()
    except Exception as exc:
        return [exc] * len(feeds)
    out = []
    for feed in feeds:
        try:
            out.append(run(feed))
        except Exception as exc:
            out.append(exc)
    return out


def _laid_out(arrays, interface: dict, output_names: list[str]) -> list[np.ndarray]:
    """Source-layout outputs permuted into the converted model's interface layout."""
    return [a.transpose(interface["outputs"][n]) if n in interface["outputs"] else a
            for a, n in zip(arrays, output_names)]


def _run_loaded(model, target: str, ordered_inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Call an already loaded generated model (see :func:`run_generated`)."""
    if target == "torch":
        import torch

        with torch.no_grad():
            out = model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in ordered_inputs])
    else:
        with native_stderr_to_log():
            out = model(ordered_inputs if len(ordered_inputs) > 1 else ordered_inputs[0], training=False)
    return [_to_numpy(o) for o in _as_list(out)]


def first_failing_set(shapes: list[dict]) -> dict | None:
    """The first size set that failed (``passed`` False; skipped sets are None), else None."""
    return next((s for s in shapes if s.get("passed") is False), None)


def describe_sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


# -- parity on the user's own inputs (--sample) ------------------------------------------------

def sample_reference(source: Source, arrays: dict[str, np.ndarray], path, onnx_path: Path | None = None) -> list:
    """The source model's outputs on the ``--sample`` arrays (taken while it is loaded).

    The source refusing the sample (a token id past its vocabulary) or giving NaN on it is
    bad input naming the file: parity cannot prove anything there."""
    try:
        outputs = _run_source(source, arrays, onnx_path)
    except Exception as exc:
        raise BadInput(f"--sample {path}: the source model refuses it: {type(exc).__name__}: {_gist(exc)}") from exc
    names = _output_names(source, outputs)
    reasons = [r for r in (non_finite(n, o) for n, o in zip(names, outputs)) if r]
    if reasons:
        raise BadInput(f"--sample {path}: the source model's {'; '.join(reasons)} on it, so parity cannot "
                       "check the conversion there")
    return outputs


def check_sample(path, arrays: dict[str, np.ndarray], sizes: dict[str, int], reference: list,
                 source_onnx: Path, normalized_onnx: Path, out_dir: Path, target: str, interface: dict,
                 input_order: list[str], output_names: list[str], atol: float, rtol: float,
                 generated=None) -> dict:
    """``report["parity"]["samples"]``: the four executors compared on the ``--sample`` arrays,
    exactly as at a size set (see :func:`check_shapes`), with the file it came from."""
    entry = {"sizes": sizes, "inputs": arrays, "reference": reference}
    result = check_shapes([entry], source_onnx, normalized_onnx, out_dir, target, interface, input_order,
                          output_names, atol, rtol, generated)[0]
    result["inputs"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}
    return {"file": str(path), **result}


def _gist(exc: Exception) -> str:
    """The line of an exception that says what went wrong: Keras opens with "Exception
    encountered when calling Embedding.call()." and says why on the next line."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        lines = [f"{lines[0]} {lines[1]}"]
    return (lines or [""])[0][:300]
