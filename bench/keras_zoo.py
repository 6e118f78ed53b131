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

# Stand-ins for trained values, by weight name; absent ones (scale=False, center=False) are skipped.
# gamma <= 1 <= variance: no BatchNorm amplifies.  With gamma up to 1.5 and variance down to 0.5
# (gain up to 2.1 per layer) activations grew block after block, EfficientNetV2-L's logits to 4e6,
# and float32 rounding alone broke a 1e-4 tolerance.
RANGES = dict(gamma=(0.5, 1.0), beta=(-0.2, 0.2), moving_mean=(-0.2, 0.2), moving_variance=(1.0, 2.0))
RANDOMIZED = ("BatchNormalization", "LayerNormalization", "LayerScale")


def build():
    keras.utils.set_random_seed(0)
    model = keras.applications.{name}(weights=None, input_shape=({size}, {size}, 3), classifier_activation=None)
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


def write_factory(name: str, folder: Path) -> tuple[Path, int]:
    """Write ``folder/app.py`` (``build()`` and ``INPUTS``) for ``name``; return it and the input size."""
    size = smallest_input(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "app.py"
    path.write_text(FACTORY.format(name=name, size=size))
    return path, size


def convert_app(name: str, folder: Path) -> dict:
    """Convert ``keras.applications.<name>`` to PyTorch into ``folder/out``; return its table row."""
    from pipeline.convert import Options, convert

    factory, size = write_factory(name, Path(folder))
    t0 = time.perf_counter()
    result = convert(Options(model=f"{factory}:build", to="torch", out=str(Path(folder) / "out")))
    wall = time.perf_counter() - t0
    report = result.report
    timings = report["timings_s"]
    rel = max(o["max_rel_err"] for o in report["parity"]["outputs"])
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
        "out_dir": str(result.out_dir),
    }


def run_isolated(name: str, folder: Path, timeout: float) -> dict:
    """``convert_app`` in a fresh interpreter; a crash or timeout becomes a failed row."""
    row_file = folder / "row.json"
    row_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--one", name, "--out", str(folder)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    if row_file.exists():
        return json.loads(row_file.read_text())
    return {"model": name, "passed": False, "error": error[:300], "total_s": round(time.perf_counter() - t0, 3)}


def markdown(rows: list[dict]) -> str:
    """The coverage table: model, input, parameters, export s, convert s, max rel err, pass/fail."""
    lines = ["| model | input | parameters | export s | convert s | max rel err | result |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | | | error: {r['error']} |")
            continue
        params = f"{r['parameters'] / 1e6:.1f} M" if r.get("parameters") else ""
        lines.append(f"| {r['model']} | {r['input'][1]}x{r['input'][2]} | {params} | {r['export_s']:.1f} "
                     f"| {r['convert_s']:.1f} | {r['max_rel_err']:.1e} | {'pass' if r['passed'] else 'FAIL'} |")
    passed = sum(bool(r.get("passed")) for r in rows)
    lines.append(f"\n{passed}/{len(rows)} pass (max rel err <= {MAX_REL_ERR:g}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated constructor names (default: every one)")
    parser.add_argument("--out", default=str(REPO / "build" / "zoo"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per model")
    parser.add_argument("--results", default=None,
                        help="where the rows are kept with commit and machine (default: bench/results/zoo.json "
                             "for the whole sweep, bench/results/zoo-partial.json with --models; '' to skip)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one model, in this process
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.one:
        row = convert_app(args.one, out)
        (out / "row.json").write_text(json.dumps(row, indent=2))
        return 0
    names = args.models.split(",") if args.models else list(applications())
    rows = []
    for name in names:
        row = run_isolated(name, out / "keras" / name, args.timeout)
        rows.append(row)
        status = "pass" if row.get("passed") else "FAIL"
        detail = row.get("error") or f"export {row['export_s']:.1f} s, rel err {row['max_rel_err']:.1e}"
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
