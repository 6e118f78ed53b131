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
    # Fatal only: a failing run raises with the same message, which the caller reports in
    # one line; at "error" onnxruntime also printed it in red on stderr first.
    opts.log_severity_level = 4
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


# -- the second referee -------------------------------------------------------------------
#
# onnxruntime departs from the ONNX spec in places (Resize downsampling with align_corners in
# 1.23): a conversion that matches it there is wrong.  Small graphs are therefore run by the
# spec's own reference implementation (``onnx.reference``) as well; where the two referees
# disagree, parity says so and the conversion is not called checked.  The reference is plain
# numpy (slow on convolutions), so larger graphs are not run by it, and the report says that.

SPEC_MAX_NODES = 60
SPEC_MAX_ELEMENTS = 200_000  # weights and inputs together
SPEC_MAX_CONVS = 2
# The reference is asked only about graphs with an op where onnxruntime 1.23 is known to depart
# from the spec (found by the ONNX backend node tests: Resize's align_corners downsampling, which
# Upsample shares).  It has gaps of its own elsewhere (onnx 1.19: Conv with auto_pad=VALID and
# strides gets the output shape wrong; opset-11 Softmax is run by the opset-13 rule), where a
# disagreement would not say which referee is wrong.
SPEC_CHECKED_OPS = frozenset({"Resize", "Upsample"})
# Ops whose older versions onnx.reference (1.19) runs by the newest version's rule, so it, not
# onnxruntime, departs from the spec there: Softmax before opset 13 flattens the trailing axes.
SPEC_DEPARTS = {("Softmax", 13), ("LogSoftmax", 13), ("Hardmax", 13)}  # (op, first version it gets right)


def spec_opinion(onnx_path, inputs: dict[str, np.ndarray], ort_outputs: list[np.ndarray], names: list[str],
                 atol: float, rtol: float) -> dict:
    """Run ``onnx_path`` with ``onnx.reference`` and compare it with onnxruntime's outputs.

    Returns ``{"ran": False, "why": ...}`` when the graph is too large, uses an op version the
    reference runs by a later rule, or the reference cannot run it; else ``{"ran": True,
    "agree": bool, "outputs": [comparison, ...]}``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    elements = sum(int(np.prod(t.dims)) for t in graph.initializer) + sum(v.size for v in inputs.values())
    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in graph.node)
    if convs > SPEC_MAX_CONVS:  # plain numpy loops: a U-Net's convolutions took 40 s
        return {"ran": False, "why": f"{convs} convolutions, more than the reference implementation is run on"}
    if len(graph.node) > SPEC_MAX_NODES or elements > SPEC_MAX_ELEMENTS:
        return {"ran": False, "why": f"graph larger than the reference implementation is run on "
                                     f"({len(graph.node)} nodes, {elements} elements)"}
    if not any(n.op_type in SPEC_CHECKED_OPS for n in graph.node):
        return {"ran": False, "why": "no op where onnxruntime is known to depart from the spec"}
    if any(n.op_type in ("Loop", "Scan", "If") for n in graph.node):
        return {"ran": False, "why": "control flow"}
    departs = sorted({op for op, fixed in SPEC_DEPARTS if opset < fixed and any(n.op_type == op for n in graph.node)})
    if departs:
        return {"ran": False, "why": f"onnx.reference runs {', '.join(departs)} of opset {opset} by a later rule"}
    try:
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(onnx_path))
        wanted = {i.name for i in model.graph.input}
        outputs = ReferenceEvaluator(model).run(None, {k: v for k, v in inputs.items() if k in wanted})
    except Exception as exc:  # the reference does not implement everything onnxruntime runs
        return {"ran": False, "why": f"onnx.reference cannot run it: {type(exc).__name__}: {str(exc)[:200]}"}
    comparisons = [compare(n, np.asarray(s), np.asarray(o), atol, rtol).as_dict()
                   for n, s, o in zip(names, outputs, ort_outputs)]
    return {"ran": True, "agree": all(c["passed"] for c in comparisons), "outputs": comparisons}
