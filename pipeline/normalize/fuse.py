"""``FuseConvBias``: Conv -> Add(per-channel constant) becomes Conv with a bias.

tf2onnx emits a Keras layer's bias as a separate ``Add`` after the Conv (and
after the layout transposes, which the transpose optimizer then moves away).
Folding it back is exact: the Conv adds its bias per output channel, which is
what the broadcast ``Add`` of a ``(1, C, 1, ...)`` constant does.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .graph import add_initializer, const_array, rank_of, remove_if_dead, replace_value, single_consumer


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
