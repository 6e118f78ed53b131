"""Fusions into a Conv-like producer.

``FuseConvBias``: Conv -> Add(per-channel constant) becomes Conv with a bias.
tf2onnx emits a Keras layer's bias as a separate ``Add`` after the Conv (and
after the layout transposes, which the transpose optimizer then moves away).
Folding it back is exact: the Conv adds its bias per output channel, which is
what the broadcast ``Add`` of a ``(1, C, 1, ...)`` constant does.

``FoldBatchNorm`` (opt-in, ``--fold-bn``): an inference ``BatchNormalization``
is an affine map per channel, ``y = a * x + s`` with ``a = scale / sqrt(var +
eps)`` and ``s = B - mean * a``; when it is the only consumer of a Conv,
ConvTranspose, Gemm or 2-D MatMul with a constant weight, ``a`` is multiplied
into that weight's output channels and ``s`` into its bias.  TensorFlow lowers
a Keras BatchNormalization to ``Mul`` + ``Add`` by per-channel constants before
tf2onnx sees it, so a Conv/ConvTranspose -> ``Mul(per-channel constant)`` is
folded the same way (and the ``Add`` then becomes the bias).  Exact up to
float rounding, but the BatchNorm layer disappears from the converted model,
which is why it runs only when asked for.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .graph import (
    add_initializer,
    const_array,
    make_node,
    rank_of,
    remove_if_dead,
    replace_value,
    single_consumer,
    static_shape,
)


def _channel_vector(arr: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    if arr.ndim > rank:
        return None
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    want = [1, channels] + [1] * (rank - 2)
    if list(full.shape) == want or (full.size == 1 and channels == 1):
        return full.reshape(channels)
    return None


class FuseConvBias(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed = False
        for node in list(graph):
            if node.op_type not in ("Conv", "ConvTranspose") or node.domain != "" or node.graph is None:
                continue
            add = single_consumer(node.outputs[0])
            if add is None or add.op_type != "Add" or add.domain != "":
                continue
            other = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
            arr, w = const_array(other), const_array(node.inputs[1])
            rank = rank_of(node.outputs[0])
            if arr is None or w is None or rank is None or add.outputs[0].shape != node.outputs[0].shape:
                continue
            group = node.attributes.get_int("group", 1)
            channels = w.shape[1] * group if node.op_type == "ConvTranspose" else w.shape[0]
            vec = _channel_vector(arr, rank, channels)
            if vec is None:
                continue
            old = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            if len(node.inputs) > 2 and node.inputs[2] is not None and old is None:
                continue
            bias = vec.astype(w.dtype) if old is None else (old + vec).astype(w.dtype)
            value = add_initializer(graph, bias, (node.name or "conv") + "_bias")
            if len(node.inputs) < 3:
                node.resize_inputs(3)
            node.replace_input_with(2, value)
            replace_value(graph, add.outputs[0], node.outputs[0])
            remove_if_dead(graph, add)
            changed = True
        return ir.passes.PassResult(model, changed)


def _bn_affine(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, s)`` in float64 with ``BN(x) = a * x + s`` per channel, or None if BN is not foldable.

    Foldable means: default domain, inference mode, only output 0 in use,
    per-channel (``spatial`` = 1 in old opsets) and all four parameters constant.
    """
    if bn.domain != "" or bn.attributes.get_int("training_mode", 0) != 0 or bn.attributes.get_int("spatial", 1) != 1:
        return None
    if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return None
    params = [const_array(v) for v in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None or p.ndim != 1 for p in params):
        return None
    scale, shift, mean, var = (p.astype(np.float64) for p in params)
    if not (scale.shape == shift.shape == mean.shape == var.shape):
        return None
    eps = bn.attributes.get_float("epsilon", 1e-5)
    a = scale / np.sqrt(var + eps)
    return a, shift - mean * a


def _replace_const(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, hint: str) -> None:
    """Set ``node``'s input ``index`` to ``array``: in place for an initializer only it uses, else a new one.

    Rewriting in place keeps the weight's name (``conv1.weight``), from which the
    importers name the layer; a shared or Constant-node weight gets a fresh initializer.
    """
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is not None and value.is_initializer() and len(value.uses()) == 1 and not value.is_graph_input():
        value.const_value = ir.tensor(np.ascontiguousarray(array), name=value.name)
        value.shape, value.dtype = ir.Shape(array.shape), ir.DataType.from_numpy(array.dtype)
        return
    new = add_initializer(graph, array, hint)
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


def _optional_const(node: ir.Node, index: int) -> tuple[bool, np.ndarray | None]:
    """``(ok, array)`` for an optional input: ok is False when it exists but is not a constant."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return True, None
    arr = const_array(node.inputs[index])
    return arr is not None, arr


def _fold_into_conv(graph: ir.Graph, conv: ir.Node, a: np.ndarray, s: np.ndarray) -> bool:
    """Scale a Conv/ConvTranspose's output channels by ``a`` and add ``s`` to its bias."""
    w = const_array(conv.inputs[1])
    ok, b = _optional_const(conv, 2)
    if w is None or not ok or w.ndim < 3:
        return False
    group = conv.attributes.get_int("group", 1)
    if conv.op_type == "Conv":  # (C_out, C_in/g, k...): output channel = axis 0
        if w.shape[0] != a.size:
            return False
        w_new = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
    else:  # ConvTranspose (C_in, C_out/g, k...): output channel = group(c_in) * C_out/g + j
        c_in, per_group = w.shape[0], w.shape[1]
        if per_group * group != a.size or c_in % group:
            return False
        grouped = w.reshape((group, c_in // group) + w.shape[1:])
        factor = a.reshape((group, 1, per_group) + (1,) * (w.ndim - 2))
        w_new = (grouped * factor).reshape(w.shape)
    bias = s if b is None else b.astype(np.float64) * a + s
    hint = conv.inputs[1].name or conv.name or "conv"
    _replace_const(graph, conv, 1, w_new.astype(w.dtype), hint + "_bn")
    if b is not None or np.any(s):
        _replace_const(graph, conv, 2, bias.astype(w.dtype), hint + "_bn_bias")
    return True


def _fold_channel_mul(graph: ir.Graph, mul: ir.Node) -> bool:
    """Conv/ConvTranspose -> Mul(per-channel constant), the Conv's only consumer: scale the Conv instead."""
    for i in (0, 1):
        conv, arr = mul.inputs[i].producer(), const_array(mul.inputs[1 - i])
        if conv is not None and conv.op_type in ("Conv", "ConvTranspose") and conv.domain == "" and arr is not None:
            break
    else:
        return False
    w, rank = const_array(conv.inputs[1]), rank_of(conv.outputs[0])
    if single_consumer(conv.outputs[0]) is not mul or w is None or rank is None:
        return False
    if mul.outputs[0].shape != conv.outputs[0].shape:
        return False
    group = conv.attributes.get_int("group", 1)
    channels = w.shape[1] * group if conv.op_type == "ConvTranspose" else w.shape[0]
    vec = _channel_vector(arr, rank, channels)
    if vec is None or not _fold_into_conv(graph, conv, vec.astype(np.float64), np.zeros(channels)):
        return False
    replace_value(graph, mul.outputs[0], conv.outputs[0])
    remove_if_dead(graph, mul)
    return True


def _fold_into_gemm(graph: ir.Graph, gemm: ir.Node, a: np.ndarray, s: np.ndarray) -> bool:
    """``alpha * A @ B' + beta * C`` -> scale B''s columns by ``a``; C becomes ``beta * C * a + s``, beta 1."""
    w = const_array(gemm.inputs[1])
    ok, c = _optional_const(gemm, 2)
    if w is None or not ok or w.ndim != 2:
        return False
    trans_b = gemm.attributes.get_int("transB", 0)
    units = w.shape[0] if trans_b else w.shape[1]
    if units != a.size:
        return False
    w_new = w * (a[:, None] if trans_b else a[None, :])
    beta = gemm.attributes.get_float("beta", 1.0)
    if c is None:
        c_new = s
    else:
        c_new = beta * c.astype(np.float64) * a + s  # broadcasts (), (M,), (1, M), (N, M) on the last axis
        if c_new.shape[-1:] != a.shape:
            return False
    hint = gemm.inputs[1].name or gemm.name or "gemm"
    _replace_const(graph, gemm, 1, w_new.astype(w.dtype), hint + "_bn")
    _replace_const(graph, gemm, 2, c_new.astype(w.dtype), hint + "_bn_bias")
    gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    return True


def _fold_into_matmul(graph: ir.Graph, matmul: ir.Node, bn: ir.Node, a: np.ndarray, s: np.ndarray) -> bool:
    """``(N, K) @ B(K, M)`` -> scale B's columns by ``a``; the BN becomes ``Add(s)``."""
    w = const_array(matmul.inputs[1])
    if w is None or w.ndim != 2 or w.shape[1] != a.size or rank_of(matmul.inputs[0]) != 2:
        return False
    hint = matmul.inputs[1].name or matmul.name or "matmul"
    _replace_const(graph, matmul, 1, (w * a[None, :]).astype(w.dtype), hint + "_bn")
    shift = add_initializer(graph, s.astype(w.dtype), hint + "_bn_bias")
    add = make_node(graph, "Add", [matmul.outputs[0], shift], hint=(bn.name or "bn") + "_shift", before=bn,
                    shape=static_shape(bn.outputs[0]), dtype=bn.outputs[0].dtype)
    replace_value(graph, bn.outputs[0], add.outputs[0])
    return True


def _fold_batch_norm(graph: ir.Graph, bn: ir.Node) -> bool:
    """Fold ``bn`` into its producer if that is a foldable Conv/ConvTranspose/Gemm/MatMul feeding only it."""
    producer = bn.inputs[0].producer()
    if producer is None or producer.domain != "" or single_consumer(bn.inputs[0]) is not bn:
        return False
    if producer.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return False
    affine = _bn_affine(bn)
    if affine is None:
        return False
    a, s = affine
    if producer.op_type == "MatMul":
        if not _fold_into_matmul(graph, producer, bn, a, s):
            return False
    else:
        fold = _fold_into_gemm if producer.op_type == "Gemm" else _fold_into_conv
        if not fold(graph, producer, a, s):
            return False
        replace_value(graph, bn.outputs[0], producer.outputs[0])
    remove_if_dead(graph, bn)
    return True


class FoldBatchNorm(ir.passes.InPlacePass):
    """Fold inference BatchNorm (an ONNX op, or TF's per-channel Mul) into the Conv/Gemm/MatMul before it."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed = False
        for node in list(graph):
            if node.graph is None or node.domain != "":
                continue
            if node.op_type == "BatchNormalization":
                changed |= _fold_batch_norm(graph, node)
            elif node.op_type == "Mul":
                changed |= _fold_channel_mul(graph, node)
        if changed:  # a Keras BN's Add now follows its Conv directly: make it the bias
            FuseConvBias()(model)
        return ir.passes.PassResult(model, changed)
