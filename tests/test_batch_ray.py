"""``batch --ray``: a local Ray cluster gives the same output folder as a local run; Ray's failures are one line.

The cluster test starts Ray inside the test (no dashboard, nothing leaves the machine)
and is slow (`make test-ray`, also part of `make test-slow`).
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from test_batch import files, summary, write_config  # noqa: F401  (files is a fixture)

KILL_PARENT = '''
import os, signal
from pathlib import Path


def kill_parent():
    """Kill the process that supervises this worker: on Ray, the task itself dies."""
    with open(Path(__file__).with_name("attempts"), "a") as f:
        f.write("x\\n")
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(1)
'''


def _one_line_exit_2(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_ray_not_installed_says_how_to_install(tmp_path, files):  # noqa: F811
    tiny, _ = files
    config = write_config(tmp_path / "a.yaml", tmp_path / "out", [("a", tiny)])
    code = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
            f"sys.argv = ['pipeline', 'batch', {str(config)!r}, '--ray']\n"
            "from pipeline.cli import run; run()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert "pip install .[cluster]" in _one_line_exit_2(proc)
    assert not (tmp_path / "out" / "a").exists()


def test_unreachable_ray_address_is_exit_2(tmp_path, files):  # noqa: F811
    tiny, _ = files
    config = write_config(tmp_path / "a.yaml", tmp_path / "out", [("a", tiny)])
    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = run_cli("batch", str(config), "--ray", f"127.0.0.1:{port}", timeout=120)
    assert f"127.0.0.1:{port}" in _one_line_exit_2(proc)
    assert time.monotonic() - start < 60


def _comparable_report(path):
    """report.json without what differs between any two runs: timings (``timings_s``, the
    ``profile``, each pass' ``seconds`` and ``*_seconds``)."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items()
                    if k not in ("timings_s", "profile", "seconds") and not k.endswith("_seconds")}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return strip(json.loads(path.read_text()))


@pytest.mark.slow
def test_local_ray_cluster_matches_a_local_run(tmp_path, files):  # noqa: F811
    tiny, facs = files
    entries = [("onnx", tiny), ("torch", f"{facs}:tiny"), ("boom", f"{facs}:abort"), ("missing", "no_such_model")]
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    local = run_cli("batch", str(write_config(tmp_path / "l.yaml", local_out, entries)), "--jobs", "2")
    (tmp_path / "kill_parent.py").write_text(KILL_PARENT)
    ray_entries = entries + [("dies", f"{tmp_path / 'kill_parent.py'}:kill_parent")]
    ray = run_cli("batch", str(write_config(tmp_path / "r.yaml", ray_out, ray_entries)), "--ray", "--jobs", "2",
                  timeout=900)
    assert "Traceback" not in ray.stderr, ray.stderr
    assert local.returncode == 1 and ray.returncode == 1  # boom (4), missing (2), dies (4)

    def rows(out):
        return {e["name"]: {k: v for k, v in e.items() if k != "seconds"} for e in summary(out)["entries"]}

    local_rows, ray_rows = rows(local_out), rows(ray_out)
    dies = ray_rows.pop("dies")
    assert dies["status"] == "crashed" and "died twice" in dies["detail"]
    assert (tmp_path / "attempts").read_text().count("x") == 2  # tried, retried once, then reported
    for name in local_rows:  # the same rows, with this run's folder in place of the other's
        assert json.loads(json.dumps(ray_rows[name]).replace(str(ray_out), str(local_out))) == local_rows[name]
    for name in ("onnx", "torch"):
        a, b = local_out / name, ray_out / name
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        assert (a / "model.py").read_bytes() == (b / "model.py").read_bytes()
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert _comparable_report(a / "report.json") == _comparable_report(b / "report.json")
    for name in ("boom", "missing", "onnx"):
        assert (ray_out / f"{name}.log").is_file()
    assert "SIGABRT" in (ray_out / "boom.log").read_text()
    assert not [p for p in ray_out.iterdir() if ".tmp-" in p.name]

    # Resumable on Ray too: unchanged passing entries are skipped.
    again = run_cli("batch", str(write_config(tmp_path / "r2.yaml", ray_out, entries[:2])), "--ray", timeout=600)
    assert again.returncode == 0, again.stderr
    assert {e["status"] for e in summary(ray_out)["entries"]} == {"skipped"}
