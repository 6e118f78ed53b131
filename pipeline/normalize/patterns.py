"""Multi-node patterns that are one layer in the target: recognized exactly, rewritten as one op.

PyTorch's exporter writes some layers as several ONNX nodes.  Each recognizer here
checks a pattern completely (op types, constant operands, static shapes) and
returns a description of it, or None; ``fuse_patterns`` rewrites a match into the
single ONNX op that computes the same thing where there is one, so that
``ChannelsLast`` can wrap it and the Keras importer can emit the native layer.

- ``match_group_norm``: ``nn.GroupNorm(G, C)`` as exported::

      Reshape(x, (N, G, -1)) -> InstanceNormalization(s, b) -> Reshape(back to x's shape)
      [-> Mul(gamma per channel)] [-> Add(beta per channel)]

  The reshapes are absent when PyTorch reshaped to the shape ``x`` already has
  (``G == C`` on a 3-D input).  With ``G == C`` it is rewritten as
  ``InstanceNormalization(x)`` with the affine folded in; with ``G < C`` the
  Reshape -> InstanceNormalization -> Reshape chain stays (ONNX's own
  ``GroupNormalization`` is deprecated before opset 21) and ``group_norm_chains``
  hands it to ``ChannelsLast``, which wraps it whole; the importers recognize it.
- ``match_lrn``: ``nn.LocalResponseNorm(size)`` as exported::

      Div(x, Pow(Add(Mul(shape ops(AveragePool(Pad(shape ops(Mul(x, x)))), alpha), k), beta))

  with an average over ``size`` channels of the squares.  Only when the window
  is ONNX's (``floor((size-1)/2)`` channels before, ``ceil((size-1)/2)`` after,
  i.e. odd sizes for PyTorch) is it ``LRN(size, alpha, beta, bias=k)``; and only
  on 4-D tensors, the one rank onnxruntime runs LRN on.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from .graph import (
    add_initializer,
    const_array,
    fresh_name,
    make_node,
    ops_with,
    remove_if_dead,
    replace_value,
    single_consumer,
    static_shape,
)

def channel_vector(arr: np.ndarray | None, rank: int, channels: int) -> np.ndarray | None:
    """``arr`` as a ``(channels,)`` vector if it broadcasts along axis 1 only of a rank-``rank`` tensor."""
    if arr is None or arr.ndim > rank:
        return None
    if arr.size == 1:
        return np.full(channels, arr.reshape(()), arr.dtype)
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    if list(full.shape) == [1, channels] + [1] * (rank - 2):
        return full.reshape(channels)
    return None


def _const_operand(node: ir.Node, value: ir.Value) -> np.ndarray | None:
    """The constant other operand of a two-input ``node`` that consumes ``value``."""
    if len(node.inputs) != 2 or node.domain != "":
        return None
    a, b = node.inputs
    if a is value and b is not value:
        return const_array(b)
    if b is value and a is not value:
        return const_array(a)
    return None


def _scalar(value: ir.Value | None) -> float | None:
    arr = const_array(value)
    return None if arr is None or arr.size != 1 else float(arr.reshape(()))


def _affine_after(value: ir.Value, rank: int, channels: int) -> tuple[list[ir.Node], np.ndarray, np.ndarray]:
    """A per-channel ``Mul`` then ``Add`` (each optional) consuming ``value`` alone: (nodes, gamma, beta)."""
    nodes, gamma, beta = [], np.ones(channels, np.float32), np.zeros(channels, np.float32)
    user = single_consumer(value)
    if user is not None and user.op_type == "Mul":
        vec = channel_vector(_const_operand(user, value), rank, channels)
        if vec is not None and static_shape(user.outputs[0]) == static_shape(value):
            nodes.append(user)
            gamma = vec.astype(np.float32)
            value = user.outputs[0]
            user = single_consumer(value)
    if user is not None and user.op_type == "Add":
        vec = channel_vector(_const_operand(user, value), rank, channels)
        if vec is not None and static_shape(user.outputs[0]) == static_shape(value):
            nodes.append(user)
            beta = vec.astype(np.float32)
    return nodes, gamma, beta


@dataclass
class GroupNormMatch:
    x: ir.Value  # the (N, C, *S) input
    groups: int
    epsilon: float
    scale: np.ndarray  # per channel, InstanceNormalization's and the Mul's folded together
    bias: np.ndarray
    nodes: list[ir.Node] = field(default_factory=list)  # every node of the pattern, in order

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]


def match_group_norm(node: ir.Node) -> GroupNormMatch | None:
    """``node`` (an InstanceNormalization) as the centre of an exported ``nn.GroupNorm``, or None."""
    if node.op_type != "InstanceNormalization" or node.domain != "" or len(node.inputs) != 3:
        return None
    s, b = const_array(node.inputs[1]), const_array(node.inputs[2])
    y, z = node.inputs[0], node.outputs[0]
    ys = static_shape(y)
    if s is None or b is None or ys is None or len(ys) < 3 or s.shape != (ys[1],) or b.shape != (ys[1],):
        return None
    groups = ys[1]
    pre, nodes = y.producer(), []
    if pre is not None and pre.op_type == "Reshape" and pre.domain == "" and single_consumer(y) is not None:
        x, post = pre.inputs[0], single_consumer(z)
        xs = static_shape(x)
        if (xs is None or len(xs) < 3 or xs[1] % groups or post is None or post.op_type != "Reshape"
                or ys != (xs[0], groups, int(np.prod(xs[1:])) // groups) or static_shape(post.outputs[0]) != xs):
            return None
        nodes, out = [pre, node, post], post.outputs[0]
    else:
        x, xs, nodes, out = y, ys, [node], z
    channels = xs[1]
    affine, gamma, beta = _affine_after(out, len(xs), channels)
    per = channels // groups
    scale = gamma * np.repeat(s.astype(np.float32), per)
    bias = gamma * np.repeat(b.astype(np.float32), per) + beta
    eps = node.attributes.get_float("epsilon", 1e-5)
    return GroupNormMatch(x, groups, eps, scale.astype(np.float32), bias.astype(np.float32), nodes + affine)


@dataclass
class LrnMatch:
    x: ir.Value
    size: int
    alpha: float
    beta: float
    bias: float
    nodes: list[ir.Node]

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]


def _shape_chain(value: ir.Value, nodes: list[ir.Node]) -> ir.Value:
    """Follow single-consumer shape ops from ``value``; append them to ``nodes``; return the last value."""
    while True:
        user = single_consumer(value)
        if user is None or user.op_type not in ops_with("shape") or user.domain != "":
            return value
        nodes.append(user)
        value = user.outputs[0]


def _pad_channels(pad: ir.Node, rank: int) -> tuple[int, int] | None:
    """(before, after) of a zero Pad that pads only axis 2 of a rank-``rank`` tensor."""
    if pad.attributes.get_string("mode", "constant") != "constant":
        return None
    pads = const_array(pad.inputs[1]) if len(pad.inputs) > 1 else None
    value = pad.inputs[2] if len(pad.inputs) > 2 else None
    if pads is None or (value is not None and _scalar(value) != 0.0):
        return None
    axes = list(range(rank))
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        given = const_array(pad.inputs[3])
        if given is None:
            return None
        axes = [int(a) % rank for a in given.reshape(-1)]
    pads = pads.reshape(-1).tolist()
    width = {a: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    if any(w != (0, 0) for a, w in width.items() if a != 2):
        return None
    return width.get(2, (0, 0))


def match_lrn(square: ir.Node) -> LrnMatch | None:
    """``square`` (a ``Mul(x, x)``) as the start of an exported ``nn.LocalResponseNorm``, or None."""
    if square.op_type != "Mul" or square.domain != "" or len(square.inputs) != 2 \
            or square.inputs[0] is not square.inputs[1]:
        return None
    x = square.inputs[0]
    xs = static_shape(x)
    if xs is None or len(xs) != 4:
        return None  # onnxruntime, the referee, runs LRN on 4-D tensors only
    nodes = [square]
    v = _shape_chain(square.outputs[0], nodes)
    vs = static_shape(v)
    if len(nodes) < 2 or vs is None or len(vs) < 4 or vs[:3] != (xs[0], 1, xs[1]):
        return None
    user = single_consumer(v)
    before = after = 0
    if user is not None and user.op_type == "Pad" and user.domain == "":
        window = _pad_channels(user, len(vs))
        if window is None:
            return None
        before, after = window
        nodes.append(user)
        v, user = user.outputs[0], single_consumer(user.outputs[0])
    if user is None or user.op_type != "AveragePool" or user.domain != "":
        return None
    nd = len(vs) - 2
    kernel = user.attributes.get_ints("kernel_shape")
    size = kernel[0] if kernel else 0
    a = user.attributes
    if (kernel is None or list(kernel[1:]) != [1] * (nd - 1) or a.get_string("auto_pad", "NOTSET") != "NOTSET"
            or any(a.get_ints("pads", [0] * 2 * nd)) or any(s != 1 for s in a.get_ints("strides", [1] * nd))
            or a.get_int("ceil_mode", 0) or any(d != 1 for d in a.get_ints("dilations", [1] * nd))):
        return None
    if (before, after) != ((size - 1) // 2, size // 2):
        return None  # not ONNX's window (PyTorch's even sizes centre it one channel earlier)
    nodes.append(user)
    v = _shape_chain(user.outputs[0], nodes)
    if static_shape(v) != xs:
        return None
    scalars = []
    for op in ("Mul", "Add", "Pow"):
        user = single_consumer(v)
        if user is None or user.op_type != op:
            return None
        other = _const_operand(user, v)
        if other is None or other.size != 1 or (op == "Pow" and user.inputs[0] is not v):
            return None
        scalars.append(float(other.reshape(())))
        nodes.append(user)
        v = user.outputs[0]
    div = single_consumer(v)
    if div is None or div.op_type != "Div" or div.inputs[0] is not x or div.inputs[1] is not v:
        return None
    alpha, bias, beta = scalars
    return LrnMatch(x, int(size), alpha, beta, bias, nodes + [div])


def module_name(node: ir.Node) -> str | None:
    """The PyTorch submodule a node was exported from (``layer1.0.norm``), from the exporter's metadata."""
    try:
        scopes = ast.literal_eval(node.metadata_props.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        return None
    path = ".".join(str(s) for s in scopes[1:-1]) if isinstance(scopes, list) else ""
    return path or None


def _replace(graph: ir.Graph, nodes: list[ir.Node], new: ir.Node, new_out: ir.Value) -> None:
    """Route the pattern's output to ``new_out``, drop the pattern's nodes; ``new`` takes their names."""
    old = nodes[-1].outputs[0]
    name = module_name(nodes[-1]) or nodes[-1].name
    was_output = old.is_graph_output()
    replace_value(graph, old, new_out)
    for node in reversed(nodes):
        remove_if_dead(graph, node)
    new.name = name
    if not was_output and old.name:
        public, old.name = old.name, fresh_name(graph, old.name)
        new_out.name = public


def _fuse_group_norm(graph: ir.Graph, m: GroupNormMatch) -> bool:
    """One group per channel: ``InstanceNormalization(x)`` with the affine folded into its scale and bias."""
    shape = static_shape(m.x)
    if m.groups != shape[1] or len(m.nodes) == 1:
        return False
    ins = [m.x, add_initializer(graph, m.scale, "scale"), add_initializer(graph, m.bias, "bias")]
    new = make_node(graph, "InstanceNormalization", ins, {"epsilon": float(m.epsilon)}, hint="instance_norm",
                    before=m.nodes[-1], shape=shape, dtype=m.x.dtype)
    _replace(graph, m.nodes, new, new.outputs[0])
    return True


def group_norm_chains(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node]]:
    """``(Reshape, Reshape)``: first and last node of each exported GroupNorm with 1 <= G < C.

    ONNX has no op for it before opset 21 (and opset 18's ``GroupNormalization``, deprecated,
    scales per group), so the chain stays as it is; ``ChannelsLast`` wraps it as a whole.
    """
    chains = []
    for node in graph:
        m = match_group_norm(node) if node.op_type == "InstanceNormalization" else None
        if m is not None and m.nodes[0].op_type == "Reshape" and m.groups < static_shape(m.x)[1] \
                and 3 <= len(static_shape(m.x)) <= 5:
            chains.append((m.nodes[0], m.nodes[2]))
    return chains


def _fuse_lrn(graph: ir.Graph, m: LrnMatch) -> bool:
    attrs = {"size": int(m.size), "alpha": float(m.alpha), "beta": float(m.beta), "bias": float(m.bias)}
    new = make_node(graph, "LRN", [m.x], attrs, hint="lrn", before=m.nodes[-1], shape=static_shape(m.x),
                    dtype=m.x.dtype)
    _replace(graph, m.nodes, new, new.outputs[0])
    return True


def fuse_patterns(graph: ir.Graph) -> bool:
    """Rewrite every exported GroupNorm / LocalResponseNorm pattern in ``graph`` as one op."""
    changed = False
    for node in list(graph):
        if node.graph is None:
            continue
        if node.op_type == "InstanceNormalization":
            m = match_group_norm(node)
            changed |= m is not None and _fuse_group_norm(graph, m)
        elif node.op_type == "Mul":
            m = match_lrn(node)
            changed |= m is not None and _fuse_lrn(graph, m)
    return changed


# Ops whose output has their input's shape but that ONNX's shape inference leaves without
# one (their function bodies are built per attribute, which the inference does not expand).
SHAPE_KEEPING = {"GroupNormalization"}


def fill_kept_shapes(graph: ir.Graph) -> bool:
    """Give each ``SHAPE_KEEPING`` node without an output shape its input's; True if any was set."""
    changed = False
    for node in graph:
        if node.op_type in SHAPE_KEEPING and node.domain == "" and node.outputs[0].shape is None:
            x = node.inputs[0]
            if x is not None and x.shape is not None:
                node.outputs[0].shape, node.outputs[0].dtype = x.shape, x.dtype
                changed = True
    return changed
