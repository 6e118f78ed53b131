"""Coverage: every model in ``keras.applications``, Keras -> PyTorch, through the real pipeline.

Run with `make zoo` (or `python bench/keras_zoo.py [--models A,B] [--out build/zoo]`).

- The models are found by listing ``keras.applications`` (every public constructor), so
  the table follows the installed Keras instead of a hand list.
- Each is built with ``weights=None`` (nothing is downloaded) at the smallest input it
  accepts (Keras states it: 32x32, 71 for Xception, 75 for the Inceptions), batch 1,
  logits out (``classifier_activation=None``).  Stand-ins for trained weights: every
  BatchNormalization's gamma/beta/moving statistics, every LayerNormalization's
  gamma/beta and ConvNeXt's layer scales (1e-6 at init, which would mute its blocks) are
  drawn from a seeded generator, in ranges where no normalization amplifies (see RANGES).
- Each model is converted in its own subprocess (one model's memory is freed before the
  next) with ``pipeline.convert`` at the default tolerance; the row records parameters,
  export seconds, convert seconds (normalize + import + parity), the max relative error
  ``max|torch - keras| / max|keras|`` and pass/fail (exit code 0 and error <= 1e-4).
- What converts polymorphically (issue 14): each model again with a symbolic batch
  (``--input image=B=2,S,S,3``), and, where the application accepts
  ``input_shape=(None, None, 3)`` (Keras allows it only without the classifier:
  ``include_top=False, pooling="avg"``), built so and converted with a symbolic batch, height
  and width (``image=B=2,H=S,W=S,3``); the pipeline checks each at two more size sets.  The
  row's ``symbolic`` holds ``batch`` and ``hw`` (pass, FAIL, an error, or ``n/a``: the
  application needs a fixed size, or builds on ``(None, None, 3)`` but Keras cannot run it
  there, see ``accepts_any_size``); ``--static-only`` skips these two conversions.

Writes build/zoo/keras_applications.json and a Markdown table build/zoo/keras_applications.md;
each model's conversion stays in build/zoo/keras/NAME/ (its factory ``app.py`` can be
converted again with ``python -m pipeline convert build/zoo/keras/NAME/app.py:build``).
tests/test_slow_zoo.py runs the same ``convert_app`` for its slow test.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_REL_ERR = 1e-4

FACTORY = '''"""keras.applications.{name} with weights=None at {size}x{size}, stand-in trained values (bench/keras_zoo.py)."""
import keras
import numpy as np

INPUTS = {{"image": (1, {size}, {size}, 3)}}
INPUT_SHAPE = {input_shape}  # (None, None, 3): height and width vary (the features, no classifier)

# Stand-ins for trained values, by weight name; absent ones (scale=False, center=False) are skipped.
# gamma <= 1 <= variance: no BatchNorm amplifies.  With gamma up to 1.5 and variance down to 0.5
# (gain up to 2.1 per layer) activations grew block after block, EfficientNetV2-L's logits to 4e6,
# and float32 rounding alone broke a 1e-4 tolerance.
RANGES = dict(gamma=(0.5, 1.0), beta=(-0.2, 0.2), moving_mean=(-0.2, 0.2), moving_variance=(1.0, 2.0))
RANDOMIZED = ("BatchNormalization", "LayerNormalization", "LayerScale")


def build():
    keras.utils.set_random_seed(0)
    model = keras.applications.{name}(weights=None, input_shape=INPUT_SHAPE, {head})
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ in RANDOMIZED:
            # LayerScale's one weight is unnamed ("variable"): a scale, like gamma.
            layer.set_weights([rng.uniform(*RANGES.get(w.name, RANGES["gamma"]), w.shape).astype("float32")
                               for w in layer.weights])
    return model
'''


def _keras():
    from pipeline.quiet import import_tensorflow

    return import_tensorflow()[1]


def applications() -> dict[str, str]:
    """Every model constructor in ``keras.applications``: name -> family (its module)."""
    apps = _keras().applications
    return {name: fn.__module__.rsplit(".", 1)[-1] for name, fn in sorted(vars(apps).items())
            if inspect.isfunction(fn) and name[:1].isupper()}


def one_per_family() -> list[str]:
    """The first model of each family in name order (e.g. ConvNeXtBase, DenseNet121, ResNet101)."""
    chosen: dict[str, str] = {}
    for name, family in applications().items():
        chosen.setdefault(family, name)
    return sorted(chosen.values())


def smallest_input(name: str) -> int:
    """The smallest square input ``name`` accepts, as Keras states it when asked for 1x1 (else 32)."""
    try:
        getattr(_keras().applications, name)(weights=None, input_shape=(1, 1, 3))
    except ValueError as exc:
        found = re.search(r"at least (\d+)x\1", str(exc))
        if found:
            return int(found.group(1))
    return 32


# Keras' applications take (None, None, 3) only without their classifier (include_top=True asks for a
# static input_shape): that build is the pooled features, what a model over any image size serves.
ANY_SIZE_HEAD = 'include_top=False, pooling="avg"'


def accepts_any_size(name: str) -> bool:
    """Whether ``name`` builds on ``input_shape=(None, None, 3)`` (see ``ANY_SIZE_HEAD``) and then
    runs at its smallest size.  NASNet builds so but runs at no size: its cells compare the
    sides of two branches to decide whether to reduce one, both are None, and the addition of
    a 7x7 to a 3x3 branch fails inside Keras."""
    import numpy as np

    try:
        model = getattr(_keras().applications, name)(weights=None, input_shape=(None, None, 3),
                                                     include_top=False, pooling="avg")
    except ValueError:
        return False
    size = smallest_input(name)
    try:
        model(np.zeros((1, size, size, 3), np.float32), training=False)
    except Exception:
        return False
    return True


def write_factory(name: str, folder: Path, any_size: bool = False, size: int | None = None) -> tuple[Path, int]:
    """Write ``folder/app.py`` (``build()`` and ``INPUTS``) for ``name``; return it and the input size
    (``any_size``: the model is built on ``(None, None, 3)``, the size is the example's; ``size``:
    that size instead of the smallest the application takes)."""
    size = size or smallest_input(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "app.py"
    shape = (None, None, 3) if any_size else (size, size, 3)
    head = ANY_SIZE_HEAD if any_size else "classifier_activation=None"
    path.write_text(FACTORY.format(name=name, size=size, input_shape=shape, head=head))
    return path, size


# How each polymorphic conversion names the image's dimensions (S: the example side).
SYMBOLIC = {"batch": "image=B=2,{size},{size},3", "hw": "image=B=2,H={size},W={size},3"}


def convert_app(name: str, folder: Path, symbolic: str | None = None) -> dict:
    """Convert ``keras.applications.<name>`` to PyTorch into ``folder/out``; return its table row.

    ``symbolic``: ``"batch"`` or ``"hw"`` (see ``SYMBOLIC``) converts with those dimensions varying."""
    from pipeline.convert import Options, convert
    from pipeline.spec import parse_input

    factory, size = write_factory(name, Path(folder), any_size=symbolic == "hw")
    inputs = [parse_input(SYMBOLIC[symbolic].format(size=size))] if symbolic else []
    t0 = time.perf_counter()
    result = convert(Options(model=f"{factory}:build", to="torch", out=str(Path(folder) / "out"), inputs=inputs))
    wall = time.perf_counter() - t0
    report = result.report
    timings = report["timings_s"]
    rel = max(o["max_rel_err"] for o in report["parity"]["outputs"])
    sets = [s for s in report["parity"].get("shapes", []) if "skipped" not in s]
    return {
        "model": name,
        "input": [1, size, size, 3],
        "parameters": report.get("parameters"),
        "export_s": timings["export"],
        "convert_s": round(timings["normalize"] + timings["import"] + timings["parity"], 3),
        "total_s": round(wall, 3),
        "max_rel_err": rel,
        "exit_code": result.exit_code,
        "passed": result.exit_code == 0 and rel <= MAX_REL_ERR,
        "size_sets": len(sets) + 1 if symbolic else 1,
        "out_dir": str(result.out_dir),
    }


def run_isolated(name: str, folder: Path, timeout: float, symbolic: str | None = None) -> dict:
    """``convert_app`` in a fresh interpreter; a crash or timeout becomes a failed row."""
    row_file = folder / "row.json"
    row_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--one", name, "--out", str(folder)] + (["--symbolic", symbolic] if symbolic else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    if row_file.exists():
        return json.loads(row_file.read_text())
    return {"model": name, "passed": False, "error": error[:300], "total_s": round(time.perf_counter() - t0, 3)}


def polymorphic(name: str, folder: Path, timeout: float) -> dict:
    """``{"batch": verdict, "hw": verdict}``: pass, FAIL (parity), the error line, or ``n/a`` where the
    application takes no ``(None, None, 3)`` input."""
    out = {}
    for kind in SYMBOLIC:
        if kind == "hw" and not accepts_any_size(name):
            out[kind] = "n/a"
            continue
        row = run_isolated(name, folder / kind, timeout, kind)
        out[kind] = "pass" if row.get("passed") else row.get("error") or f"FAIL (exit {row.get('exit_code')})"
    return out


def _polymorphic_cell(row: dict) -> str:
    """``B, H x W`` / ``B`` / what failed first: the README table's cell (``bench/readme_tables.py``,
    beside this file; imported here, where this file runs as a script)."""
    from readme_tables import polymorphic_cell

    return polymorphic_cell(row)


def markdown(rows: list[dict]) -> str:
    """The coverage table: model, input, parameters, export s, convert s, max rel err, pass/fail, and
    which dimensions may vary (``polymorphic``)."""
    lines = ["| model | input | parameters | export s | convert s | max rel err | result | polymorphic |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | | | error: {r['error']} | {_polymorphic_cell(r)} |")
            continue
        params = f"{r['parameters'] / 1e6:.1f} M" if r.get("parameters") else ""
        lines.append(f"| {r['model']} | {r['input'][1]}x{r['input'][2]} | {params} | {r['export_s']:.1f} "
                     f"| {r['convert_s']:.1f} | {r['max_rel_err']:.1e} | {'pass' if r['passed'] else 'FAIL'} "
                     f"| {_polymorphic_cell(r)} |")
    passed = sum(bool(r.get("passed")) for r in rows)
    lines.append(f"\n{passed}/{len(rows)} pass (max rel err <= {MAX_REL_ERR:g}).")
    checked = [r for r in rows if r.get("symbolic")]
    if checked:
        batch = sum(r["symbolic"]["batch"] == "pass" for r in checked)
        hw = sum(r["symbolic"]["hw"] == "pass" for r in checked)
        able = sum(r["symbolic"]["hw"] != "n/a" for r in checked)
        lines.append(f"Polymorphic: {batch}/{len(checked)} with a symbolic batch, {hw}/{able} of those that "
                     "accept (None, None, 3) with a symbolic height and width too.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated constructor names (default: every one)")
    parser.add_argument("--out", default=str(REPO / "build" / "zoo"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per model")
    parser.add_argument("--results", default=None,
                        help="where the rows are kept with commit and machine (default: bench/results/zoo.json "
                             "for the whole sweep, bench/results/zoo-partial.json with --models; '' to skip)")
    parser.add_argument("--static-only", action="store_true",
                        help="skip the polymorphic conversions (symbolic batch, symbolic height and width)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one model, in this process
    parser.add_argument("--symbolic", choices=sorted(SYMBOLIC), help=argparse.SUPPRESS)  # with --one
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.one:
        row = convert_app(args.one, out, args.symbolic)
        (out / "row.json").write_text(json.dumps(row, indent=2))
        return 0
    names = args.models.split(",") if args.models else list(applications())
    rows = []
    for name in names:
        row = run_isolated(name, out / "keras" / name, args.timeout)
        if not args.static_only:
            row["symbolic"] = polymorphic(name, out / "keras" / name, args.timeout)
        rows.append(row)
        status = "pass" if row.get("passed") else "FAIL"
        detail = row.get("error") or f"export {row['export_s']:.1f} s, rel err {row['max_rel_err']:.1e}"
        if row.get("symbolic"):
            detail += f", polymorphic: {_polymorphic_cell(row)}"
        print(f"{name:<20} {status}  {row['total_s']:7.1f} s  {detail}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "keras_applications.json").write_text(json.dumps(rows, indent=2))  # kept current as it goes
    (out / "keras_applications.md").write_text(markdown(rows))
    print(markdown(rows))
    results = args.results if args.results is not None else \
        str(REPO / "bench" / "results" / ("zoo-partial.json" if args.models else "zoo.json"))
    if results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import evidence

        kept = evidence.write(Path(results), "zoo", {"max_rel_err_allowed": MAX_REL_ERR, "rows": rows},
                              command="bench/keras_zoo.py" + (f" --models {args.models}" if args.models else ""))
        print(f"results: {kept}")
    return 0 if all(r.get("passed") for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(REPO))
    sys.exit(main())
