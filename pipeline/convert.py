"""One conversion, end to end: resolve -> export -> normalize -> import -> parity.

Output is assembled in a temporary folder beside ``out`` and moved into place
only when every stage has run, so an interrupted or failed run never leaves a
half-written folder and never destroys an earlier good one.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__
from .errors import EXIT_OK, EXIT_PARITY, BadInput, Unsupported
from .spec import (InputSpec, Symbol, check_range, check_sample, load_sample, make_inputs, symbol_sizes,
                   symbols_metadata, trace_inputs, with_index_ranges)

LAYOUTS = ("source", "target")
# The graphs kept for debugging and one copy of their weights (``onnx_io.ONNX_DATA``).
ONNX_FILES = ("source.onnx", "normalized.onnx", "onnx.data")
TARGETS = ("torch", "keras")

# Batch symbolic by default (issue 14, item 3): the first dimension of every input of a
# PyTorch or Keras source becomes the symbol ``B`` (its example size is the one given or
# declared) unless ``--static`` is given.  Where the model bakes its batch in, the export
# pins it back to its example size and the report names the line that does.
SYMBOLIC_BATCH_BY_DEFAULT = True
BATCH_SYMBOL = "B"


@dataclass
class Options:
    model: str
    to: str | None = None
    out: str | None = None
    inputs: list[InputSpec] = field(default_factory=list)
    atol: float = 1e-4
    rtol: float = 1e-4
    opset: int | None = None
    layout: str = "source"
    seed: int = 0
    check_passes: bool = True
    fold_bn: bool = False
    dims: dict[str, int] = field(default_factory=dict)  # --dim SYMBOL=INT
    static: bool = False  # --static: every dimension fixed at its example size
    freeze: tuple[str, ...] = ()  # symbols fixed at their example (the batch, when it cannot vary yet)
    sample: str | None = None  # --sample FILE.npz or a folder of NAME.npy: parity also on these arrays
    export: list[str] = field(default_factory=list)  # --export: deployable artifacts, each checked (artifacts.py)
    calibration: str | None = None  # --calibration FILE.npz or folder of .npy: int8 calibration batches
    gradients: bool = False  # --gradients: gradient parity in report["gradients"] (pipeline/gradients.py)
    profile: bool = False  # --profile: the CLI prints report["profile"] (always recorded)


@dataclass
class Result:
    exit_code: int
    report: dict
    out_dir: Path


class Progress:
    """Stage lines on stderr: what runs now and how long the last step took."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"  {message}", file=self.stream, flush=True)


def _validate(opts: Options) -> None:
    if opts.to is not None and opts.to not in TARGETS:
        raise BadInput(f"--to must be one of {', '.join(TARGETS)}, not {opts.to!r}")
    if opts.layout not in LAYOUTS:
        raise BadInput(f"--layout must be 'source' or 'target', not {opts.layout!r}")
    for name in ("atol", "rtol"):
        value = getattr(opts, name)
        if not isinstance(value, (int, float)) or value < 0 or value != value:
            raise BadInput(f"--{name} must be a non-negative number, not {value!r}")
    if opts.opset is not None and not (7 <= int(opts.opset) <= 23):
        raise BadInput(f"--opset must be between 7 and 23, not {opts.opset}")


def batch_symbolic(specs: list[InputSpec], given: list[InputSpec]) -> list[InputSpec]:
    """``specs`` with the batch (first) dimension of each input the symbol ``B``.

    Left as they are: scalars, inputs whose first dimension is already a symbol, and every
    input when their batch sizes differ, when ``B`` already names another size, or when
    the user named symbols of their own (``--input x=N=2,...``: they said what varies)."""
    if any(s.symbols for s in given):
        return specs
    free = [s for s in specs if s.dims and not isinstance(s.dims[0], Symbol)]
    sizes = {s.dims[0] for s in free}
    taken = {d.example for s in specs for d in s.symbols if d.name == BATCH_SYMBOL}
    if len(sizes) != 1 or (taken and taken != sizes):
        return specs
    return [s.with_dims((Symbol(BATCH_SYMBOL, s.dims[0]), *s.dims[1:])) if s in free else s
            for s in specs]


def plan_dims(specs: list[InputSpec], opts: Options, framework: str = "torch") -> list[InputSpec]:
    """Which dimensions vary in this conversion: ``--static`` none; otherwise those the user
    or the source names, plus the batch of a PyTorch or Keras source (an ONNX, SavedModel or
    .pt2 file keeps the dims it was written with: its graph may have its batch baked in)."""
    if opts.static:
        return [s.frozen() for s in specs]
    if SYMBOLIC_BATCH_BY_DEFAULT and framework in ("torch", "keras"):
        specs = batch_symbolic(specs, opts.inputs)
    if opts.freeze:
        specs = [InputSpec.of(s.name, [d.example if isinstance(d, Symbol) and d.name in opts.freeze else d
                                       for d in s.dims], s.dtype) for s in specs]
    return specs


def _unnamed_batch(specs: list[InputSpec], opts: Options) -> dict | None:
    """The pin to record when the batch symbol (``B``), which the user did not name, has to
    stay static: its size and places; None when there is no such symbol."""
    asked = {d.name for s in opts.inputs for d in s.symbols} | set(opts.dims)
    if BATCH_SYMBOL in asked:
        return None
    places = [[s.name, axis] for s in specs for axis, d in enumerate(s.dims)
              if isinstance(d, Symbol) and d.name == BATCH_SYMBOL]
    if not places:
        return None
    size = next(d.example for s in specs for d in s.dims if isinstance(d, Symbol) and d.name == BATCH_SYMBOL)
    return {"symbol": BATCH_SYMBOL, "size": size, "places": places}


def apply_pins(specs: list[InputSpec], pins: list[dict]) -> list[InputSpec]:
    """``specs`` with each pinned symbol static at the size the exporter fixed it to."""
    sizes = {p["symbol"]: p["size"] for p in pins}
    return [s.with_dims([sizes.get(d.name, d) if isinstance(d, Symbol) else d for d in s.dims])
            for s in specs]


def describe_pin(pin: dict) -> str:
    places = ", ".join(f"{name} dimension {axis}" for name, axis in pin["places"])
    where = f" by {pin['where']}" if pin.get("where") else ""
    return f"{pin['symbol']} = {pin['size']} ({places}){where}: {pin['reason']}"


def _refuse_pinned_requests(pins: list[dict], opts: Options) -> None:
    """A symbol the user asked to vary (``--input``, ``--dim``) that the model fixes is bad
    input (exit 2): a static dimension where they asked for a varying one would fail them
    later, at run time.  Pins of the batch this tool made symbolic by default are only
    reported: that dimension then stays as the source traced it."""
    asked = {d.name for s in opts.inputs for d in s.symbols} | set(opts.dims)
    for pin in pins:
        if pin["symbol"] in asked:
            raise BadInput(f"{pin['symbol']} cannot vary: the model fixes it, {describe_pin(pin)} "
                           "(name no symbol there, or pass --static)")


def symbols_report(specs: list[InputSpec], constraints: dict[str, dict] | None = None) -> list[dict]:
    """``report["symbols"]``: each symbol's name, example size and places (``[input, axis]``),
    and the sizes it may take where the exporter proved a constraint (``multiple_of * n +
    offset >= min``)."""
    out: dict[str, dict] = {}
    for s in specs:
        for axis, d in enumerate(s.dims):
            if isinstance(d, Symbol):
                out.setdefault(d.name, {"name": d.name, "example": d.example, "places": []})["places"].append(
                    [s.name, axis])
    for name, c in (constraints or {}).items():
        if name in out:
            out[name]["constraint"] = c
    return list(out.values())


def _previous_good(out: Path) -> bool:
    try:
        return bool(json.loads((out / "report.json").read_text())["parity"]["passed"])
    except Exception:
        return False


def _install(tmp: Path, out: Path, passed: bool) -> Path:
    """Move ``tmp`` to ``out``; a failing result never replaces a passing one."""
    if out.exists() and not passed and _previous_good(out):
        failed = out.with_name(out.name + ".failed")
        if failed.exists():
            shutil.rmtree(failed)
        tmp.rename(failed)
        return failed
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def convert(opts: Options, progress: Progress | None = None) -> Result:
    """Run one conversion; raise PipelineError for bad input (2) or unsupported ops (3).

    The batch varies by default; where the importers cannot yet write some op of the graph
    with a varying batch (exit 3 with it), the conversion is run again with the batch
    static, and the report says why (``pinned``), as for a batch the model itself fixes."""
    progress = progress or Progress(False)
    try:
        return _convert(opts, progress)
    except Unsupported as exc:
        pin = getattr(exc, "batch_pin", None)
        if pin is None:
            raise
        first = exc.ops[0] if exc.ops else None
        pin["reason"] = ("the converter cannot yet write this graph with a varying batch: "
                         f"{str(exc).splitlines()[0][:300]}")
        if first is not None:
            pin["where"] = f"{first[0]} '{first[1]}'"
        progress(f"the batch stays static: {describe_pin(pin)}")
        return _convert(replace(opts, freeze=(*opts.freeze, BATCH_SYMBOL)), progress, extra_pins=[pin])


def _convert(opts: Options, progress: Progress, extra_pins: list[dict] | None = None) -> Result:
    _validate(opts)
    symbol_sizes(opts.inputs, opts.dims, complete=False)  # conflicting sizes: said before loading the model
    sample = load_sample(opts.sample) if opts.sample else None  # a bad file too
    from . import export as export_stage
    from . import gradients, importers, normalize, parity
    from .onnx_io import COLLECT_BYTES, externalize, initializer_bytes, save_inline, save_shared
    from .sources import resolve

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(f"loading {opts.model}")
    source = resolve(opts.model, opts.inputs, opts.dims)
    source.inputs = plan_dims(source.inputs, opts, source.framework)
    batch_pin = _unnamed_batch(source.inputs, opts)
    for spec in source.inputs:
        check_range(spec, f"input {spec.name!r}")
    if sample is not None:
        check_sample(sample, source.inputs, opts.sample)
    timings["load"] = round(time.perf_counter() - t0, 3)
    target = opts.to or source.default_target
    if not target:
        raise BadInput(f"{opts.model}: an ONNX model needs --to keras or --to torch")
    from . import artifacts

    exports = artifacts.plan(opts.export, target, opts.calibration)  # bad flags: said before the long stages
    calibration = artifacts.load_calibration(opts.calibration, source.inputs) if opts.calibration else None
    out = Path(opts.out or Path("build") / source.name)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        src_onnx, norm_onnx = tmp / "source.onnx", tmp / "normalized.onnx"
        profile: dict = {}

        t = time.perf_counter()
        progress(f"export: {source.framework} -> ONNX")
        as_is = export_stage.onnx_as_is(source)  # an .onnx source is read where it is, when nothing needs fixing
        if as_is is not None:
            src_onnx, pins = as_is, []
        else:
            pins = export_stage.export(source, trace_inputs(source.inputs, opts.seed), src_onnx, opts.opset) or []
        _refuse_pinned_requests(pins, opts)
        if batch_pin is not None and any(p["symbol"] == BATCH_SYMBOL for p in pins):
            batch_pin = None  # the model fixes it: static already
        pins += extra_pins or []
        source.inputs = apply_pins(source.inputs, pins)
        for pin in pins:
            progress(f"export: {pin['symbol']} stays static: {describe_pin(pin)}")
        timings["export"] = round(time.perf_counter() - t, 3)
        sample_sizes = check_sample(sample, source.inputs, opts.sample) if sample is not None else None
        source.inputs, input_ranges = with_index_ranges(source.inputs, src_onnx)
        inputs = make_inputs(source.inputs, opts.seed)

        # Parity needs only the source model's outputs: take them now and let the model go,
        # so its weights are not held beside the ONNX graph and the generated model.
        # (An .onnx source is only a path; onnxruntime runs it in parity, after preflight.)
        t = time.perf_counter()
        reference = None
        if source.framework != "onnx":
            reference = parity.run_source(source, inputs, src_onnx)
        sample_reference = parity.sample_reference(source, sample, opts.sample, src_onnx) if sample else None
        training = gradients.capture(source, inputs, opts.seed, opts.gradients)  # while the source is loaded
        size_sets = parity.reference_sets(source, opts.seed, src_onnx)  # other sizes of the symbols
        export_sets = size_sets if exports else None  # --export artifacts are run at them too
        if source.framework != "onnx":
            source.obj = None
            # Free it here: collected later, its weakref callbacks could run at a Ctrl-C
            # and swallow the KeyboardInterrupt (Python ignores exceptions raised in them).
            gc.collect()
        source_run_s = time.perf_counter() - t
        profile["source_run"] = round(source_run_s, 3)

        t = time.perf_counter()
        progress("normalize: graph passes, each checked with onnxruntime")
        shared = None
        if as_is is None:  # source.onnx's weights go to onnx.data, which normalized.onnx then shares
            shared = externalize(src_onnx, metadata=symbols_metadata(source.inputs, source.constraints))
            profile["source_weights_to_onnx_data"] = round(time.perf_counter() - t, 3)
        mark = time.perf_counter()
        model = normalize.load(src_onnx)
        import onnx_ir as ir

        ir.external_data.load_to_model(model)  # in memory, as an inline file's: passes and checks read them
        profile["normalize_load"] = round(time.perf_counter() - mark, 3)
        source_nodes = len(list(model.graph))  # counted here: re-reading source.onnx costs 2x its weights
        importers.preflight(target, model)
        output_names = [v.name for v in model.graph.outputs]
        result = normalize.normalize(model, target, opts.layout, inputs if opts.check_passes else None,
                                     opts.atol, opts.rtol, fold_bn=opts.fold_bn)
        mark = time.perf_counter()
        if shared is None:  # an .onnx source read in place: normalized.onnx is the one copy, inline
            save_inline(result.model, norm_onnx)
        else:
            save_shared(result.model, norm_onnx, shared)
        profile["normalize_save"] = round(time.perf_counter() - mark, 3)
        profile["normalize_reference_run"] = result.reference_seconds
        weight_bytes = initializer_bytes(result.model)
        timings["normalize"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        progress(f"import: ONNX -> {target} source code")
        from .importers.to_torch import FROZEN

        result.model.graph.meta[FROZEN] = training.frozen  # the source's buffers stay buffers
        framework_s = _import_framework(target)
        gen = importers.generate(target, result.model, tmp, source.name, source.origin, result.interface,
                                 source.framework)
        timings["import"] = round(time.perf_counter() - t, 3)
        profile["import"] = {"framework_import": framework_s, **_import_profile(target), "total": timings["import"]}
        input_order = [v.name for v in result.model.graph.inputs]
        normalized_nodes = len(list(result.model.graph))
        result.model = model = None  # parity and bisection read normalized.onnx: free the graph's weights
        if weight_bytes >= COLLECT_BYTES:  # the IR graph's reference cycles would keep its weights alive
            gc.collect()

        t = time.perf_counter() - source_run_s  # the source model's run counts as parity time
        progress("parity: source vs onnxruntime vs normalized vs generated model.py")
        with _timed_parity(profile.setdefault("parity", {})):
            generated = parity.load_generated(tmp / "model.py")  # one model for every size set
            report_parity = parity.check(source, inputs, src_onnx, norm_onnx, tmp, target, result.interface,
                                         input_order, output_names, opts.atol, opts.rtol, reference=reference,
                                         generated=generated)
        bisect_inputs = inputs
        if size_sets:
            progress(f"parity at {sum('skipped' not in s for s in size_sets)} more size set(s) of the symbols")
            with _timed_parity(profile["parity"]):
                report_parity["shapes"] = _parity_at_sizes(report_parity, source.inputs, size_sets, src_onnx,
                                                           norm_onnx, tmp, target, result.interface, input_order,
                                                           output_names, opts, generated)
            failing = parity.first_failing_set(report_parity["shapes"])
            if report_parity["passed"] and failing is not None:
                report_parity["passed"] = False
                report_parity["failed_sizes"] = failing["sizes"]
                bisect_inputs = next(s["inputs"] for s in size_sets if s["sizes"] == failing["sizes"])
            del size_sets
        if sample is not None:
            progress(f"parity on the sample {opts.sample}")
            report_parity["samples"] = parity.check_sample(opts.sample, sample, sample_sizes, sample_reference,
                                                           src_onnx, norm_onnx, tmp, target, result.interface,
                                                           input_order, output_names, opts.atol, opts.rtol,
                                                           generated)
            if report_parity["passed"] and not report_parity["samples"]["passed"]:
                report_parity["passed"] = False
                report_parity["failed_on_sample"] = True
                bisect_inputs = sample
        del generated
        if not report_parity["passed"]:
            progress("bisect: comparing every intermediate tensor to find the first divergence")
            from .bisect import first_divergence
            from .referee import laid_out_inputs

            feed = laid_out_inputs(bisect_inputs, result.interface)
            try:
                found = first_divergence(normalize.load(norm_onnx), gen.get("node_vars", {}), feed, tmp, target,
                                         opts.atol, opts.rtol)
                report_parity["first_divergence"] = found["first_divergence"]
                if found["first_divergence"] and "failed_sizes" in report_parity:
                    report_parity["first_divergence"]["sizes"] = report_parity["failed_sizes"]
                if found["first_divergence"] and report_parity.get("failed_on_sample"):
                    report_parity["first_divergence"]["sample"] = opts.sample
                report_parity["node_errors"] = found["nodes"]
            except Exception as exc:  # bisection is a diagnosis aid; the verdict stands without it
                report_parity["first_divergence"] = None
                report_parity["bisect_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        timings["parity"] = round(time.perf_counter() - t, 3)
        if exports:
            _check_exports(report_parity, exports, tmp, source.inputs, result.interface, input_order,
                           output_names, inputs, reference, src_onnx, calibration, opts, progress, timings,
                           export_sets)
        export_sets = None
        report_gradients = _gradients(training, tmp, target, result.interface, inputs, input_order, output_names,
                                      opts, progress, timings)
        timings["total"] = round(time.perf_counter() - t0, 3)
        profile["passes"] = [{"name": r.name, "pass": r.pass_seconds, "shapes": r.shapes_seconds,
                              "check": r.check_seconds, "checked_with": r.checked_with} for r in result.passes]

        report = {
            "pipeline_version": __version__,
            "model": opts.model,
            "source": source.framework,
            "target": target,
            "layout": opts.layout,
            "fold_bn": opts.fold_bn,
            "opset": opts.opset,
            "interface": result.interface,
            "symbols": symbols_report(source.inputs, source.constraints),
            "input_ranges": input_ranges,
            "pinned": pins,
            "parity": report_parity,
            "gradients": report_gradients,
            "timings_s": timings,
            "passes": [r.as_dict() for r in result.passes],
            "nodes": {"source": source_nodes, "normalized": normalized_nodes},
            "parameters": gen.get("parameters"),
            "notes": [n for n in [gen.get("note"), gradients.dropout_note(training)] if n],
            "onnx_source": str(src_onnx) if as_is is not None else None,  # read in place, not copied
            "profile": profile,
            "artifacts": sorted({"report.json", "report.html", *gen["files"],
                                 *(p.name for p in tmp.iterdir() if p.name in ONNX_FILES),
                                 *(r["file"] for r in report_parity.get("exports", []) if (tmp / r["file"]).exists())}),
        }
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
        from .report_html import write as write_html

        write_html(report, tmp / "report.html")
        final = _install(tmp, out, report_parity["passed"])
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Unsupported):
            exc.batch_pin = batch_pin  # convert() runs it again with the batch static
        raise
    return Result(EXIT_OK if report_parity["passed"] else EXIT_PARITY, report, final)


def _gradients(training, out_dir: Path, target: str, interface: dict, inputs: dict, input_order: list[str],
               output_names: list[str], opts: Options, progress: Progress, timings: dict) -> dict:
    """``report["gradients"]`` (pipeline/gradients.py): a diagnosis beside parity, so an error in
    it is recorded there rather than ending the conversion."""
    from . import gradients

    if training.gradients is None:
        return gradients.check(training, out_dir, target, interface, inputs, input_order, output_names, opts.atol)
    t = time.perf_counter()
    progress("gradients: d sum(output * R) / d inputs and weights, source vs generated model.py")
    try:
        found = gradients.check(training, out_dir, target, interface, inputs, input_order, output_names, opts.atol)
    except Exception as exc:
        found = {"ran": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    training.gradients = None
    timings["gradients"] = round(time.perf_counter() - t, 3)
    return found


def _parity_at_sizes(example: dict, specs: list[InputSpec], size_sets: list[dict], src_onnx: Path, norm_onnx: Path,
                     out_dir: Path, target: str, interface: dict, input_order: list[str], output_names: list[str],
                     opts: Options, generated=None) -> list[dict]:
    """``report["parity"]["shapes"]``: the example sizes' result first, then each further set's."""
    from . import parity

    first = {"sizes": {d.name: d.example for s in specs for d in s.symbols}, "example": True,
             "passed": example["passed"], "stages": example["stages"], "problems": example["problems"],
             "inputs": {k: v["shape"] for k, v in example["inputs"].items()}}
    return [first, *parity.check_shapes(size_sets, src_onnx, norm_onnx, out_dir, target, interface, input_order,
                                        output_names, opts.atol, opts.rtol, generated)]


def _check_exports(report_parity: dict, exports: list[str], tmp: Path, specs: list[InputSpec],
                   interface: dict, input_order: list[str], output_names: list[str], inputs: dict, reference,
                   src_onnx: Path, calibration, opts: Options, progress: Progress, timings: dict,
                   size_sets: list[dict] | None) -> None:
    """Build and check each ``--export`` into ``report["parity"]["exports"]``; a failing one
    fails the conversion (exit 1) with its row.  Skipped when the model itself failed: an
    artifact of a wrong model proves nothing."""
    from . import artifacts

    if not report_parity["passed"]:
        report_parity["exports"] = [{"export": e, "file": artifacts.FILES[e], "passed": False,
                                     "skipped": "the converted model failed parity"} for e in exports]
        return
    t = time.perf_counter()
    if reference is None:  # an .onnx source: onnxruntime on source.onnx is the source model
        from .referee import run_onnx

        reference = run_onnx(str(src_onnx), inputs)
    rows = artifacts.build_and_check(exports, tmp, specs, interface, input_order, output_names, inputs,
                                     reference, opts.atol, opts.rtol, calibration, progress, size_sets)
    report_parity["exports"] = rows
    report_parity["problems"] += artifacts.problems(rows)
    report_parity["passed"] = all(r["passed"] for r in rows)
    timings["exports"] = round(time.perf_counter() - t, 3)


def format_profile(report: dict) -> str:
    """``--profile``: where the conversion's time went, one line per step, in the order they ran."""
    prof, t = report.get("profile") or {}, report["timings_s"]
    lines = ["profile (seconds):"]

    def row(label, seconds, indent=2):
        lines.append(f"{' ' * indent}{label:<{34 - indent}} {seconds:8.3f}")

    row("load", t.get("load", 0.0))
    row("export" + (" (.onnx read in place)" if report.get("onnx_source") else ""), t.get("export", 0.0))
    row("source model run", prof.get("source_run", 0.0))
    row("normalize", t.get("normalize", 0.0))
    if "source_weights_to_onnx_data" in prof:
        row("weights to onnx.data", prof["source_weights_to_onnx_data"], 4)
    row("read graph + shapes", prof.get("normalize_load", 0.0), 4)
    row("onnxruntime reference run", prof.get("normalize_reference_run", 0.0), 4)
    for p in prof.get("passes", []):
        row(f"{p['name']}", p["pass"] + p["shapes"] + p["check"], 4)
        lines[-1] += f"   (pass {p['pass']:.3f}, shapes {p['shapes']:.3f}, onnxruntime check {p['check']:.3f})"
        if p.get("checked_with"):
            lines[-1] += f" checked with {' + '.join(p['checked_with'])}"
    row("write normalized.onnx", prof.get("normalize_save", 0.0), 4)
    imp = prof.get("import", {})
    row("import", t.get("import", 0.0))
    row(f"import {'TensorFlow + Keras' if report.get('target') == 'keras' else 'torch'}",
        imp.get("framework_import", 0.0), 4)
    for key, label in (("keras_build", "Keras build"), ("keras_set_weights", "Keras set weights"),
                       ("keras_save", "Keras save weights")):
        if key in imp:
            row(label, imp[key], 4)
    par = prof.get("parity", {})
    row("parity (with source model run)", t.get("parity", 0.0))
    for key, label in (("onnxruntime", "onnxruntime"), ("load_generated", "model.py build + load"),
                       ("spec_referee", "second referee")):
        if key in par:
            row(label, par[key], 4)
    for key, label in (("exports", "--export artifacts, each checked"), ("gradients", "--gradients")):
        if key in t:
            row(label, t[key])
    row("total", t.get("total", 0.0))
    return "\n".join(lines)


def _import_framework(target: str) -> float:
    """Import the target framework now (the importer or parity would anyway); its seconds for the
    profile, where they are often most of the import stage."""
    from . import quiet

    start = time.perf_counter()
    quiet.import_tensorflow() if target == "keras" else quiet.import_torch()
    return round(time.perf_counter() - start, 3)


def _import_profile(target: str) -> dict:
    """Seconds of the import stage's build and save steps (Keras: build, set weights, save)."""
    if target != "keras":
        return {}
    from .importers.to_keras import SAVE_PROFILE

    return {k: round(v, 3) for k, v in SAVE_PROFILE.items()}


class _timed_parity:
    """Within ``with``: the seconds parity spends in each executor, added up into ``into``
    (``onnxruntime``, ``load_generated`` = the generated model's build and weight load,
    ``spec_referee``).  Wraps ``parity``'s module functions for the call and puts them back."""

    NAMES = {"run_onnx": "onnxruntime", "_onnx_runner": "onnxruntime", "_run_session": "onnxruntime",
             "load_generated": "load_generated", "spec_opinion": "spec_referee"}

    def __init__(self, into: dict):
        self.into = into
        self.saved: dict = {}

    def __enter__(self):
        from . import parity

        for name, label in self.NAMES.items():
            fn = self.saved[name] = getattr(parity, name)
            setattr(parity, name, self._wrap(fn, label))
        self.start = time.perf_counter()
        return self

    def _wrap(self, fn, label):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.into[label] = round(self.into.get(label, 0.0) + time.perf_counter() - start, 3)
        return timed

    def __exit__(self, *exc):
        from . import parity

        for name, fn in self.saved.items():
            setattr(parity, name, fn)
        self.into["total"] = round(self.into.get("total", 0.0) + time.perf_counter() - self.start, 3)
        return False


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
