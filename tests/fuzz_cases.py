"""Property-based conv/pool fuzzing: one framework-neutral case, three renderings.

A :class:`Case` is a small graph — one to four Conv / ConvTranspose / MaxPool /
AveragePool layers in 1-D, 2-D or 3-D, each optionally followed by an activation
(ReLU, tanh, sigmoid, leaky ReLU), optionally followed by Flatten (or Reshape) and
a Dense layer — plus the rendering it is built in:

``onnx``   an ONNX graph written directly (auto_pad VALID / SAME_UPPER /
           SAME_LOWER, explicit symmetric and asymmetric pads, ceil_mode,
           count_include_pad), converted to PyTorch *and* to Keras, each checked
           against onnxruntime by the pipeline's own parity stage;
``keras``  a real Keras model (valid / same / causal, ``groups``, depthwise and
           separable convolutions, Conv*DTranspose with output_padding),
           converted to PyTorch and checked against Keras itself (channels-first
           Keras convolutions are not drawn: TensorFlow's CPU kernels cannot run them);
``torch``  a real ``nn.Module`` (int, ``"same"`` and asymmetric ``F.pad``
           padding, ``padding_mode`` zeros / reflect (replicate and circular are
           checked by tests/test_known_gaps.py),
           groups, ConvTranspose output_padding, ceil_mode pools),
           converted to Keras and checked against PyTorch itself.

Strategies only generate cases that are valid under the frameworks' documented
rules (output sizes >= 1, kernel windows that fit, groups dividing the channels,
...), so every conversion must either pass — exit 0 and the converted model
within :data:`MAX_ABS_ERR` of the source.  A refusal (exit 3) is excused only when
an entry of the known-gaps table (tests/known_gaps.py) covers it (status
``known_gap``); any other refusal (status ``refused``), exit 1, 2, 4 or a crash is
a failure.

:func:`run_case` is the one runner, shared by ``tests/test_fuzz.py`` (the fast CI
profile), ``tests/test_fuzz_regressions.py`` and ``bench/fuzz.py`` (``make fuzz``).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before TensorFlow: silences it)

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, assume, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_ABS_ERR = 1e-4
RENDERINGS = ("onnx", "keras", "torch")
TARGETS = {"onnx": ("torch", "keras"), "keras": ("torch",), "torch": ("keras",)}
MAX_ELEMENTS = 40_000  # per tensor: keeps every case small and fast
MAX_SIZE = {1: 14, 2: 9, 3: 6}  # largest drawn input size per spatial axis, by rank
CONV_OPS = ("conv", "convT")
POOL_OPS = ("maxpool", "avgpool")


# -- the case model -------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """One conv / transposed conv / pooling layer, in the terms of its rendering.

    ``padding`` depends on the rendering: onnx ``valid | same_upper | same_lower |
    explicit``; keras ``valid | same | causal``; torch ``explicit`` (symmetric
    ``padding=``), ``same`` (``padding="same"``) or ``pad_layer`` (asymmetric
    ``F.pad`` before the layer).  ``pads`` is ``begins + ends`` per spatial axis.
    """

    op: str
    kernel: tuple
    stride: tuple
    dilation: tuple
    padding: str
    pads: tuple = ()
    filters: int = 0
    groups: int = 1
    kind: str = "plain"  # keras conv: plain | depthwise | separable
    depth_multiplier: int = 1
    output_padding: tuple = ()  # convT; () = none given (Keras: output_padding=None)
    ceil_mode: bool = False
    count_include_pad: bool = False
    bias: bool = True
    activation: str = "none"  # applied after the layer: none | relu | tanh | sigmoid | leaky_relu
    padding_mode: str = "zeros"  # torch conv: zeros | reflect | replicate | circular

    def out_channels(self, c: int) -> int:
        """Channels after this layer, given ``c`` channels in."""
        if self.op in POOL_OPS:
            return c
        if self.kind == "depthwise":
            return c * self.depth_multiplier
        return self.filters


@dataclass(frozen=True)
class Case:
    """A graph of 1-4 layers (+ optional Flatten/Reshape -> Dense head) in one rendering."""

    render: str
    rank: int
    batch: int
    channels: int
    sizes: tuple
    layers: tuple
    head: str = "none"  # none | flatten | reshape
    units: int = 1
    opset: int = 18  # onnx rendering only
    seed: int = 0

    def shapes(self) -> list[tuple[int, tuple]]:
        """(channels, spatial sizes) before the first layer and after every layer."""
        c, sizes = self.channels, tuple(self.sizes)
        found = [(c, sizes)]
        for layer in self.layers:
            sizes = out_sizes(self.render, layer, sizes)
            c = layer.out_channels(c)
            found.append((c, sizes))
        return found

    def input_shape(self) -> tuple:
        """The source model's input: channels-first, except for Keras."""
        if self.render == "keras":
            return (self.batch, *self.sizes, self.channels)
        return (self.batch, self.channels, *self.sizes)


# -- documented output-size rules (used to filter before building) --------------

def eff(k: int, d: int) -> int:
    """Effective kernel extent of a dilated kernel."""
    return (k - 1) * d + 1


def pool_len(n: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    """ONNX / PyTorch pooling output length; with ceil_mode a last window that
    would start inside the end padding is dropped (PyTorch docs, ONNX >= 19)."""
    span = n + pb + pe - eff(k, d)
    if span < 0:
        return 0
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + pb:
        out -= 1
    return out


def conv_len(n: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    """floor((n + pads - eff) / s) + 1, or 0 if the kernel does not fit."""
    span = n + pb + pe - eff(k, d)
    return span // s + 1 if span >= 0 else 0


def keras_deconv_len(n: int, k: int, s: int, d: int, padding: str, output_padding) -> int:
    """Keras' ``compute_conv_transpose_output_shape`` for one axis."""
    ke = eff(k, d)
    if output_padding is None:
        return n * s + max(ke - s, 0) if padding == "valid" else n * s
    pad = ke // 2 if padding == "same" else 0
    return (n - 1) * s + ke - 2 * pad + output_padding


def out_sizes(render: str, layer: Layer, sizes: tuple) -> tuple:
    """Spatial output sizes of ``layer`` in ``render``; a 0 marks an invalid case."""
    nd = len(sizes)
    pads = layer.pads or (0,) * (2 * nd)
    out = []
    for i, n in enumerate(sizes):
        k, s, d = layer.kernel[i], layer.stride[i], layer.dilation[i]
        pb, pe = pads[i], pads[nd + i]
        if render == "torch" and layer.padding == "pad_layer":
            n, pb, pe = n + pb + pe, 0, 0  # F.pad first: the layer sees a larger, unpadded input
        op = layer.output_padding[i] if layer.output_padding else 0
        if render == "keras":
            if layer.op == "convT":
                out.append(keras_deconv_len(n, k, s, d, layer.padding,
                                            layer.output_padding[i] if layer.output_padding else None))
            elif layer.padding in ("same", "causal"):
                out.append(-(-n // s))
            else:
                out.append(conv_len(n, k, s, d, 0, 0))
        elif layer.op == "convT":
            if layer.padding in ("same_upper", "same_lower"):
                out.append(n * s)
            else:
                out.append(s * (n - 1) + op + eff(k, d) - pb - pe)
        elif layer.padding in ("same_upper", "same_lower", "same"):
            out.append(-(-n // s))
        elif layer.op in POOL_OPS:
            out.append(pool_len(n, k, s, d, pb, pe, layer.ceil_mode))
        else:
            out.append(conv_len(n, k, s, d, pb, pe))
    return tuple(out)


def negative_same_padding(layer: Layer, sizes: tuple) -> bool:
    """A "same" Conv or pooling whose total padding would be negative (kernel extent < stride).

    The ONNX reference implementation, TensorFlow's documentation and its 1-D/2-D conv and
    pooling clamp that padding at 0; onnxruntime (SAME_UPPER/LOWER) and TensorFlow's CPU
    3-D conv and pooling do not, and shift the windows.  Neither can referee such a case.
    """
    if layer.op == "convT" or not layer.padding.startswith("same"):
        return False
    return any((-(-n // s) - 1) * s + eff(k, d) - n < 0
               for n, k, s, d in zip(sizes, layer.kernel, layer.stride, layer.dilation))


def ceil_drops_a_window(layer: Layer, sizes: tuple) -> bool:
    """ceil_mode pooling whose extra window would start in the end padding, so is dropped.

    onnxruntime and PyTorch drop it; ONNX shape inference does not, and onnxruntime
    refuses to load a graph whose MatMul then sees the wrong size.
    """
    if layer.op not in POOL_OPS or not layer.ceil_mode:
        return False
    nd = len(sizes)
    pads = layer.pads or (0,) * (2 * nd)
    for i, (n, k, s, d) in enumerate(zip(sizes, layer.kernel, layer.stride, layer.dilation)):
        span = n + pads[i] + pads[nd + i] - eff(k, d)
        if span >= 0 and span % s and (span // s + 1) * s >= n + pads[i]:
            return True
    return False


def window_sees_only_padding(layer: Layer, sizes: tuple) -> bool:
    """A dilated pooling window whose taps all fall in the padding.

    Its max is a convention, not a number: -inf in PyTorch, the lowest float in
    onnxruntime.  Pads below the kernel rule this out only without dilation.
    """
    if layer.op not in POOL_OPS or all(d == 1 for d in layer.dilation):
        return False
    nd = len(sizes)
    pads = layer.pads or (0,) * (2 * nd)
    outs = out_sizes("onnx", layer, sizes)
    for i, (n, k, s, d, o) in enumerate(zip(sizes, layer.kernel, layer.stride, layer.dilation, outs)):
        for w in range(o):
            if not any(0 <= w * s - pads[i] + j * d < n for j in range(k)):
                return True
    return False


def valid(case: Case) -> bool:
    """Every tensor non-empty and small enough; onnxruntime usable as the referee."""
    shapes = case.shapes()
    for c, sizes in shapes:
        if min(sizes) < 1 or case.batch * c * math.prod(sizes) > MAX_ELEMENTS:
            return False
    for layer, (_, sizes) in zip(case.layers, shapes):
        if negative_same_padding(layer, sizes) and (case.render == "onnx" or case.rank == 3):
            return False
        if case.render == "onnx" and case.head == "reshape" and ceil_drops_a_window(layer, sizes):
            return False
        if case.render == "onnx" and window_sees_only_padding(layer, sizes):
            return False
        if case.render == "torch" and layer.op == "avgpool" and case.rank == 3 and layer.padding != "pad_layer" \
                and any(n < k for n, k in zip(sizes, layer.kernel)):
            return False  # PyTorch's AvgPool3d refuses an unpadded input smaller than the kernel
        if layer.padding_mode == "reflect" and any(p >= n for p, n in zip(layer.pads, sizes)):
            return False  # PyTorch: reflect padding must be smaller than the input
        if layer.padding_mode == "circular" and any(p > n for p, n in zip(layer.pads, sizes)):
            return False  # PyTorch: circular padding at most the input size
    return True


# -- hypothesis settings profiles -------------------------------------------------
#
# ``FUZZ_PROFILE`` picks one for tests/test_fuzz.py: ``ci`` (the default: derandomized,
# so every run checks the same cases) or ``dev`` (random, more cases).  bench/fuzz.py
# uses ``deep``: random from its --seed, no shrinking, every case recorded.

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
settings.register_profile("fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz-dev", **_COMMON)
settings.register_profile("fuzz-deep", phases=[Phase.generate], **_COMMON)

# cases per rendering: each onnx case is two conversions (~0.1-0.3 s), a keras or torch
# case one export plus one conversion (~0.5-2 s)
EXAMPLES = {"ci": {"onnx": 240, "keras": 16, "torch": 16},
            "dev": {"onnx": 2000, "keras": 100, "torch": 100}}


def profile(render: str) -> settings:
    """The settings for the fast-profile test of ``render``, chosen by ``FUZZ_PROFILE``."""
    name = os.environ.get("FUZZ_PROFILE", "ci")
    if name not in EXAMPLES:
        raise ValueError(f"FUZZ_PROFILE must be one of {sorted(EXAMPLES)}, not {name!r}")
    return settings(settings.get_profile(f"fuzz-{name}"), max_examples=EXAMPLES[name][render])


# -- hypothesis strategies ------------------------------------------------------

def _axes(draw, rank: int, lo: int, hi: int, same_p: bool = True) -> tuple:
    """A per-axis tuple; often the same value on every axis, as real layers have."""
    if rank > 1 and same_p and draw(st.booleans()):
        v = draw(st.integers(lo, hi))
        return (v,) * rank
    return tuple(draw(st.integers(lo, hi)) for _ in range(rank))


def _divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def _pads(draw, kernel: tuple, hi_of, symmetric: bool | None = None) -> tuple:
    """``begins + ends`` with each pad in ``[0, hi_of(k)]``; symmetric or not."""
    begins = tuple(draw(st.integers(0, max(0, hi_of(k)))) for k in kernel)
    if symmetric is None:
        symmetric = draw(st.booleans())
    ends = begins if symmetric else tuple(draw(st.integers(0, max(0, hi_of(k)))) for k in kernel)
    return begins + ends


ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")


def _activation(draw) -> str:
    """Half the layers are followed by an activation."""
    return draw(st.sampled_from(("none",) * 4 + ACTIVATIONS))


# ORT_AVGPOOL_BUG: onnxruntime 1.23's 2-D/3-D AveragePool with count_include_pad=1 divides
# by the wrong window size unless every pad is the same number (it reads the end pads with
# the wrong index; 1-D is right).  PyTorch and the ONNX reference implementation agree with
# each other and not with it, so those pads are left out of the onnx and torch renderings;
# tests/test_fuzz_regressions.py keeps one such case as a strict xfail.


@st.composite
def onnx_layer(draw, rank: int, c: int, opset: int) -> Layer:
    """An ONNX Conv / ConvTranspose / MaxPool / AveragePool node's attributes."""
    op = draw(st.sampled_from(CONV_OPS + POOL_OPS))
    kernel = _axes(draw, rank, 1, 4)
    stride = _axes(draw, rank, 1, 3)
    avg_dilation = op == "avgpool" and opset >= 19 and draw(st.booleans())
    dilation = _axes(draw, rank, 1, 3) if (op != "avgpool" or avg_dilation) and draw(st.booleans()) else (1,) * rank
    modes = ["valid", "same_upper", "same_lower", "explicit"]
    if op != "convT" and any(d > 1 for d in dilation):
        # ORT cannot referee these: its Conv and AveragePool reject dilation with SAME
        # ("Dilation not supported for AutoPadType::SAME_UPPER"), its MaxPool ignores it.
        modes = ["valid", "explicit"]
    include_pad = op == "avgpool" and draw(st.booleans())
    if include_pad and rank > 1:
        modes = ["valid", "explicit"]  # see ORT_AVGPOOL_BUG
    padding = draw(st.sampled_from(modes))
    kw: dict = {}
    if padding == "explicit" and include_pad and rank > 1:
        kw["pads"] = (draw(st.integers(0, min(kernel) - 1)),) * (2 * rank)  # see ORT_AVGPOOL_BUG
    elif padding == "explicit":
        # onnxruntime requires pool pads < kernel; conv pads may reach the kernel size
        kw["pads"] = _pads(draw, kernel, (lambda k: k - 1) if op in POOL_OPS else (lambda k: k))
    if op in CONV_OPS:
        g = draw(st.sampled_from(_divisors(c)))
        kw.update(groups=g, filters=g * draw(st.integers(1, 3)), bias=draw(st.booleans()))
    if op == "convT":
        # output_padding < stride: with dilation ONNX and PyTorch allow up to max(stride,
        # dilation) - 1, but onnxruntime then computes a different result (from run to run
        # even: no strict xfail can pin it down, so it stays out of every rendering).
        outpad = tuple(draw(st.integers(0, s - 1)) for s in stride)
        if padding.startswith("same"):
            # SAME with output_padding: ONNX shape inference gives input * stride + output_padding,
            # the spec's text input * stride; no referee agrees, so it is left out.
            outpad = (0,) * rank
            # ORT departs from the ONNX spec for SAME when the total padding would be
            # negative (kernel extent + output_padding < stride): not a referee we can use.
            assume(all(eff(k, d) + p >= s for k, d, p, s in zip(kernel, dilation, outpad, stride)))
        kw["output_padding"] = outpad
    if op in POOL_OPS:
        kw["ceil_mode"] = padding == "explicit" and draw(st.booleans())
        if include_pad and opset < 19:
            # onnxruntime's AveragePool before opset 19 divides a ceil_mode window that runs
            # past the padded input by the whole kernel (PyTorch and opset 19 by what is left).
            kw["ceil_mode"] = False
    kw["count_include_pad"] = include_pad
    kw["activation"] = _activation(draw)
    return Layer(op, kernel, stride, dilation, padding, **kw)


@st.composite
def keras_layer(draw, rank: int, c: int) -> Layer:
    """A Keras conv / depthwise / separable / transposed conv / pooling layer's arguments."""
    op = draw(st.sampled_from(CONV_OPS + POOL_OPS))
    kernel = _axes(draw, rank, 1, 4)
    stride = _axes(draw, rank, 1, 3)
    dilation = (1,) * rank
    # Keras refuses strides > 1 together with dilation > 1; TF's CPU transposed conv
    # and Keras pooling take no dilation at all.
    if op == "conv" and draw(st.booleans()):
        dilation = _axes(draw, rank, 1, 3)
        stride = (1,) * rank
    kw: dict = {}
    if op == "conv":
        kinds = ["plain", "depthwise", "separable"] if rank < 3 else ["plain"]
        if len(set(stride)) > 1:
            kinds = ["plain"]  # TF's CPU DepthwiseConv2dNative cannot run unequal strides
        kind = draw(st.sampled_from(kinds))
        modes = ["valid", "same"] + (["causal"] if rank == 1 and kind == "plain" else [])
        padding = draw(st.sampled_from(modes))
        kw.update(kind=kind, bias=draw(st.booleans()))
        if kind in ("depthwise", "separable"):
            kw["depth_multiplier"] = draw(st.integers(1, 3))
        if kind == "plain" and c > 1 and draw(st.booleans()):
            # Conv*D(groups=g): Keras 3 runs it jit-compiled, the export inlines the XLA call
            g = draw(st.sampled_from(_divisors(c)))
            kw.update(groups=g, filters=g * draw(st.integers(1, 2)))
        elif kind != "depthwise":
            kw["filters"] = draw(st.integers(1, 4))
    else:
        padding = draw(st.sampled_from(["valid", "same"]))
    if op == "convT":
        kw.update(filters=draw(st.integers(1, 4)), bias=draw(st.booleans()))
        # With padding="same" Keras asks TF for (n - 1) * s + k - 2 * (k // 2) + output_padding,
        # which TF cannot run for an even kernel unless output_padding >= 1 (so stride > 1).
        lows = [1 if padding == "same" and k % 2 == 0 else 0 for k in kernel]
        if all(lo < s for lo, s in zip(lows, stride)) and draw(st.booleans()):
            kw["output_padding"] = tuple(draw(st.integers(lo, s - 1)) for lo, s in zip(lows, stride))
    kw["activation"] = _activation(draw)
    return Layer(op, kernel, stride, dilation, padding, **kw)


@st.composite
def torch_layer(draw, rank: int, c: int) -> Layer:
    """A torch.nn conv / transposed conv / pooling module's arguments (+ optional F.pad)."""
    op = draw(st.sampled_from(CONV_OPS + POOL_OPS))
    kernel = _axes(draw, rank, 1, 4)
    stride = _axes(draw, rank, 1, 3)
    dilation = _axes(draw, rank, 1, 3) if op != "avgpool" and draw(st.booleans()) else (1,) * rank
    kw: dict = {}
    if op == "conv":
        padding = draw(st.sampled_from(["explicit", "same", "pad_layer"]))
        if padding == "same":
            stride = (1,) * rank  # PyTorch: padding='same' needs stride 1
        elif padding == "explicit":
            kw["pads"] = _pads(draw, kernel, lambda k: k, symmetric=True)
            if any(kw["pads"]):
                # replicate and circular convert too (tests/test_known_gaps.py checks both); not drawn,
                # so the CI profile's fixed cases stay the ones its feature count was built on
                kw["padding_mode"] = draw(st.sampled_from(["zeros", "reflect"]))
        else:
            kw["pads"] = _pads(draw, kernel, lambda k: k, symmetric=False)
    elif op == "convT":
        padding = "explicit"
        kw["pads"] = tuple(draw(st.integers(0, eff(k, d) - 1)) for k, d in zip(kernel, dilation))
        kw["pads"] = kw["pads"] * 2
        # output_padding < stride, though PyTorch allows up to max(stride, dilation) - 1:
        # onnxruntime's ConvTranspose gets the rest wrong (see onnx_layer)
        kw["output_padding"] = tuple(draw(st.integers(0, s - 1)) for s in stride)
    else:
        padding = draw(st.sampled_from(["explicit", "pad_layer"]))
        include_pad = op == "avgpool" and draw(st.booleans())
        if padding == "explicit" and include_pad and rank > 1:
            kw["pads"] = (draw(st.integers(0, min(kernel) // 2)),) * (2 * rank)  # see ORT_AVGPOOL_BUG
        elif padding == "explicit":
            # PyTorch: padding <= kernel_size // 2 (max and avg pooling alike)
            kw["pads"] = tuple(draw(st.integers(0, k // 2)) for k in kernel) * 2
        else:
            kw["pads"] = _pads(draw, kernel, lambda k: k - 1, symmetric=False)
        kw["ceil_mode"] = draw(st.booleans())
        kw["count_include_pad"] = include_pad
    if op in CONV_OPS:
        g = draw(st.sampled_from(_divisors(c)))
        kw.update(groups=g, filters=g * draw(st.integers(1, 3)), bias=draw(st.booleans()))
    kw["activation"] = _activation(draw)
    return Layer(op, kernel, stride, dilation, padding, **kw)


LAYER_STRATEGIES = {"onnx": onnx_layer, "keras": keras_layer, "torch": torch_layer}


def _min_size(render: str, layer: Layer, rank: int, axis: int) -> int:
    """Smallest input size on ``axis`` for which ``layer`` gives a non-empty output."""
    for n in range(1, 64):
        sizes = tuple(n if i == axis else 64 for i in range(rank))
        if out_sizes(render, layer, sizes)[axis] >= 1:
            return n
    return 64


@st.composite
def cases(draw, render: str) -> Case:
    """A valid :class:`Case` in ``render`` (``onnx``, ``keras`` or ``torch``)."""
    rank = draw(st.sampled_from([1, 2, 3]))
    batch = draw(st.sampled_from([1, 1, 2, 3]))
    channels = draw(st.integers(1, 4))
    opset = draw(st.sampled_from([18, 19])) if render == "onnx" else 18
    make = LAYER_STRATEGIES[render]
    args = (opset,) if render == "onnx" else ()
    first = draw(make(rank, channels, *args))
    lows = [_min_size(render, first, rank, a) for a in range(rank)]
    assume(all(lo <= MAX_SIZE[rank] for lo in lows))
    sizes = tuple(draw(st.integers(lo, MAX_SIZE[rank])) for lo in lows)
    layers = [first]
    c1 = first.out_channels(channels)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 3]))):  # up to four layers
        layers.append(draw(make(rank, c1, *args)))
        c1 = layers[-1].out_channels(c1)
    head = draw(st.sampled_from(["none", "none", "flatten", "reshape"]))
    case = Case(render, rank, batch, channels, sizes, tuple(layers), head,
                units=draw(st.integers(1, 4)), opset=opset, seed=draw(st.integers(0, 2**16)))
    assume(valid(case))
    return case


# -- renderings -------------------------------------------------------------------

def _uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """Unit-variance outputs for unit-variance inputs: U(-a, a) with a = sqrt(3 / fan_in)."""
    a = math.sqrt(3.0 / max(fan_in, 1))
    return rng.uniform(-a, a, shape).astype(np.float32)


ONNX_ACTIVATIONS = {"relu": ("Relu", {}), "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}),
                    "leaky_relu": ("LeakyRelu", {"alpha": 0.1})}


def symbolic_batch(case: Case) -> bool:
    """Half the ONNX cases name their batch ``N`` (a ``dim_param``), so the conversion must hold
    at every batch size; PyTorch and Keras cases get a symbolic batch by default anyway.  A
    reshape head bakes the batch into its target, so those keep it static."""
    return case.render == "onnx" and case.head != "reshape" and zlib.crc32(repr(case).encode()) % 2 == 0


def onnx_model(case: Case):
    """The case as an ``onnx.ModelProto`` with seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(case.seed)
    nodes, inits = [], []
    x = "x"
    shapes = case.shapes()
    for i, layer in enumerate(case.layers):
        c = shapes[i][0]
        y = f"y{i}"
        attrs = {"kernel_shape": list(layer.kernel), "strides": list(layer.stride)}
        if layer.padding == "explicit":
            attrs["pads"] = list(layer.pads)
        else:
            attrs["auto_pad"] = layer.padding.upper()
        if layer.op in CONV_OPS:
            attrs.update(dilations=list(layer.dilation), group=layer.groups)
            if layer.op == "conv":
                w_shape = (layer.filters, c // layer.groups, *layer.kernel)
                fan_in = c // layer.groups * math.prod(layer.kernel)
            else:
                w_shape = (c, layer.filters // layer.groups, *layer.kernel)
                fan_in = c // layer.groups * math.prod(layer.kernel)
                if any(layer.output_padding):
                    attrs["output_padding"] = list(layer.output_padding)
            inits.append(numpy_helper.from_array(_uniform(rng, w_shape, fan_in), f"w{i}"))
            inputs = [x, f"w{i}"]
            if layer.bias:
                inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, layer.filters).astype(np.float32), f"b{i}"))
                inputs.append(f"b{i}")
            nodes.append(helper.make_node("Conv" if layer.op == "conv" else "ConvTranspose", inputs, [y],
                                          name=f"{layer.op}{i}", **attrs))
        else:
            if any(d != 1 for d in layer.dilation):
                attrs["dilations"] = list(layer.dilation)
            if layer.ceil_mode:
                attrs["ceil_mode"] = 1
            if layer.op == "avgpool":
                attrs["count_include_pad"] = int(layer.count_include_pad)
            nodes.append(helper.make_node("MaxPool" if layer.op == "maxpool" else "AveragePool", [x], [y],
                                          name=f"{layer.op}{i}", **attrs))
        if layer.activation != "none":
            op_type, kw = ONNX_ACTIVATIONS[layer.activation]
            nodes.append(helper.make_node(op_type, [y], [f"a{i}"], name=f"act{i}", **kw))
            y = f"a{i}"
        x = y
    if case.head != "none":
        c, sizes = shapes[-1]
        features = c * math.prod(sizes)
        w = _uniform(rng, (case.units, features), features)
        b = rng.uniform(-0.5, 0.5, case.units).astype(np.float32)
        if case.head == "flatten":
            nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
            inits += [numpy_helper.from_array(w, "dense_w"), numpy_helper.from_array(b, "dense_b")]
            nodes.append(helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["out"], transB=1))
        else:
            inits += [numpy_helper.from_array(np.array([case.batch, -1], np.int64), "flat_shape"),
                      numpy_helper.from_array(np.ascontiguousarray(w.T), "dense_w"),
                      numpy_helper.from_array(b, "dense_b")]
            nodes.append(helper.make_node("Reshape", [x, "flat_shape"], ["flat"]))
            nodes.append(helper.make_node("MatMul", ["flat", "dense_w"], ["mm"]))
            nodes.append(helper.make_node("Add", ["mm", "dense_b"], ["out"]))
        x = "out"
    c, sizes = shapes[-1]
    batch = "N" if symbolic_batch(case) else case.batch
    out_shape = [batch, case.units] if case.head != "none" else [batch, c, *sizes]
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *case.input_shape()[1:]])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8 if case.opset <= 18 else 9
    # No full_check: ONNX shape inference ignores the ceil_mode rule that drops a last window
    # starting in the end padding; onnxruntime (the referee) and out_sizes() apply it.
    onnx.checker.check_model(model)
    return model


def keras_model(case: Case):
    """The case as a functional ``keras.Model`` (channels-last) with seeded weights."""
    from pipeline.quiet import import_tensorflow

    _, keras = import_tensorflow()
    L = keras.layers
    x = keras.Input(shape=case.input_shape()[1:], batch_size=case.batch, name="x")
    y = x
    for i, layer in enumerate(case.layers):
        nd = case.rank
        common = dict(strides=layer.stride, padding=layer.padding, name=f"{layer.op}{i}")
        if layer.op == "conv":
            common.update(dilation_rate=layer.dilation, use_bias=layer.bias)
            if layer.kind == "depthwise":
                y = getattr(L, f"DepthwiseConv{nd}D")(layer.kernel, depth_multiplier=layer.depth_multiplier, **common)(y)
            elif layer.kind == "separable":
                y = getattr(L, f"SeparableConv{nd}D")(layer.filters, layer.kernel,
                                                      depth_multiplier=layer.depth_multiplier, **common)(y)
            else:
                y = getattr(L, f"Conv{nd}D")(layer.filters, layer.kernel, groups=layer.groups, **common)(y)
        elif layer.op == "convT":
            y = getattr(L, f"Conv{nd}DTranspose")(layer.filters, layer.kernel, use_bias=layer.bias,
                                                  output_padding=layer.output_padding or None, **common)(y)
        else:
            kind = "Max" if layer.op == "maxpool" else "Average"
            y = getattr(L, f"{kind}Pooling{nd}D")(pool_size=layer.kernel, **common)(y)
        if layer.activation == "leaky_relu":
            y = L.LeakyReLU(negative_slope=0.1, name=f"act{i}")(y)
        elif layer.activation != "none":
            y = L.Activation(layer.activation, name=f"act{i}")(y)
    if case.head != "none":
        y = L.Flatten(name="flatten")(y) if case.head == "flatten" else L.Reshape((-1,), name="reshape")(y)
        y = L.Dense(case.units, name="dense")(y)
    model = keras.Model(x, y)
    rng = np.random.default_rng(case.seed)
    for layer in model.layers:
        values = []
        for var in layer.weights:
            shape = tuple(var.shape)
            fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 0
            if len(shape) > 1 and ("Depthwise" in type(layer).__name__ or "depthwise" in var.path):
                fan_in = math.prod(shape[:-2])
            values.append(_uniform(rng, shape, fan_in) if fan_in else rng.uniform(-0.5, 0.5, shape).astype(np.float32))
        if values:
            layer.set_weights(values)
    return model


def torch_model(case: Case):
    """The case as an ``nn.Module`` (channels-first) with seeded weights."""
    from pipeline.quiet import import_torch

    torch = import_torch()
    nn = torch.nn
    torch.manual_seed(case.seed)
    shapes = case.shapes()
    mods, pads = [], []
    nd = case.rank
    for i, layer in enumerate(case.layers):
        c = shapes[i][0]
        pad = None
        padding = 0
        if layer.padding == "same":
            padding = "same"
        elif layer.padding == "pad_layer":
            # F.pad takes (begin, end) pairs from the last axis backwards
            pad = []
            for a in reversed(range(nd)):
                pad += [layer.pads[a], layer.pads[nd + a]]
            pad = (tuple(pad), 0.0)  # zeros: a -inf pad makes all-padding windows (inf, nan) for a ceil_mode pool
        elif layer.pads:
            padding = tuple(layer.pads[:nd])
        if layer.op == "conv":
            mod = getattr(nn, f"Conv{nd}d")(c, layer.filters, layer.kernel, stride=layer.stride, padding=padding,
                                            dilation=layer.dilation, groups=layer.groups, bias=layer.bias,
                                            padding_mode=layer.padding_mode)
        elif layer.op == "convT":
            mod = getattr(nn, f"ConvTranspose{nd}d")(c, layer.filters, layer.kernel, stride=layer.stride,
                                                     padding=padding, output_padding=layer.output_padding,
                                                     groups=layer.groups, bias=layer.bias, dilation=layer.dilation)
        elif layer.op == "maxpool":
            mod = getattr(nn, f"MaxPool{nd}d")(layer.kernel, stride=layer.stride, padding=padding,
                                               dilation=layer.dilation, ceil_mode=layer.ceil_mode)
        else:
            mod = getattr(nn, f"AvgPool{nd}d")(layer.kernel, stride=layer.stride, padding=padding,
                                               ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)
        if layer.activation != "none":
            act = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                   "leaky_relu": nn.LeakyReLU(0.1)}[layer.activation]
            mod = nn.Sequential(mod, act)
        mods.append(mod)
        pads.append(pad)
    dense = None
    if case.head != "none":
        c, sizes = shapes[-1]
        dense = nn.Linear(c * math.prod(sizes), case.units)
    return _torch_net_class()(mods, pads, case.head, dense).eval()


_NET_CLASS: list = []


def _torch_net_class():
    """``FuzzNet``, defined on first use so importing this module does not import torch."""
    if _NET_CLASS:
        return _NET_CLASS[0]
    import torch
    import torch.nn.functional as F

    class FuzzNet(torch.nn.Module):
        """Layers in order, each optionally preceded by an explicit ``F.pad``; optional dense head."""

        def __init__(self, mods, pads, head, dense):
            super().__init__()
            self.layers = torch.nn.ModuleList(mods)
            self.pads = pads
            self.head = head
            self.dense = dense

        def forward(self, x):
            for pad, mod in zip(self.pads, self.layers):
                if pad is not None:
                    x = F.pad(x, pad[0], value=pad[1])
                x = mod(x)
            if self.head == "flatten":
                x = torch.flatten(x, 1)
            elif self.head == "reshape":
                x = x.reshape(x.shape[0], -1)
            if self.dense is not None:
                x = self.dense(x)
            return x

    _NET_CLASS.append(FuzzNet)
    return FuzzNet


# -- running a case ----------------------------------------------------------------

_CURRENT: dict = {}


def current_model():
    """Factory resolved by the pipeline as ``MODEL=<this module>:current_model``."""
    return _CURRENT["model"]


@dataclass
class Verdict:
    """The outcome of one conversion of a case: pass, refused (exit 3), mismatch or crash."""

    source: str
    target: str
    status: str  # pass | known_gap (an excused exit 3) | refused (any other exit 3) | mismatch | crash
    exit_code: int
    max_abs_err: float | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "known_gap")


@dataclass
class Outcome:
    case: Case
    verdicts: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def describe(self) -> str:
        lines = [repr(self.case)]
        for v in self.verdicts:
            err = "" if v.max_abs_err is None else f" max_abs_err={v.max_abs_err:.3g}"
            lines.append(f"  {v.source} -> {v.target}: {v.status} (exit {v.exit_code}){err} {v.reason}".rstrip())
        return "\n".join(lines)


def _refusal_reasons(exc) -> str:
    ops = getattr(exc, "ops", None)
    if ops:
        return "; ".join(sorted({f"{op}: {why}" for op, _, why in ops}))
    return str(exc)


def _verdict(source: str, target: str, result) -> Verdict:
    parity = result.report["parity"]
    errors = [c["max_abs_err"] for c in parity["stages"].get("converted_vs_source", [])]
    worst = max(errors) if errors else None
    if result.exit_code == 0 and worst is not None and worst <= MAX_ABS_ERR:
        return Verdict(source, target, "pass", 0, worst)
    where = parity.get("first_divergence") or {}
    failing = [f"{k}={max((c['max_abs_err'] for c in v), default=None)}" for k, v in parity["stages"].items()
               if not all(c["passed"] for c in v)]
    reason = f"stages {', '.join(failing) or '-'}; first divergence {where.get('op_type')} {where.get('onnx_node')}"
    if parity.get("problems"):
        reason += f"; {parity['problems']}"
    return Verdict(source, target, "mismatch", result.exit_code, worst, reason)


def _convert(case: Case, target: str, model_arg: str, inputs, out: Path) -> Verdict:
    from known_gaps import excusing
    from pipeline.convert import Options, convert
    from pipeline.errors import EXIT_INTERNAL, EXIT_PARITY, EXIT_UNSUPPORTED, PipelineError

    source = case.render
    try:
        result = convert(Options(model=model_arg, to=target, out=str(out), inputs=inputs))
    except PipelineError as exc:
        if exc.exit_code == EXIT_UNSUPPORTED:
            reason = _refusal_reasons(exc)
            gap = excusing(case, reason)
            if gap is not None:
                return Verdict(source, target, "known_gap", exc.exit_code, reason=f"[{gap.id}] {reason}")
            return Verdict(source, target, "refused", exc.exit_code, reason=reason)
        if exc.exit_code == EXIT_PARITY:  # a normalize pass changed results under onnxruntime
            return Verdict(source, target, "mismatch", exc.exit_code, reason=f"{type(exc).__name__}: {str(exc)[:400]}")
        return Verdict(source, target, "crash", exc.exit_code, reason=f"{type(exc).__name__}: {str(exc)[:400]}")
    except Exception as exc:  # a bug: the CLI would exit 4
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(tb.filename).name}:{tb.lineno}"
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        return Verdict(source, target, "crash", EXIT_INTERNAL, reason=f"{type(exc).__name__} at {where}: {text[:400]}")
    finally:
        for leftover in (out, out.with_name(out.name + ".failed")):
            shutil.rmtree(leftover, ignore_errors=True)
    return _verdict(source, target, result)


def _forget_generated_modules() -> None:
    """Drop the generated ``model.py`` modules the pipeline imported, and their cached
    source lines (memory stays flat over thousands of cases)."""
    import linecache

    for name in [n for n in sys.modules if n.startswith(("_pipeline_converted", "_pipeline_generated", "_pipeline_user"))]:
        del sys.modules[name]
    linecache.clearcache()


_KERAS_BUILDS = [0]


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for ``run_case``, removed when the process exits (made at import by
    the fuzz test modules, which pytest and every worker that imports them load)."""
    import atexit
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def run_case(case: Case, workdir: Path) -> Outcome:
    """Build ``case`` in its rendering and convert it to every target; never raises."""
    from pipeline.spec import InputSpec, Symbol

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(case)
    shape = tuple(case.input_shape())
    inputs = [InputSpec.of("x", (Symbol("N", shape[0]), *shape[1:])) if symbolic_batch(case) else InputSpec("x", shape)]
    try:
        if case.render == "onnx":
            import onnx

            path = workdir / "case.onnx"
            onnx.save(onnx_model(case), str(path))
            model_arg = str(path)
        else:
            _CURRENT["model"] = keras_model(case) if case.render == "keras" else torch_model(case)
            model_arg = f"{__name__}:current_model"
    except Exception as exc:
        for target in TARGETS[case.render]:
            outcome.verdicts.append(Verdict(case.render, target, "crash", 4,
                                            reason=f"building the case failed: {type(exc).__name__}: {str(exc)[:300]}"))
        return outcome
    try:
        for target in TARGETS[case.render]:
            outcome.verdicts.append(_convert(case, target, model_arg, inputs, workdir / f"out_{target}"))
    finally:
        _CURRENT.clear()
        _forget_generated_modules()
        if "keras" in (case.render, *TARGETS[case.render]):
            _KERAS_BUILDS[0] += 1
            if _KERAS_BUILDS[0] % 50 == 0:
                from pipeline.quiet import import_tensorflow

                import_tensorflow()[1].backend.clear_session()
    return outcome
