"""Bad input gets one clear line on stderr and the documented exit code, never a traceback.

Exit codes (README): 2 bad input or usage, 3 unsupported ops.  Each case runs
the real CLI entry point (``pipeline.cli.main``) in-process, with the process'
stderr captured at the file-descriptor level so framework noise would show too.
A few cases also run as a subprocess, exactly as a user types them.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (silences TensorFlow before anything imports it)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pipeline.cli import main  # noqa: E402


def run(capfd, *args: str) -> tuple[int, list[str], str]:
    """Run the CLI; return (exit code, the stderr lines that start with 'pipeline:', all stderr)."""
    code = main(list(args))
    err = capfd.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("pipeline:")], err


def assert_one_line(capfd, code_wanted: int, needle: str, *args: str) -> str:
    code, lines, err = run(capfd, *args)
    assert code == code_wanted, err
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


# -- artifacts: a valid file of each kind, so "truncated" is a real prefix of one --------------

def _onnx_bytes() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((4, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1])], "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """One valid .onnx, .keras and .pt2 file (each converts; see test_good_files_convert)."""
    from pipeline.quiet import import_tensorflow, import_torch

    root = tmp_path_factory.mktemp("good")
    (root / "m.onnx").write_bytes(_onnx_bytes())
    _, keras = import_tensorflow()
    inp = keras.Input(shape=(8, 3), batch_size=1, name="x")
    keras.Model(inp, keras.layers.Conv1D(4, 3, padding="same")(inp)).save(root / "m.keras")
    torch = import_torch()
    program = torch.export.export(torch.nn.Conv1d(3, 4, 3, padding=1).eval(), (torch.randn(1, 3, 8),))
    torch.export.save(program, str(root / "m.pt2"))
    return root


def test_good_files_convert(good_files, tmp_path, capfd):
    """The fixtures are real models: the damage in the other tests is what breaks them."""
    for name, to in (("m.onnx", "torch"), ("m.keras", "torch"), ("m.pt2", "keras")):
        code, _, err = run(capfd, "convert", str(good_files / name), "--to", to, "--out", str(tmp_path / name),
                           "--quiet")
        assert code == 0, (name, err)


@pytest.mark.parametrize("suffix", [".onnx", ".keras", ".pt2", ".h5"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_broken_model_file(good_files, tmp_path, capfd, suffix, damage):
    source = good_files / ("m.keras" if suffix == ".h5" else f"m{suffix}")
    data = source.read_bytes()
    broken = {"empty": b"", "truncated": data[: len(data) // 2],
              "random": np.random.default_rng(len(suffix)).bytes(4096)}[damage]
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(broken)
    line = assert_one_line(capfd, 2, str(path), "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert ("empty" in line) if damage == "empty" else ("cannot load" in line or "not a readable" in line)
    assert not (tmp_path / "o").exists()


FACTORIES = {
    "raises": ("def build():\n    raise RuntimeError('weights missing')\n", "raised RuntimeError: weights missing"),
    "returns_int": ("def build():\n    return 42\n", "int"),
    "returns_array": ("import numpy as np\ndef build():\n    return np.zeros(3)\n", "ndarray"),
    "returns_tensor": ("import torch\ndef build():\n    return torch.zeros(3)\n", "Tensor"),
    "not_callable": ("build = 3\n", "not callable"),
    "syntax_error": ("def build(:\n    pass\n", "SyntaxError"),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_bad_factory(tmp_path, capfd, case):
    text, needle = FACTORIES[case]
    path = tmp_path / "factory.py"
    path.write_text(text)
    assert_one_line(capfd, 2, needle, "convert", f"{path}:build", "--input", "x=1,3,8", "--out", str(tmp_path / "o"))


def test_missing_factory_attribute(tmp_path, capfd):
    path = tmp_path / "factory.py"
    path.write_text("def build():\n    return None\n")
    assert_one_line(capfd, 2, "no attribute 'make'", "convert", f"{path}:make", "--out", str(tmp_path / "o"))


def test_input_disagrees_with_keras_model(good_files, tmp_path, capfd):
    line = assert_one_line(capfd, 2, "does not fit", "convert", str(good_files / "m.keras"), "--input", "x=1,9,3",
                           "--out", str(tmp_path / "o"))
    assert "[1, 8, 3]" in line


def test_input_disagrees_with_onnx_model(good_files, tmp_path, capfd):
    assert_one_line(capfd, 2, "does not fit", "convert", str(good_files / "m.onnx"), "--to", "keras",
                    "--input", "x=1,3", "--out", str(tmp_path / "o"))


def test_torch_factory_without_input(tmp_path, capfd):
    path = tmp_path / "factory.py"
    path.write_text("import torch\ndef build():\n    return torch.nn.Conv1d(3, 4, 3)\n")
    assert_one_line(capfd, 2, "--input", "convert", f"{path}:build", "--out", str(tmp_path / "o"))


def test_dynamic_dims_without_input(tmp_path, capfd):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    line = assert_one_line(capfd, 2, "dynamic", "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert "--input x=" in line  # the message says what to type
    code, _, err = run(capfd, "convert", str(path), "--to", "torch", "--input", "x=2,4", "--out", str(tmp_path / "o"))
    assert code == 0, err


def _chain_model(path, *ops: tuple[str, str]) -> None:
    """x -> Relu -> op1 -> op2 ... -> y, each (op_type, node name), saved to ``path``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes, prev = [helper.make_node("Relu", ["x"], ["v0"], name="fine")], "v0"
    for i, (op, name) in enumerate(ops):
        out = "y" if i == len(ops) - 1 else f"v{i + 1}"
        nodes.append(helper.make_node(op, [prev], [out], name=name))
        prev = out
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def test_unknown_ops_listed_at_once(tmp_path, capfd):
    """Made-up ops in the default domain: all named in one line, exit 3, before onnxruntime is asked."""
    path = tmp_path / "ops.onnx"
    _chain_model(path, ("NotAnOnnxOp", "made_up"), ("AlsoMadeUp", "second"))
    line = assert_one_line(capfd, 3, "made_up", "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert "NotAnOnnxOp" in line and "AlsoMadeUp" in line and "second" in line


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_op_without_translator(tmp_path, capfd, to):
    """A real ONNX op (onnxruntime runs it) that no translator covers: named, exit 3."""
    path = tmp_path / "hardmax.onnx"
    _chain_model(path, ("Hardmax", "no_translator"))
    line = assert_one_line(capfd, 3, "no_translator", "convert", str(path), "--to", to, "--out", str(tmp_path / "o"))
    assert "Hardmax" in line
    assert not (tmp_path / "o").exists()


def test_bad_usage_values(capfd, tmp_path):
    assert_one_line(capfd, 2, "--atol", "convert", "seed_torch_encoder", "--atol", "-1", "--out", str(tmp_path / "o"))
    assert_one_line(capfd, 2, "--opset", "convert", "seed_torch_encoder", "--opset", "99", "--out", str(tmp_path / "o"))


def test_out_is_a_file(good_files, tmp_path, capfd):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert_one_line(capfd, 2, "not a folder", "convert", str(good_files / "m.onnx"), "--to", "torch",
                    "--out", str(target))
    assert target.read_text() == "keep me"


def test_debug_shows_the_traceback(tmp_path, capfd):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00garbage")
    code, _, err = run(capfd, "--debug", "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "Traceback" in err


def test_broken_file_as_a_user_types_it(tmp_path, cli):
    """The same contract through a real process: one line, exit 2, nothing else on stderr."""
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    proc = cli("convert", str(path), "--quiet", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: error:"), proc.stderr
    assert "zip archive" in lines[0]


@pytest.mark.parametrize("stage", ["export:", "import:"])
def test_ctrl_c_leaves_nothing_half_written(tmp_path, stage):
    """SIGINT mid-conversion: exit 130, no temporary folder left, the earlier good output untouched."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"parity": {"passed": true}}')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log_path = tmp_path.parent / f"{tmp_path.name}.stderr"  # a file, not a pipe: nothing lost to read-ahead
    with open(log_path, "w") as log:
        # SIG_DFL in the child: started from a background job, the test inherits SIGINT ignored,
        # and Python started with SIGINT ignored never raises KeyboardInterrupt
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "convert", "seed_torch_encoder", "--to", "keras",
                                 "--out", str(out)], cwd=REPO, env=env, stderr=log, stdout=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while stage not in log_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    err = log_path.read_text()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.tmp-* left
    assert [p.name for p in out.iterdir()] == ["report.json"]
    assert (out / "report.json").read_text() == '{"parity": {"passed": true}}'


def test_interrupt_seen_inside_a_c_extension_still_exits_130(tmp_path):
    """A KeyboardInterrupt that once escaped a nested PyRun_* call (as pybind11's exec does inside torch) makes
    CPython kill the process with SIGINT at exit; the CLI must still end with its documented 130."""
    import signal
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "factory.py"
    path.write_text("import ctypes\n"
                    "def build():\n"
                    "    run = ctypes.pythonapi.PyRun_String\n"
                    "    run.restype, run.argtypes = ctypes.py_object, [ctypes.c_char_p, ctypes.c_int,\n"
                    "                                                  ctypes.py_object, ctypes.py_object]\n"
                    "    try:\n"
                    "        run(b'raise KeyboardInterrupt', 257, {}, {})  # 257: Py_file_input\n"
                    "    except KeyboardInterrupt:\n"
                    "        pass\n"
                    "    raise KeyboardInterrupt\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "convert", f"{path}:build", "--to", "keras",
                           "--out", str(tmp_path / "out")], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_forward_that_fails_in_export_names_the_cause(tmp_path, capfd):
    """torch.onnx.export's first line is boilerplate; the user sees the model's own error."""
    path = tmp_path / "factory.py"
    path.write_text("import torch\n"
                    "class M(torch.nn.Module):\n"
                    "    def __init__(self):\n"
                    "        super().__init__()\n"
                    "        self.c = torch.nn.Conv1d(4, 4, 1)\n"
                    "    def forward(self, x):\n"
                    "        return self.c(torch.cat([x, x], 1))\n"
                    "def build():\n    return M().eval()\n")
    line = assert_one_line(capfd, 2, "to have 4 channels, but got 8 channels", "convert", f"{path}:build",
                           "--input", "x=1,4,5", "--out", str(tmp_path / "o"))
    assert "RuntimeError" in line and "\x1b[" not in line


# -- IR versions ---------------------------------------------------------------------------

def _relu_onnx(path, ir_version: int, cast_to: int | None = None) -> str:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    if cast_to is not None:  # a Cast to a type, then back
        nodes = [helper.make_node("Cast", ["x"], ["c"], to=cast_to), helper.make_node("Cast", ["c"], ["r"], to=1),
                 helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=ir_version), str(path))
    return str(path)


def test_ir_version_12_is_read_as_11(tmp_path, capfd):
    """onnx 1.19's helper.make_model writes IR 12, which onnxruntime 1.23 cannot load; a graph
    using nothing IR 12 added converts, and source.onnx says IR 11."""
    path = _relu_onnx(tmp_path / "ir12.onnx", 12)
    code, lines, err = run(capfd, "convert", path, "--to", "torch", "--out", str(tmp_path / "o"))
    assert code == 0 and not lines, err
    assert onnx.load(str(tmp_path / "o" / "source.onnx")).ir_version == 11


@pytest.mark.parametrize("ir_version,cast_to", [(13, None), (12, TensorProto.FLOAT8E8M0)])
def test_ir_version_onnxruntime_cannot_read_is_one_line(tmp_path, capfd, ir_version, cast_to):
    """An IR version we cannot lower exactly (newer than 12, or 12 with its new element type)
    stays as it is: exit 2 and onnxruntime's own reason, without its C++ source location."""
    path = _relu_onnx(tmp_path / "m.onnx", ir_version, cast_to)
    line = assert_one_line(capfd, 2, f"IR version: {ir_version}", "convert", path, "--to", "torch",
                           "--out", str(tmp_path / "o"))
    assert "onnxruntime_src" not in line


def test_graph_that_fails_at_run_time_is_one_line_without_onnxruntime_log(tmp_path, capfd):
    """A graph onnxruntime loads but cannot run (a Reshape of 6 values to 5): exit 2, our one
    line with onnxruntime's reason, and not onnxruntime's own red log line before it."""
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("s", TensorProto.INT64, [1], [5])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    code, lines, err = run(capfd, "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert code == 2 and len(lines) == 1 and "cannot be reshaped" in lines[0], err
    assert "[E:onnxruntime" not in err and "sequential_executor" not in err, err


def test_source_that_fails_at_the_example_sizes_is_one_line(tmp_path, capfd):
    """A Keras model traced with an open length adds a stride-2 branch (ceil(L/2) steps) to a
    pooled one (floor(L/2)): an odd example length fails in Keras itself.  Exit 2, one line
    with Keras' reason and the shapes, nothing written (NASNet with an odd image size)."""
    path = tmp_path / "branches.py"
    path.write_text("import keras\n\n\ndef build():\n"
                    "    x = keras.Input(shape=(None, 3), name='x')\n"
                    "    a = keras.layers.Conv1D(3, 1, strides=2, padding='same')(x)\n"
                    "    b = keras.layers.MaxPooling1D(2)(x)\n"
                    "    return keras.Model(x, keras.layers.Add()([a, b]))\n")
    line = assert_one_line(capfd, 2, "fails on the example inputs (x (2, 7, 3))", "convert", f"{path}:build",
                           "--input", "x=B=2,L=7,3", "--out", str(tmp_path / "o"))
    assert "Incompatible shapes" in line and "--dim" in line, line
    assert not (tmp_path / "o").exists()
    # An even length converts, and parity's other lengths the source refuses are skipped, said why.
    code, lines, err = run(capfd, "convert", f"{path}:build", "--input", "x=B=2,L=8,3", "--out", str(tmp_path / "e"))
    assert code == 0 and not lines, err
    import json
    import re

    shapes = json.loads((tmp_path / "e" / "report.json").read_text())["parity"]["shapes"]
    skipped = {json.dumps(s["sizes"], sort_keys=True): s["skipped"] for s in shapes if "skipped" in s}
    assert skipped['{"B": 3, "L": 9}'].startswith("the source model refuses these sizes: InvalidArgumentError: "
                                                  "Exception encountered when calling Add.call()"), skipped
    # At L = 1 Keras adds a length-1 branch to an empty one: an empty output, nothing to prove.
    assert re.fullmatch(r"the source model gives an empty output at these sizes: add\w* \(2, 0, 3\)",
                        skipped['{"B": 2, "L": 1}']), skipped
    assert [s["sizes"] for s in shapes if s.get("passed")] == [{"B": 2, "L": 8}, {"B": 1, "L": 8}, {"B": 3, "L": 8}]
