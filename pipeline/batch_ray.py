"""``batch --ray [ADDRESS]``: the entries as Ray tasks, on an existing cluster or a Ray instance started here.

Each task converts one entry on its node exactly as a local run does (a fresh worker
process under the same ``--timeout`` / ``--max-memory`` supervision, in a temporary
folder of that node) and returns the entry's row, its log and its output files as
bytes.  The driver writes ``output_dir`` itself, with the same rule as a local run
(a failing result never replaces a passing one), so no shared filesystem is assumed.
A task whose process dies is retried once by Ray, then reported as crashed.

Ray is an optional extra (``pip install .[cluster]``).  The model named by an entry
must be importable on the nodes: a registered name, an installed module, or a file at
the same path (relative to the driver's working directory when the node has it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .errors import BadInput

CONNECT_TIMEOUT_S = 5.0
OBJECT_STORE_BYTES = 512 << 20  # a local instance's shared memory; larger results spill to disk
CANCEL_GRACE_S = 10.0
CHUNK_BYTES = 64 << 20


def import_ray():
    """Ray, or one line saying how to install it (exit 2)."""
    try:
        import ray
    except ImportError:
        raise BadInput("--ray needs Ray, which is not installed: pip install .[cluster]") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, where ``ray.init`` would retry for a minute."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"--ray {address}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise BadInput(f"--ray {address}: cannot reach a Ray cluster there ({exc.strerror or exc})") from None


def connect(ray, address: str, jobs: int | None) -> None:
    """Join the cluster at ``address``, or start a small local instance for ``address == "local"``."""
    import logging

    from .quiet import native_stderr_to_log

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves this machine
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  ignore_reinit_error=True)
    if address == "local":
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        kwargs.update(num_cpus=jobs or os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                      runtime_env={"env_vars": {"PYTHONPATH": path}}, _node_ip_address="127.0.0.1")
    else:
        _check_reachable(address)
        kwargs["address"] = address
    try:
        with native_stderr_to_log():
            ray.init(**kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadInput(f"--ray {address}: cannot start or join Ray: {first}") from None


def convert_on_node(task: dict, limits: dict) -> dict:
    """The Ray task: one entry converted on this node; its row and log, and its files as chunks of bytes."""
    from .batch_worker import run_one

    _remove_stale()
    work = Path(tempfile.mkdtemp(prefix=f"pipeline-ray-{os.getpid()}-"))
    try:
        node_root = work / "out"
        node_root.mkdir()
        driver_out = Path(task["out"])
        cwd = task.get("cwd")
        local = dict(task, out=str(node_root / task["name"]), cwd=cwd if cwd and Path(cwd).is_dir() else str(work))
        row = run_one(local, limits, work)
        log_file = node_root / f"{task['name']}.log"
        # The row and the log name this node's folder; the driver's is where the entry lands.
        log = log_file.read_bytes().replace(str(node_root).encode(), str(driver_out.parent).encode())
        files = {str(f.relative_to(node_root)): _put_chunks(f) for f in sorted(node_root.rglob("*"))
                 if f.is_file() and f != log_file}
        row = json.loads(json.dumps(row, default=str).replace(str(node_root), str(driver_out.parent)))
        return {"row": row, "files": files, "log": log, "node": socket.gethostname()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _put_chunks(path: Path) -> list:
    """A file as object-store chunks: neither the task nor the driver holds a large model's files whole."""
    import ray

    refs = []
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            refs.append(ray.put(chunk))
            del chunk
    return refs


def _remove_stale() -> None:
    """Remove the folders of earlier tasks on this node whose process was killed before it could."""
    if not Path("/proc/self").exists():  # no way to tell a live task's folder from a dead one's
        return
    for folder in Path(tempfile.gettempdir()).glob("pipeline-ray-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def install(task: dict, result: dict, get) -> dict:
    """Write one task's log and files under ``output_dir`` as a local run would; return its row."""
    from .convert import _install

    out = Path(task["out"])
    name = task["name"]
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{name}.log").write_bytes(result["log"])
    row = result["row"]
    mine = {rel.split("/", 1)[1]: data for rel, data in result["files"].items()
            if "/" in rel and rel.split("/", 1)[0] in (name, f"{name}.failed")}
    if mine:
        tmp = out.with_name(f".{name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for rel, chunks in mine.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with open(tmp / rel, "wb") as f:
                    for ref in chunks:
                        f.write(get(ref))
            final = _install(tmp, out, row.get("status") == "passed")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        row["detail"] = str(final)
    return row


def _died(task: dict, exc: BaseException) -> dict:
    """The row of a task whose process died twice (Ray retried it once)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"name": task["name"], "model": task["model"], "out": task["out"], "status": "crashed", "exit_code": 4,
            "detail": f"the Ray task died twice: {type(exc).__name__}: {first}"}


def run_ray(tasks: list[dict], address: str, jobs: int | None, limits: dict, display) -> tuple[dict[str, dict], bool]:
    """Run the tasks on Ray, at most ``jobs`` (default: the cluster's CPUs) in flight; (rows, interrupted)."""
    ray = import_ray()
    rows: dict[str, dict] = {}
    in_flight: dict = {}
    try:
        connect(ray, address, jobs)
        remote = ray.remote(num_cpus=1, max_retries=1)(convert_on_node)
        width = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        cwd = os.getcwd()
        pending = list(tasks)
        while pending or in_flight:
            while pending and len(in_flight) < width:
                task = pending.pop(0)
                started = time.monotonic()
                in_flight[remote.remote(dict(task, cwd=cwd), limits)] = (task, started)
                display.started(task["name"], task["model"])
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.2)
            for ref in done:
                task, started = in_flight.pop(ref)
                try:
                    row = install(task, ray.get(ref), ray.get)
                except (KeyboardInterrupt, OSError):
                    raise
                except Exception as exc:  # the task's process died on both tries
                    row = _died(task, exc)
                row.setdefault("seconds", round(time.monotonic() - started, 2))
                rows[task["name"]] = row
                display.finished(row)
            display.tick()
        return rows, False
    except KeyboardInterrupt:
        for ref in in_flight:  # the task cleans its node's folder and stops its worker
            ray.cancel(ref)
        ray.wait(list(in_flight), num_returns=len(in_flight), timeout=CANCEL_GRACE_S)
        for ref in in_flight:
            ray.cancel(ref, force=True)
        return rows, True
    finally:
        ray.shutdown()
