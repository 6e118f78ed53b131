"""Conversions never touch the network: run them with it unplugged (a fresh network namespace)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

UNSHARE = shutil.which("unshare")


def _offline(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([UNSHARE, "-n", sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model,target", [("seed_torch_encoder", "keras"), ("seed_keras_conv1d", "torch")])
def test_convert_with_network_unplugged(tmp_path, model, target):
    probe = subprocess.run([UNSHARE, "-n", sys.executable, "-c",
                            "import socket; s = socket.socket(); s.settimeout(2); print(s.connect_ex(('1.1.1.1', 443)))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() != "0"  # the namespace really has no route out
    proc = _offline("convert", model, "--to", target, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["parity"]["passed"]
