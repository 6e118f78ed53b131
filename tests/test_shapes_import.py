"""Converted models run at every size the source accepts (issue 14, item 8: coverage).

Each conversion is checked on its own, not through ``report.json``: the generated
``model.py`` is loaded here and run at several sizes (1 and an odd size among them)
against the source model run directly (the PyTorch module, the Keras model).  The code
must carry no example size where the source had a symbol, and a Keras target's loaded
model must keep its ``None`` dimensions.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

import pipeline.quiet  # noqa: F401  (silences TensorFlow before anything imports it)
from pipeline.convert import Options, convert
from pipeline.sources import import_file
from pipeline.spec import parse_input


def converted(tmp_path, model: str, to: str, *inputs: str, name: str = "out"):
    """Convert ``model`` with symbolic ``inputs``; return the output directory and the
    generated module (imported here, as a user would)."""
    out = tmp_path / f"{name}_{to}"
    result = convert(Options(model=model, to=to, out=str(out), inputs=[parse_input(s) for s in inputs]))
    assert result.exit_code == 0, result.report.get("error") or result.report.get("parity")
    return out, import_file(out / "model.py", "_test_shapes_import")


def run_generated(module, to: str, x: np.ndarray) -> np.ndarray:
    model = module.load()
    if to == "torch":
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return np.asarray(model(x, training=False))


def keras_file_keeps_none(out, want: tuple) -> None:
    """What a user loads (``model.py``'s ``load()``: its model with ``model.weights.h5``) keeps the
    input's varying sizes ``None``."""
    reloaded = import_file(out / "model.py", "_test_shapes_reload").load()
    assert tuple(reloaded.inputs[0].shape) == want


def keras_source(tmp_path, layer_factory, channels: int, name: str) -> str:
    """A Keras model on ``Input(shape=(None, channels))`` (batch and steps vary), saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(None, channels), name="x")
    model = keras.Model(x, layer_factory()(x), name=name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return str(path)


# -- seed 2: the Conv-TasNet encoder with symbolic B and K ---------------------------------------

SEED2_SIZES = [(4, 10), (1, 1), (3, 7), (2, 13)]


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_seed_torch_encoder_any_batch_and_frames(tmp_path, to):
    import torch

    from models.seed_torch_encoder import build

    out, module = converted(tmp_path, "seed_torch_encoder", to, "mixture=B=4,K=10,128")
    code = (out / "model.py").read_text()
    body = code.split('"""', 2)[2]  # the docstring states the example; the code must not use it
    assert "batch_size" not in body
    assert not re.search(r"\b(4, 10|40)\b", body), body
    assert "(B, K, 128)" in code  # the docstring names the symbols
    source = build()
    rng = np.random.default_rng(0)
    for b, k in SEED2_SIZES:
        x = rng.standard_normal((b, k, 128)).astype(np.float32)
        with torch.no_grad():
            want = source(torch.from_numpy(x)).numpy()
        got = run_generated(module, to, x)
        assert got.shape == (b, k, 64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"B={b}, K={k}")
    if to == "keras":
        keras_file_keeps_none(out, (None, None, 128))


# -- seed 1: the Keras Conv1D with symbolic batch and steps ---------------------------------------

def seed1_layer():
    """The seed's own Conv1D(1024, 5, "same") with its weights, to call on an Input whose batch
    and steps vary (the seed model's Input fixes them at 256 x 237)."""
    from models.seed_keras_conv1d import build

    return build().get_layer("conv1d")


def check_keras_source(tmp_path, path: str, to: str, spec: str, sizes, channels: int, fixed: list[int]):
    """Convert the Keras model at ``path`` and compare it at ``sizes`` ((batch, steps) pairs)."""
    import keras

    source = keras.models.load_model(path, compile=False)
    out, module = converted(tmp_path, path, to, spec)
    body = (out / "model.py").read_text().split('"""', 2)[2]
    assert "batch_size" not in body
    for example in fixed:  # sizes of the example that depend on the symbols
        assert not re.search(rf"\b{example}\b", body), (example, body)
    rng = np.random.default_rng(0)
    for n, steps in sizes:
        x = rng.standard_normal((n, steps, channels)).astype(np.float32)
        want = np.asarray(source(x, training=False))
        got = run_generated(module, to, x)
        assert got.shape == want.shape, (n, steps)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"size {(n, steps)}")
    if to == "keras":
        keras_file_keeps_none(out, (None, None, channels))


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_seed_keras_conv1d_any_batch_and_steps(tmp_path, to):
    path = keras_source(tmp_path, seed1_layer, 21, "seed1_symbolic")
    check_keras_source(tmp_path, path, to, "x=N=3,T=37,21", [(3, 37), (1, 1), (2, 8), (1, 51)], 21, [37])


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_strided_even_kernel_same_conv1d_pads_by_the_length(tmp_path, to):
    """Stride 2, kernel 4, "same": the padding is 1 + (L odd) at the end, so it depends on the length."""
    import keras

    path = keras_source(tmp_path, lambda: keras.layers.Conv1D(6, 4, strides=2, padding="same", name="conv"), 21,
                        "strided_same")
    check_keras_source(tmp_path, path, to, "x=B=2,L=15,21", [(2, 15), (1, 1), (3, 16), (1, 9), (2, 2)], 21, [15, 8])


# -- the models/torch_zoo.py families to Keras ---------------------------------------------------

def torch_zoo_symbolic(family: str, symbols: dict[int, str]) -> tuple[str, str, tuple, str]:
    """``(input name, --input spec, example shape, dtype)`` for ``family`` with the axes in
    ``symbols`` ({axis: symbol}) named, each at its example size from ``SHAPES``."""
    from models.torch_zoo import SHAPES

    (name, value), = SHAPES[family].items()
    shape, dtype = (value[0], value[1]) if isinstance(value[1], str) else (tuple(value), "float32")
    shape = (max(shape[0], 2), *shape[1:])  # torch.export specializes a batch of 1
    dims = [f"{symbols[a]}={n}" if a in symbols else str(n) for a, n in enumerate(shape)]
    return name, f"{name}={','.join(dims)}" + (f":{dtype}" if dtype != "float32" else ""), shape, dtype


def zoo_input(shape, dtype: str, rng) -> np.ndarray:
    if dtype == "int64":
        return rng.integers(0, 50, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def seeded_factory(tmp_path, family: str) -> str:
    """A factory file for ``family`` that seeds torch first: the zoo's factories draw their
    weights from the global generator, so the test can build the very model converted."""
    path = tmp_path / f"seeded_{family}.py"
    path.write_text(f"import torch\n\nimport models.torch_zoo as zoo\n\n\ndef build():\n"
                    f"    torch.manual_seed(0)\n    return zoo.{family}()\n")
    return f"{path}:build"


def check_against_torch(module, source, sizes, dtype: str) -> None:
    """The generated Keras model and the PyTorch model itself agree at each input shape in ``sizes``."""
    import torch

    rng = np.random.default_rng(0)
    for shape in sizes:
        x = zoo_input(shape, dtype, rng)
        with torch.no_grad():
            want = source(torch.from_numpy(x)).numpy()
        got = run_generated(module, "keras", x)
        assert got.shape == want.shape, shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"input shape {shape}")


BATCH_FAMILIES = [
    "resnet",
    pytest.param("mobilenet", marks=pytest.mark.slow),
    pytest.param("convnext", marks=pytest.mark.slow),
    pytest.param("unet", marks=pytest.mark.slow),
    pytest.param("audio_encoder", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("family", BATCH_FAMILIES)
def test_torch_zoo_any_batch_to_keras(tmp_path, family):
    _, spec, shape, dtype = torch_zoo_symbolic(family, {0: "N"})
    factory = seeded_factory(tmp_path, family)
    out, module = converted(tmp_path, factory, "keras", spec)
    body = (out / "model.py").read_text().split('"""', 2)[2]
    assert "batch_size" not in body
    sizes = [shape, (1, *shape[1:]), (3, *shape[1:])]
    check_against_torch(module, import_file(factory.rsplit(":", 1)[0], "_test_seeded").build(), sizes, dtype)
    keras_file_keeps_none(out, (None, *shape[1:]))  # --layout source: the PyTorch interface


def export_symbolic_onnx(path, family: str, axes: dict[int, tuple[str, int]]):
    """The family exported by torch.onnx itself with ``{axis: (symbol, min)}`` dynamic.

    The pipeline's own export cannot do this yet: torch.export wants a lower bound for these
    symbols (``T = Dim('T', min=50)``, ``H != 1`` guards) and the exporter gives none."""
    import torch
    from torch.export import Dim

    import models.torch_zoo as zoo

    name, _, shape, _ = torch_zoo_symbolic(family, {})
    dims = {a: Dim(symbol, min=low) for a, (symbol, low) in axes.items()}
    model = getattr(zoo, family)()
    torch.onnx.export(model, (torch.randn(*shape),), str(path), dynamo=True, dynamic_shapes=(dims,), input_names=[name])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("family, axes, sizes", [
    ("resnet", {0: ("N", 2), 2: ("H", 16), 3: ("W", 16)}, [(2, 3, 32, 32), (1, 3, 1, 1), (3, 3, 17, 23)]),
    ("unet", {0: ("N", 2), 2: ("H", 8), 3: ("W", 8)}, [(2, 3, 16, 16), (1, 3, 4, 4), (3, 3, 12, 20)]),
    ("audio_encoder", {0: ("N", 2), 1: ("T", 50)}, [(2, 400), (1, 50), (3, 451)]),
])
def test_torch_zoo_any_size_to_keras(tmp_path, family, axes, sizes):
    """U-Net and ResNet with symbolic height and width, the audio encoder with symbolic length."""
    path = tmp_path / f"{family}.onnx"
    source = export_symbolic_onnx(path, family, axes)
    _, _, shape, dtype = torch_zoo_symbolic(family, {})
    out = tmp_path / "out"
    dims = {symbol: shape[a] for a, (symbol, _) in axes.items()}
    result = convert(Options(model=str(path), to="keras", out=str(out), dims=dims))
    assert result.exit_code == 0, result.report.get("error") or result.report.get("parity")
    module = import_file(out / "model.py", "_test_shapes_import")
    body = (out / "model.py").read_text().split('"""', 2)[2]
    assert "batch_size" not in body
    check_against_torch(module, source, sizes, dtype)


@pytest.mark.slow
def test_layout_target_with_symbols(tmp_path):
    """``--layout target`` on a CNN with symbolic batch, height and width: a channels-last Keras
    model on ``(None, None, None, 3)`` that equals PyTorch on the transposed input at every size."""
    import torch

    path = tmp_path / "resnet.onnx"
    source = export_symbolic_onnx(path, "resnet", {0: ("N", 2), 2: ("H", 16), 3: ("W", 16)})
    out = tmp_path / "out"
    result = convert(Options(model=str(path), to="keras", out=str(out), layout="target",
                             dims={"N": 2, "H": 32, "W": 32}))
    assert result.exit_code == 0, result.report.get("error") or result.report.get("parity")
    assert result.report["interface"]["inputs"]["x"] == [0, 2, 3, 1]
    module = import_file(out / "model.py", "_test_shapes_import")
    code = (out / "model.py").read_text()
    assert "keras.Input(shape=(None, None, 3), name='x')" in code
    # The transpose optimizer loses no more transposes over symbols than at the example sizes.
    static = convert(Options(model=str(path), to="keras", out=str(tmp_path / "static"), layout="target",
                             dims={"N": 2, "H": 32, "W": 32}, static=True))
    assert static.exit_code == 0
    assert code.count("ops.transpose(") == (tmp_path / "static" / "model.py").read_text().count("ops.transpose(")
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 32, 32), (1, 3, 1, 1), (3, 3, 17, 23)]:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = source(torch.from_numpy(x)).numpy()
        got = run_generated(module, "keras", np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"input shape {shape}")
    keras_file_keeps_none(out, (None, None, None, 3))
