"""Inputs as users have them (issue 13, item 2): integer inputs drawn within the rows they
index, ``--input ...:LOW..HIGH``, Keras models built on a dict of inputs, ``--sample FILE.npz``.

Expected values come from the frameworks: onnxruntime says where an index stops being valid,
the Keras source model called with its own dict gives the outputs the converted models must
match, and a bad sample must leave an earlier conversion byte for byte as it was.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.errors import BadInput
from pipeline.spec import InputSpec, Symbol, check_sample, index_ranges, load_sample, make_inputs, parse_input

from conftest import run_cli

# A BERT-like Keras model built on a dict of inputs, as every keras-hub backbone is: token
# embedding of 100 rows, segment embedding of 2 rows (ids drawn from [0, 8) broke it: exit 4),
# a padding mask that only multiplies.  The dict's keys are not in sorted order, so calling it
# with a list fails ("tf2onnx failed: ValueError: in user code:", exit 2, before the fix).
BERTLIKE = textwrap.dedent('''
    import keras
    from keras import layers, ops


    def build():
        keras.utils.set_random_seed(0)
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = layers.Embedding(100, 16, name="token_embedding")(token_ids)
        x = x + layers.Embedding(2, 16, name="segment_embedding")(segment_ids)
        mask = ops.cast(padding_mask, "float32")[:, :, None]
        x = layers.Dense(16, activation="gelu", name="dense")(x) * mask
        return keras.Model(inputs={"token_ids": token_ids, "segment_ids": segment_ids,
                                   "padding_mask": padding_mask}, outputs=x)


    INPUTS = {"token_ids": ((2, 12), "int32"), "segment_ids": ((2, 12), "int32"),
              "padding_mask": ((2, 12), "int32")}
''')

KEYS = ("token_ids", "segment_ids", "padding_mask")


def _bert_sample(batch: int = 2, length: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), np.int32)
    mask[:, length - 3:] = 0
    return {"token_ids": rng.integers(0, 100, (batch, length)).astype(np.int32),
            "segment_ids": rng.integers(0, 2, (batch, length)).astype(np.int32),
            "padding_mask": mask}


@pytest.fixture(scope="module")
def bert_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bertlike") / "bertlike.py"
    path.write_text(BERTLIKE)
    return path


@pytest.fixture(scope="module")
def keras_source(bert_file):
    from pipeline.sources import import_file

    return import_file(bert_file).build()


@pytest.fixture(scope="module")
def to_torch(bert_file, tmp_path_factory):
    """Keras dict model -> PyTorch, with a sample, through the CLI as a user runs it."""
    work = tmp_path_factory.mktemp("bert_torch")
    np.savez(work / "sample.npz", **_bert_sample())
    out = work / "out"
    proc = run_cli("convert", f"{bert_file}:build", "--to", "torch", "--out", str(out), "--quiet",
                   "--sample", str(work / "sample.npz"))
    return proc, out, work


# -- a dict-input Keras model converts; integer inputs stay within the embedding ----------------

def test_keras_dict_model_converts_to_torch_with_its_sample(to_torch):
    proc, out, _ = to_torch
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["input_ranges"]["segment_ids"]["range"] == [0, 2]  # the segment embedding has 2 rows
    assert report["input_ranges"]["token_ids"]["range"] == [0, 100]
    assert report["input_ranges"]["padding_mask"]["from"].startswith("default")
    sample = report["parity"]["samples"]
    assert sample["passed"] and sample["file"].endswith("sample.npz")
    assert {c["name"] for c in sample["stages"]["converted_vs_source"]}
    assert "on the sample" in proc.stdout
    assert "Parity on the sample" in (out / "report.html").read_text()


def test_generated_torch_model_takes_the_inputs_as_keywords(to_torch, keras_source):
    import torch

    from pipeline.parity import load_generated

    _, out, _ = to_torch
    model = load_generated(out / "model.py")
    sample = _bert_sample(seed=7)
    want = np.asarray(keras_source(sample, training=False))
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v) for k, v in sample.items()}).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_generated_keras_model_takes_the_same_dict_at_other_sizes(bert_file, keras_source, tmp_path):
    """Keras -> Keras with the batch and length symbolic, and a sample at sizes other than the
    examples: the generated model is called with the source's own dict."""
    np.savez(tmp_path / "sample.npz", **_bert_sample(batch=3, length=5))
    out = tmp_path / "out"
    inputs = [f"--input={k}=B=2,T=12:int32" for k in KEYS]
    proc = run_cli("convert", f"{bert_file}:build", "--to", "keras", "--out", str(out), "--quiet", *inputs,
                   "--sample", str(tmp_path / "sample.npz"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["samples"]["sizes"] == {"B": 3, "T": 5}
    assert report["parity"]["samples"]["passed"]

    from pipeline.parity import load_generated

    model = load_generated(out / "model.py")
    sample = _bert_sample(batch=4, length=9, seed=3)
    want = np.asarray(keras_source(sample, training=False))
    got = np.asarray(model(sample, training=False))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# -- a bad sample: exit 2, one line naming the array, the earlier output untouched -------------

@pytest.mark.parametrize("case, named", [
    ("missing", "padding_mask"),  # found once the model is loaded (dtype, rank, sizes likewise: test_bad_sample_arrays)
    ("nan", "token_ids"),  # found before the model is loaded
])
def test_bad_sample_exits_2_and_keeps_the_earlier_output(to_torch, bert_file, case, named):
    proc, out, work = to_torch
    assert proc.returncode == 0
    sample = _bert_sample()
    if case == "missing":
        del sample["padding_mask"]
    elif case == "dtype":
        sample["token_ids"] = sample["token_ids"].astype(np.int64)
    elif case == "static_size":  # INPUTS fixes the length at 12
        sample["segment_ids"] = sample["segment_ids"][:, :5]
    else:
        sample["token_ids"] = np.full((2, 12), np.nan, np.float32)
    bad = work / f"bad_{case}.npz"
    np.savez(bad, **sample)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run_cli("convert", f"{bert_file}:build", "--to", "torch", "--out", str(out), "--quiet", "--sample", str(bad))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: error: --sample") and repr(named) in lines[0], lines
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_sample_the_source_refuses_is_bad_input(keras_source):
    """A segment id past the embedding's 2 rows: Keras refuses it, so exit 2 with its words."""
    from pipeline.parity import sample_reference
    from pipeline.sources import Source

    source = Source("keras", "bertlike", "bertlike", keras_source,
                    [InputSpec(n, (2, 12), "int32") for n in sorted(KEYS)], ["multiply"])
    sample = _bert_sample()
    assert len(sample_reference(source, sample, "s.npz")) == 1
    sample["segment_ids"][0, 0] = 5
    with pytest.raises(BadInput, match=r"--sample s.npz: the source model refuses it: .*\[0, 2\)"):
        sample_reference(source, sample, "s.npz")


def test_parity_failing_on_the_sample_only_is_exit_1(tmp_path):
    """Seeded inputs of unit scale pass at atol 1e-4, rtol 0; the sample's values of 1e4 make
    float32 rounding differ between PyTorch and Keras far beyond that: exit 1, the sample's
    row failing, and the first divergence sought on the sample."""
    (tmp_path / "lin.py").write_text(textwrap.dedent('''
        import torch

        def build():
            torch.manual_seed(0)
            return torch.nn.Linear(256, 8)

        INPUTS = {"input": (2, 256)}
    '''))
    rng = np.random.default_rng(0)
    sample_dir = tmp_path / "sample"  # a folder of NAME.npy
    sample_dir.mkdir()
    np.save(sample_dir / "input.npy", (rng.standard_normal((2, 256)) * 1e4).astype(np.float32))
    out = tmp_path / "out"
    proc = run_cli("convert", f"{tmp_path / 'lin.py'}:build", "--out", str(out), "--rtol", "0", "--quiet",
                   "--sample", str(sample_dir))
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert all(c["passed"] for cs in report["parity"]["stages"].values() for c in cs)
    assert report["parity"]["samples"]["passed"] is False
    assert report["parity"]["passed"] is False
    assert "BAD on the sample" in proc.stdout


# -- the range of an integer input, read off the graph --------------------------------------

def _graph_with_indices(path):
    """``ids`` -> Cast -> Unsqueeze -> Add 1 -> Gather over 5 rows; ``d`` divides; ``mask``
    only multiplies; ``far`` indexes a table whose size the graph does not state."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [5, 4], np.arange(20, dtype=np.float32))
    one = helper.make_tensor("one", TensorProto.INT32, [], [1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["ids32", "axes"], ["ids3"]),
        helper.make_node("Add", ["ids3", "one"], ["shifted"]),
        helper.make_node("Gather", ["table", "shifted"], ["rows"], axis=0, name="lookup"),
        helper.make_node("ReduceSum", ["rows"], ["y"], keepdims=0),
        helper.make_node("Div", ["hundred", "d"], ["q"], name="share"),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["maskf", "maskf"], ["m"]),
        helper.make_node("Gather", ["runtime_table", "far"], ["g"], axis=0),
    ]
    inits = [table, one, axes, helper.make_tensor("hundred", TensorProto.INT64, [], [100])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3]),
        helper.make_tensor_value_info("d", TensorProto.INT64, [2]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, [2]),
        helper.make_tensor_value_info("runtime_table", TensorProto.FLOAT, ["n", 2]),
        helper.make_tensor_value_info("far", TensorProto.INT64, [2]),
    ], [helper.make_tensor_value_info(n, t, None) for n, t in
        (("y", TensorProto.FLOAT), ("q", TensorProto.INT64), ("m", TensorProto.FLOAT), ("g", TensorProto.FLOAT))],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_ranges_stop_where_onnxruntime_stops(tmp_path):
    import onnxruntime as ort

    path = _graph_with_indices(tmp_path / "g.onnx")
    specs = [InputSpec("ids", (2, 3), "int64"), InputSpec("d", (2,), "int64"), InputSpec("mask", (2,), "int64"),
             InputSpec("runtime_table", (4, 2)), InputSpec("far", (2,), "int64")]
    found = index_ranges(path, specs)
    assert set(found) == {"ids", "d"}  # the mask indexes nothing; the runtime table's size is unknown
    low, high, why = found["ids"]
    assert "lookup" in why and "5 rows" in why
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(ids, d=np.ones(2, np.int64)):
        return session.run(None, {"ids": np.full((2, 3), ids, np.int64), "d": d, "mask": np.ones(2, np.int64),
                                  "runtime_table": np.ones((4, 2), np.float32), "far": np.zeros(2, np.int64)})

    run(low)
    run(high - 1)
    with pytest.raises(Exception, match="out of bounds|outside|indices"):
        run(high)  # onnxruntime refuses the first id past the range
    assert found["d"][0] == 1  # never a zero divisor
    drawn = make_inputs([InputSpec.of(s.name, s.dims, s.dtype, found[s.name][:2] if s.name in found else None)
                         for s in specs], seed=3)
    run(drawn["ids"][0, 0])
    assert drawn["ids"].min() >= low and drawn["ids"].max() < high and drawn["d"].min() >= 1


def test_a_stated_range_is_kept(tmp_path):
    path = _graph_with_indices(tmp_path / "g.onnx")
    specs = [parse_input("ids=2,3:int64:0..2"), InputSpec("d", (2,), "int64")]
    assert "ids" not in index_ranges(path, specs)
    assert specs[0].value_range == (0, 2)
    drawn = make_inputs(specs, seed=0)["ids"]
    assert drawn.dtype == np.int64 and set(np.unique(drawn)) <= {0, 1}


def test_report_says_where_each_range_comes_from(tmp_path):
    from pipeline.spec import trace_inputs, with_index_ranges

    path = _graph_with_indices(tmp_path / "g.onnx")
    specs = [parse_input("ids=2,3:int64"), parse_input("d=2:int64:5..7"), parse_input("mask=2:int64"),
             parse_input("runtime_table=4,2"), parse_input("far=2:int64")]
    traced = trace_inputs(specs, seed=0)
    assert (traced["ids"] == 1).all() and (traced["d"] == 6).all()  # valid before any range is known
    specs, report = with_index_ranges(specs, path)
    assert report["ids"]["range"] == [0, 4] and "lookup" in report["ids"]["from"]
    assert report["d"] == {"range": [5, 7], "from": "given"}
    assert report["mask"]["from"].startswith("default") and report["mask"]["range"] == [0, 8]
    assert "runtime_table" not in report
    assert [s.value_range for s in specs] == [(0, 4), (5, 7), None, None, None]


@pytest.mark.parametrize("text, message", [
    ("ids=2,16:0..30000", "needs an integer dtype"),
    ("ids=2,16:int64:5..5", "is empty"),
    ("ids=2,16:uint8:0..300", "does not fit uint8"),
    ("ids=2,16:int64:0..x", "is not LOW..HIGH"),
])
def test_bad_ranges(text, message):
    with pytest.raises(BadInput, match=message):
        parse_input(text)


def test_range_syntax():
    spec = parse_input("ids=B=2,16:int64:-3..30000")
    assert (spec.dtype, spec.value_range, spec.dims) == ("int64", (-3, 30000), (Symbol("B", 2), 16))
    assert spec.at({"B": 5}).value_range == (-3, 30000) and spec.frozen().value_range == (-3, 30000)


def test_yaml_range(tmp_path):
    from pipeline.batch import validate

    entry = {"name": "a", "model": "m", "inputs": {"ids": {"shape": [2, 16], "dtype": "int64", "range": [0, 30000]}}}
    spec = validate({"models": [entry]}, "f.yaml")["entries"][0]["inputs"][0]
    assert spec.value_range == (0, 30000)
    entry["inputs"]["ids"]["range"] = [3, 1]
    with pytest.raises(BadInput, match="range 3..1 is empty"):
        validate({"models": [entry]}, "f.yaml")
    entry["inputs"]["ids"]["ranges"] = entry["inputs"]["ids"].pop("range")
    with pytest.raises(BadInput, match="unknown field"):
        validate({"models": [entry]}, "f.yaml")


# -- sample files: every way a sample can be wrong names the array ----------------------------

SPECS = [InputSpec.of("ids", (Symbol("B", 2), Symbol("T", 16)), "int64"),
         InputSpec.of("mask", (Symbol("B", 2), Symbol("T", 16)), "int64"),
         InputSpec.of("x", (Symbol("B", 2), 3), "float32")]


def _sample(**changes):
    arrays = {"ids": np.zeros((4, 7), np.int64), "mask": np.ones((4, 7), np.int64), "x": np.zeros((4, 3), np.float32)}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def test_a_symbol_takes_any_size_once():
    assert check_sample(_sample(), SPECS, "s.npz") == {"B": 4, "T": 7}


@pytest.mark.parametrize("changes, message", [
    ({"mask": None}, "no array for input 'mask'"),
    ({"extra": np.zeros(2)}, "array 'extra' is not an input"),
    ({"ids": np.zeros((4, 7), np.int32)}, "array 'ids' is int32, the input is int64"),
    ({"x": np.zeros((4, 3, 1), np.float32)}, "array 'x' has rank 3"),
    ({"x": np.zeros((4, 5), np.float32)}, "array 'x' has size 5 on axis 1 where the model fixes 3"),
    ({"mask": np.ones((4, 8), np.int64)}, "array 'mask' has size 8 on axis 1, symbol 'T'"),
])
def test_bad_sample_arrays(changes, message):
    with pytest.raises(BadInput, match=message):
        check_sample(_sample(**changes), SPECS, "s.npz")


def test_sample_files(tmp_path):
    np.savez(tmp_path / "ok.npz", **_sample())
    assert set(load_sample(tmp_path / "ok.npz")) == {"ids", "mask", "x"}
    x = np.zeros((4, 3), np.float32)
    x[1, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **_sample(x=x))
    with pytest.raises(BadInput, match="array 'x' holds NaN in 1 of its 12 values"):
        load_sample(tmp_path / "nan.npz")
    np.save(tmp_path / "one.npy", x)
    with pytest.raises(BadInput, match="one array with no name"):
        load_sample(tmp_path / "one.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no NAME.npy"):
        load_sample(tmp_path / "empty")
    with pytest.raises(BadInput, match="no such file"):
        load_sample(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(BadInput, match="cannot read"):
        load_sample(tmp_path / "junk.npz")


# -- INPUTS in a user's file ------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("abc", "expected a shape"),
    (5, "expected a shape"),
    ([], "expected a shape"),
    (((2, 3), "int65"), "unknown dtype 'int65'"),
    ((2, -3), "dimension 1 -3 is not a positive integer"),
    (((2, 3), "float32", (0, 5)), "needs an integer dtype"),
])
def test_malformed_declared_inputs(value, message):
    from pipeline.sources import _declared_inputs

    with pytest.raises(BadInput, match=message):
        _declared_inputs({"x": value}, "f.py")


def test_declared_range():
    from pipeline.sources import _declared_inputs

    spec, = _declared_inputs({"ids": ((2, "T=16"), "int64", (0, 30000))}, "f.py")
    assert spec.value_range == (0, 30000) and spec.dims == (2, Symbol("T", 16))


def test_malformed_inputs_is_exit_2_in_one_line(tmp_path):
    (tmp_path / "m.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(3, 2)\n\n"
                                   "INPUTS = {'input': ('a', 'b', None)}\n")
    proc = run_cli("convert", f"{tmp_path / 'm.py'}:build", "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "INPUTS['input']" in lines[0], lines


# -- keras-hub: a real dict-input backbone (slow; keras-hub installed with --no-deps) -------------

HUB_BERT = textwrap.dedent('''
    import keras
    import keras_hub


    def build():
        keras.utils.set_random_seed(0)
        return keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16)


    INPUTS = {"token_ids": ((2, 12), "int32"), "segment_ids": ((2, 12), "int32"),
              "padding_mask": ((2, 12), "int32")}
''')


@pytest.mark.slow
@pytest.mark.parametrize("target", ["torch", "keras"])
def test_keras_hub_bert_backbone(tmp_path, target):
    """keras-hub's BertBackbone (inputs: a dict; segment embedding of 2 rows) exited 2 at the
    export and then 4 on ids drawn past its segment embedding.  It converts both ways, and the
    generated model takes the same dict (Keras) or keyword arguments (PyTorch)."""
    pytest.importorskip("keras_hub", reason="pip install --no-deps keras-hub==0.32.0 (its tensorflow-text "
                                            "requirement asks for TensorFlow 2.20, so it is not in requirements.lock)")
    from pipeline.parity import load_generated
    from pipeline.sources import import_file

    (tmp_path / "hub.py").write_text(HUB_BERT)
    out = tmp_path / "out"
    np.savez(tmp_path / "sample.npz", **_bert_sample())
    proc = run_cli("convert", f"{tmp_path / 'hub.py'}:build", "--to", target, "--out", str(out), "--quiet",
                   "--sample", str(tmp_path / "sample.npz"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["input_ranges"]["segment_ids"]["range"] == [0, 2]
    assert report["parity"]["samples"]["passed"]

    source = import_file(tmp_path / "hub.py").build()
    sample = _bert_sample(seed=5)
    want = source(sample, training=False)
    want = [np.asarray(want[k]) for k in sorted(want)]  # pooled_output, sequence_output
    model = load_generated(out / "model.py")
    if target == "torch":
        import torch

        with torch.no_grad():
            got = [o.numpy() for o in model(**{k: torch.from_numpy(v) for k, v in sample.items()})]
    else:
        got = [np.asarray(o) for o in model(sample, training=False)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
