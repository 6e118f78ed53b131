"""ONNX LSTM / GRU / RNN nodes, read once for every target.

``read_recurrent`` checks what a native one-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` or
``keras.layers.LSTM`` / ``GRU`` / ``SimpleRNN`` can express (default activations, no clipping,
zero initial state, full-length sequences) and returns the weights per
direction in ONNX gate order; ``gate_blocks`` reorders them for a target.

Gate orders: ONNX LSTM ``i o f c``, PyTorch ``i f g o``, Keras ``i f c o``;
ONNX GRU ``z r h``, PyTorch ``r z n``, Keras ``z r h``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ..normalize.graph import const_array, static_shape
from .codegen import Translation

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Why a Loop/Scan is refused (normalize.recurrent turns a Keras GRU's or SimpleRNN's Loop into a GRU/RNN first)
LOOP_REFUSAL = ("a control-flow loop (tf2onnx writes a masked Keras GRU/SimpleRNN, a GRU with reset_after=False, "
                "non-default activations or a tf.while_loop this way); no native layer is recovered from its body")
ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}
# For each target gate, the ONNX gate block it comes from.
LSTM_IFCO = [0, 2, 3, 1]  # PyTorch i f g o and Keras i f c o, from ONNX i o f c
GRU_RZN = [1, 0, 2]  # PyTorch r z n, from ONNX z r h
GRU_ZRH = [0, 1, 2]  # Keras z r h: ONNX's own order
KERAS_ORDERS = {"LSTM": LSTM_IFCO, "GRU": GRU_ZRH, "RNN": [0]}  # each target's gate order per kind
TORCH_ORDERS = {"LSTM": LSTM_IFCO, "GRU": GRU_RZN, "RNN": [0]}


@dataclass
class Recurrent:
    """One ONNX LSTM/GRU node, checked; arrays are per direction, in ONNX gate order."""

    kind: str  # "LSTM" | "GRU" | "RNN"
    hidden: int
    direction: str  # forward | reverse | bidirectional
    steps: int
    batch: int
    features: int
    w: np.ndarray  # (D, G*H, C)
    r: np.ndarray  # (D, G*H, H)
    wb: np.ndarray | None  # (D, G*H), None when the node has no bias
    rb: np.ndarray | None
    linear_before_reset: int

    @property
    def dirs(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def used(value: ir.Value | None) -> bool:
    """Whether an (optional) output is read by a node or is a graph output."""
    return value is not None and bool(value.name) and (bool(value.uses()) or value.is_graph_output())


def gate_blocks(arr: np.ndarray, order: list[int]) -> np.ndarray:
    """``arr``'s gate blocks along axis 0 (``len(order)`` equal parts), in ``order``."""
    parts = np.split(np.asarray(arr), len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=0))


def _is_zero_const(t: Translation, i: int, what: str) -> None:
    """Refuse input ``i`` unless it is absent or a constant zero."""
    if not t.has_input(i):
        return
    arr = t.const(i)
    if arr is None or np.any(arr):
        t.unsupported(f"{what} must be zero (non-zero or computed {what} is not supported)")


def read_recurrent(t: Translation) -> Recurrent:
    """Check an ONNX LSTM/GRU node and return its parts; ``t.unsupported`` with the reason otherwise."""
    kind = t.op
    direction = t.str("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    acts = [a.lower() for a in (t.node.attributes.get_strings("activations", None) or [])]
    if acts and acts != ACTIVATIONS[kind] * dirs:
        t.unsupported(f"{kind} activations {acts} (only the defaults {ACTIVATIONS[kind]})")
    for name in ("activation_alpha", "activation_beta", "clip"):
        if name in t.node.attributes:
            t.unsupported(f"{kind} attribute {name}")
    if t.int("input_forget", 0):
        t.unsupported("LSTM with input_forget=1 (coupled input and forget gates)")
    if t.int("layout", 0):
        t.unsupported(f"{kind} with layout=1 (batch-major), which onnxruntime cannot run to check it")
    shape = t.shape(0)  # (T, N, C); Y is (T, D, N, H), Y_h and Y_c (D, N, H)
    steps, batch = shape[0], shape[1]
    w, r = t.need_const(1, "W"), t.need_const(2, "R")
    hidden = t.int("hidden_size", r.shape[-1])
    b = t.const(3) if t.has_input(3) else None
    if t.has_input(3) and b is None:
        t.unsupported("the bias B must be a constant")
    if t.has_input(4):
        lens = t.const(4)
        if lens is None or np.any(lens != steps):
            t.unsupported("sequence_lens (variable-length sequences)")
    _is_zero_const(t, 5, "initial_h")
    if kind == "LSTM":
        _is_zero_const(t, 6, "initial_c")
        _is_zero_const(t, 7, "peephole weights P")
    wb = rb = None
    if b is not None and np.any(b):
        wb, rb = np.split(b.astype(np.float32), 2, axis=1)
    return Recurrent(kind, int(hidden), direction, int(steps), int(batch), int(shape[2]),
                     w.astype(np.float32), r.astype(np.float32), wb, rb, t.int("linear_before_reset", 0))


def direction_squeeze(t: Translation) -> ir.Node | None:
    """The Squeeze of axis 1 (the direction axis) that is the only reader of a recurrent node's Y."""
    node = t.only_consumer(0)
    if node is None or node.op_type != "Squeeze" or node.domain != "":
        return None
    axes = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None:
        axes = node.attributes.get_ints("axes", None)
    return node if axes is not None and [int(a) % 4 for a in np.asarray(axes).reshape(-1)] == [1] else None


def joined_directions(t: Translation) -> ir.Node | None:
    """The ``Reshape`` ending ``Y -> Transpose(0, 2, 1, 3) -> Reshape(T, N, 2H)`` of a bidirectional
    node: both directions' features side by side per step, as PyTorch's output and Keras' Bidirectional
    concatenation have them."""
    first = t.only_consumer(0)
    if first is None or first.op_type != "Transpose" or first.domain != "":
        return None
    if list(first.attributes.get_ints("perm", [])) != [0, 2, 1, 3]:
        return None
    uses = list(first.outputs[0].uses())
    if len(uses) != 1 or first.outputs[0].is_graph_output():
        return None
    second = uses[0].node
    y, out = static_shape(t.node.outputs[0]), static_shape(second.outputs[0])
    if second.op_type != "Reshape" or second.domain != "" or y is None or out is None or len(y) != 4:
        return None
    steps, dirs, batch, hidden = y
    return second if out == (steps, batch, dirs * hidden) else None
