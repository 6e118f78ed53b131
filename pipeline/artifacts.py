"""Deployable artifacts (``--export``), each checked like the model itself.

A conversion ends with ``model.py`` + weights; people then ship it: a Keras result as a
TensorFlow Lite file or a SavedModel, a PyTorch result as a ``torch.export`` program or
TorchScript.  Each artifact is written into the output folder and run *as it will be
deployed* (the TFLite interpreter, ``tf.saved_model.load``, ``torch.export.load``,
``torch.jit.load``) on the same parity inputs as the model, and compared with the source
model's outputs.  A failing artifact fails the conversion (exit 1) without stopping the
model's own files from being written.

=====================  ============  =====================  ==========================================
``--export``           target        file                   checked with
=====================  ============  =====================  ==========================================
``tflite[:fp32]``      keras         ``model.tflite``       LiteRT interpreter, ``--atol``/``--rtol``
``tflite:fp16``        keras         ``model_fp16.tflite``  LiteRT interpreter, ``max_rel_err <= 1e-2``
``tflite:int8``        keras         ``model_int8.tflite``  LiteRT interpreter, ``max_rel_err <= 0.1``
``saved_model``        keras         ``saved_model/``       ``tf.saved_model.load``, ``--atol``/``--rtol``
``pt2``                torch         ``model.pt2``          ``torch.export.load``, ``--atol``/``--rtol``
``torchscript``        torch         ``model.torchscript.pt``  ``torch.jit.load``, ``--atol``/``--rtol``
=====================  ============  =====================  ==========================================

A symbol of the conversion (``--input x=B=2,3,32,32``) stays a free size in the artifact:
``None`` in the SavedModel signature (and ``-1`` in the TFLite ``shape_signature``), a
``torch.export.Dim`` in the ``.pt2``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import BadInput
from .spec import InputSpec, Symbol

TARGET_OF = {"tflite": "keras", "saved_model": "keras", "pt2": "torch", "torchscript": "torch"}
TFLITE_MODES = ("fp32", "fp16", "int8")
FILES = {"tflite:fp32": "model.tflite", "tflite:fp16": "model_fp16.tflite", "tflite:int8": "model_int8.tflite",
         "saved_model": "saved_model", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
# Quantized artifacts cannot meet the float tolerance: each is held to a bound on
# max|artifact - source| / max|source| (the report's max_rel_err), stated in its row.
QUANTIZED_MAX_REL_ERR = {"tflite:fp16": 1e-2, "tflite:int8": 0.1}
CHILD_TIMEOUT_S = 1800  # one TFLite file run on every parity input, in its own process
USAGE = "expected tflite, tflite:fp32, tflite:fp16, tflite:int8, saved_model, pt2 or torchscript"


# ---------------------------------------------------------------- flags and calibration data


def parse_export(text: str) -> str:
    """``--export`` value -> its canonical name (``tflite`` is ``tflite:fp32``); BadInput otherwise."""
    kind, _, mode = str(text).strip().partition(":")
    if kind not in TARGET_OF or (mode and (kind != "tflite" or mode not in TFLITE_MODES)):
        raise BadInput(f"--export {text}: {USAGE}")
    return f"tflite:{mode or 'fp32'}" if kind == "tflite" else kind


def plan(exports: list[str], target: str, calibration: str | None) -> list[str]:
    """The exports to build (canonical, deduplicated, in the order given), checked against the
    target before any work: a ``tflite`` from a PyTorch result, an ``int8`` without
    calibration data or calibration data nothing uses is bad input (exit 2)."""
    names = list(dict.fromkeys(parse_export(e) for e in exports))
    for name in names:
        kind = name.partition(":")[0]
        if TARGET_OF[kind] != target:
            able = ", ".join(k for k, t in TARGET_OF.items() if t == target)
            raise BadInput(f"--export {name}: a {target} result cannot be exported as {kind} "
                           f"(a {target} result exports {able}; convert with --to {TARGET_OF[kind]} for {kind})")
    if "tflite:int8" in names and not calibration:
        raise BadInput("--export tflite:int8 needs calibration data: --calibration FILE.npz (or a folder of NAME.npy), "
                       "arrays named by input")
    if calibration and "tflite:int8" not in names:
        raise BadInput("--calibration is used only by --export tflite:int8")
    return names


def load_calibration(path: str, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Calibration batches from ``FILE.npz`` or a folder of ``NAME.npy``, in the source layout.

    Each array is named by its input.  An array of the input's rank is one batch; one of
    rank + 1 is a stack of batches along its first axis.  Static dimensions must match the
    input's, symbolic ones may take any size; dtype must be the input's; every value finite.
    Anything else is bad input naming the array."""
    arrays = _read_arrays(Path(path))
    known = {s.name for s in specs}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise BadInput(f"--calibration {path}: array '{unknown[0]}' names no input of the model "
                       f"(its inputs: {', '.join(sorted(known))})")
    stacks = {}
    for spec in specs:
        if spec.name not in arrays:
            raise BadInput(f"--calibration {path}: no array '{spec.name}' (the model's inputs: "
                           f"{', '.join(s.name for s in specs)})")
        stacks[spec.name] = _batches(path, spec, arrays[spec.name])
    counts = {len(v) for v in stacks.values()}
    if len(counts) > 1:
        raise BadInput(f"--calibration {path}: the arrays hold different numbers of batches "
                       f"({', '.join(f'{k}: {len(v)}' for k, v in stacks.items())})")
    n = counts.pop()
    return [{k: v[i] for k, v in stacks.items()} for i in range(n)]


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise BadInput(f"--calibration {path}: the folder holds no .npy file")
        try:
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
        except Exception as exc:
            raise BadInput(f"--calibration {path}: cannot read a .npy file: {type(exc).__name__}: {exc}") from exc
    if not path.is_file():
        raise BadInput(f"--calibration {path}: no such file or folder")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("not an .npz archive of named arrays")
            return {k: data[k] for k in data.files}
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(f"--calibration {path}: cannot read it as .npz: {type(exc).__name__}: {exc}") from exc


def _batches(path, spec: InputSpec, a: np.ndarray) -> list[np.ndarray]:
    """``a`` as a list of batches of ``spec``'s rank, checked (see :func:`load_calibration`)."""
    where = f"--calibration {path}: array '{spec.name}'"
    want = "(" + ", ".join(str(d.name) if isinstance(d, Symbol) else str(d) for d in spec.dims) + ")"
    rank = len(spec.dims)
    if a.ndim not in (rank, rank + 1):
        raise BadInput(f"{where} has rank {a.ndim}; input '{spec.name}' is {want}: give one batch of rank {rank} "
                       f"or a stack of batches of rank {rank + 1}")
    if a.dtype != np.dtype(spec.dtype):
        raise BadInput(f"{where} is {a.dtype}, input '{spec.name}' is {spec.dtype} (cast it: .astype('{spec.dtype}'))")
    batches = [a] if a.ndim == rank else list(a)
    if not batches:
        raise BadInput(f"{where} holds no batch")
    for axis, d in enumerate(spec.dims):
        if not isinstance(d, Symbol) and batches[0].shape[axis] != d:
            raise BadInput(f"{where} has shape {list(a.shape)}; input '{spec.name}' is {want} "
                           f"(dimension {axis} must be {d})")
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        raise BadInput(f"{where} holds {int(np.count_nonzero(~np.isfinite(a)))} NaN or infinite value(s)")
    return batches


# ---------------------------------------------------------------- building and checking


class _Case:
    """What every artifact is built from and checked on: the converted model's interface."""

    def __init__(self, out_dir: Path, specs: list[InputSpec], interface: dict, input_order: list[str],
                 output_names: list[str], inputs: dict[str, np.ndarray], reference: list[np.ndarray],
                 atol: float, rtol: float, calibration: list[dict[str, np.ndarray]] | None,
                 size_sets: list[dict] | None = None):
        perms = interface.get("inputs", {})
        by_name = {s.name: s for s in specs}
        self.out_dir = Path(out_dir)
        self.input_order = input_order
        self.output_names = output_names
        self.dtypes = {n: by_name[n].dtype for n in input_order}
        # each input's dims in the converted model's layout: an int, or None where a symbol varies
        self.dims = {n: _laid([None if isinstance(d, Symbol) else d for d in by_name[n].dims], perms.get(n))
                     for n in input_order}
        self.symbols = {n: _laid([d.name if isinstance(d, Symbol) else None for d in by_name[n].dims], perms.get(n))
                        for n in input_order}
        self.feed = [_transpose(inputs[n], perms.get(n)) for n in input_order]
        outs = interface.get("outputs", {})
        self.reference = [_transpose(r, outs.get(n)) for r, n in zip(reference, output_names)]
        self.atol, self.rtol = atol, rtol
        self.calibration = [[_transpose(b[n], perms.get(n)) for n in input_order] for b in calibration or []]
        self.saved_model = None  # (folder, input keys, output keys): written once, shared by every TF export
        # further sizes of the symbols, as parity ran the source there: (sizes, feed, reference)
        self.size_sets = [(s["sizes"], [_transpose(s["inputs"][n], perms.get(n)) for n in input_order],
                           [_transpose(r, outs.get(o)) for r, o in zip(s["reference"], output_names)])
                          for s in size_sets or [] if "skipped" not in s]


def _laid(dims: list, perm) -> list:
    return [dims[p] for p in perm] if perm else list(dims)


def _transpose(a: np.ndarray, perm) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(perm)) if perm else a


def build_and_check(names: list[str], out_dir: Path, specs: list[InputSpec], interface: dict,
                    input_order: list[str], output_names: list[str], inputs: dict[str, np.ndarray],
                    reference: list[np.ndarray], atol: float, rtol: float,
                    calibration: list[dict[str, np.ndarray]] | None = None, progress=None,
                    size_sets: list[dict] | None = None) -> list[dict]:
    """Write each export into ``out_dir`` and check it; one row per export for
    ``report["parity"]["exports"]``.  A row whose artifact could not be built or run has
    ``passed`` False and the first line of the error; no exception leaves here but Ctrl-C.
    ``size_sets``: parity's further sizes of the symbols (``parity.reference_sets``), where each
    artifact is run too (``row["shapes"]``)."""
    case = _Case(out_dir, specs, interface, input_order, output_names, inputs, reference, atol, rtol, calibration,
                 size_sets)
    rows = []
    model = None
    try:
        for name in names:
            rows.append(_one(name, model := model or _load(case), case, progress))
    finally:
        if case.saved_model:
            shutil.rmtree(case.saved_model[0], ignore_errors=True)
    return rows


def _load(case: _Case):
    from .parity import load_generated

    with _quiet_native():
        return load_generated(case.out_dir / "model.py")


def _one(name: str, model, case: _Case, progress) -> dict:
    """Build and check one export; its row (a failure to build or run is the row's ``error``).

    Each builder writes its artifact, loads it back as a user would and returns what the row
    should say of it and ``run(feed) -> outputs``."""
    if progress:
        progress(f"export: {name} -> {FILES[name]}, checked on the parity inputs")
    t = time.perf_counter()
    row = {"export": name, "file": FILES[name]}
    try:
        info, run = _BUILDERS[name.partition(":")[0]](model, name, case)
        with _quiet_native():
            row.update(_judge(name, case, case.reference, run(case.feed)), **info)
    except Exception as exc:
        row.update(passed=False, error=_first_line(exc))
        _discard(case.out_dir / FILES[name])
    else:
        if case.size_sets:
            row["shapes"] = _at_sizes(name, case, run)
            row["passed"] = row["passed"] and all(s["passed"] is not False for s in row["shapes"])
    row["seconds"] = round(time.perf_counter() - t, 3)
    return row


class _Told(RuntimeError):
    """An artifact's failure as its runner already put it in words (no type name to add)."""


def _first_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return first if isinstance(exc, _Told) else f"{type(exc).__name__}: {first}"


def _at_sizes(name: str, case: _Case, run) -> list[dict]:
    """The artifact at each further size set of the symbols that parity ran the source at.

    Wrong numbers fail the row; an artifact that refuses a size (a converter that fixed a
    size it could not keep free) is recorded with its words and ``passed`` None."""
    out = []
    for sizes, feed, reference in case.size_sets:
        try:
            with _quiet_native():
                got = run(feed)
        except Exception as exc:
            out.append({"sizes": sizes, "passed": None, "refused": _first_line(exc)})
            continue
        judged = _judge(name, case, reference, got)
        worst = max(judged["outputs"], key=lambda c: c["max_abs_err"])
        out.append({"sizes": sizes, "passed": judged["passed"], "max_abs_err": worst["max_abs_err"],
                    "max_rel_err": worst["max_rel_err"]})
    return out


def problems(rows: list[dict]) -> list[str]:
    """One line per failing export, for ``report["parity"]["problems"]``."""
    out = []
    for r in rows:
        if r["passed"]:
            continue
        if r.get("error"):
            out.append(f"export {r['export']}: {r['error']}")
            continue
        bad = [c for c in r["outputs"] if not c["passed"]]
        worst = max(bad or r["outputs"], key=lambda c: c["max_abs_err"])
        out.append(f"export {r['export']} ({r['file']}) fails its check on '{worst['name']}': "
                   f"max_abs_err={worst['max_abs_err']:.3g}, max_rel_err={worst['max_rel_err']:.3g} "
                   f"({r['tolerance']['rule']})")
    return out


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _judge(name: str, case: _Case, reference: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """Compare an artifact's outputs with the source's; the tolerance depends on the export."""
    from .referee import compare

    if len(got) != len(reference):
        raise RuntimeError(f"the artifact gives {len(got)} outputs, the source {len(reference)}")
    bound = QUANTIZED_MAX_REL_ERR.get(name)
    outputs = []
    for n, ref, g in zip(case.output_names, reference, got):
        c = compare(n, ref, np.asarray(g), case.atol, case.rtol).as_dict()
        if bound is not None and not c.get("reason"):
            c["passed"] = bool(c["max_rel_err"] <= bound)
        outputs.append(c)
    if bound is None:
        tolerance = {"atol": case.atol, "rtol": case.rtol,
                     "rule": f"|artifact - source| <= {case.atol:g} + {case.rtol:g} * |source|"}
    else:
        tolerance = {"max_rel_err": bound, "rule": f"max|artifact - source| / max|source| <= {bound:g}"}
    row = {"passed": all(c["passed"] for c in outputs), "tolerance": tolerance, "outputs": outputs}
    if name == "tflite:int8" and len(reference) == 1 and reference[0].ndim == 2:
        ref, g = reference[0], np.asarray(got[0])
        if ref.shape == g.shape and ref.shape[1] > 1:  # a classifier: how often the top class survives
            row["top1_agreement"] = float(np.mean(ref.argmax(axis=1) == g.argmax(axis=1)))
    return row


@contextlib.contextmanager
def _quiet_native():
    """TensorFlow's converters print to fd 1 and fd 2 from C++; keep both off the terminal."""
    from . import quiet

    if quiet._DEBUG:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink, quiet.native_stderr_to_log():
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


# ---------------------------------------------------------------- Keras: SavedModel and TFLite


def _tf_name(name: str, taken: set) -> str:
    """A signature key for ``name``: letters, digits and underscores, unique."""
    key = re.sub(r"\W", "_", name) or "x"
    key = key if not key[0].isdigit() else f"x_{key}"
    base, i = key, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def _write_saved_model(model, case: _Case, path: Path) -> tuple[list[str], list[str]]:
    """A SavedModel whose ``serving_default`` signature takes the inputs by name (None where a
    symbol varies) and returns the outputs by name; returns the input and output keys."""
    import tensorflow as tf
    import keras

    taken: set = set()
    in_keys = [_tf_name(n, taken) for n in case.input_order]
    out_keys = [_tf_name(n, taken) for n in case.output_names]
    signature = [tf.TensorSpec(case.dims[n], tf.as_dtype(case.dtypes[n]), name=k)
                 for n, k in zip(case.input_order, in_keys)]

    def serve(*args):
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return dict(zip(out_keys, out))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
    with _quiet_native():
        archive.write_out(str(path), verbose=False)
    return in_keys, out_keys


def _shared_saved_model(model, case: _Case) -> tuple[Path, list[str], list[str]]:
    """The SavedModel every TF export starts from, written once (tracing and writing it is most
    of an export's time) into a scratch folder that ``build_and_check`` removes."""
    if case.saved_model is None:
        path = Path(tempfile.mkdtemp(dir=case.out_dir, prefix=".saved_model-"))
        case.saved_model = (path, *_write_saved_model(model, case, path))
    return case.saved_model


def _saved_model(model, name: str, case: _Case) -> dict:
    import tensorflow as tf

    path = case.out_dir / FILES[name]
    scratch, in_keys, out_keys = _shared_saved_model(model, case)
    shutil.copytree(scratch, path)
    with _quiet_native():
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(feed):
        out = fn(**{k: tf.constant(x) for k, x in zip(in_keys, feed)})
        return [out[k].numpy() for k in out_keys]

    spec = fn.structured_input_signature[1]
    signature = {k: [-1 if d is None else d for d in spec[k].shape.as_list()] for k in in_keys}
    return {"checked_with": "tf.saved_model.load", "signature": {"inputs": signature, "outputs": out_keys}}, run


def interpreter_class():
    """The TFLite interpreter: LiteRT's when installed (TensorFlow's is deprecated), else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert.interpreter.Interpreter"
    except ImportError:  # pragma: no cover - ai-edge-litert is in requirements.lock
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite.Interpreter"


def op_counts(path: Path) -> dict[str, int]:
    """How many operators of each kind the ``.tflite`` file holds (read without delegates, which
    would fold the ops they take into DELEGATE nodes)."""
    Interpreter, _ = interpreter_class()
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:  # pragma: no cover
        from tensorflow.lite.python.interpreter import OpResolverType
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return dict(sorted(ops.items()))


def _tflite(model, name: str, case: _Case) -> dict:
    import tensorflow as tf

    mode = name.partition(":")[2]
    path = case.out_dir / FILES[name]
    # from_saved_model keeps the signature's names and its free sizes (-1 in shape_signature)
    source, in_keys, out_keys = _shared_saved_model(model, case)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=["serving_default"])
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        batches = case.calibration
        converter.representative_dataset = lambda: ({k: x for k, x in zip(in_keys, b)} for b in batches)
    with _quiet_native():
        flat = converter.convert()
    path.write_bytes(flat)
    feeds = [case.feed, *(feed for _, feed, _ in case.size_sets)]
    told, results = _run_tflite_apart(path, in_keys, out_keys, feeds)

    def run(feed):
        got = results[next(i for i, f in enumerate(feeds) if f is feed)]
        if isinstance(got, str):
            raise _Told(got)
        return got

    info = {"checked_with": told["label"], "signature": {"inputs": told["signature"], "outputs": out_keys},
            "ops": told["ops"], "bytes": len(flat)}
    if mode == "int8":
        info["calibration_batches"] = len(case.calibration)
    return info, run


def _run_tflite_apart(path: Path, in_keys: list[str], out_keys: list[str], feeds: list[list[np.ndarray]]):
    """Run ``path`` on each feed in a child process: ``(what it told, per feed outputs or an error line)``.

    The interpreter is native code that can abort the process on a graph it cannot run
    (LiteRT 2.1 does, without delegates, on an int8 ResNet whose XNNPACK preparation fails);
    in a child that is the artifact's failure, not the conversion's end."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory(prefix=".tflite-run-", dir=path.parent) as work:
        work = Path(work)
        np.savez(work / "feeds.npz", **{f"f{i}_{j}": x for i, feed in enumerate(feeds) for j, x in enumerate(feed)})
        (work / "job.json").write_text(json.dumps({"model": str(path), "in_keys": in_keys, "out_keys": out_keys,
                                                  "feeds": len(feeds)}))
        code = "import sys; from pipeline.artifacts import _tflite_child; _tflite_child(sys.argv[1])"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                                          os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, "-c", code, str(work)], env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
        if not (work / "told.json").is_file():
            last = (proc.stderr.strip().splitlines() or [""])[-1][:300]
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise _Told(f"the TFLite interpreter died ({how}) on {path.name}" + (f": {last}" if last else ""))
        told = json.loads((work / "told.json").read_text())
        results = []
        with np.load(work / "results.npz") as got:
            for i in range(len(feeds)):
                error = told["errors"].get(str(i))
                results.append(error if error else [got[f"r{i}_{j}"] for j in range(len(out_keys))])
    return told, results


def _tflite_child(work: str) -> None:
    """In the child process of :func:`_run_tflite_apart`: load, describe and run the file."""
    import json

    work = Path(work)
    job = json.loads((work / "job.json").read_text())
    Interpreter, label = interpreter_class()
    runner = Interpreter(model_path=job["model"]).get_signature_runner("serving_default")
    details = runner.get_input_details()
    told = {"label": label, "ops": op_counts(Path(job["model"])), "errors": {},
            "signature": {k: [int(d) for d in details[k]["shape_signature"]] for k in job["in_keys"]}}
    out = {}
    with np.load(work / "feeds.npz") as feeds:
        for i in range(job["feeds"]):
            try:
                got = runner(**{k: feeds[f"f{i}_{j}"] for j, k in enumerate(job["in_keys"])})
                out.update({f"r{i}_{j}": got[k] for j, k in enumerate(job["out_keys"])})
            except Exception as exc:
                told["errors"][str(i)] = _first_line(exc)
    np.savez(work / "results.npz", **out)
    (work / "told.json").write_text(json.dumps(told))


# ---------------------------------------------------------------- PyTorch: torch.export and TorchScript


def _torch_args(feed: list[np.ndarray]):
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in feed)


def _torch_runner(module):
    """``run(feed)`` for a loaded torch program: numpy in, the flat list of outputs out."""
    import torch

    from .parity import _as_list, _to_numpy

    def run(feed):
        with torch.no_grad():
            return [_to_numpy(o) for o in _as_list(module(*_torch_args(feed)))]

    return run


def _pt2(model, name: str, case: _Case) -> dict:
    """``torch.export`` with one ``Dim`` per symbol (shared by every place it names)."""
    import torch

    dims = {}
    dynamic = []
    for n in case.input_order:
        axes = {axis: dims.setdefault(s, torch.export.Dim(re.sub(r"\W", "_", s), min=1))
                for axis, s in enumerate(case.symbols[n]) if s is not None}
        dynamic.append(axes or None)
    path = case.out_dir / FILES[name]
    with _quiet_native():
        program = torch.export.export(model, _torch_args(case.feed), dynamic_shapes=tuple(dynamic) if dims else None)
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    return {"checked_with": "torch.export.load(...).module()", "symbols": sorted(dims)}, _torch_runner(loaded)


def _torchscript(model, name: str, case: _Case) -> dict:
    """``torch.jit.script`` (keeps every size free); ``torch.jit.trace`` where scripting fails."""
    import torch

    args = _torch_args(case.feed)
    path = case.out_dir / FILES[name]
    method, why = "script", None
    with _quiet_native():
        try:
            scripted = torch.jit.script(model)
        except Exception as exc:
            method, why = "trace", (str(exc).strip().splitlines() or [""])[0][:200]
            with torch.no_grad():
                scripted = torch.jit.trace(model, args)
        scripted.save(str(path))
        loaded = torch.jit.load(str(path))
    info = {"checked_with": "torch.jit.load", "method": method}
    if why:
        info["note"] = f"torch.jit.script failed ({why}); traced instead, so sizes may be fixed at the example's"
    return info, _torch_runner(loaded)


_BUILDERS = {"saved_model": _saved_model, "tflite": _tflite, "pt2": _pt2, "torchscript": _torchscript}
