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
from .referee import compare, laid_out_inputs, non_finite, run_onnx
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


def run_source(source: Source, inputs: dict[str, np.ndarray], onnx_path: Path | None = None) -> list[np.ndarray]:
    """The source model's outputs on ``inputs``; BadInput (exit 2) when any is not finite.

    Parity compares NaN with NaN as equal, so a source that gives NaN (or an infinity) on
    the parity inputs would let a wrong conversion pass there: refuse to call it proven.
    """
    outputs = _run_source(source, inputs, onnx_path)
    names = list(source.output_names) + [f"#{i}" for i in range(len(source.output_names), len(outputs))]
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
        xs = [inputs[s.name] for s in source.inputs]
        with native_stderr_to_log():  # XLA announces itself on fd 2 (grouped convolutions run jit-compiled)
            out = source.obj(xs if len(xs) > 1 else xs[0], training=False)
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
    model = load_generated(Path(out_dir) / "model.py")
    if target == "torch":
        import torch

        with torch.no_grad():
            out = model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in ordered_inputs])
    else:
        with native_stderr_to_log():  # XLA announces itself on fd 2 (grouped convolutions run jit-compiled)
            out = model(ordered_inputs if len(ordered_inputs) > 1 else ordered_inputs[0], training=False)
    return [_to_numpy(o) for o in _as_list(out)]


def check(source: Source, inputs: dict[str, np.ndarray], source_onnx: Path, normalized_onnx: Path,
          out_dir: Path, target: str, interface: dict, input_order: list[str], output_names: list[str],
          atol: float, rtol: float, reference: list[np.ndarray] | None = None) -> dict:
    """Run all four executors and compare; return the ``parity`` section of the report.

    ``reference``: the source model's outputs when they were taken earlier (``run_source``).
    """
    reference = run_source(source, inputs, source_onnx) if reference is None else reference
    exported = run_onnx(str(source_onnx), inputs)
    feed = laid_out_inputs(inputs, interface)
    normalized = run_onnx(str(normalized_onnx), feed)
    converted = run_generated(out_dir, target, [feed[name] for name in input_order])

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
    passed = not problems and all(c["passed"] for cs in stages.values() for c in cs)
    return {
        "passed": passed,
        "atol": atol,
        "rtol": rtol,
        "outputs": stages["converted_vs_source"],
        "stages": stages,
        "problems": problems,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
    }
