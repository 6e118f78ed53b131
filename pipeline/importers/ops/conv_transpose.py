"""ConvTranspose in 1-D, 2-D and 3-D: the gradient of a Conv, each input pixel scattering
the kernel onto a ``stride``-spaced output grid.

Per spatial axis ONNX keeps ``[pads_begin, full + output_padding - pads_end)`` of the
full transposed convolution (length ``(n - 1) * s + (k - 1) * d + 1``); negative pads, as
tf2onnx writes for Keras' ``output_padding``, extend it with positions that hold only the
bias.  ``output_shape`` and ``auto_pad`` are made explicit pads by normalize's
ExplicitPads when shapes are static.
"""

from __future__ import annotations

import numpy as np

from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register
from .conv import ConvPlan, keras_bias, read_conv, torch_operands


def transpose_padding(begins, ends, outpad, strides, dilations):
    """ONNX ConvTranspose (pads, output_padding) -> PyTorch (padding, output_padding, crop pairs).

    Per axis ONNX keeps ``[b, full + op - e)`` of the full transposed convolution
    (negative pads, as tf2onnx writes for Keras ``output_padding``, extend it).
    PyTorch keeps ``[p, full + op_t - p)`` with ``op_t < max(stride, dilation)``;
    whatever PyTorch keeps beyond ONNX is cropped from the output.  None if a
    begin pad is negative or the extension needs too much output_padding.
    """
    padding, out_pad, crop = [], [], []
    for b, e, op, s, d in zip(begins, ends, outpad, strides, dilations):
        net_end = e - op  # what ONNX removes at the end, net of its output_padding
        limit = max(s, d)
        p = max(0, min(b, net_end + limit - 1))
        op_t = max(0, p - net_end)
        if b < 0 or op_t >= limit:
            return None
        padding.append(p)
        out_pad.append(op_t)
        crop.append((b - p, op_t - p + net_end))
    return padding, out_pad, crop


def _crop_index(crop) -> str:
    """``[:, :, 1:, :-1]`` for (begin, end) crops of the spatial axes of an NC... tensor."""
    parts = [":", ":"] + [f"{bg or ''}:{-en if en else ''}" for bg, en in crop]
    while parts[-1] == ":":
        parts.pop()
    return ", ".join(parts)


def _zero_dilated(w: np.ndarray, dil: list[int]) -> np.ndarray:
    """The kernel ``w`` (channels first, then k...) with ``d - 1`` zeros between taps on each axis.

    Spread this way, an undilated convolution (transposed or not) computes exactly what the
    dilated one computes with ``w``: the zero taps add nothing."""
    spread = np.zeros(w.shape[:2] + tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dil)), dtype=w.dtype)
    spread[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dil)] = w
    return spread


@register
class ConvTranspose(Op):
    types = ("ConvTranspose",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> ConvPlan:
        p = read_conv(t, "transposed convolution")
        if t.ints("output_shape") is not None:
            t.unsupported("ConvTranspose with output_shape")
        p.outpad = t.ints("output_padding", [0] * p.nd)
        return p

    # -- PyTorch ----------------------------------------------------------------
    def torch(self, t: Translation, p: ConvPlan) -> None:
        nd, pads, wshape = p.nd, p.pads, p.weight_shape(t)
        in_ch, out_ch = wshape[0], wshape[1] * p.group
        crop = []
        reshape_full = None  # F.pad pairs (negative crops) from PyTorch's full output to ONNX's
        found = transpose_padding(pads[:nd], pads[nd:], p.outpad, p.strides, p.dil)
        if found is None:
            # a negative begin pad (tf2onnx, Keras "same" with a kernel shorter than the stride) or
            # more extension than output_padding allows: ONNX keeps [b, full + op - e) of the
            # full output, positions beyond it holding the bias only
            found = [0] * nd, [0] * nd, []
            reshape_full = [(-bg, op - en) for bg, en, op in zip(pads[:nd], pads[nd:], p.outpad)]
        padding, out_pad, crop = found
        opts = []
        if any(s != 1 for s in p.strides):
            opts.append(f"stride={T.tuple_or_int(p.strides)}")
        if any(padding):
            opts.append(f"padding={T.tuple_or_int(padding)}")
        if any(out_pad):
            opts.append(f"output_padding={T.tuple_or_int(out_pad)}")
        hint = T.hint(t)
        late_bias = None  # the bias, when it goes on after the window: (expression, or a constant)
        if p.functional:
            w, b = torch_operands(t, p, hint)
            if reshape_full is not None and b != "None":
                late_bias, b = (b if p.b_input else None, p.b), "None"
            if p.group != 1:
                opts.append(f"groups={p.group}")
            if any(d != 1 for d in p.dil):
                opts.append(f"dilation={T.tuple_or_int(p.dil)}")
            call = f"F.conv_transpose{nd}d({', '.join([t.inp(0), w, b] + opts)})"
            name = hint
        else:
            args = [str(in_ch), str(out_ch), f"kernel_size={T.tuple_or_int(p.kernel)}"] + opts
            if any(d != 1 for d in p.dil):
                args.append(f"dilation={T.tuple_or_int(p.dil)}")
            if p.group != 1:
                args.append(f"groups={p.group}")
            if p.b is None or reshape_full is not None:
                args.append("bias=False")
            name = T.module(t, f"nn.ConvTranspose{nd}d({', '.join(args)})",
                            {"weight": p.w, "bias": None if reshape_full else p.b})
            call = f"self.{name}({t.inp(0)})"
            if reshape_full is not None and p.b is not None:
                late_bias = (None, p.b)
        if reshape_full is not None:
            y = t.gen.names.take(name + "_full")
            t.gen.emit(f"{y} = {call}")
            expr = f"F.pad({y}, {T.pad_order(reshape_full)})"
            if late_bias is not None:
                tensor, const = late_bias
                shape = (1, -1) + (1,) * nd
                bias = f"{tensor}.reshape({shape})" if tensor else T.buffer(t, name + "_bias", const.reshape(shape))
                expr = f"{expr} + {bias}"
            t.assign(expr, comment="ONNX's output window of the full transposed convolution: zeros beyond it, then the bias")
        elif any(c for pair in crop for c in pair):
            y = t.gen.names.take(name + "_full")
            t.gen.emit(f"{y} = {call}")
            t.assign(f"{y}[{_crop_index(crop)}]", comment="asymmetric padding: crop the extra end")
        else:
            t.assign(call)

    # -- Keras ------------------------------------------------------------------
    def keras(self, t: Translation, p: ConvPlan) -> None:
        K.channels_last(t)
        if p.functional:
            self._keras_functional(t, p)
            return
        nd, group, w, b = p.nd, p.group, p.w, p.b
        kernel, strides, dil = list(p.kernel), p.strides, p.dil
        if any(d != 1 for d in dil):  # Keras refuses it with strides > 1, TF's CPU kernels always
            w, kernel = _zero_dilated(w, dil), [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
            t.gen.emit(f"# {t.layer_hint()}: dilation {tuple(dil)} written into the kernel as zeros "
                       f"(TensorFlow's CPU kernels have no dilated transposed convolution)")
            dil = [1] * nd
        begins, ends = p.pads[:nd], p.pads[nd:]
        k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        same = [k - s for k, s in zip(k_eff, strides)]  # Keras "same" crops k - s (TF: the odd one at the end)
        is_same = not any(p.outpad) and all(0 <= tot and bg == tot // 2 and en == tot - tot // 2
                                            for bg, en, tot in zip(begins, ends, same))
        # Otherwise Keras' output_padding= gives the exact length (n - 1) * s + k + output_padding
        # (without it, "valid" gives n * s when k < s); ONNX pads then crop that output.
        extra = [op - en for op, en in zip(p.outpad, ends)]  # what ONNX keeps beyond the full output
        if any(bg < 0 for bg in begins) or any(x >= s for x, s in zip(extra, strides)):
            self._window(t, w, b, group, kernel, strides, begins, extra)
            return
        keras_outpad = [max(x, 0) for x in extra]
        exact = not is_same and (any(keras_outpad) or any(k < s for k, s in zip(k_eff, strides)))
        args = [str(w.shape[1]), K.tuple_or_int(kernel)]
        if any(s != 1 for s in strides):
            args.append(f"strides={K.tuple_or_int(strides)}")
        if is_same and any(same):
            args.append("padding='same'")
        if exact:
            args.append(f"output_padding={K.tuple_or_int(keras_outpad)}")
        if b is None:
            args.append("use_bias=False")
        if group == 1:
            # ONNX (Cin, Cout, k...) -> Keras (k..., Cout, Cin)
            weights = [w.transpose(*range(2, 2 + nd), 1, 0)] + ([b] if b is not None else [])
            expr = K.layer(t, f"Conv{nd}DTranspose", args, weights, t.inp(0))
        else:
            expr = _grouped_conv_transpose(t, w, b, group, args)
        crop = [(bg, max(-x, 0)) for bg, x in zip(begins, extra)]
        if is_same or not any(c for pair in crop for c in pair):
            t.assign(expr)
            return
        full = t.gen.names.take(t.layer_hint() + "_full")
        t.gen.emit(f"{full} = {expr}")
        cropping = crop[0] if nd == 1 else tuple(crop)
        name = t.gen.add_layer(t.layer_hint() + "_crop", [])
        t.assign(f"layers.Cropping{nd}D({cropping}, name={name!r})({full})", comment="ONNX pads crop the full output")

    def _window(self, t: Translation, w, b, group: int, kernel, strides, begins, extra) -> None:
        """ONNX keeps ``[b, full + extra)`` of the full transposed convolution, beyond what Keras'
        padding and output_padding reach (a negative begin pad, or more extension than a stride):
        the layer without bias ("valid": the full output, then zeros up to ``n * s`` where the
        kernel is shorter than the stride), sliced and zero-padded to that window, then the bias."""
        nd = len(kernel)
        args = [str(w.shape[1]), K.tuple_or_int(kernel)]
        if any(s != 1 for s in strides):
            args.append(f"strides={K.tuple_or_int(strides)}")
        args.append("use_bias=False")
        if group == 1:
            expr = K.layer(t, f"Conv{nd}DTranspose", args, [w.transpose(*range(2, 2 + nd), 1, 0)], t.inp(0))
        else:
            expr = _grouped_conv_transpose(t, w, None, group, args)
        bias = None if b is None else K.new_constant(t, b.astype(np.float32), "bias")
        made = [(n - 1) * s + max(k, s) for n, k, s in zip(t.sizes(0, range(2, t.rank(0))), kernel, strides)]  # Keras' "valid" length
        self._crop_to_window(t, expr, made, kernel, strides, begins, extra, bias)

    @staticmethod
    def _crop_to_window(t: Translation, expr: str, made, kernel, strides, begins, extra, bias: str | None) -> None:
        """``expr`` is the full transposed convolution without bias (channels-last, ``made`` long
        per axis, zeros after the full length): slice and zero-pad it to ONNX's window, then add
        ``bias``.  ``kernel`` is the effective (dilated) kernel."""
        full = t.gen.names.take(t.layer_hint() + "_full")
        t.gen.emit(f"{full} = {expr}")
        sizes = t.sizes(0, range(2, t.rank(0)))
        stops = [(n - 1) * s + k + x for n, k, s, x in zip(sizes, kernel, strides, extra)]
        window = ", ".join(f"{max(bg, 0) or ''}:{min(stop, m) if stop < m else ''}"
                           for bg, stop, m in zip(begins, stops, made))
        expr = f"{full}[:, {window}, :]"
        widths = [(max(-bg, 0), max(stop - m, 0)) for bg, stop, m in zip(begins, stops, made)]
        if any(a or z for a, z in widths):
            expr = f"ops.pad({expr}, {[(0, 0)] + widths + [(0, 0)]})"
        if bias is not None:
            expr = f"ops.add({expr}, {bias})"
        t.assign(expr, comment="ONNX's output window of the full transposed convolution: zeros beyond it, then the bias")

    def _keras_functional(self, t: Translation, p: ConvPlan) -> None:
        """A weight computed at run time: no layer can hold it, and ``keras.ops.conv_transpose``
        on symbolic tensors swaps its padding and output_padding (Keras 3.15).  The full
        transposed convolution is also the convolution of the input with ``s - 1`` zeros
        between its pixels, padded by ``(k - 1) * d`` on each side, with the kernel flipped and
        its channel axes swapped: written so (per group), then cut to ONNX's window."""
        nd, shape = p.nd, t.shape(0)
        cin = shape[1] // p.group
        x = self._zero_upsampled(t, t.inp(0), shape, p.strides)
        k_eff = [(k - 1) * d + 1 for k, d in zip(p.kernel, p.dil)]
        var = t.gen.names.take(t.layer_hint() + "_padded")
        t.gen.emit(f"{var} = ops.pad({x}, {[(0, 0)] + [(k - 1, k - 1) for k in k_eff] + [(0, 0)]})")
        spatial = tuple(range(2, 2 + nd))
        if p.w is None:
            kernel = f"ops.transpose(ops.flip({t.inp(1)}, axis={spatial}), {(*spatial, 0, 1)})"
        else:
            kernel = K.new_constant(t, np.flip(p.w, spatial).transpose(*spatial, 0, 1), "kernel")
        opts = f", dilation_rate={K.tuple_or_int(p.dil)}" if any(d != 1 for d in p.dil) else ""
        if p.group == 1:
            expr = f"ops.conv({var}, {kernel}{opts})"
        else:  # kernel (k..., Cin, Cout/group): group g reads input channels g * cin.. and writes its own outputs
            parts = t.gen.names.take(t.layer_hint() + "_groups")
            t.gen.emit(f"{parts} = [ops.conv({var}[..., g * {cin}:(g + 1) * {cin}], "
                       f"{kernel}[..., g * {cin}:(g + 1) * {cin}, :]{opts}) for g in range({p.group})]",
                       f"{p.group} groups, one convolution each")
            expr = f"ops.concatenate({parts}, axis=-1)"
        made = [(n - 1) * s + k for n, s, k in zip(shape[2:], p.strides, k_eff)]
        extra = [op - en for op, en in zip(p.outpad, p.pads[nd:])]
        self._crop_to_window(t, expr, made, k_eff, p.strides, p.pads[:nd], extra, keras_bias(t, p))

    @staticmethod
    def _zero_upsampled(t: Translation, x: str, shape, strides) -> str:
        """``x`` (channels-last, ONNX ``shape``) with ``s - 1`` zeros between neighbours on each
        spatial axis: stacked with zeros on a new axis after it, merged into it, the tail cut."""
        n, c, sizes = shape[0], shape[1], list(shape[2:])
        for i, s in enumerate(strides):
            if s == 1:
                continue
            axis = i + 1
            merged = [n] + sizes[:i] + [sizes[i] * s] + sizes[i + 1:] + [c]
            var = t.gen.names.take(t.layer_hint() + "_upsampled")
            cut = ":, " * axis + f":{(sizes[i] - 1) * s + 1}"
            t.gen.emit(f"{var} = ops.reshape(ops.stack([{x}] + [ops.zeros_like({x})] * {s - 1}, axis={axis + 1}), "
                       f"{tuple(merged)})[{cut}]", f"stride {s}: zeros between the pixels of spatial axis {i}")
            x, sizes[i] = var, (sizes[i] - 1) * s + 1
        return x


def _grouped_conv_transpose(t: Translation, w: np.ndarray, b: np.ndarray | None, group: int, args: list[str]) -> str:
    """Keras has no grouped transposed convolution: one layer per group on its slice of the
    channels, concatenated in group order (ONNX output channel g * Cout/G + j is group g's j)."""
    nd = w.ndim - 2
    cin, cout = w.shape[0] // group, w.shape[1]
    base = t.gen.layer_names.take(t.layer_hint())
    for g in range(group):
        per = w[g * cin:(g + 1) * cin].transpose(*range(2, 2 + nd), 1, 0)
        weights = [per] + ([b[g * cout:(g + 1) * cout]] if b is not None else [])
        if t.gen.add_layer(f"{base}_g{g}", weights) != f"{base}_g{g}":
            t.unsupported(f"layer names {base}_g* are taken")
    parts = t.gen.names.take(t.layer_hint() + "_groups")
    name = "name=f'" + base + "_g{g}'"  # base is an identifier: no quoting needed
    call = f"layers.Conv{nd}DTranspose({', '.join(args + [name])})"
    t.gen.emit(f"{parts} = [{call}({t.inp(0)}[..., g * {cin}:(g + 1) * {cin}]) for g in range({group})]",
               f"{group} groups: Keras has no grouped transposed convolution")
    return f"ops.concatenate({parts}, axis=-1)"
