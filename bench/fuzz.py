"""Deep conv/pool fuzzing (``make fuzz``): N hypothesis cases through the real pipeline.

Draws cases from the strategies in ``tests/fuzz_cases.py`` — mostly raw ONNX graphs
(each converted to PyTorch *and* Keras), plus a share of real Keras models (-> PyTorch)
and real PyTorch modules (-> Keras) — converts every one, and never stops on a failure:
each verdict is counted.  Progress goes to stdout every ~200 cases; the summary is
written to ``build/fuzz/last.json``:

- ``cases`` (total and per rendering), ``seconds``, ``seed``, ``peak_rss_mb``, and
  ``complete`` (false in the partial summary rewritten at every progress line);
- ``conversions``: per ``source->target``, counts of pass / known_gap / refused /
  mismatch / crash and the worst passing ``max_abs_err``; ``known_gap`` is an exit 3
  that an entry of tests/known_gaps.py covers, ``refused`` any other exit 3 (a failure);
- ``refusals``: reason -> count (exit 3, as the pipeline worded it), and one case each
  in ``refusal_examples``;
- ``failures``: every mismatch or crash with its case (paste it into
  tests/test_fuzz_regressions.py to keep it).

Every run draws a new seed unless ``--seed`` is given (it is printed first, and stored in
the summary: ``--seed N`` replays a run).  With ``--jobs N`` (default: the CPU count) the
cases are split over N worker processes, worker ``i`` drawing its share from seed
``seed + i``; each writes ``last.part<i>.json`` as it goes and the parent merges them.
The finished summary is also stored with the commit and the machine in
``bench/results/fuzz.json`` (``--results``), the file the README's fuzz numbers come from.

Exit status 0 only if there was no mismatch, no crash and no refusal outside the known gaps.

    python bench/fuzz.py --cases 10000 [--seed N] [--jobs 2] [--keras-share 0.02] [--torch-share 0.02]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import secrets
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import fuzz_cases  # noqa: E402
from hypothesis import given, seed, settings  # noqa: E402

MAX_FAILURES_KEPT = 200
STATUSES = ("pass", "known_gap", "refused", "mismatch", "crash")


class Tally:
    """Counts verdicts as cases come in; prints progress; renders the JSON summary."""

    def __init__(self, total: int, every: int = 200, out: Path | None = None, seed_value: int = 0):
        self.total = total
        self.out = out
        self.seed = seed_value
        self.every = every
        self.start = time.perf_counter()
        self.cases = collections.Counter()
        self.conversions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.worst: dict[str, float] = collections.defaultdict(float)
        self.refusals = collections.Counter()
        self.refusal_examples: dict[str, str] = {}
        self.failures: list[dict] = []
        self.failure_count = 0

    @property
    def done(self) -> int:
        return sum(self.cases.values())

    def add(self, outcome) -> None:
        case = outcome.case
        self.cases[case.render] += 1
        for v in outcome.verdicts:
            key = f"{v.source}->{v.target}"
            self.conversions[key][v.status] += 1
            if v.status == "pass":
                self.worst[key] = max(self.worst[key], v.max_abs_err or 0.0)
            elif v.status in ("refused", "known_gap"):
                self.refusals[v.reason] += 1
                self.refusal_examples.setdefault(v.reason, repr(case))
        if not outcome.ok:
            self.failure_count += 1
            bad = "; ".join(f"{v.source}->{v.target} {v.status}: {v.reason[:160]}" for v in outcome.verdicts if not v.ok)
            print(f"  FAIL {case!r}\n       {bad}", flush=True)
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append({"case": repr(case), "verdicts": [v.__dict__ for v in outcome.verdicts if not v.ok]})
        if self.done % self.every == 0 or self.done == self.total:
            self.progress()
            if self.out is not None:  # a partial summary survives an interrupted run
                self.out.write_text(json.dumps({**self.summary(self.seed), "complete": self.done >= self.total}, indent=2))

    def totals(self) -> collections.Counter:
        out = collections.Counter()
        for counts in self.conversions.values():
            out.update(counts)
        return out

    def progress(self) -> None:
        elapsed = time.perf_counter() - self.start
        t = self.totals()
        rate = self.done / elapsed if elapsed else 0.0
        print(f"[{self.done:>6}/{self.total}] {elapsed / 60:5.1f} min  {rate:5.2f} cases/s  "
              f"pass {t['pass']}  known gap {t['known_gap']}  refused {t['refused']}  mismatch {t['mismatch']}  "
              f"crash {t['crash']}  "
              f"rss {peak_rss_mb():.0f} MB", flush=True)

    def summary(self, seed_value: int) -> dict:
        return {
            "cases": self.done,
            "cases_by_rendering": dict(self.cases),
            "seed": seed_value,
            "seconds": round(time.perf_counter() - self.start, 1),
            "peak_rss_mb": round(peak_rss_mb()),
            "max_abs_err_allowed": fuzz_cases.MAX_ABS_ERR,
            "conversions": {k: {**{s: v[s] for s in STATUSES},
                                "worst_passing_max_abs_err": self.worst.get(k, 0.0)}
                            for k, v in sorted(self.conversions.items())},
            "refusals": dict(self.refusals.most_common()),
            "refusal_examples": {reason: self.refusal_examples[reason] for reason, _ in self.refusals.most_common()},
            "failures_total": self.failure_count,
            "failures": self.failures,
        }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rendering(render: str, n: int, seed_value: int, tally: Tally, workdir: Path) -> None:
    """Draw ``n`` cases of ``render`` with hypothesis (no shrinking) and record each."""
    if n <= 0:
        return

    @seed(seed_value)
    @settings(settings.get_profile("fuzz-deep"), max_examples=n)
    @given(case=fuzz_cases.cases(render))
    def draw(case):
        tally.add(fuzz_cases.run_case(case, workdir))

    draw()


def split(total: int, keras_share: float, torch_share: float) -> dict[str, int]:
    """How many cases of each rendering: the shares of ``total``, the rest ONNX."""
    keras = round(total * keras_share)
    torch = round(total * torch_share)
    return {"keras": keras, "torch": torch, "onnx": max(total - keras - torch, 0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10000, help="number of cases (default 10000)")
    p.add_argument("--seed", type=int, default=None,
                   help="replay a run's seed (default: a new random seed, printed)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    p.add_argument("--keras-share", type=float, default=0.02, help="share of real Keras models (default 0.02)")
    p.add_argument("--torch-share", type=float, default=0.02, help="share of real PyTorch modules (default 0.02)")
    p.add_argument("--out", default=str(REPO / "build" / "fuzz" / "last.json"))
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "fuzz.json"),
                   help="where the finished summary is kept with commit and machine ('' to skip)")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
        print(f"fuzz: new seed {args.seed} (replay with --seed {args.seed})", flush=True)
    if args.cases < 1:
        p.error("--cases must be at least 1")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = min(args.jobs, args.cases)
    if jobs == 1:
        summary = run(args.cases, args.seed, args.keras_share, args.torch_share, out)
    else:
        summary = run_parallel(args, jobs, out)
    out.write_text(json.dumps(summary, indent=2))
    code = report(summary, out)
    if args.results:  # workers get --results '': only the merged summary is kept
        import evidence

        kept = evidence.write(Path(args.results), "fuzz", {**summary, "exit_code": code},
                             command=f"bench/fuzz.py --cases {args.cases} --seed {args.seed} --jobs {args.jobs}")
        print(f"results: {kept}")
    return code


def run(cases: int, seed_value: int, keras_share: float, torch_share: float, out: Path, tag: str = "") -> dict:
    """Draw and convert ``cases`` cases in this process; the summary (also rewritten at ``out`` as it goes)."""
    plan = split(cases, keras_share, torch_share)
    print(f"{tag}fuzz: {cases} cases (onnx {plan['onnx']} x2 targets, keras {plan['keras']}, "
          f"torch {plan['torch']}), seed {seed_value}", flush=True)
    tally = Tally(sum(plan.values()), out=out, seed_value=seed_value)
    with tempfile.TemporaryDirectory(prefix="pipeline-fuzz-") as work:
        for render in ("keras", "torch", "onnx"):  # the slow renderings first: the rate settles after
            run_rendering(render, plan[render], seed_value, tally, Path(work))
    return {**tally.summary(seed_value), "complete": True}


def run_parallel(args, jobs: int, out: Path) -> dict:
    """``jobs`` workers (this script, one process each) on shares of the cases; their summaries merged."""
    start = time.perf_counter()
    shares = [args.cases // jobs + (1 if i < args.cases % jobs else 0) for i in range(jobs)]
    parts = [out.with_name(f"{out.stem}.part{i}.json") for i in range(jobs)]
    print(f"fuzz: {args.cases} cases over {jobs} workers (seeds {args.seed}..{args.seed + jobs - 1})", flush=True)
    procs = []
    for i, (n, part) in enumerate(zip(shares, parts)):
        part.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--cases", str(n), "--seed", str(args.seed + i), "--jobs", "1",
               "--keras-share", str(args.keras_share), "--torch-share", str(args.torch_share), "--out", str(part), "--results", ""]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    relays = [threading.Thread(target=_relay, args=(proc, f"[w{i}] "), daemon=True) for i, proc in enumerate(procs)]
    for relay in relays:
        relay.start()
    for proc in procs:
        proc.wait()
    for relay in relays:
        relay.join()
    summaries = [json.loads(part.read_text()) for part in parts if part.exists()]
    merged = merge(summaries, time.perf_counter() - start, args.seed)
    merged["complete"] = len(summaries) == jobs and all(s.get("complete") for s in summaries) \
        and all(proc.returncode in (0, 1) for proc in procs)
    return merged


def _relay(proc, tag: str) -> None:
    """Copy a worker's progress and failure lines to stdout, tagged (its summary is in its part file)."""
    printing = True
    for line in proc.stdout:
        if line.startswith("\n") or line.strip() == "" or " cases in " in line:
            printing = False  # the worker's own final report: the merged one follows
        if printing:
            print(tag + line, end="", flush=True)


def merge(parts: list[dict], seconds: float, seed_value: int) -> dict:
    """One summary from the workers' summaries: counts added, worst errors and peak RSS maxed."""
    conversions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    worst: dict[str, float] = collections.defaultdict(float)
    refusals, examples, failures = collections.Counter(), {}, []
    for part in parts:
        for key, counts in part["conversions"].items():
            conversions[key].update({s: counts.get(s, 0) for s in STATUSES})
            worst[key] = max(worst[key], counts["worst_passing_max_abs_err"])
        refusals.update(part["refusals"])
        for reason, example in part["refusal_examples"].items():
            examples.setdefault(reason, example)
        failures.extend(part["failures"])
    return {
        "cases": sum(p["cases"] for p in parts),
        "cases_by_rendering": dict(sum((collections.Counter(p["cases_by_rendering"]) for p in parts),
                                       collections.Counter())),
        "seed": seed_value,
        "seeds": [p["seed"] for p in parts],
        "jobs": len(parts),
        "seconds": round(seconds, 1),
        "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
        "max_abs_err_allowed": fuzz_cases.MAX_ABS_ERR,
        "conversions": {k: {**{s: v[s] for s in STATUSES},
                            "worst_passing_max_abs_err": worst[k]} for k, v in sorted(conversions.items())},
        "refusals": dict(refusals.most_common()),
        "refusal_examples": {reason: examples[reason] for reason, _ in refusals.most_common()},
        "failures_total": sum(p["failures_total"] for p in parts),
        "failures": failures[:MAX_FAILURES_KEPT],
    }


def report(summary: dict, out: Path) -> int:
    """Print the summary; 0 only if there was no mismatch, no crash and every case ran."""
    print(f"\n{summary['cases']} cases in {summary['seconds'] / 60:.1f} min "
          f"({summary['cases_by_rendering']}), peak RSS {summary['peak_rss_mb']} MB")
    for key, counts in summary["conversions"].items():
        print(f"  {key:<14} pass {counts['pass']:>6}  known gap {counts.get('known_gap', 0):>5}  "
              f"refused {counts['refused']:>5}  mismatch {counts['mismatch']:>3}  "
              f"crash {counts['crash']:>3}  worst passing err {counts['worst_passing_max_abs_err']:.2g}")
    print("refusals (exit 3):")
    for reason, count in list(summary["refusals"].items())[:15]:
        print(f"  {count:>6}  {reason[:110]}")
    print(f"failures: {summary['failures_total']}  (details in {out})")
    for f in summary["failures"][:10]:
        print(f"  {f['case']}")
        for v in f["verdicts"]:
            print(f"    {v['source']} -> {v['target']}: {v['status']} (exit {v['exit_code']}) {v['reason'][:200]}")
    if not summary.get("complete", True):
        print("incomplete: a worker stopped early (its lines above say why)")
        return 1
    return 0 if summary["failures_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
