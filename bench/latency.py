"""Benchmark: inference latency of a model converted into its own framework, against the source.

Run with ``python bench/latency.py [--models resnet,MobileNetV2] [--rounds N]`` (meant for ``make bench``).

A round trip (PyTorch -> PyTorch with ``--to torch``, Keras -> Keras with ``--to keras``)
isolates what the generated code costs: the same framework runs the source and its
conversion, so any difference is the generated ``model.py`` (extra transposes, functional
ops where the source had layers, a lost fusion).  The issue's goal: at most 1.05x the
source's latency at batch 1 and at batch 32.

Models: three of ``models/torch_zoo.py`` (resnet, mobilenet, convnext; 32x32 images) and three
``keras.applications`` (MobileNetV2, ResNet50, DenseNet121 at 32x32, with the stand-in trained
statistics of bench/keras_zoo.py).  Each is converted once with its batch symbolic
(``--input x=B=2,...``), so one conversion serves both batch sizes.

Timing, in one process per model: both models are loaded side by side, warmed up, then called
alternately (source first on even rounds, the conversion first on odd ones, so drift and
cache effects fall on both) and the median of each is taken.  PyTorch runs eagerly under
``torch.no_grad()``; Keras as ``predict`` does, through a ``tf.function`` of
``model(x, training=False)``.  Both frameworks run on one thread (``--threads``) and each call
is timed in CPU seconds of this process (``time.process_time``) as well as wall-clock: on a
machine other work shares, wall-clock medians move with its load (a 3x swing was seen with a
load average of 7 on 2 cores), CPU time much less.  The ratio of CPU-time medians is the
number checked against the goal.

Writes bench/results/latency.json (with the commit and the machine, bench/evidence.py), prints
a Markdown table, and exits 1 when a conversion fails or a ratio is above the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

GOAL = 1.05
BATCHES = (1, 32)
TORCH_MODELS = {"resnet": "x", "mobilenet": "x", "convnext": "x"}  # models/torch_zoo.py members, their input
KERAS_MODELS = ("MobileNetV2", "ResNet50", "DenseNet121")


def _source(name: str, folder: Path) -> tuple[str, str, str, tuple[int, ...]]:
    """(framework, MODEL argument, input name, one example's shape) of a bench model."""
    if name in TORCH_MODELS:
        from models.torch_zoo import SHAPES

        return "torch", f"torch_zoo:{name}", TORCH_MODELS[name], tuple(SHAPES[name][TORCH_MODELS[name]][1:])
    from keras_zoo import write_factory

    path, size = write_factory(name, folder)
    return "keras", f"{path}:build", "image", (size, size, 3)


def _timer(framework: str, model, x):
    """A no-argument call of ``model`` on ``x``, as the framework runs inference."""
    if framework == "torch":
        import torch

        xt = torch.from_numpy(x)

        def call():
            with torch.no_grad():
                model(xt)
        return call
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    return lambda: fn(xt).numpy()


def _threads(n: int) -> None:
    """Both frameworks on ``n`` intra-op threads (set before either runs anything)."""
    import torch

    from pipeline.quiet import import_tensorflow

    torch.set_num_threads(n)
    tf = import_tensorflow()[0]
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def measure(name: str, rounds: int, threads: int) -> dict:
    """Convert ``name`` into its own framework and time it against its source (this process)."""
    import numpy as np

    import pipeline.quiet  # noqa: F401  (silences TensorFlow before anything imports it)

    _threads(threads)
    from pipeline.convert import Options, convert
    from pipeline.sources import import_file, resolve
    from pipeline.spec import parse_input

    folder = Path(tempfile.mkdtemp(prefix=f"latency-{name}-", dir=REPO / "build"))
    framework, model_arg, input_name, shape = _source(name, folder)
    spec = parse_input(f"{input_name}=B=2,{','.join(map(str, shape))}")
    t = time.perf_counter()
    result = convert(Options(model=model_arg, to=framework, out=str(folder / "out"), inputs=[spec]))
    row = {"model": name, "framework": framework, "input": [None, *shape], "exit_code": result.exit_code,
           "convert_s": round(time.perf_counter() - t, 1), "batches": {}}
    if result.exit_code != 0:
        return row
    source = resolve(model_arg, [spec], {}).obj
    converted = import_file(result.out_dir / "model.py", "_latency").load()
    for batch in BATCHES:
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        calls = [_timer(framework, source, x), _timer(framework, converted, x)]
        for call in calls * 3:  # warm-up: graphs traced, allocator settled
            call()
        cpu, wall = [[], []], [[], []]
        n = rounds  # batch 32 too: with 10 rounds ResNet50 read 1.106x, with 30 1.048x
        for i in range(n):
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                c, w = time.process_time(), time.perf_counter()
                calls[k]()
                cpu[k].append(time.process_time() - c)
                wall[k].append(time.perf_counter() - w)
        src_ms, conv_ms = (statistics.median(ts) * 1e3 for ts in cpu)
        src_wall, conv_wall = (statistics.median(ts) * 1e3 for ts in wall)
        row["batches"][str(batch)] = {"source_ms": round(src_ms, 3), "converted_ms": round(conv_ms, 3),
                                      "ratio": round(conv_ms / src_ms, 3), "rounds": n,
                                      "source_wall_ms": round(src_wall, 3), "converted_wall_ms": round(conv_wall, 3),
                                      "wall_ratio": round(conv_wall / src_wall, 3), "goal_met": conv_ms / src_ms <= GOAL}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset (default: all six)")
    parser.add_argument("--rounds", type=int, default=40, help="alternating rounds per batch size")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both frameworks (default 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: measure one model, print its row
    args = parser.parse_args(argv)
    if args.one:
        print("LATENCY " + json.dumps(measure(args.one, args.rounds, args.threads)), flush=True)
        return 0
    from evidence import RESULTS, write

    names = args.models.split(",") if args.models else [*TORCH_MODELS, *KERAS_MODELS]
    (REPO / "build").mkdir(exist_ok=True)
    rows = []
    for name in names:  # each model in its own process: one model's memory and threads do not weigh on the next
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--rounds", str(args.rounds),
                               "--threads", str(args.threads)],
                              check=False, capture_output=True, text=True, cwd=REPO, timeout=3600)
        line = next((li for li in proc.stdout.splitlines() if li.startswith("LATENCY ")), None)
        if line is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            rows.append({"model": name, "exit_code": proc.returncode, "error": tail, "batches": {}})
        else:
            rows.append(json.loads(line[len("LATENCY "):]))
        print(_table_row(rows[-1]), flush=True)
    ok = all(r.get("exit_code") == 0 and r["batches"] and all(b["goal_met"] for b in r["batches"].values())
             for r in rows)
    command = "python bench/latency.py" + (f" --models {args.models}" if args.models else "") + \
        (f" --rounds {args.rounds}" if args.rounds != 40 else "")
    command += f" --threads {args.threads}" if args.threads != 1 else ""
    write(RESULTS / "latency.json", "latency", {"goal_ratio": GOAL, "batches": list(BATCHES), "threads": args.threads,
                                                "timing": "median CPU time (time.process_time) of alternating calls",
                                                "rows": rows, "all_goals_met": ok}, command)
    return 0 if ok else 1


def _table_row(row: dict) -> str:
    cells = [row["model"], row.get("framework", "?")]
    for batch in BATCHES:
        b = row["batches"].get(str(batch))
        cells.append(f"{b['source_ms']:.2f} / {b['converted_ms']:.2f} ms = {b['ratio']:.3f}x (wall {b['wall_ratio']:.3f}x)"
                     if b else
                     row.get("error", f"exit {row.get('exit_code')}"))
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
