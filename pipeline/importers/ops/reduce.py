"""Reductions: Reduce*, ArgMax/ArgMin, CumSum, TopK.

The Reduce ops took ``axes`` as an attribute until opset 13 (ReduceSum) or 18 (the
others) and as an optional input since; with no axes they reduce everything, unless
``noop_with_empty_axes`` says they do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register

# op -> (PyTorch, Keras) expression of {x}, dims {d} and {k}eepdims
REDUCE = {
    "ReduceMean": ("{x}.mean(dim={d}, keepdim={k})", "ops.mean({x}, axis={d}, keepdims={k})"),
    "ReduceSum": ("{x}.sum(dim={d}, keepdim={k})", "ops.sum({x}, axis={d}, keepdims={k})"),
    "ReduceMax": ("{x}.amax(dim={d}, keepdim={k})", "ops.max({x}, axis={d}, keepdims={k})"),
    "ReduceMin": ("{x}.amin(dim={d}, keepdim={k})", "ops.min({x}, axis={d}, keepdims={k})"),
    "ReduceL2": ("torch.linalg.vector_norm({x}, 2, dim={d}, keepdim={k})",
                 "ops.sqrt(ops.sum(ops.square({x}), axis={d}, keepdims={k}))"),
    "ReduceL1": ("torch.linalg.vector_norm({x}, 1, dim={d}, keepdim={k})",
                 "ops.sum(ops.abs({x}), axis={d}, keepdims={k})"),
    "ReduceSumSquare": ("({x} * {x}).sum(dim={d}, keepdim={k})", "ops.sum(ops.square({x}), axis={d}, keepdims={k})"),
    "ReduceLogSumExp": ("torch.logsumexp({x}, dim={d}, keepdim={k})", "ops.logsumexp({x}, axis={d}, keepdims={k})"),
    "ReduceLogSum": ("torch.log({x}.sum(dim={d}, keepdim={k}))", "ops.log(ops.sum({x}, axis={d}, keepdims={k}))"),
    "ReduceProd": (None, "ops.prod({x}, axis={d}, keepdims={k})"),  # torch.prod takes one axis: see below
}
# what a reduction over no elements gives (the spec's value; both frameworks' max/min refuse empty input)
EMPTY = {"ReduceMax": float("-inf"), "ReduceMin": float("inf")}


@dataclass
class Reduction:
    dims: list[int] | None  # sorted non-negative axes; None: the node does nothing
    keep: bool
    empty: bool  # some reduced axis has no elements


@register
class Reduce(Op):
    types = tuple(REDUCE)
    traits = frozenset({"reduce"})

    def read(self, t: Translation) -> Reduction:
        shape = t.dims(0)
        rank = len(shape)
        axes = t.ints("axes")
        if axes is None and t.has_input(1):
            axes = t.need_const(1, "axes").reshape(-1).tolist()
        if not axes:
            dims = None if t.int("noop_with_empty_axes", 0) else list(range(rank))
        else:
            dims = sorted({int(a) % rank for a in axes})
        empty = dims is not None and any(shape[d] == 0 for d in dims)
        return Reduction(dims, bool(t.int("keepdims", 1)), empty)

    def torch(self, t: Translation, p: Reduction) -> None:
        x = t.inp(0)
        if p.dims is None:
            t.alias(x)
        elif p.empty and t.op in EMPTY:
            t.assign(f"{x}.sum(dim={tuple(p.dims)}, keepdim={p.keep}) + float({str(EMPTY[t.op])!r})",
                     comment="a reduction over no elements: the spec's value")
        elif t.op == "ReduceProd":
            expr = x
            for d in reversed(p.dims):
                expr = f"{expr}.prod(dim={d}, keepdim={p.keep})"
            t.assign(expr)
        else:
            t.assign(REDUCE[t.op][0].format(x=x, d=tuple(p.dims), k=p.keep))

    def keras(self, t: Translation, p: Reduction) -> None:
        if p.dims is None:
            t.alias(t.inp(0))
            return
        d = str(p.dims[0]) if len(p.dims) == 1 else str(tuple(p.dims))
        if p.empty and t.op in EMPTY:  # Keras' max/min refuse empty tensors
            t.assign(f"ops.add(ops.sum({t.inp(0)}, axis={d}, keepdims={p.keep}), float({str(EMPTY[t.op])!r}))",
                     comment="a reduction over no elements: the spec's value")
            return
        t.assign(REDUCE[t.op][1].format(x=t.inp(0), d=d, k=p.keep))


@dataclass
class ArgPlan:
    axis: int
    keep: bool
    last: int | None  # with select_last_index: the axis' last index (the flipped axis is searched)


@register
class ArgExtreme(Op):
    """ArgMax / ArgMin: the first index of ties, or the last with ``select_last_index``."""

    types = ("ArgMax", "ArgMin")

    def read(self, t: Translation) -> ArgPlan:
        axis = t.int("axis", 0) % t.rank(0)
        last = t.sizes(0, [axis])[0] - 1 if t.int("select_last_index", 0) else None
        return ArgPlan(axis, bool(t.int("keepdims", 1)), last)

    def torch(self, t: Translation, p: ArgPlan) -> None:
        fn = "torch.argmax" if t.op == "ArgMax" else "torch.argmin"
        if p.last is not None:
            t.assign(f"{p.last} - {fn}({t.inp(0)}.flip({p.axis}), dim={p.axis}, keepdim={p.keep})",
                     comment="last index of ties")
        else:
            t.assign(f"{fn}({t.inp(0)}, dim={p.axis}, keepdim={p.keep})")

    def keras(self, t: Translation, p: ArgPlan) -> None:
        fn = "ops.argmax" if t.op == "ArgMax" else "ops.argmin"
        if p.last is not None:
            found = f"ops.subtract({p.last}, {fn}(ops.flip({t.inp(0)}, axis={p.axis}), axis={p.axis}, keepdims={p.keep}))"
            t.assign(f"ops.cast({found}, 'int64')", comment="last index of ties")
        else:
            t.assign(f"ops.cast({fn}({t.inp(0)}, axis={p.axis}, keepdims={p.keep}), 'int64')")


@dataclass
class CumPlan:
    axis: int
    reverse: bool
    exclusive: bool


@register
class CumSum(Op):
    """Running sums; ``reverse`` flips around it, ``exclusive`` shifts the input one step along the axis."""

    types = ("CumSum",)

    def read(self, t: Translation) -> CumPlan:
        rank = t.rank(0)
        axis = int(t.need_const(1, "the axis").reshape(-1)[0]) % rank
        return CumPlan(axis, bool(t.int("reverse", 0)), bool(t.int("exclusive", 0)))

    @staticmethod
    def _all_but_last(axis: int) -> str:
        """The index that drops the last element of ``axis`` (any size: ``[:, :-1]``)."""
        return ", ".join([":"] * axis + [":-1"]) + ("," if axis == 0 else "")

    def torch(self, t: Translation, p: CumPlan) -> None:
        rank, axis = t.rank(0), p.axis
        x = f"{t.inp(0)}.flip({axis})" if p.reverse else t.inp(0)
        if p.exclusive:
            pad = (0, 0) * (rank - 1 - axis) + (1, 0)
            x = f"F.pad({x}[{self._all_but_last(axis)}], {pad})"
        dtype = T.DTYPE_NAMES.get(t.out_dtype().value)
        keep_int = np.issubdtype(T.np_dtype(t), np.integer) and dtype != "torch.int64"
        expr = f"torch.cumsum({x}, dim={axis}{f', dtype={dtype}' if keep_int else ''})"  # torch sums ints as int64
        t.assign(f"{expr}.flip({axis})" if p.reverse else expr)

    def keras(self, t: Translation, p: CumPlan) -> None:
        rank, axis = t.rank(0), p.axis
        x = f"ops.flip({t.inp(0)}, axis={axis})" if p.reverse else t.inp(0)
        if p.exclusive:
            width = [(0, 0)] * rank
            width[axis] = (1, 0)
            x = f"ops.pad({x}, {width})[{self._all_but_last(axis)}]"
        expr = f"ops.cumsum({x}, axis={axis})"
        t.assign(f"ops.flip({expr}, axis={axis})" if p.reverse else expr)


@dataclass
class TopKPlan:
    k: int
    axis: int
    rank: int
    largest: bool
    sorted: bool


@register
class TopK(Op):
    """The ``k`` largest (or smallest) values along ``axis`` and their int64 indices.

    Opset 1 gives ``k`` as an attribute, later opsets as an input.  ``sorted=0`` leaves the
    order to the implementation (the frameworks order differently: see the README's known gaps).
    """

    types = ("TopK",)

    def read(self, t: Translation) -> TopKPlan:
        k = t.int("k") if t.opset < 10 else int(t.need_const(1, "K").reshape(-1)[0])
        rank = t.rank(0)
        return TopKPlan(k, t.int("axis", -1) % rank, rank, bool(t.int("largest", 1)), bool(t.int("sorted", 1)))

    def torch(self, t: Translation, p: TopKPlan) -> None:
        """Sorted: a stable ``torch.sort``, then the first ``k`` — ONNX puts the lower index first
        among equal values, which ``torch.topk`` does not promise; unsorted: ``torch.topk``."""
        if not p.sorted:
            args = [t.inp(0), str(p.k), f"dim={p.axis}"] + ([] if p.largest else ["largest=False"])
            t.gen.emit(f"{t.out(0)}, {t.out(1)} = torch.topk({', '.join(args + ['sorted=False'])})")
            return
        ordered = t.gen.names.take(f"{t.out(0)}_sorted")
        order = t.gen.names.take(f"{t.out(1)}_order")
        t.gen.emit(f"{ordered}, {order} = torch.sort({t.inp(0)}, dim={p.axis}, descending={p.largest}, stable=True)",
                   "top-k with ties in index order, as ONNX wants")
        t.assign(f"{ordered}.narrow({p.axis}, 0, {p.k})", 0)
        t.assign(f"{order}.narrow({p.axis}, 0, {p.k})", 1)

    def keras(self, t: Translation, p: TopKPlan) -> None:
        """``ops.top_k`` works on the last axis, largest first: other axes move last and back, the
        smallest are the top of the negation; always sorted."""
        perm = list(range(p.rank))
        perm[p.axis], perm[-1] = perm[-1], perm[p.axis]  # a swap: its own inverse
        last = p.axis == p.rank - 1
        x = t.inp(0) if last else f"ops.transpose({t.inp(0)}, {tuple(perm)})"
        x = x if p.largest else f"ops.negative({x})"
        direct = p.largest and last
        vals = t.out(0) if direct else t.gen.names.take(f"{t.out(0)}_top")
        idx = t.gen.names.take(f"{t.out(1)}_int32")
        t.gen.emit(f"{vals}, {idx} = ops.top_k({x}, {p.k})", None if p.largest else "the smallest: top_k of the negation")
        if not direct:
            vals = vals if p.largest else f"ops.negative({vals})"
            if not last:
                vals, idx = f"ops.transpose({vals}, {tuple(perm)})", f"ops.transpose({idx}, {tuple(perm)})"
            t.assign(vals, 0)
        t.assign(f"ops.cast({idx}, 'int64')", 1)
