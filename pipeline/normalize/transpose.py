"""Push ``Transpose`` nodes through layout-agnostic ops and cancel inverse pairs.

Every rule here is an exact algebraic identity; none looks at a shape to guess
a layout.  Rules only move *free* transposes: the pinned ones that wrap a
channels-last op (see ``layout.py``) stay where they are.

Rules, each a small function ``rule(graph, node) -> bool``:

- ``merge_transposes``   T(T(x, p), q)            -> T(x, p∘q), dropped if identity
- ``push_elementwise``   op(T(a, p), T(b, p), c)  -> T(op(a, b, c'), p), c' = c re-laid-out
- ``push_axis_ops``      Softmax/Reduce*/Concat/ArgMax over T(x, p): remap the axis
- ``push_pad``           Pad(T(x, p), pads)       -> T(Pad(x, pads'), p), pads' = pads re-laid-out
- ``push_squeeze``       Squeeze(T(x, p), A)      -> T(Squeeze(x, p[A]), p')
- ``push_unsqueeze``     Unsqueeze(T(x, p), A)    -> T(Unsqueeze(x, ...), p')
- ``cancel_unsqueeze``   Squeeze(Unsqueeze(x, A), A) -> x
- ``singleton_transpose``  T that moves only size-1 axes next to a shape op -> Reshape
- ``merge_reshapes``     chains of Reshape/Squeeze/Unsqueeze/Flatten with a static result -> one Reshape
- ``reshape_of_reshape`` Reshape(S(x), sizes read at run time) -> Reshape(x, sizes)
- ``push_reshape``       Reshape(T(x)) -> T'(Reshape'(x)) for a reshape that splits/merges axes; or
                         T2(Reshape(T1(x))) -> Reshape'(T(x))
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .graph import (
    add_initializer,
    compose,
    const_array,
    inverse,
    is_free_transpose,
    is_identity,
    make_node,
    named_dims,
    ops_with,
    perm_of,
    rank_of,
    remove_if_dead,
    replace_value,
    set_shape,
    single_consumer,
    static_shape,
    topological_nodes,
    transpose_node,
)

def _axes(node: ir.Node, rank: int) -> list[int] | None:
    """A node's axes, from the attribute or the constant second input, normalized."""
    axes = node.attributes.get_ints("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        arr = const_array(node.inputs[1])
        if arr is None:
            return None
        axes = arr.reshape(-1).tolist()
    if axes is None:
        return None
    return sorted(int(a) % rank for a in axes)


def _runtime_axes(node: ir.Node) -> bool:
    """The node takes its axes from a non-constant input: unknown until run time."""
    return (node.attributes.get_ints("axes") is None and len(node.inputs) > 1 and node.inputs[1] is not None
            and const_array(node.inputs[1]) is None)


def _opset(graph: ir.Graph) -> int:
    return graph.opset_imports.get("", 10**6)


def _set_axes(graph: ir.Graph, node: ir.Node, axes: list[int]) -> None:
    if "axes" in node.attributes:
        node.attributes["axes"] = ir.AttrInt64s("axes", axes)
    else:
        node.replace_input_with(1, add_initializer(graph, np.array(axes, np.int64), "axes"))


def _upstream_transpose(value: ir.Value | None) -> ir.Node | None:
    """The free Transpose producing ``value`` if this is its only use."""
    if value is None:
        return None
    producer = value.producer()
    if is_free_transpose(producer) and single_consumer(value) is not None and perm_of(producer) is not None:
        return producer
    return None


def _reroute_output(graph: ir.Graph, node: ir.Node, perm: list[int]) -> None:
    """``node`` now computes on untransposed data: add T(perm) after it.

    The node's output shape becomes the inverse-permuted one; the new Transpose
    output takes over every use (and the public name if it is a graph output).
    """
    out = node.outputs[0]
    shape = None if out.shape is None else list(out.shape)  # symbolic sizes move with their axes too
    if shape is not None:
        set_shape(out, [shape[i] for i in inverse(perm)])
    users = list(out.uses())
    was_output = out.is_graph_output()
    t = ir.node("Transpose", [out], {"perm": list(perm)})
    t.name = out.name + "__t"
    t.outputs[0].name = out.name + "__t"
    if shape is not None:
        set_shape(t.outputs[0], shape, out.dtype)
    graph.insert_after(node, t)
    for user, idx in users:
        user.replace_input_with(idx, t.outputs[0])
    if was_output:
        public = out.name
        out.name = public + "__pre"
        t.outputs[0].name = public
        for i, o in enumerate(graph.outputs):
            if o is out:
                graph.outputs[i] = t.outputs[0]


def merge_transposes(graph: ir.Graph, node: ir.Node) -> bool:
    if not is_free_transpose(node):
        return False
    inner = node.inputs[0].producer()
    perm = perm_of(node)
    if perm is not None and is_identity(perm):
        replace_value(graph, node.outputs[0], node.inputs[0])
        remove_if_dead(graph, node)
        return True
    if not is_free_transpose(inner):
        return False
    p, q = perm_of(inner), perm
    if p is None or q is None:
        return False
    combined = compose(p, q)
    source = inner.inputs[0]
    if is_identity(combined):
        replace_value(graph, node.outputs[0], source)
        remove_if_dead(graph, node)
    else:
        node.replace_input_with(0, source)
        node.attributes["perm"] = ir.AttrInt64s("perm", combined)
    remove_if_dead(graph, inner)
    return True


def _relayout_operand(graph: ir.Graph, value: ir.Value | None, perm: list[int]):
    """Return the operand to use once the transpose moves after the op, or False."""
    if value is None:
        return None
    rank = len(perm)
    t = value.producer()
    if is_free_transpose(t) and perm_of(t) == perm and single_consumer(value) is not None:
        return t.inputs[0]
    arr = const_array(value)
    if arr is not None and arr.ndim <= rank:
        if arr.size == 1 or arr.ndim == 0:
            return value
        full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
        return add_initializer(graph, full.transpose(inverse(perm)), "relayout")
    shape = static_shape(value)
    if shape is not None and all(d == 1 for d in shape):
        return value
    return False


def push_elementwise(graph: ir.Graph, node: ir.Node) -> bool:
    if node.domain != "" or (node.op_type not in ops_with("unary") and node.op_type not in ops_with("binary")):
        return False
    if len(node.outputs) != 1 and node.op_type != "Dropout":
        return False
    data_inputs = [0] if node.op_type in ops_with("unary") else list(range(len(node.inputs)))
    perm = None
    for i in data_inputs:
        t = _upstream_transpose(node.inputs[i])
        if t is not None:
            perm = perm_of(t)
            break
    if perm is None or rank_of(node.outputs[0]) != len(perm):
        return False
    new_inputs = {}
    for i in data_inputs:
        operand = _relayout_operand(graph, node.inputs[i], perm)
        if operand is False:
            return False
        new_inputs[i] = operand
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].uses():
        return False
    old = [node.inputs[i] for i in data_inputs]
    for i, operand in new_inputs.items():
        node.replace_input_with(i, operand)
    _reroute_output(graph, node, perm)
    for v in old:
        if v is not None and v.producer() is not None:
            remove_if_dead(graph, v.producer())
    return True


def push_axis_ops(graph: ir.Graph, node: ir.Node) -> bool:
    op = node.op_type
    if node.domain != "" or op not in (ops_with("reduce") | {"Softmax", "LogSoftmax", "Concat", "ArgMax", "ArgMin"}):
        return False
    if op == "Concat":
        perm = None
        t0 = _upstream_transpose(node.inputs[0])
        if t0 is None:
            return False
        perm = perm_of(t0)
        operands = [_relayout_operand(graph, v, perm) for v in node.inputs]
        if any(o is False for o in operands):
            return False
        axis = node.attributes.get_int("axis") % len(perm)
        old = list(node.inputs)
        for i, o in enumerate(operands):
            node.replace_input_with(i, o)
        node.attributes["axis"] = ir.AttrInt64("axis", perm[axis])
        _reroute_output(graph, node, perm)
        for v in old:
            if v.producer() is not None:
                remove_if_dead(graph, v.producer())
        return True
    t = _upstream_transpose(node.inputs[0])
    if t is None:
        return False
    perm = perm_of(t)
    rank = len(perm)
    if op in ("Softmax", "LogSoftmax"):
        axis = node.attributes.get_int("axis", -1 if _opset(graph) >= 13 else 1) % rank
        if _opset(graph) >= 13:
            new_axis = perm[axis]
        else:
            # Before opset 13 the op normalizes over the flattened block [axis:]; the
            # transpose must map that block onto a trailing block of the source.
            block = {perm[i] for i in range(axis, rank)}
            new_axis = rank - len(block)
            if block != set(range(new_axis, rank)):
                return False
        node.attributes["axis"] = ir.AttrInt64("axis", new_axis)
        node.replace_input_with(0, t.inputs[0])
        _reroute_output(graph, node, perm)
        remove_if_dead(graph, t)
        return True
    if op in ("ArgMax", "ArgMin"):
        axes, keep = [node.attributes.get_int("axis", 0) % rank], node.attributes.get_int("keepdims", 1)
    else:
        axes, keep = _axes(node, rank), node.attributes.get_int("keepdims", 1)
        if axes is None and _runtime_axes(node):
            return False  # the axes are only known at run time
        if not axes:  # absent or empty: reduce everything, unless told to do nothing
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return False
            axes = list(range(rank))
    new_axes = sorted(perm[a] for a in axes)
    if keep:
        out_perm = perm
    else:
        kept = [perm[i] for i in range(rank) if i not in axes]
        order = sorted(kept)
        out_perm = [order.index(k) for k in kept]
    if op in ("ArgMax", "ArgMin"):
        node.attributes["axis"] = ir.AttrInt64("axis", new_axes[0])
    elif len(axes) < rank or _axes(node, rank) is not None:
        _set_axes(graph, node, new_axes)
    node.replace_input_with(0, t.inputs[0])
    remove_if_dead(graph, t)
    if out_perm and not is_identity(out_perm):
        _reroute_output(graph, node, out_perm)
    return True



def push_pad(graph: ir.Graph, node: ir.Node) -> bool:
    """Pad(T(x, p)) -> T(Pad'(x), p): every Pad mode works axis by axis, so padding axis ``i``
    of the transposed tensor is padding axis ``p[i]`` of ``x``.  Pads (and axes, from opset 18)
    must be constants; a Keras ``ZeroPadding2D`` between two convolutions of a channels-first
    graph (MobileNetV2) then leaves no transposes behind."""
    if node.domain != "" or node.op_type != "Pad":
        return False
    t = _upstream_transpose(node.inputs[0])
    if t is None:
        return False
    perm = perm_of(t)
    rank = len(perm)
    axes_in = node.inputs[3] if len(node.inputs) > 3 else None
    if axes_in is not None:  # pads name their axes: only the axes move
        axes = const_array(axes_in)
        if axes is None:
            return False
        node.replace_input_with(3, add_initializer(
            graph, np.array([perm[int(a) % rank] for a in axes.reshape(-1)], np.int64), "pad_axes"))
    elif "pads" in node.attributes:  # before opset 11
        node.attributes["pads"] = ir.AttrInt64s("pads", _source_pads(node.attributes.get_ints("pads"), perm))
    else:
        pads = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if pads is None or pads.size != 2 * rank:
            return False
        node.replace_input_with(1, add_initializer(graph, np.array(_source_pads(pads.reshape(-1), perm), np.int64),
                                                   "pads"))
    node.replace_input_with(0, t.inputs[0])
    remove_if_dead(graph, t)
    _reroute_output(graph, node, perm)
    return True


def _source_pads(pads, perm: list[int]) -> list[int]:
    """Pads (begins, then ends) of ``T(x, perm)``'s axes as pads of ``x``'s axes."""
    rank, back = len(perm), inverse(perm)
    return [int(pads[back[a] + k * rank]) for k in (0, 1) for a in range(rank)]

def push_squeeze(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type != "Squeeze" or node.domain != "":
        return False
    t = _upstream_transpose(node.inputs[0])
    if t is None:
        return False
    perm = perm_of(t)
    rank = len(perm)
    axes = _axes(node, rank)
    if not axes:  # unknown, or empty (squeeze every unit axis)
        return False
    new_axes = sorted(perm[a] for a in axes)
    kept = [perm[i] for i in range(rank) if i not in axes]
    order = sorted(kept)
    out_perm = [order.index(k) for k in kept]
    _set_axes(graph, node, new_axes)
    node.replace_input_with(0, t.inputs[0])
    remove_if_dead(graph, t)
    if not is_identity(out_perm):
        _reroute_output(graph, node, out_perm)
    return True


def push_unsqueeze(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type != "Unsqueeze" or node.domain != "":
        return False
    t = _upstream_transpose(node.inputs[0])
    if t is None:
        return False
    perm = perm_of(t)
    rank = len(perm)
    out_rank = rank_of(node.outputs[0])
    if out_rank is None:
        return False
    axes = _axes(node, out_rank)
    if axes is None:
        return False
    # Put the new unit axes at the end of the untransposed tensor, then permute.
    out_perm, src = [], iter(perm)
    for j in range(out_rank):
        out_perm.append(rank + axes.index(j) if j in axes else next(src))
    _set_axes(graph, node, list(range(rank, out_rank)))
    node.replace_input_with(0, t.inputs[0])
    remove_if_dead(graph, t)
    _reroute_output(graph, node, out_perm)
    return True


def cancel_unsqueeze(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type != "Squeeze" or node.domain != "":
        return False
    up = node.inputs[0].producer()
    if up is None or up.op_type != "Unsqueeze" or single_consumer(node.inputs[0]) is None:
        return False
    out_rank = rank_of(node.inputs[0])
    if out_rank is None:
        return False
    axes = _axes(node, out_rank)
    if not axes or axes != _axes(up, out_rank):
        return False
    replace_value(graph, node.outputs[0], up.inputs[0])
    remove_if_dead(graph, node)
    remove_if_dead(graph, up)
    return True


def _moves_only_singletons(shape: tuple[int, ...], perm: list[int]) -> bool:
    before = [i for i in range(len(shape)) if shape[i] != 1]
    after = [p for p in perm if shape[p] != 1]
    return before == after


def _named_dims(graph: ir.Graph, value: ir.Value) -> list | None:
    return named_dims(value)


def _reshape_target(graph: ir.Graph, src: list, dst: list) -> np.ndarray | None:
    """A Reshape's constant target from ``src`` to ``dst`` (sizes may be symbol names): the ints,
    ``0`` (keep the input's size) where a symbol stays on its axis, ``-1`` for one symbol that
    moves; None if that cannot say it.  Static shapes give the sizes as they are."""
    if all(isinstance(d, int) for d in dst):
        return np.array(dst, np.int64)
    if 0 in dst:  # 0 would mean "keep the input's size" next to the symbols' zeros
        return None
    target, inferred = [], 0
    for j, d in enumerate(dst):
        if isinstance(d, int):
            target.append(d)
        elif j < len(src) and src[j] == d:
            target.append(0)
        else:
            target.append(-1)
            inferred += 1
    return None if inferred > 1 else np.array(target, np.int64)


def singleton_transpose(graph: ir.Graph, node: ir.Node) -> bool:
    if not is_free_transpose(node):
        return False
    shape = _named_dims(graph, node.inputs[0])
    perm = perm_of(node)
    if shape is None or perm is None or not _moves_only_singletons(shape, perm):
        return False
    up = node.inputs[0].producer()
    down = single_consumer(node.outputs[0])
    if not ((up is not None and up.op_type in ops_with("shape")) or (down is not None and down.op_type in ops_with("shape"))):
        return False
    out_shape = [shape[p] for p in perm]
    arr = _reshape_target(graph, shape, out_shape)
    if arr is None:
        return False
    target = add_initializer(graph, arr, "shape")
    reshape = make_node(graph, "Reshape", [node.inputs[0], target], hint="reshape", before=node,
                        shape=[node.inputs[0].shape[p] for p in perm], dtype=node.inputs[0].dtype)
    replace_value(graph, node.outputs[0], reshape.outputs[0])
    remove_if_dead(graph, node)
    return True


def merge_reshapes(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type not in ops_with("shape") or node.domain != "":
        return False
    out_shape = _named_dims(graph, node.outputs[0])  # symbols: one name is one size
    if out_shape is None:
        return False
    data = node.inputs[0]
    up = data.producer()
    in_shape = _named_dims(graph, data)
    if in_shape == out_shape and in_shape is not None:
        replace_value(graph, node.outputs[0], data)
        remove_if_dead(graph, node)
        return True
    if up is None or up.op_type not in ops_with("shape") or single_consumer(data) is None:
        return False
    src = [] if all(isinstance(d, int) for d in out_shape) else _named_dims(graph, up.inputs[0])
    arr = None if src is None else _reshape_target(graph, src, out_shape)
    if arr is None:
        return False
    target = add_initializer(graph, arr, "shape")
    reshape = make_node(graph, "Reshape", [up.inputs[0], target], hint="reshape", before=node,
                        shape=list(node.outputs[0].shape), dtype=data.dtype)
    replace_value(graph, node.outputs[0], reshape.outputs[0])
    remove_if_dead(graph, node)
    remove_if_dead(graph, up)
    return True


def _becomes_transposed(other: ir.Value, value: ir.Value) -> bool:
    """``other`` is computed from ``value`` alone by a shape-keeping op the transpose pushes through.

    Then once ``value``'s transpose is pushed on, ``other`` is a transpose by the same
    perm too: ``x - mean(x, axis=1, keepdims=1)`` (a channels-first LayerNorm written
    by hand) moves as a whole.
    """
    node = other.producer()
    if node is None or node.domain != "" or not node.inputs or node.inputs[0] is not value:
        return False
    if node.op_type in ops_with("unary") or node.op_type in ("Softmax", "LogSoftmax"):
        return True
    return (node.op_type in ops_with("reduce") and node.attributes.get_int("keepdims", 1) == 1
            and not _runtime_axes(node) and not node.attributes.get_int("noop_with_empty_axes", 0))


def _accepts_push(consumer: ir.Node, value: ir.Value, perm: list[int]) -> bool:
    """Would ``consumer`` take a transpose of ``value`` by ``perm`` through itself right away?"""
    op = consumer.op_type
    if consumer.domain != "":
        return False
    if op == "Transpose":
        return True
    if op in ops_with("unary") or op in ops_with("reduce") or op in ("Softmax", "LogSoftmax", "Squeeze", "Unsqueeze", "ArgMax", "ArgMin"):
        return consumer.inputs[0] is value and all(v is value for v in consumer.inputs[:1])
    if op in ops_with("binary") or op == "Concat":
        for other in consumer.inputs:
            if other is None or other is value:
                continue
            t = other.producer()
            if is_free_transpose(t) and perm_of(t) == perm:
                continue
            if _becomes_transposed(other, value):
                continue
            arr = const_array(other)
            if arr is not None and arr.ndim <= len(perm):
                continue
            return False
        return True
    return False


def fan_out(graph: ir.Graph, node: ir.Node) -> bool:
    """Give each consumer its own copy of a shared free Transpose, when every consumer will push it on."""
    if not is_free_transpose(node):
        return False
    out = node.outputs[0]
    users = out.uses()
    perm = perm_of(node)
    if perm is None or out.is_graph_output() or len(users) < 2 or len({id(u) for u, _ in users}) != len(users):
        return False
    if not all(_accepts_push(u, out, perm) for u, _ in users):
        return False
    for user, idx in list(users)[1:]:
        copy = transpose_node(graph, node.inputs[0], perm, before=user)
        user.replace_input_with(idx, copy.outputs[0])
    return True


def _reshape_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair the axes of a reshape ``src -> dst`` into blocks of equal size, in order.

    A unit axis on either side is a block of its own (``([i], [])`` or ``([], [j])``);
    other blocks are the shortest runs whose sizes multiply to the same number.
    None if a size is 0 or the products never meet.
    """
    if 0 in src or 0 in dst:
        return None
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        if i < len(src) and src[i] == 1:
            groups.append(([i], []))
            i += 1
            continue
        if j < len(dst) and dst[j] == 1:
            groups.append(([], [j]))
            j += 1
            continue
        if i >= len(src) or j >= len(dst):
            return None
        a, b, pa, pb = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(src):
                a.append(i)
                pa, i = pa * src[i], i + 1
            elif pb < pa and j < len(dst):
                b.append(j)
                pb, j = pb * dst[j], j + 1
            else:
                return None
        groups.append((a, b))
    return groups


def _reshape_node(graph: ir.Graph, x: ir.Value, shape: list[int], before: ir.Node) -> ir.Node:
    target = add_initializer(graph, np.array(shape, np.int64), "shape")
    return make_node(graph, "Reshape", [x, target], hint="reshape", before=before, shape=shape, dtype=x.dtype)


def _push_through_reshape(graph: ir.Graph, node: ir.Node, t: ir.Node, groups, dst) -> bool:
    """``Reshape(T(x, p))`` -> ``T'(Reshape'(x))`` when each block of the reshape is one axis of
    ``T(x)`` split in place, or axes of ``T(x)`` that are consecutive, in order, in ``x`` too."""
    p = perm_of(t)
    x_shape = static_shape(t.inputs[0])
    block_of = {}
    for g, (a, b) in enumerate(groups):
        if len(a) > 1 and len(b) > 1:
            return False
        if len(a) > 1 and [p[i] for i in a] != list(range(p[a[0]], p[a[0]] + len(a))):
            return False
        for i in a:
            block_of[p[i]] = g
    # x' lists the output axes block by block in x's order; inserted unit axes go last.
    order, seen = [], set()
    for k in range(len(x_shape)):
        g = block_of[k]
        if g not in seen:
            seen.add(g)
            order += groups[g][1]
    order += [b[0] for a, b in groups if not a]
    new_shape = [dst[k] for k in order]
    perm = [order.index(k) for k in range(len(dst))]
    reshape = _reshape_node(graph, t.inputs[0], new_shape, before=node)
    out = reshape.outputs[0]
    if not is_identity(perm):
        out = transpose_node(graph, out, perm, before=node).outputs[0]
    replace_value(graph, node.outputs[0], out)
    remove_if_dead(graph, node)
    remove_if_dead(graph, t)
    return True


def _pull_through_reshape(graph: ir.Graph, node: ir.Node, t: ir.Node, after: ir.Node, groups, src) -> bool:
    """``T2(Reshape(T1(x)))`` -> ``Reshape'(T1∘T2'(x))`` when ``T2`` moves whole blocks of the reshape
    (the output axes of a split stay together, in order): two transposes become one."""
    q = perm_of(after)
    block_of_out = {j: g for g, (a, b) in enumerate(groups) for j in b}
    moved, at = [], 0
    while at < len(q):
        g = block_of_out[q[at]]
        b = groups[g][1]
        if q[at:at + len(b)] != b:
            return False
        moved.append(g)
        at += len(b)
    src_perm = [i for g in moved for i in groups[g][0]] + [a[0] for a, b in groups if not b]
    out_shape = static_shape(after.outputs[0])
    t2 = transpose_node(graph, t.outputs[0], src_perm, before=node)
    reshape = _reshape_node(graph, t2.outputs[0], list(out_shape), before=node)
    replace_value(graph, after.outputs[0], reshape.outputs[0])
    remove_if_dead(graph, after)
    remove_if_dead(graph, node)
    return True


def push_reshape(graph: ir.Graph, node: ir.Node) -> bool:
    """Move a free Transpose through a Reshape that only splits and merges axes.

    ``Reshape(T(x))`` becomes ``T'(Reshape'(x))`` when the merged axes are neighbours in ``x``
    too; else, if a free Transpose follows, ``T2(Reshape(T1(x)))`` becomes
    ``Reshape'(T(x))`` when ``T2`` keeps each split's axes together.  PyTorch's
    PixelUnshuffle (reshape -> permute -> reshape on NCHW) then runs on NHWC with
    no layout transpose around it.
    """
    if node.op_type != "Reshape" or node.domain != "":
        return False
    t = _upstream_transpose(node.inputs[0])
    src, dst = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if t is None or src is None or dst is None or static_shape(t.inputs[0]) is None:
        return False
    groups = _reshape_groups(src, dst)
    if groups is None:
        return False
    if _push_through_reshape(graph, node, t, groups, dst):
        return True
    after = single_consumer(node.outputs[0])
    if not is_free_transpose(after) or perm_of(after) is None or static_shape(after.outputs[0]) is None:
        return False
    return _pull_through_reshape(graph, node, t, after, groups, src)


def reshape_of_reshape(graph: ir.Graph, node: ir.Node) -> bool:
    """``Reshape(S(x), sizes)`` -> ``Reshape(x, sizes)`` for a shape-only ``S`` (Reshape,
    Squeeze, Unsqueeze, Flatten) and sizes computed at run time from ``Shape`` pieces
    (``x.view(B, K, 64)`` with ``B, K`` read off an input; ``merge_reshapes`` takes the constant
    targets).  Exact: a reshape keeps the elements in order, so only the last one's sizes count,
    and no size is 0 ("keep the input's size", which would read ``x`` instead of ``S(x)``):
    each piece is a nonzero constant or the size of a tensor's axis that is a nonzero int or a
    symbol (a positive size, as every symbol here)."""
    if node.op_type != "Reshape" or node.domain != "" or const_array(node.inputs[1]) is not None:
        return False
    data = node.inputs[0]
    up = data.producer()
    if up is None or up.op_type not in ops_with("shape") or up.domain != "":
        return False
    if single_consumer(data) is not node or data.is_graph_output():
        return False
    pieces = _shape_axes(node.inputs[1])
    if pieces is None:
        return False
    for piece in pieces:
        if isinstance(piece, int):
            if piece == 0:
                return False
            continue
        tensor, axis = piece
        dims = _named_dims(graph, tensor)
        if dims is None or axis >= len(dims) or dims[axis] == 0:
            return False
    node.replace_input_with(0, up.inputs[0])
    remove_if_dead(graph, up)
    return True


def _shape_axes(value: ir.Value) -> list | None:
    """``value`` as the sizes of other tensors' axes, when a Concat of pieces computes it:
    each entry ``(tensor, axis)`` (read off ``Shape(tensor)`` by Gather or Slice) or an int
    (a constant); None for anything else."""
    arr = const_array(value)  # an initializer has no producer
    if arr is not None:
        return [int(v) for v in arr.reshape(-1)] if arr.ndim <= 1 and arr.dtype.kind == "i" else None
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Concat" and node.domain == "":
        out = []
        for piece in node.inputs:
            got = None if piece is None else _shape_axes(piece)
            if got is None:
                return None
            out += got
        return out
    if node.op_type in ("Unsqueeze", "Squeeze", "Identity", "Reshape", "Cast") and node.domain == "":
        return _shape_axes(node.inputs[0])  # a vector of sizes (or one size) keeps its entries in order
    if node.op_type == "Shape" and node.domain == "":
        rank = rank_of(node.inputs[0])
        if rank is None:
            return None
        start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", rank)
        return [(node.inputs[0], a) for a in list(range(rank))[slice(start, end)]]
    if node.op_type not in ("Gather", "Slice") or node.domain != "":
        return None
    shape_node = node.inputs[0].producer()
    if shape_node is None or shape_node.op_type != "Shape" or shape_node.domain != "":
        return None
    tensor = shape_node.inputs[0]
    rank = rank_of(tensor)
    if rank is None:
        return None
    start = shape_node.attributes.get_int("start", 0)
    end = shape_node.attributes.get_int("end", rank)
    axes = list(range(rank))[slice(start, end)]
    if node.op_type == "Gather":
        idx = const_array(node.inputs[1])
        if idx is None or idx.size != 1 or node.attributes.get_int("axis", 0) != 0:
            return None
        return [(tensor, axes[int(idx.reshape(-1)[0])])]
    starts, ends = const_array(node.inputs[1]), const_array(node.inputs[2])
    steps = const_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or starts.size != 1 or ends.size != 1 or (steps is not None and steps.size != 1):
        return None
    step = 1 if steps is None else int(steps.reshape(-1)[0])
    return [(tensor, a) for a in axes[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), step)]]


def own_sizes_target(graph: ir.Graph, node: ir.Node) -> bool:
    """A Reshape whose target is computed from ``Shape`` pieces, each size on the same axis as
    in the data it reshapes (``x.reshape(x.shape[0], -1)``): the constant target with ``0``
    there ("keep this axis' size"), exact for every size, so the sizes that follow are known."""
    if node.op_type != "Reshape" or node.domain != "" or const_array(node.inputs[1]) is not None:
        return False
    pieces = _shape_axes(node.inputs[1])
    if pieces is not None and node.attributes.get_int("allowzero", 0) and 0 in pieces:
        return False  # a literal 0 stays a zero size: our 0 could not mean "keep" beside it
    data = _named_dims(graph, node.inputs[0])
    if pieces is None or data is None:
        return False
    target = []
    for j, piece in enumerate(pieces):
        if isinstance(piece, int):
            target.append(piece)
            continue
        tensor, axis = piece
        theirs = _named_dims(graph, tensor)
        same = tensor is node.inputs[0] and axis == j
        if not same and (theirs is None or j >= len(data) or theirs[axis] != data[j] or isinstance(data[j], int)):
            return False
        target.append(0)
    if target.count(-1) > 1:
        return False
    node.replace_input_with(1, add_initializer(graph, np.array(target, np.int64), "shape"))
    node.attributes.pop("allowzero", None)  # 0 = "keep the input's size" (allowzero=0, the default)
    return True


def unit_axes_around_norm(graph: ir.Graph, node: ir.Node) -> bool:
    """``Reshape(x -> x + (1, ...)) -> BatchNormalization -> Reshape(back to x)``: the norm on
    ``x`` itself (tf2onnx adds trailing unit axes around a BatchNormalization when the batch
    varies).  Exact: the statistics are per channel (axis 1) and a size-1 axis changes nothing."""
    if node.op_type != "BatchNormalization" or node.domain != "" or len(node.outputs) != 1:
        return False
    up, down = node.inputs[0].producer(), single_consumer(node.outputs[0])
    if up is None or up.op_type != "Reshape" or down is None or down.op_type != "Reshape":
        return False
    if single_consumer(node.inputs[0]) is not node or node.outputs[0].is_graph_output():
        return False
    x = up.inputs[0]
    src, mid, dst = _named_dims(graph, x), _named_dims(graph, node.inputs[0]), _named_dims(graph, down.outputs[0])
    if src is None or mid is None or dst != src or len(src) < 2 or mid[:len(src)] != src:
        return False
    if len(mid) == len(src) or any(d != 1 for d in mid[len(src):]):
        return False
    node.replace_input_with(0, x)
    node.outputs[0].shape = ir.Shape(list(x.shape))
    replace_value(graph, down.outputs[0], node.outputs[0])
    remove_if_dead(graph, down)
    remove_if_dead(graph, up)
    return True


RULES = (
    own_sizes_target,
    unit_axes_around_norm,
    merge_transposes,
    cancel_unsqueeze,
    push_squeeze,
    push_unsqueeze,
    push_elementwise,
    push_axis_ops,
    push_pad,
    singleton_transpose,
    merge_reshapes,
    reshape_of_reshape,
    fan_out,
    push_reshape,
)


class TransposeOptimizer(ir.passes.InPlacePass):
    """Apply the rules above until nothing changes."""

    def __init__(self, max_rounds: int = 50):
        super().__init__()
        self.max_rounds = max_rounds

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed_any = False
        for _ in range(self.max_rounds):
            changed = False
            for node in topological_nodes(graph):
                if node.graph is None:
                    continue
                for rule in RULES:
                    if node.graph is not None and rule(graph, node):
                        changed = True
                        break
            changed_any |= changed
            if not changed:
                break
        return ir.passes.PassResult(model, changed_any)


# Re-exported for tests that build single-rule checks.
__all__ = ["TransposeOptimizer", "RULES", "transpose_node"]
