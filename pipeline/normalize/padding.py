"""``auto_pad`` -> explicit ``pads``, computed from the static input shape.

After this pass no Conv/ConvTranspose/pool carries ``SAME_UPPER``,
``SAME_LOWER`` or ``VALID``: every importer sees exact begin/end numbers and
decides for itself how to express them (symmetric padding, "same", or an
explicit pad layer).  Formulas follow the ONNX operator specification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .graph import const_array, static_shape

PADDED_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "ConvInteger", "QLinearConv"}


def kernel_shape(node: ir.Node) -> list[int] | None:
    k = node.attributes.get_ints("kernel_shape")
    if k is not None:
        return list(k)
    if node.op_type in ("Conv", "ConvTranspose") and len(node.inputs) > 1:
        w = node.inputs[1]
        shape = static_shape(w)
        if shape is None:
            arr = const_array(w)
            shape = None if arr is None else arr.shape
        return None if shape is None else list(shape[2:])
    return None


def same_pads(in_sizes, kernel, strides, dilations, upper: bool) -> list[int]:
    """TF/ONNX SAME padding for a forward conv or pool, as [begins..., ends...]."""
    begins, ends = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def same_pads_transpose(in_sizes, kernel, strides, dilations, output_padding, upper: bool) -> list[int]:
    """SAME for ConvTranspose: output = input * stride (ONNX spec)."""
    begins, ends = [], []
    for n, k, s, d, op in zip(in_sizes, kernel, strides, dilations, output_padding):
        total = max(s * (n - 1) + op + (k - 1) * d + 1 - n * s, 0)
        small, large = total // 2, total - total // 2
        # Unlike the forward case the spec puts the odd pixel at the *end* for
        # SAME_UPPER: pads[start] = total // 2, pads[end] = total - total // 2.
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def pads_for_output_shape(in_sizes, kernel, strides, dilations, output_padding, out_sizes, upper: bool):
    """ConvTranspose with ``output_shape``: (pads, output_padding) giving that shape, or None.

    ONNX spec: total = s*(n-1) + output_padding + (k-1)*d + 1 - out; SAME_UPPER puts
    total // 2 at the start, anything else (SAME_LOWER, NOTSET) puts it at the end.  A
    negative total (the output is *larger* than the full convolution) is extra
    output_padding, as long as that stays below the stride or dilation.
    """
    begins, ends, outpad = [], [], []
    for n, k, s, d, op, out in zip(in_sizes, kernel, strides, dilations, output_padding, out_sizes):
        total = s * (n - 1) + op + (k - 1) * d + 1 - out
        if total < 0:
            if op - total >= max(s, d):
                return None
            begins.append(0)
            ends.append(0)
            outpad.append(op - total)
            continue
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
        outpad.append(op)
    return begins + ends, outpad


def valid_counts(in_sizes, kernel, strides, begins, out_sizes, dilations=None) -> np.ndarray:
    """Per output position of a pool, how many input (not padding) elements its window
    covers, shaped ``(1, 1, *out_sizes)``: the divisor of a mean that excludes padding."""
    dilations = dilations or [1] * len(kernel)
    total = np.ones((1, 1) + (1,) * len(in_sizes), np.float32)
    for axis, (n, k, s, bg, o, d) in enumerate(zip(in_sizes, kernel, strides, begins, out_sizes, dilations)):
        taps = (np.arange(o) * s - bg)[:, None] + np.arange(k)[None, :] * d
        count = ((taps >= 0) & (taps < n)).sum(axis=1)
        view = [1] * (len(in_sizes) + 2)
        view[axis + 2] = o
        total = total * count.astype(np.float32).reshape(view)
    return total


def mean_divisor(in_sizes, kernel, strides, dilations, pads, out_sizes, include_pad: bool) -> np.ndarray:
    """What each window of an average pool divides by, shaped ``(1, 1, *out_sizes)``: the taps
    inside the input, or with ``include_pad`` inside the input and its padding ``pads`` (the
    node's own, not the overhang of ceil_mode's last windows, which neither side counts)."""
    nd = len(kernel)
    if include_pad:  # in coordinates where the padded input starts at 0
        sizes = [n + b + e for n, b, e in zip(in_sizes, pads[:nd], pads[nd:])]
        return valid_counts(sizes, kernel, strides, [0] * nd, out_sizes, dilations)
    return valid_counts(in_sizes, kernel, strides, pads[:nd], out_sizes, dilations)


@dataclass
class TapPool:
    """A (dilated) pool as one padding of the input, then per spatial axis a reduction over
    the ``kernel[i]`` strided slices ``dilations[i]`` apart, each ``spans[i]`` long: what a
    target without dilated pooling layers writes.  ``divisor`` (averages) is the number of
    taps each window counts, shaped ``(1, 1, *out_sizes)``."""

    pads: list[int]  # begins + ends, ceil_mode's windows included
    extents: list[int]
    spans: list[int]  # first to last window start, inclusive, in the padded input
    out_sizes: list[int]
    divisor: np.ndarray | None
    kernel: list[int]
    strides: list[int]
    dilations: list[int]

    def axes(self):
        """``(axis, name, k, s, d, extent, span)`` for each spatial axis that needs a reduction."""
        names = {1: ["length"], 2: ["height", "width"], 3: ["depth", "height", "width"]}[len(self.kernel)]
        for axis, (k, s, d, extent, span) in enumerate(zip(self.kernel, self.strides, self.dilations, self.extents,
                                                             self.spans)):
            if k != 1 or s != 1:
                yield axis, names[axis], k, s, d, extent, span


def tap_pool(in_sizes, kernel, strides, dilations, pads, ceil: bool, average: bool, include_pad: bool) -> TapPool:
    nd = len(kernel)
    counted = list(pads)
    if ceil:
        pads = list(pads[:nd]) + ceil_end_pads(in_sizes, kernel, strides, dilations, pads)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    sizes = [n + b + e for n, b, e in zip(in_sizes, pads[:nd], pads[nd:])]
    out_sizes = [(n - x) // s + 1 for n, x, s in zip(sizes, extents, strides)]
    spans = [(o - 1) * s + 1 for o, s in zip(out_sizes, strides)]
    divisor = mean_divisor(in_sizes, kernel, strides, dilations, counted, out_sizes, include_pad) if average else None
    return TapPool(list(pads), extents, spans, out_sizes, divisor, list(kernel), list(strides), list(dilations))


def pool_len(n: int, k: int, s: int, begin: int, end: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of an ONNX pool on one axis.  With ``ceil``, a last window that would
    start inside the end padding is dropped (onnxruntime and PyTorch; ONNX shape inference
    keeps it)."""
    span = n + begin + end - ((k - 1) * d + 1)
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + begin:
        out -= 1
    return out


def ceil_end_pads(in_sizes, kernel, strides, dilations, pads) -> list[int]:
    """End pads with which floor-mode pooling has the windows of ``ceil_mode=1``.

    ceil mode adds one window on an axis whose span does not divide by the stride,
    unless that window would start inside the end padding: onnxruntime and PyTorch drop
    it, ONNX shape inference does not (it infers one element too many).  Where the
    window stays, the end pad grows to hold it.
    """
    nd = len(kernel)
    ends = list(pads[nd:])
    for i, (n, k, s, d) in enumerate(zip(in_sizes, kernel, strides, dilations)):
        k_eff = (k - 1) * d + 1
        span = n + pads[i] + pads[nd + i] - k_eff
        if span >= 0 and span % s and (span // s + 1) * s < n + pads[i]:
            ends[i] = (span // s + 1) * s + k_eff - n - pads[i]
    return ends


def spatial_sizes(value: ir.Value | None) -> list[int] | None:
    """The sizes after batch and channels (``N, C, *spatial``) when each is known, else None:
    what a convolution's or pool's padding and output length depend on."""
    if value is None or value.shape is None or len(value.shape) < 3:
        return None
    sizes = list(value.shape)[2:]
    return sizes if all(isinstance(d, int) for d in sizes) else None

def drop_ceil_mode(node: ir.Node) -> bool:
    """``ceil_mode=1`` -> 0 on an explicitly padded pool, the same windows kept.

    Exact when ceil mode adds no window, and when the extra windows become end padding
    that the pool ignores (MaxPool, AveragePool without count_include_pad) and that
    onnxruntime accepts (each pad below the kernel).  Shape inference is right after it.
    """
    if node.op_type not in ("MaxPool", "AveragePool") or not node.attributes.get_int("ceil_mode", 0):
        return False
    if node.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
        return False
    kernel, sizes = kernel_shape(node), spatial_sizes(node.inputs[0])
    if kernel is None or sizes is None:
        return False
    n = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * n))
    dilations = list(node.attributes.get_ints("dilations", [1] * n))
    pads = list(node.attributes.get_ints("pads", [0] * (2 * n)))
    ends = ceil_end_pads(sizes, kernel, strides, dilations, pads)
    if ends != pads[n:]:
        counts_pad = node.op_type == "AveragePool" and node.attributes.get_int("count_include_pad", 0)
        if counts_pad or any(e >= k for e, k in zip(ends, kernel)):
            return False
        node.attributes["pads"] = ir.AttrInt64s("pads", pads[:n] + ends)
    node.attributes["ceil_mode"] = ir.AttrInt64("ceil_mode", 0)
    return True


class ExplicitPads(ir.passes.InPlacePass):
    """Rewrite every ``auto_pad`` into explicit ``pads``; refuse nothing silently.

    ``ceil_mode`` is turned into end padding where that is exact, so shape inference
    (which misses the rule that drops a window starting in the end padding) stays right.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in model.graph:
            if node.op_type not in PADDED_OPS or node.domain != "":
                continue
            changed |= drop_ceil_mode(node)
            mode = node.attributes.get_string("auto_pad", "NOTSET")
            out_shape = node.attributes.get_ints("output_shape") if node.op_type == "ConvTranspose" else None
            if mode == "NOTSET" and out_shape is None:
                continue
            kernel = kernel_shape(node)
            sizes = spatial_sizes(node.inputs[0])  # the batch and channels may vary: pads do not see them
            if kernel is not None and sizes is None and mode != "VALID" and out_shape is None:
                changed |= _same_without_sizes(node, kernel, mode)
                continue
            if kernel is None or sizes is None:
                continue  # left for the importer to report
            n = len(kernel)
            strides = list(node.attributes.get_ints("strides", [1] * n))
            dilations = list(node.attributes.get_ints("dilations", [1] * n))
            if mode == "VALID":
                pads = [0] * (2 * n)
            elif out_shape is not None:
                outpad = list(node.attributes.get_ints("output_padding", [0] * n))
                found = pads_for_output_shape(sizes, kernel, strides, dilations, outpad, list(out_shape)[-n:],
                                              mode == "SAME_UPPER")
                if found is None:
                    continue  # left for the importer to report
                pads, outpad = found
                del node.attributes["output_shape"]
                node.attributes["output_padding"] = ir.AttrInt64s("output_padding", outpad)
            elif node.op_type == "ConvTranspose":
                outpad = list(node.attributes.get_ints("output_padding", [0] * n))
                pads = same_pads_transpose(sizes, kernel, strides, dilations, outpad, mode == "SAME_UPPER")
            else:
                pads = same_pads(sizes, kernel, strides, dilations, mode == "SAME_UPPER")
            node.attributes["auto_pad"] = ir.AttrString("auto_pad", "NOTSET")
            node.attributes["pads"] = ir.AttrInt64s("pads", pads)
            changed = True
        return ir.passes.PassResult(model, changed)


def _same_without_sizes(node: ir.Node, kernel: list[int], mode: str) -> bool:
    """``"same"`` padding over sizes that vary: explicit where no axis' padding depends on its
    size, i.e. every axis is static or has stride 1 (then the total is ``(k - 1) * d``);
    otherwise ``auto_pad`` stays and the importer pads at run time.  Not for ConvTranspose."""
    if node.op_type == "ConvTranspose" or node.inputs[0].shape is None:
        return False
    n = len(kernel)
    sizes = list(node.inputs[0].shape)[2:]
    strides = list(node.attributes.get_ints("strides", [1] * n))
    dilations = list(node.attributes.get_ints("dilations", [1] * n))
    if len(sizes) != n or not all(isinstance(m, int) or s == 1 for m, s in zip(sizes, strides)):
        return False
    known = [m if isinstance(m, int) else 1 for m in sizes]  # stride 1: any size pads alike
    node.attributes["auto_pad"] = ir.AttrString("auto_pad", "NOTSET")
    node.attributes["pads"] = ir.AttrInt64s("pads", same_pads(known, kernel, strides, dilations, mode == "SAME_UPPER"))
    return True
