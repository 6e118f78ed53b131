"""Results with their evidence: every bench writes what it measured to ``bench/results/``
together with the commit, the machine and the command, so each README number points to a
file a make target produced (``bench/readme_tables.py`` renders the tables from them).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def commit() -> dict:
    """The commit measured, and whether the work tree had uncommitted changes."""
    def git(*args) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # The results and the README tables rendered from them are what a bench run writes:
    # changed, they do not make the measured code "uncommitted" (make bench runs five
    # benches in a row, and each saw the files of the ones before it as changes).
    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)bench/results", ":(exclude)README.md"))}


def machine() -> dict:
    """What the numbers were measured on: CPUs, memory, load while it ran."""
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem_gib, "machine": platform.machine(),
            "system": platform.system(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def write(path: Path, kind: str, data: dict, command: str) -> Path:
    """Store ``data`` (what the bench measured) as ``path`` with its provenance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "command": command, **commit(), "machine": machine(),
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None
