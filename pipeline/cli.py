"""Command line: ``python -m pipeline {convert,batch,models} ...``.

Exit codes: 0 converted and parity within tolerance; 1 converted but parity
failed; 2 bad input or usage; 3 unsupported ops; 4 internal error (a bug).  Expected failures print one
line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import quiet
from .errors import EXIT_BAD_INPUT, EXIT_INTERNAL, PipelineError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"pipeline: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _add_convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="registered name (models/NAME.py), FILE.py:factory, package.module:factory, "
                        "or a .onnx/.keras/.pt2 file or SavedModel folder")
    p.add_argument("--to", choices=["keras", "torch"], help="target framework (default: the other one)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: build/NAME)")
    p.add_argument("--input", dest="inputs", action="append", default=[],
                   metavar="NAME=DIM,DIM,...[:DTYPE[:LOW..HIGH]]",
                   help="input name and shape, each DIM an INT (static; the first one, the batch, varies as B "
                        "unless --static or another DIM names a symbol) or SYMBOL=INT (varies; INT is the example "
                        "size), e.g. mixture=B=4,K=10,128; an integer input's values are drawn from [LOW, HIGH), "
                        "e.g. ids=2,16:int64:0..30000; repeat per input")
    p.add_argument("--dim", dest="dims", action="append", default=[], metavar="SYMBOL=INT",
                   help="example size of a symbol the model or another --input names (e.g. an ONNX dim_param, "
                        "a Keras None dimension); repeat per symbol")
    p.add_argument("--sample", metavar="FILE.npz",
                   help="also check parity on these inputs: a .npz of arrays named by input, or a folder of NAME.npy")
    p.add_argument("--static", action="store_true",
                   help="fix every dimension at its example size (by default a PyTorch or Keras model's batch "
                        "varies)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument("--opset", type=int, help="ONNX opset for the export (default: the exporter's)")
    p.add_argument("--layout", choices=["source", "target"], default="source",
                   help="interface layout: the source model's (default) or the target framework's idiom")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity inputs")
    p.add_argument("--fold-bn", dest="fold_bn", action="store_true",
                   help="fold inference BatchNorm into the Conv/ConvTranspose/Gemm/MatMul that alone feeds it "
                        "(default: keep it as nn.BatchNorm*d / layers.BatchNormalization)")
    p.add_argument("--gradients", action="store_true",
                   help="also check gradients: d sum(output * R) / d inputs and every weight, converted vs source "
                        "(report.json 'gradients'; a mismatch is reported, it does not fail parity)")
    p.add_argument("--no-check-passes", dest="check_passes", action="store_false",
                   help="skip running onnxruntime after every normalize pass")
    p.add_argument("--export", dest="export", action="append", default=[], metavar="KIND",
                   help="also write a deployable artifact, checked on the parity inputs: tflite[:fp32|fp16|int8] or "
                        "saved_model (Keras result), pt2 or torchscript (PyTorch result); repeatable")
    p.add_argument("--calibration", metavar="FILE.npz|DIR",
                   help="calibration batches for --export tflite:int8: arrays named by input (an .npz, or a folder "
                        "of NAME.npy), in the source model's layout")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _memory_size(text: str) -> int:
    """``4G``, ``1500M``, ``512K`` or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in units else t) * scale
    except ValueError:
        value = 0
    if not value >= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected a memory size of at least 1M such as 4G or 1500M, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description="Convert models between PyTorch and Keras through ONNX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and framework logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    conv = sub.add_parser("convert", help="convert one model and check parity")
    _add_convert_args(conv)
    conv.add_argument("--quiet", action="store_true", help="no progress lines")
    conv.add_argument("--profile", action="store_true",
                      help="print the seconds of every normalize pass (pass, shape inference, onnxruntime check), "
                           "of the import's build and save and of parity's executors (report.json keeps them)")
    conv.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    batch = sub.add_parser("batch", help="convert every model listed in a YAML file")
    batch.add_argument("config", metavar="FILE.yaml")
    batch.add_argument("--force", action="store_true", help="convert even entries that are up to date")
    batch.add_argument("--jobs", type=_positive_int, metavar="N",
                       help="entries converted at once, each in its own process (default: as many as the cores "
                            "and free memory allow; 1 runs them in file order)")
    batch.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run the entries as Ray tasks on the cluster at ADDRESS (host:port or ray://host:port), "
                            "or on a Ray instance started here when no address is given; needs pip install .[cluster]")
    batch.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                       help="stop an entry that runs longer (its row: timed-out)")
    batch.add_argument("--max-memory", dest="max_memory", type=_memory_size, metavar="SIZE",
                       help="stop an entry whose worker uses more resident memory, e.g. 4G or 1500M "
                            "(its row: out-of-memory)")
    batch.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    exp = sub.add_parser("explain", help="show one layer's exact equivalent in the other framework")
    exp.add_argument("layer", metavar="LAYER_EXPRESSION",
                     help="one constructor call, e.g. \"keras.layers.Conv1D(filters=1024, kernel_size=5, padding='same')\"")
    exp.add_argument("--input-shape", required=True, metavar="D0,D1,...", help="input shape including the batch")
    exp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    models = sub.add_parser("models", help="list the registered example models")
    models.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def _print_result(result) -> None:
    from .convert import describe_pin

    rep = result.report
    par = rep["parity"]
    status = "PASS" if par["passed"] else "FAIL"
    print(f"{rep['source']} -> {rep['target']}: {status}  (atol={par['atol']:g}, rtol={par['rtol']:g})")
    for label, comps in par["stages"].items():
        for c in comps:
            mark = "ok " if c["passed"] else "BAD"
            print(f"  {mark} {label:<20} {c['name']:<24} max_abs={c['max_abs_err']:.3g}  max_rel={c['max_rel_err']:.3g}")
    for problem in par.get("problems", []):
        print(f"  BAD {problem}")
    spec = par.get("spec_referee") or {}
    if spec.get("ran"):
        print(f"  {'ok ' if spec['agree'] else 'BAD'} second referee (onnx.reference) on source.onnx: "
              f"{'agrees' if spec['agree'] else 'disagrees'} with onnxruntime")
    for shape_set in par.get("shapes", [])[1:]:
        sizes = ", ".join(f"{k}={v}" for k, v in shape_set["sizes"].items())
        if shape_set.get("passed") is None:
            print(f"  --  at {sizes}: skipped ({shape_set['skipped']})")
            continue
        worst = max((c["max_abs_err"] for cs in shape_set["stages"].values() for c in cs), default=float("nan"))
        mark = "ok " if shape_set["passed"] else "BAD"
        extra = f"  {shape_set['problems'][0]}" if shape_set.get("problems") else ""
        print(f"  {mark} at {sizes:<30} max_abs={worst:.3g}{extra}")
    sample = par.get("samples")
    if sample:
        worst = max((c["max_abs_err"] for cs in sample["stages"].values() for c in cs), default=float("nan"))
        extra = f"  {sample['problems'][0]}" if sample.get("problems") else ""
        print(f"  {'ok ' if sample['passed'] else 'BAD'} on the sample {sample['file']:<18} max_abs={worst:.3g}{extra}")
    if par.get("failed_sizes"):
        print(f"  parity failed at {', '.join(f'{k}={v}' for k, v in par['failed_sizes'].items())}")
    first = par.get("first_divergence")
    if first:
        at = f" at {', '.join(f'{k}={v}' for k, v in first['sizes'].items())}" if first.get("sizes") else ""
        at = f" on the sample {first['sample']}" if first.get("sample") else at
        print(f"  first divergence{at}: ONNX node '{first['onnx_node']}' ({first['op_type']}) = generated "
              f"'{first['target_layer']}': max_abs={first['max_abs_err']:.3g} max_rel={first['max_rel_err']:.3g}")
    _print_exports(par.get("exports", []))
    for pin in rep.get("pinned", []):
        print(f"  pinned: {describe_pin(pin)}")
    if rep.get("symbols"):
        def sizes(c):
            if not c:
                return ""
            step = f", a multiple of {c['multiple_of']}" + (f" plus {c['offset']}" if c["offset"] else "") \
                if c["multiple_of"] > 1 else ""
            low = f", at least {c['min']}" if c["min"] > 0 or c.get("max") is None else ""
            return low + step + (f", at most {c['max']}" if c.get("max") is not None else "")

        print("  symbols: " + ", ".join(f"{s['name']} (example {s['example']}{sizes(s.get('constraint'))})"
                                        for s in rep["symbols"]))
    _print_gradients(rep.get("gradients") or {})
    t = rep["timings_s"]
    print("  time: " + ", ".join(f"{k} {t[k]:.2f}s" for k in ("export", "normalize", "import", "parity", "exports",
                                                              "gradients", "total") if k in t))
    for note in rep.get("notes", []):
        print(f"  note: {note}")
    print(f"  wrote {result.out_dir}/ ({', '.join(rep['artifacts'])})")
    if result.out_dir.name.endswith(".failed"):
        print(f"  kept the earlier passing conversion in {str(result.out_dir)[:-len('.failed')]}/")


def _print_exports(rows: list[dict]) -> None:
    """One line per ``--export``: its file and its error against the source model."""
    for r in rows:
        if r.get("skipped") or r.get("error"):
            print(f"  BAD export {r['export']:<14} {r.get('skipped') or r['error']}")
            continue
        worst = max(r["outputs"], key=lambda c: c["max_abs_err"])
        extra = f"  top1_agreement={r['top1_agreement']:.3g}" if "top1_agreement" in r else ""
        print(f"  {'ok ' if r['passed'] else 'BAD'} export {r['export']:<14} {r['file']:<24} "
              f"max_abs={worst['max_abs_err']:.3g}  max_rel={worst['max_rel_err']:.3g}  "
              f"({r['tolerance']['rule']}){extra}")
        for s in r.get("shapes", []):
            sizes = ", ".join(f"{k}={v}" for k, v in s["sizes"].items())
            if s["passed"] is None:
                print(f"  --      at {sizes}: the artifact refuses these sizes ({s['refused']})")
            else:
                print(f"  {'ok ' if s['passed'] else 'BAD'}     at {sizes:<24} max_abs={s['max_abs_err']:.3g}")


def _print_gradients(grad: dict) -> None:
    """One line for the gradient check (``--gradients``), one more per gradient that differs."""
    if grad.get("error"):
        print(f"  BAD gradients: the check raised {grad['error']}")
    if not grad.get("ran"):
        if grad.get("reason") and not grad["reason"].startswith("not asked"):
            print(f"  --  gradients: not checked: {grad['reason']}")
        return
    rows = grad["inputs"] + grad["weights"]
    worst = max((r.get("max_rel_err", float("inf")) for r in rows), default=0.0)
    unmapped = grad["unmapped"]
    extra = (f", unmapped: {len(unmapped['source'])} source / {len(unmapped['converted'])} converted weight(s)"
             if unmapped["source"] or unmapped["converted"] else "")
    print(f"  {'ok ' if grad['passed'] else 'BAD'} gradients: {len(grad['inputs'])} input(s), {len(grad['weights'])} "
          f"weight(s), max_rel={worst:.3g}{extra}")
    for problem in grad["problems"]:
        print(f"  BAD {problem}")


def _dims(texts: list[str]) -> dict[str, int]:
    """``--dim B=4 --dim K=10`` -> {"B": 4, "K": 10}; one symbol given two sizes is bad input."""
    from .errors import BadInput
    from .spec import parse_dim

    sizes: dict[str, int] = {}
    for text in texts:
        name, size = parse_dim(text)
        if sizes.get(name, size) != size:
            raise BadInput(f"--dim {name}={size}: symbol {name!r} is already {sizes[name]} (--dim {name}={sizes[name]}); "
                           "one symbol is one size")
        sizes[name] = size
    return sizes

def registered_models() -> list[tuple[str, str]]:
    """Every MODEL name ``models/`` offers, zoo members one by one, with the inputs each is converted on."""
    from .batch import zoo_members
    from .sources import MODELS_DIR, _declared_inputs, _load_module_from_file, list_registered

    out = []
    for name in list_registered():
        members = zoo_members(name)
        module = _load_module_from_file(MODELS_DIR / f"{name}.py")
        if members is None:
            pairs = [(name, getattr(module, "INPUTS", None))]
        else:
            pairs = [(f"{name}:{m}", module.SHAPES[m]) for m in members]
        for label, declared in pairs:
            specs = _declared_inputs(declared, label)
            out.append((label, "  ".join(s.describe() for s in specs) or "(inputs: pass --input)"))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    quiet.set_debug(debug)
    try:
        if args.command == "convert":
            from .convert import Options, Progress, convert
            from .spec import parse_input

            opts = Options(model=args.model, to=args.to, out=args.out,
                           inputs=[parse_input(s) for s in args.inputs], atol=args.atol, rtol=args.rtol,
                           opset=args.opset, layout=args.layout, seed=args.seed, check_passes=args.check_passes,
                           fold_bn=args.fold_bn, dims=_dims(args.dims), static=args.static, sample=args.sample,
                           export=args.export, calibration=args.calibration, gradients=args.gradients,
                           profile=args.profile)
            result = convert(opts, Progress(not args.quiet))
            _print_result(result)
            if opts.profile:
                from .convert import format_profile

                print(format_profile(result.report))
            return result.exit_code
        if args.command == "batch":
            from .batch import run_batch

            return run_batch(args.config, force=args.force, jobs=args.jobs, ray=args.ray, timeout=args.timeout,
                             max_memory=args.max_memory, debug=debug)
        if args.command == "explain":
            from .explain import explain
            from .spec import parse_input

            shape = parse_input(f"x={args.input_shape}").shape
            report = explain(args.layer, shape)["report"]
            return 0 if report["parity"]["passed"] else 1
        if args.command == "models":
            for name, inputs in registered_models():
                print(f"{name:<28} {inputs}")
            return 0
    except PipelineError as exc:
        if debug:
            traceback.print_exc()
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug in pipeline or a framework: still one line unless --debug
        if debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"pipeline: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("pipeline: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT


def run() -> None:
    """The process entry point (``python -m pipeline`` and the ``pipeline`` script): exit with main()'s code.

    After an interrupt, leave with ``os._exit(130)``. CPython remembers a KeyboardInterrupt that escaped any nested
    ``PyRun_*`` call (pybind11's ``exec``, for one, inside torch or TensorFlow) and, at a normal exit, kills the
    process with SIGINT instead of returning our code; the caller would then see a signal death, not 130.
    """
    code = main()
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
