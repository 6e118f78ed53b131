"""Symbolic dimensions (issue 14, the stages around the importers).

What is checked here, with expected values from the source frameworks or onnxruntime:
- the ``--input NAME=B=4,K=10,128`` / ``--dim`` / YAML syntax and its bad-input lines;
- sources that carry dynamic dimensions (ONNX ``dim_param`` and unknown dims, Keras
  ``None``) keep them as symbols;
- export writes the symbols as ``dim_param``s, and onnxruntime on ``source.onnx`` equals
  PyTorch / Keras run directly at several sizes; a dimension the model pins
  (``x.view(4, -1, 64)``) stays static and is reported with the line that pins it;
- normalize keeps symbolic shapes (a "same" strided Conv over an odd length included);
- parity at several size sets: end to end through the CLI, and with a hand-written
  ``model.py`` that is right at every size and one that is right only at the example.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (silences TensorFlow before anything imports it)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from cli_capture import one_error_line, run  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.referee import run_onnx  # noqa: E402
from pipeline.spec import InputSpec, Symbol, make_inputs, parse_input, with_sizes  # noqa: E402


def relu_onnx(path, dims) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, path)


def input_dims(path) -> list:
    vi = onnx.load(str(path)).graph.input[0]
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


# -- syntax ------------------------------------------------------------------------------------

def test_input_syntax():
    spec = parse_input("mixture=B=4,K=10,128")
    assert spec.dims == (Symbol("B", 4), Symbol("K", 10), 128)
    assert spec.shape == (4, 10, 128)  # the example shape, as every static caller reads it
    ids = parse_input("ids=B=2,16:int64")
    assert ids.dtype == "int64" and ids.dims == (Symbol("B", 2), 16)
    assert parse_input("x=1,3,8").dims == (1, 3, 8) and parse_input("x=1,3,8").is_static
    # One symbol in several inputs is one size; a bare symbol takes it from elsewhere.
    _, b = with_sizes([parse_input("a=B=4,3"), parse_input("b=B,5")])
    assert b.shape == (4, 5) and b.dims[0] == Symbol("B", 4)
    assert with_sizes([parse_input("a=T,3")], {"T": 7})[0].shape == (7, 3)


@pytest.mark.parametrize("args, needles", [
    (["--input", "x=B=4,4", "--input", "y=B=5,4"], ["'y'", "dimension 0", "'B'", "5", "4"]),
    (["--input", "x=B=a,4"], ["--input x", "dimension 0", "'B=a'"]),
    (["--input", "x=3,,4"], ["--input x", "dimension 1"]),
    (["--input", "x"], ["--input", "NAME=DIM"]),
    (["--input", "x=B,4"], ["'x'", "dimension 0", "'B'", "--dim B=N"]),
    (["--input", "x=B=4,4", "--dim", "B=5"], ["'x'", "dimension 0", "'B'", "--dim B=5"]),
    (["--dim", "B=0"], ["--dim", "SYMBOL=INT"]),
    (["--dim", "B=2", "--dim", "B=3"], ["--dim B=3", "'B'", "already 2"]),
])
def test_bad_dims_one_line(tmp_path, capfd, args, needles):
    path = tmp_path / "m.py"
    path.write_text("import torch\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n\n\n"
                    "def build():\n    return M()\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("earlier output")
    line = one_error_line(capfd, "convert", f"{path}:build", "--to", "torch", "--out", str(out), *args)
    for needle in needles:
        assert needle in line, line
    assert (out / "keep").read_text() == "earlier output"  # nothing written, earlier output untouched


def test_yaml_inputs_with_symbols():
    from pipeline.batch import validate

    entries = validate({"models": [{"name": "a", "model": "m", "inputs": {
        "mixture": ["B=4", "K=10", 128], "ids": {"shape": ["B=4", 16], "dtype": "int64"}}}]}, "c.yaml")["entries"]
    mixture, ids = entries[0]["inputs"]
    assert mixture.dims == (Symbol("B", 4), Symbol("K", 10), 128)
    assert ids.dims == (Symbol("B", 4), 16) and ids.dtype == "int64"
    for bad in (["B=four", 3], ["B", 3], ["B=0", 3]):  # an entry has no --dim: each symbol states its size
        with pytest.raises(BadInput, match=r"models\[0\]\.inputs\.x"):
            validate({"models": [{"name": "a", "model": "m", "inputs": {"x": bad}}]}, "c.yaml")


# -- sources keep dynamic dimensions; parity at several sizes end to end ------------------------

def test_onnx_dim_param_is_a_symbol_end_to_end(tmp_path, capfd):
    path = tmp_path / "dyn.onnx"
    relu_onnx(path, ["batch", 4])
    line = one_error_line(capfd, "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert "'batch'" in line and "--dim batch=N" in line and "--input x=" in line

    code, _, err, out = run(capfd, "convert", str(path), "--to", "torch", "--dim", "batch=3", "--out", str(tmp_path / "o"))
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["symbols"] == [{"name": "batch", "example": 3, "places": [["x", 0]]}]
    shapes = report["parity"]["shapes"]
    assert [s["sizes"] for s in shapes] == [{"batch": 3}, {"batch": 1}, {"batch": 5}]
    assert all(s["passed"] for s in shapes)
    assert shapes[1]["inputs"] == {"x": [1, 4]}
    # The file already names the symbol: it is read where it is, not copied to source.onnx.
    assert report["onnx_source"] == str(path) and not (tmp_path / "o" / "source.onnx").exists()
    assert "at batch=1" in out and "parity at" in (tmp_path / "o" / "report.html").read_text().lower()

    # The user's own name for it, and --static.
    code, _, err, _ = run(capfd, "convert", str(path), "--to", "torch", "--input", "x=N=2,4", "--out", str(tmp_path / "n"))
    assert code == 0, err
    assert input_dims(tmp_path / "n" / "source.onnx") == ["N", 4]
    code, _, err, _ = run(capfd, "convert", str(path), "--to", "torch", "--dim", "batch=2", "--static",
                          "--out", str(tmp_path / "s"))
    assert code == 0, err
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert input_dims(tmp_path / "s" / "source.onnx") == [2, 4]
    assert report["symbols"] == [] and "shapes" not in report["parity"]


def test_onnx_unknown_dim_gets_a_name(tmp_path, capfd):
    path = tmp_path / "unk.onnx"
    relu_onnx(path, [None, 4])
    line = one_error_line(capfd, "convert", str(path), "--to", "torch", "--out", str(tmp_path / "o"))
    assert "'x_0'" in line and "--dim x_0=N" in line


# -- export with symbols: onnxruntime(source.onnx) vs the source framework at several sizes ------

def _torch_factory(tmp_path, body: str, name: str = "m.py"):
    path = tmp_path / name
    path.write_text("import torch\n\nclass M(torch.nn.Module):\n"
                    "    def __init__(self):\n        super().__init__()\n        torch.manual_seed(0)\n"
                    "        self.fc = torch.nn.Linear(64, 8)\n\n"
                    f"    def forward(self, x, y):\n        {body}\n\n\ndef build():\n    return M().eval()\n")
    return path


def test_torch_export_symbols_match_pytorch_at_several_sizes(tmp_path):
    import torch

    from pipeline.export import export
    from pipeline.sources import resolve

    path = _torch_factory(tmp_path, "return self.fc(x).reshape(x.shape[0], -1) + y.sum(dim=1, keepdim=True)")
    source = resolve(f"{path}:build", [parse_input("x=B=4,K=10,64"), parse_input("y=B,3")])
    model = source.obj
    pins = export(source, make_inputs(source.inputs), tmp_path / "source.onnx")
    assert pins == []
    graph = onnx.load(str(tmp_path / "source.onnx")).graph
    assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input] == \
        [["B", "K", 64], ["B", 3]]
    for sizes in ({"B": 1, "K": 1}, {"B": 5, "K": 7}, {"B": 4, "K": 10}):
        inputs = make_inputs([s.at(sizes) for s in source.inputs], seed=1)
        with torch.no_grad():
            want = model(*[torch.from_numpy(inputs[s.name]) for s in source.inputs]).numpy()
        got = run_onnx(str(tmp_path / "source.onnx"), inputs)[0]
        assert got.shape == (sizes["B"], sizes["K"] * 8)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pinned_batch_is_static_and_reported(tmp_path, capfd):
    path = tmp_path / "pin.py"
    path.write_text("import torch\n\nclass Pin(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return x.view(4, -1, 64) * 2\n\n\ndef build():\n    return Pin()\n")
    # The batch is symbolic by default: the model fixes it, so it stays static, said once.
    code, _, err, out = run(capfd, "convert", f"{path}:build", "--to", "torch", "--input", "x=4,10,64",
                            "--out", str(tmp_path / "o"))
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    [pin] = report["pinned"]
    assert pin["symbol"] == "B" and pin["size"] == 4 and pin["places"] == [["x", 0]]
    assert "specialized" in pin["reason"] and "x.view(4, -1, 64)" in pin["where"]
    assert report["symbols"] == [] and input_dims(tmp_path / "o" / "source.onnx") == [4, 10, 64]
    [line] = [ln for ln in out.splitlines() if "pinned:" in ln]
    assert "B = 4" in line and "x dimension 0" in line and "pin.py:5" in line

    # Asked for by name, a symbol the model fixes is bad input: one line, nothing written.
    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "torch", "--input", "x=B=4,10,64",
                          "--out", str(tmp_path / "asked"))
    [line] = [ln for ln in err.splitlines() if ln.startswith("pipeline:")]
    assert code == 2 and line.startswith("pipeline: error: B cannot vary"), err
    assert "B cannot vary" in err and "x dimension 0" in err and "pin.py:5" in err
    assert not (tmp_path / "asked").exists()


def test_keras_none_dims_export_match_keras_at_several_sizes(tmp_path, capfd):
    from pipeline.export import export
    from pipeline.quiet import import_tensorflow
    from pipeline.sources import resolve

    _, keras = import_tensorflow()
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(None, 6), name="x")
    y = keras.layers.Conv1D(5, 4, strides=2, padding="same")(inp)  # pads by an amount that depends on the length
    y = keras.layers.BatchNormalization()(y)
    keras.Model(inp, keras.layers.Dense(3)(y)).save(tmp_path / "k.keras")
    # The open batch takes example 2; the open length has none: one line names it.
    line = one_error_line(capfd, "convert", str(tmp_path / "k.keras"), "--out", str(tmp_path / "o"))
    assert "'x_1'" in line and "--dim x_1=N" in line
    assert resolve(str(tmp_path / "k.keras"), dims={"x_1": 9}).inputs[0].dims == (Symbol("B", 2), Symbol("x_1", 9), 6)

    source = resolve(str(tmp_path / "k.keras"), dims={"B": 2, "x_1": 9})
    assert source.inputs[0].dims == (Symbol("B", 2), Symbol("x_1", 9), 6)
    model = source.obj
    export(source, make_inputs(source.inputs), tmp_path / "source.onnx")
    assert input_dims(tmp_path / "source.onnx") == ["B", "x_1", 6]
    for sizes in ({"B": 1, "x_1": 1}, {"B": 3, "x_1": 11}, {"B": 2, "x_1": 8}):
        inputs = make_inputs([s.at(sizes) for s in source.inputs], seed=2)
        want = np.asarray(model(inputs["x"], training=False))
        got = run_onnx(str(tmp_path / "source.onnx"), inputs)[0]
        assert got.shape == (sizes["B"], -(-sizes["x_1"] // 2), 3)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # normalize keeps the symbols: the strided "same" Conv's length is ceil(x_1 / 2), also at odd sizes
    import sympy

    from pipeline.normalize import load
    from pipeline.normalize.symbolic import dims, is_static

    model = load(tmp_path / "source.onnx")
    assert assert_symbolic_shapes_hold(model, source.inputs, [{"B": 1, "x_1": 9}, {"B": 3, "x_1": 11}]) >= 5
    out = model.graph.outputs[0]
    b, n, c = dims(out)
    assert c == 3 and str(b) == "B" and not is_static(out) and is_static(out, [2])
    x1 = sympy.Symbol("x_1", integer=True, positive=True)
    for size in (1, 8, 9, 11):
        assert int(n.subs({x1: size})) == -(-size // 2)


# -- the generated-model comparison at several sizes --------------------------------------------

GOOD = "y"
ONLY_AT_EXAMPLE = "y if x.shape[0] == 4 else y * 1.5"


def _hand_written(tmp_path, monkeypatch, returned: str):
    """Convert a torch Linear+ReLU with a symbolic batch, the importer replaced by a
    hand-written model.py (the importers do not yet emit symbolic shapes)."""
    import torch

    from pipeline import importers

    path = tmp_path / "lin.py"
    path.write_text("import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        torch.manual_seed(0)\n        self.fc = torch.nn.Linear(8, 3)\n\n"
                    "    def forward(self, x):\n        return torch.relu(self.fc(x))\n\n\n"
                    "def build():\n    return M().eval()\n")
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 3)
    np.savez(tmp_path / "w.npz", w=fc.weight.detach().numpy(), b=fc.bias.detach().numpy())
    code = ("import numpy as np\nimport torch\nfrom pathlib import Path\n\n"
            "W = np.load(Path(__file__).with_name('w.npz'))\n\n\nclass Model(torch.nn.Module):\n"
            "    def forward(self, x):\n"
            "        y = torch.relu(x @ torch.from_numpy(W['w']).T + torch.from_numpy(W['b']))\n"
            f"        return {returned}\n\n\ndef load():\n    return Model().eval()\n")

    def generate(target, model, out_dir, *args):
        (out_dir / "model.py").write_text(code)
        (out_dir / "w.npz").write_bytes((tmp_path / "w.npz").read_bytes())
        return {"files": ["model.py", "w.npz"], "node_vars": {}}

    monkeypatch.setattr(importers, "generate", generate)
    return path


def test_hand_written_model_right_at_every_size_passes(tmp_path, monkeypatch, capfd):
    from pipeline import parity

    path = _hand_written(tmp_path, monkeypatch, GOOD)
    made = {"sessions": 0, "models": 0}  # each executor is made once for all size sets (peak memory)
    session, load_generated = parity.session, parity.load_generated
    monkeypatch.setattr(parity, "session", lambda *a: made.__setitem__("sessions", made["sessions"] + 1) or session(*a))
    monkeypatch.setattr(parity, "load_generated",
                        lambda *a: made.__setitem__("models", made["models"] + 1) or load_generated(*a))
    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "torch", "--input", "x=B=4,8",
                            "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert made == {"sessions": 2, "models": 1}  # source.onnx and normalized.onnx at B=1 and B=5; one model.py
    shapes = json.loads((tmp_path / "o" / "report.json").read_text())["parity"]["shapes"]
    assert [s["sizes"] for s in shapes] == [{"B": 4}, {"B": 1}, {"B": 5}]
    assert all(s["passed"] for s in shapes)
    assert all(c["passed"] for s in shapes for cs in s["stages"].values() for c in cs)
    assert len(shapes[1]["stages"]["converted_vs_source"]) == 1


def test_hand_written_model_right_only_at_example_fails_naming_the_set(tmp_path, monkeypatch, capfd):
    path = _hand_written(tmp_path, monkeypatch, ONLY_AT_EXAMPLE)
    code, _, err, out = run(capfd, "convert", f"{path}:build", "--to", "torch", "--input", "x=B=4,8",
                            "--out", str(tmp_path / "o"))
    assert code == 1, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    par = report["parity"]
    assert par["passed"] is False and par["failed_sizes"] == {"B": 1}
    shapes = par["shapes"]
    assert shapes[0]["passed"] is True  # right at the example sizes
    assert shapes[1]["sizes"] == {"B": 1} and shapes[1]["passed"] is False
    assert shapes[1]["stages"]["onnx_vs_source"][0]["passed"]  # the export is right: the model.py is not
    assert not shapes[1]["stages"]["converted_vs_source"][0]["passed"]
    assert "parity failed at B=1" in out
    assert "B=1" in (tmp_path / "o" / "report.html").read_text()


def test_symbolic_batch_by_default_switch(tmp_path, monkeypatch, capfd):
    """The batch is symbolic by default: it becomes ``B`` unless --static, or unless the user's
    --input names symbols of its own (then they said what varies)."""
    import pipeline.convert as conv

    assert conv.SYMBOLIC_BATCH_BY_DEFAULT
    specs = [InputSpec("x", (2, 4)), InputSpec("y", (2, 3))]
    assert [s.dims for s in conv.batch_symbolic(specs, [])] == [(Symbol("B", 2), 4), (Symbol("B", 2), 3)]
    assert [s.dims for s in conv.batch_symbolic(specs, [InputSpec("x", (2, 4))])][0] == (Symbol("B", 2), 4)
    assert conv.batch_symbolic(specs, [InputSpec.of("x", (2, Symbol("L", 4)))]) == specs
    assert conv.batch_symbolic([InputSpec("x", (2, 4)), InputSpec("y", (3, 3))], []) == \
        [InputSpec("x", (2, 4)), InputSpec("y", (3, 3))]  # different batches: left static

    path = tmp_path / "m.py"
    path.write_text("import torch\nINPUTS = {'input': (2, 4)}\ndef build():\n    return torch.nn.ReLU()\n")
    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "torch", "--out", str(tmp_path / "o"))
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["symbols"] == [{"name": "B", "example": 2, "places": [["input", 0]]}]
    assert [s["sizes"] for s in report["parity"]["shapes"]] == [{"B": 2}, {"B": 1}, {"B": 3}]
    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "torch", "--static", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "report.json").read_text())["symbols"] == []


# -- normalize keeps symbolic shapes, and they are the shapes onnxruntime computes ---------------

def assert_symbolic_shapes_hold(model, specs, sizes_list) -> int:
    """Every value's symbolic dims, evaluated at each size set, equal the shape onnxruntime gives
    it; returns how many values had a symbolic dimension."""
    import sympy

    from pipeline.bisect import onnx_intermediates
    from pipeline.normalize.symbolic import dims

    values = [v for n in model.graph for v in n.outputs if v is not None and v.shape is not None]
    symbolic = [v for v in values if any(not isinstance(d, int) for d in v.shape)]
    for v in symbolic:
        assert all(not str(d).startswith("_unknown_") for d in dims(v)), (v.name, v.shape)
    for sizes in sizes_list:
        feed = make_inputs([s.at(sizes) for s in specs])
        actual = onnx_intermediates(model, feed)
        subs = {sympy.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()}
        for v in symbolic:
            want = actual[v.name].shape
            got = tuple(int(d.subs(subs)) if hasattr(d, "subs") else d for d in dims(v))
            assert got == want, (v.name, str(v.shape), sizes, want)
    return len(symbolic)


def test_normalize_keeps_symbols_through_reshape(tmp_path):
    """Seed 2 with B and K: the view(-1, L) is B*K, carried through the Conv and transposes."""
    from pipeline.export import export
    from pipeline.normalize import load, normalize
    from pipeline.sources import resolve

    source = resolve("seed_torch_encoder", [parse_input("mixture=B=4,K=10,128")])
    inputs = make_inputs(source.inputs)
    export(source, inputs, tmp_path / "source.onnx")
    model = normalize(load(tmp_path / "source.onnx"), "keras", "source", inputs).model
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    # view(-1, L).unsqueeze(2) with the Keras layout's transpose merged in: (B*K, 1, 128)
    assert str(reshape.outputs[0].shape) == "[B*K,1,128]"
    assert [str(d) for d in model.graph.outputs[0].shape] == ["B", "K", "64"]
    assert assert_symbolic_shapes_hold(model, source.inputs, [{"B": 1, "K": 3}, {"B": 3, "K": 7}]) >= 8


@pytest.mark.parametrize("op, attrs", [
    ("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[0, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2], strides=[3], ceil_mode=1)),  # a window shorter than the stride
    ("AveragePool", dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3], strides=[2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[4], strides=[3], pads=[2, 1])),
    ("Conv", dict(kernel_shape=[4], strides=[2], auto_pad="SAME_UPPER")),
    ("Conv", dict(kernel_shape=[3], strides=[3], dilations=[2], pads=[1, 2])),
    ("ConvTranspose", dict(kernel_shape=[3], strides=[2], pads=[1, 0])),
])
def test_symbolic_length_is_right_at_every_size(tmp_path, op, attrs):
    """A pooled / convolved symbolic length is either an expression onnxruntime agrees with at
    every size, or left as an opaque symbol (a ceil_mode pool whose last window may start in
    the padding), never an expression that is wrong for some sizes."""
    import sympy

    from pipeline.normalize import load
    from pipeline.normalize.symbolic import dims

    inputs = ["x"]
    inits = []
    if op.startswith("Conv"):
        w = np.ones((2, 2, attrs["kernel_shape"][0]), np.float32)
        inits = [onnx.numpy_helper.from_array(w, "w")]
        inputs.append("w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2, "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node(op, inputs, ["p"], **attrs), helper.make_node("Relu", ["p"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    pooled = next(iter(load(path).graph)).outputs[0]
    length = dims(pooled)[2]
    opaque = not any(s.name == "L" for s in length.free_symbols)
    for size in range(4, 14):
        want = run_onnx(str(path), {"x": np.zeros((1, 2, size), np.float32)})[0].shape[2]
        if not opaque:
            assert int(length.subs({sympy.Symbol("L", integer=True, positive=True): size})) == want, (str(length), size)
    unsure = attrs.get("pads", [0, 0])[1] > 0 or attrs["strides"][0] > attrs["kernel_shape"][0]
    assert opaque == (attrs.get("ceil_mode") == 1 and unsure)


def test_keras_input_that_fixes_a_size_pins_it(tmp_path):
    """A functional Keras model refuses any other size where its Input has one (except the
    batch): a symbol there stays static, reported with the Input that fixes it."""
    from pipeline.export import export
    from pipeline.quiet import import_tensorflow
    from pipeline.sources import resolve

    _, keras = import_tensorflow()
    inp = keras.Input(shape=(5, 3), name="x")
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp))).save(tmp_path / "f.keras")
    source = resolve(str(tmp_path / "f.keras"), [parse_input("x=B=2,L=5,3")])
    pins = export(source, make_inputs(source.inputs), tmp_path / "source.onnx")
    assert [(p["symbol"], p["size"], p["places"]) for p in pins] == [("L", 5, [["x", 1]])]
    assert "Input fixes" in pins[0]["reason"] and "[None, 5, 3]" in pins[0]["where"]
    assert input_dims(tmp_path / "source.onnx") == ["B", 5, 3]
    inputs = make_inputs([s.at({"B": 3}) for s in source.inputs])
    want = np.asarray(source.obj(inputs["x"], training=False))
    np.testing.assert_allclose(run_onnx(str(tmp_path / "source.onnx"), inputs)[0], want, rtol=1e-5, atol=1e-6)


def test_batch_that_cannot_vary_yet_falls_back_to_static_and_says_why(tmp_path, monkeypatch, capfd):
    """Where an importer cannot write the graph with a varying batch (exit 3), the default
    batch is not worth a refusal: the conversion runs again static and the report says why.
    A symbol the user named gets no such second try."""
    import pipeline.importers as importers
    from pipeline.errors import Unsupported

    real = importers.preflight

    def preflight(target, model):  # stands for an op whose translator needs a static batch
        if any(not isinstance(d, int) for v in model.graph.inputs for d in v.shape):
            raise Unsupported(target, [("Resize", "resize_0", "needs a static batch")])
        return real(target, model)

    monkeypatch.setattr(importers, "preflight", preflight)
    path = tmp_path / "m.py"
    path.write_text("import torch\nINPUTS = {'input': (3, 4)}\ndef build():\n    return torch.nn.Tanh()\n")
    code, _, err, out = run(capfd, "convert", f"{path}:build", "--to", "keras", "--out", str(tmp_path / "o"))
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["symbols"] == [] and "shapes" not in report["parity"]
    [pin] = report["pinned"]
    assert pin["symbol"] == "B" and pin["size"] == 3 and pin["places"] == [["input", 0]]
    assert "cannot yet write" in pin["reason"] and "Resize 'resize_0'" in pin["where"]
    assert "pinned: B = 3" in out

    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "keras", "--input", "input=B=3,4",
                          "--out", str(tmp_path / "asked"))
    assert code == 3 and "needs a static batch" in err


TORCH_SUGGESTS = """Constraints violated (H, W)! For more information, run with TORCH_LOGS="+dynamic".
  - Not all values of H = L['x'].size()[2] in the specified range satisfy the generated guard ...
Suggested fixes:
  _H = Dim('_H', min=1, max=oo)
  W = Dim('W', min=3)
  H = 4*_H
"""


def test_torch_suggested_ranges_are_read_and_parity_sizes_respect_them():
    """torch.export's own suggestion (text as torch 2.13 writes it) becomes the constraint the
    export applies and the size sets parity draws from: multiples of 4 for H, W >= 3."""
    from pipeline.export import _suggested_ranges
    from pipeline.parity import candidate_size_sets

    got = _suggested_ranges(TORCH_SUGGESTS)
    assert got == {"W": {"min": 3, "multiple_of": 1, "offset": 0}, "H": {"min": 4, "multiple_of": 4, "offset": 0}}
    specs = [InputSpec.of("x", (Symbol("N", 2), 3, Symbol("H", 16), Symbol("W", 16)))]
    sets = candidate_size_sets(specs, got)
    # all at 1 -> the least sizes allowed; odd sizes (half of a large example) -> the next allowed
    assert sets[0] == {"N": 1, "H": 4, "W": 3} and sets[1] == {"N": 3, "H": 12, "W": 9}
    assert all(s["H"] % 4 == 0 and s["W"] >= 3 for s in sets)


TORCH_BOUNDS = """Constraints violated (S)! For more information, run with TORCH_LOGS="+dynamic".
  - Not all values of S = L['input_ids'].size()[1] in the specified range satisfy the generated guard 2 <= ...
Suggested fixes:
  S = Dim('S', max=32)
"""


def test_torch_suggested_upper_bound_is_kept_and_parity_sizes_stay_below_it():
    """BERT's 32-row position table: torch suggests ``S = Dim('S', max=32)``; the export applies it,
    and parity's other sizes never pass it (an odd size above an example of 31 would be 33)."""
    from torch.export import Dim

    from pipeline.export import _constrained_dim, _suggested_ranges
    from pipeline.parity import candidate_size_sets

    got = _suggested_ranges(TORCH_BOUNDS)
    assert got == {"S": {"min": 0, "multiple_of": 1, "offset": 0, "max": 32}}
    dim = _constrained_dim(Dim, "S", got["S"])
    assert dim.max == 32
    specs = [InputSpec.of("ids", (Symbol("B", 2), Symbol("S", 31)))]
    sets = candidate_size_sets(specs, got)
    assert sets and all(s["S"] <= 32 for s in sets) and {"B": 3, "S": 15} in sets
    multiple = _suggested_ranges("Suggested fixes:\n  _T = Dim('_T', min=3, max=40)\n  T = 10*_T\n")
    assert multiple == {"T": {"min": 30, "multiple_of": 10, "offset": 0, "max": 400}}
    assert all(s["T"] % 10 == 0 and 30 <= s["T"] <= 400
               for s in candidate_size_sets([InputSpec.of("x", (Symbol("T", 400),))], multiple))


def test_pooled_then_upsampled_skip_exports_on_the_stride_torch_proves(tmp_path, capfd):
    """A pool-upsample-add skip only holds for even sizes: torch.export says H = 2*_H, the export
    applies it, and parity checks other even sizes against PyTorch itself."""
    path = tmp_path / "skip.py"
    path.write_text("import torch\n\nclass Skip(torch.nn.Module):\n    def forward(self, x):\n"
                    "        y = torch.nn.functional.max_pool2d(x, 2)\n"
                    "        return x + torch.nn.functional.interpolate(y, scale_factor=2.0)\n\n\n"
                    "def build():\n    return Skip()\n")
    code, _, err, out = run(capfd, "convert", f"{path}:build", "--to", "keras", "--input", "x=N=2,3,H=8,W=6",
                            "--out", str(tmp_path / "o"))
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    symbols = {s["name"]: s.get("constraint") for s in report["symbols"]}
    assert symbols["H"]["multiple_of"] == 2 and symbols["W"]["multiple_of"] == 2
    checked = [s["sizes"] for s in report["parity"]["shapes"] if s.get("passed")]
    assert len(checked) >= 3 and all(s["H"] % 2 == 0 and s["W"] % 2 == 0 for s in checked)
    assert "a multiple of 2" in out


def test_a_length_torch_bounds_exports_in_one_trace_with_its_range_and_names(tmp_path, capfd, monkeypatch):
    """A strided Conv1d needs ``T >= 9``: ``Dim.AUTO`` gives torch's proven range in one trace
    (``pipeline.export._export_auto``), and every size in source.onnx is written with the
    user's symbol names, inside expressions too (``(T - 9)//4 + 1``, not ``s39``)."""
    import re

    path = tmp_path / "strided.py"
    path.write_text("import torch\n\n\ndef build():\n    torch.manual_seed(0)\n"
                    "    return torch.nn.Sequential(torch.nn.Conv1d(2, 4, 9, stride=4), torch.nn.ReLU(),\n"
                    "                               torch.nn.Conv1d(4, 3, 3)).eval()\n")
    import torch

    traces, export = [], torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: traces.append(1) or export(*a, **k))
    code, _, err, _ = run(capfd, "convert", f"{path}:build", "--to", "keras", "--input", "input=N=2,2,T=64",
                          "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert len(traces) == 1  # the named-Dim loop traced twice: once to fail with the range, once with it
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    constraint = {s["name"]: s.get("constraint") for s in report["symbols"]}["T"]
    assert constraint["min"] == 17 and constraint["multiple_of"] == 1  # two convolutions: (T - 9)//4 + 1 >= 3
    checked = [s["sizes"]["T"] for s in report["parity"]["shapes"] if s.get("passed")]
    assert len(checked) >= 3 and any(t % 4 for t in checked)
    model = onnx.load(str(tmp_path / "o" / "source.onnx"), load_external_data=False)
    names = {d.dim_param for v in [*model.graph.value_info, *model.graph.output]
             for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert names and not any(re.search(r"(?<![\w.])s\d+", n) for n in names), names

    # source.onnx records each symbol's example size and proven range: converting it again
    # needs no --dim, and parity keeps to T >= 17 (onnxruntime judges it as the source).
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["pipeline.symbols"]) == {"N": {"example": 2}, "T": {"example": 64, **constraint}}
    code, _, err, _ = run(capfd, "convert", str(tmp_path / "o" / "source.onnx"), "--to", "torch",
                          "--out", str(tmp_path / "again"))
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert {s["name"]: (s["example"], s.get("constraint")) for s in again["symbols"]} == \
        {"N": (2, None), "T": (64, constraint)}
    assert len(again["parity"]["shapes"]) >= 3 and all(s["sizes"]["T"] >= 17 for s in again["parity"]["shapes"])
    # A size given on the command line wins over the recorded one.
    code, _, err, _ = run(capfd, "convert", str(tmp_path / "o" / "source.onnx"), "--to", "torch", "--dim", "T=40",
                          "--out", str(tmp_path / "given"))
    assert code == 0, err
    given = json.loads((tmp_path / "given" / "report.json").read_text())
    assert {s["name"]: s["example"] for s in given["symbols"]} == {"N": 2, "T": 40}


def test_recorded_symbols_keep_only_well_formed_entries():
    """An ONNX file's ``pipeline.symbols`` is input: an entry without a positive integer example
    is dropped, a range without all of min/multiple_of/offset as integers is dropped (parity
    would read them), and text that is not JSON is no entry at all."""
    from pipeline.spec import recorded_symbols

    text = json.dumps({"B": {"example": 4}, "T": {"example": 64, "min": 17, "multiple_of": 2, "offset": 1, "max": 99},
                       "X": {"example": "4"}, "Y": {"example": 3, "min": "x", "multiple_of": 1, "offset": 0},
                       "Z": [1], "W": {"example": 0}, "V": {"example": True}})
    assert recorded_symbols({"pipeline.symbols": text}) == {
        "B": {"example": 4}, "T": {"example": 64, "min": 17, "multiple_of": 2, "offset": 1, "max": 99},
        "Y": {"example": 3}}
    assert recorded_symbols({"pipeline.symbols": "{not json"}) == {} and recorded_symbols({}) == {}
