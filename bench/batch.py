"""Batch speed: the keras.applications models as one YAML file, ``--jobs 1`` vs ``--jobs 2`` vs ``--ray``.

Run with `make bench-batch` (or `python bench/batch.py [--models A,B] [--modes jobs1,jobs2,ray]`).
Not part of `make bench`: the 40 models take about half an hour per mode on 2 cores.

- The factories are bench/keras_zoo.py's (``weights=None``, smallest input, stand-in trained
  values), one ``app.py`` per model; every mode converts the same YAML entries (Keras -> PyTorch)
  into its own output folder, with ``--force``, in a fresh ``python -m pipeline batch`` process.
- Wall time is that process's; peak memory is the largest sum of resident memory over the
  process and everything it started (workers; with ``--ray`` the local Ray instance too),
  sampled every 0.2 s.
- ``--ray`` starts a local Ray instance with as many CPUs as ``--jobs 2`` has workers.  Its
  start is the time to the first task's submission; its overhead per entry is the time from
  an entry's submission to its files written by the driver, less its worker's own seconds
  (both read from the run's progress lines).

Writes build/bench/batch/batch.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pipeline.batch_worker import tree_rss

REPO = Path(__file__).resolve().parent.parent
MODES = {"jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "ray": ["--ray", "--jobs", "2"]}


def write_yaml(names: list[str], root: Path, mode: str) -> Path:
    """One batch file per mode (each writes its own output folder), same entries."""
    sys.path.insert(0, str(REPO / "bench"))
    from keras_zoo import write_factory

    lines = [f"output_dir: {root / mode}", "defaults: {to: torch}", "models:"]
    for name in names:
        factory = root / "apps" / name / "app.py"
        if not factory.is_file():
            write_factory(name, factory.parent)
        lines.append(f"  - {{name: {name}, model: '{factory}:build'}}")
    path = root / f"{mode}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_mode(config: Path, mode: str, log: Path) -> dict:
    cmd = [sys.executable, "-m", "pipeline", "batch", str(config), "--force", *MODES[mode]]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    peak = 0
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    summary = json.loads((config.parent / mode / "summary.json").read_text())
    passed = sum(e["status"] == "passed" for e in summary["entries"])
    return {"mode": mode, "command": " ".join(["python -m pipeline batch", config.name, "--force", *MODES[mode]]),
            "wall_s": round(wall, 1), "peak_gib": round(peak / (1 << 30), 2), "entries": len(summary["entries"]),
            "passed": passed, "exit_code": proc.returncode}


def ray_overhead(log: Path) -> dict:
    """From a ``--ray`` run's progress lines: Ray's start, and per entry the time from its submission
    to its files written by the driver, less the seconds its worker ran on the node."""
    started, overhead, first = {}, [], None
    for line in log.read_text().splitlines():
        m = re.match(r"\[\s*([\d.]+)s\] (?:start (\S+):|\[\d+/\d+\] (\S+): \S+ \(([\d.]+)s\))", line)
        if not m:
            continue
        at = float(m.group(1))
        if m.group(2):
            started[m.group(2)] = at
            first = at if first is None else first
        elif m.group(3) in started:
            overhead.append(at - started[m.group(3)] - float(m.group(4)))
    if not overhead:
        return {}
    return {"ray_start_s": round(first, 1), "overhead_mean_s": round(sum(overhead) / len(overhead), 2),
            "overhead_max_s": round(max(overhead), 2)}


def markdown(rows: list[dict]) -> str:
    base = next((r["wall_s"] for r in rows if r["mode"] == "jobs1"), None)
    lines = ["| mode | wall s | x jobs 1 | peak memory GiB | passed |", "| --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = f"{r['wall_s'] / base:.2f}" if base else ""
        lines.append(f"| `{' '.join(MODES[r['mode']])}` | {r['wall_s']:.1f} | {ratio} | {r['peak_gib']:.2f} "
                     f"| {r['passed']}/{r['entries']} |")
    ray = next((r for r in rows if r["mode"] == "ray" and r.get("overhead_mean_s") is not None), None)
    if ray:
        lines.append(f"\nRay: {ray['ray_start_s']:.1f} s to start the local instance; overhead per entry "
                     f"(submitted -> files written, less the worker's own time) {ray['overhead_mean_s']:.2f} s "
                     f"mean, {ray['overhead_max_s']:.2f} s max")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated keras.applications names (default: every one)")
    parser.add_argument("--modes", default="jobs1,jobs2,ray", help="any of jobs1, jobs2, ray")
    parser.add_argument("--out", default=str(REPO / "build" / "bench" / "batch"))
    args = parser.parse_args(argv)
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from keras_zoo import applications

    names = args.models.split(",") if args.models else list(applications())
    rows = []
    for mode in args.modes.split(","):
        config = write_yaml(names, root, mode)
        row = run_mode(config, mode, root / f"{mode}.log")
        if mode == "ray":
            row.update(ray_overhead(root / f"{mode}.log"))
        rows.append(row)
        print(f"{mode:<6} {row['wall_s']:8.1f} s  peak {row['peak_gib']:.2f} GiB  {row['passed']}/{row['entries']} passed",
              flush=True)
        (root / "batch.json").write_text(json.dumps({"models": names, "rows": rows}, indent=2))
    table = markdown(rows)
    (root / "batch.md").write_text(table)
    print(table)
    return 0 if all(r["passed"] == r["entries"] for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
