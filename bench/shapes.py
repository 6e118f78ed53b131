"""Benchmark: what a polymorphic conversion costs against a static one (issue 14).

For each model, the same conversion runs twice in fresh subprocesses, alternating:
``--static`` (every dimension fixed at its example size) and the default (batch symbolic,
plus the symbols a model's row names).  Reported per model:

- conversion wall time, each side the minimum over ``--runs`` (goal: polymorphic at most
  ``COST_GOAL``x the static one); the polymorphic side includes its parity at the extra
  size sets, which is part of what it costs;
- inference latency of the two generated models at the example size, loaded in one
  process on one thread, called alternately after a warm-up (at least ``--calls`` times, and
  until each has run 3 CPU seconds, at most 2,000 calls), median CPU time of each (goal: at
  most ``LATENCY_GOAL``x; wall-clock swings with the machine's load).

Writes bench/results/shapes.json (with commit and machine); the README table is rendered
from it by bench/readme_tables.py and ``make bench-check`` checks both goals.

    python bench/shapes.py [--models seed_torch_encoder,torch_zoo:resnet] [--runs 2] [--calls 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import evidence  # noqa: E402

OUT = ROOT / "build" / "bench" / "shapes"
COST_GOAL = 1.3
LATENCY_GOAL = 1.05
# model -> extra CLI arguments of the polymorphic side (the batch is symbolic by default)
MODELS = {
    "seed_torch_encoder": ["--input", "mixture=B=4,K=10,128"],
    "seed_keras_conv1d": [],
    "torch_zoo:resnet": [],
    "torch_zoo:unet": ["--input", "x=N=1,3,H=16,W=16"],
    "torch_zoo:audio_encoder": ["--input", "waveform=N=2,T=400"],
}


def convert(model: str, out: Path, extra: list[str]) -> dict:
    """One conversion in a fresh subprocess; wall time and the report's verdict."""
    cmd = [sys.executable, "-m", "pipeline", "convert", model, "--out", str(out), *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    row = {"seconds": round(seconds, 2), "exit": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return row
    report = json.loads((out / "report.json").read_text())
    row.update(target=report["target"], passed=report["parity"]["passed"],
               symbols={s["name"]: s["example"] for s in report["symbols"]},
               size_sets=len(report["parity"].get("shapes") or [None]),
               timings=report["timings_s"])
    return row


LATENCY_SCRIPT = r"""
import json, sys, time, statistics, importlib.util
import numpy as np
target, calls, static_dir, poly_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SAMPLE_S, MAX_CALLS = 3.0, 2000
report = json.load(open(static_dir + "/report.json"))

def load(folder, tag):
    spec = importlib.util.spec_from_file_location("m_" + tag, folder + "/model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load()

import torch  # one thread each, timed in CPU seconds: wall-clock swings with the machine's load
torch.set_num_threads(1)
if target == "keras":
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
rng = np.random.default_rng(0)
inputs = []
for name, info in report["parity"]["inputs"].items():
    layout = report["interface"]["inputs"].get(name)
    x = rng.standard_normal(info["shape"]).astype(info["dtype"]) if "float" in info["dtype"] else \
        rng.integers(0, 2, info["shape"]).astype(info["dtype"])
    inputs.append(x.transpose(layout) if layout else x)
models = {"static": load(static_dir, "s"), "polymorphic": load(poly_dir, "p")}
if target == "torch":
    feed = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    def call(m):
        with torch.no_grad():
            m(*feed)
else:
    feed = inputs if len(inputs) > 1 else inputs[0]
    def call(m):
        m(feed, training=False)
times = {k: [] for k in models}
for k, m in models.items():
    for _ in range(3):
        call(m)
# At least ``calls`` rounds, and more (up to MAX_CALLS) until each model has run SAMPLE_S CPU
# seconds: 50 calls of a 2 ms model are 0.1 s of samples, and their medians moved by 4%.
while True:
    for k, m in models.items():
        t = time.process_time(); call(m); times[k].append(time.process_time() - t)
    n = len(times["static"])
    if n >= calls and (n >= MAX_CALLS or min(sum(v) for v in times.values()) >= SAMPLE_S):
        break
print(json.dumps({**{k: statistics.median(v) * 1e3 for k, v in times.items()}, "calls": len(times["static"])}))
"""


def latency(target: str, static_dir: Path, poly_dir: Path, calls: int) -> dict:
    """Median latency (ms) of both generated models at the example size, in one process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", LATENCY_SCRIPT, target, str(calls), str(static_dir), str(poly_dir)],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    ms = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"static_ms": round(ms["static"], 3), "polymorphic_ms": round(ms["polymorphic"], 3),
            "ratio": round(ms["polymorphic"] / ms["static"], 3), "calls": ms["calls"]}


def bench(model: str, extra: list[str], runs: int, calls: int) -> dict:
    work = OUT / model.replace(":", "_")
    static_dir, poly_dir = work / "static", work / "polymorphic"
    sides = {"static": [], "polymorphic": []}
    for _ in range(runs):  # alternate, so drift in the machine's load hits both sides
        sides["static"].append(convert(model, static_dir, ["--static"]))
        sides["polymorphic"].append(convert(model, poly_dir, extra))
    row = {"model": model, "arguments": extra}
    for k, results in sides.items():
        ok = [r for r in results if r["exit"] == 0]
        row[k] = min(ok, key=lambda r: r["seconds"]) if ok else results[-1]
    if all(row[k]["exit"] == 0 for k in sides):
        row["cost_ratio"] = round(row["polymorphic"]["seconds"] / row["static"]["seconds"], 3)
        row["latency"] = latency(row["static"]["target"], static_dir, poly_dir, calls)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated (default: {','.join(MODELS)})")
    p.add_argument("--runs", type=int, default=2, help="conversions per side; the minimum is kept")
    p.add_argument("--calls", type=int, default=50, help="timed calls per model in the latency check")
    args = p.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    rows = []
    for name in names:
        print(f"shapes: {name}", file=sys.stderr, flush=True)
        rows.append(bench(name, MODELS.get(name, []), args.runs, args.calls))
        r = rows[-1]
        print(f"  static {r['static']['seconds']} s, polymorphic {r['polymorphic']['seconds']} s"
              + (f", cost {r['cost_ratio']}x, latency {r['latency']}" if "cost_ratio" in r else ""),
              file=sys.stderr, flush=True)
    command = "python bench/shapes.py" + (f" --models {args.models}" if args.models else "") + \
        (f" --runs {args.runs}" if args.runs != 1 else "")
    evidence.write(evidence.RESULTS / "shapes.json", "shapes",
                   {"rows": rows, "cost_goal": COST_GOAL, "latency_goal": LATENCY_GOAL, "runs": args.runs,
                    "calls": args.calls}, command)
    bad = [r["model"] for r in rows if "cost_ratio" not in r or not r["polymorphic"].get("passed")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
