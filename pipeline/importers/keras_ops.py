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
from ..normalize.padding import ceil_end_pads, mean_divisor, same_pads, tap_pool
from .codegen import Translation, py_literal, registry

OPS, register = registry()

from .keras_emit import KERAS_DTYPES  # noqa: E402,F401 (to_keras reads it here until the op families land)
from .keras_emit import add as _add  # noqa: E402
from .keras_emit import channels_last as _channels_last  # noqa: E402
from .keras_emit import new_constant as _new_constant  # noqa: E402
from .keras_emit import pool_pad as _pool_pad  # noqa: E402
from .keras_emit import spatial_padding as _spatial_padding  # noqa: E402
from .keras_emit import tf_3d_same_shifts as _tf_3d_same_shifts  # noqa: E402,F401
from .keras_emit import tuple_or_int as _ints  # noqa: E402


def _layer(t: Translation, cls: str, args: list[str], weights: list | None, x: str, hint: str | None = None) -> str:
    from .keras_emit import layer

    return layer(t, cls, args, weights, x, name=hint)

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


# -- channels-last lowerings of DepthToSpace, SpaceToDepth, LRN, GroupNormalization --------------
# Each runs between pinned transposes, on the (N, *spatial, C) tensor Keras layers use.


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
