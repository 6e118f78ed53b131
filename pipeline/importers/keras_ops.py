"""ONNX op -> Keras 3 source, one small translator per op.

Layout-sensitive ops (Conv, pooling, BatchNormalization, ...) arrive wrapped
by the ``ChannelsLast`` pass as ``T_pin(cl->cf) -> op -> T_pin(cf->cl)``.  The
pinned transposes are not emitted: their outputs alias their inputs, so the
Keras layer reads and writes channels-last tensors, as Keras layers do.
Everything else maps to ``keras.ops`` on the tensors as they are.
"""

from __future__ import annotations

import numpy as np

from ..normalize.graph import PIN_IN, PIN_OUT, const_array, pin_role, static_shape
from ..normalize.patterns import match_group_norm, module_name
from .codegen import Translation, embedding_lookup, layout_note, plan_gather_nd, py_literal, registry, shape_literal

OPS, register = registry()

from .keras_emit import KERAS_DTYPES  # noqa: E402,F401 (to_keras reads it here until the op families land)
from .keras_emit import add as _add  # noqa: E402
from .keras_emit import channels_last as _channels_last  # noqa: E402
from .keras_emit import new_constant as _new_constant  # noqa: E402
from .keras_emit import tf_3d_same_shifts as _tf_3d_same_shifts  # noqa: E402,F401
from .keras_emit import tuple_or_int as _ints  # noqa: E402


def _layer(t: Translation, cls: str, args: list[str], weights: list | None, x: str, hint: str | None = None) -> str:
    from .keras_emit import layer

    return layer(t, cls, args, weights, x, name=hint)

@register("Transpose")
def transpose(t: Translation) -> None:
    role = pin_role(t.node)
    if role in (PIN_IN, PIN_OUT):
        t.alias(t.inp(0))  # the wrapped op works channels-last: no data movement
        return
    perm = t.ints("perm") or list(reversed(range(len(t.shape(0)))))
    t.assign(f"ops.transpose({t.inp(0)}, {tuple(perm)})", comment=layout_note(t.node, perm))


@register("Resize")
def resize(t: Translation) -> None:
    _channels_last(t)
    mode = t.str("mode", "nearest")
    coord = t.str("coordinate_transformation_mode", "half_pixel")
    in_shape, out_shape = t.shape(0), t.out_shape()
    nd = len(in_shape) - 2
    spatial_in, spatial_out = in_shape[2:], out_shape[2:]
    x = t.inp(0)
    if mode == "nearest":
        if t.str("nearest_mode", "round_prefer_floor") != "floor" or coord != "asymmetric":
            t.unsupported(f"nearest resize with {coord}/{t.str('nearest_mode', 'round_prefer_floor')}")
        if any(o % i for o, i in zip(spatial_out, spatial_in)):
            t.unsupported("nearest resize by a non-integer factor")
        size = [o // i for o, i in zip(spatial_out, spatial_in)]
        t.assign(_layer(t, f"UpSampling{nd}D", [_ints(size) if nd > 1 else str(size[0])], None, x))
        return
    if mode == "linear" and nd == 2 and coord in ("half_pixel", "pytorch_half_pixel"):
        if coord == "pytorch_half_pixel" and any(o == 1 for o in spatial_out):
            t.unsupported("pytorch_half_pixel resize to size 1")
        if t.float("cubic_coeff_a", -0.75) and t.int("antialias", 0):
            t.unsupported("antialiased resize")
        if all(o % i == 0 for o, i in zip(spatial_out, spatial_in)):
            size = [o // i for o, i in zip(spatial_out, spatial_in)]
            t.assign(_layer(t, "UpSampling2D", [_ints(size), "interpolation='bilinear'"], None, x))
        else:
            t.assign(_layer(t, "Resizing", [str(spatial_out[0]), str(spatial_out[1]), "interpolation='bilinear'"], None, x))
        return
    if mode == "linear" and coord in _MATRIX_COORDS and not t.int("antialias", 0):
        _resize_by_matrices(t, coord, x)  # no Keras layer resizes so: exact interpolation weights instead
        return
    t.unsupported(f"{mode} resize with {coord} coordinates in {nd}-D")


_MATRIX_COORDS = ("align_corners", "asymmetric", "half_pixel", "pytorch_half_pixel")


def linear_resize_matrix(n_in: int, n_out: int, coord: str, scale: float) -> np.ndarray:
    """``(n_out, n_in)`` weights of ONNX linear Resize along one axis (the spec's coordinate formulas).

    ``align_corners``: ``x = o * (n_in - 1) / (n_out - 1)``; ``asymmetric``: ``x = o / scale``;
    ``half_pixel``: ``x = (o + 0.5) / scale - 0.5`` (``pytorch_half_pixel``: 0 for one output); ``x`` is
    clamped to ``[0, n_in - 1]`` and split between its two neighbours.
    """
    o = np.arange(n_out, dtype=np.float64)
    if coord == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    elif coord == "asymmetric":
        src = o / scale
    elif coord == "pytorch_half_pixel" and n_out == 1:
        src = np.zeros(n_out)
    else:
        src = (o + 0.5) / scale - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights.astype(np.float32)


def _resize_by_matrices(t: Translation, coord: str, x: str) -> None:
    """Linear resize of a channels-last ``(N, *spatial, C)`` tensor: one interpolation matrix per axis."""
    spatial_in, spatial_out = t.shape(0)[2:], t.out_shape()[2:]
    scales = t.const(2) if t.has_input(2) else None
    letters = "dhw"[-len(spatial_in):] if len(spatial_in) <= 3 else None
    if letters is None:
        t.unsupported(f"linear resize in {len(spatial_in)}-D")
    for k, (n_in, n_out) in enumerate(zip(spatial_in, spatial_out)):
        given = scales is not None and scales.size  # else ONNX scales by out / in, as sizes say
        scale = float(scales.reshape(-1)[-len(spatial_in):][k]) if given else n_out / n_in
        weights = linear_resize_matrix(n_in, n_out, coord, scale)
        if weights.shape[0] == weights.shape[1] and np.array_equal(weights, np.eye(n_in, dtype=np.float32)):
            continue
        a = letters[k]
        new = {"d": "e", "h": "p", "w": "q"}[a]  # the resized axis (Keras einsum wants lowercase letters)
        eq = f"{new}{a},n{letters}c->n{letters.replace(a, new)}c"
        matrix = _new_constant(t, weights, f"{a}_weights")
        var = t.gen.names.take(f"{t.layer_hint()}_{a}")
        axis_name = {"d": "depth", "h": "height", "w": "width"}[a]
        t.gen.emit(f"{var} = ops.einsum({eq!r}, {matrix}, {x})", f"linear resize of the {axis_name} ({coord})")
        x = var
    t.alias(x)


@register("InstanceNormalization")
def instance_norm(t: Translation) -> None:
    _channels_last(t)
    scale, bias = t.need_const(1, "scale"), t.need_const(2, "bias")
    eps = t.float("epsilon", 1e-5)
    args = [f"groups={scale.shape[0]}", f"epsilon={py_literal(np.float32(eps))}"]
    t.assign(_layer(t, "GroupNormalization", args, [scale, bias], t.inp(0)))


@register("BatchNormalization")
def batch_norm(t: Translation) -> None:
    cl = _channels_last(t)
    rank = len(t.shape(0))
    scale, bias, mean, var = (t.need_const(i, "statistics") for i in range(1, 5))
    eps = t.float("epsilon", 1e-5)
    axis = -1 if (cl or rank == 2) else 1
    args = [f"epsilon={py_literal(np.float32(eps))}"] + ([] if axis == -1 else [f"axis={axis}"])
    t.assign(_layer(t, "BatchNormalization", args, [scale, bias, mean, var], t.inp(0)))


def _dense(t: Translation, kernel_io: np.ndarray, bias, x: str, absorb=None) -> None:
    args = [str(kernel_io.shape[1])] + ([] if bias is not None else ["use_bias=False"])
    weights = [kernel_io] + ([bias] if bias is not None else [])
    expr = _layer(t, "Dense", args, weights, x)
    if absorb is None:
        t.assign(expr)
    else:
        name = t.gen.var(absorb.outputs[0])
        t.gen.emit(f"{name} = {expr}")
        t.absorb(absorb, name)


@register("MatMul")
def matmul(t: Translation) -> None:
    w = t.const(1)
    if w is not None and w.ndim == 2 and t.const(0) is None:
        bias, add = t.following_bias(w.shape[1])
        _dense(t, w, bias, t.inp(0), add)
        return
    t.assign(f"ops.matmul({t.inp(0)}, {t.inp(1)})")


@register("Gemm")
def gemm(t: Translation) -> None:
    alpha, beta = t.float("alpha", 1.0), t.float("beta", 1.0)
    ta, tb = t.int("transA", 0), t.int("transB", 0)
    w = t.const(1)
    c = t.const(2) if t.has_input(2) else None
    if w is not None and alpha == 1.0 and not ta and (not t.has_input(2) or (c is not None and beta == 1.0)):
        kernel = w.T if tb else w
        bias = None if c is None else np.broadcast_to(c, (kernel.shape[1],)).astype(np.float32)
        _dense(t, np.ascontiguousarray(kernel), bias, t.inp(0))
        return
    a = f"ops.transpose({t.inp(0)})" if ta else t.inp(0)
    b = f"ops.transpose({t.inp(1)})" if tb else t.inp(1)
    expr = f"ops.matmul({a}, {b})"
    if alpha != 1.0:
        expr = f"ops.multiply({py_literal(np.float32(alpha))}, {expr})"
    if t.has_input(2):
        cexpr = t.inp(2) if beta == 1.0 else f"ops.multiply({py_literal(np.float32(beta))}, {t.inp(2)})"
        expr, note = _add(expr, static_shape(t.node.outputs[0]), cexpr, static_shape(t.node.inputs[2]))
        t.assign(expr, comment=note)
        return
    t.assign(expr)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(t: Translation) -> None:
    if _wrapped_group_norm(t):
        return
    t.assign(f"ops.reshape({t.inp(0)}, {shape_literal(t.out_shape())})")


@register("Concat")
def concat(t: Translation) -> None:
    parts = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"ops.concatenate([{parts}], axis={t.int('axis')})")


@register("Split")
def split(t: Translation) -> None:
    axis = t.int("axis", 0)
    sizes = [t.out_shape(j)[axis] for j in range(len(t.node.outputs))]
    cuts = list(np.cumsum(sizes)[:-1].astype(int))
    names = ", ".join(t.out(j) for j in range(len(t.node.outputs)))
    t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = ops.split({t.inp(0)}, {[int(c) for c in cuts]}, axis={axis})")


@register("Slice")
def slice_(t: Translation) -> None:
    shape = t.shape(0)
    begin, size, strided = [0] * len(shape), list(shape), []
    for a, start, stop, step in t.slice_bounds():
        begin[a], size[a] = start, max(0, stop - start)
        if step != 1:
            strided.append((a, step))
    expr = f"ops.slice({t.inp(0)}, {tuple(begin)}, {tuple(size)})"
    for a, step in strided:
        expr = f"ops.take({expr}, {list(range(0, size[a], step))}, axis={a})"
    t.assign(expr)


@register("Gather")
def gather(t: Translation) -> None:
    axis = t.int("axis", 0) % len(t.shape(0))
    idx = t.const(1)
    if idx is not None and idx.ndim == 0:
        t.assign(f"ops.take({t.inp(0)}, {int(idx) % t.shape(0)[axis]}, axis={axis})")
        return
    table = embedding_lookup(t)
    if table is not None:
        # rows of a constant table picked by runtime ids: an Embedding layer, whose table is
        # a weight in model.weights.h5 (as a constant it would be baked into the graph)
        t.assign(_layer(t, "Embedding", [str(table.shape[0]), str(table.shape[1])], [table], t.inp(1)))
        return
    if idx is not None and np.any(idx < 0):
        t.unsupported("negative constant gather indices")
    t.assign(f"ops.take({t.inp(0)}, {t.inp(1)}, axis={axis})")


_REDUCE = {
    "ReduceMean": "ops.mean({x}, axis={d}, keepdims={k})", "ReduceSum": "ops.sum({x}, axis={d}, keepdims={k})",
    "ReduceMax": "ops.max({x}, axis={d}, keepdims={k})", "ReduceMin": "ops.min({x}, axis={d}, keepdims={k})",
    "ReduceL2": "ops.sqrt(ops.sum(ops.square({x}), axis={d}, keepdims={k}))",
    "ReduceL1": "ops.sum(ops.abs({x}), axis={d}, keepdims={k})",
    "ReduceSumSquare": "ops.sum(ops.square({x}), axis={d}, keepdims={k})",
    "ReduceLogSumExp": "ops.logsumexp({x}, axis={d}, keepdims={k})",
    "ReduceProd": "ops.prod({x}, axis={d}, keepdims={k})",
}


@register(*_REDUCE)
def reduce(t: Translation) -> None:
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    d = str(dims[0]) if len(dims) == 1 else str(tuple(dims))
    t.assign(_REDUCE[t.op].format(x=t.inp(0), d=d, k=bool(t.int("keepdims", 1))))


@register("Pad")
def pad(t: Translation) -> None:
    mode = t.str("mode", "constant")
    pads = t.need_const(1, "pads").tolist()
    rank = len(t.shape(0))
    axes = t.const(3).tolist() if t.has_input(3) else list(range(rank))
    width = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        width[a % rank] = [int(pads[i]), int(pads[i + len(axes)])]
    keras_mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode]
    extra = f", mode={keras_mode!r}" if keras_mode != "constant" else ""
    value = t.const(2) if t.has_input(2) else None
    if value is not None and float(value) != 0.0:
        extra += f", constant_values={py_literal(value)}"
    t.assign(f"ops.pad({t.inp(0)}, {[tuple(w) for w in width]}{extra})")


@register("Expand")
def expand(t: Translation) -> None:
    t.assign(f"ops.broadcast_to({t.inp(0)}, {shape_literal(t.out_shape())})")


@register("Tile")
def tile(t: Translation) -> None:
    reps = t.need_const(1, "repeats").tolist()
    t.assign(f"ops.tile({t.inp(0)}, {shape_literal(reps)})")


@register("LayerNormalization")
def layer_norm(t: Translation) -> None:
    shape = t.shape(0)
    rank = len(shape)
    axis = t.int("axis", -1) % rank
    axes = list(range(axis, rank))
    norm_shape = shape[axis:]
    scale = np.broadcast_to(t.need_const(1, "scale"), norm_shape).astype(np.float32)
    bias = t.const(2) if t.has_input(2) else None
    if t.has_input(2) and bias is None:
        t.unsupported("non-constant bias")
    eps = t.float("epsilon", 1e-5)
    axis_arg = "-1" if axes == [rank - 1] else str([a for a in axes])
    args = [f"axis={axis_arg}", f"epsilon={py_literal(np.float32(eps))}"]
    weights = [scale]
    if bias is None:
        args.append("center=False")
    else:
        weights.append(np.broadcast_to(bias, norm_shape).astype(np.float32))
    t.assign(_layer(t, "LayerNormalization", args, weights, t.inp(0)))


@register("Einsum")
def einsum(t: Translation) -> None:
    operands = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"ops.einsum({t.str('equation')!r}, {operands})")


@register("GatherND")
def gather_nd(t: Translation) -> None:
    """One ``ops.take`` on ``data`` flattened over the indexed (and batch) axes (see
    ``codegen.GatherND``).  Transformers' padding masks are written this way."""
    plan = plan_gather_nd(t)
    data = f"ops.reshape({t.inp(0)}, {shape_literal(plan.data_shape)})"
    if plan.linear is not None:
        t.assign(f"ops.take({data}, {_new_constant(t, plan.linear, 'index')}, axis=0)")
        return
    i = f"ops.cast({t.inp(1)}, 'int64')"
    i = f"ops.where(ops.less({i}, 0), ops.add({i}, np.array({tuple(plan.dims)}, 'int64')), {i})"
    linear = f"ops.sum(ops.multiply({i}, np.array({tuple(plan.strides)}, 'int64')), axis=-1)"
    if plan.batch_dims:
        linear, _ = _add(linear, plan.lead, _new_constant(t, plan.offset, "offset"), plan.offset.shape)
    t.assign(f"ops.take({data}, {linear}, axis=0)")


@register("GatherElements")
def gather_elements(t: Translation) -> None:
    """``ops.take_along_axis``; ONNX lets the indices be shorter than the data on the other
    axes (the output takes the indices' shape), so the data is cropped to them first."""
    shape, ishape = t.const_shape(0), t.const_shape(1)
    rank = len(shape)
    axis = t.int("axis", 0) % rank
    crop = tuple(ishape[a] if a != axis else shape[a] for a in range(rank))
    data, idx = t.const(0), t.const(1)
    if idx is not None:
        idx = np.where(idx < 0, idx + shape[axis], idx).astype(np.int64)
    if data is not None and idx is not None:  # e.g. BERT's token_type_ids buffer
        value = np.take_along_axis(data[tuple(slice(0, c) for c in crop)], idx, axis)
        if t.node.outputs[0].is_graph_output():
            t.assign(f"ops.convert_to_tensor({_new_constant(t, value, 'value')})")
        else:
            t.alias(_new_constant(t, value, "value"))
        return
    x = t.inp(0)
    if crop != tuple(shape):
        x = f"ops.slice({x}, {(0,) * rank}, {crop})"
    index = t.inp(1) if idx is None else _new_constant(t, idx, "index")
    t.assign(f"ops.take_along_axis({x}, {index}, axis={axis})")


@register("CumSum")
def cumsum(t: Translation) -> None:
    """``ops.cumsum``; ``reverse`` flips around it, ``exclusive`` shifts the input by one step."""
    shape = t.shape(0)
    rank = len(shape)
    axis = int(t.need_const(1, "the axis")) % rank
    reverse = bool(t.int("reverse", 0))
    x = f"ops.flip({t.inp(0)}, axis={axis})" if reverse else t.inp(0)
    if t.int("exclusive", 0):
        width = [(0, 0)] * rank
        width[axis] = (1, 0)
        x = f"ops.slice(ops.pad({x}, {width}), {(0,) * rank}, {tuple(shape)})"
    expr = f"ops.cumsum({x}, axis={axis})"
    t.assign(f"ops.flip({expr}, axis={axis})" if reverse else expr)


# -- channels-last lowerings of DepthToSpace, SpaceToDepth, LRN, GroupNormalization --------------
# Each runs between pinned transposes, on the (N, *spatial, C) tensor Keras layers use.


@register("DepthToSpace")
def depth_to_space(t: Translation) -> None:
    """NHWC depth-to-space: split the channels into (block, block, C') or (C', block, block), interleave."""
    _channels_last(t)
    n, c, h, w = t.shape(0)
    bs, mode = t.int("blocksize"), t.str("mode", "DCR")
    c_out = c // (bs * bs)
    split, perm = ((n, h, w, bs, bs, c_out), (0, 1, 3, 2, 4, 5)) if mode == "DCR" else \
        ((n, h, w, c_out, bs, bs), (0, 1, 4, 2, 5, 3))
    note = "pixel shuffle (PyTorch's CRD order)" if mode == "CRD" else "depth to space (TensorFlow's DCR order)"
    t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), {perm}), {(n, h * bs, w * bs, c_out)})",
             comment=note)


@register("SpaceToDepth")
def space_to_depth(t: Translation) -> None:
    """NHWC space-to-depth: output channel ``(b1 * block + b2) * C + c`` (TensorFlow's order)."""
    _channels_last(t)
    n, c, h, w = t.shape(0)
    bs = t.int("blocksize")
    split = (n, h // bs, bs, w // bs, bs, c)
    t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), (0, 1, 3, 2, 4, 5)), "
             f"{(n, h // bs, w // bs, c * bs * bs)})", comment="space to depth")


@register("LRN")
def lrn(t: Translation) -> None:
    """``x / (bias + alpha / size * window_sum(x**2)) ** beta`` over the last (channel) axis.

    The window sum is a matmul with a 0/1 band matrix: channel ``c`` sums the squares of
    channels ``c - floor((size-1)/2)`` .. ``c + ceil((size-1)/2)`` that exist.
    """
    _channels_last(t)
    size, channels = t.int("size"), t.shape(0)[1]
    alpha, beta, bias = t.float("alpha", 1e-4), t.float("beta", 0.75), t.float("bias", 1.0)
    before, after = (size - 1) // 2, size // 2
    band = np.zeros((channels, channels), np.float32)
    for c in range(channels):
        band[max(0, c - before):min(channels, c + after + 1), c] = 1.0
    x, hint = t.inp(0), t.layer_hint()
    window = _new_constant(t, band, "window")
    sq_sum = t.gen.names.take(hint + "_sq_sum")
    t.gen.emit(f"{sq_sum} = ops.matmul(ops.square({x}), {window})", f"sum of squares over {size} neighbouring channels")
    a = py_literal(np.float32(alpha / size))
    t.assign(f"ops.divide({x}, ops.power(ops.add(ops.multiply({sq_sum}, {a}), "
             f"{py_literal(np.float32(bias))}), {py_literal(np.float32(beta))}))",
             comment="local response normalization")


def _last_axis_vector(arr: np.ndarray | None, rank: int, channels: int) -> np.ndarray | None:
    """``arr`` as a ``(channels,)`` vector if it broadcasts along the last axis only of a rank-``rank`` tensor."""
    if arr is None or arr.ndim > rank:
        return None
    if arr.size == 1:
        return np.full(channels, arr.reshape(()), np.float32)
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    return full.reshape(channels).astype(np.float32) if full.shape == (1,) * (rank - 1) + (channels,) else None


def _affine_after_pin(pin, channels: int) -> tuple[np.ndarray, np.ndarray, list]:
    """A per-channel ``Mul`` then ``Add`` (each optional) right after a pinned (channels-last) output.

    Returns (gamma, beta, the nodes to absorb): the channels-last layer takes them as its weights.
    """
    gamma, beta, nodes = np.ones(channels, np.float32), np.zeros(channels, np.float32), []
    value = pin.outputs[0]
    rank = len(value.shape)
    for op in ("Mul", "Add"):
        users = value.consumers()
        user = users[0] if len(users) == 1 and not value.is_graph_output() else None
        if user is None or user.op_type != op or user.domain != "" or len(user.inputs) != 2:
            continue
        other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
        vec = _last_axis_vector(const_array(other), rank, channels) if other is not value else None
        if vec is None or user.outputs[0].shape != value.shape:
            continue
        if op == "Mul":
            gamma = vec
        else:
            beta = vec
        nodes.append(user)
        value = user.outputs[0]
    return gamma, beta, nodes


@register("GroupNormalization")
def group_norm(t: Translation) -> None:
    """``layers.GroupNormalization``: groups of consecutive channels, as ONNX and PyTorch group them."""
    _channels_last(t)
    groups, channels = t.int("num_groups"), t.shape(0)[1]
    scale, bias = t.need_const(1, "scale").astype(np.float32), t.need_const(2, "bias").astype(np.float32)
    if scale.shape[0] != channels:  # before opset 21: one scale and bias per group
        scale, bias = np.repeat(scale, channels // groups), np.repeat(bias, channels // groups)
    _emit_group_norm(t, groups, scale, bias, t.float("epsilon", 1e-5), t.node, t.layer_hint())


def _emit_group_norm(t: Translation, groups: int, scale, bias, eps: float, last, hint: str) -> None:
    """``layers.GroupNormalization`` on the channels-last input; ``last`` (its output) feeds a PIN_OUT.

    A per-channel Mul/Add after the pinned output becomes part of the layer's gamma and beta.
    """
    gamma, beta, absorbed = _affine_after_pin(last.outputs[0].consumers()[0], scale.shape[0])
    args = [f"groups={groups}", f"epsilon={py_literal(np.float32(eps))}"]
    expr = _layer(t, "GroupNormalization", args, [scale * gamma, bias * gamma + beta], t.inp(0), hint=hint)
    name = t.gen.var((absorbed[-1] if absorbed else last).outputs[0])
    t.gen.emit(f"{name} = {expr}")
    t.gen.values[last.outputs[0]] = name
    for node in absorbed:
        t.absorb(node, name)


def _wrapped_group_norm(t: Translation) -> bool:
    """PyTorch's exported GroupNorm (Reshape -> InstanceNormalization -> Reshape), wrapped channels-last
    as a whole by ``ChannelsLast``: this is its first Reshape; the layer replaces all three."""
    producer = t.value(0).producer()
    users = t.node.outputs[0].consumers()
    if t.op != "Reshape" or producer is None or pin_role(producer) != PIN_IN or len(users) != 1:
        return False
    m = match_group_norm(users[0])
    if m is None or m.nodes[0] is not t.node:
        return False
    post = m.nodes[2]
    pin = post.outputs[0].consumers()
    if len(pin) != 1 or pin_role(pin[0]) != PIN_OUT:
        return False
    hint = module_name(m.nodes[1]) or t.layer_hint()
    _emit_group_norm(t, m.groups, m.scale, m.bias, m.epsilon, post, hint)
    t.gen.absorbed.update(m.nodes[1:3])
    return True


# -- ArgMax / ArgMin, TopK, ReverseSequence, LSTM / GRU ----------------------------------------------


@register("ArgMax", "ArgMin")
def arg_extreme(t: Translation) -> None:
    """``ops.argmax`` / ``argmin`` as int64 (ONNX's type); ``select_last_index`` searches the flipped axis."""
    rank = len(t.shape(0))
    axis = t.int("axis", 0) % rank
    keep = bool(t.int("keepdims", 1))
    fn = "ops.argmax" if t.op == "ArgMax" else "ops.argmin"
    if t.int("select_last_index", 0):
        last = t.shape(0)[axis] - 1
        found = f"ops.subtract({last}, {fn}(ops.flip({t.inp(0)}, axis={axis}), axis={axis}, keepdims={keep}))"
        t.assign(f"ops.cast({found}, 'int64')", comment="last index of ties")
    else:
        t.assign(f"ops.cast({fn}({t.inp(0)}, axis={axis}, keepdims={keep}), 'int64')")


@register("TopK")
def topk(t: Translation) -> None:
    """``ops.top_k`` (last axis, largest first): other axes move last and back, ``largest=0`` negates.

    Always sorted: ONNX leaves the order of ``sorted=0`` open.
    """
    k = int(t.need_const(1, "K").reshape(-1)[0])
    rank = len(t.shape(0))
    axis = t.int("axis", -1) % rank
    largest = bool(t.int("largest", 1))
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]  # a swap: its own inverse
    x = t.inp(0) if axis == rank - 1 else f"ops.transpose({t.inp(0)}, {tuple(perm)})"
    x = x if largest else f"ops.negative({x})"
    direct = largest and axis == rank - 1
    vals = t.out(0) if direct else t.gen.names.take(f"{t.out(0)}_top")
    idx = t.gen.names.take(f"{t.out(1)}_int32")
    t.gen.emit(f"{vals}, {idx} = ops.top_k({x}, {k})", None if largest else "the smallest: top_k of the negation")
    if not direct:
        vals = vals if largest else f"ops.negative({vals})"
        if axis != rank - 1:
            vals, idx = f"ops.transpose({vals}, {tuple(perm)})", f"ops.transpose({idx}, {tuple(perm)})"
        t.assign(vals, 0)
    t.assign(f"ops.cast({idx}, 'int64')", 1)


@register("ReverseSequence")
def reverse_sequence(t: Translation) -> None:
    """Full-length sequences only: a flip of the time axis."""
    time_axis = t.int("time_axis", 0)
    lens = t.const(1)
    if lens is None or np.any(lens != t.shape(0)[time_axis]):
        t.unsupported("sequence lengths shorter than the time axis (only a full reversal is supported)")
    t.assign(f"ops.flip({t.inp(0)}, axis={time_axis})")


def _rnn_weights(rnn, d: int) -> list[np.ndarray]:
    """Keras LSTM/GRU/SimpleRNN weights of direction ``d``: kernel ``(C, G*H)``, recurrent ``(H, G*H)``, bias.

    LSTM and SimpleRNN have one bias (ONNX's two summed); GRU ``reset_after=True`` keeps both as ``(2, 3H)``.
    """
    from .rnn import KERAS_ORDERS, gate_blocks

    order = KERAS_ORDERS[rnn.kind]
    weights = [gate_blocks(rnn.w[d], order).T, gate_blocks(rnn.r[d], order).T]
    if rnn.wb is not None:
        wb, rb = gate_blocks(rnn.wb[d], order), gate_blocks(rnn.rb[d], order)
        weights.append(np.stack([wb, rb]) if rnn.kind == "GRU" and rnn.linear_before_reset else wb + rb)
    return [np.ascontiguousarray(w) for w in weights]


def _rnn_layer(t: Translation, rnn, return_state: bool) -> str:
    """The ``layers.LSTM/GRU`` (or ``Bidirectional``) constructor; its weights are registered with the layer."""
    args = [str(rnn.hidden), "return_sequences=True"] + (["return_state=True"] if return_state else [])
    if rnn.wb is None:
        args.append("use_bias=False")
    if rnn.kind == "GRU" and not rnn.linear_before_reset:
        args.append("reset_after=False")
    if rnn.direction == "reverse":
        args.append("go_backwards=True")
    weights = [w for d in range(rnn.dirs) for w in _rnn_weights(rnn, d)]
    name = t.gen.add_layer(_rnn_hint(t), weights)
    cls = "SimpleRNN" if rnn.kind == "RNN" else rnn.kind
    if rnn.dirs == 2:
        return f"layers.Bidirectional(layers.{cls}({', '.join(args)}), name={name!r})"
    return f"layers.{cls}({', '.join(args + [f'name={name!r}'])})"


def _rnn_hint(t: Translation) -> str:
    import re

    return re.sub(r"__\d+$", "", t.layer_hint()).lower() or t.op.lower()


@register("LSTM", "GRU", "RNN")
def recurrent(t: Translation) -> None:
    """One ONNX LSTM/GRU/RNN node -> ``layers.LSTM`` / ``GRU`` / ``SimpleRNN`` on a batch-major sequence.

    ``bidirectional`` is ``layers.Bidirectional`` (concatenated outputs, backward aligned in time);
    ``reverse`` is ``go_backwards=True``, whose reversed output is flipped back.
    """
    from .rnn import direction_squeeze, joined_directions, read_recurrent, used

    rnn = read_recurrent(t)
    outs = list(t.node.outputs) + [None] * 3
    want_y, want_h, want_c = used(outs[0]), used(outs[1]), rnn.kind == "LSTM" and used(outs[2])
    hint = _rnn_hint(t)
    x = t.gen.names.take(hint + "_in")
    t.gen.emit(f"{x} = ops.transpose({t.inp(0)}, (1, 0, 2))", "time-major -> batch-major")
    layer = _rnn_layer(t, rnn, want_h or want_c)
    seq = t.gen.names.take(hint + "_out")
    per_dir = ["h", "c"] if rnn.kind == "LSTM" else ["h"]
    suffixes = [s for d in (["_fw", "_bw"] if rnn.dirs == 2 else [""]) for s in (f"{p}{d}" for p in per_dir)]
    states = [t.gen.names.take(f"{hint}_{s}") for s in suffixes] if want_h or want_c else []
    t.gen.emit(f"{', '.join([seq, *states])} = {layer}({x})")
    if want_y:  # (N, T, D*H) -> ONNX's (T, D, N, H)
        y = f"ops.flip({seq}, axis=1)" if rnn.direction == "reverse" else seq
        squeeze = direction_squeeze(t) if rnn.dirs == 1 else None
        joined = joined_directions(t) if rnn.dirs == 2 else None
        if joined is not None:  # read back as (T, N, 2H): Bidirectional's concatenation, time-major
            name = t.gen.var(joined.outputs[0])
            t.gen.emit(f"{name} = ops.transpose({y}, (1, 0, 2))", "batch-major -> time-major")
            t.absorb(t.only_consumer(0), name)
            t.absorb(joined, name)
        elif squeeze is not None:  # read back as (T, N, H)
            name = t.gen.var(squeeze.outputs[0])
            t.gen.emit(f"{name} = ops.transpose({y}, (1, 0, 2))", "batch-major -> time-major")
            t.absorb(squeeze, name)
        elif rnn.dirs == 2:
            t.assign(f"ops.transpose(ops.reshape({y}, ({rnn.batch}, {rnn.steps}, 2, {rnn.hidden})), (1, 2, 0, 3))", 0)
        else:
            t.assign(f"ops.expand_dims(ops.transpose({y}, (1, 0, 2)), 1)", 0)
    for j, pos in ((1, 0), (2, 1)):  # ONNX Y_h / Y_c: (D, N, H)
        if (j == 1 and want_h) or (j == 2 and want_c):
            parts = states[pos::len(per_dir)]
            both = f"ops.stack([{', '.join(parts)}], axis=0)"
            t.assign(both if rnn.dirs == 2 else f"ops.expand_dims({parts[0]}, 0)", j)


@register("Loop", "Scan")
def loop(t: Translation) -> None:
    """No native layer is recovered from a control-flow loop: refuse with the reason."""
    from .rnn import LOOP_REFUSAL

    t.unsupported(LOOP_REFUSAL)
