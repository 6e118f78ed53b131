"""onnxruntime as the neutral referee, and the one definition of "close enough".

``passed`` follows numpy's ``allclose``: every element satisfies
``|got - ref| <= atol + rtol * |ref|``.  ``max_rel_err`` is reported as
``max|got - ref| / max|ref|`` (the error relative to the output's scale), which
stays meaningful when single reference elements are near zero.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Comparison:
    name: str
    max_abs_err: float
    max_rel_err: float
    passed: bool
    shape: list[int]
    reason: str = ""  # why it failed when the numbers alone do not say (shape, dtype)

    def as_dict(self) -> dict:
        return asdict(self)


def _failed(name: str, ref: np.ndarray, got: np.ndarray, reason: str) -> Comparison:
    return Comparison(name, float("inf"), float("inf"), False, list(got.shape), reason)


def compare(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Comparison:
    """Judge ``got`` against ``ref``: same shape, same dtype, every element within tolerance.

    A dtype difference fails even when the values agree (an int32 output is not a float32
    one: a user's code downstream sees the difference).  Non-finite elements pass only
    where both sides hold the very same value (NaN at the same place, or the same
    infinity); whether a reference full of NaN proves anything is the caller's question
    (``non_finite``).
    """
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        return _failed(name, ref, got, f"shape {list(got.shape)}, expected {list(ref.shape)}")
    if ref.dtype != got.dtype:
        return _failed(name, ref, got, f"dtype {got.dtype}, expected {ref.dtype}")
    if ref.dtype == np.bool_:
        bad = int(np.count_nonzero(ref != got))
        return Comparison(name, float(bad), float(bad), bad == 0, list(ref.shape))
    if ref.size == 0:
        return Comparison(name, 0.0, 0.0, True, list(ref.shape))
    work = np.result_type(ref.dtype, got.dtype, np.float32)
    r = ref.astype(work, copy=False)
    g = got.astype(work, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is handled below
        diff = np.abs(g - r)
    max_abs = float(diff.max())
    if not np.isfinite(max_abs):  # slow path only when something is inf or nan
        same = (r == g) | (np.isnan(r) & np.isnan(g))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        max_abs = float(diff.max())
        r = np.where(np.isfinite(r), r, 0.0)
    abs_ref = np.abs(r)
    scale = float(abs_ref.max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    abs_ref *= rtol
    abs_ref += atol
    passed = bool(np.all(diff <= abs_ref))
    return Comparison(name, max_abs, max_rel, passed, list(ref.shape))


def non_finite(name: str, ref: np.ndarray) -> str | None:
    """Why a reference output proves nothing, or None: it holds NaN or an infinity.

    ``compare`` lets NaN match NaN, so a source that gives NaN on the parity inputs would
    pass against any converted model that also gives NaN there; the verdict must say so
    instead of passing silently.
    """
    ref = np.asarray(ref)
    if ref.dtype.kind not in "fc" or ref.size == 0:
        return None
    finite = np.isfinite(ref)
    if finite.all():
        return None
    nan = int(np.count_nonzero(np.isnan(ref)))
    inf = int(ref.size - np.count_nonzero(finite) - nan)
    return f"output '{name}' has {nan} NaN and {inf} infinite values of {ref.size}"


def laid_out_inputs(inputs: dict[str, np.ndarray], interface: dict) -> dict[str, np.ndarray]:
    """The inputs permuted into the converted model's interface layout (``report["interface"]``)."""
    perms = interface.get("inputs", {})
    return {k: (v.transpose(perms[k]) if k in perms else v) for k, v in inputs.items()}


def session(model_bytes_or_path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Run the graph as written: the referee must not rewrite what it judges.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


BIG_MODEL_BYTES = 64 << 20  # above this, an in-memory model reaches onnxruntime through a temporary file


def ort_message(exc: BaseException, limit: int = 300) -> str:
    """The first line of an onnxruntime error without its C++ location and signature.

    ``[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/.../model.cc:181 onnxruntime::Model::Model(...)
    Unsupported model IR version: 13, max supported IR version: 11`` reads as
    ``[ONNXRuntimeError] : 1 : FAIL : Unsupported model IR version: 13, max supported IR version: 11``.
    """
    first = (str(exc).strip().splitlines() or [""])[0]
    return re.sub(r"/onnxruntime_src/\S+ [\w:~<>]+\([^)]*\) ", "", first)[:limit]


def run_onnx(model, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run an ONNX model (path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``)."""
    if hasattr(model, "graph") and hasattr(model.graph, "initializers"):  # onnx_ir.Model
        from .onnx_io import external_copy, initializer_bytes

        if initializer_bytes(model) > BIG_MODEL_BYTES:  # bytes would cost ~4x the weights; a path ~1x
            with external_copy(model) as path:
                return run_onnx(path, inputs, outputs)
        import onnx_ir as ir

        model = ir.to_proto(model).SerializeToString()
    elif hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, str)):
        model = str(model)
    sess = session(model)
    names = {i.name for i in sess.get_inputs()}
    feed = {k: v for k, v in inputs.items() if k in names}
    return sess.run(outputs, feed)
