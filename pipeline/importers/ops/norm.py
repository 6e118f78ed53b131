"""Normalization: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN.

Every op here becomes the framework's own layer (``nn.BatchNorm2d``, ``layers.LayerNormalization``,
...), its statistics and affine parameters the layer's weights.  BatchNormalization, the
instance and group norms and LRN normalize over axis 1 (the channels): for Keras they
arrive wrapped channels-last (``layout`` trait), LayerNormalization over trailing axes does not.

PyTorch's exported ``nn.GroupNorm`` (Reshape -> InstanceNormalization -> Reshape, then a
per-channel Mul/Add) is read back as one layer: ``torch_group_norm_of`` and
``keras_wrapped_group_norm`` are what the Reshape translators call to recognise it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...normalize.graph import PIN_IN, PIN_OUT, const_array, pin_role, static_shape
from ...normalize.patterns import GroupNormMatch, match_group_norm, module_name
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation, py_literal
from ..registry import Op, register
from .recurrent import used


def _f32(value: float) -> str:
    return py_literal(np.float32(value))


# -- BatchNormalization ------------------------------------------------------------------------------


@dataclass
class BatchNorm:
    """Inference-mode batch normalization: ``scale * (x - mean) / sqrt(var + eps) + bias`` per channel.

    The four vectors are None when any of them is computed at run time: the functional form then.
    """

    scale: np.ndarray | None
    bias: np.ndarray | None
    mean: np.ndarray | None
    var: np.ndarray | None
    eps: float

    @property
    def layer(self) -> bool:
        return self.scale is not None


@register
class BatchNormalization(Op):
    """Only inference mode (the running statistics given as inputs) has a layer that reads the same.

    Training mode normalizes by the batch's own statistics and returns updated ones: opset 14
    says so with ``training_mode=1``; before opset 7 ``is_test=0`` (the default) meant it, and
    ``consumed_inputs`` only told a runtime which inputs it may overwrite.  Before opset 9,
    ``spatial=0`` kept one statistic per channel and position, which no layer has.
    """

    types = ("BatchNormalization",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> BatchNorm:
        extra = [o.name for o in t.node.outputs[1:] if used(o)]
        if t.opset >= 14 and t.int("training_mode", 0):
            t.unsupported("BatchNormalization with training_mode=1 (normalizes by the batch's own statistics)"
                          + (f"; outputs {', '.join(extra)} read" if extra else ""))
        if t.opset < 7 and not t.int("is_test", 0):
            t.unsupported("BatchNormalization with is_test=0 (training mode before opset 7)")
        if t.opset < 9 and not t.int("spatial", 1):
            t.unsupported("BatchNormalization with spatial=0 (statistics per channel and position)")
        if extra:
            t.unsupported(f"BatchNormalization's training-mode outputs {', '.join(extra)} (batch statistics)")
        stats = [t.const(i) for i in range(1, 5)]
        if any(s is None for s in stats):
            stats = [None] * 4
        return BatchNorm(*stats, t.float("epsilon", 1e-5))

    def torch(self, t: Translation, p: BatchNorm) -> None:
        if not p.layer:
            scale, bias, mean, var = (t.inp(i) for i in range(1, 5))
            t.assign(f"F.batch_norm({t.inp(0)}, {mean}, {var}, {scale}, {bias}, False, 0.0, {_f32(p.eps)})",
                     comment="statistics computed at run time")
            return
        rank = t.rank(0)
        nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
        if nd is None:
            t.unsupported(f"rank-{rank} input")
        weights = {"weight": p.scale, "bias": p.bias, "running_mean": p.mean, "running_var": p.var,
                   "num_batches_tracked": np.array(0, np.int64)}
        mod = T.module(t, f"nn.BatchNorm{nd}d({p.scale.shape[0]}, eps={_f32(p.eps)})", weights)
        t.assign(f"self.{mod}({t.inp(0)})")

    def keras(self, t: Translation, p: BatchNorm) -> None:
        cl = K.channels_last(t)
        axis = -1 if (cl or t.rank(0) == 2) else 1
        if not p.layer:
            scale, bias, mean, var = (t.inp(i) for i in range(1, 5))
            t.assign(f"ops.batch_normalization({t.inp(0)}, {mean}, {var}, axis={axis}, offset={bias}, scale={scale}, "
                     f"epsilon={_f32(p.eps)})", comment="statistics computed at run time")
            return
        args = [f"epsilon={_f32(p.eps)}"] + ([] if axis == -1 else [f"axis={axis}"])
        t.assign(K.layer(t, "BatchNormalization", args, [p.scale, p.bias, p.mean, p.var], t.inp(0)))


# -- LayerNormalization ------------------------------------------------------------------------------


@dataclass
class LayerNorm:
    """Normalization over the axes ``axis..`` (``shape``), then ``scale`` and ``bias`` of that shape.

    ``mean`` / ``inv_std``: whether the optional outputs Mean and InvStdDev (keepdims shapes)
    are read; they are written as the spec's own expressions.  ``runtime``: the scale or bias
    is computed at run time (``scale`` and ``bias`` are None then): the functional form.
    """

    axis: int
    shape: tuple[int, ...]
    scale: np.ndarray | None
    bias: np.ndarray | None
    eps: float
    mean: bool
    inv_std: bool
    runtime: bool = False
    has_bias: bool = True


@register
class LayerNormalization(Op):
    types = ("LayerNormalization",)

    def read(self, t: Translation) -> LayerNorm:
        rank = t.rank(0)
        axis = t.int("axis", -1) % rank
        norm_shape = t.sizes(0, range(axis, rank))  # the axes before may vary in size
        scale, bias = t.const(1), t.const(2) if t.has_input(2) else None
        runtime = scale is None or (t.has_input(2) and bias is None)
        if runtime:
            scale = bias = None
        else:
            scale = np.broadcast_to(scale, norm_shape).astype(np.float32)
            bias = None if bias is None else np.broadcast_to(bias, norm_shape).astype(np.float32)
        outs = list(t.node.outputs) + [None] * 2
        return LayerNorm(axis, norm_shape, scale, bias, t.float("epsilon", 1e-5), used(outs[1]), used(outs[2]),
                         runtime, t.has_input(2))

    @staticmethod
    def _dims(p: LayerNorm) -> str:
        rank = p.axis + len(p.shape)
        return "-1" if p.axis == rank - 1 else str(tuple(range(p.axis, rank)))

    def torch(self, t: Translation, p: LayerNorm) -> None:
        if p.runtime:
            x, shape = t.inp(0), p.shape
            scale = t.inp(1) if tuple(t.shape(1)) == shape else f"{t.inp(1)}.expand{shape}"
            bias = "None" if not p.has_bias else t.inp(2) if tuple(t.shape(2)) == shape else f"{t.inp(2)}.expand{shape}"
            t.assign(f"F.layer_norm({x}, {shape}, {scale}, {bias}, {_f32(p.eps)})",
                     comment="scale or bias computed at run time")
            self._torch_stats(t, p, x, t.gen.names.take("layer_norm_mean"))
            return
        weights = {"weight": p.scale}
        args = [str(p.shape if len(p.shape) > 1 else p.shape[0]), f"eps={_f32(p.eps)}"]
        if p.bias is None:
            args.append("bias=False")
        else:
            weights["bias"] = p.bias
        mod = T.module(t, f"nn.LayerNorm({', '.join(args)})", weights)
        x = t.inp(0)
        t.assign(f"self.{mod}({x})")
        self._torch_stats(t, p, x, mod + "_mean")

    def _torch_stats(self, t: Translation, p: LayerNorm, x: str, mean_hint: str) -> None:
        if p.mean or p.inv_std:  # Mean = ReduceMean(x); InvStdDev = 1 / sqrt(ReduceMean((x - Mean)^2) + eps)
            dims = self._dims(p)
            expr = f"{x}.mean(dim={dims}, keepdim=True)"
            mean = t.assign(expr, 1, comment="Mean") if p.mean else self._temp(t, mean_hint, expr)
            if p.inv_std:
                t.assign(f"torch.reciprocal(torch.sqrt(({x} - {mean}).square().mean(dim={dims}, keepdim=True)"
                         f" + {_f32(p.eps)}))", 2, comment="InvStdDev")

    def keras(self, t: Translation, p: LayerNorm) -> None:
        if p.runtime:
            self._keras_runtime(t, p)
            self._keras_stats(t, p, t.inp(0))
            return
        rank = p.axis + len(p.shape)
        axis_arg = "-1" if p.axis == rank - 1 else str(list(range(p.axis, rank)))
        args = [f"axis={axis_arg}", f"epsilon={_f32(p.eps)}"]
        weights = [p.scale]
        if p.bias is None:
            args.append("center=False")
        else:
            weights.append(p.bias)
        x = t.inp(0)
        t.assign(K.layer(t, "LayerNormalization", args, weights, x))
        self._keras_stats(t, p, x)

    def _keras_runtime(self, t: Translation, p: LayerNorm) -> None:
        """``(x - mean) / sqrt(var + eps) * scale + bias``, the spec's expression (Keras has no functional
        layer norm over several axes)."""
        x, dims = t.inp(0), self._dims(p)
        mean = self._temp(t, t.layer_hint() + "_mean", f"ops.mean({x}, axis={dims}, keepdims=True)")
        normed = self._temp(t, t.layer_hint() + "_normalized",
                            f"ops.divide(ops.subtract({x}, {mean}), ops.sqrt(ops.add(ops.var({x}, axis={dims}, "
                            f"keepdims=True), {_f32(p.eps)})))")
        scaled = f"ops.multiply({normed}, {t.inp(1)})"
        if not p.has_bias:
            t.assign(scaled, comment="scale computed at run time")
            return
        expr, note = K.add(scaled, t.shape(0), t.inp(2), t.shape(2))
        t.assign(expr, comment=note or "scale or bias computed at run time")

    def _keras_stats(self, t: Translation, p: LayerNorm, x: str) -> None:
        if p.mean or p.inv_std:
            dims = self._dims(p)
            expr = f"ops.mean({x}, axis={dims}, keepdims=True)"
            mean = t.assign(expr, 1, comment="Mean") if p.mean else self._temp(t, t.layer_hint() + "_mean", expr)
            if p.inv_std:
                t.assign(f"ops.reciprocal(ops.sqrt(ops.add(ops.mean(ops.square(ops.subtract({x}, {mean})), "
                         f"axis={dims}, keepdims=True), {_f32(p.eps)})))", 2, comment="InvStdDev")

    @staticmethod
    def _temp(t: Translation, hint: str, expr: str) -> str:
        name = t.gen.names.take(hint)
        t.gen.emit(f"{name} = {expr}")
        return name


# -- InstanceNormalization, GroupNormalization -------------------------------------------------------


@dataclass
class InstanceNorm:
    """Per-channel normalization over the spatial axes; ``group``: the exported GroupNorm it is the centre of."""

    scale: np.ndarray
    bias: np.ndarray
    eps: float
    group: GroupNormMatch | None


def torch_group_norm_of(node) -> GroupNormMatch | None:
    """The exported ``nn.GroupNorm`` pattern ``node`` (an InstanceNormalization on a Reshape) belongs to, or None."""
    m = match_group_norm(node) if node.op_type == "InstanceNormalization" else None
    return m if m is not None and m.nodes[0].op_type == "Reshape" else None


@register
class InstanceNormalization(Op):
    """PyTorch: ``nn.InstanceNormNd``, or ``nn.GroupNorm`` for PyTorch's exported group norm, either
    taking a following per-channel Mul/Add as its weight and bias.  Keras: ``GroupNormalization``
    with a group per channel (the whole exported group norm is read at its first Reshape)."""

    types = ("InstanceNormalization",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> InstanceNorm:
        scale, bias = t.need_const(1, "scale"), t.need_const(2, "bias")
        return InstanceNorm(scale, bias, t.float("epsilon", 1e-5), match_group_norm(t.node))

    def torch(self, t: Translation, p: InstanceNorm) -> None:
        m, rank = p.group, t.rank(0)
        if m is None:
            if rank not in (3, 4, 5):
                t.unsupported(f"rank-{rank} instance normalization")
            m_scale, m_bias, x, absorbed = p.scale, p.bias, t.inp(0), []
            ctor = f"nn.InstanceNorm{rank - 2}d({p.scale.shape[0]}, eps={{eps}}, affine=True)"
        else:
            x_shape = static_shape(m.x)
            channels, nd = x_shape[1], len(x_shape) - 2
            m_scale, m_bias, x = m.scale, m.bias, t.gen.expr(m.x)
            absorbed = m.nodes[m.nodes.index(t.node) + 1:]
            if m.nodes[0] is t.node and nd in (1, 2, 3):
                ctor = f"nn.InstanceNorm{nd}d({channels}, eps={{eps}}, affine=True)"
            else:
                ctor = f"nn.GroupNorm({m.groups}, {channels}, eps={{eps}})"
        hint = (module_name(absorbed[-1]) if absorbed else None) or module_name(t.node)
        mod = T.module(t, ctor.format(eps=_f32(p.eps)), {"weight": m_scale, "bias": m_bias}, name=hint)
        if not absorbed:
            t.assign(f"self.{mod}({x})")
            return
        name = t.gen.var(absorbed[-1].outputs[0])
        t.gen.emit(f"{name} = self.{mod}({x})")
        for node in absorbed:
            t.absorb(node, name)

    def keras(self, t: Translation, p: InstanceNorm) -> None:
        K.channels_last(t)
        args = [f"groups={p.scale.shape[0]}", f"epsilon={_f32(p.eps)}"]
        t.assign(K.layer(t, "GroupNormalization", args, [p.scale, p.bias], t.inp(0)))


@dataclass
class GroupNorm:
    groups: int
    channels: int
    scale: np.ndarray  # per channel
    bias: np.ndarray
    eps: float


@register
class GroupNormalization(Op):
    """Groups of consecutive channels, as ONNX, PyTorch and Keras all group them.

    Before opset 21 ``scale`` and ``bias`` have one entry per group; the plan has them per channel.
    """

    types = ("GroupNormalization",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> GroupNorm:
        groups, channels = t.int("num_groups"), t.sizes(0, [1])[0]
        scale, bias = t.need_const(1, "scale").astype(np.float32), t.need_const(2, "bias").astype(np.float32)
        if scale.shape[0] != channels:
            scale, bias = np.repeat(scale, channels // groups), np.repeat(bias, channels // groups)
        return GroupNorm(groups, channels, scale, bias, t.float("epsilon", 1e-5))

    def torch(self, t: Translation, p: GroupNorm) -> None:
        mod = T.module(t, f"nn.GroupNorm({p.groups}, {p.channels}, eps={_f32(p.eps)})",
                       {"weight": p.scale, "bias": p.bias})
        t.assign(f"self.{mod}({t.inp(0)})")

    def keras(self, t: Translation, p: GroupNorm) -> None:
        K.channels_last(t)
        _keras_group_norm(t, p.groups, p.scale, p.bias, p.eps, t.node, t.layer_hint())


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


def _keras_group_norm(t: Translation, groups: int, scale, bias, eps: float, last, hint: str) -> None:
    """``layers.GroupNormalization`` on the channels-last input; ``last`` (its output) feeds a PIN_OUT.

    A per-channel Mul/Add after the pinned output becomes part of the layer's gamma and beta.
    """
    gamma, beta, absorbed = _affine_after_pin(last.outputs[0].consumers()[0], scale.shape[0])
    args = [f"groups={groups}", f"epsilon={_f32(eps)}"]
    expr = K.layer(t, "GroupNormalization", args, [scale * gamma, bias * gamma + beta], t.inp(0), name=hint)
    name = t.gen.var((absorbed[-1] if absorbed else last).outputs[0])
    t.gen.emit(f"{name} = {expr}")
    t.gen.values[last.outputs[0]] = name
    for node in absorbed:
        t.absorb(node, name)


def keras_wrapped_group_norm(t: Translation) -> bool:
    """PyTorch's exported GroupNorm (Reshape -> InstanceNormalization -> Reshape), wrapped channels-last
    as a whole by ``ChannelsLast``: when ``t`` is its first Reshape, write the one layer that replaces
    all three and return True."""
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
    _keras_group_norm(t, m.groups, m.scale, m.bias, m.epsilon, post, hint)
    t.gen.absorbed.update(m.nodes[1:3])
    return True


# -- LRN ---------------------------------------------------------------------------------------------


@dataclass
class Lrn:
    """``x / (bias + alpha / size * sum of x**2 over the window) ** beta``; channel ``c``'s window is
    ``c - floor((size-1)/2)`` .. ``c + ceil((size-1)/2)``."""

    size: int
    alpha: float
    beta: float
    bias: float


@register
class LRN(Op):
    types = ("LRN",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> Lrn:
        return Lrn(t.int("size"), t.float("alpha", 1e-4), t.float("beta", 0.75), t.float("bias", 1.0))

    def torch(self, t: Translation, p: Lrn) -> None:
        """``nn.LocalResponseNorm``: the same window and formula for odd sizes (onnxruntime runs no other)."""
        if p.size % 2 == 0:
            t.unsupported("LRN of an even size (PyTorch centres the window one channel earlier than ONNX)")
        args = [str(p.size), f"alpha={_f32(p.alpha)}", f"beta={_f32(p.beta)}", f"k={_f32(p.bias)}"]
        mod = T.module(t, f"nn.LocalResponseNorm({', '.join(args)})")
        t.assign(f"self.{mod}({t.inp(0)})")

    def keras(self, t: Translation, p: Lrn) -> None:
        """The window sum is a matmul with a 0/1 band matrix over the last (channel) axis."""
        K.channels_last(t)
        channels = t.sizes(0, [1])[0]
        before, after = (p.size - 1) // 2, p.size // 2
        band = np.zeros((channels, channels), np.float32)
        for c in range(channels):
            band[max(0, c - before):min(channels, c + after + 1), c] = 1.0
        x, hint = t.inp(0), t.layer_hint()
        window = K.new_constant(t, band, "window")
        sq_sum = t.gen.names.take(hint + "_sq_sum")
        t.gen.emit(f"{sq_sum} = ops.matmul(ops.square({x}), {window})",
                   f"sum of squares over {p.size} neighbouring channels")
        t.assign(f"ops.divide({x}, ops.power(ops.add(ops.multiply({sq_sum}, {_f32(p.alpha / p.size)}), "
                 f"{_f32(p.bias)}), {_f32(p.beta)}))", comment="local response normalization")
