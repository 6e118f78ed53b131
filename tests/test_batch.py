"""Batch runs survive crashes, limits and Ctrl-C; --jobs changes nothing but the wall time; zoo names run.

Every entry runs in its own worker process, so these tests use models that convert in
seconds: a two-node ONNX graph (no TensorFlow import) and tiny PyTorch factories
converted back to PyTorch.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, run_cli
from pipeline.batch import validate
from pipeline.batch_worker import Display

FACTORIES = '''
import os, time
from pathlib import Path

import torch

INPUTS = {"x": (2, 8)}
GO = Path(__file__).with_name("go")


class Tiny(torch.nn.Module):
    def __init__(self, abort_in_forward=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)
        self.abort_in_forward = abort_in_forward

    def forward(self, x):
        if self.abort_in_forward:  # runs while torch.export traces it: after the output folder was begun
            os.abort()
        return torch.relu(self.fc(x))


def tiny():
    return Tiny()


def abort():
    os.abort()


def abort_in_export():
    return Tiny(abort_in_forward=True)


def hang():
    time.sleep(3600)


def hog():
    import numpy as np
    keep = []
    for _ in range(64):  # up to 4 GiB, 64 MiB at a time
        keep.append(np.ones(64 << 20, dtype=np.uint8))
        time.sleep(0.02)
    return Tiny()


def slow_until_go():
    while not GO.exists():
        time.sleep(0.1)
    return Tiny()
'''


@pytest.fixture
def files(tmp_path):
    """A tiny ONNX model and a file of factories; returns (onnx path, factories path)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "tiny.onnx")
    (tmp_path / "facs.py").write_text(FACTORIES)
    return tmp_path / "tiny.onnx", tmp_path / "facs.py"


def write_config(path, out, entries):
    lines = [f"output_dir: {out}", "defaults: {to: torch}", "models:"]
    lines += [f"  - {{name: {name}, model: '{model}'}}" for name, model in entries]
    path.write_text("\n".join(lines) + "\n")
    return path


def summary(out):
    return json.loads((out / "summary.json").read_text())


def statuses(out):
    return {e["name"]: e["status"] for e in summary(out)["entries"]}


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_crash_memory_and_timeout_are_rows_and_lose_nothing(tmp_path, files):
    tiny, facs = files
    out = tmp_path / "out"
    first = run_cli("batch", str(write_config(tmp_path / "a.yaml", out, [("keep", tiny)])))
    assert first.returncode == 0, first.stderr
    kept = (out / "keep" / "report.json").read_bytes()

    # The same name, now broken, beside the other ways a worker can die.
    entries = [("keep", f"{facs}:abort"), ("late", f"{facs}:abort_in_export"), ("hog", f"{facs}:hog")]
    proc = run_cli("batch", str(write_config(tmp_path / "b.yaml", out, entries)), "--jobs", "2",
                   "--max-memory", "2500M")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {e["name"]: e for e in summary(out)["entries"]}
    assert {n: r["status"] for n, r in rows.items()} == {"keep": "crashed", "late": "crashed", "hog": "out-of-memory"}
    assert rows["keep"]["returncode"] == -signal.SIGABRT and "SIGABRT" in rows["keep"]["detail"]
    assert "export" in "\n".join(rows["late"]["log_tail"])  # the log shows how far it got
    assert "past --max-memory 2.44 GiB" in rows["hog"]["detail"]
    # Alone, so that a loaded machine cannot push the others past the timeout.
    hang = run_cli("batch", str(write_config(tmp_path / "c.yaml", out, [("hang", f"{facs}:hang")])),
                   "--timeout", "10")
    assert hang.returncode == 4, hang.stderr
    rows["hang"] = summary(out)["entries"][0]
    assert rows["hang"]["status"] == "timed-out" and "10 s" in rows["hang"]["detail"]
    for name in ("keep", "late", "hog", "hang"):
        log = (out / f"{name}.log").read_text()
        assert rows[name]["status"] in log and name in proc.stdout + hang.stdout
    assert (out / "keep" / "report.json").read_bytes() == kept  # the earlier good output survived
    assert not (out / "late").exists() and not (out / "hog").exists()
    assert leftovers(out) == []


def test_jobs_do_not_change_summary_or_exit_code(tmp_path, files):
    tiny, facs = files
    entries = [("a", tiny), ("boom", f"{facs}:abort"), ("missing", "no_such_model")]
    results = {}
    for jobs in ("1", "3"):
        out = tmp_path / f"out{jobs}"
        proc = run_cli("batch", str(write_config(tmp_path / f"{jobs}.yaml", out, entries)), "--jobs", jobs)
        results[jobs] = (proc.returncode, [(e["name"], e["status"], e["exit_code"], e.get("max_abs_err"))
                                           for e in summary(out)["entries"]])
        assert "[3/3]" in proc.stderr  # plain progress lines: stderr is not a terminal here
    assert results["1"] == results["3"]
    code, rows = results["1"]
    assert code == 1  # boom (4) and missing (2) differ
    assert [r[1] for r in rows] == ["passed", "crashed", "error"]


def test_ctrl_c_keeps_finished_entries_and_the_batch_resumes(tmp_path, files):
    tiny, facs = files
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", out,
                          [("first", tiny), ("slow", f"{facs}:slow_until_go"), ("last", f"{facs}:tiny")])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # SIG_DFL in the child: a suite started as a background job inherits SIGINT ignored, and a
    # Python started so never raises KeyboardInterrupt (what made this test hang in such runs)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "batch", str(config), "--jobs", "1"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not ((out / "first" / "report.json").is_file() and (out / "slow.log").is_file()
               and "loading" in (out / "slow.log").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    s = summary(out)
    assert s["interrupted"] and s["not_run"] == ["slow", "last"]
    assert statuses(out) == {"first": "passed", "slow": "not-run", "last": "not-run"}
    assert not (out / "slow").exists() and leftovers(out) == []

    (tmp_path / "go").touch()
    again = run_cli("batch", str(config))
    assert again.returncode == 0, again.stderr
    assert statuses(out) == {"first": "skipped", "slow": "passed", "last": "passed"}


def test_bad_batch_flags_exit_2_in_one_line(tmp_path, files):
    tiny, _ = files
    config = write_config(tmp_path / "a.yaml", tmp_path / "out", [("a", tiny)])
    for flags in (["--jobs", "0"], ["--max-memory", "lots"], ["--timeout", "-1"]):
        proc = run_cli("batch", str(config), *flags)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_progress_on_a_terminal_uses_rich():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    display = Display(3, stream=stream)
    display.started("a", "m")
    display.finished({"name": "a", "status": "crashed", "seconds": 1.0})
    display.close()
    text = stream.getvalue()
    assert "\x1b[" in text  # drawn by rich, with terminal control codes
    assert "done 1/3" in text and "failed 1" in text and "[1/3] a: crashed" in text


# ---------------------------------------------------------------- names that run


def test_models_lists_zoo_members_with_inputs(cli):
    proc = cli("models")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0]: line for line in proc.stdout.splitlines()}
    sys.path.insert(0, str(REPO / "models"))
    try:
        import torch_zoo
    finally:
        sys.path.pop(0)
    for member, inputs in torch_zoo.SHAPES.items():
        assert f"torch_zoo:{member}" in listed
    assert "x: float32[2, 3, 32, 32]" in listed["torch_zoo:resnet"]
    assert "ids: int64[2, 12]" in listed["torch_zoo:transformer"]
    assert "torch_zoo" not in listed and "hf_zoo:bert" in listed and "seed_torch_encoder" in listed


def test_a_zoo_alone_names_its_members():
    from pipeline.errors import BadInput
    from pipeline.sources import resolve

    with pytest.raises(BadInput, match="torch_zoo:resnet"):
        resolve("torch_zoo")
    with pytest.raises(BadInput, match="no member 'nope'"):
        resolve("torch_zoo:nope")


def test_zoo_member_converts_in_a_batch(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "z.yaml"
    config.write_text(f"output_dir: {out}\nmodels:\n  - {{name: vit, model: 'torch_zoo:vit_stem', to: torch}}\n")
    proc = run_cli("batch", str(config))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "vit" / "report.json").read_text())
    assert report["parity"]["passed"] and report["model"] == "torch_zoo:vit_stem"


def test_batch_flags_reach_the_conversion(tmp_path):
    """``gradients: true`` and ``static: true`` act as ``--gradients`` and ``--static`` (in the
    worker process, where the entry is converted); a flag that is not a bool is bad input."""
    out = tmp_path / "out"
    config = tmp_path / "f.yaml"
    config.write_text(f"output_dir: {out}\ndefaults: {{gradients: true}}\nmodels:\n"
                      "  - {name: enc, model: seed_torch_encoder, static: true}\n")
    proc = run_cli("batch", str(config))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "enc" / "report.json").read_text())
    assert report["symbols"] == [] and report["gradients"]["ran"]
    from pipeline.errors import BadInput

    with pytest.raises(BadInput, match=r"models\[0\]\.gradients: expected true or false"):
        validate({"models": [{"name": "a", "model": "m", "gradients": "yes"}]}, "b.yaml")


def test_a_batch_entry_can_name_a_whole_zoo():
    entries = validate({"models": [{"name": "tz", "model": "torch_zoo", "atol": 1e-3}]}, "b.yaml")["entries"]
    sys.path.insert(0, str(REPO / "models"))
    try:
        import torch_zoo
    finally:
        sys.path.pop(0)
    assert [e["name"] for e in entries] == [f"tz_{m}" for m in torch_zoo.SHAPES]
    assert [e["model"] for e in entries] == [f"torch_zoo:{m}" for m in torch_zoo.SHAPES]
    assert all(e["atol"] == 1e-3 for e in entries)
    with pytest.raises(Exception, match="whole zoo"):
        validate({"models": [{"name": "tz", "model": "torch_zoo", "inputs": {"x": [1, 3, 8, 8]}}]}, "b.yaml")


@pytest.mark.slow
def test_every_listed_name_converts(tmp_path, cli):
    """`models` lists it, so it converts: both zoos whole, and the registered models, in one batch."""
    names = [line.split()[0] for line in cli("models").stdout.splitlines()]
    plain = [n for n in names if ":" not in n]
    out = tmp_path / "out"
    lines = [f"output_dir: {out}", "models:", "  - {name: torch_zoo, model: torch_zoo}",
             "  - {name: hf_zoo, model: hf_zoo}"] + [f"  - {{name: {n}, model: {n}}}" for n in plain]
    config = tmp_path / "all.yaml"
    config.write_text("\n".join(lines) + "\n")
    proc = run_cli("batch", str(config), "--jobs", "2", timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    converted = {e["name"].replace("torch_zoo_", "torch_zoo:", 1).replace("hf_zoo_", "hf_zoo:", 1)
                 for e in summary(out)["entries"] if e["status"] == "passed"}
    assert converted == set(names)
