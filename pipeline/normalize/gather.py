"""A GatherND over an index grid, written as the Unsqueeze (and Expand) it computes.

Hugging Face ``transformers`` builds its attention masks with ``torch.vmap`` over index
functions; the padding mask ``attention_mask[batch_idx, kv_idx]`` exports as::

    GatherND(mask, Concat([Unsqueeze(Expand(Reshape(Range(0, B), (B, 1, 1, 1))), -1),
                           Unsqueeze(Expand(Reshape(Range(0, S), (1, 1, 1, S))), -1)], -1))

Each index component is an *iota*: its value at every position ``o`` is ``o[a]``, one axis
``a`` of the index grid, whose length is the data's size on the component's axis.  Then
``GatherND(data, idx)[o] = data[o[a_0], o[a_1], ...]``: the data itself with unit axes
inserted where the grid has no component (``Unsqueeze``), its first axes ordered by
``a_k`` (``Transpose`` where they are not), broadcast over any grid axis longer than 1
(``Expand``).  That holds for every size of the symbols, where the gather's index
arithmetic needs sizes known at run time only (``Range(0, B)`` with ``B`` read off
``Shape``), which the importers cannot write for Keras' functional build.

An index component counts as an iota only when it is proved one, node by node:
``Range(0, n, 1)``, a constant ``[0, 1, ..., n-1]``, and what keeps the values where they
are on one axis: ``Add`` of a constant 0, an integer ``Cast``, ``Identity``, a ``Slice`` that
keeps the whole axis, ``Unsqueeze``, a ``Reshape`` whose output has that one non-unit axis,
an ``Expand`` that does not broadcast the iota's own axis.  The grid axis' length must be
the data's size on that axis (the same int, or the same expression of the symbols).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from .graph import add_initializer, const_array, make_node, producer, replace_value
from .symbolic import dims

_BIG = 2 ** 31  # a Slice end at or above this keeps the rest of the axis


class GridGathers(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        for node in [n for n in model.graph if n.op_type == "GatherND" and n.domain == ""]:
            plan = grid_gather(node)
            if plan is None or (plan[2] and opset < 15):  # Shape(start, end) is opset 15
                continue
            _rewrite(model.graph, node, *plan)
            changed = True
        if changed:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, changed)


def _same(a, b) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    import sympy

    return a == b or sympy.simplify(a - b) == 0


def grid_gather(node: ir.Node) -> tuple[list[int], list[int], bool] | None:
    """``(axes, unsqueeze, expand)`` when ``node`` gathers over an index grid: ``axes[k]`` is
    the grid axis of index component ``k``, ``unsqueeze`` the unit axes to insert, ``expand``
    whether a grid axis without a component is longer than 1 (or may be)."""
    if node.attributes.get_int("batch_dims", 0) != 0 or len(node.inputs) != 2:
        return None
    data, idx = dims(node.inputs[0]), dims(node.inputs[1])
    if data is None or idx is None or len(idx) < 2 or not isinstance(idx[-1], int):
        return None
    q, m = len(idx) - 1, idx[-1]
    if not 1 <= m <= len(data):
        return None
    concat = producer(node.inputs[1], "Concat")
    parts = list(concat.inputs) if concat is not None else [node.inputs[1]]
    if concat is not None and concat.attributes.get_int("axis", 0) % (q + 1) != q:
        return None
    axes = []
    for part in parts:
        pd = dims(part)
        if pd is None or len(pd) != q + 1 or pd[-1] != 1:
            return None
        unsq = producer(part, "Unsqueeze")
        if unsq is None:
            return None
        where = _unsqueezed_axes(unsq)
        if where != [q]:
            return None
        found = _iota(unsq.inputs[0])
        if found is None:
            return None
        axes.append(found)
    if len(axes) != m or len(set(axes)) != m:
        return None
    for k, a in enumerate(axes):
        if not _same(idx[a], data[k]):
            return None
    unsqueeze = [i for i in range(q) if i not in axes]
    expand = any(idx[i] != 1 for i in unsqueeze)
    return axes, unsqueeze, expand


def _unsqueezed_axes(node: ir.Node) -> list[int] | None:
    out = dims(node.outputs[0])
    if out is None:
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        arr = const_array(node.inputs[1])
        if arr is None:
            return None
        axes = [int(a) for a in arr.reshape(-1)]
    else:
        axes = list(node.attributes.get_ints("axes", []) or [])
    return sorted(a % len(out) for a in axes)


def _iota(value: ir.Value, depth: int = 0) -> int | None:
    """The axis ``a`` when ``value[o] == o[a]`` at every position ``o``, else None."""
    if depth > 16:
        return None
    shape = dims(value)
    if shape is None:
        return None
    arr = const_array(value)
    if arr is not None:
        if not np.issubdtype(arr.dtype, np.integer):
            return None
        long = [i for i, n in enumerate(arr.shape) if n != 1]
        if len(long) > 1:
            return None
        axis = long[0] if long else 0
        return axis if np.array_equal(arr.reshape(-1), np.arange(arr.size)) else None
    node = value.producer()
    if node is None or node.domain != "":
        return None
    op = node.op_type
    if op == "Range":
        start, delta = const_array(node.inputs[0]), const_array(node.inputs[2])
        ok = start is not None and delta is not None and start.size == 1 and delta.size == 1
        return 0 if ok and int(start.reshape(())) == 0 and int(delta.reshape(())) == 1 else None
    if op in ("Identity", "Cast"):
        if op == "Cast" and not np.issubdtype(ir.DataType(node.attributes.get_int("to", 0)).numpy(), np.integer):
            return None
        return _iota(node.inputs[0], depth + 1)
    if op in ("Add", "Sub"):
        for i, other in ((0, 1), (1, 0)) if op == "Add" else ((0, 1),):
            zero = const_array(node.inputs[other])
            if zero is not None and zero.ndim == 0 and zero == 0:
                return _iota(node.inputs[i], depth + 1)
        return None
    if op == "Slice":
        return _iota(node.inputs[0], depth + 1) if _keeps_all(node) else None
    if op == "Unsqueeze":
        inner = _iota(node.inputs[0], depth + 1)
        added = _unsqueezed_axes(node)
        if inner is None or added is None:
            return None
        kept = [i for i in range(len(shape)) if i not in added]
        return kept[inner]
    if op in ("Reshape", "Squeeze", "Flatten"):
        inner = _iota(node.inputs[0], depth + 1)
        before = dims(node.inputs[0])
        if inner is None or before is None or any(n != 1 for i, n in enumerate(before) if i != inner):
            return None
        long = [i for i, n in enumerate(shape) if n != 1]
        if len(long) == 1 and _same(shape[long[0]], before[inner]):
            return long[0]
        return None
    if op == "Expand":
        inner = _iota(node.inputs[0], depth + 1)
        before = dims(node.inputs[0])
        if inner is None or before is None:
            return None
        a = inner + len(shape) - len(before)
        return a if _same(shape[a], before[inner]) else None
    return None


def _keeps_all(node: ir.Node) -> bool:
    """A Slice with constant arguments that keeps every element (start 0, end past the axis, step 1)."""
    if len(node.inputs) < 3:
        return False
    starts, ends = const_array(node.inputs[1]), const_array(node.inputs[2])
    steps = const_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or (len(node.inputs) > 4 and node.inputs[4] is not None and steps is None):
        return False
    shape = dims(node.inputs[0])
    axes = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if len(node.inputs) > 3 and node.inputs[3] is not None and axes is None:
        return False
    axes = range(len(starts)) if axes is None else axes.reshape(-1)
    steps = np.ones(len(starts), np.int64) if steps is None else steps.reshape(-1)
    for s, e, a, st in zip(starts.reshape(-1), ends.reshape(-1), axes, steps):
        n = shape[int(a) % len(shape)]
        if int(s) != 0 or int(st) != 1 or not (int(e) >= _BIG or (isinstance(n, int) and int(e) >= n)):
            return False
    return True


def _rewrite(graph: ir.Graph, node: ir.Node, axes: list[int], unsqueeze: list[int], expand: bool) -> None:
    data, idx, out = node.inputs[0], node.inputs[1], node.outputs[0]
    m, rank = len(axes), len(dims(data))
    x = data
    order = sorted(range(m), key=lambda k: axes[k])
    if order != list(range(m)):
        x = make_node(graph, "Transpose", [x], {"perm": order + list(range(m, rank))}, hint="grid_order",
                      before=node, dtype=data.dtype).outputs[0]
    if unsqueeze:
        where = add_initializer(graph, np.array(unsqueeze, np.int64), "grid_axes")
        x = make_node(graph, "Unsqueeze", [x, where], hint="grid", before=node, dtype=data.dtype).outputs[0]
    if expand:
        shape = make_node(graph, "Shape", [idx], {"start": 0, "end": -1}, hint="grid_shape", before=node,
                          dtype=ir.DataType.INT64).outputs[0]
        if rank > m:
            ones = add_initializer(graph, np.ones(rank - m, np.int64), "grid_ones")
            shape = make_node(graph, "Concat", [shape, ones], {"axis": 0}, hint="grid_shape", before=node,
                              dtype=ir.DataType.INT64).outputs[0]
        x = make_node(graph, "Expand", [x, shape], hint="grid", before=node, dtype=data.dtype).outputs[0]
    if x is data:
        x = make_node(graph, "Identity", [x], hint="grid", before=node, dtype=data.dtype).outputs[0]
    x.shape = out.shape
    replace_value(graph, out, x)
    graph.remove(node, safe=True)


__all__ = ["GridGathers", "grid_gather"]
