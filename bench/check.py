"""``make bench-check``: exit 1 unless every stated goal is met by a stored result.

The goals are the README's claims, checked against the files the benches wrote under
``bench/results/`` (never against numbers typed into the README):

- memory (``make bench``, memory.json): each direction's peak over the warm baseline is at
  most ``MEMORY_BOUND_X_WEIGHTS`` times the weights, and parity passed;
- speed (``make bench``, onnx2tf.json): on each TorchScript file pipeline's product is right
  and onnx2tf takes at least ``MIN_SPEEDUP`` times pipeline's wall time; each weight is written
  once: the output folder without the ONNX graphs kept for debugging is at most
  ``MAX_OUTPUT_X_WEIGHTS`` times the weights (rows that measured it); Keras ResNet50 -> PyTorch
  takes at most ``MAX_X_TF2ONNX`` times tf2onnx's export alone (when measured);
- shapes (``make bench``, shapes.json): a polymorphic conversion costs at most its stated
  factor over the static one, and its model's latency at the example size likewise;
- zoo (``make zoo``, zoo.json): every keras.applications model passes;
- fuzz (``make fuzz``, fuzz.json): the run completed with no mismatch, crash or refusal
  outside the known gaps, over at least ``MIN_FUZZ_CASES`` cases.

A missing file is a failure too (the goal is not shown to hold).  ``--results DIR`` reads
another folder (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MEMORY_BOUND_X_WEIGHTS = 3.0
MIN_SPEEDUP = 1.0  # "pipeline converts faster than onnx2tf": onnx2tf s / pipeline s >= 1
MIN_FUZZ_CASES = 10_000  # the deep profile's default
MAX_OUTPUT_X_WEIGHTS = 1.1  # issue 11: output folder <= 1.1x the weights plus the ONNX files kept
MAX_X_TF2ONNX = 2.0  # issue 11: Keras -> PyTorch end to end <= 2x tf2onnx's export alone


def _load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def check_memory(record) -> list[str]:
    problems = []
    for row in record["data"]["rows"]:
        if "error" in row:
            problems.append(f"memory {row['direction']}: failed: {row['error'][:120]}")
            continue
        if row["peak_over_warm_x_weights"] > MEMORY_BOUND_X_WEIGHTS:
            problems.append(f"memory {row['direction']}: peak {row['peak_over_warm_x_weights']}x the weights "
                            f"> {MEMORY_BOUND_X_WEIGHTS}x")
        if not row.get("parity_passed"):
            problems.append(f"memory {row['direction']}: parity failed")
    return problems


def check_speed(record) -> list[str]:
    problems = []
    rows = [r for r in record["data"]["rows"] if r["onnx_file"] == "torchscript-17"]
    if not rows:
        problems.append("speed: no TorchScript row in onnx2tf.json")
    for r in rows:
        if not r["pipeline"]["check"].get("ok"):
            problems.append(f"speed {r['model']}: pipeline's product failed or is wrong")
        elif r["ratio_onnx2tf_over_pipeline"] is None:
            problems.append(f"speed {r['model']}: no ratio (onnx2tf's product failed), the goal is not shown")
        elif r["ratio_onnx2tf_over_pipeline"] < MIN_SPEEDUP:
            problems.append(f"speed {r['model']}: onnx2tf / pipeline = {r['ratio_onnx2tf_over_pipeline']} "
                            f"< {MIN_SPEEDUP}")
    for r in [*record["data"]["rows"], *record["data"].get("keras_rows", [])]:
        out = r["pipeline"]["best"].get("output")
        if out and out["without_onnx_x_weights"] > MAX_OUTPUT_X_WEIGHTS:
            problems.append(f"output {r['model']}: {out['without_onnx_x_weights']}x the weights besides the ONNX "
                            f"files > {MAX_OUTPUT_X_WEIGHTS}x")
    for r in record["data"].get("keras_rows", []):
        ratio = r.get("pipeline_x_tf2onnx")
        if ratio is None:
            problems.append(f"speed {r['model']}: a run failed, pipeline / tf2onnx not shown")
        elif ratio > MAX_X_TF2ONNX:
            problems.append(f"speed {r['model']}: pipeline / tf2onnx export = {ratio} > {MAX_X_TF2ONNX}")
    return problems


def check_zoo(record) -> list[str]:
    rows = record["data"]["rows"]
    failed = [r["model"] for r in rows if not r.get("passed")]
    problems = [f"zoo: {len(failed)} of {len(rows)} fail: {', '.join(failed)}"] if failed else []
    if not rows:
        problems.append("zoo: no model in zoo.json")
    return problems


def check_fuzz(record) -> list[str]:
    data = record["data"]
    problems = []
    if not data.get("complete"):
        problems.append("fuzz: the run did not complete")
    if data["failures_total"]:
        problems.append(f"fuzz: {data['failures_total']} failing cases (seed {data['seed']})")
    refused = sum(c.get("refused", 0) for c in data["conversions"].values())
    if refused:
        problems.append(f"fuzz: {refused} refusals outside the known gaps")
    if data["cases"] < MIN_FUZZ_CASES:
        problems.append(f"fuzz: {data['cases']} cases < {MIN_FUZZ_CASES} (the deep profile)")
    return problems


def check_shapes(record) -> list[str]:
    data = record["data"]
    problems = []
    for r in data["rows"]:
        if "cost_ratio" not in r:
            problems.append(f"shapes {r['model']}: a conversion failed")
            continue
        if not r["polymorphic"].get("passed"):
            problems.append(f"shapes {r['model']}: the polymorphic conversion's parity failed")
        if r["cost_ratio"] > data["cost_goal"]:
            problems.append(f"shapes {r['model']}: polymorphic conversion {r['cost_ratio']}x the static one "
                            f"> {data['cost_goal']}x")
        ratio = r["latency"].get("ratio")
        if ratio is None or ratio > data["latency_goal"]:
            problems.append(f"shapes {r['model']}: polymorphic latency {ratio}x the static model's "
                            f"> {data['latency_goal']}x")
    return problems


def check_latency(record) -> list[str]:
    data = record["data"]
    problems = []
    for r in data["rows"]:
        if r.get("exit_code"):
            problems.append(f"latency {r['model']}: conversion failed")
            continue
        for b, c in r["batches"].items():
            if not c["goal_met"]:
                problems.append(f"latency {r['model']} ({r['framework']}) at batch {b}: {c['ratio']}x the source "
                                f"> {data['goal_ratio']}x")
    return problems


CHECKS = {"latency.json": ("make bench", check_latency), "shapes.json": ("make bench", check_shapes), "memory.json": ("make bench", check_memory), "onnx2tf.json": ("make bench", check_speed),
          "zoo.json": ("make zoo", check_zoo), "fuzz.json": ("make fuzz", check_fuzz)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS), help="folder of result files (default bench/results)")
    args = p.parse_args(argv)
    folder = Path(args.results)
    problems = []
    for name, (target, check) in CHECKS.items():
        record = _load(folder, name)
        if record is None:
            problems.append(f"{name}: missing (run `{target}`)")
            continue
        found = check(record)
        state = "ok" if not found else "NOT MET"
        print(f"{name:<13} {state:<8} commit {record.get('commit')}{' (dirty)' if record.get('dirty') else ''}, "
              f"{record.get('finished_utc')}, `{record.get('command')}`")
        problems += found
    for line in problems:
        print(f"  goal not met: {line}")
    print("bench-check: " + ("every goal met" if not problems else f"{len(problems)} goal(s) not met"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
