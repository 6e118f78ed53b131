"""Fine-tuning the converted model (issue 13, item 3) and compiling it (item 4).

A small CNN with BatchNorm is converted PyTorch -> Keras and Keras -> PyTorch.  The
converted model then trains next to its source: the same SGD steps on the same data, and the
losses must agree step by step (the source framework, run directly, gives the expected
values).  ``--gradients`` must find every weight and agree with the source, and must say so
when a gradient is broken while the outputs are not.  The eval-mode export drops Dropout: the
report says so.  The results also compile: Keras with ``jit_compile=True``, PyTorch with
``torch.compile``, with the eager outputs.
"""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest

from pipeline.convert import Options, convert
from pipeline.sources import import_file

STEPS, LR = 4, 0.05

TORCH_CNN = '''
import torch
from torch import nn

INPUTS = {"x": (4, 3, 12, 12)}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 5)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5))  # no module holds it
        self.register_buffer("shift", torch.linspace(-1.0, 1.0, 5))  # not trained by the source

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(self.drop(h)) * self.scale + self.shift


def build():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # statistics of a trained model, not the fresh 0 and 1
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()
'''

KERAS_CNN = '''
import keras
import numpy as np
from keras import layers

INPUTS = {"x": (4, 12, 12, 3)}


def build():
    keras.utils.set_random_seed(0)
    x = keras.Input((12, 12, 3), name="x")
    h = layers.Conv2D(8, 3, padding="same", name="conv")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dropout(0.3, name="drop")(h)
    y = layers.Dense(5, name="fc")(h)
    model = keras.Model(x, y)
    rng = np.random.default_rng(1)
    for w in model.weights:  # no zero bias (the export drops it) and no equal ones and zeros (tf2onnx shares them)
        low = 0.5 if "variance" in w.path or "gamma" in w.path else -0.5
        w.assign(rng.uniform(low, low + 1.0, w.shape).astype("float32"))
    return model
'''


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``{"torch": (source file, result), "keras": ...}``: each CNN converted to the other framework
    (PyTorch -> Keras with ``--layout target``: a channels-last input, so the gradient check
    must permute the input's gradient back)."""
    root = tmp_path_factory.mktemp("training")
    out = {}
    for framework, code, to, layout in (("torch", TORCH_CNN, "keras", "target"), ("keras", KERAS_CNN, "torch", "source")):
        src = root / f"{framework}_cnn.py"
        src.write_text(textwrap.dedent(code))
        result = convert(Options(model=f"{src}:build", to=to, out=str(root / f"{framework}_to_{to}"), gradients=True,
                                 layout=layout))
        assert result.exit_code == 0, result.report["parity"]
        out[framework] = (src, result)
    return out


def _data(shape, seed=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal((shape[0], 5)).astype(np.float32)


def torch_losses(model, x, y) -> list[float]:
    """``STEPS`` SGD steps of mean squared error in training mode (BatchNorm on batch statistics);
    dropout stays off: the converted model has none (see the report's note)."""
    import torch

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.mean((model(xt) - yt) ** 2)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def keras_losses(model, x, y) -> list[float]:
    import keras
    import tensorflow as tf

    opt = keras.optimizers.SGD(learning_rate=LR)
    losses = []
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
        losses.append(float(loss))
    return losses


def test_torch_source_and_keras_result_train_alike(converted):
    src, result = converted["torch"]
    source = import_file(src).build()
    keras_model = import_file(result.out_dir / "model.py").load()
    stats = keras_model.get_layer("bn").moving_mean.numpy().copy()
    n_source = sum(p.numel() for p in source.parameters())
    assert sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights) == n_source
    x, y = _data((4, 3, 12, 12))
    assert result.report["interface"]["inputs"] == {"x": [0, 2, 3, 1]}
    expected = torch_losses(source, x, y)
    got = keras_losses(keras_model, x.transpose(0, 2, 3, 1), y)
    assert expected[-1] < expected[0]  # it learns, so equal losses say something
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(keras_model.get_layer("bn").moving_mean.numpy(), stats)  # BatchNorm updated them


def test_keras_source_and_torch_result_train_alike(converted):
    import torch

    src, result = converted["keras"]
    source = import_file(src).build()
    source.get_layer("drop").rate = 0.0  # the converted model has no dropout (see the report's note)
    torch_model = import_file(result.out_dir / "model.py").load()
    n_source = sum(int(np.prod(w.shape)) for w in source.trainable_weights)
    assert sum(p.numel() for p in torch_model.parameters()) == n_source
    (bn,) = [m for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = bn.running_mean.clone()
    x, y = _data((4, 12, 12, 3))
    expected = keras_losses(source, x, y)
    got = torch_losses(torch_model, x, y)
    assert expected[-1] < expected[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(bn.running_mean, stats)


def test_what_the_source_does_not_train_stays_out_of_training(tmp_path, converted):
    """A PyTorch source's float buffer stays a buffer in the generated PyTorch code, its
    parameters become parameters (BatchNorm's statistics are buffers of nn.BatchNorm2d)."""
    src, _ = converted["torch"]
    result = convert(Options(model=f"{src}:build", to="torch", out=str(tmp_path / "t2t"), gradients=True))
    model = import_file(result.out_dir / "model.py").load()
    source = import_file(src).build()
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in source.named_parameters()}
    assert "shift" in dict(model.named_buffers())
    grad = result.report["gradients"]  # the round trip: same names, same layouts
    assert grad["passed"] and not grad["unmapped"]["source"]
    assert all(r["converted"] == [r["name"]] for r in grad["weights"])


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_gradients_match_for_every_weight(converted, framework):
    grad = converted[framework][1].report["gradients"]
    assert grad["ran"] and grad["passed"], grad
    assert grad["unmapped"] == {"source": [], "converted": []}
    names = {r["name"] for r in grad["weights"]}
    assert len(names) == (7 if framework == "torch" else 6)  # conv, bn and fc weights and biases (+ scale)
    assert [r["name"] for r in grad["inputs"]] == ["x"]


def test_a_broken_gradient_is_reported(tmp_path, converted):
    """Outputs unchanged, gradient cut: ``.detach()`` after the convolution of the generated model."""
    from pipeline import gradients
    from pipeline.sources import resolve
    from pipeline.spec import make_inputs

    src, result = converted["keras"]
    broken = tmp_path / "broken"
    shutil.copytree(result.out_dir, broken)
    code = (broken / "model.py").read_text()
    line = next(li for li in code.splitlines() if "self.conv_1(" in li)
    (broken / "model.py").write_text(code.replace(line, f"{line}.detach()"))
    source = resolve(f"{src}:build", [], {})
    inputs = make_inputs(source.inputs, 0)
    side = gradients.capture(source, inputs, 0, True)
    rep = result.report
    found = gradients.check(side, broken, "torch", rep["interface"], inputs, ["x"], ["fc"], 1e-4)
    assert not found["passed"] and found["problems"]
    bad = {r["name"] for r in found["inputs"] + found["weights"] if not r["passed"]}
    assert bad == {"x", "conv/kernel", "conv/bias"}, bad


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_dropout_removed_by_the_export_is_noted(converted, framework):
    notes = " ".join(converted[framework][1].report["notes"])
    assert "dropout removed" in notes and "drop (Dropout, rate 0.3)" in notes


def test_keras_result_compiles_with_xla(converted):
    import tensorflow as tf

    model = import_file(converted["torch"][1].out_dir / "model.py").load()
    x = _data((4, 3, 12, 12))[0].transpose(0, 2, 3, 1)  # --layout target: channels-last
    eager = model(x, training=False).numpy()
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(x)).numpy(), eager, rtol=1e-5, atol=1e-5)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(x), eager, rtol=1e-5, atol=1e-5)


def _torch_compiled_equals_eager(converted, backend: str) -> None:
    import torch

    model = import_file(converted["keras"][1].out_dir / "model.py").load()
    x = torch.from_numpy(_data((4, 12, 12, 3))[0])
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, backend=backend, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_torch_result_compiles(converted):
    """``torch.compile(fullgraph=True)``: the generated forward is captured as one graph, with
    no break.  ``aot_eager`` runs that capture and the autograd tracing without generating
    code (inductor's C++ build of even this model takes about a minute: the slow test below)."""
    _torch_compiled_equals_eager(converted, "aot_eager")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler (g++)")
def test_torch_result_compiles_with_inductor(converted):
    _torch_compiled_equals_eager(converted, "inductor")
