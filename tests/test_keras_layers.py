"""Keras layer flavours convert exactly to PyTorch.

Each case builds a tiny Keras functional model (fixed batch size, every weight
set from a seeded numpy generator so biases and statistics are non-zero),
saves it as ``.keras`` and runs the real pipeline on it: tf2onnx export,
normalize passes, ``model.py`` generation and the four-way parity check.  A
case passes only if the generated PyTorch model matches Keras within 1e-4;
some cases also check what the generated code says (padding, modules).

Known gaps outside the importer are ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import math
import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline.convert import Options, convert  # noqa: E402
from pipeline.quiet import import_tensorflow  # noqa: E402
import oracle  # noqa: E402  (tests/oracle.py)

tf, keras = import_tensorflow()
L = keras.layers

MAX_ABS_ERR = 1e-4
S1, S2, S3 = (2, 11, 3), (2, 9, 11, 3), (2, 5, 6, 7, 2)  # (batch, *spatial, channels)
SEQ = (2, 7, 6)  # (batch, steps, features)


# -- helpers -------------------------------------------------------------------

def randomize(model: keras.Model, seed: int = 0) -> None:
    """Every weight from a seeded generator: non-zero biases, BN statistics, scales."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for var in layer.weights:
            shape = tuple(var.shape)
            if "variance" in var.path:
                values.append(rng.uniform(0.5, 1.5, shape))
            else:
                values.append(rng.uniform(-0.5, 0.5, shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])


def convert_keras(tmp_path, shape, make, seed: int = 0):
    """Build ``make(keras.Input)``, save it as .keras, convert it; return (result, model.py text)."""
    x = keras.Input(shape=shape[1:], batch_size=shape[0], name="x")
    model = keras.Model(x, make(x))
    randomize(model, seed)
    path = tmp_path / "model.keras"
    model.save(path)
    result = convert(Options(model=str(path), out=str(tmp_path / "out")))
    SOURCES[str(result.out_dir)] = model
    return result, (result.out_dir / "model.py").read_text()


SOURCES: dict[str, keras.Model] = {}  # output folder -> the in-memory Keras model it was converted from


def assert_exact(result) -> None:
    """The pipeline says it passed, and the independent oracle agrees: the Keras model the test
    built and the generated ``model.py``, both run directly on fresh inputs, within 1e-4."""
    parity = result.report["parity"]
    assert result.exit_code == 0, parity
    verdict = oracle.assert_matches(result.out_dir, SOURCES.pop(str(result.out_dir)))
    assert verdict.max_abs_err <= MAX_ABS_ERR, verdict


def module_ctor(code: str, kind: str) -> str:
    """The constructor text of the one ``nn.<kind>`` module in the generated code."""
    found = re.findall(rf"= (nn\.{kind}\(.*\))$", code, flags=re.M)
    assert len(found) == 1, f"expected one nn.{kind}, found {found}\n{code}"
    return found[0]


def tf_same_pads(sizes, kernel, stride, dilation):
    """TensorFlow's SAME padding per axis: (begin, end), the odd pixel at the end."""
    pads = []
    for n in sizes:
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def check_conv_padding(code: str, nd: int, kind: str, sizes, kernel, stride, dilation, padding) -> None:
    """Symmetric padding is ``padding=`` on the conv; asymmetric is never a symmetric guess."""
    ctor = module_ctor(code, f"{kind}{nd}d")
    pads = tf_same_pads(sizes, kernel, stride, dilation) if padding == "same" else [(0, 0)] * nd
    explicit = re.search(rf"nn\.ZeroPad{nd}d\(|F\.pad\(", code)
    if all(b == e for b, e in pads):
        begins = sorted({b for b, _ in pads})
        if begins == [0]:
            assert "padding=" not in ctor, ctor
        else:
            assert f"padding={begins[0]}" in ctor if len(begins) == 1 else "padding=(" in ctor, ctor
        assert not explicit, code
    else:
        assert explicit, code  # an explicit pad before the conv, with TF's odd pixel at the end
        assert "padding=" not in ctor, ctor
        flat = [p for b, e in reversed(pads) for p in (b, e)]
        assert f"nn.ZeroPad{nd}d({tuple(flat)})" in code, code


# -- convolutions --------------------------------------------------------------

CONV = {1: (L.Conv1D, S1), 2: (L.Conv2D, S2), 3: (L.Conv3D, S3)}


def _conv_cases():
    for nd in (1, 2, 3):
        for padding in ("valid", "same"):
            for stride, dilation in ((1, 1), (2, 1), (1, 2)):
                for kernel in (3, 2):
                    yield pytest.param(nd, padding, stride, dilation, kernel,
                                       id=f"conv{nd}d-{padding}-s{stride}-d{dilation}-k{kernel}")


@pytest.mark.parametrize("nd,padding,stride,dilation,kernel", list(_conv_cases()))
def test_conv(tmp_path, nd, padding, stride, dilation, kernel):
    layer, shape = CONV[nd]
    result, code = convert_keras(
        tmp_path, shape,
        lambda x: layer(4, kernel, strides=stride, dilation_rate=dilation, padding=padding)(x))
    assert_exact(result)
    check_conv_padding(code, nd, "Conv", shape[1:-1], kernel, stride, dilation, padding)


def test_conv_same_odd_kernel_is_symmetric_padding(tmp_path):
    result, code = convert_keras(tmp_path, S2, lambda x: L.Conv2D(4, 5, padding="same")(x))
    assert_exact(result)
    assert module_ctor(code, "Conv2d") == "nn.Conv2d(3, 4, kernel_size=5, padding=2)"


@pytest.mark.parametrize("dilation", [1, 2])
def test_conv1d_causal(tmp_path, dilation):
    result, code = convert_keras(tmp_path, S1, lambda x: L.Conv1D(4, 3, padding="causal", dilation_rate=dilation)(x))
    assert_exact(result)
    ctor = module_ctor(code, "Conv1d")
    assert "padding=" not in ctor, ctor  # causal = left padding only, never symmetric
    assert re.search(rf"(F\.pad\(.*, \(0, 0, {2 * dilation}, 0\)|nn\.ZeroPad1d\(\({2 * dilation}, 0\)\))", code), code


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_depthwise_conv2d(tmp_path, multiplier, padding):
    result, code = convert_keras(
        tmp_path, S2, lambda x: L.DepthwiseConv2D(3, depth_multiplier=multiplier, padding=padding)(x))
    assert_exact(result)
    assert "groups=3" in module_ctor(code, "Conv2d")
    assert f"nn.Conv2d(3, {3 * multiplier}," in code


def test_depthwise_conv2d_stride2(tmp_path):
    result, _ = convert_keras(tmp_path, S2, lambda x: L.DepthwiseConv2D(2, strides=2, padding="same")(x))
    assert_exact(result)


@pytest.mark.parametrize("multiplier,padding", [(1, "same"), (2, "valid")])
def test_separable_conv2d(tmp_path, multiplier, padding):
    result, code = convert_keras(
        tmp_path, S2, lambda x: L.SeparableConv2D(5, 3, depth_multiplier=multiplier, padding=padding)(x))
    assert_exact(result)
    assert f"nn.Conv2d(3, {3 * multiplier}, kernel_size=3" in code and "groups=3" in code
    assert f"nn.Conv2d({3 * multiplier}, 5, kernel_size=1)" in code


def test_conv2d_groups(tmp_path):
    """Keras 3 runs a grouped Conv2D under tf.function(jit_compile=True); the export inlines that call."""
    result, code = convert_keras(tmp_path, (2, 9, 11, 4), lambda x: L.Conv2D(6, 3, groups=2, padding="same")(x))
    assert_exact(result)
    assert "groups=2" in module_ctor(code, "Conv2d")


# -- transposed convolutions ---------------------------------------------------

def _transpose_cases():
    for nd in (1, 2):
        for padding in ("same", "valid"):
            for kernel in (3, 2, 4):
                yield pytest.param(nd, padding, kernel, 2, None, id=f"conv{nd}dT-{padding}-s2-k{kernel}")
            yield pytest.param(nd, padding, 3, 1, None, id=f"conv{nd}dT-{padding}-s1-k3")
        yield pytest.param(nd, "valid", 3, 2, 1, id=f"conv{nd}dT-valid-s2-k3-outpad1")
        yield pytest.param(nd, "same", 4, 2, 1, id=f"conv{nd}dT-same-s2-k4-outpad1")
        yield pytest.param(nd, "same", 3, 2, 1, id=f"conv{nd}dT-same-s2-k3-outpad1")


@pytest.mark.parametrize("nd,padding,kernel,stride,output_padding", list(_transpose_cases()))
def test_conv_transpose(tmp_path, nd, padding, kernel, stride, output_padding):
    layer, shape = {1: (L.Conv1DTranspose, S1), 2: (L.Conv2DTranspose, S2)}[nd]
    result, code = convert_keras(
        tmp_path, shape,
        lambda x: layer(4, kernel, strides=stride, padding=padding, output_padding=output_padding)(x))
    assert_exact(result)
    assert "nn.ConvTranspose" in code
    assert "padding=-" not in code  # PyTorch refuses negative padding
    if padding == "valid" and output_padding:
        assert "output_padding=" in code, code


def test_conv3d_transpose_same(tmp_path):
    result, code = convert_keras(tmp_path, S3, lambda x: L.Conv3DTranspose(3, 3, strides=2, padding="same")(x))
    assert_exact(result)
    assert "nn.ConvTranspose3d(2, 3, kernel_size=3, stride=2" in code


def test_conv1d_transpose_is_conv_transpose1d(tmp_path):
    """tf2onnx's ConvTranspose over an inserted unit axis comes back as one nn.ConvTranspose1d with its bias."""
    result, code = convert_keras(tmp_path, S1, lambda x: L.Conv1DTranspose(4, 3, strides=2, padding="same")(x))
    assert_exact(result)
    assert module_ctor(code, "ConvTranspose1d").startswith("nn.ConvTranspose1d(3, 4, kernel_size=3, stride=2")
    assert "ConvTranspose2d" not in code and "bias=False" not in code, code


# -- pooling -------------------------------------------------------------------

def _pool_cases():
    for kind in ("Max", "Average"):
        for padding in ("same", "valid"):
            for size, stride in ((2, None), (3, 2), (3, 1), (2, 1)):
                yield pytest.param(kind, padding, size, stride,
                                   id=f"{kind.lower()}pool2d-{padding}-{size}s{stride or size}")


@pytest.mark.parametrize("kind,padding,size,stride", list(_pool_cases()))
def test_pooling2d(tmp_path, kind, padding, size, stride):
    layer = getattr(L, f"{kind}Pooling2D")
    result, code = convert_keras(tmp_path, S2, lambda x: layer(size, strides=stride, padding=padding)(x))
    assert_exact(result)
    torch_kind = "MaxPool2d" if kind == "Max" else "AvgPool2d"
    ctor = module_ctor(code, torch_kind)
    pads = tf_same_pads(S2[1:3], size, stride or size, 1) if padding == "same" else [(0, 0)] * 2
    if kind == "Average" and any(b or e for b, e in pads):
        # TF averages over the real pixels only: padding must never be counted.
        assert "count_include_pad=True" not in ctor
        assert "count_include_pad=False" in ctor or "ceil_mode=True" in ctor or "_rescale" in code, code


@pytest.mark.parametrize("kind", ["Max", "Average"])
def test_pooling1d_same(tmp_path, kind):
    result, _ = convert_keras(tmp_path, S1, lambda x: getattr(L, f"{kind}Pooling1D")(2, padding="same")(x))
    assert_exact(result)


@pytest.mark.parametrize("kind", ["Max", "Average"])
def test_pooling3d_same(tmp_path, kind):
    result, _ = convert_keras(tmp_path, S3, lambda x: getattr(L, f"{kind}Pooling3D")(2, padding="same")(x))
    assert_exact(result)


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling2d(tmp_path, keepdims):
    result, _ = convert_keras(tmp_path, S2, lambda x: L.GlobalAveragePooling2D(keepdims=keepdims)(x))
    assert_exact(result)


def test_global_max_pooling1d(tmp_path):
    result, _ = convert_keras(tmp_path, S1, lambda x: L.GlobalMaxPooling1D()(x))
    assert_exact(result)


# -- resizing, cropping, padding -----------------------------------------------

@pytest.mark.parametrize("size,interpolation", [(2, "nearest"), ((2, 3), "nearest"), (2, "bilinear")])
def test_upsampling2d(tmp_path, size, interpolation):
    result, code = convert_keras(tmp_path, S2, lambda x: L.UpSampling2D(size, interpolation=interpolation)(x))
    assert_exact(result)
    if interpolation == "bilinear":
        assert 'nn.Upsample(scale_factor=2.0, mode="bilinear")' in code, code


@pytest.mark.parametrize("height,width,interpolation", [
    (5, 7, "bilinear"), (13, 17, "bilinear"),
    (13, 17, "nearest"), (6, 4, "nearest"),
])
def test_resizing(tmp_path, height, width, interpolation):
    result, code = convert_keras(tmp_path, S2, lambda x: L.Resizing(height, width, interpolation=interpolation)(x))
    assert_exact(result)
    assert f"nn.Upsample(size=({height}, {width})" in code, code


def test_upsampling1d(tmp_path):
    result, _ = convert_keras(tmp_path, S1, lambda x: L.UpSampling1D(2)(x))
    assert_exact(result)


def test_cropping2d(tmp_path):
    result, _ = convert_keras(tmp_path, S2, lambda x: L.Cropping2D(((1, 2), (0, 3)))(x))
    assert_exact(result)
    assert result.report["parity"]["outputs"][0]["shape"] == [2, 6, 8, 3]


@pytest.mark.parametrize("padding", [1, ((1, 2), (0, 3))], ids=["symmetric", "asymmetric"])
def test_zero_padding2d(tmp_path, padding):
    result, _ = convert_keras(tmp_path, S2, lambda x: L.ZeroPadding2D(padding)(x))
    assert_exact(result)


# -- normalization, dense, flatten ---------------------------------------------

@pytest.mark.parametrize("shape,kind", [(S2, "BatchNorm2d"), (S1, "BatchNorm1d"), ((2, 5), "BatchNorm1d")],
                         ids=["4d", "3d", "2d"])
def test_batch_normalization(tmp_path, shape, kind):
    """Kept as a BatchNorm module of the input's rank (not Mul/Add math, not a 2d norm on a reshape)."""
    result, code = convert_keras(tmp_path, shape, lambda x: L.BatchNormalization(epsilon=1e-3)(x))
    assert_exact(result)
    assert module_ctor(code, kind) == f"nn.{kind}({shape[-1]}, eps=0.001)"


@pytest.mark.parametrize("conv,shape,kind", [(L.Conv2D, S2, "BatchNorm2d"), (L.Conv1D, S1, "BatchNorm1d"),
                                             (L.Conv3D, S3, "BatchNorm3d")], ids=["2d", "1d", "3d"])
def test_conv_batch_normalization(tmp_path, conv, shape, kind):
    """Not folded into the conv unless --fold-bn is asked: a plain conv, then the BatchNorm module."""
    result, code = convert_keras(
        tmp_path, shape, lambda x: L.BatchNormalization(epsilon=1e-3)(conv(4, 3, padding="same")(x)))
    assert_exact(result)
    assert module_ctor(code, kind) == f"nn.{kind}(4, eps=0.001)"
    assert f"nn.Conv{kind[-2:]}({shape[-1]}, 4, kernel_size=3, padding=1)" in code


def test_flatten_after_conv_then_dense(tmp_path):
    """Keras flattens (H, W, C) channels-last: the Linear's weight rows follow that order."""
    result, code = convert_keras(tmp_path, S2, lambda x: L.Dense(5)(L.Flatten()(L.Conv2D(4, 3)(x))))
    assert_exact(result)
    assert "nn.Linear(252, 5)" in code
    forward = code[code.index("def forward"):]
    assert forward.index("permute(0, 2, 3, 1)") < forward.index("reshape(-1, 252)"), forward  # any batch


def test_dense_on_3d_input(tmp_path):
    result, code = convert_keras(tmp_path, SEQ, lambda x: L.Dense(5, bias_initializer="ones")(x))
    assert_exact(result)
    assert module_ctor(code, "Linear") == "nn.Linear(6, 5)"  # bias included (a zero bias is folded away)
    assert "reshape" not in code[code.index("def forward"):], code  # nn.Linear acts on the last axis


def test_dense_2d_relu(tmp_path):
    result, code = convert_keras(tmp_path, (2, 6), lambda x: L.Dense(5, activation="relu")(x))
    assert_exact(result)
    assert module_ctor(code, "Linear") == "nn.Linear(6, 5)"


@pytest.mark.parametrize("shape,axis", [(SEQ, -1), (S2, -1), (S2, (1, 2, 3))], ids=["3d", "4d", "4d-hwc"])
def test_layer_normalization(tmp_path, shape, axis):
    result, _ = convert_keras(tmp_path, shape, lambda x: L.LayerNormalization(axis=axis)(x))
    assert_exact(result)


def test_dropout_is_identity(tmp_path):
    result, code = convert_keras(tmp_path, S2, lambda x: L.Dropout(0.5)(L.Conv2D(4, 3)(x)))
    assert_exact(result)
    assert "nn.Dropout" not in code and "F.dropout" not in code


# -- activations ---------------------------------------------------------------

ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "swish", "elu", "selu", "softplus", "softmax", "leaky_relu",
               "hard_sigmoid", "softsign", "exponential", "linear", "log_softmax", "mish", "hard_silu"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation(tmp_path, name):
    result, code = convert_keras(tmp_path, SEQ, lambda x: L.Activation(name)(x))
    assert_exact(result)
    if name == "relu6":
        assert "F.relu6(x)" in code


def test_activation_gelu_exact(tmp_path):
    # tf2onnx emits Erfc (no ONNX op); export rewrites it as 1 - Erf(x).
    result, code = convert_keras(tmp_path, SEQ, lambda x: L.Activation("gelu")(x))
    assert_exact(result)
    assert "torch.erf(" in code


def test_activation_gelu_tanh_approximation(tmp_path):
    result, _ = convert_keras(tmp_path, SEQ, lambda x: keras.ops.gelu(x, approximate=True))
    assert_exact(result)


@pytest.mark.parametrize("make", [
    pytest.param(lambda x: L.ReLU(max_value=6)(x), id="ReLU(max_value=6)"),
    pytest.param(lambda x: L.ReLU(max_value=6, negative_slope=0.1, threshold=0.5)(x), id="ReLU(6,0.1,0.5)"),
    pytest.param(lambda x: L.LeakyReLU(negative_slope=0.2)(x), id="LeakyReLU(0.2)"),
    pytest.param(lambda x: L.ELU(alpha=0.5)(x), id="ELU(0.5)"),
    pytest.param(lambda x: L.Softmax(axis=1)(x), id="Softmax(axis=1)"),
    pytest.param(lambda x: L.PReLU()(x), id="PReLU"),
])
def test_activation_layer(tmp_path, make):
    result, _ = convert_keras(tmp_path, SEQ, make)
    assert_exact(result)


def test_relu_max_value_6_is_relu6(tmp_path):
    result, code = convert_keras(tmp_path, SEQ, lambda x: L.ReLU(max_value=6)(x))
    assert_exact(result)
    assert "F.relu6(x)" in code
