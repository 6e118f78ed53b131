"""Recurrent layers: LSTM, GRU, RNN; ReverseSequence; the refusal of Loop and Scan.

The reader checks what a native one-layer ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` or
``keras.layers.LSTM`` / ``GRU`` / ``SimpleRNN`` can express (default activations, no clipping,
zero initial state, full-length sequences) and returns the weights per direction in
ONNX gate order; ``gate_blocks`` reorders them for a target.

Gate orders: ONNX LSTM ``i o f c``, PyTorch ``i f g o``, Keras ``i f c o``;
ONNX GRU ``z r h``, PyTorch ``r z n``, Keras ``z r h``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ...normalize.graph import const_array, static_shape
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register

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


def used(value: ir.Value | None) -> bool:
    """Whether an (optional) output is read by a node or is a graph output."""
    return value is not None and bool(value.name) and (bool(value.uses()) or value.is_graph_output())


def gate_blocks(arr: np.ndarray, order: list[int]) -> np.ndarray:
    """``arr``'s gate blocks along axis 0 (``len(order)`` equal parts), in ``order``."""
    parts = np.split(np.asarray(arr), len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=0))


@dataclass
class Recurrent:
    """One ONNX LSTM/GRU/RNN node, checked; arrays are per direction, in ONNX gate order.

    ``want``: which of the outputs Y, Y_h, Y_c are read.
    """

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
    want: tuple[bool, bool, bool]

    @property
    def dirs(self) -> int:
        return 2 if self.direction == "bidirectional" else 1


def _is_zero_const(t: Translation, i: int, what: str) -> None:
    """Refuse input ``i`` unless it is absent or a constant zero."""
    if not t.has_input(i):
        return
    arr = t.const(i)
    if arr is None or np.any(arr):
        t.unsupported(f"{what} must be zero (non-zero or computed {what} is not supported)")


def read_recurrent(t: Translation) -> Recurrent:
    """Check an ONNX LSTM/GRU/RNN node and return its parts; ``t.unsupported`` with the reason otherwise."""
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
    outs = list(t.node.outputs) + [None] * 3
    want = (used(outs[0]), used(outs[1]), kind == "LSTM" and used(outs[2]))
    return Recurrent(kind, int(hidden), direction, int(steps), int(batch), int(shape[2]),
                     w.astype(np.float32), r.astype(np.float32), wb, rb, t.int("linear_before_reset", 0), want)


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


def _hint(name: str, t: Translation) -> str:
    """The layer's name without tf2onnx's ``__<n>`` suffix."""
    return re.sub(r"__\d+$", "", name).lower() or t.op.lower()


@register
class RecurrentLayer(Op):
    """One ONNX LSTM/GRU/RNN node -> one native recurrent layer (ONNX stacks layers as separate nodes).

    The output Y is ``(T, D, N, H)``; a following Squeeze of the direction axis, or the
    Transpose/Reshape that joins both directions, is read back as the layer's own output shape.
    """

    types = ("LSTM", "GRU", "RNN")

    def read(self, t: Translation) -> Recurrent:
        return read_recurrent(t)

    def torch(self, t: Translation, rnn: Recurrent) -> None:
        """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, time-major as ONNX; ``direction="reverse"`` runs the forward
        module on the flipped sequence and flips its output back."""
        if rnn.kind == "GRU" and not rnn.linear_before_reset:
            t.unsupported("GRU with linear_before_reset=0 (nn.GRU applies the reset gate after the recurrent matmul)")
        state = self._torch_state(rnn, TORCH_ORDERS[rnn.kind])
        args = [str(rnn.features), str(rnn.hidden)] + (["bias=False"] if rnn.wb is None else [])
        args += ["bidirectional=True"] if rnn.dirs == 2 else []
        mod = T.module(t, f"nn.{rnn.kind}({', '.join(args)})", state, name=_hint(T.hint(t), t))
        reverse = rnn.direction == "reverse"
        x = f"{t.inp(0)}.flip(0)" if reverse else t.inp(0)
        want_y, want_h, want_c = rnn.want
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

    @staticmethod
    def _torch_state(rnn: Recurrent, order: list[int]) -> dict:
        """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` state dict entries for one layer, gate blocks in PyTorch's order."""
        state = {}
        for d in range(rnn.dirs):
            sfx = "_reverse" if d else ""
            state[f"weight_ih_l0{sfx}"] = gate_blocks(rnn.w[d], order)
            state[f"weight_hh_l0{sfx}"] = gate_blocks(rnn.r[d], order)
            if rnn.wb is not None:
                state[f"bias_ih_l0{sfx}"] = gate_blocks(rnn.wb[d], order)
                state[f"bias_hh_l0{sfx}"] = gate_blocks(rnn.rb[d], order)
        return state

    def keras(self, t: Translation, rnn: Recurrent) -> None:
        """``layers.LSTM`` / ``GRU`` / ``SimpleRNN`` on a batch-major sequence.

        ``bidirectional`` is ``layers.Bidirectional`` (concatenated outputs, backward aligned in time);
        ``reverse`` is ``go_backwards=True``, whose reversed output is flipped back.
        """
        want_y, want_h, want_c = rnn.want
        hint = _hint(t.layer_hint(), t)
        x = t.gen.names.take(hint + "_in")
        t.gen.emit(f"{x} = ops.transpose({t.inp(0)}, (1, 0, 2))", "time-major -> batch-major")
        layer = self._keras_layer(t, rnn, want_h or want_c, hint)
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
                t.assign(f"ops.transpose(ops.reshape({y}, ({rnn.batch}, {rnn.steps}, 2, {rnn.hidden})), "
                         f"(1, 2, 0, 3))", 0)
            else:
                t.assign(f"ops.expand_dims(ops.transpose({y}, (1, 0, 2)), 1)", 0)
        for j, pos in ((1, 0), (2, 1)):  # ONNX Y_h / Y_c: (D, N, H)
            if (j == 1 and want_h) or (j == 2 and want_c):
                parts = states[pos::len(per_dir)]
                both = f"ops.stack([{', '.join(parts)}], axis=0)"
                t.assign(both if rnn.dirs == 2 else f"ops.expand_dims({parts[0]}, 0)", j)

    @staticmethod
    def _keras_weights(rnn: Recurrent, d: int) -> list[np.ndarray]:
        """Keras weights of direction ``d``: kernel ``(C, G*H)``, recurrent ``(H, G*H)``, bias.

        LSTM and SimpleRNN have one bias (ONNX's two summed); GRU ``reset_after=True`` keeps both as ``(2, 3H)``.
        """
        order = KERAS_ORDERS[rnn.kind]
        weights = [gate_blocks(rnn.w[d], order).T, gate_blocks(rnn.r[d], order).T]
        if rnn.wb is not None:
            wb, rb = gate_blocks(rnn.wb[d], order), gate_blocks(rnn.rb[d], order)
            weights.append(np.stack([wb, rb]) if rnn.kind == "GRU" and rnn.linear_before_reset else wb + rb)
        return [np.ascontiguousarray(w) for w in weights]

    def _keras_layer(self, t: Translation, rnn: Recurrent, return_state: bool, hint: str) -> str:
        """The ``layers.LSTM/GRU`` (or ``Bidirectional``) constructor; its weights are registered with the layer."""
        args = [str(rnn.hidden), "return_sequences=True"] + (["return_state=True"] if return_state else [])
        if rnn.wb is None:
            args.append("use_bias=False")
        if rnn.kind == "GRU" and not rnn.linear_before_reset:
            args.append("reset_after=False")
        if rnn.direction == "reverse":
            args.append("go_backwards=True")
        weights = [w for d in range(rnn.dirs) for w in self._keras_weights(rnn, d)]
        name = t.gen.add_layer(hint, weights)
        cls = "SimpleRNN" if rnn.kind == "RNN" else rnn.kind
        if rnn.dirs == 2:
            return f"layers.Bidirectional(layers.{cls}({', '.join(args)}), name={name!r})"
        return f"layers.{cls}({', '.join(args + [f'name={name!r}'])})"


@dataclass
class Reversal:
    """ReverseSequence with constant lengths: ``time_axis``, and for sequences shorter than the time
    axis the row of ``x`` flattened over (time, batch) that each output row reads (None: a plain flip)."""

    time_axis: int
    rows: np.ndarray | None


@register
class ReverseSequence(Op):
    """Each batch entry's first ``sequence_lens[b]`` steps reversed, the rest left in place."""

    types = ("ReverseSequence",)

    def read(self, t: Translation) -> Reversal:
        time_axis, batch_axis = t.int("time_axis", 0), t.int("batch_axis", 1)
        shape = t.shape(0)
        lens = t.need_const(1, "sequence_lens").astype(np.int64).reshape(-1)
        steps, batch = shape[time_axis], shape[batch_axis]
        if np.all(lens == steps):
            return Reversal(time_axis, None)
        step = np.arange(steps)[:, None]
        src = np.where(step < lens[None, :], lens[None, :] - 1 - step, step)  # (T, B): the step each output reads
        b = np.arange(batch)[None, :]
        # each output row's source row in x flattened over its first two axes, (time, batch) or (batch, time)
        rows = src * batch + b if time_axis == 0 else (b * steps + src).T
        return Reversal(time_axis, rows.reshape(-1))

    def torch(self, t: Translation, p: Reversal) -> None:
        x = t.inp(0)
        if p.rows is None:
            t.assign(f"{x}.flip({p.time_axis})")
            return
        rows = T.buffer(t, f"{T.hint(t)}_rows", p.rows)
        shape = t.shape(0)
        t.assign(f"{x}.reshape({p.rows.size}, -1)[{rows}].reshape{T.shape_args(shape)}",
                 comment="each sequence reversed over its own length")

    def keras(self, t: Translation, p: Reversal) -> None:
        x = t.inp(0)
        if p.rows is None:
            t.assign(f"ops.flip({x}, axis={p.time_axis})")
            return
        rows = K.new_constant(t, p.rows, "rows")
        t.assign(f"ops.reshape(ops.take(ops.reshape({x}, ({p.rows.size}, -1)), {rows}, axis=0), {tuple(t.shape(0))})",
                 comment="each sequence reversed over its own length")


@register
class Loop(Op):
    """No native layer is recovered from a control-flow loop: refused with the reason, for both targets."""

    types = ("Loop", "Scan")
    refusals = {"torch": LOOP_REFUSAL, "keras": LOOP_REFUSAL}
