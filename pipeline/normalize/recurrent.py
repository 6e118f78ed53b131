"""A ``Loop`` that runs a GRU or simple RNN cell, recognised as the one ONNX ``GRU`` / ``RNN``
node it computes.

tf2onnx recovers an ONNX ``GRU`` only from the tf.keras 2 cell (and no ``RNN`` at all); a
Keras 3 ``layers.GRU`` or ``SimpleRNN`` reaches ONNX as a ``Loop`` over the time steps whose
body is the cell written out.  The GRU cell::

    gx = x_t @ kernel + input_bias             (Gemm, or MatMul + Add)
    x_z, x_r, x_h = split(gx, 3)
    gh = h @ recurrent_kernel + recurrent_bias
    h_z, h_r, h_h = gh[..., :u], gh[..., u:2u], gh[..., 2u:]   (Slice or Split)
    z = sigmoid(x_z + h_z);  r = sigmoid(x_r + h_r)
    h' = z * h + (1 - z) * tanh(x_h + r * h_h)

is ONNX ``GRU`` with ``linear_before_reset=1`` (Keras' ``reset_after=True``, the default, and
PyTorch's ``nn.GRU``); the simple cell ``h' = tanh(x_t @ kernel + bias + h @ recurrent_kernel)``
is ONNX ``RNN`` (``nn.RNN``).  The match is exact, not a guess: every value the body returns
is accounted for (loop condition, time counter, state, loop-invariant weights, the per-step
output), the weights are constants, the step input is ``X[t]`` with ``t`` counting 0, 1, ...
and the loop condition is evaluated for every step to prove the loop runs all ``T`` of them.
Anything else (masking, ``reset_after=False``, other activations, a computed weight) leaves
the ``Loop`` as it is, for the importers to refuse with its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .graph import (add_initializer, compose, const_array, either, fresh_name, is_identity, make_node, perm_of, producer,
                    replace_value, static_shape)


@dataclass
class _Cell:
    kind: str  # "GRU" | "RNN"
    x: ir.Value  # (T, N, I), outside the loop
    kernel: np.ndarray  # (I, G*u), GRU gate columns z r h
    recurrent: np.ndarray  # (u, G*u)
    bias: np.ndarray | None  # (G*u,)
    recurrent_bias: np.ndarray | None
    initial_h: ir.Value  # (N, u)
    final_h: ir.Value  # the Loop output of the state after the last step
    sequence: ir.Value  # the Loop's per-step output (T, N, u)


class LoopAsRecurrent(ir.passes.InPlacePass):
    """Replace each top-level GRU- or RNN-cell ``Loop`` by ``GRU`` / ``RNN`` (+ the squeezes to the Loop's shapes).

    ``then`` runs after each round of replacements: the Loop's outputs had no static length,
    the new node's have, so shape arithmetic downstream (a Bidirectional layer's reversal) folds
    and a stacked layer's Loop gets the static input shape its match needs.
    """

    def __init__(self, then: ir.passes.PassBase | None = None):
        super().__init__()
        self.then = then

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed, progress = False, True
        while progress:  # a GRU's output shape is static, so a Loop reading it may match next round
            progress = False
            for loop in [n for n in model.graph if n.op_type == "Loop" and n.domain == ""]:
                cell = _match(loop)
                if cell is not None:
                    _replace(model.graph, loop, cell)
                    progress = changed = True
            if progress and self.then is not None:
                self.then(model)
        if changed and _merge_bidirectional(model.graph) and self.then is not None:
            self.then(model)
        return ir.passes.PassResult(model, changed)


# -- matching -------------------------------------------------------------------------------

def _through_identity(value: ir.Value) -> ir.Value:
    while (node := producer(value, "Identity")) is not None:
        value = node.inputs[0]
    return value


class _Body:
    """A Loop body: which inputs are the counter, the state and the loop-invariant constants."""

    def __init__(self, loop: ir.Node):
        self.graph = loop.attributes["body"].as_graph()
        ins, outs = list(self.graph.inputs), list(self.graph.outputs)
        self.carried = len(loop.inputs) - 2
        self.ok = len(ins) == 2 + self.carried and len(outs) == 2 + self.carried  # one per-step output
        if not self.ok:
            return
        self.iteration, self.cond_in = ins[0], ins[1]
        self.cond_out, self.scan = outs[0], outs[-1]
        self.state_in = ins[2:]
        self.state_out = outs[1:-1]
        # a carried value the body hands back unchanged: its value is the Loop's input throughout
        self.invariant = {v: loop.inputs[2 + k] for k, v in enumerate(self.state_in) if self.state_out[k] is v}

    def constant(self, value: ir.Value | None) -> np.ndarray | None:
        """The value as a constant: outer constants, loop invariants, and Split/Squeeze/Identity of them."""
        if value is None:
            return None
        if value in self.invariant:
            return const_array(self.invariant[value])
        arr = const_array(value)
        if arr is not None:
            return arr
        node = value.producer()
        if node is None or node.domain != "" or node.graph is not self.graph:
            return None
        if node.op_type == "Identity":
            return self.constant(node.inputs[0])
        if node.op_type == "Squeeze":
            src = self.constant(node.inputs[0])
            axes = self.constant(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
            if src is None or axes is None:
                return None
            return np.squeeze(src, axis=tuple(int(a) % src.ndim for a in axes.reshape(-1)))
        if node.op_type == "Split":
            src = self.constant(node.inputs[0])
            sizes = _split_sizes(node, None if src is None else src.shape, self)
            if src is None or sizes is None:
                return None
            axis = node.attributes.get_int("axis", 0) % src.ndim
            parts = np.split(src, np.cumsum(sizes)[:-1], axis=axis)
            return parts[list(node.outputs).index(value)]
        return None


def _split_sizes(node: ir.Node, shape, body: _Body) -> list[int] | None:
    if shape is None:
        return None
    axis = node.attributes.get_int("axis", 0) % len(shape)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = body.constant(node.inputs[1])
        return None if sizes is None else [int(s) for s in sizes.reshape(-1)]
    n = len(node.outputs)
    if shape[axis] % n:
        return None
    return [shape[axis] // n] * n


def _gate(body: _Body, value: ir.Value, units: int) -> tuple[ir.Value, int] | None:
    """``(source, g)`` when ``value`` is gate block ``g`` (of 3, ``units`` wide) of ``source``'s last axis."""
    split = producer(value, "Split")
    if split is not None and split.graph is body.graph:
        shape = static_shape(split.inputs[0])
        if shape is None or split.attributes.get_int("axis", 0) % len(shape) != len(shape) - 1:
            return None
        if _split_sizes(split, shape, body) != [units] * 3:
            return None
        return split.inputs[0], list(split.outputs).index(value)
    sl = producer(value, "Slice")
    if sl is None or sl.graph is not body.graph:
        return None
    shape = static_shape(sl.inputs[0])
    starts, ends = body.constant(sl.inputs[1]), body.constant(sl.inputs[2])
    axes = body.constant(sl.inputs[3]) if len(sl.inputs) > 3 and sl.inputs[3] is not None else None
    steps = body.constant(sl.inputs[4]) if len(sl.inputs) > 4 and sl.inputs[4] is not None else None
    if shape is None or starts is None or ends is None or (len(sl.inputs) > 3 and sl.inputs[3] is not None
                                                           and axes is None):
        return None
    rank = len(shape)
    axes = np.arange(len(starts)) if axes is None else axes
    if steps is not None and np.any(steps != 1):
        return None
    block = None
    for a, s, e in zip(axes.reshape(-1), starts.reshape(-1), ends.reshape(-1)):
        a, n = int(a) % rank, shape[int(a) % rank]
        s, e = (int(s) + n if s < 0 else int(s)), min(int(e) + n if e < 0 else int(e), n)
        if a != rank - 1:
            if (s, e) != (0, n):
                return None
            continue
        if n != 3 * units or s % units or e - s != units:
            return None
        block = s // units
    return None if block is None else (sl.inputs[0], block)


def _gemm_product(body: _Body, gemm: ir.Node) -> np.ndarray | None:
    """The constant ``kernel`` when ``gemm`` computes ``A @ kernel + C`` (no transposed A, unit alpha and beta)."""
    attrs = gemm.attributes
    if attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
        return None
    kernel = body.constant(gemm.inputs[1])
    if kernel is None or kernel.ndim != 2:
        return None
    return kernel.T if attrs.get_int("transB", 0) else kernel


def _affine(body: _Body, value: ir.Value) -> tuple[ir.Value, np.ndarray, np.ndarray | None] | None:
    """``(x, kernel, bias)`` when ``value`` is ``x @ kernel (+ bias)`` with a constant kernel and bias."""
    gemm = producer(value, "Gemm")
    if gemm is not None:
        kernel = _gemm_product(body, gemm)
        if kernel is None:
            return None
        has_bias = len(gemm.inputs) > 2 and gemm.inputs[2] is not None
        bias = body.constant(gemm.inputs[2]) if has_bias else None
        if has_bias and (bias is None or bias.size != kernel.shape[1]):
            return None
        return gemm.inputs[0], kernel, None if bias is None else bias.reshape(-1)
    matmul = producer(value, "MatMul")
    if matmul is not None:
        kernel = body.constant(matmul.inputs[1])
        return None if kernel is None or kernel.ndim != 2 else (matmul.inputs[0], kernel, None)

    def with_bias(a, b):
        inner, bias = _affine(body, a), body.constant(b)
        if inner is None or inner[2] is not None or bias is None or bias.size != inner[1].shape[1]:
            return None
        return inner[0], inner[1], bias.reshape(-1)
    return either(producer(value, "Add"), with_bias)


def _one(body: _Body, value: ir.Value) -> bool:
    arr = body.constant(value)
    return arr is not None and arr.size == 1 and float(arr.reshape(-1)[0]) == 1.0


def _gru_cell(body: _Body, h_new: ir.Value):
    """Match ``h' = z * h + (1 - z) * tanh(...)``; return the GRU's parts or None."""
    def blend(keep, update):  # keep = z * h, update = (1 - z) * hh
        def z_h(a, b):
            return (a, b) if b in body.state_in else None
        zh = either(producer(keep, "Mul"), z_h)
        if zh is None:
            return None
        z, h = zh

        def one_minus_z_hh(a, b):
            sub = producer(a, "Sub")
            tanh = producer(b, "Tanh")
            if sub is None or tanh is None or sub.inputs[1] is not z or not _one(body, sub.inputs[0]):
                return None
            return tanh.inputs[0]
        candidate = either(producer(update, "Mul"), one_minus_z_hh)
        return None if candidate is None else (z, h, candidate)
    parts = either(producer(h_new, "Add"), blend)
    if parts is None:
        return None
    z, h, candidate = parts
    z_node = producer(z, "Sigmoid")
    if z_node is None or z_node.graph is not body.graph:
        return None
    shape = static_shape(h)
    if shape is None or len(shape) != 2:
        return None
    units = shape[1]

    def reset_term(a, b):  # x_h + r * h_h
        mul = producer(b, "Mul")
        xh = _gate(body, a, units)
        if mul is None or xh is None:
            return None

        def r_hh(p, q):
            r_node = producer(p, "Sigmoid")
            hh = _gate(body, q, units)
            return (p, hh) if r_node is not None and hh is not None else None
        found = either(mul, r_hh)
        return None if found is None else (xh, found[0], found[1])
    term = either(producer(candidate, "Add"), reset_term)
    if term is None:
        return None
    xh, r, hh = term

    def pre_activation(value):  # x_g + h_g
        def pair(a, b):
            ga, gb = _gate(body, a, units), _gate(body, b, units)
            return (ga, gb) if ga is not None and gb is not None else None
        return either(producer(value, "Add"), pair)
    zz = pre_activation(z_node.inputs[0])
    rr = pre_activation(r.producer().inputs[0])
    if zz is None or rr is None:
        return None
    xs, hs = {xh[0]}, {hh[0]}
    for (xv, xg), (hv, hg), gate in ((zz[0], zz[1], 0), (rr[0], rr[1], 1)):
        if xg != gate or hg != gate:
            return None
        xs.add(xv)
        hs.add(hv)
    if xh[1] != 2 or hh[1] != 2 or len(xs) != 1 or len(hs) != 1:
        return None
    return "GRU", h, _affine(body, xs.pop()), _affine(body, hs.pop()), units


def _rnn_cell(body: _Body, h_new: ir.Value):
    """Match ``h' = tanh(x_t @ kernel + bias + h @ recurrent)``; return its parts or None.

    tf2onnx writes the sum as one Gemm of the state whose C input is the input product, or as an Add."""
    tanh = producer(h_new, "Tanh")
    if tanh is None:
        return None
    pre = tanh.inputs[0]
    gemm = producer(pre, "Gemm")
    if gemm is not None and len(gemm.inputs) > 2 and gemm.inputs[2] is not None and body.constant(gemm.inputs[2]) is None:
        weight, other = _gemm_product(body, gemm), _affine(body, gemm.inputs[2])
        if weight is None or other is None:
            return None
        product = (gemm.inputs[0], weight, None)
        ax, ah = (other, product) if product[0] in body.state_in else (product, other)
    else:
        def pair(a, b):
            first, second = _affine(body, a), _affine(body, b)
            return (first, second) if first is not None and second is not None and second[0] in body.state_in else None
        found = either(producer(pre, "Add"), pair)
        if found is None:
            return None
        ax, ah = found
    h = ah[0]
    shape = static_shape(h)
    if h not in body.state_in or shape is None or len(shape) != 2:
        return None
    return "RNN", h, ax, ah, shape[1]


def _step_input(body: _Body, gx_input: ir.Value, counter: ir.Value) -> ir.Value | None:
    """``X`` when ``gx_input`` is ``Gather(X, counter, axis=0)`` with ``X`` from outside the body."""
    gather = producer(gx_input, "Gather")
    if gather is None or gather.inputs[1] is not counter or gather.attributes.get_int("axis", 0) != 0:
        return None
    x = gather.inputs[0]
    maker = x.producer()
    if maker is not None and maker.graph is body.graph or x in body.graph.inputs:
        return None
    return x


_EVAL = {
    "Add": np.add, "Sub": np.subtract, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or, "Equal": np.equal,
}


def _evaluate(body: _Body, value: ir.Value, env: dict) -> np.ndarray | None:
    """The scalar loop-control arithmetic of the body (counters, comparisons, casts), evaluated."""
    if value in env:
        return env[value]
    arr = body.constant(value)
    if arr is not None:
        return arr
    node = value.producer()
    if node is None or node.graph is not body.graph or node.domain != "":
        return None
    args = [_evaluate(body, v, env) for v in node.inputs]
    if any(a is None for a in args):
        return None
    if node.op_type == "Identity":
        return args[0]
    if node.op_type == "Not":
        return np.logical_not(args[0])
    if node.op_type == "Cast":
        return args[0].astype(ir.DataType(node.attributes.get_int("to")).numpy())
    if node.op_type in _EVAL and len(args) == 2:
        return _EVAL[node.op_type](args[0], args[1])
    return None


def _match(loop: ir.Node) -> _Cell | None:
    body = _Body(loop)
    if not body.ok:
        return None
    trip = const_array(loop.inputs[0]) if loop.inputs[0] is not None else None
    cond0 = const_array(loop.inputs[1]) if loop.inputs[1] is not None else np.array(True)
    if trip is None or trip.size != 1 or cond0 is None or not bool(cond0):
        return None
    steps = int(trip.reshape(-1)[0])
    scan = _through_identity(body.scan)
    cell = _gru_cell(body, scan) or _rnn_cell(body, scan)
    if cell is None:
        return None
    kind, h, ax, ah, units = cell
    gates = 3 if kind == "GRU" else 1
    k_h = body.state_in.index(h)
    if _through_identity(body.state_out[k_h]) is not scan:
        return None
    if ax is None or ah is None or ah[0] is not h:
        return None
    x_t, kernel, bias = ax
    _, recurrent, recurrent_bias = ah
    gather = producer(x_t, "Gather")
    if gather is None or gather.inputs[1] not in body.state_in:
        return None
    counter = gather.inputs[1]
    k_t = body.state_in.index(counter)
    x = _step_input(body, x_t, counter)
    x_shape = static_shape(x) if x is not None else None
    if x_shape is None or len(x_shape) != 3 or x_shape[0] != steps or x.dtype != ir.DataType.FLOAT:
        return None
    if kernel.shape != (x_shape[2], gates * units) or recurrent.shape != (units, gates * units):
        return None
    start = const_array(loop.inputs[2 + k_t])
    if start is None or start.size != 1 or int(start.reshape(-1)[0]) != 0:
        return None
    # every carried value is the counter, the state or a loop invariant
    if any(k not in (k_t, k_h) and v not in body.invariant for k, v in enumerate(body.state_in)):
        return None
    # the counter steps by one; the condition holds after every step but the last
    for i in range(steps):
        env = {body.iteration: np.array(i, np.int64), body.cond_in: np.array(True), counter: start.dtype.type(i)}
        nxt = _evaluate(body, body.state_out[k_t], env)
        if nxt is None or int(nxt) != i + 1:
            return None
        if i < steps - 1:
            cond = _evaluate(body, body.cond_out, env)
            if cond is None or not bool(cond):
                return None
    # the Loop's other results (final counter, invariants) must be unread
    finals = list(loop.outputs[:body.carried])
    if any(v.uses() or v.is_graph_output() for k, v in enumerate(finals) if k != k_h):
        return None
    return _Cell(kind, x, kernel.astype(np.float32), recurrent.astype(np.float32),
                None if bias is None else bias.astype(np.float32),
                None if recurrent_bias is None else recurrent_bias.astype(np.float32),
                loop.inputs[2 + k_h], finals[k_h], loop.outputs[-1])


# -- rewriting ------------------------------------------------------------------------------

def _replace(graph: ir.Graph, loop: ir.Node, cell: _Cell) -> None:
    units = cell.recurrent.shape[0]
    gates = cell.recurrent.shape[1] // units
    hint = cell.kind.lower()
    steps, batch, _ = static_shape(cell.x)
    w = add_initializer(graph, np.ascontiguousarray(cell.kernel.T[None]), f"{hint}_W")  # (1, G*u, I), GRU: z r h
    r = add_initializer(graph, np.ascontiguousarray(cell.recurrent.T[None]), f"{hint}_R")
    b = None
    if cell.bias is not None or cell.recurrent_bias is not None:
        zeros = np.zeros(gates * units, np.float32)
        both = np.concatenate([zeros if cell.bias is None else cell.bias,
                               zeros if cell.recurrent_bias is None else cell.recurrent_bias])
        b = add_initializer(graph, both[None], f"{hint}_B")
    h0 = None
    start = const_array(cell.initial_h)
    if start is None:
        axes = add_initializer(graph, np.array([0], np.int64), "axes")
        h0 = make_node(graph, "Unsqueeze", [cell.initial_h, axes], hint=f"{hint}_initial_h", before=loop,
                       shape=[1, batch, units], dtype=cell.initial_h.dtype).outputs[0]
    elif np.any(start):
        h0 = add_initializer(graph, np.ascontiguousarray(start.reshape(1, batch, units)).astype(np.float32),
                             f"{hint}_initial_h")
    attrs = {"hidden_size": units, **({"linear_before_reset": 1} if cell.kind == "GRU" else {})}
    node = ir.node(cell.kind, [cell.x, w, r, b, None, h0], attrs, num_outputs=2,
                   name=fresh_name(graph, f"{loop.name or 'loop'}_{hint}"))
    y, y_h = node.outputs
    y.name, y_h.name = fresh_name(graph, f"{hint}_Y"), fresh_name(graph, f"{hint}_Y_h")
    y.shape, y.dtype = ir.Shape([steps, 1, batch, units]), ir.DataType.FLOAT
    y_h.shape, y_h.dtype = ir.Shape([1, batch, units]), ir.DataType.FLOAT
    graph.insert_before(loop, node)
    for old, out, axis, shape in ((cell.sequence, y, 1, [steps, batch, units]), (cell.final_h, y_h, 0, [batch, units])):
        if not (old.uses() or old.is_graph_output()):
            continue
        axes = add_initializer(graph, np.array([axis], np.int64), "axes")
        squeeze = make_node(graph, "Squeeze", [out, axes], hint=f"{hint}_squeeze", before=loop, shape=shape,
                            dtype=ir.DataType.FLOAT)
        replace_value(graph, old, squeeze.outputs[0])
    # the body's nodes read outer values (X): detach them, or X and what made it look used still
    for inner in ir.traversal.RecursiveGraphIterator(loop.attributes["body"].as_graph()):
        for i in range(len(inner.inputs)):
            inner.replace_input_with(i, None)
    graph.remove(loop, safe=True)


# -- Bidirectional: two one-way nodes -> one ----------------------------------------------------

def _only_use(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 and not value.is_graph_output() else None


def _full_reversal(node: ir.Node | None) -> bool:
    """``ReverseSequence`` over the whole time axis 0 of a (T, N, ...) tensor."""
    if node is None or node.op_type != "ReverseSequence" or node.domain != "":
        return False
    shape, lens = static_shape(node.inputs[0]), const_array(node.inputs[1])
    return (node.attributes.get_int("time_axis", 0) == 0 and node.attributes.get_int("batch_axis", 1) == 1
            and shape is not None and lens is not None and bool(np.all(lens == shape[0])))


def _unwrap(value: ir.Value) -> ir.Value | None:
    """``value`` with Transpose pairs that cancel (tf2onnx's, around a reversal) looked through;
    None unless every value on the way has exactly one use."""
    while True:
        if _only_use(value) is None:
            return None
        outer = producer(value, "Transpose")
        inner = producer(outer.inputs[0], "Transpose") if outer is not None else None
        if inner is None or not is_identity(compose(perm_of(inner), perm_of(outer))):
            return value
        if _only_use(outer.inputs[0]) is not outer:
            return None
        value = inner.inputs[0]


def _one_way(value: ir.Value) -> ir.Node | None:
    """The forward GRU/RNN node whose ``Squeeze(Y, 1)`` is ``value`` (its only use), with no other output read."""
    squeeze = producer(value, "Squeeze")
    if squeeze is None or const_array(squeeze.inputs[1]) is None or list(const_array(squeeze.inputs[1])) != [1]:
        return None
    node = producer(squeeze.inputs[0], "GRU", "RNN")
    if (node is None or node.attributes.get_string("direction", "forward") != "forward"
            or _only_use(node.outputs[0]) is not squeeze or any(v.uses() or v.is_graph_output() for v in node.outputs[1:])
            or any(len(node.inputs) > i and node.inputs[i] is not None for i in (4, 5))):
        return None
    return node


def _merge_bidirectional(graph: ir.Graph) -> bool:
    """``Concat([fwd(X), reverse(bwd(reverse(X)))], -1)`` -> one bidirectional node (Keras' Bidirectional)."""
    changed = False
    for concat in [n for n in graph if n.op_type == "Concat" and n.domain == "" and len(n.inputs) == 2]:
        out_shape = static_shape(concat.outputs[0])
        if out_shape is None or len(out_shape) != 3 or concat.attributes.get_int("axis", 0) % 3 != 2:
            continue
        fwd_seq, back_seq = _unwrap(concat.inputs[0]), _unwrap(concat.inputs[1])
        fwd = _one_way(fwd_seq) if fwd_seq is not None else None
        back = back_seq.producer() if back_seq is not None else None
        if fwd is None or not _full_reversal(back):
            continue
        bwd_seq = _unwrap(back.inputs[0])
        bwd = _one_way(bwd_seq) if bwd_seq is not None else None
        if bwd is None or bwd.op_type != fwd.op_type:
            continue
        reversed_x = bwd.inputs[0].producer()
        if not _full_reversal(reversed_x) or reversed_x.inputs[0] is not fwd.inputs[0]:
            continue
        attrs = [{k: v.value for k, v in n.attributes.items() if k != "direction"} for n in (fwd, bwd)]
        weights = [[const_array(n.inputs[i]) if len(n.inputs) > i and n.inputs[i] is not None else None
                    for i in (1, 2, 3)] for n in (fwd, bwd)]
        if attrs[0] != attrs[1] or any(w is None for pair in weights for w in pair[:2]):
            continue
        units = int(attrs[0]["hidden_size"])
        steps, batch, _ = static_shape(fwd.inputs[0])
        gates = weights[0][0].shape[1] // units
        zeros = np.zeros((1, 2 * gates * units), np.float32)
        w = add_initializer(graph, np.concatenate([weights[0][0], weights[1][0]]), f"{fwd.op_type.lower()}_W")
        r = add_initializer(graph, np.concatenate([weights[0][1], weights[1][1]]), f"{fwd.op_type.lower()}_R")
        b = None
        if weights[0][2] is not None or weights[1][2] is not None:
            b = add_initializer(graph, np.concatenate([zeros if x[2] is None else x[2] for x in weights]),
                                f"{fwd.op_type.lower()}_B")
        node = ir.node(fwd.op_type, [fwd.inputs[0], w, r, b], {**attrs[0], "direction": "bidirectional"},
                       num_outputs=2, name=fresh_name(graph, f"{fwd.name or 'rnn'}_bidirectional"))
        node.outputs[0].name, node.outputs[1].name = fresh_name(graph, "bi_Y"), fresh_name(graph, "bi_Y_h")
        node.outputs[0].shape, node.outputs[0].dtype = ir.Shape([steps, 2, batch, units]), ir.DataType.FLOAT
        graph.insert_before(fwd, node)
        # (T, 2, N, u) -> (T, N, 2, u) -> (T, N, 2u): forward then backward features, as the Concat
        side = make_node(graph, "Transpose", [node.outputs[0]], {"perm": [0, 2, 1, 3]}, hint="bi_transpose",
                         before=concat, shape=[steps, batch, 2, units], dtype=ir.DataType.FLOAT)
        target = add_initializer(graph, np.array(out_shape, np.int64), "bi_shape")
        joined = make_node(graph, "Reshape", [side.outputs[0], target], hint="bi_concat", before=concat,
                           shape=list(out_shape), dtype=ir.DataType.FLOAT)
        replace_value(graph, concat.outputs[0], joined.outputs[0])
        changed = True
    if changed:
        _drop_dead(graph)
    return changed


def _drop_dead(graph: ir.Graph) -> None:
    """Remove nodes whose outputs nothing reads, consumers first."""
    for node in reversed(list(graph)):
        if not any(o.uses() or o.is_graph_output() for o in node.outputs):
            graph.remove(node, safe=True)
