"""Ops a new user hits in real models: ArgMax/ArgMin, CumSum, TopK, LSTM/GRU, Resize(align_corners).

Every case runs the real pipeline (export, normalize, import, four-way parity).
The expected values come from the source framework (PyTorch or Keras) or, for
hand-built ONNX graphs, from onnxruntime; a case passes only if the generated
model matches them within 1e-4 relative.  Some cases also check what the
generated code says (native LSTM/GRU layers) or that a refusal names its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.convert import Options, convert  # noqa: E402
from pipeline.errors import Unsupported  # noqa: E402
from pipeline.quiet import import_tensorflow  # noqa: E402
from pipeline.spec import InputSpec  # noqa: E402

tf, keras = import_tensorflow()
HERE = Path(__file__).resolve()
MAX_REL_ERR = 1e-4
F32, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32


# -- helpers -------------------------------------------------------------------


def assert_exact(result) -> None:
    """Exit 0 and every output within 1e-4 relative of the source (framework or onnxruntime)."""
    parity = result.report["parity"]
    assert result.exit_code == 0, parity["stages"]
    outputs = parity["stages"]["converted_vs_source"]
    assert outputs and all(o["passed"] and o["max_rel_err"] <= MAX_REL_ERR for o in outputs), outputs


def convert_torch(tmp_path, factory: str, shape, to: str = "keras"):
    """Convert ``factory`` (a function in this file) from PyTorch; return (result, model.py text)."""
    result = convert(Options(model=f"{HERE}:{factory}", to=to, out=str(tmp_path / to), inputs=[InputSpec("x", shape)]))
    return result, (result.out_dir / "model.py").read_text()


def convert_onnx(tmp_path, model: onnx.ModelProto, to: str):
    path = tmp_path / "graph.onnx"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    result = convert(Options(model=str(path), to=to, out=str(tmp_path / to)))
    return result, (result.out_dir / "model.py").read_text()


def onnx_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    """A one-graph ONNX model (opset 18, an IR version onnxruntime reads)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def tensor(name: str, arr) -> TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(arr), name)


def rand(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


# -- PyTorch sources (factories for the pipeline: MODEL = "this_file.py:factory") ----


class _Ops(nn.Module):
    def forward(self, x):
        values, indices = torch.topk(x, 2, dim=-1)
        return torch.cumsum(x, dim=1), x.argmax(-1), values, indices


class _Rnn(nn.Module):
    def __init__(self, kind: str, layers: int, bidirectional: bool, states: bool):
        super().__init__()
        self.rnn = getattr(nn, kind)(6, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.states = states

    def forward(self, x):
        y, state = self.rnn(x)
        if not self.states:
            return y
        return (y, *state) if isinstance(state, tuple) else (y, state)  # LSTM: (h, c); GRU: h


class _Upsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.nn.functional.interpolate(y, size=(11, 13), mode="bilinear", align_corners=True)


def torch_ops():
    return _Ops()


def torch_lstm():
    torch.manual_seed(0)
    return _Rnn("LSTM", 1, False, False)


def torch_lstm_deep():
    torch.manual_seed(1)
    return _Rnn("LSTM", 2, True, True)


def torch_gru_deep():
    torch.manual_seed(2)
    return _Rnn("GRU", 2, True, True)


def torch_upsample():
    torch.manual_seed(3)
    return _Upsample()


# -- Keras sources --------------------------------------------------------------


def save_keras(tmp_path, make, shape=(2, 7, 6)) -> str:
    """``make(keras.Input)`` as a saved .keras model with every weight from a seeded generator."""
    x = keras.Input(shape=shape[1:], batch_size=shape[0], name="x")
    model = keras.Model(x, make(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in weights])
    path = tmp_path / "model.keras"
    model.save(path)
    return str(path)


# -- 1. ArgMax / ArgMin, CumSum, TopK ---------------------------------------------


def test_torch_cumsum_argmax_topk_to_keras(tmp_path):
    result, code = convert_torch(tmp_path, "torch_ops", (2, 5, 8))
    assert_exact(result)
    assert "ops.cumsum(" in code and "ops.argmax(" in code and "ops.top_k(" in code


def _search_graph() -> onnx.ModelProto:
    """ArgMax/ArgMin with ties (on floor(2x)), every CumSum flag and an int32 CumSum, TopK on a middle axis
    and smallest-first, a full-length ReverseSequence."""
    shape = [2, 6, 5]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Floor", ["x2"], ["steps"]),  # integer-valued: ties for the arg searches
        helper.make_node("ArgMax", ["steps"], ["amax_last"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("ArgMax", ["steps"], ["amax_first"], axis=-1, keepdims=0),
        helper.make_node("ArgMin", ["steps"], ["amin_last"], axis=2, keepdims=0, select_last_index=1),
        helper.make_node("CumSum", ["x", "axis1"], ["cs_excl_rev"], exclusive=1, reverse=1),
        helper.make_node("CumSum", ["x", "axis_neg"], ["cs_excl"], exclusive=1),
        helper.make_node("CumSum", ["x", "axis1"], ["cs_rev"], reverse=1),
        helper.make_node("Cast", ["steps"], ["steps_i32"], to=I32),
        helper.make_node("CumSum", ["steps_i32", "axis1"], ["cs_int"]),  # stays int32 (torch would widen)
        helper.make_node("TopK", ["x", "k3"], ["top_v", "top_i"], axis=1, largest=0),
        helper.make_node("TopK", ["x", "k2"], ["last_v", "last_i"], axis=-1),
        helper.make_node("ReverseSequence", ["x", "lens"], ["rev"], batch_axis=0, time_axis=1),
    ]
    outputs = [("amax_last", I64, [2, 1, 5]), ("amax_first", I64, [2, 6]), ("amin_last", I64, [2, 6]),
               ("cs_excl_rev", F32, shape), ("cs_excl", F32, shape), ("cs_rev", F32, shape), ("cs_int", I32, shape),
               ("top_v", F32, [2, 3, 5]), ("top_i", I64, [2, 3, 5]), ("last_v", F32, [2, 6, 2]),
               ("last_i", I64, [2, 6, 2]), ("rev", F32, shape)]
    inits = [tensor("two", np.float32(2.0)), tensor("axis1", np.array(1, np.int64)),
             tensor("axis_neg", np.array([-1], np.int64)), tensor("k3", np.array([3], np.int64)),
             tensor("k2", np.array([2], np.int64)), tensor("lens", np.array([6, 6], np.int64))]
    return onnx_model(nodes, [("x", F32, shape)], outputs, inits)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_onnx_search_and_scan_ops(tmp_path, to):
    result, code = convert_onnx(tmp_path, _search_graph(), to)
    assert_exact(result)
    if to == "torch":  # parity compares values only: the int32 sum must be asked for (torch widens to int64)
        assert "torch.sort(" in code and "stable=True" in code and "dtype=torch.int32" in code  # TopK: ties in index order
    else:
        assert "ops.top_k(" in code


# -- 2. LSTM / GRU ------------------------------------------------------------------

H, C, T, N = 4, 3, 5, 2


def _rnn_inits(kind: str, prefix: str, dirs: int, bias: bool, seed: int) -> list[TensorProto]:
    gates = 4 if kind == "LSTM" else 3
    inits = [tensor(f"{prefix}_W", rand((dirs, gates * H, C), seed)),
             tensor(f"{prefix}_R", rand((dirs, gates * H, H), seed + 1))]
    if bias:
        inits.append(tensor(f"{prefix}_B", rand((dirs, 2 * gates * H), seed + 2)))
    return inits


def _rnn_graph() -> onnx.ModelProto:
    """An LSTM (reverse, bias, all three outputs) and a GRU (bidirectional, no bias,
    linear_before_reset=1, an explicit zero initial state) on a time-major sequence."""
    nodes = [
        helper.make_node("LSTM", ["x", "l_W", "l_R", "l_B"], ["l_y", "l_h", "l_c"], hidden_size=H,
                         direction="reverse"),
        helper.make_node("GRU", ["x", "g_W", "g_R", "", "", "g_h0"], ["g_y", "g_h"], hidden_size=H,
                         direction="bidirectional", linear_before_reset=1),
    ]
    inits = (_rnn_inits("LSTM", "l", 1, True, 10) + _rnn_inits("GRU", "g", 2, False, 20)
             + [tensor("g_h0", np.zeros((2, N, H), np.float32))])
    outputs = [("l_y", F32, [T, 1, N, H]), ("l_h", F32, [1, N, H]), ("l_c", F32, [1, N, H]),
               ("g_y", F32, [T, 2, N, H]), ("g_h", F32, [2, N, H])]
    return onnx_model(nodes, [("x", F32, [T, N, C])], outputs, inits)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_onnx_lstm_gru_directions_and_states(tmp_path, to):
    result, code = convert_onnx(tmp_path, _rnn_graph(), to)
    assert_exact(result)
    if to == "torch":
        assert "nn.LSTM(3, 4)" in code and "nn.GRU(3, 4, bias=False, bidirectional=True)" in code
    else:
        assert "go_backwards=True" in code and "layers.Bidirectional(layers.GRU(4, " in code


def _gru_reset_before_graph() -> onnx.ModelProto:
    """A GRU with linear_before_reset=0 (ONNX's default: TensorFlow's original GRU)."""
    node = helper.make_node("GRU", ["x", "g_W", "g_R", "g_B"], ["g_y"], hidden_size=H)
    return onnx_model([node], [("x", F32, [T, N, C])], [("g_y", F32, [T, 1, N, H])],
                      _rnn_inits("GRU", "g", 1, True, 30))


def test_gru_reset_before_is_keras_reset_after_false(tmp_path):
    result, code = convert_onnx(tmp_path, _gru_reset_before_graph(), "keras")
    assert_exact(result)
    assert "reset_after=False" in code


def test_gru_reset_before_is_refused_for_pytorch(tmp_path):
    with pytest.raises(Unsupported, match=r"GRU at .*linear_before_reset=0"):
        convert_onnx(tmp_path, _gru_reset_before_graph(), "torch")


def test_rnn_initial_state_and_sequence_lens_are_refused_with_reasons(tmp_path):
    nodes = [
        helper.make_node("LSTM", ["x", "l_W", "l_R", "", "", "h0"], ["l_y"], hidden_size=H, name="lstm_h0"),
        helper.make_node("GRU", ["x", "g_W", "g_R", "", "lens"], ["g_y"], hidden_size=H, name="gru_lens"),
    ]
    inits = (_rnn_inits("LSTM", "l", 1, False, 40) + _rnn_inits("GRU", "g", 1, False, 50)
             + [tensor("h0", np.full((1, N, H), 0.5, np.float32)), tensor("lens", np.array([T, T - 2], np.int32))])
    model = onnx_model(nodes, [("x", F32, [T, N, C])], [("l_y", F32, [T, 1, N, H]), ("g_y", F32, [T, 1, N, H])],
                       inits)
    for to in ("torch", "keras"):
        (tmp_path / to).mkdir()
        with pytest.raises(Unsupported) as info:
            convert_onnx(tmp_path / to, model, to)
        message = str(info.value)
        assert "lstm_h0" in message and "initial_h must be zero" in message
        assert "gru_lens" in message and "sequence_lens" in message


def test_torch_lstm_to_keras_lstm(tmp_path):
    result, code = convert_torch(tmp_path, "torch_lstm", (2, 7, 6))
    assert_exact(result)
    assert "layers.LSTM(5, return_sequences=True" in code


@pytest.mark.parametrize("factory, layer", [("torch_lstm_deep", "LSTM"), ("torch_gru_deep", "GRU")])
def test_torch_deep_bidirectional_rnn_with_states_to_keras(tmp_path, factory, layer):
    result, code = convert_torch(tmp_path, factory, (2, 7, 6))
    assert_exact(result)
    assert code.count(f"layers.Bidirectional(layers.{layer}(5, return_sequences=True, return_state=True)") == 2


def test_keras_lstm_to_torch_lstm(tmp_path):
    path = save_keras(tmp_path, lambda x: keras.layers.LSTM(5, return_sequences=True)(x))
    result = convert(Options(model=path, to="torch", out=str(tmp_path / "out")))
    assert_exact(result)
    assert "nn.LSTM(6, 5)" in (result.out_dir / "model.py").read_text()


@pytest.mark.parametrize("make", [
    lambda x: keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(x),
    lambda x: keras.layers.LSTM(5, return_sequences=True, go_backwards=True)(x),
    lambda x: keras.layers.LSTM(5)(x),
], ids=["bidirectional", "go_backwards", "last_state"])
def test_keras_lstm_flavours_to_torch(tmp_path, make):
    result = convert(Options(model=save_keras(tmp_path, make), to="torch", out=str(tmp_path / "out")))
    assert_exact(result)
    assert "nn.LSTM(6, 5" in (result.out_dir / "model.py").read_text()


@pytest.mark.parametrize("make, modules", [
    (lambda x: keras.layers.GRU(5, return_sequences=True)(x), 1),
    (lambda x: keras.layers.GRU(5)(x), 1),
    (lambda x: keras.layers.GRU(5, return_sequences=True, go_backwards=True)(x), 1),
    (lambda x: keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(x), 1),  # bidirectional=True
    (lambda x: keras.layers.Concatenate()(keras.layers.GRU(5, return_state=True)(x)), 1),
    (lambda x: keras.layers.GRU(4, use_bias=False)(keras.layers.GRU(5, return_sequences=True)(x)), 2),
    # the second Loop's input shape is static only once the first ones are GRUs
    (lambda x: keras.layers.GRU(4)(keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(x)), 2),
], ids=["sequences", "last", "go_backwards", "bidirectional", "return_state", "stacked_no_bias",
        "after_bidirectional"])
def test_keras_gru_to_torch_gru(tmp_path, make, modules, request):
    """tf2onnx writes a Keras 3 GRU as an ONNX Loop; normalize recognises the cell (loops_as_rnn)
    and PyTorch gets nn.GRU, exactly."""
    result = convert(Options(model=save_keras(tmp_path, make), to="torch", out=str(tmp_path / "out")))
    assert_exact(result)
    code = (result.out_dir / "model.py").read_text()
    assert code.count("nn.GRU(") == modules, code
    assert ("bidirectional=True" in code) == ("bidirectional" in request.node.callspec.id), code
    assert any(p["name"] == "loops_as_rnn" and p["changed"] for p in result.report["passes"]), result.report["passes"]


def test_keras_bidirectional_gru_round_trip_is_one_layer(tmp_path):
    """Keras Bidirectional(GRU): tf2onnx writes two Loops and two reversals; normalize makes them one
    bidirectional GRU, which PyTorch reads as nn.GRU(bidirectional=True) and Keras as Bidirectional."""
    make = lambda x: keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(x)  # noqa: E731
    first = convert(Options(model=save_keras(tmp_path, make), to="torch", out=str(tmp_path / "torch")))
    assert_exact(first)
    code = (first.out_dir / "model.py").read_text()
    assert "nn.GRU(6, 5, bidirectional=True)" in code and "flip" not in code and "torch.cat" not in code
    back = convert(Options(model=str(first.out_dir / "source.onnx"), to="keras", out=str(tmp_path / "keras")))
    assert_exact(back)
    code = (back.out_dir / "model.py").read_text()
    assert code.count("layers.Bidirectional(layers.GRU(5, return_sequences=True)") == 1 and "flip" not in code


def test_keras_gru_loop_to_keras_gru(tmp_path):
    """The same Loop, read from the ONNX file tf2onnx wrote, becomes layers.GRU(reset_after=True)."""
    first = convert(Options(model=save_keras(tmp_path, lambda x: keras.layers.GRU(5, return_sequences=True)(x)),
                            to="torch", out=str(tmp_path / "torch")))
    assert "Loop" in {n.op_type for n in onnx.load(str(first.out_dir / "source.onnx")).graph.node}
    result = convert(Options(model=str(first.out_dir / "source.onnx"), to="keras", out=str(tmp_path / "keras")))
    assert_exact(result)
    assert "layers.GRU(5, return_sequences=True" in (result.out_dir / "model.py").read_text()


@pytest.mark.parametrize("make, modules", [
    (lambda x: keras.layers.SimpleRNN(5, return_sequences=True)(x), 1),
    (lambda x: keras.layers.SimpleRNN(5)(x), 1),
    (lambda x: keras.layers.SimpleRNN(4, use_bias=False, go_backwards=True, return_sequences=True)(x), 1),
    (lambda x: keras.layers.Bidirectional(keras.layers.SimpleRNN(5, return_sequences=True))(x), 1),
    (lambda x: keras.layers.Concatenate()(keras.layers.SimpleRNN(4, return_state=True)(
        keras.layers.SimpleRNN(5, return_sequences=True)(x))), 2),
], ids=["sequences", "last", "no_bias_go_backwards", "bidirectional", "stacked_return_state"])
def test_keras_simple_rnn_to_torch_rnn(tmp_path, make, modules):
    """A Keras 3 SimpleRNN's Loop (tf2onnx writes the state product as a Gemm whose C input is the
    input product, either way round) becomes ONNX RNN, then nn.RNN."""
    result = convert(Options(model=save_keras(tmp_path, make), to="torch", out=str(tmp_path / "out")))
    assert_exact(result)
    assert (result.out_dir / "model.py").read_text().count("nn.RNN(") == modules


@pytest.mark.parametrize("to, expect", [("torch", "nn.RNN(4, 3, bidirectional=True)"),
                                        ("keras", "layers.Bidirectional(layers.SimpleRNN(3, return_sequences=True")])
def test_onnx_rnn_node_to_native_layers(tmp_path, to, expect):
    """An ONNX RNN node (bidirectional, both biases) -> nn.RNN / layers.SimpleRNN."""
    node = helper.make_node("RNN", ["x", "w", "r", "b"], ["y", "y_h"], hidden_size=3, direction="bidirectional")
    model = onnx_model([node], [("x", F32, [5, 2, 4])], [("y", F32, [5, 2, 2, 3]), ("y_h", F32, [2, 2, 3])],
                       [tensor("w", rand((2, 3, 4), 1)), tensor("r", rand((2, 3, 3), 2)), tensor("b", rand((2, 6), 3))])
    result, code = convert_onnx(tmp_path, model, to)
    assert_exact(result)
    assert expect in code


@pytest.mark.parametrize("make", [
    lambda x: keras.layers.GRU(5, return_sequences=True, reset_after=False)(x),
    lambda x: keras.layers.GRU(5, return_sequences=True, activation="relu")(x),
    lambda x: keras.layers.SimpleRNN(5, return_sequences=True, activation="relu")(x),
    lambda x: keras.layers.GRU(5)(keras.layers.Masking(0.0)(x)),
], ids=["reset_before", "relu", "simple_rnn_relu", "masked"])
def test_other_recurrent_loops_are_refused_naming_the_loop(tmp_path, make):
    """A Loop whose body is not the default GRU cell stays a Loop: a clear refusal, not a guess."""
    path = save_keras(tmp_path, make)
    with pytest.raises(Unsupported, match=r"Loop at '[^']*' \(a control-flow loop"):
        convert(Options(model=path, to="torch", out=str(tmp_path / "out")))


# -- 3. Resize with align_corners / asymmetric coordinates -> Keras -------------------


def test_torch_bilinear_align_corners_to_keras(tmp_path):
    result, code = convert_torch(tmp_path, "torch_upsample", (2, 3, 5, 6))
    assert_exact(result)
    assert code.count("ops.einsum(") == 2 and "Resizing" not in code


def test_onnx_linear_resize_align_corners_and_asymmetric_to_keras(tmp_path):
    nodes = [
        helper.make_node("Resize", ["x", "", "", "size_a"], ["up_a"], mode="linear",
                         coordinate_transformation_mode="align_corners"),
        helper.make_node("Resize", ["x", "", "scales_b"], ["up_b"], mode="linear",
                         coordinate_transformation_mode="asymmetric"),
    ]
    inits = [tensor("size_a", np.array([2, 3, 4, 9], np.int64)),
             tensor("scales_b", np.array([1, 1, 2.5, 1.5], np.float32))]
    model = onnx_model(nodes, [("x", F32, [2, 3, 6, 5])],
                       [("up_a", F32, [2, 3, 4, 9]), ("up_b", F32, [2, 3, 15, 7])], inits)
    result, code = convert_onnx(tmp_path, model, "keras")
    assert_exact(result)
    assert "align_corners" in code and "asymmetric" in code


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="TopK sorted=0 leaves the order to the implementation: onnxruntime, "
                          "PyTorch and TensorFlow each return the k elements in a different order")
def test_topk_unsorted_order_matches_onnxruntime(tmp_path):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, sorted=0)
    model = onnx_model([node], [("x", F32, [3, 10])], [("v", F32, [3, 4]), ("i", I64, [3, 4])],
                       [tensor("k", np.array([4], np.int64))])
    result, _ = convert_onnx(tmp_path, model, "torch")
    assert_exact(result)


def test_onnx_linear_resize_1d_half_pixel_and_3d_align_corners_to_keras(tmp_path):
    """Keras has no 1-D or 3-D linear resize layer: the interpolation matrices cover them too."""
    nodes = [
        helper.make_node("Resize", ["x1", "", "", "size_1d"], ["up_1d"], mode="linear"),  # half_pixel default
        helper.make_node("Resize", ["x3", "", "", "size_3d"], ["up_3d"], mode="linear",
                         coordinate_transformation_mode="align_corners"),
    ]
    inits = [tensor("size_1d", np.array([2, 3, 15], np.int64)), tensor("size_3d", np.array([2, 2, 3, 7, 5], np.int64))]
    model = onnx_model(nodes, [("x1", F32, [2, 3, 6]), ("x3", F32, [2, 2, 4, 5, 3])],
                       [("up_1d", F32, [2, 3, 15]), ("up_3d", F32, [2, 2, 3, 7, 5])], inits)
    result, code = convert_onnx(tmp_path, model, "keras")
    assert_exact(result)
    assert code.count("ops.einsum(") == 4  # one per resized axis


# -- 6. Embedding lookups ----------------------------------------------------------


class _Embed(nn.Module):
    """Token ids (N, L) -> embedding (vocab 8, width 6) + a learned position table -> Linear."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(8, 6)
        self.positions = nn.Embedding(5, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        positions = torch.arange(x.shape[1])  # ids from constants only
        return self.head(self.tokens(x) + self.positions(positions))


def torch_embedding():
    torch.manual_seed(4)
    return _Embed()


def test_torch_embedding_to_keras_embedding_layer(tmp_path):
    """Ids computed from the inputs -> ``layers.Embedding`` whose table is a weight; ids from
    constants only (positions) stay a gather of a constant (an Embedding called on them
    would run once at build time)."""
    result = convert(Options(model=f"{HERE}:torch_embedding", to="keras", out=str(tmp_path / "keras"),
                             inputs=[InputSpec("x", (2, 5), "int64")]))
    assert_exact(result)
    code = (result.out_dir / "model.py").read_text()
    assert code.count("layers.Embedding(8, 6") == 1, code
    import h5py

    with h5py.File(result.out_dir / "model.weights.h5") as h5:
        shapes = []
        h5.visititems(lambda name, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    assert (8, 6) in shapes


def test_keras_embedding_to_torch_nn_embedding(tmp_path):
    ids = keras.Input(shape=(5,), batch_size=2, name="x", dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(3)(keras.layers.Embedding(8, 6)(ids)))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    path = tmp_path / "model.keras"
    model.save(path)
    result = convert(Options(model=str(path), to="torch", out=str(tmp_path / "torch")))
    assert_exact(result)
    code = (result.out_dir / "model.py").read_text()
    assert "nn.Embedding(8, 6)" in code, code


# -- 7. Ops both importers translate (each graph checked against onnxruntime) -------------------


def _gather_cases():
    neg = np.array([[[0, -1, 2, 7]], [[-8, 3, 3, 1]], [[5, 6, -2, 0]]], np.int64)  # (3, 1, 4), axis 1
    tuples = np.array([[0, 1], [-1, 3], [2, -4]], np.int64)  # (3, 2) into (3, 8, 4) axes 0, 1
    yield "gather_elements_const_negative", onnx_model(
        [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
        [("x", F32, [3, 8, 4])], [("y", F32, [3, 1, 4])], [tensor("i", neg)])
    yield "gather_elements_runtime", onnx_model(
        [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
        [("x", F32, [3, 8, 4]), ("i", I64, [3, 2, 4])], [("y", F32, [3, 2, 4])])
    yield "gather_nd_const", onnx_model(
        [helper.make_node("GatherND", ["x", "i"], ["y"])],
        [("x", F32, [3, 8, 4])], [("y", F32, [3, 4])], [tensor("i", tuples)])
    yield "gather_nd_runtime_batch_dims", onnx_model(
        [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)],
        [("x", F32, [3, 8, 4]), ("i", I64, [3, 5, 1])], [("y", F32, [3, 5, 4])])
    yield "reduce_prod_two_axes", onnx_model(
        [helper.make_node("ReduceProd", ["x", "axes"], ["y"], keepdims=0)],
        [("x", F32, [3, 8, 4])], [("y", F32, [8])], [tensor("axes", np.array([0, -1], np.int64))])
    yield "reduce_prod_keepdims", onnx_model(
        [helper.make_node("ReduceProd", ["x", "axes"], ["y"], keepdims=1)],
        [("x", F32, [3, 8, 4])], [("y", F32, [3, 1, 1])], [tensor("axes", np.array([1, 2], np.int64))])


def _unary_cases():
    for op, attrs in (("Tan", {}), ("Atan", {}), ("Celu", {"alpha": 0.7}), ("Selu", {"alpha": 1.2, "gamma": 0.9})):
        yield op.lower(), onnx_model([helper.make_node(op, ["x"], ["y"], **attrs)],
                                     [("x", F32, [2, 6])], [("y", F32, [2, 6])])


@pytest.mark.parametrize("to", ["torch", "keras"])
@pytest.mark.parametrize("name,model", [*_gather_cases(), *_unary_cases()], ids=lambda v: v if isinstance(v, str) else "")
def test_ops_both_targets(tmp_path, to, name, model):
    result, _ = convert_onnx(tmp_path, model, to)
    assert_exact(result)


# -- 8. Strided dilated convolutions -> Keras (which refuses strides with dilation) ---------------


class _One(nn.Module):
    """One layer behind ``forward(self, x)`` (the input name the helpers pass)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def torch_strided_dilated_2d():
    torch.manual_seed(5)
    return _One(nn.Conv2d(3, 6, 3, stride=(2, 3), dilation=(2, 1), padding=(1, 2)))


def torch_strided_dilated_depthwise_1d():
    torch.manual_seed(6)
    return _One(nn.Conv1d(4, 4, 3, stride=2, dilation=3, padding=2, groups=4))


def torch_strided_dilated_3d():
    torch.manual_seed(7)
    return _One(nn.Conv3d(2, 3, 2, stride=(1, 2, 2), dilation=(2, 2, 1)))


@pytest.mark.parametrize("factory,shape,step", [
    ("torch_strided_dilated_2d", (2, 3, 11, 13), "[:, ::2, ::3, :]"),
    ("torch_strided_dilated_depthwise_1d", (2, 4, 17), "[:, ::2, :]"),
    ("torch_strided_dilated_3d", (1, 2, 7, 8, 9), "[:, :, ::2, ::2, :]"),
])
def test_strided_dilated_conv_is_stride_1_then_every_sth_output(tmp_path, factory, shape, step):
    """Output i of a strided convolution is output i * s of the stride-1 one: exact, with no
    strides on the Keras layer (TensorFlow refuses them with dilation)."""
    result, code = convert_torch(tmp_path, factory, shape)
    assert_exact(result)
    assert step in code and "strides=" not in code, code


# -- 9. Grouped transposed convolutions -> Keras (which has none) ----------------------------------


def torch_grouped_convT_2d():
    torch.manual_seed(8)
    return _One(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2))


def torch_grouped_convT_1d():
    torch.manual_seed(9)
    return _One(nn.ConvTranspose1d(6, 3, 4, stride=2, groups=3, bias=False))


def torch_depthwise_convT_3d():
    torch.manual_seed(10)
    return _One(nn.ConvTranspose3d(4, 4, 2, stride=2, groups=4))


@pytest.mark.parametrize("factory,shape,groups", [
    ("torch_grouped_convT_2d", (2, 4, 5, 6), 2),
    ("torch_grouped_convT_1d", (2, 6, 7), 3),
    ("torch_depthwise_convT_3d", (1, 4, 3, 4, 5), 4),
])
def test_grouped_conv_transpose_is_one_layer_per_group(tmp_path, factory, shape, groups):
    """Each group's transposed convolution on its slice of the channels, concatenated in group
    order (output padding and cropping included)."""
    result, code = convert_torch(tmp_path, factory, shape)
    assert_exact(result)
    assert f"for g in range({groups})]" in code and "ops.concatenate(" in code, code
