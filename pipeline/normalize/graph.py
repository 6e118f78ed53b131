"""Small helpers over onnx_ir used by the normalize passes and the importers."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

PIN_KEY = "pipeline.layout"  # metadata on a Transpose that wraps a channels-last op
PIN_IN, PIN_OUT = "cl_in", "cl_out"


@functools.cache
def ops_with(trait: str) -> frozenset[str]:
    """The ONNX op types with ``trait`` (``unary``, ``binary``, ``reduce``, ``shape``, ``layout``),
    as the op registry states them (``pipeline/importers/registry.py``): one place for an op's facts."""
    from ..importers.registry import ops_with as registered

    return registered(trait)


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant content (initializer or Constant node), else None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    return tensor.numpy()


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The value's shape if every dimension is a known integer."""
    if value is None or value.shape is None:
        return None
    dims = []
    for d in value.shape:
        if not isinstance(d, int):
            return None
        dims.append(d)
    return tuple(dims)


def named_dims(value: ir.Value | None) -> list | None:
    """``value``'s dimensions: ints, or the symbolic sizes' names (a graph input's symbol or an
    expression of them, as shape inference wrote it: one name is one size); None when its
    shape or any size is unknown."""
    if value is None or value.shape is None:
        return None
    out = []
    for d in value.shape:
        if not isinstance(d, int) and not d.value:
            return None
        out.append(d if isinstance(d, int) else d.value)
    return out


def producer(value: ir.Value | None, *ops: str) -> ir.Node | None:
    """The node making ``value`` if it is one of the standard-domain ``ops``, else None."""
    node = value.producer() if value is not None else None
    return node if node is not None and node.domain == "" and node.op_type in ops else None


def either(node: ir.Node | None, match):
    """``match(a, b)`` on a two-input commutative node's inputs, in either order."""
    if node is None or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return match(a, b) or match(b, a)


def rank_of(value: ir.Value | None) -> int | None:
    if value is None or value.shape is None:
        return None
    return len(value.shape)


def to_last(rank: int) -> list[int]:
    """Permutation channels-first -> channels-last: (N, C, *S) -> (N, *S, C)."""
    return [0, *range(2, rank), 1]


def to_first(rank: int) -> list[int]:
    """Permutation channels-last -> channels-first: (N, *S, C) -> (N, C, *S)."""
    return [0, rank - 1, *range(1, rank - 1)]


def inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def compose(first: Sequence[int], then: Sequence[int]) -> list[int]:
    """Transpose(Transpose(x, first), then) == Transpose(x, compose(first, then))."""
    return [first[i] for i in then]


def is_identity(perm: Sequence[int]) -> bool:
    return list(perm) == list(range(len(perm)))


def perm_of(node: ir.Node) -> list[int] | None:
    perm = node.attributes.get_ints("perm")
    if perm is not None:
        return list(perm)
    r = rank_of(node.inputs[0])
    return None if r is None else list(reversed(range(r)))


def is_pinned(node: ir.Node) -> bool:
    return node.op_type == "Transpose" and node.metadata_props.get(PIN_KEY) in (PIN_IN, PIN_OUT)


def pin_role(node: ir.Node) -> str | None:
    return node.metadata_props.get(PIN_KEY) if node.op_type == "Transpose" else None


def is_free_transpose(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "Transpose" and node.domain == "" and not is_pinned(node)


def single_consumer(value: ir.Value) -> ir.Node | None:
    users = value.consumers()
    if len(users) == 1 and not value.is_graph_output():
        return users[0]
    return None


_counter = itertools.count()


def fresh_name(graph: ir.Graph, hint: str) -> str:
    taken = graph.meta.setdefault("pipeline.names", None)
    if taken is None:
        taken = {v.name for n in graph for v in (*n.inputs, *n.outputs) if v is not None}
        taken |= {v.name for v in graph.inputs} | set(graph.initializers)
        graph.meta["pipeline.names"] = taken
    while True:
        name = f"{hint}__{next(_counter)}"
        if name not in taken:
            taken.add(name)
            return name


def add_initializer(graph: ir.Graph, array: np.ndarray, hint: str) -> ir.Value:
    array = np.asarray(array)  # ascontiguousarray alone turns a 0-d scalar into shape (1,)
    value = ir.Value(name=fresh_name(graph, hint), const_value=ir.tensor(np.ascontiguousarray(array).reshape(array.shape)))
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)
    graph.register_initializer(value)
    return value


def set_shape(value: ir.Value, shape: Sequence[int] | None, dtype: ir.DataType | None = None) -> None:
    value.shape = None if shape is None else ir.Shape(list(shape))
    if dtype is not None:
        value.dtype = dtype


def make_node(graph: ir.Graph, op_type: str, inputs, attributes=None, *, hint: str, before: ir.Node,
              shape=None, dtype=None, metadata=None) -> ir.Node:
    """Create a one-output node, insert it before ``before`` and name its output."""
    node = ir.node(op_type, inputs, attributes or {}, name=fresh_name(graph, hint), metadata_props=metadata)
    node.outputs[0].name = fresh_name(graph, hint)
    set_shape(node.outputs[0], shape, dtype)
    graph.insert_before(before, node)
    return node


def transpose_node(graph: ir.Graph, x: ir.Value, perm: Sequence[int], *, before: ir.Node, role: str | None = None) -> ir.Node:
    shape = static_shape(x)
    out_shape = None if shape is None else [shape[p] for p in perm]
    meta = {PIN_KEY: role} if role else None
    return make_node(graph, "Transpose", [x], {"perm": list(perm)}, hint="transpose", before=before,
                     shape=out_shape, dtype=x.dtype, metadata=meta)


def replace_value(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    """Route every use of ``old`` to ``new``; a graph output keeps its public name."""
    if old.is_graph_output() and (new.is_graph_input() or new.is_graph_output() or new.is_initializer()):
        # An output cannot alias an input or another output: keep an Identity.
        node = ir.node("Identity", [new], name=fresh_name(graph, "identity"))
        node.outputs[0].shape, node.outputs[0].dtype = new.shape, new.dtype
        graph.append(node)
        new = node.outputs[0]
    if old.is_graph_output():
        public = old.name
        old.name = fresh_name(graph, public)
        new.name = public
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def remove_if_dead(graph: ir.Graph, node: ir.Node) -> bool:
    if node.graph is None:
        return False
    if any(o.uses() or o.is_graph_output() for o in node.outputs):
        return False
    graph.remove(node, safe=True)
    return True


def topological_nodes(graph: ir.Graph) -> list[ir.Node]:
    graph.sort()
    return list(graph)
