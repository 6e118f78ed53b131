"""Batch entries in worker processes: one fresh process per entry, supervised from outside.

A segfault, an ``abort()`` or the kernel's OOM kill inside TensorFlow, torch or
onnxruntime ends only that entry's process; its memory goes back to the system
when it exits.  The supervisor (``Job``) turns every way a worker can end into
that entry's row: the worker's own result, a signal, ``--timeout`` or
``--max-memory`` (resident memory of the worker and its children, watched every
0.1 s: a hard address-space limit would stop TensorFlow from even importing).

The worker is ``python -m pipeline.batch_worker TASK.json``: it converts one
entry with ``pipeline.convert``, writes its progress and errors to
``output_dir/NAME.log`` (its stdout and stderr) and its row to a result file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path

PER_ENTRY_BYTES = 3 << 30  # what one conversion of a mid-sized model takes, for the default --jobs
POLL_S = 0.1
GRACE_S = 10.0  # how long an interrupted worker gets to clean up before it is killed
TAIL_LINES = 12
EXIT_CRASHED = 4  # a worker that died is an internal error of that entry, never "passed"


# ---------------------------------------------------------------- the worker process


def convert_entry(task: dict) -> dict:
    """Convert one batch entry in this process; return its row (never raises but for Ctrl-C)."""
    from .convert import Options, Progress, convert
    from .errors import EXIT_INTERNAL, PipelineError
    from .spec import parse_input

    row = {"name": task["name"], "model": task["model"], "out": task["out"]}
    opts = Options(model=task["model"], to=task.get("to"), out=task["out"],
                   inputs=[parse_input(text) for text in task["inputs"]],
                   atol=task.get("atol", 1e-4), rtol=task.get("rtol", 1e-4), opset=task.get("opset"),
                   layout=task.get("layout", "source"), seed=task.get("seed", 0), fold_bn=task.get("fold_bn", False),
                   gradients=task.get("gradients", False), static=task.get("static", False),
                   export=list(task.get("export") or []), calibration=task.get("calibration"))
    try:
        result = convert(opts, Progress(True, stream=sys.stdout))
        worst = max((c["max_abs_err"] for c in result.report["parity"]["outputs"]), default=0.0)
        report_path = result.out_dir / "report.json"
        rep = json.loads(report_path.read_text())
        rep["input_hash"] = task["digest"]
        report_path.write_text(json.dumps(rep, indent=2))
        status = "passed" if result.exit_code == 0 else "parity-failed"
        row.update(status=status, exit_code=result.exit_code, target=rep["target"], max_abs_err=worst,
                   detail=str(result.out_dir))
    except PipelineError as exc:
        row.update(status="error", exit_code=exc.exit_code, detail=str(exc))
    except Exception as exc:  # one entry's bug is that entry's row
        if task.get("debug"):
            traceback.print_exc(file=sys.stdout)
        row.update(status="error", exit_code=EXIT_INTERNAL,
                   detail=f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
    if row["status"] == "error":
        print(f"error: {row['detail']}", flush=True)
    else:
        print(f"{row['status']}: max_abs_err={row['max_abs_err']:.3g} -> {row['detail']}", flush=True)
    return row


def _exit_with_parent() -> None:
    """End this worker when its supervisor dies (it runs in its own session, so no signal reaches it)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(EXIT_CRASHED)

    threading.Thread(target=watch, daemon=True).start()


def worker_main(argv: list[str]) -> int:
    from . import quiet

    task = json.loads(Path(argv[0]).read_text())
    quiet.set_debug(bool(task.get("debug")))
    _exit_with_parent()
    try:
        row = convert_entry(task)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    result = Path(task["result"])
    tmp = result.with_name(result.name + ".tmp")
    tmp.write_text(json.dumps(row, default=str))
    tmp.rename(result)  # the supervisor sees a whole result or none
    return 0


# ---------------------------------------------------------------- the supervisor


def _size(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its children, in bytes (0 once it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _worker_env(threads: int | None) -> dict:
    """The worker imports this very pipeline (not another install) and logs line by line."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:  # N workers on N cores: one math thread each, not N each
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def remove_partial(out: Path, pid: int) -> None:
    """Undo what a killed worker left half done: its temporary folder; a good output it had moved aside."""
    shutil.rmtree(out.with_name(f".{out.name}.tmp-{pid}"), ignore_errors=True)
    trash = out.with_name(f".{out.name}.old-{pid}")
    if trash.exists():
        if out.exists():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.rename(out)


def log_tail(log: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


class Job:
    """One entry's worker process, from start to its row."""

    def __init__(self, task: dict, limits: dict, work: Path, threads: int | None = None):
        self.task = dict(task, result=str(work / f"{task['name']}.result.json"), debug=bool(limits.get("debug")))
        self.timeout = limits.get("timeout")
        self.max_memory = limits.get("max_memory")
        self.threads = threads
        self.out = Path(task["out"])
        self.log = self.out.parent / f"{task['name']}.log"
        self.spec = work / f"{task['name']}.task.json"
        self.proc: subprocess.Popen | None = None
        self.start_time = 0.0
        self.peak = 0

    @property
    def name(self) -> str:
        return self.task["name"]

    def start(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        Path(self.task["result"]).unlink(missing_ok=True)
        self.spec.write_text(json.dumps(self.task))
        with open(self.log, "w") as log:
            log.write(f"pipeline batch: {self.name}: {self.task['model']} -> {self.out}\n")
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.batch_worker", str(self.spec)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=_worker_env(self.threads), start_new_session=True,
                                         cwd=self.task.get("cwd"))
        self.start_time = time.monotonic()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def poll(self) -> dict | None:
        """The entry's row once its worker has ended (killing it past a limit), else None."""
        code = self.proc.poll()
        if code is None:
            elapsed = time.monotonic() - self.start_time
            if self.timeout and elapsed > self.timeout:
                return self._stop("timed-out", f"exceeded --timeout {self.timeout:g} s")
            if self.max_memory:
                rss = tree_rss(self.proc.pid)
                self.peak = max(self.peak, rss)
                if rss > self.max_memory:
                    return self._stop("out-of-memory",
                                      f"used {_size(rss)}, past --max-memory {_size(self.max_memory)}")
            return None
        return self._finished(code)

    def _stop(self, status: str, why: str) -> dict:
        self._signal(signal.SIGKILL)
        self.proc.wait()
        return self._crash_row(status, why)

    def _finished(self, code: int) -> dict:
        result = Path(self.task["result"])
        if result.is_file():
            row = json.loads(result.read_text())
            row["seconds"] = round(time.monotonic() - self.start_time, 2)
            return row
        if code < 0:
            try:
                why = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                why = f"killed by signal {-code}"
        else:
            why = f"worker exited with code {code} without a result"
        return self._crash_row("crashed", why, returncode=code)

    def _crash_row(self, status: str, why: str, returncode: int | None = None) -> dict:
        remove_partial(self.out, self.proc.pid)
        with open(self.log, "a") as log:
            log.write(f"{status}: {why}\n")
        tail = log_tail(self.log)
        last = next((line for line in reversed(tail[:-1]) if not line.startswith("pipeline batch:")), "")
        detail = why + (f"; last log line: {last[:200]}" if last else "") + f" (log: {self.log})"
        row = {"name": self.name, "model": self.task["model"], "out": str(self.out), "status": status,
               "exit_code": EXIT_CRASHED, "detail": detail, "log_tail": tail,
               "seconds": round(time.monotonic() - self.start_time, 2)}
        if returncode is not None:
            row["returncode"] = returncode
        return row

    def interrupt(self) -> None:
        self._signal(signal.SIGINT)

    def settle_after_interrupt(self, deadline: float) -> dict | None:
        """Wait for an interrupted worker; its row if it still finished, else None (not run)."""
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        remove_partial(self.out, self.proc.pid)
        result = Path(self.task["result"])
        if result.is_file():
            return json.loads(result.read_text())
        with open(self.log, "a") as log:
            log.write("not run: the batch was interrupted\n")
        return None


def run_one(task: dict, limits: dict, work: Path) -> dict:
    """Run one entry to its row, blocking (what a Ray task does on its node)."""
    job = Job(task, limits, work)
    job.start()
    try:
        while (row := job.poll()) is None:
            time.sleep(POLL_S)
    except BaseException:
        job._signal(signal.SIGKILL)
        job.proc.wait()
        remove_partial(job.out, job.proc.pid)
        raise
    return row


def default_jobs(max_memory: int | None = None) -> int:
    """As many workers as there are cores, but no more than the free memory holds."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    fits = psutil.virtual_memory().available // (max_memory or PER_ENTRY_BYTES)
    return int(max(1, min(cores, fits)))


def run_local(tasks: list[dict], jobs: int, limits: dict, display) -> tuple[dict[str, dict], bool]:
    """Run the tasks, ``jobs`` at a time, in order; return (rows by name, interrupted)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs) if jobs > 1 else None
    pending = deque(tasks)
    running: list[Job] = []
    rows: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="pipeline-batch-"))
    try:
        while pending or running:
            while pending and len(running) < jobs:
                job = Job(pending.popleft(), limits, work, threads)
                job.start()
                running.append(job)
                display.started(job.name, job.task["model"])
            for job in list(running):
                row = job.poll()
                if row is not None:
                    running.remove(job)
                    rows[job.name] = row
                    display.finished(row)
            display.tick()
            time.sleep(POLL_S)
        return rows, False
    except KeyboardInterrupt:
        for job in running:
            job.interrupt()
        deadline = time.monotonic() + GRACE_S
        for job in running:
            row = job.settle_after_interrupt(deadline)
            if row is not None:
                rows[job.name] = row
        return rows, True
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- progress


class Display:
    """Batch progress on stderr: a live rich line on a terminal, plain lines otherwise."""

    def __init__(self, total: int, done: int = 0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.failed = total, done, 0
        self.running: list[str] = []
        self.start = time.monotonic()
        self.live = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.live = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn(),
                                 console=Console(file=self.stream), transient=False)
            self.bar = self.live.add_task(self._text(), total=total, completed=done)
            self.live.start()
        elif done:
            self._line(f"{done} of {total} entries unchanged since their last pass: skipped")

    def _text(self) -> str:
        running = ", ".join(self.running[:3]) + (" ..." if len(self.running) > 3 else "")
        return (f"done {self.done}/{self.total}  failed {self.failed}  running {len(self.running)}"
                + (f" ({running})" if running else ""))

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:7.1f}s] {text}", file=self.stream, flush=True)

    def started(self, name: str, model: str) -> None:
        self.running.append(name)
        if self.live is None:
            self._line(f"start {name}: {model}")
        self.tick()

    def finished(self, row: dict) -> None:
        if row["name"] in self.running:
            self.running.remove(row["name"])
        self.done += 1
        self.failed += row["status"] not in ("passed", "skipped")
        line = f"[{self.done}/{self.total}] {row['name']}: {row['status']} ({row.get('seconds', 0)}s)"
        if self.live is None:
            self._line(line)
        else:
            self.live.console.print(line, markup=False, highlight=False)
        self.tick()

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self.bar, description=self._text(), completed=self.done)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
