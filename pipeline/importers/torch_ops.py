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
from .codegen import Translation, embedding_lookup, layout_note, plan_gather_nd, py_literal, registry, shape_literal

OPS, register = registry()

from .torch_emit import DTYPE_NAMES  # noqa: E402,F401 (to_torch reads it here until the op families land)
from .torch_emit import buffer as _buffer  # noqa: E402
from .torch_emit import hint as _hint  # noqa: E402
from .torch_emit import np_dtype as _np_dtype  # noqa: E402
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


def _linear(t: Translation, weight_oi: np.ndarray, bias: np.ndarray | None, x: str, out_node=None) -> None:
    out_f, in_f = weight_oi.shape
    args = [str(in_f), str(out_f)] + ([] if bias is not None else ["bias=False"])
    mod = _module(t, f"nn.Linear({', '.join(args)})", {"weight": weight_oi, "bias": bias})
    if out_node is None:
        t.assign(f"self.{mod}({x})")
    else:
        name = t.gen.var(out_node.outputs[0])
        t.gen.emit(f"{name} = self.{mod}({x})")
        t.absorb(out_node, name)


def _linear_nd(node):
    """``Reshape(x, (-1, K)) -> MatMul(W) -> Reshape(back)``: a Linear on ``x`` itself.

    tf2onnx writes a Keras Dense on an N-D input this way; ``nn.Linear`` acts on
    the last axis of any tensor, so the two reshapes disappear.  Returns the
    original input and the reshape back, or None.
    """
    w = const_array(node.inputs[1]) if node.op_type == "MatMul" else None
    flat = node.inputs[0].producer()
    if w is None or w.ndim != 2 or flat is None or flat.op_type != "Reshape":
        return None
    if len(flat.outputs[0].consumers()) != 1 or flat.outputs[0].is_graph_output():
        return None
    x = flat.inputs[0]
    shape, flat_shape = static_shape(x), static_shape(flat.outputs[0])
    if shape is None or len(shape) < 3 or shape[-1] != w.shape[0]:
        return None
    if flat_shape != (int(np.prod(shape[:-1])), w.shape[0]):
        return None
    users = node.outputs[0].consumers()
    if len(users) != 1 or node.outputs[0].is_graph_output() or users[0].op_type != "Reshape":
        return None
    if static_shape(users[0].outputs[0]) != tuple(shape[:-1]) + (w.shape[1],):
        return None
    return x, users[0]


@register("MatMul")
def matmul(t: Translation) -> None:
    w = t.const(1)
    nd = _linear_nd(t.node)
    if nd is not None:
        x, back = nd
        bias, add = t.following_bias(w.shape[1], back)
        _linear(t, np.ascontiguousarray(w.T), bias, t.gen.expr(x), add or back)
        if add is not None:
            t.absorb(back, t.gen.values[add.outputs[0]])
        return
    if w is not None and w.ndim == 2 and t.const(0) is None:
        bias, add = t.following_bias(w.shape[1])
        _linear(t, np.ascontiguousarray(w.T), bias, t.inp(0), add)
        return
    t.assign(f"torch.matmul({t.inp(0)}, {t.inp(1)})")


@register("Gemm")
def gemm(t: Translation) -> None:
    alpha, beta = t.float("alpha", 1.0), t.float("beta", 1.0)
    ta, tb = t.int("transA", 0), t.int("transB", 0)
    w = t.const(1)
    c = t.const(2) if t.has_input(2) else None
    if w is not None and alpha == 1.0 and not ta and (not t.has_input(2) or (c is not None and beta == 1.0)):
        weight = w if tb else w.T
        bias = None if c is None else np.broadcast_to(c, (weight.shape[0],)).astype(np.float32)
        _linear(t, np.ascontiguousarray(weight), bias, t.inp(0))
        return
    a = f"{t.inp(0)}.T" if ta else t.inp(0)
    b = f"{t.inp(1)}.T" if tb else t.inp(1)
    expr = f"torch.matmul({a}, {b})"
    if alpha != 1.0:
        expr = f"{py_literal(np.float32(alpha))} * {expr}"
    if t.has_input(2):
        cexpr = t.inp(2) if beta == 1.0 else f"{py_literal(np.float32(beta))} * {t.inp(2)}"
        expr = f"{expr} + {cexpr}"
    t.assign(expr)


@register("Transpose")
def transpose(t: Translation) -> None:
    perm = t.ints("perm") or list(reversed(range(len(t.shape(0)))))
    t.assign(f"{t.inp(0)}.permute{tuple(perm)}", comment=layout_note(t.node, perm))


@register("Reshape")
def reshape(t: Translation) -> None:
    users = t.node.outputs[0].consumers()
    if len(users) == 1 and (_linear_nd(users[0]) is not None or _group_norm_of(users[0]) is not None):
        t.alias(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")  # unused: the Linear/GroupNorm takes the N-D input
        return
    t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Flatten")
def flatten(t: Translation) -> None:
    axis = t.int("axis", 1)
    if axis == 1:
        t.assign(f"torch.flatten({t.inp(0)}, 1)")
    else:
        t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Squeeze", "Unsqueeze")
def squeeze(t: Translation) -> None:
    t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Concat")
def concat(t: Translation) -> None:
    parts = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"torch.cat([{parts}], dim={t.int('axis')})")


@register("Split")
def split(t: Translation) -> None:
    axis = t.int("axis", 0)
    sizes = [s[axis] for s in (t.out_shape(j) for j in range(len(t.node.outputs)))]
    names = ", ".join(t.out(j) for j in range(len(t.node.outputs)))
    t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = torch.split({t.inp(0)}, {list(sizes)}, dim={axis})")


@register("Slice")
def slice_(t: Translation) -> None:
    shape = t.shape(0)
    index = [":"] * len(shape)
    for a, start, stop, step in t.slice_bounds():
        index[a] = f"{start or ''}:{stop if stop != shape[a] else ''}" + (f":{step}" if step != 1 else "")
    while index and index[-1] == ":":
        index.pop()
    t.assign(f"{t.inp(0)}[{', '.join(index) or '...'}]")


@register("Gather")
def gather(t: Translation) -> None:
    axis = t.int("axis", 0) % len(t.shape(0))
    idx = t.const(1)
    lead = ", ".join([":"] * axis)
    prefix = f"{lead}, " if lead else ""
    if idx is not None and idx.ndim == 0:
        t.assign(f"{t.inp(0)}[{prefix}{int(idx) % t.shape(0)[axis]}]")
        return
    table = embedding_lookup(t)
    if table is not None:
        mod = _module(t, f"nn.Embedding({table.shape[0]}, {table.shape[1]})", {"weight": table})
        t.assign(f"self.{mod}({t.inp(1)})")
        return
    t.assign(f"torch.index_select({t.inp(0)}, {axis}, {t.inp(1)}.reshape(-1)).reshape{_shape_args(t.out_shape())}")


@register("GatherElements")
def gather_elements(t: Translation) -> None:
    """``torch.gather``, which like ONNX lets the indices be shorter than the data on the other
    axes; negative indices (ONNX counts them from the end) are wrapped first."""
    shape = t.const_shape(0)
    axis = t.int("axis", 0) % len(shape)
    idx = t.const(1)
    if idx is not None:
        index = _buffer(t, _hint(t) + "_index", np.where(idx < 0, idx + shape[axis], idx).astype(np.int64))
    else:
        i = f"{t.inp(1)}.long()"
        index = f"torch.where({i} < 0, {i} + {shape[axis]}, {i})"
    t.assign(f"torch.gather({t.inp(0)}, {axis}, {index})")


@register("GatherND")
def gather_nd(t: Translation) -> None:
    """One index into ``data`` flattened over the indexed (and batch) axes (see ``codegen.GatherND``)."""
    plan = plan_gather_nd(t)
    data = f"{t.inp(0)}.reshape{_shape_args(plan.data_shape)}"
    if plan.linear is not None:
        t.assign(f"{data}[{_buffer(t, _hint(t) + '_index', plan.linear)}]")
        return
    i = f"{t.inp(1)}.long()"
    i = f"torch.where({i} < 0, {i} + torch.tensor({plan.dims}), {i})"
    linear = f"({i} * torch.tensor({plan.strides})).sum(-1)"
    if plan.batch_dims:
        linear = f"{linear} + {_buffer(t, _hint(t) + '_offset', plan.offset)}"
    t.assign(f"{data}[{linear}]")


@register("ReduceProd")
def reduce_prod(t: Translation) -> None:
    """``torch.prod`` takes one axis: one product per axis, from the last."""
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    keep = bool(t.int("keepdims", 1))
    expr = t.inp(0)
    for d in reversed(dims):
        expr = f"{expr}.prod(dim={d}, keepdim={keep})"
    t.assign(expr)


_REDUCE = {
    "ReduceMean": "{x}.mean(dim={d}, keepdim={k})", "ReduceSum": "{x}.sum(dim={d}, keepdim={k})",
    "ReduceMax": "{x}.amax(dim={d}, keepdim={k})", "ReduceMin": "{x}.amin(dim={d}, keepdim={k})",
    "ReduceL2": "torch.linalg.vector_norm({x}, 2, dim={d}, keepdim={k})",
    "ReduceL1": "torch.linalg.vector_norm({x}, 1, dim={d}, keepdim={k})",
    "ReduceSumSquare": "({x} * {x}).sum(dim={d}, keepdim={k})",
    "ReduceLogSumExp": "torch.logsumexp({x}, dim={d}, keepdim={k})",
}


@register(*_REDUCE)
def reduce(t: Translation) -> None:
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    t.assign(_REDUCE[t.op].format(x=t.inp(0), d=tuple(dims), k=bool(t.int("keepdims", 1))))


@register("Pad")
def pad(t: Translation) -> None:
    mode = t.str("mode", "constant")
    pads = t.need_const(1, "pads").tolist()
    rank = len(t.shape(0))
    value = t.const(2) if t.has_input(2) else None
    axes = t.const(3).tolist() if t.has_input(3) else list(range(rank))
    pairs = {a % rank: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    first = min((a for a, p in pairs.items() if any(p)), default=rank - 1)
    order = []
    for a in range(rank - 1, first - 1, -1):
        order += list(pairs.get(a, (0, 0)))
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    extra = ""
    if torch_mode == "constant" and value is not None and float(value) != 0.0:
        extra = f", value={py_literal(value)}"
    elif torch_mode != "constant":
        extra = f", mode='{torch_mode}'"
    t.assign(f"F.pad({t.inp(0)}, {tuple(int(v) for v in order)}{extra})")


@register("Expand")
def expand(t: Translation) -> None:
    t.assign(f"{t.inp(0)}.expand{shape_literal(t.out_shape())}")


@register("Tile")
def tile(t: Translation) -> None:
    reps = t.need_const(1, "repeats").tolist()
    t.assign(f"{t.inp(0)}.repeat{shape_literal(reps)}")


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


@register("Einsum")
def einsum(t: Translation) -> None:
    eq = t.str("equation")
    operands = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"torch.einsum({eq!r}, {operands})")


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


@register("DepthToSpace")
def depth_to_space(t: Translation) -> None:
    """``nn.PixelShuffle`` for CRD order; TensorFlow's DCR order as reshape/permute."""
    n, c, h, w = t.shape(0)
    bs, mode = t.int("blocksize"), t.str("mode", "DCR")
    if mode == "CRD":
        t.assign(f"self.{_module(t, f'nn.PixelShuffle({bs})')}({t.inp(0)})")
        return
    c_out = c // (bs * bs)
    t.assign(f"{t.inp(0)}.reshape({n}, {bs}, {bs}, {c_out}, {h}, {w}).permute(0, 3, 4, 1, 5, 2)"
             f".reshape({n}, {c_out}, {h * bs}, {w * bs})",
             comment="depth to space, DCR order (nn.PixelShuffle is CRD)")


@register("SpaceToDepth")
def space_to_depth(t: Translation) -> None:
    """ONNX orders the output channels ``(b1 * block + b2) * C + c``; ``nn.PixelUnshuffle`` ``c * block**2 + ...``."""
    n, c, h, w = t.shape(0)
    bs = t.int("blocksize")
    t.assign(f"{t.inp(0)}.reshape({n}, {c}, {h // bs}, {bs}, {w // bs}, {bs}).permute(0, 3, 5, 1, 2, 4)"
             f".reshape({n}, {c * bs * bs}, {h // bs}, {w // bs})",
             comment="space to depth (nn.PixelUnshuffle orders channels differently)")


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


def _axis_pad(axis: int, rank: int, before: int) -> tuple[int, ...]:
    """``F.pad`` widths that add ``before`` elements at the start of ``axis`` only."""
    return (0, 0) * (rank - 1 - axis) + (before, 0)


@register("ArgMax", "ArgMin")
def arg_extreme(t: Translation) -> None:
    """``torch.argmax`` / ``argmin`` (first index of ties); ``select_last_index`` searches the flipped axis."""
    rank = len(t.shape(0))
    axis = t.int("axis", 0) % rank
    keep = bool(t.int("keepdims", 1))
    fn = "torch.argmax" if t.op == "ArgMax" else "torch.argmin"
    if t.int("select_last_index", 0):
        last = t.shape(0)[axis] - 1
        t.assign(f"{last} - {fn}({t.inp(0)}.flip({axis}), dim={axis}, keepdim={keep})", comment="last index of ties")
    else:
        t.assign(f"{fn}({t.inp(0)}, dim={axis}, keepdim={keep})")


@register("CumSum")
def cumsum(t: Translation) -> None:
    """``torch.cumsum``; ``reverse`` flips around it, ``exclusive`` shifts the input one step along the axis."""
    shape = t.shape(0)
    rank = len(shape)
    axis = int(t.need_const(1, "the axis").reshape(-1)[0]) % rank
    x = f"{t.inp(0)}.flip({axis})" if t.int("reverse", 0) else t.inp(0)
    if t.int("exclusive", 0):
        x = f"F.pad({x}.narrow({axis}, 0, {shape[axis] - 1}), {_axis_pad(axis, rank, 1)})"
    dtype = DTYPE_NAMES.get(t.out_dtype().value)
    keep_int = np.issubdtype(_np_dtype(t), np.integer) and dtype != "torch.int64"
    expr = f"torch.cumsum({x}, dim={axis}{f', dtype={dtype}' if keep_int else ''})"  # torch sums ints as int64
    t.assign(f"{expr}.flip({axis})" if t.int("reverse", 0) else expr)


@register("TopK")
def topk(t: Translation) -> None:
    """``torch.topk``: values and int64 indices (``sorted=0`` leaves the order to the implementation)."""
    k = int(t.need_const(1, "K").reshape(-1)[0])
    rank = len(t.shape(0))
    axis = t.int("axis", -1) % rank
    args = [t.inp(0), str(k), f"dim={axis}"] + ([] if t.int("largest", 1) else ["largest=False"])
    args += [] if t.int("sorted", 1) else ["sorted=False"]
    t.gen.emit(f"{t.out(0)}, {t.out(1)} = torch.topk({', '.join(args)})")


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
