"""Mutation tests: a verdict that cannot fail proves nothing.

For one model of each family the suite converts (a Keras conv net -> PyTorch, a
PyTorch CNN -> Keras, a transformer encoder -> Keras, an LSTM -> Keras), the
generated model's weights are damaged after a good conversion, in two ways:

- one element (the largest) of one weight moved by ``DELTA`` = 1e-2 (2% of the weights'
  scale, 100x the default atol);
- two output channels of the same weight swapped;

and both verdicts must then fail at the default tolerance: the pipeline's own parity
(``pipeline.parity.check``, the function ``convert`` calls, run on the damaged folder)
and the independent oracle (``tests/oracle.py``).  The undamaged copy passes both, so
a failure is the mutation's doing.

How small a damage the default tolerance sees (measured when this was written): a move
of 1e-3 in one weight changed the outputs by 4.7e-5 (keras_conv), 1.2e-4 (torch_cnn) and
4.0e-5 (rnn) at output scales near 1, inside ``atol + rtol*|ref|``, so it passed; only the
transformer's failed.  Parity at 1e-4 proves the conversion to about that resolution, not
every weight to 1e-3: the global average and the LSTM's gates dilute a single weight.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import oracle  # tests/oracle.py
from models import torch_zoo
from pipeline import parity
from pipeline.convert import Options, convert
from pipeline.quiet import import_tensorflow
from pipeline.sources import resolve
from pipeline.spec import InputSpec, make_inputs

HERE = __file__
DELTA = 1e-2
ATOL = RTOL = 1e-4  # the CLI's defaults


# -- the families: small, seeded, rebuilt identically by the oracle --------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2)
        self.head = nn.Linear(6, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.head(y.mean(dim=(2, 3)))


class SmallLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


def _seeded(make):
    with torch.random.fork_rng():
        torch.manual_seed(7)
        return make().eval()


def torch_cnn():
    return _seeded(SmallCNN)


def transformer():
    return _seeded(torch_zoo.transformer)


def rnn():
    return _seeded(SmallLSTM)


def keras_conv():
    _, keras = import_tensorflow()
    L = keras.layers
    keras.utils.set_random_seed(7)
    x = keras.Input(shape=(10, 10, 3), batch_size=2, name="x")
    y = L.Conv2D(8, 3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Conv2D(6, 3, strides=2, activation="relu")(y)
    y = L.Dense(5)(L.GlobalAveragePooling2D()(y))
    model = keras.Model(x, y)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, v.shape).astype("float32") if "variance" in v.path
                               else rng.uniform(-0.5, 0.5, v.shape).astype("float32") for v in layer.weights])
    return model


# name: (factory, target, input specs, shapes the mutated weight may have (either layout), its channel size)
FAMILIES = {
    "keras_conv": (keras_conv, "torch", {"x": (2, 10, 10, 3)}, {(8, 3, 3, 3)}, 8),
    "torch_cnn": (torch_cnn, "keras", {"x": (2, 3, 10, 10)}, {(3, 3, 3, 8), (8, 3, 3, 3)}, 8),
    "transformer": (transformer, "keras", {"ids": ((2, 12), "int64")}, {(32, 64), (64, 32)}, 64),
    "rnn": (rnn, "keras", {"x": (2, 5, 6)}, {(6, 32), (32, 6), (4, 8, 6), (1, 32, 6)}, 32),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each family converted once, lazily: {name: (out_dir, source model, model string)}."""
    done = {}

    def get(name):
        if name not in done:
            make, target, specs, _, _ = FAMILIES[name]
            root = tmp_path_factory.mktemp(name)
            if name == "keras_conv":
                model = make()
                model.save(root / "model.keras")
                model_str, inputs = str(root / "model.keras"), []
            else:
                model = make()
                model_str = f"{HERE}:{name}"
                inputs = [InputSpec(k, v[0], v[1]) if isinstance(v[1], str) else InputSpec(k, tuple(v))
                          for k, v in specs.items()]
            result = convert(Options(model=model_str, to=target, out=str(root / "out"), inputs=inputs))
            assert result.exit_code == 0, result.report["parity"]
            done[name] = (root / "out", model, model_str)
        return done[name]

    return get


# -- damaging the generated model's weights ------------------------------------------

def _weight_stores(out_dir: Path):
    """(kind, path) of every file holding the generated model's weights."""
    for name, kind in (("model.safetensors", "safetensors"), ("model.weights.h5", "h5"), ("constants.npz", "npz")):
        if (out_dir / name).is_file():
            yield kind, out_dir / name


def _read(kind, path) -> dict[str, np.ndarray]:
    if kind == "safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if kind == "npz":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: found.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return found


def _write(kind, path, key: str, value: np.ndarray) -> None:
    if kind == "safetensors":
        from safetensors.numpy import save_file

        tensors = _read(kind, path)
        tensors[key] = value
        save_file(tensors, str(path))
    elif kind == "npz":
        arrays = _read(kind, path)
        arrays[key] = value
        np.savez(path, **arrays)
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            f[key][...] = value


def mutate(out_dir: Path, shapes: set, channels: int, how: str) -> str:
    """Damage the first weight whose shape is in ``shapes``; return what was done."""
    for kind, path in _weight_stores(out_dir):
        for key, w in sorted(_read(kind, path).items()):
            if tuple(w.shape) not in shapes:
                continue
            w = w.copy()
            if how == "perturb":
                idx = np.unravel_index(int(np.argmax(np.abs(w))), w.shape)
                w[idx] += np.asarray(DELTA, w.dtype)
            else:  # swap two output channels: on the axis of the channel count (the last such)
                axis = max(i for i, d in enumerate(w.shape) if d == channels)
                w = np.swapaxes(w, 0, axis).copy()
                assert not np.array_equal(w[0], w[1])
                w[[0, 1]] = w[[1, 0]]
                w = np.swapaxes(w, 0, axis).copy()
            _write(kind, path, key, w)
            return f"{how} {path.name}:{key}{list(w.shape)}"
    raise AssertionError(f"no weight of shape {shapes} in {out_dir}: {[p for _, p in _weight_stores(out_dir)]}")


def pipeline_verdict(out_dir: Path, model_str: str, specs: dict, target: str) -> dict:
    """The pipeline's own parity check (what ``convert`` runs), on ``out_dir`` as it is now."""
    inputs_spec = [InputSpec(k, v[0], v[1]) if isinstance(v[1], str) else InputSpec(k, tuple(v))
                   for k, v in specs.items()]
    source = resolve(model_str, inputs_spec if source_is_factory(model_str) else [])
    inputs = make_inputs(source.inputs, 0)
    report = json.loads((out_dir / "report.json").read_text())
    graph = onnx.load(str(out_dir / "normalized.onnx"), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    input_order = [v.name for v in graph.input if v.name not in inits]
    output_names = [v.name for v in graph.output]
    return parity.check(source, inputs, out_dir / "source.onnx", out_dir / "normalized.onnx", out_dir, target,
                        report["interface"], input_order, output_names, ATOL, RTOL)


def source_is_factory(model_str: str) -> bool:
    return ":" in Path(model_str).name


def damaged_copy(tmp_path: Path, out_dir: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(out_dir, copy)
    return copy


# -- the tests ------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_undamaged_copy_passes_both_verdicts(tmp_path, converted, family):
    out_dir, model, model_str = converted(family)
    _, target, specs, _, _ = FAMILIES[family]
    copy = damaged_copy(tmp_path, out_dir)
    assert pipeline_verdict(copy, model_str, specs, target)["passed"]
    assert oracle.verify(copy, model, specs=specs).passed


@pytest.mark.parametrize("how", ["perturb", "swap"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_damaged_weight_fails_both_verdicts(tmp_path, converted, family, how):
    out_dir, model, model_str = converted(family)
    _, target, specs, shapes, channels = FAMILIES[family]
    copy = damaged_copy(tmp_path, out_dir)
    what = mutate(copy, shapes, channels, how)
    verdict = pipeline_verdict(copy, model_str, specs, target)
    assert not verdict["passed"], f"pipeline parity passed after {what}: {verdict['outputs']}"
    assert verdict["stages"]["normalized_vs_onnx"] and all(c["passed"] for c in verdict["stages"]["normalized_vs_onnx"])
    assert not oracle.verify(copy, model, specs=specs).passed, f"oracle passed after {what}"
