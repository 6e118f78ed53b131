"""Convolutions: Conv in 1-D, 2-D and 3-D (ConvTranspose is in ``conv_transpose.py``).

The reader here (``read_conv``) serves both: it reads the attributes every opset gives
(``auto_pad`` is already explicit ``pads`` after normalize's ExplicitPads when shapes are
static), the weight and the bias.  A constant weight becomes a native layer
(``nn.ConvNd`` / ``layers.ConvND``); a weight or bias computed at run time (or a graph
input) the functional form (``F.convNd`` / ``keras.ops.conv``), the kernel transposed at
run time for Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register


@dataclass
class ConvPlan:
    """What a Conv or ConvTranspose node computes, for every target.

    ``w`` is the constant ONNX weight (``(Cout, Cin/group, k...)`` for Conv, ``(Cin,
    Cout/group, k...)`` for ConvTranspose), None when it is computed at run time (input 1);
    ``b`` the constant bias (None: no bias, or an all-zero one); ``b_input`` True when the
    bias is computed at run time (input 2).
    """

    nd: int
    group: int
    kernel: list[int]
    strides: list[int]
    dil: list[int]
    pads: list[int]
    w: np.ndarray | None
    b: np.ndarray | None
    b_input: bool = False
    outpad: list[int] | None = None  # ConvTranspose only
    same: str | None = None  # "SAME_UPPER"/"SAME_LOWER" left for run time: a strided axis whose size varies

    @property
    def functional(self) -> bool:
        """Whether an operand is a run-time tensor, so no layer with fixed weights can hold it."""
        return self.w is None or self.b_input

    @property
    def has_bias(self) -> bool:
        return self.b is not None or self.b_input

    def weight_shape(self, t: Translation) -> tuple[int, ...]:
        return tuple(self.w.shape) if self.w is not None else tuple(t.shape(1))


def read_conv(t: Translation, what: str) -> ConvPlan:
    """The plan of a Conv or ConvTranspose node (``what`` names it in refusals)."""
    w = t.const(1)
    wshape = tuple(w.shape) if w is not None else tuple(t.shape(1))
    nd = len(wshape) - 2
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D {what}")
    b, b_input = None, False
    if t.has_input(2):
        b = t.const(2)
        if b is None:
            b_input = True
        elif not np.any(b):
            b = None  # exporters emit a zero bias for bias=False
    auto_pad, same = t.str("auto_pad", "NOTSET"), None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and what == "convolution":
        same = auto_pad  # normalize's ExplicitPads made every size-independent case explicit
    elif auto_pad not in ("NOTSET", "VALID"):
        t.unsupported(f"auto_pad={auto_pad} over sizes that vary")
    pads = [0] * (2 * nd) if auto_pad != "NOTSET" else t.ints("pads", [0] * (2 * nd))
    return ConvPlan(nd=nd, group=t.int("group", 1), kernel=list(wshape[2:]), strides=t.ints("strides", [1] * nd),
                    dil=t.ints("dilations", [1] * nd), pads=pads, w=w, b=b, b_input=b_input, same=same)


def torch_operands(t: Translation, p: ConvPlan, hint: str) -> tuple[str, str]:
    """The weight and bias of a functional PyTorch convolution: run-time tensors, or buffers."""
    w = t.inp(1) if p.w is None else T.buffer(t, hint + "_weight", p.w)
    if p.b_input:
        return w, t.inp(2)
    return w, "None" if p.b is None else T.buffer(t, hint + "_bias", p.b)


def keras_kernel(t: Translation, p: ConvPlan) -> str:
    """The ONNX weight as a Keras kernel ``(k..., second axis, first axis)``: transposed at run
    time when it is a tensor, while generating when it is a constant."""
    perm = (*range(2, 2 + p.nd), 1, 0)
    if p.w is None:
        return f"ops.transpose({t.inp(1)}, {perm})"
    return K.new_constant(t, p.w.transpose(*perm), "kernel")


def keras_bias(t: Translation, p: ConvPlan) -> str | None:
    """The bias as a Keras operand (a run-time tensor or a constant), None without one."""
    if p.b_input:
        return t.inp(2)
    return None if p.b is None else K.new_constant(t, p.b.astype(np.float32), "bias")


def conv_padding(pads, kernel, strides, dilations):
    """(``padding=`` text or None, explicit (begin, end) pairs for a pad module or None).

    Symmetric pads become ``padding=``; asymmetric ones (TF "same" with an even
    kernel or a stride) an explicit ``nn.ZeroPadNd`` before the conv.  PyTorch's
    ``padding="same"`` would be exact for stride 1 too, but it warns at run time
    that it copies the input for even kernels, and it hides where the odd pixel goes.
    """
    nd = len(kernel)
    begins, ends = pads[:nd], pads[nd:]
    if begins == ends:
        return (None if not any(begins) else T.tuple_or_int(begins)), None
    return None, list(zip(begins, ends))


def assign_subsampled(t: Translation, expr: str, strides: list[int] | None) -> None:
    """``expr`` (channels-last), keeping every ``strides[i]``-th position of spatial axis i if given."""
    if strides is None:
        t.assign(expr)
        return
    full = t.gen.names.take(t.layer_hint() + "_stride1")
    t.gen.emit(f"{full} = {expr}", f"stride 1: Keras has no strided dilated convolution; strides {tuple(strides)} next")
    steps = ", ".join(f"::{s}" if s != 1 else ":" for s in strides)
    t.assign(f"{full}[:, {steps}, :]")


def _torch_options(p: ConvPlan, padding: str | None) -> list[str]:
    """The keyword arguments ``nn.ConvNd`` and ``F.convNd`` share, where not their defaults."""
    opts = [f"stride={T.tuple_or_int(p.strides)}"] if any(s != 1 for s in p.strides) else []
    if padding is not None:
        opts.append(f"padding={padding}")
    if any(d != 1 for d in p.dil):
        opts.append(f"dilation={T.tuple_or_int(p.dil)}")
    if p.group != 1:
        opts.append(f"groups={p.group}")
    return opts


@register
class Conv(Op):
    """``y[n, o] = b[o] + sum over the group's input channels and the kernel of w * x``, over
    ``x`` zero-padded by ``pads``, with ``strides`` and ``dilations``."""

    types = ("Conv",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> ConvPlan:
        p = read_conv(t, "convolution")
        if any(v < 0 for v in p.pads):
            t.unsupported(f"negative pads {p.pads}")
        return p

    def torch(self, t: Translation, p: ConvPlan) -> None:
        nd, wshape = p.nd, p.weight_shape(t)
        in_ch, out_ch = wshape[1] * p.group, wshape[0]
        x = t.inp(0)
        padding, pairs = conv_padding(p.pads, p.kernel, p.strides, p.dil)
        if pairs is not None:
            x = T.pad_first(t, x, pairs, nd)
        if p.same:  # with a stride, "same" pads by an amount that depends on the size
            t.gen.helpers.add("same_padding")
            x = (f"same_padding({x}, {tuple(p.kernel)}, {tuple(p.strides)}, {tuple(p.dil)}"
                 f"{', upper=False' if p.same == 'SAME_LOWER' else ''})")
        if p.functional:
            self._torch_functional(t, p, x, padding)
            return
        args = [str(in_ch), str(out_ch), f"kernel_size={T.tuple_or_int(p.kernel)}", *_torch_options(p, padding)]
        if p.b is None:
            args.append("bias=False")
        mod = T.module(t, f"nn.Conv{nd}d({', '.join(args)})", {"weight": p.w, "bias": p.b})
        t.assign(f"self.{mod}({x})")

    @staticmethod
    def _torch_functional(t: Translation, p: ConvPlan, x: str, padding: str | None) -> None:
        """``F.convNd``: the weight (or bias) is a tensor the graph computes."""
        w, b = torch_operands(t, p, T.hint(t))
        args = [x, w, b, *_torch_options(p, padding)]
        t.assign(f"F.conv{p.nd}d({', '.join(args)})", comment="the weight is computed at run time")

    def keras(self, t: Translation, p: ConvPlan) -> None:
        K.channels_last(t)
        nd, kernel, group = p.nd, p.kernel, p.group
        strides, dil = p.strides, p.dil
        wshape = p.weight_shape(t)
        subsample = None
        if any(s > 1 for s in strides) and any(d > 1 for d in dil):
            # Keras refuses strides with dilation: the stride-1 dilated convolution, then every
            # s-th output — output i of the strided one is output i * s of the stride-1 one
            subsample, strides = strides, [1] * nd
        out_ch, in_per_group = wshape[0], wshape[1]
        in_ch = in_per_group * group
        # TF's CPU DepthwiseConv2dNative needs equal strides: otherwise a grouped Conv2D
        depthwise = (group == in_ch and in_per_group == 1 and group > 1 and nd in (1, 2) and len(set(strides)) == 1
                     and not p.functional)
        if p.same:  # TF's "same" is SAME_UPPER for every size
            k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
            if p.same == "SAME_LOWER" or subsample or (nd == 3 and any(k < s for k, s in zip(k_eff, strides))):
                t.unsupported(f"{p.same} padding over a varying size with these strides and dilations")
            padding, x = "same", t.inp(0)
        else:  # DepthwiseConv1D has no padding="causal": an explicit ZeroPadding1D instead
            padding, x = K.spatial_padding(t, t.inp(0), nd, p.pads, kernel, strides, dil,
                                           allow_causal=not depthwise and not p.functional)
        if p.functional:
            self._keras_functional(t, p, x, padding, strides, subsample)
            return
        w, b = p.w, p.b
        spatial = list(range(2, 2 + nd))
        common = [f"strides={K.tuple_or_int(strides)}"] if any(s != 1 for s in strides) else []
        if padding != "valid":
            common.append(f"padding={padding!r}")
        if any(d != 1 for d in dil):
            common.append(f"dilation_rate={K.tuple_or_int(dil)}")
        if b is None:
            common.append("use_bias=False")
        if depthwise:
            mult = out_ch // in_ch
            # ONNX output channel c*mult + m reads input channel c -> Keras kernel[..., c, m].
            kernel_w = w.reshape(in_ch, mult, *kernel).transpose(*[i + 2 for i in range(nd)], 0, 1)
            args = [K.tuple_or_int(kernel)] + ([f"depth_multiplier={mult}"] if mult != 1 else []) + common
            weights = [kernel_w] + ([b] if b is not None else [])
            assign_subsampled(t, K.layer(t, f"DepthwiseConv{nd}D", args, weights, x), subsample)
            return
        kernel_w = w.transpose(*spatial, 1, 0)
        args = [str(out_ch), K.tuple_or_int(kernel)] + common
        if group != 1:
            args.append(f"groups={group}")
        weights = [kernel_w] + ([b] if b is not None else [])
        assign_subsampled(t, K.layer(t, f"Conv{nd}D", args, weights, x), subsample)

    @staticmethod
    def _keras_functional(t: Translation, p: ConvPlan, x: str, padding: str, strides, subsample) -> None:
        """``keras.ops.conv`` on the channels-last input, the ONNX weight transposed to
        ``(k..., Cin/group, Cout)`` (TensorFlow groups by the input's channel count)."""
        opts = []
        if any(s != 1 for s in strides):
            opts.append(f"strides={K.tuple_or_int(strides)}")
        if padding != "valid":
            opts.append(f"padding={padding!r}")
        if any(d != 1 for d in p.dil):
            opts.append(f"dilation_rate={K.tuple_or_int(p.dil)}")
        kernel = keras_kernel(t, p)
        if p.group == 1:
            expr = f"ops.conv({', '.join([x, kernel] + opts)})"
        else:  # keras.ops.conv wants the kernel's input channels to be the input's: one call per group
            cin, cout = p.weight_shape(t)[1], p.weight_shape(t)[0] // p.group
            parts = t.gen.names.take(t.layer_hint() + "_groups")
            call = (f"ops.conv({x}[..., g * {cin}:(g + 1) * {cin}], {kernel}[..., g * {cout}:(g + 1) * {cout}]"
                    f"{''.join(', ' + o for o in opts)})")
            t.gen.emit(f"{parts} = [{call} for g in range({p.group})]", f"{p.group} groups, one convolution each")
            expr = f"ops.concatenate({parts}, axis=-1)"
        bias = keras_bias(t, p)
        if bias is not None:  # (C,) on the channels-last output's last axis, as bias_add puts it
            expr = f"ops.add({expr}, {bias})"
        if subsample is None:
            t.assign(expr, comment="the weight is computed at run time")
        else:
            assign_subsampled(t, expr, subsample)
