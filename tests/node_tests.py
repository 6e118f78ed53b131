"""The ONNX backend node tests as a conformance suite for the pipeline.

The ``onnx`` package ships ~1,600 node tests (``onnx/backend/test/data/node/<test>/``):
a small ``model.onnx``, its inputs and the outputs the spec's reference computes.  Here
one test is converted to a target with the pipeline's own stages (as ``convert.convert``
calls them, fed the test's inputs), the generated ``model.py`` is loaded from disk and
run on those inputs, and its outputs are judged against the spec's, not onnxruntime's.

Two variants per test: ``shipped`` (every input a graph input, as the test is) and
``constants`` (the inputs after the first become initializers, as weights, bounds and
shapes are in exported models).  A test with one input has one variant.

Verdicts: ``pass``; ``wrong`` (ran, but an output differs from the spec); ``refused``
(``PipelineError`` with exit 2 or 3, its reason kept); ``internal`` (any other exception
while converting or running the generated model, or the worker crashed or timed out).
onnxruntime runs each test too (``referee``) so a disagreement between it and the spec
is on record: the pipeline's pass checks trust onnxruntime.

Cases run in worker processes (:class:`Pool`), so a crash or a hang is one case's
verdict, not the run's.  Shared by ``bench/conformance.py`` (the whole run) and
``tests/test_conformance.py`` (a fast subset in the default test run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
TARGETS = ("torch", "keras")
VARIANTS = ("shipped", "constants")
REFUSED_EXIT_CODES = (2, 3)
ORT_MAX_OPSET = 23  # the newest default-domain opset onnxruntime 1.23 runs

# |got - want| <= atol + rtol * |want| per element, by the expected output's dtype.  The ONNX
# backend runner's default is rtol 1e-3; atol is looser than its 1e-7 because the targets
# compute in another order than the spec's numpy reference (an output of 1e-7 next to zero
# is rounding, not a wrong answer).  Integers and booleans are compared exactly.
TOLERANCE = {
    np.dtype(np.float16): (1e-3, 1e-2),
    np.dtype(np.float32): (1e-5, 1e-3),
    np.dtype(np.float64): (1e-7, 1e-5),
}


def translator_ops(target: str) -> set[str]:
    """The ONNX op types the importer for ``target`` has an emitter for (in some opset), from
    the op registry.  ``Constant`` nodes need no translator: the generators write them as
    constants."""
    from pipeline.importers import registry

    if target not in registry.TARGETS:
        raise ValueError(target)
    return set(registry.translatable(target)) | {"Constant"}


# --- reading a test ----------------------------------------------------------------------


@dataclass
class Case:
    """One node test, read from disk: the graph, its inputs and the spec's outputs."""

    name: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]  # graph input name -> value, in the graph's order
    expected: list[np.ndarray]  # in the graph's output order


def test_names() -> list[str]:
    """Every node test that ships with the installed ``onnx``, sorted."""
    return sorted(p.parent.name for p in NODE_DIR.glob("*/model.onnx"))


def load_model(name: str) -> onnx.ModelProto:
    return onnx.load(str(NODE_DIR / name / "model.onnx"))


def not_tensors(model: onnx.ModelProto) -> bool:
    """True if an input or output is a sequence, map or optional (neither target has them)."""
    return any(v.type.WhichOneof("value") != "tensor_type" for v in [*model.graph.input, *model.graph.output])


def load_case(name: str) -> Case:
    """The test's model, inputs and expected outputs (``test_data_set_0``)."""
    model = load_model(name)
    data = NODE_DIR / name / "test_data_set_0"

    def read(prefix: str, count: int) -> list[np.ndarray]:
        arrays = []
        for i in range(count):
            proto = onnx.TensorProto()
            proto.ParseFromString((data / f"{prefix}_{i}.pb").read_bytes())
            arrays.append(numpy_helper.to_array(proto))
        return arrays

    names = [v.name for v in model.graph.input]
    inputs = read("input", len(list(data.glob("input_*.pb"))))
    return Case(name, model, dict(zip(names, inputs)), read("output", len(model.graph.output)))


def graph_ops(model: onnx.ModelProto) -> list[str]:
    """The op types of the graph's own nodes (``domain::Op`` outside the default domain), sorted."""
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node})


def missing_ops(model: onnx.ModelProto, target: str) -> list[str]:
    """The graph's op types with no translator for ``target``: empty means the test is in scope."""
    known = translator_ops(target)
    return [op for op in graph_ops(model) if op not in known]


def _squash(text: str) -> str:
    return text.replace("_", "").lower()


def tested_op(name: str, model: onnx.ModelProto) -> str:
    """The op a test is about: the graph's op its name starts with (``test_maxpool_2d`` ->
    MaxPool), the schema its name starts with for a function body spelled out
    (``..._expanded``), else the graph's most frequent op."""
    stem = _squash(name[len("test_"):])
    ops = [n.op_type for n in model.graph.node if n.op_type != "Constant"] or ["Constant"]
    candidates = set(ops)
    if "_expanded" in name:
        candidates |= {s.name for s in onnx.defs.get_all_schemas() if s.domain in ("", "ai.onnx")}
    named = [op for op in candidates if stem.startswith(_squash(op))]
    if named:
        return max(named, key=len)
    return max(sorted(set(ops)), key=ops.count)


def with_constants(case: Case) -> Case:
    """The test with every input after the first made an initializer (a weight, a bound, a shape)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    keep = list(case.inputs)[:1]
    for name in list(case.inputs)[1:]:
        model.graph.initializer.append(numpy_helper.from_array(case.inputs[name], name))
    kept = [v for v in model.graph.input if v.name in keep]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return Case(case.name, model, {k: case.inputs[k] for k in keep}, case.expected)


def restamped(case: Case) -> tuple[Case, int | None]:
    """A test stamped with an opset newer than onnxruntime runs, stamped :data:`ORT_MAX_OPSET`
    when its graph is valid there as well (the full checker, types included): opset 24
    re-issued Reshape, Transpose, Flatten, Squeeze, Cast... for new element types only, and
    without this their tests would measure nothing but onnxruntime's opset check.  Returns
    the case and the opset it had, or the case unchanged and None."""
    stamp = next((o for o in case.model.opset_import if o.domain in ("", "ai.onnx")), None)
    if stamp is None or stamp.version <= ORT_MAX_OPSET:
        return case, None
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    next(o for o in model.opset_import if o.domain in ("", "ai.onnx")).version = ORT_MAX_OPSET
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception:
        return case, None
    return Case(case.name, model, case.inputs, case.expected), stamp.version


# --- judging -----------------------------------------------------------------------------


def judge(expected: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """Compare outputs with the spec's: ``{"ok", "max_abs_err", "why", "dtypes_differ"}``.

    Shapes must match; values within :data:`TOLERANCE` for floats, exactly otherwise
    (NaN equals NaN).  A different dtype with the right values is recorded, not failed.
    """
    verdict = {"ok": True, "max_abs_err": 0.0, "why": None, "dtypes_differ": []}
    if len(got) != len(expected):
        return {**verdict, "ok": False, "why": f"{len(got)} outputs, the spec has {len(expected)}"}
    for i, (want, have) in enumerate(zip(expected, got)):
        want, have = np.asarray(want), np.asarray(have)
        if have.dtype != want.dtype:
            verdict["dtypes_differ"].append(f"output {i}: {have.dtype}, spec {want.dtype}")
        if have.shape != want.shape:
            return {**verdict, "ok": False, "why": f"output {i}: shape {list(have.shape)}, spec {list(want.shape)}"}
        if want.dtype.kind not in "fc":
            bad = int(np.count_nonzero(have != want))
            if bad:
                return {**verdict, "ok": False, "why": f"output {i}: {bad} of {want.size} elements differ"}
            continue
        w, h = want.astype(np.float64), have.astype(np.float64)
        same = (w == h) | (np.isnan(w) & np.isnan(h))
        diff = np.where(same, 0.0, np.abs(h - w))
        diff = np.where(np.isnan(diff), np.inf, diff)
        err = float(diff.max()) if diff.size else 0.0
        verdict["max_abs_err"] = max(verdict["max_abs_err"], err)
        atol, rtol = TOLERANCE.get(want.dtype, (1e-5, 1e-3))
        limit = atol + rtol * np.abs(np.where(np.isfinite(w), w, 0.0))
        if np.any(diff > limit):
            bad = int(np.count_nonzero(diff > limit))
            return {**verdict, "ok": False,
                    "why": f"output {i}: max abs err {err:.3g} ({bad} of {want.size} elements out of tolerance)"}
    return verdict


def first_line(exc: BaseException, limit: int = 300) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:limit]


# --- converting and running ----------------------------------------------------------------


def convert(case: Case, target: str, work: Path) -> tuple[Path, list[str]]:
    """The pipeline's stages on ``case`` as ``convert.convert`` calls them, the test's inputs
    as the check inputs; returns the folder with ``model.py`` and the generated model's input order."""
    from pipeline import export, importers, normalize
    from pipeline.sources import resolve
    from pipeline.spec import InputSpec

    given = work / f"{case.name}.onnx"
    onnx.save(case.model, str(given))
    specs = [InputSpec(k, tuple(int(d) for d in v.shape), str(v.dtype)) for k, v in case.inputs.items()]
    source = resolve(str(given), specs)
    src = work / "source.onnx"
    export.export(source, case.inputs, src)
    model = normalize.load(src)
    importers.preflight(target, model)
    result = normalize.normalize(model, target, "source", case.inputs)
    out = work / "out"
    out.mkdir()
    importers.generate(target, result.model, out, source.name, source.origin, result.interface, source.framework)
    return out, [v.name for v in result.model.graph.inputs]


def run_generated(out: Path, target: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Import the generated ``model.py`` by path, call its ``load()`` and run it on ``inputs``."""
    from pipeline.sources import import_file

    model = import_file(out / "model.py", "_conformance").load()
    if target == "torch":
        import torch

        with torch.no_grad():
            result = model(*[torch.from_numpy(np.array(x)) for x in inputs])  # a writable copy
    else:
        result = model(inputs if len(inputs) != 1 else inputs[0], training=False)
    flat = list(result) if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(r.detach().numpy() if hasattr(r, "detach") else r) for r in flat]


def run_case(name: str, target: str, variant: str, tmp_root: Path | None = None) -> dict:
    """Convert one test to ``target`` and judge the generated model; one verdict record."""
    from pipeline.errors import PipelineError

    case, opset = restamped(load_case(name))
    if variant == "constants":
        case = with_constants(case)
    record = {"test": name, "target": target, "variant": variant, "op": tested_op(name, case.model),
              "ops": graph_ops(case.model)}
    if opset:
        record["restamped_from"] = opset
    work = Path(tempfile.mkdtemp(prefix="conf-", dir=tmp_root))
    start = time.perf_counter()
    stage = "convert"
    try:
        out, order = convert(case, target, work)
        stage = "run"
        got = run_generated(out, target, [case.inputs[k] for k in order])
        verdict = judge(case.expected, got)
        record.update(status="pass" if verdict["ok"] else "wrong", max_abs_err=verdict["max_abs_err"])
        if verdict["why"]:
            record["why"] = verdict["why"]
        if verdict["dtypes_differ"]:
            record["dtypes_differ"] = verdict["dtypes_differ"]
    except PipelineError as exc:
        if stage == "convert" and exc.exit_code in REFUSED_EXIT_CODES:
            record.update(status="refused", exit_code=exc.exit_code, reason=first_line(exc))
        else:
            record.update(status="internal", stage=stage, error=f"{type(exc).__name__}: {first_line(exc)}",
                          exit_code=exc.exit_code)
    except Exception as exc:  # a bug in pipeline (or in the code it generated): the point of the suite
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "/pipeline/" in f.filename), None)
        record.update(status="internal", stage=stage, error=f"{type(exc).__name__}: {first_line(exc)}", where=where)
    finally:
        record["seconds"] = round(time.perf_counter() - start, 3)
        shutil.rmtree(work, ignore_errors=True)
        if target == "keras":
            import keras

            keras.backend.clear_session()  # keeps layer names and memory from growing over many cases
    return record


def referee(name: str) -> dict:
    """onnxruntime on the test as shipped, judged like the targets: does it agree with the spec?"""
    from pipeline.export import _lower_ir_version  # what export does to an .onnx file: IR 12 -> 11
    from pipeline.referee import ort_message, session

    case, opset = restamped(load_case(name))
    _lower_ir_version(case.model)
    record = {"test": name, "target": "onnxruntime", "variant": "shipped", "op": tested_op(name, case.model),
              "ops": graph_ops(case.model)}
    if opset:
        record["restamped_from"] = opset
    try:
        sess = session(case.model.SerializeToString(), threads=1)
        got = sess.run(None, {k: v for k, v in case.inputs.items() if k})
    except Exception as exc:
        record.update(status="cannot run", reason=ort_message(exc))
        return record
    verdict = judge(case.expected, got)
    record.update(status="agrees" if verdict["ok"] else "differs", max_abs_err=verdict["max_abs_err"])
    if verdict["why"]:
        record["why"] = verdict["why"]
    return record


def execute(task: dict, tmp_root: Path | None = None) -> dict:
    """One task of the pool: ``{"test", "target", "variant"}``; target ``onnxruntime`` is the referee."""
    if task["target"] == "onnxruntime":
        return referee(task["test"])
    return run_case(task["test"], task["target"], task["variant"], tmp_root)


# --- plan --------------------------------------------------------------------------------


def plan(names: list[str], targets=TARGETS, variants=VARIANTS) -> tuple[list[dict], list[dict]]:
    """``(tasks, skipped)``: a task per in-scope test, target and variant (and one referee task
    per test in scope for any target); a record per test or (test, target) left out, with why."""
    tasks, skipped = [], []
    for name in names:
        model = load_model(name)
        if not_tensors(model):
            skipped.append({"test": name, "target": "*", "status": "not tensors", "op": tested_op(name, model)})
            continue
        in_scope = False
        for target in targets:
            missing = missing_ops(model, target)
            if missing:
                skipped.append({"test": name, "target": target, "status": "no translator", "missing": missing,
                                "op": tested_op(name, model)})
                continue
            in_scope = True
            about = {"op": tested_op(name, model), "ops": graph_ops(model)}
            n_inputs = len(model.graph.input)
            for variant in variants:
                if variant == "constants" and n_inputs < 2:
                    continue  # the same graph as shipped
                tasks.append({"test": name, "target": target, "variant": variant, **about})
        if in_scope:
            tasks.append({"test": name, "target": "onnxruntime", "variant": "shipped", **about})
    return tasks, skipped


# --- worker processes ----------------------------------------------------------------------


def _worker(conn, tmp_root: str) -> None:
    """Loop: receive a task, send its record; ``None`` ends it.  Output of the frameworks
    goes to a log file beside the temp folders, never into the parent's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    log = os.open(os.path.join(tmp_root, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import pipeline.quiet  # noqa: F401  (silences TensorFlow before anything imports it)

    while True:
        task = conn.recv()
        if task is None:
            break
        try:
            record = execute(task, Path(tmp_root))
        except Exception as exc:  # the harness itself failed on this test: say so, go on
            record = {**task, "status": "internal", "stage": "harness", "error": f"{type(exc).__name__}: {first_line(exc)}"}
        conn.send(record)


class Pool:
    """``workers`` processes that each run many tasks; one is replaced after ``recycle`` tasks
    (bounding memory), when it crashes or when a task runs past ``timeout`` seconds (that
    task's verdict: internal error, crashed / timeout)."""

    def __init__(self, workers: int = 2, timeout: float = 180.0, recycle: int = 60):
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.workers, self.timeout, self.recycle = workers, timeout, recycle
        self.tmp_root = tempfile.mkdtemp(prefix="conformance-")
        self.slots: list[dict] = []

    def _start(self) -> dict:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.tmp_root), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "done": 0, "task": None, "since": 0.0}

    def _stop(self, slot: dict, kill: bool = False) -> None:
        try:
            if kill:
                slot["proc"].kill()
            else:
                slot["conn"].send(None)
            slot["proc"].join(30)
        except (OSError, EOFError, BrokenPipeError):
            pass
        if slot["proc"].is_alive():
            slot["proc"].kill()
            slot["proc"].join(5)
        slot["conn"].close()

    def run(self, tasks: list[dict]):
        """Yield one record per task, in completion order."""
        from multiprocessing.connection import wait

        queue = list(reversed(tasks))
        self.slots = [self._start() for _ in range(min(self.workers, len(tasks)))]
        try:
            while queue or any(s["task"] for s in self.slots):
                for s in self.slots:
                    if s["task"] is None and queue:
                        s["task"], s["since"] = queue.pop(), time.monotonic()
                        s["conn"].send(s["task"])
                busy = [s for s in self.slots if s["task"]]
                ready = wait([s["conn"] for s in busy], timeout=1.0)
                for i, s in enumerate(self.slots):
                    if s["task"] is None:
                        continue
                    record = None
                    if s["conn"] in ready:
                        try:
                            record = s["conn"].recv()
                        except (EOFError, OSError):
                            s["proc"].join(5)
                            record = self._failed(s["task"], f"crashed: worker exit code {s['proc'].exitcode}")
                    elif time.monotonic() - s["since"] > self.timeout:
                        record = self._failed(s["task"], f"timeout: no verdict after {self.timeout:.0f} s")
                    if record is None:
                        continue
                    s["task"] = None
                    s["done"] += 1
                    yield record
                    if record.get("stage") == "worker" or s["done"] >= self.recycle:
                        self._stop(s, kill=record.get("stage") == "worker")
                        self.slots[i] = self._start()
        finally:
            for s in self.slots:
                self._stop(s, kill=bool(s["task"]))
            shutil.rmtree(self.tmp_root, ignore_errors=True)

    @staticmethod
    def _failed(task: dict, why: str) -> dict:
        return {**task, "status": "internal", "stage": "worker", "error": why}
