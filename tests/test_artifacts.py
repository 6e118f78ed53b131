"""``--export``: deployable artifacts, each checked like the model (issue 13, item 1).

Expected values come from the source model run directly (PyTorch or Keras), never from our
report: each artifact is loaded here the way a user deploys it (the LiteRT interpreter,
``tf.saved_model.load``, ``torch.export.load``, ``torch.jit.load``) and run at two batch
sizes, so a symbolic batch that did not survive into the artifact fails.  Also checked:
no TRANSPOSE operator in the TFLite graph of a CNN converted with ``--layout target``
(counted in the flatbuffer, read without delegates); the bad-input lines of ``--export``
and ``--calibration``; an artifact that fails its own check fails the conversion (exit 1)
while the model's files are still written and an earlier passing conversion is kept.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (silences TensorFlow before anything imports it)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402,F401  (imported before any capfd test: torch's log handlers keep the stderr they first see)

from cli_capture import one_error_line, run  # noqa: E402
from pipeline import artifacts  # noqa: E402
from pipeline.batch import validate  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.sources import import_file  # noqa: E402
from pipeline.spec import InputSpec, Symbol  # noqa: E402

TORCH_CNN = '''
import torch, torch.nn as nn

INPUTS = {"x": (2, 3, 16, 16)}


class Net(nn.Module):
    """A small classifier: two convolutions (one strided), global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    return Net().eval()
'''

KERAS_CONV1D = '''
import keras

INPUTS = {"x": (2, 12, 4)}


def build():
    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(12, 4), name="x")
    y = keras.layers.Conv1D(6, 3, padding="same", activation="relu", name="conv")(x)
    y = keras.layers.Dense(3, name="dense")(y)
    return keras.Model(x, y, name="k")
'''


def torch_reference(model_file, x: np.ndarray) -> np.ndarray:

    with torch.no_grad():
        return import_file(model_file).build()(torch.from_numpy(x)).numpy()


def rand(*shape, seed=1, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def tflite_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner("serving_default")


def op_names(path) -> list[str]:
    """Operator names in the flatbuffer, read with no delegate (XNNPACK would fold them away)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return [op["op_name"] for op in interp._get_ops_details()]


def close(got, ref, tol=1e-4) -> bool:
    return got.shape == ref.shape and bool(np.allclose(got, ref, atol=tol, rtol=tol))


# -- flags and calibration data ----------------------------------------------------------------


def test_export_names_and_plan():
    assert artifacts.parse_export("tflite") == "tflite:fp32"
    assert artifacts.parse_export("tflite:int8") == "tflite:int8"
    assert artifacts.plan(["tflite", "tflite:fp32", "saved_model"], "keras", None) == ["tflite:fp32", "saved_model"]
    assert artifacts.plan(["pt2", "torchscript"], "torch", None) == ["pt2", "torchscript"]
    for bad in ("tflite:int4", "onnx", "pt2:fp16", ""):
        with pytest.raises(BadInput, match="expected tflite"):
            artifacts.parse_export(bad)
    with pytest.raises(BadInput, match="torch result cannot be exported as tflite"):
        artifacts.plan(["tflite"], "torch", None)
    with pytest.raises(BadInput, match="keras result cannot be exported as pt2"):
        artifacts.plan(["pt2"], "keras", None)
    with pytest.raises(BadInput, match="needs calibration data"):
        artifacts.plan(["tflite:int8"], "keras", None)
    with pytest.raises(BadInput, match="only by --export tflite:int8"):
        artifacts.plan(["tflite"], "keras", "cal.npz")


SPECS = [InputSpec.of("x", (Symbol("B", 2), 3, 8)), InputSpec.of("ids", (2, 5), "int64")]


def good_arrays() -> dict:
    return {"x": rand(4, 2, 3, 8), "ids": np.zeros((4, 2, 5), np.int64)}


def test_calibration_file_and_folder(tmp_path):
    np.savez(tmp_path / "cal.npz", **good_arrays())
    batches = artifacts.load_calibration(str(tmp_path / "cal.npz"), SPECS)
    assert len(batches) == 4 and batches[0]["x"].shape == (2, 3, 8) and batches[0]["ids"].shape == (2, 5)
    folder = tmp_path / "cal"
    folder.mkdir()
    np.save(folder / "x.npy", rand(7, 3, 8))  # one batch, the symbolic batch at another size
    np.save(folder / "ids.npy", np.zeros((2, 5), np.int64))
    (one,) = artifacts.load_calibration(str(folder), SPECS)
    assert one["x"].shape == (7, 3, 8)


@pytest.mark.parametrize("change, needles", [
    (lambda a: a.pop("ids"), ["no array 'ids'"]),
    (lambda a: a.update(y=a["x"]), ["'y'", "names no input"]),
    (lambda a: a.update(x=rand(3, 8)), ["'x'", "rank 2"]),
    (lambda a: a.update(x=rand(4, 2, 3, 9)), ["'x'", "dimension 2 must be 8"]),
    (lambda a: a.update(x=a["x"].astype(np.float64)), ["'x'", "float64", "float32"]),
    (lambda a: a["x"].__setitem__((1, 0, 2, 3), np.nan), ["'x'", "NaN"]),
    (lambda a: a.update(ids=np.zeros((3, 2, 5), np.int64)), ["different numbers of batches"]),
])
def test_calibration_bad_input(tmp_path, change, needles):
    arrays = good_arrays()
    change(arrays)
    np.savez(tmp_path / "cal.npz", **arrays)
    with pytest.raises(BadInput) as err:
        artifacts.load_calibration(str(tmp_path / "cal.npz"), SPECS)
    assert all(n in str(err.value) for n in needles), str(err.value)


def test_calibration_unreadable(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        artifacts.load_calibration(str(tmp_path / "missing.npz"), SPECS)
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(BadInput, match="cannot read"):
        artifacts.load_calibration(str(tmp_path / "junk.npz"), SPECS)


def test_yaml_export_key():
    entry = {"name": "a", "model": "m.py:build", "export": ["tflite:int8", "saved_model"], "calibration": "c.npz"}
    (got,) = validate({"models": [entry]}, "b.yaml")["entries"]
    assert got["export"] == ["tflite:int8", "saved_model"] and got["calibration"] == "c.npz"
    (got,) = validate({"defaults": {"export": "tflite"}, "models": [{"name": "a", "model": "m"}]}, "b.yaml")["entries"]
    assert got["export"] == ["tflite:fp32"]
    with pytest.raises(BadInput, match=r"models\[0\]\.export.*tflite:int3"):
        validate({"models": [{**entry, "export": ["tflite:int3"]}]}, "b.yaml")
    with pytest.raises(BadInput, match=r"models\[0\]\.export: expected a list"):
        validate({"models": [{**entry, "export": {"tflite": 1}}]}, "b.yaml")


def test_artifact_at_further_sizes_wrong_fails_refused_is_recorded(tmp_path):
    """Wrong numbers at another size fail the row; an artifact that refuses a size says so."""
    specs = [InputSpec.of("x", (Symbol("B", 2), 3))]
    x = {b: rand(b, 3, seed=b) for b in (1, 2, 3, 4)}
    sets = [{"sizes": {"B": b}, "inputs": {"x": x[b]}, "reference": [x[b] * 2]} for b in (1, 3, 4)]
    case = artifacts._Case(tmp_path, specs, {}, ["x"], ["y"], {"x": x[2]}, [x[2] * 2], 1e-4, 1e-4, None, sets)

    def run(feed):
        (a,) = feed
        if len(a) == 4:
            raise ValueError("size 4 is fixed out")
        return [a * 2 if len(a) == 1 else a * 2 + 1]

    shapes = artifacts._at_sizes("saved_model", case, run)
    assert [(s["sizes"]["B"], s["passed"]) for s in shapes] == [(1, True), (3, False), (4, None)]
    assert "size 4 is fixed out" in shapes[2]["refused"]


def test_tflite_interpreter_dying_is_the_artifacts_failure(tmp_path):
    """The interpreter runs in a child process: a file it cannot even load is a failure in
    words (the row's error), never the end of the conversion."""
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(RuntimeError, match="TFLite interpreter died .* on model.tflite"):
        artifacts._run_tflite_apart(bad, ["x"], ["y"], [[rand(1, 3)]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]  # its scratch folder is gone


# -- the command line's bad input ---------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "cnn.py"
    path.write_text(TORCH_CNN)
    return path


def test_cli_bad_export_flags(capfd, tmp_path, torch_cnn):
    model = f"{torch_cnn}:build"
    out = str(tmp_path / "out")
    line = one_error_line(capfd, "convert", model, "--to", "torch", "--out", out, "--export", "tflite")
    assert "torch result cannot be exported as tflite" in line
    line = one_error_line(capfd, "convert", model, "--to", "keras", "--out", out, "--export", "tflite:int8")
    assert "--calibration" in line
    line = one_error_line(capfd, "convert", model, "--out", out, "--export", "tflite:bf16")
    assert "tflite:bf16" in line
    bad = rand(4, 2, 3, 16, 16)
    bad[0, 0, 0, 0, 0] = np.inf
    np.savez(tmp_path / "cal.npz", x=bad)
    line = one_error_line(capfd, "convert", model, "--out", out, "--export", "tflite:int8",
                          "--calibration", str(tmp_path / "cal.npz"))
    assert "'x'" in line and "NaN or infinite" in line
    assert not (tmp_path / "out").exists()


# -- a PyTorch CNN to TFLite and SavedModel ------------------------------------------------------


@pytest.fixture(scope="module")
def keras_exports(tmp_path_factory, torch_cnn):
    """The CNN converted to Keras with ``--layout target`` and its batch ``B`` free, exported as
    TFLite (fp32, int8) and SavedModel; int8 calibrated on data like the parity inputs."""
    root = tmp_path_factory.mktemp("keras_exports")
    np.savez(root / "cal.npz", x=rand(8, 2, 3, 16, 16, seed=5))
    out = root / "cnn"
    code = main(["convert", f"{torch_cnn}:build", "--to", "keras", "--layout", "target", "--input",
                 "x=B=2,3,16,16", "--out", str(out), "--export", "tflite", "--export", "tflite:int8",
                 "--export", "saved_model", "--calibration", str(root / "cal.npz"), "--quiet"])
    return code, out, root


def test_keras_exports_pass_and_are_reported(keras_exports):
    code, out, _ = keras_exports
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["export"]: r for r in report["parity"]["exports"]}
    assert list(rows) == ["tflite:fp32", "tflite:int8", "saved_model"]
    assert all(r["passed"] for r in rows.values())
    assert rows["tflite:int8"]["tolerance"]["max_rel_err"] == artifacts.QUANTIZED_MAX_REL_ERR["tflite:int8"]
    assert 0.0 <= rows["tflite:int8"]["top1_agreement"] <= 1.0
    for r in rows.values():  # each artifact also ran at parity's further batch sizes
        assert [(s["sizes"], s["passed"]) for s in r["shapes"]] == [({"B": 1}, True), ({"B": 3}, True)]
    for name in ("model.tflite", "model_int8.tflite", "saved_model"):
        assert (out / name).exists() and name in report["artifacts"]
    page = (out / "report.html").read_text()
    assert "Exported artifacts" in page and "model_int8.tflite" in page


def test_tflite_of_a_cnn_with_target_layout_has_no_transpose(keras_exports):
    _, out, _ = keras_exports
    ops = op_names(out / "model.tflite")
    assert ops.count("CONV_2D") == 2
    assert "TRANSPOSE" not in ops, ops


def test_tflite_runs_at_two_batch_sizes_like_torch(keras_exports, torch_cnn):
    _, out, _ = keras_exports
    runner = tflite_runner(out / "model.tflite")
    for batch in (1, 3):
        x = rand(batch, 3, 16, 16, seed=batch)
        ref = torch_reference(torch_cnn, x)
        (got,) = runner(x=x.transpose(0, 2, 3, 1).copy()).values()
        assert close(got, ref), (batch, np.abs(got - ref).max())


def test_int8_tflite_error_against_torch(keras_exports, torch_cnn):
    _, out, _ = keras_exports
    assert "QUANTIZE" in op_names(out / "model_int8.tflite")  # calibrated: activations are integer inside
    x = rand(4, 3, 16, 16, seed=9)
    ref = torch_reference(torch_cnn, x)
    (got,) = tflite_runner(out / "model_int8.tflite")(x=x.transpose(0, 2, 3, 1).copy()).values()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_saved_model_signature_keeps_the_batch_free(keras_exports, torch_cnn):
    import tensorflow as tf

    _, out, _ = keras_exports
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 16, 16, 3]
    for batch in (1, 3):
        x = rand(batch, 3, 16, 16, seed=10 + batch)
        (got,) = serve(x=tf.constant(x.transpose(0, 2, 3, 1))).values()
        assert close(got.numpy(), torch_reference(torch_cnn, x))


def test_failing_artifact_exits_1_and_keeps_the_passing_conversion(capfd, keras_exports, torch_cnn):
    """int8 calibrated on data a thousand times smaller than the inputs saturates: its row
    fails, the conversion exits 1, its files land in OUT.failed and OUT keeps the passing one."""
    _, out, root = keras_exports
    np.savez(root / "tiny.npz", x=rand(8, 2, 3, 16, 16, seed=5, scale=1e-3))
    before = (out / "report.json").read_text()
    code, _, err, stdout = run(capfd, "convert", f"{torch_cnn}:build", "--to", "keras", "--layout", "target",
                               "--input", "x=B=2,3,16,16", "--out", str(out), "--export", "tflite:int8",
                               "--calibration", str(root / "tiny.npz"), "--quiet")
    assert code == 1, err
    assert "BAD export tflite:int8" in stdout and "Traceback" not in err
    failed = out.with_name(out.name + ".failed")
    report = json.loads((failed / "report.json").read_text())
    (row,) = report["parity"]["exports"]
    assert not row["passed"] and row["outputs"][0]["max_rel_err"] > 0.1
    assert all(c["passed"] for c in report["parity"]["outputs"])  # the model itself is right
    assert any("tflite:int8" in p for p in report["parity"]["problems"])
    assert (failed / "model.py").exists() and (failed / "model_int8.tflite").exists()
    assert (out / "report.json").read_text() == before


# -- a Keras model to torch.export and TorchScript ------------------------------------------------


def test_torch_exports_run_at_two_batch_sizes_like_keras(tmp_path):

    src = tmp_path / "k.py"
    src.write_text(KERAS_CONV1D)
    out = tmp_path / "k_torch"
    code = main(["convert", f"{src}:build", "--to", "torch", "--input", "x=B=2,12,4", "--out", str(out),
                 "--export", "pt2", "--export", "torchscript", "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [(r["export"], r["passed"]) for r in report["parity"]["exports"]] == [("pt2", True), ("torchscript", True)]
    keras_model = import_file(src).build()
    program = torch.export.load(str(out / "model.pt2")).module()
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    for batch in (1, 3):
        x = rand(batch, 12, 4, seed=20 + batch)
        ref = np.asarray(keras_model(x, training=False))
        with torch.no_grad():
            assert close(program(torch.from_numpy(x)).numpy(), ref)
            assert close(scripted(torch.from_numpy(x)).numpy(), ref)
