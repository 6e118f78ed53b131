"""Indexing: Gather (embedding lookups included), GatherElements, GatherND.

ONNX counts negative indices from the end of the axis; neither ``torch.index_select`` nor
TensorFlow's gather does, so every reader or emitter here wraps them first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation, shape_literal
from ..registry import Op, register


def embedding_lookup(t: Translation) -> np.ndarray | None:
    """The table of a Gather that reads as an embedding lookup, else None.

    Rows (axis 0) of a constant 2-D floating-point table, picked by ids computed from
    the graph's inputs.  Ids computed from constants alone (position ids) stay a
    plain gather: a Keras layer called on them would run once at build time, its
    table baked into the graph instead of being a weight.
    """
    table = t.const(0)
    if table is None or table.ndim != 2 or not np.issubdtype(table.dtype, np.floating) or t.const(1) is not None:
        return None
    if t.int("axis", 0) % 2 != 0 or not reaches_graph_input(t.node.inputs[1], set(t.gen.graph.inputs)):
        return None
    return table


def reaches_graph_input(value: ir.Value, inputs: set) -> bool:
    seen, todo = set(), [value]
    while todo:
        v = todo.pop()
        if v is None or v in seen:
            continue
        seen.add(v)
        if v in inputs:
            return True
        producer = v.producer()
        if producer is not None:
            todo.extend(producer.inputs)
    return False


def _torch_constant(t: Translation, arr: np.ndarray, name: str) -> str:
    return t.gen.constant(ir.Value(name=f"{T.hint(t)}_{name}"), np.ascontiguousarray(arr))


@dataclass
class Take:
    """A Gather along ``axis``: a scalar index, an embedding table, constant (wrapped) indices or run-time ones."""

    axis: int
    size: int  # the axis' length
    scalar: int | None = None
    table: np.ndarray | None = None
    indices: np.ndarray | None = None  # constant indices, negatives wrapped


@register
class Gather(Op):
    types = ("Gather",)

    def read(self, t: Translation) -> Take:
        dims = t.dims(0)
        axis = t.int("axis", 0) % len(dims)
        idx = t.const(1)
        if not isinstance(dims[axis], int) and not (idx is not None and (idx >= 0).all()):
            t.unsupported(f"indices that may count from the end of axis {axis}, whose size ({dims[axis]}) varies")
        shape = [d if isinstance(d, int) else None for d in dims]  # a varying axis: indices as given
        plan = Take(axis, shape[axis])
        if idx is not None and idx.ndim == 0:
            plan.scalar = int(idx) % shape[axis] if shape[axis] is not None else int(idx)
        elif (table := embedding_lookup(t)) is not None:
            plan.table = table
        elif idx is not None:
            plan.indices = np.where(idx < 0, idx + (shape[axis] or 0), idx).astype(np.int64)
        return plan

    def torch(self, t: Translation, p: Take) -> None:
        x = t.inp(0)
        lead = ":, " * p.axis
        if p.scalar is not None:
            t.assign(f"{x}[{lead}{p.scalar}]")
            return
        if p.table is not None:
            mod = T.module(t, f"nn.Embedding({p.table.shape[0]}, {p.table.shape[1]})", {"weight": p.table})
            t.assign(f"self.{mod}({t.inp(1)})")
            return
        if p.indices is not None:
            idx = _torch_constant(t, p.indices.reshape(-1), "index")
        else:
            i = t.inp(1)
            idx = f"torch.where({i} < 0, {i} + {p.size}, {i}).reshape(-1)"
        t.assign(f"torch.index_select({x}, {p.axis}, {idx}).reshape{_torch_sizes(t)}")

    def keras(self, t: Translation, p: Take) -> None:
        x = t.inp(0)
        if p.scalar is not None:
            t.assign(f"ops.take({x}, {p.scalar}, axis={p.axis})")
        elif p.table is not None:
            # rows of a constant table picked by runtime ids: an Embedding layer, whose table is
            # a weight in model.weights.h5 (as a constant it would be baked into the graph)
            t.assign(K.layer(t, "Embedding", [str(p.table.shape[0]), str(p.table.shape[1])], [p.table], t.inp(1)))
        elif p.indices is not None:
            t.assign(f"ops.take({x}, {K.new_constant(t, p.indices, 'index')}, axis={p.axis})")
        else:
            i = t.inp(1)
            t.assign(f"ops.take({x}, ops.where(ops.less({i}, 0), ops.add({i}, {p.size}), {i}), axis={p.axis})")


def _torch_sizes(t: Translation) -> str:
    """The output's shape as ``reshape`` arguments: ``-1`` for a lone varying size, run-time
    sizes for several."""
    dims = t.out_dims()
    varying = [d for d in dims if not isinstance(d, int)]
    if not varying:
        return T.shape_args(dims)
    if len(varying) == 1:
        return f"({', '.join(str(d) if isinstance(d, int) else '-1' for d in dims)}{',' if len(dims) == 1 else ''})"
    codes = [t.size_code(d) for d in dims]
    if any(c is None for c in codes):
        t.unsupported(f"a gather to sizes {dims} that cannot be written from the inputs' sizes")
    return f"({', '.join(codes)}{',' if len(dims) == 1 else ''})"


@dataclass
class TakeAlong:
    """A GatherElements: ``data`` cropped to the indices' extent on the other axes; ``value`` when both are constant."""

    axis: int
    size: int
    crop: tuple[int, ...] | None  # the data's extent to keep, None when it is the whole
    indices: np.ndarray | None  # constant indices, negatives wrapped
    value: np.ndarray | None


@register
class GatherElements(Op):
    types = ("GatherElements",)

    def read(self, t: Translation) -> TakeAlong:
        data, idx = t.const(0), t.const(1)
        shape = list(data.shape) if data is not None else t.dims(0)
        ishape = list(idx.shape) if idx is not None else t.dims(1)
        rank = len(shape)
        axis = t.int("axis", 0) % rank
        crop = tuple(ishape[a] if a != axis else shape[a] for a in range(rank))
        if not isinstance(shape[axis], int) and not (idx is not None and (idx >= 0).all()):
            t.unsupported(f"indices that may count from the end of axis {axis}, whose size ({shape[axis]}) varies")
        if any(not isinstance(c, int) or not isinstance(n, int) for c, n in zip(crop, shape) if c is not n and c != n):
            t.unsupported(f"indices of sizes {ishape} that may crop data of sizes {shape} by sizes that vary")
        if idx is not None:
            idx = np.where(idx < 0, idx + shape[axis], idx).astype(np.int64)
        value = None
        if data is not None and idx is not None:  # e.g. BERT's token_type_ids buffer
            value = np.take_along_axis(data[tuple(slice(0, c) for c in crop)], idx, axis)
        return TakeAlong(axis, shape[axis], None if crop == tuple(shape) else crop, idx, value)

    def torch(self, t: Translation, p: TakeAlong) -> None:
        """``torch.gather`` accepts indices shorter than the data on the other axes, as ONNX does."""
        if p.value is not None:
            t.assign(_torch_constant(t, p.value, "value"))
            return
        if p.indices is not None:
            index = T.buffer(t, T.hint(t) + "_index", p.indices)
        else:
            i = f"{t.inp(1)}.long()"
            index = f"torch.where({i} < 0, {i} + {p.size}, {i})"
        t.assign(f"torch.gather({t.inp(0)}, {p.axis}, {index})")

    def keras(self, t: Translation, p: TakeAlong) -> None:
        """``ops.take_along_axis`` wants equal extents: the data is cropped to the indices' first."""
        if p.value is not None:
            if t.node.outputs[0].is_graph_output():
                t.assign(f"ops.convert_to_tensor({K.new_constant(t, p.value, 'value')})")
            else:
                t.alias(K.new_constant(t, p.value, "value"))
            return
        x = t.inp(0)
        if p.crop is not None:
            x = f"ops.slice({x}, {(0,) * len(p.crop)}, {p.crop})"
        if p.indices is not None:
            index = K.new_constant(t, p.indices, "index")
        else:
            i = t.inp(1)
            index = f"ops.where(ops.less({i}, 0), ops.add({i}, {p.size}), {i})"
        t.assign(f"ops.take_along_axis({x}, {index}, axis={p.axis})")


@dataclass
class GatherNDPlan:
    """A GatherND as one gather along axis 0 of ``data`` reshaped to ``data_shape``.

    ``data`` is flattened over its batch and indexed axes, so each index tuple becomes one
    linear index: ``sum(idx * strides) + offset``, with negative indices wrapped by
    ``dims``.  ``linear`` is that index already computed when the indices are constant.
    """

    data_shape: tuple[int, ...]
    dims: list[int]
    strides: list[int]
    lead: tuple[int, ...]  # the indices' shape without the tuple axis
    offset: np.ndarray  # each batch's start in the flattened data, broadcast over ``lead``
    linear: np.ndarray | None
    batch_dims: int


@register
class GatherND(Op):
    types = ("GatherND",)

    def read(self, t: Translation) -> GatherNDPlan:
        shape, ishape = t.const_shape(0), t.const_shape(1)
        b = t.int("batch_dims", 0)
        k = ishape[-1]
        if k == 0:
            t.unsupported("empty index tuples")
        dims = list(shape[b:b + k])
        strides = [int(np.prod(dims[j + 1:], dtype=np.int64)) for j in range(k)]
        inner = int(np.prod(dims, dtype=np.int64))
        batch = int(np.prod(shape[:b], dtype=np.int64))
        lead = tuple(ishape[:-1])
        offset = (np.arange(batch, dtype=np.int64) * inner).reshape(tuple(ishape[:b]) + (1,) * (len(lead) - b))
        idx = t.const(1)
        linear = None
        if idx is not None:
            idx = idx.astype(np.int64)
            idx = np.where(idx < 0, idx + np.array(dims, np.int64), idx)
            linear = (idx * np.array(strides, np.int64)).sum(-1) + offset
        return GatherNDPlan((batch * inner, *shape[b + k:]), dims, strides, lead, offset, linear, b)

    def torch(self, t: Translation, p: GatherNDPlan) -> None:
        data = f"{t.inp(0)}.reshape{T.shape_args(p.data_shape)}"
        if p.linear is not None:
            t.assign(f"{data}[{T.buffer(t, T.hint(t) + '_index', p.linear)}]")
            return
        i = f"{t.inp(1)}.long()"
        i = f"torch.where({i} < 0, {i} + torch.tensor({p.dims}), {i})"
        linear = f"({i} * torch.tensor({p.strides})).sum(-1)"
        if p.batch_dims:
            linear = f"{linear} + {T.buffer(t, T.hint(t) + '_offset', p.offset)}"
        t.assign(f"{data}[{linear}]")

    def keras(self, t: Translation, p: GatherNDPlan) -> None:
        """Transformers' padding masks are written this way."""
        data = f"ops.reshape({t.inp(0)}, {shape_literal(p.data_shape)})"
        if p.linear is not None:
            t.assign(f"ops.take({data}, {K.new_constant(t, p.linear, 'index')}, axis=0)")
            return
        i = f"ops.cast({t.inp(1)}, 'int64')"
        i = f"ops.where(ops.less({i}, 0), ops.add({i}, np.array({tuple(p.dims)}, 'int64')), {i})"
        linear = f"ops.sum(ops.multiply({i}, np.array({tuple(p.strides)}, 'int64')), axis=-1)"
        if p.batch_dims:
            linear, _ = K.add(linear, p.lead, K.new_constant(t, p.offset, "offset"), p.offset.shape)
        t.assign(f"ops.take({data}, {linear}, axis=0)")
