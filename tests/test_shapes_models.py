"""The models that converted only at their example shape until now (issue 14, item 8).

Like ``test_shapes_import.py``, each conversion is judged against the source model itself:
the generated ``model.py`` is imported and run at several sizes (1 and odd sizes among
them) next to the PyTorch module, never through ``report.json``'s own verdict.

- the ``models/torch_zoo.py`` transformer encoder and ViT stem with a symbolic batch (their
  attention reshapes read the batch with ``x.shape[0]``, which ONNX writes as
  ``Shape(x, end=1)``; the ViT's class token is an ``Expand`` to it);
- PyTorch pooling (``ceil_mode``, padding left out of the mean) and upsampling, and Keras'
  strided "same" pooling, over a varying height and width.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from test_shapes_import import (
    check_against_torch,
    converted,
    run_generated,
    seeded_factory,
    zoo_input,
)

import pipeline.quiet  # noqa: F401  (silences TensorFlow before anything imports it)
from pipeline.convert import Options, convert
from pipeline.sources import import_file


def _body(out) -> str:
    """``model.py`` without its docstring (which states the example sizes on purpose)."""
    return (out / "model.py").read_text().split('"""', 2)[2]


# -- the zoo's transformer encoder and ViT stem with a symbolic batch ------------------------------

@pytest.mark.parametrize("to", ["keras", pytest.param("torch", marks=pytest.mark.slow)])
def test_transformer_encoder_any_batch(tmp_path, to):
    """``ids=B=2,12``: the batch varies.  The length cannot: the position table (1, 12, 32)
    fixes it, and naming it (``L=12``) is bad input that names the source line."""
    factory = seeded_factory(tmp_path, "transformer")
    out = tmp_path / f"out_{to}"
    from pipeline.errors import BadInput
    from pipeline.spec import parse_input

    with pytest.raises(BadInput, match=r"L cannot vary: .*ids dimension 1.*torch_zoo\.py:\d+"):
        convert(Options(model=factory, to=to, out=str(out), inputs=[parse_input("ids=B=2,L=12:int64")]))
    assert not out.exists()
    result = convert(Options(model=factory, to=to, out=str(out), inputs=[parse_input("ids=B=2,12:int64")]))
    assert result.exit_code == 0, result.report.get("error") or result.report.get("parity")
    assert result.report["pinned"] == []
    assert "batch_size" not in _body(out)
    module = import_file(out / "model.py", "_test_shapes_models")
    source = import_file(factory.rsplit(":", 1)[0], "_test_seeded").build()
    if to == "keras":
        check_against_torch(module, source, [(2, 12), (1, 12), (5, 12)], "int64")
        return
    import torch

    rng = np.random.default_rng(1)
    for shape in [(2, 12), (1, 12), (5, 12)]:
        x = zoo_input(shape, "int64", rng)
        with torch.no_grad():
            want = source(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run_generated(module, "torch", x), want, rtol=1e-4, atol=1e-4,
                                   err_msg=f"input shape {shape}")


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_vit_stem_any_batch(tmp_path, to):
    """The class token ``cls.expand(x.shape[0], -1, -1)``: an Expand to a size known at run time only."""
    factory = seeded_factory(tmp_path, "vit_stem")
    out, module = converted(tmp_path, factory, to, "x=N=2,3,16,16")
    body = _body(out)
    assert "batch_size" not in body
    assert ("BroadcastTo" in body) if to == "keras" else (".expand(N, 1, 32)" in body)
    source = import_file(factory.rsplit(":", 1)[0], "_test_seeded").build()
    sizes = [(2, 3, 16, 16), (1, 3, 16, 16), (3, 3, 16, 16)]
    if to == "keras":
        check_against_torch(module, source, sizes, "float32")
        return
    import torch

    rng = np.random.default_rng(1)
    for shape in sizes:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = source(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run_generated(module, "torch", x), want, rtol=1e-4, atol=1e-4,
                                   err_msg=f"input shape {shape}")


# -- pooling and upsampling over a varying height and width ---------------------------------------

def pools():
    """One branch per pooling rule whose output size or divisor depends on the input size."""
    from torch import nn

    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.max_ceil = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
            self.max_ceil_unpadded = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.avg_without_pads = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
            self.avg_ceil = nn.AvgPool2d(3, 2, 1, ceil_mode=True)
            self.avg_ceil_without_pads = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)

        def forward(self, x):
            return (self.max_ceil(x), self.max_ceil_unpadded(x), self.avg_without_pads(x), self.avg_ceil(x),
                    self.avg_ceil_without_pads(x))

    return Pools().eval()


def upsampling(align_corners: bool):
    """Nearest and bilinear upsampling by whole factors (align_corners: PyTorch targets only)."""
    from torch import nn

    class Upsampling(nn.Module):
        def __init__(self):
            super().__init__()
            self.nearest = nn.Upsample(scale_factor=2, mode="nearest")
            self.bilinear = nn.Upsample(scale_factor=(2, 3), mode="bilinear", align_corners=align_corners)

        def forward(self, x):
            return self.nearest(x), self.bilinear(x)

    return Upsampling().eval()


def _check_outputs(module, to: str, source, sizes) -> None:
    import torch

    rng = np.random.default_rng(2)
    model = module.load()
    for shape in sizes:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = [w.numpy() for w in source(torch.from_numpy(x))]
            got = model(torch.from_numpy(x)) if to == "torch" else model(x, training=False)
        got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
        assert len(got) == len(want), shape
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, (shape, i)
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"output {i}, input shape {shape}")


def _convert_any_image_size(tmp_path, source, to: str, example: tuple) -> str:
    """Export ``source`` with its batch, height and width dynamic (as torch.onnx does it itself: the
    pipeline's export gives no lower bound yet), convert it, return ``model.py``'s code."""
    import torch
    from torch.export import Dim

    path = tmp_path / "source.onnx"
    dims = {0: Dim("N", min=1), 2: Dim("H", min=2), 3: Dim("W", min=2)}
    torch.onnx.export(source, (torch.randn(*example),), str(path), dynamo=True, dynamic_shapes=(dims,),
                      input_names=["x"])
    out = tmp_path / "out"
    result = convert(Options(model=str(path), to=to, out=str(out), dims={"N": example[0], "H": example[2],
                                                                              "W": example[3]}))
    assert result.exit_code == 0, result.report.get("error") or result.report.get("parity")
    body = _body(out)
    assert not re.search(rf"(?<![\w.])({example[2]}|{example[3]})(?![\w.])", body), body  # no example size
    return out


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_pooling_over_any_image_size(tmp_path, to):
    """ceil_mode windows and means that leave the padding out, at sizes where the last window is
    partial and where it is not (odd and even heights and widths, and 2)."""
    source = pools()
    out = _convert_any_image_size(tmp_path, source, to, (2, 3, 11, 13))
    sizes = [(2, 3, 11, 13), (1, 3, 2, 2), (3, 3, 9, 16), (1, 3, 17, 6)]
    _check_outputs(import_file(out / "model.py", "_test_shapes_models"), to, source, sizes)


@pytest.mark.parametrize("to, align_corners", [
    ("torch", True),
    pytest.param("torch", False, marks=pytest.mark.slow),
    ("keras", False),
])
def test_upsampling_over_any_image_size(tmp_path, to, align_corners):
    source = upsampling(align_corners)
    out = _convert_any_image_size(tmp_path, source, to, (2, 1, 5, 7))
    sizes = [(2, 1, 5, 7), (1, 1, 2, 2), (3, 1, 9, 4)]
    _check_outputs(import_file(out / "model.py", "_test_shapes_models"), to, source, sizes)


def keras_same_pools(path) -> str:
    """A Keras model on ``(None, None, 3)`` with strided "same" pools, whose padding depends on the size."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(None, None, 3), name="x")
    model = keras.Model(x, [keras.layers.MaxPooling2D(3, 2, padding="same")(x),
                            keras.layers.AveragePooling2D(2, 2, padding="same")(x)])
    model.save(path)
    return str(path)


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_keras_same_pooling_over_any_image_size(tmp_path, to):
    """TF's "same" pooling with stride 2: PyTorch pads by what each size needs when it runs
    (``same_padding``); the mean divides by the window's unpadded part at every size."""
    import keras

    path = keras_same_pools(tmp_path / "same_pools.keras")
    source = keras.models.load_model(path, compile=False)
    out, module = converted(tmp_path, path, to, "x=B=2,H=11,W=13,3")
    body = _body(out)
    assert not re.search(r"(?<![\w.])(11|13)(?![\w.])", body), body
    if to == "torch":
        assert "same_padding(" in body
    model = module.load()
    rng = np.random.default_rng(3)
    for shape in [(2, 11, 13, 3), (1, 1, 1, 3), (3, 8, 5, 3), (1, 16, 17, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = [np.asarray(w) for w in source(x, training=False)]
        if to == "torch":
            import torch

            with torch.no_grad():
                got = [g.numpy() for g in model(torch.from_numpy(x))]
        else:
            got = [np.asarray(g) for g in model(x, training=False)]
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, (shape, i)
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"output {i}, input shape {shape}")


def test_reshape_size_from_onnxruntime_cancels_to_a_product():
    """wav2vec2's attention reshape: onnxruntime writes its ``-1`` as floor(total / known); the
    fraction cancels to ``4*B``, a size the Keras importer can write (it cannot write a floor)."""
    import sympy

    from pipeline.normalize.symbolic import expression

    b = sympy.Symbol("B", integer=True, positive=True)
    assert expression("floor(32*B*(floor(T/10) - 1)/(8*floor(T/10) - 8))") == 4 * b
    assert str(expression("floor(T/2) + 1")) == "floor(T/2) + 1"  # a floor that is one stays one


# -- sizes read off Shape at run time: Range, a slice to a run-time end --------------------------

RUNTIME_SIZES = '''
import torch
from torch import nn


class Positions(nn.Module):
    """What transformers models do with the length they read off their input: positions
    ``arange(L)`` (a causal mask of them), a position buffer cut to ``[:, :L]`` into an embedding,
    and, after a strided convolution, ``arange`` over its frames (a size no product of L)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(16, 4)
        self.register_buffer("pos", torch.arange(16)[None])
        self.conv = nn.Conv1d(1, 4, 3, stride=2)

    def forward(self, x):  # (N, L)
        n = x.shape[1]
        steps = torch.arange(n)
        causal = (steps[None, :] <= steps[:, None]).float()  # (L, L)
        y = self.table(self.pos[:, :n]) * x[..., None] + (causal @ x[..., None])  # (N, L, 4)
        frames = self.conv(x[:, None])  # (N, 4, floor((L - 3) / 2) + 1)
        z = frames + torch.arange(frames.shape[-1]).float()
        return y, z


def build():
    return Positions().eval()
'''


@pytest.mark.parametrize("to", ["keras", "torch"])
def test_runtime_ranges_and_slices(tmp_path, to):
    """``Range`` of a length read off ``Shape`` (PyTorch: ``torch.arange(L)``; Keras: an ``Arange``
    layer reading the length off a tensor that has it), ``buffer[:, :L]`` (``SliceTo``), both at
    every length torch allows (3 to 16: the buffer has 16 positions)."""
    path = tmp_path / "positions.py"
    path.write_text(RUNTIME_SIZES)
    out, module = converted(tmp_path, f"{path}:build", to, "x=N=2,L=9")
    body = _body(out)
    assert not re.search(r"(?<![\w.])9(?![\w.])", body), body
    assert ("Arange(" in body and "SliceTo(" in body) if to == "keras" else "torch.arange(" in body
    _check_outputs(module, to, import_file(str(path), "_test_positions").build(), [(2, 9), (1, 3), (3, 16), (1, 8)])
