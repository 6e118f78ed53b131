"""ONNX op -> PyTorch source, one small translator per op.

Translators write native ``torch.nn`` modules where PyTorch has one (Conv,
Linear, BatchNorm, pooling, Upsample, padding) and plain tensor expressions
otherwise.  ONNX is
channels-first like PyTorch, so no layout work happens here: the normalize
passes already made every Transpose explicit.
"""

from __future__ import annotations

import re

import numpy as np

from ..normalize.graph import const_array, static_shape
from ..normalize.patterns import match_group_norm, module_name
from ..normalize.padding import pool_len, tap_pool, valid_counts
from .codegen import Translation, py_literal, registry

OPS, register = registry()

from .torch_emit import DTYPE_NAMES  # noqa: E402,F401 (to_torch reads it here until the op families land)
from .torch_emit import buffer as _buffer  # noqa: E402
from .torch_emit import hint as _hint  # noqa: E402
from .torch_emit import np_dtype as _np_dtype  # noqa: E402
from .torch_emit import pad_first as _pad_first  # noqa: E402
from .torch_emit import pad_order as torch_pad_order  # noqa: E402
from .torch_emit import shape_args as _shape_args  # noqa: E402
from .torch_emit import tuple_or_float as _tuple_or_float  # noqa: E402
from .torch_emit import tuple_or_int as _tuple_or_int  # noqa: E402


def _module(t: Translation, ctor: str, weights: dict | None = None, hint: str | None = None) -> str:
    from .torch_emit import module

    return module(t, ctor, weights, name=hint)

@register("BatchNormalization")
def batch_norm(t: Translation) -> None:
    if len([o for o in t.node.outputs if o.uses()]) > 1:
        t.unsupported("training-mode outputs")
    scale, bias, mean, var = (t.need_const(i, "statistics") for i in range(1, 5))
    rank = len(t.shape(0))
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
    if nd is None:
        t.unsupported(f"rank-{rank} input")
    eps = t.float("epsilon", 1e-5)
    c = scale.shape[0]
    weights = {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var,
               "num_batches_tracked": np.array(0, np.int64)}
    mod = _module(t, f"nn.BatchNorm{nd}d({c}, eps={py_literal(np.float32(eps))})", weights)
    t.assign(f"self.{mod}({t.inp(0)})")


@register("LayerNormalization")
def layer_norm(t: Translation) -> None:
    rank = len(t.shape(0))
    axis = t.int("axis", -1) % rank
    norm_shape = t.shape(0)[axis:]
    scale = t.need_const(1, "scale")
    bias = t.const(2) if t.has_input(2) else None
    if t.has_input(2) and bias is None:
        t.unsupported("non-constant bias")
    eps = t.float("epsilon", 1e-5)
    weights = {"weight": np.broadcast_to(scale, norm_shape).astype(np.float32)}
    args = [str(tuple(norm_shape) if len(norm_shape) > 1 else norm_shape[0]), f"eps={py_literal(np.float32(eps))}"]
    if bias is None:
        args.append("bias=False")
    else:
        weights["bias"] = np.broadcast_to(bias, norm_shape).astype(np.float32)
    mod = _module(t, f"nn.LayerNorm({', '.join(args)})", weights)
    t.assign(f"self.{mod}({t.inp(0)})")


_NEAREST = {  # (coordinate_transformation_mode, nearest_mode) -> PyTorch mode
    ("asymmetric", "floor"): "nearest",  # src = floor(dst / scale)
    ("half_pixel", "round_prefer_ceil"): "nearest-exact",  # src = floor((dst + 0.5) / scale)
    ("tf_half_pixel_for_nn", "floor"): "nearest-exact",
}
_LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}


@register("Resize", "Upsample")
def resize(t: Translation) -> None:
    shape, out = t.shape(0), t.out_shape()
    rank = len(shape)
    if rank not in (3, 4, 5) or tuple(out[:2]) != tuple(shape[:2]):
        t.unsupported("resizing other axes than the spatial ones of an (N, C, ...) tensor")
    if t.ints("axes") is not None and sorted(a % rank for a in t.ints("axes")) != list(range(2, rank)):
        t.unsupported("Resize axes other than the spatial ones")
    if t.str("keep_aspect_ratio_policy", "stretch") != "stretch":
        t.unsupported("keep_aspect_ratio_policy")
    mode = t.str("mode", "nearest")
    old_style = t.op == "Upsample" or len(t.node.inputs) == 2  # Upsample, Resize-10: (X, scales), asymmetric
    coord = t.str("coordinate_transformation_mode", "asymmetric" if old_style else "half_pixel")
    scales_at = 1 if old_style else 2
    scales = t.const(scales_at) if t.has_input(scales_at) else None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and not (t.has_input(3) and t.const(3) is not None):
        t.unsupported("scales or sizes must be constants")
    spatial_scales = None if scales is None else [float(v) for v in scales.reshape(-1)[-(rank - 2):]]
    if spatial_scales is not None:
        products = [n * sc for n, sc in zip(shape[2:], spatial_scales)]
        integral = all(sc.is_integer() for sc in spatial_scales)
        if not integral and all(abs(p - o) < 1e-3 for p, o in zip(products, out[2:])):
            spatial_scales = None  # the scales are float32 roundings of out / in: say the size
        elif any(int(p) != o for p, o in zip(products, out[2:])):
            t.unsupported("scales that do not give the output shape")
    if t.int("antialias", 0) and any(o < n for n, o in zip(shape[2:], out[2:])):
        t.unsupported("antialiased downscaling")
    args = []
    if mode == "nearest":
        rounding = t.str("nearest_mode", "round_prefer_floor")
        torch_mode = _NEAREST.get((coord, rounding))
        if torch_mode is None:
            t.unsupported(f"nearest resize with {coord} coordinates and {rounding} rounding")
    elif mode in ("linear", "cubic"):
        if mode == "cubic" and (rank != 4 or abs(t.float("cubic_coeff_a", -0.75) + 0.75) > 1e-6
                                or t.int("exclude_outside", 0)):
            t.unsupported("cubic resize other than PyTorch's (2-D, a=-0.75, exclude_outside=0)")
        torch_mode = _LINEAR[rank] if mode == "linear" else "bicubic"
        if coord == "align_corners":
            args.append("align_corners=True")
        elif not (coord == "half_pixel" or (coord == "pytorch_half_pixel" and min(out[2:]) > 1)):
            t.unsupported(f"{mode} resize with {coord} coordinates")
    else:
        t.unsupported(f"resize mode {mode}")
    if spatial_scales is not None:  # PyTorch then maps coordinates with 1 / scale, as ONNX does
        size = f"scale_factor={_tuple_or_float(spatial_scales)}"
    else:
        size = f"size={_tuple_or_int(out[2:])}"
    args = [size, f'mode="{torch_mode}"', *args]
    mod = _module(t, f"nn.Upsample({', '.join(args)})")
    t.assign(f"self.{mod}({t.inp(0)})")


# -- DepthToSpace, SpaceToDepth, LRN, GroupNormalization, InstanceNormalization ----------------


@register("LRN")
def lrn(t: Translation) -> None:
    """``nn.LocalResponseNorm``: the same window and formula for odd sizes (onnxruntime runs no other)."""
    size = t.int("size")
    if size % 2 == 0:
        t.unsupported("LRN of an even size (PyTorch centres the window one channel earlier than ONNX)")
    alpha, beta, k = (py_literal(np.float32(t.float(a, d))) for a, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    args = [str(size), f"alpha={alpha}", f"beta={beta}", f"k={k}"]
    mod = _module(t, f"nn.LocalResponseNorm({', '.join(args)})")
    t.assign(f"self.{mod}({t.inp(0)})")


@register("GroupNormalization")
def group_norm(t: Translation) -> None:
    groups, channels = t.int("num_groups"), t.shape(0)[1]
    scale, bias = t.need_const(1, "scale").astype(np.float32), t.need_const(2, "bias").astype(np.float32)
    if scale.shape[0] != channels:  # before opset 21: one scale and bias per group
        scale, bias = np.repeat(scale, channels // groups), np.repeat(bias, channels // groups)
    eps = py_literal(np.float32(t.float("epsilon", 1e-5)))
    mod = _module(t, f"nn.GroupNorm({groups}, {channels}, eps={eps})", {"weight": scale, "bias": bias})
    t.assign(f"self.{mod}({t.inp(0)})")


def _group_norm_of(node):
    """The exported ``nn.GroupNorm`` pattern ``node`` (an InstanceNormalization on a Reshape) belongs to, or None."""
    m = match_group_norm(node) if node.op_type == "InstanceNormalization" else None
    return m if m is not None and m.nodes[0].op_type == "Reshape" else None


@register("InstanceNormalization")
def instance_norm(t: Translation) -> None:
    """``nn.GroupNorm`` for PyTorch's exported group norm, else ``nn.InstanceNormNd``.

    A per-channel Mul/Add after it is folded into the module's weight and bias.
    """
    m = match_group_norm(t.node)
    rank = len(t.shape(0))
    if m is None:
        scale, bias = t.need_const(1, "scale"), t.need_const(2, "bias")
        if rank not in (3, 4, 5):
            t.unsupported(f"rank-{rank} instance normalization")
        m_scale, m_bias, x, absorbed = scale, bias, t.inp(0), []
        ctor = f"nn.InstanceNorm{rank - 2}d({scale.shape[0]}, eps={{eps}}, affine=True)"
    else:
        x_shape = static_shape(m.x)
        channels, nd = x_shape[1], len(x_shape) - 2
        m_scale, m_bias, x = m.scale, m.bias, t.gen.expr(m.x)
        absorbed = m.nodes[m.nodes.index(t.node) + 1:]
        if m.nodes[0] is t.node and nd in (1, 2, 3):
            ctor = f"nn.InstanceNorm{nd}d({channels}, eps={{eps}}, affine=True)"
        else:
            ctor = f"nn.GroupNorm({m.groups}, {channels}, eps={{eps}})"
    eps = py_literal(np.float32(t.float("epsilon", 1e-5)))
    hint = (module_name(absorbed[-1]) if absorbed else None) or module_name(t.node)
    mod = _module(t, ctor.format(eps=eps), {"weight": m_scale, "bias": m_bias}, hint=hint)
    if not absorbed:
        t.assign(f"self.{mod}({x})")
        return
    name = t.gen.var(absorbed[-1].outputs[0])
    t.gen.emit(f"{name} = self.{mod}({x})")
    for node in absorbed:
        t.absorb(node, name)


# -- ArgMax / ArgMin, CumSum, TopK, ReverseSequence, LSTM / GRU ------------------------------------


@register("ReverseSequence")
def reverse_sequence(t: Translation) -> None:
    """Full-length sequences only: a flip of the time axis."""
    time_axis = t.int("time_axis", 0)
    lens = t.const(1)
    if lens is None or np.any(lens != t.shape(0)[time_axis]):
        t.unsupported("sequence lengths shorter than the time axis (only a full reversal is supported)")
    t.assign(f"{t.inp(0)}.flip({time_axis})")


def _rnn_state(rnn, order: list[int]) -> dict:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict entries for one layer, gate blocks in PyTorch's order."""
    from .rnn import gate_blocks

    state = {}
    for d in range(rnn.dirs):
        sfx = "_reverse" if d else ""
        state[f"weight_ih_l0{sfx}"] = gate_blocks(rnn.w[d], order)
        state[f"weight_hh_l0{sfx}"] = gate_blocks(rnn.r[d], order)
        if rnn.wb is not None:
            state[f"bias_ih_l0{sfx}"] = gate_blocks(rnn.wb[d], order)
            state[f"bias_hh_l0{sfx}"] = gate_blocks(rnn.rb[d], order)
    return state


def _rnn_hint(t: Translation) -> str:
    return re.sub(r"__\d+$", "", _hint(t)).lower() or t.op.lower()


@register("LSTM", "GRU", "RNN")
def recurrent(t: Translation) -> None:
    """One ONNX LSTM/GRU/RNN node -> a one-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (ONNX stacks
    layers as separate nodes).

    ``direction="reverse"`` runs the forward module on the flipped sequence and flips its output back.
    """
    from .rnn import TORCH_ORDERS, direction_squeeze, joined_directions, read_recurrent, used

    rnn = read_recurrent(t)
    if rnn.kind == "GRU" and not rnn.linear_before_reset:
        t.unsupported("GRU with linear_before_reset=0 (nn.GRU applies the reset gate after the recurrent matmul)")
    state = _rnn_state(rnn, TORCH_ORDERS[rnn.kind])
    args = [str(rnn.features), str(rnn.hidden)] + (["bias=False"] if rnn.wb is None else [])
    args += ["bidirectional=True"] if rnn.dirs == 2 else []
    mod = _module(t, f"nn.{rnn.kind}({', '.join(args)})", state, hint=_rnn_hint(t))
    reverse = rnn.direction == "reverse"
    x = f"{t.inp(0)}.flip(0)" if reverse else t.inp(0)
    outs = list(t.node.outputs) + [None] * 3
    want_y, want_h, want_c = used(outs[0]), used(outs[1]), rnn.kind == "LSTM" and used(outs[2])
    seq = t.gen.names.take(mod + "_out") if want_y else "_"
    h = t.gen.names.take(mod + "_h") if want_h else "_"
    c = t.gen.names.take(mod + "_c") if want_c else "_"
    states = (f"({h}, {c})" if want_h or want_c else "_") if rnn.kind == "LSTM" else h
    t.gen.emit(f"{seq}, {states} = self.{mod}({x})")
    if want_y:
        y = f"{seq}.flip(0)" if reverse else seq
        squeeze = direction_squeeze(t) if rnn.dirs == 1 else None
        joined = joined_directions(t) if rnn.dirs == 2 else None
        if joined is not None:  # read back as (T, N, 2H): PyTorch's own shape
            t.absorb(t.only_consumer(0), seq)
            t.absorb(joined, seq)
        elif squeeze is not None and not reverse:  # read back as (T, N, H): PyTorch's own shape
            t.absorb(squeeze, seq)
        elif squeeze is not None:
            name = t.gen.var(squeeze.outputs[0])
            t.gen.emit(f"{name} = {y}")
            t.absorb(squeeze, name)
        elif rnn.dirs == 1:  # (T, N, H) -> (T, 1, N, H)
            t.assign(f"{y}.unsqueeze(1)", 0)
        else:  # (T, N, 2*H) -> (T, 2, N, H)
            t.assign(f"{y}.reshape({rnn.steps}, {rnn.batch}, 2, {rnn.hidden}).permute(0, 2, 1, 3)", 0)
    for j, name in ((1, h), (2, c)):  # PyTorch's states are (D, N, H), as ONNX's
        if name != "_":
            t.alias(name, j)


@register("Loop", "Scan")
def loop(t: Translation) -> None:
    """No native module is recovered from a control-flow loop: refuse with the reason."""
    from .rnn import LOOP_REFUSAL

    t.unsupported(LOOP_REFUSAL)
