"""Benchmark: peak memory of a ~100 M-parameter conversion, each direction in a fresh process.

Run with `make bench` (or `python bench/memory.py [--directions torch2keras,keras2torch]`).

Models: models/torch_zoo.py:big100m (six 4096x4096 Linear + GELU, a 4096->1000 head:
104.8 M float32 parameters, 419 MB) and its Keras twin ``keras_big100m`` below
(the same Dense stack).  Each direction runs in its own child process:

1. import the frameworks a conversion uses (torch, torch.onnx, tensorflow, keras,
   tf2onnx, onnx, onnx_ir, onnxscript, onnxruntime, safetensors, pipeline):
   RSS here is the *import baseline*;
2. convert a tiny model of the same shape family (width 64) end to end, so the
   frameworks' lazy one-time set-up (TF runtime, the dynamo exporter, onnxruntime)
   has happened: RSS here is the *warm baseline*;
3. convert the big model with ``pipeline.convert``; at each stage line of its
   Progress callback the kernel's RSS high-water mark (VmHWM, what ru_maxrss reports)
   is read and reset, so each stage's peak is exact, not sampled.

Reported: (peak - baseline) / weight bytes for both baselines, and the peak of
each stage over the warm baseline in the same unit.  The issue's bound is about
3x the weights.  Writes build/bench/memory.json and bench/results/memory.json (with the
commit and the machine; the README's table is generated from it), prints a Markdown
table, and exits 1 when a direction fails or goes over the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
DIRECTIONS = {"torch2keras": ("torch", "keras"), "keras2torch": ("keras", "torch")}
BOUND = 3.0
BATCH = 2


# --------------------------------------------------------------------------- models

def keras_big100m(width: int = 4096, depth: int = 6, classes: int = 1000):
    """The Keras twin of torch_zoo.big100m: ``depth`` Dense(width, gelu) and a Dense(classes) head.

    Biases are random (Keras starts them at zero, which a converter could drop unnoticed).
    """
    import keras

    keras.utils.set_random_seed(0)
    bias = keras.initializers.RandomUniform(-0.1, 0.1, seed=1)
    x = keras.Input(shape=(width,), batch_size=BATCH, name="x")
    y = x
    for i in range(depth):
        y = keras.layers.Dense(width, activation="gelu", bias_initializer=bias, name=f"hidden_{i}")(y)
    return keras.Model(x, keras.layers.Dense(classes, bias_initializer=bias, name="head")(y))


def keras_tiny():
    """Warm-up model: the same family at width 64."""
    return keras_big100m(width=64, depth=2, classes=10)


def torch_tiny():
    """Warm-up model: the same family at width 64."""
    sys.path.insert(0, str(ROOT))
    from models.torch_zoo import BigMLP

    return BigMLP(width=64, depth=2, classes=10).eval()


def model_spec(framework: str, big: bool) -> tuple[str, int]:
    """``MODEL`` argument for pipeline and the input width."""
    if framework == "torch":
        return (f"{ROOT}/models/torch_zoo.py:big100m", 4096) if big else (f"{__file__}:torch_tiny", 64)
    return (f"{__file__}:keras_big100m", 4096) if big else (f"{__file__}:keras_tiny", 64)


# --------------------------------------------------------------------------- child

def _status_bytes(key: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss() -> int:
    """Resident set size of this process, bytes."""
    return _status_bytes("VmRSS")


def reset_peak() -> None:
    """Restart the kernel's RSS high-water mark (VmHWM, which ru_maxrss reads) from the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


class StagePeaks:
    """Progress callback: the exact RSS peak of each stage.

    At every stage line the kernel's high-water mark is read (the peak of the stage
    that just ended) and reset, so no short spike is missed, unlike sampling.
    """

    def __init__(self):
        self.stage = "start"
        self.stages: dict[str, dict] = {}
        self._start = rss()
        reset_peak()

    def _close(self) -> None:
        entry = self.stages.setdefault(self.stage, {"rss_at_start": self._start, "peak_rss": 0})
        entry["peak_rss"] = max(entry["peak_rss"], _status_bytes("VmHWM"))

    def __call__(self, message: str) -> None:
        self._close()
        self.stage = message.split(":")[0].split(" ")[0]
        self._start = rss()
        reset_peak()

    def finish(self) -> int:
        """Close the last stage; return the peak over all stages."""
        self._close()
        return max(v["peak_rss"] for v in self.stages.values())


def import_frameworks() -> None:
    """Everything a conversion in either direction imports, without building a model.

    pipeline comes first, as with `python -m pipeline`: it sets the frameworks' environment
    (TF_ENABLE_ONEDNN_OPTS=0 among others) before TensorFlow is imported.
    """
    import pipeline.convert  # noqa: F401
    from pipeline import export, importers, normalize, parity  # noqa: F401

    import keras  # noqa: F401
    import onnx  # noqa: F401
    import onnx_ir  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import safetensors  # noqa: F401
    import tensorflow  # noqa: F401
    import tf2onnx  # noqa: F401
    import torch
    import torch.onnx  # noqa: F401

    torch.set_grad_enabled(True)


def convert_once(framework: str, target: str, big: bool, out: Path, progress=None):
    from pipeline.convert import Options, convert
    from pipeline.spec import InputSpec

    model, width = model_spec(framework, big)
    return convert(Options(model=model, to=target, out=str(out), inputs=[InputSpec("x", (BATCH, width))]),
                   progress)


def child(direction: str, out: Path) -> dict:
    """One direction in this (fresh) process; returns the measurements."""
    framework, target = DIRECTIONS[direction]
    import_frameworks()
    base_imports = rss()
    with tempfile.TemporaryDirectory() as tmp:
        warm = convert_once(framework, target, False, Path(tmp) / "tiny")
    if warm.exit_code != 0:
        raise RuntimeError(f"warm-up conversion failed with exit {warm.exit_code}")
    base_warm = rss()
    start = time.perf_counter()
    stages = StagePeaks()
    result = convert_once(framework, target, True, out, stages)
    seconds = time.perf_counter() - start
    peak = stages.finish()  # before anything else is allocated
    weight_bytes = _weight_bytes(framework)
    return {
        "direction": direction,
        "exit_code": result.exit_code,
        "parity_passed": result.report["parity"]["passed"],
        "max_abs_err": max(o["max_abs_err"] for o in result.report["parity"]["outputs"]),
        "seconds": round(seconds, 1),
        "weight_bytes": weight_bytes,
        "converted_parameters": result.report.get("parameters"),
        "baseline_imports_rss": base_imports,
        "baseline_warm_rss": base_warm,
        "peak_rss": peak,
        "peak_over_imports_x_weights": round((peak - base_imports) / weight_bytes, 2),
        "peak_over_warm_x_weights": round((peak - base_warm) / weight_bytes, 2),
        "stages": {k: {**v, "peak_over_warm_x_weights": round((v["peak_rss"] - base_warm) / weight_bytes, 2)}
                   for k, v in stages.stages.items()},
        "timings_s": result.report["timings_s"],
    }


def _weight_bytes(framework: str) -> int:
    """Float32 bytes of the big model's weights, counted in its own framework."""
    if framework == "torch":
        sys.path.insert(0, str(ROOT))
        from models.torch_zoo import BigMLP

        return sum(p.numel() for p in BigMLP().parameters()) * 4
    return int(keras_big100m().count_params()) * 4


# --------------------------------------------------------------------------- parent

def run_child(direction: str) -> dict:
    """Start a fresh interpreter for one direction and read its JSON line."""
    out = OUT / f"memory_{direction}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, __file__, "--child", direction, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"direction": direction, "error": f"exit {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    """Markdown: one row per direction."""
    mib = 1 << 20
    lines = ["| direction | weights MiB | import baseline MiB | warm baseline MiB | peak MiB "
             "| (peak - import base) / weights | (peak - warm base) / weights | worst stage | parity |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['direction']} | failed: {r['error']} |")
            continue
        worst = max(r["stages"].items(), key=lambda kv: kv[1]["peak_rss"])
        lines.append(
            f"| {r['direction']} | {r['weight_bytes'] / mib:.0f} | {r['baseline_imports_rss'] / mib:.0f} "
            f"| {r['baseline_warm_rss'] / mib:.0f} | {r['peak_rss'] / mib:.0f} | {r['peak_over_imports_x_weights']}x "
            f"| {r['peak_over_warm_x_weights']}x | {worst[0]} ({worst[1]['peak_over_warm_x_weights']}x) "
            f"| {'pass' if r['parity_passed'] else 'FAIL'} (err {r['max_abs_err']:.1e}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--child", choices=sorted(DIRECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "memory.json"),
                        help="where the rows are kept with commit and machine ('' to skip)")
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(child(args.child, Path(args.out))))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [run_child(d) for d in args.directions.split(",") if d]
    (OUT / "memory.json").write_text(json.dumps({"protocol": __doc__, "bound_x_weights": BOUND, "rows": rows},
                                                indent=2))
    print(table(rows))
    if args.results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import evidence

        kept = evidence.write(Path(args.results), "memory", {"bound_x_weights": BOUND, "rows": rows},
                              command=f"bench/memory.py --directions {args.directions}")
        print(f"results: {kept}")
    over = [r["direction"] for r in rows if "error" in r or r["peak_over_warm_x_weights"] > BOUND]
    if over:
        print(f"over {BOUND}x the weights (or failed): {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
