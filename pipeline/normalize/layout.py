"""Layout passes.

``SqueezeUnitConv``: TensorFlow runs a 1-D convolution (and a 1-D transposed
convolution) as a 2-D one over an axis it inserted with ``ExpandDims``.  When
a Conv's or ConvTranspose's spatial axis was made by an ``Unsqueeze`` (seen
through Transposes), has size 1, kernel 1, no padding (and, for ConvTranspose,
no output padding and an output size of 1), the op is rewritten one rank lower
between Squeeze/Unsqueeze; the transpose optimizer then cancels the
Squeeze/Unsqueeze pairs, leaving the Conv1d / ConvTranspose1d the user wrote.

``ChannelsLast``: for a channels-last target (Keras), each layout-sensitive op
is wrapped as ``T_free(cf->cl) -> T_pin(cl->cf) -> op -> T_pin(cf->cl) ->
T_free(cl->cf)``.  The graph computes exactly the same thing; the pinned pair
marks "this op runs channels-last" for the importer, and the free transposes
are then pushed and cancelled by ``TransposeOptimizer``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .graph import (
    PIN_IN,
    PIN_KEY,
    PIN_OUT,
    add_initializer,
    const_array,
    is_free_transpose,
    make_node,
    ops_with,
    perm_of,
    rank_of,
    remove_if_dead,
    set_shape,
    static_shape,
    to_first,
    to_last,
    transpose_node,
)
from .patterns import fuse_patterns, group_norm_chains
from .transpose import _axes

def _resizes_only_spatial(node: ir.Node) -> bool:
    """A Resize that keeps N and C (scales/sizes of 1 / unchanged on axes 0 and 1); either may
    be a symbol (one name is one size)."""
    from .symbolic import dims

    x, y = dims(node.inputs[0]), dims(node.outputs[0])
    return x is not None and y is not None and len(x) == len(y) and x[:2] == y[:2]


def _unsqueezed_axes(value: ir.Value) -> set[int]:
    """Axes of ``value`` that an Unsqueeze created (followed through Transposes)."""
    perm_chain = []
    v = value
    while True:
        node = v.producer()
        if node is None:
            return set()
        if node.op_type == "Transpose":
            perm_chain.append(perm_of(node))
            v = node.inputs[0]
            continue
        if node.op_type == "Unsqueeze":
            rank = rank_of(node.outputs[0])
            axes = _axes(node, rank) if rank is not None else None
            if axes is None:
                return set()
            # Map the created axes forward through the transposes to `value`.
            created = set(axes)
            for perm in reversed(perm_chain):
                created = {i for i, p in enumerate(perm) if p in created}
            return created
        return set()


class SqueezeUnitConv(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed = False
        for node in list(graph):
            if node.op_type not in ("Conv", "ConvTranspose") or node.domain != "":
                continue
            x, w = node.inputs[0], node.inputs[1]
            shape = None if x.shape is None else [d if isinstance(d, int) else None for d in x.shape]  # None: varies
            warr = const_array(w)
            if shape is None or warr is None or len(shape) != 4 or warr.ndim != 4:
                continue
            pads = list(node.attributes.get_ints("pads", [0] * 4))
            axis = _unit_axis(node, shape, warr, pads)
            if axis is None:
                continue
            i = axis - 2
            keep = 1 - i
            ax = add_initializer(graph, np.array([axis], np.int64), "axes")
            sq_shape = [d for j, d in enumerate(shape) if j != axis]
            sq = make_node(graph, "Squeeze", [x, ax], hint="squeeze", before=node, shape=sq_shape, dtype=x.dtype)
            node.replace_input_with(0, sq.outputs[0])
            # The kernel's spatial axes sit at 2, 3 for both layouts: Conv (C_out, C_in/g, kH, kW)
            # and ConvTranspose (C_in, C_out/g, kH, kW).
            node.replace_input_with(1, add_initializer(graph, np.squeeze(warr, axis=axis), (w.name or "w") + "_1d"))
            for name in _PER_AXIS_ATTRS:
                vals = node.attributes.get_ints(name)
                if vals is not None:
                    node.attributes[name] = ir.AttrInt64s(name, [vals[keep]])
            if node.attributes.get_string("auto_pad", "NOTSET") == "NOTSET":
                node.attributes["pads"] = ir.AttrInt64s("pads", [pads[keep], pads[keep + 2]])
            out = node.outputs[0]
            out_shape = None if out.shape is None else list(out.shape)  # sizes may be symbols
            users = list(out.uses())
            was_output = out.is_graph_output()
            unsq = ir.node("Unsqueeze", [out, ax], name=(node.name or "conv") + "__unsqueeze")
            unsq.outputs[0].name = out.name + "__4d"
            graph.insert_after(node, unsq)
            if out_shape is not None and len(out_shape) == 4:
                unsq.outputs[0].shape, unsq.outputs[0].dtype = ir.Shape(out_shape), out.dtype
                out.shape = ir.Shape([d for j, d in enumerate(out_shape) if j != axis])
            for user, idx in users:
                user.replace_input_with(idx, unsq.outputs[0])
            if was_output:
                public = out.name
                out.name, unsq.outputs[0].name = public + "__1d", public
                graph.outputs[list(graph.outputs).index(out)] = unsq.outputs[0]
            changed = True
        return ir.passes.PassResult(model, changed)


# Per-spatial-axis attributes of Conv / ConvTranspose (one value per spatial axis).
_PER_AXIS_ATTRS = ("kernel_shape", "strides", "dilations", "output_padding", "output_shape")


def _unit_axis(node: ir.Node, shape: tuple[int, ...], warr: np.ndarray, pads: list[int]) -> int | None:
    """The spatial axis (2 or 3) of a rank-4 Conv/ConvTranspose that can be dropped, else None.

    The axis must come from an ``Unsqueeze``, have size 1 and kernel 1, and no
    padding; a ConvTranspose also needs no output padding and an output size of
    1 there, so that the op maps a unit axis to a unit axis (stride and
    dilation do not matter on a size-1 axis with a size-1 kernel).
    """
    transposed = node.op_type == "ConvTranspose"
    # "same" over a varying size stays auto_pad (normalize.padding); on a unit axis with a unit
    # kernel it pads nothing, whatever the stride
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if (auto_pad != "NOTSET" and (transposed or auto_pad == "VALID")) or len(pads) != 4:
        return None
    outpad = list(node.attributes.get_ints("output_padding", [0, 0])) if transposed else [0, 0]
    out_attr = node.attributes.get_ints("output_shape") if transposed else None
    out_shape = static_shape(node.outputs[0])
    made = _unsqueezed_axes(node.inputs[0])
    for a in (2, 3):
        i = a - 2
        if a not in made or shape[a] != 1 or warr.shape[a] != 1 or pads[i] != 0 or pads[i + 2] != 0:
            continue
        if len(outpad) != 2 or outpad[i] != 0:
            continue
        if out_attr is not None and (len(out_attr) != 2 or out_attr[i] != 1):
            continue
        if out_shape is not None and out_shape[a] != 1:
            continue
        return a
    return None


class ChannelsLast(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed = fuse_patterns(graph)  # exported GroupNorm(G == C) / LocalResponseNorm -> one layout op
        inside = set()
        for first, last in group_norm_chains(graph):  # exported GroupNorm(G < C): one layer in Keras
            inside.update(_wrap(graph, first, last))
        changed |= bool(inside)
        for node in list(graph):
            if node.op_type not in ops_with("layout") or node.domain != "" or node in inside:
                continue
            if node.op_type == "Resize" and not _resizes_only_spatial(node):
                continue
            rank = rank_of(node.inputs[0])
            if rank is None or rank < 3 or rank > 5:
                continue
            if len([o for o in node.outputs if o.uses() or o.is_graph_output()]) != 1:
                continue
            _wrap(graph, node, node)
            changed = True
        return ir.passes.PassResult(model, changed)


def _wrap(graph: ir.Graph, first: ir.Node, last: ir.Node) -> list[ir.Node]:
    """Put the chain ``first`` .. ``last`` between pinned transposes (and their free inverses).

    ``first``'s input 0 and ``last``'s output 0 have the same rank; returns the chain's nodes.
    """
    x = first.inputs[0]
    rank = rank_of(x)
    chain, node = [first], first
    while node is not last:
        node = node.outputs[0].consumers()[0]
        chain.append(node)
    cl, cf = to_last(rank), to_first(rank)
    free_in = transpose_node(graph, x, cl, before=first)
    pin_in = transpose_node(graph, free_in.outputs[0], cf, before=first, role=PIN_IN)
    first.replace_input_with(0, pin_in.outputs[0])
    out = last.outputs[0]
    users = list(out.uses())
    was_output = out.is_graph_output()
    pin_out = ir.node("Transpose", [out], {"perm": cl}, metadata_props={PIN_KEY: PIN_OUT})
    pin_out.outputs[0].name = out.name + "__cl"
    _copy_permuted(out, pin_out.outputs[0], cl)
    graph.insert_after(last, pin_out)
    free_out = ir.node("Transpose", [pin_out.outputs[0]], {"perm": cf})
    graph.insert_after(pin_out, free_out)
    free_out.outputs[0].name = out.name + "__cf"
    free_out.outputs[0].shape, free_out.outputs[0].dtype = out.shape, out.dtype
    for user, idx in users:
        user.replace_input_with(idx, free_out.outputs[0])
    if was_output:
        public = out.name
        out.name, free_out.outputs[0].name = public + "__op", public
        graph.outputs[list(graph.outputs).index(out)] = free_out.outputs[0]
    return chain


def _copy_permuted(src: ir.Value, dst: ir.Value, perm) -> None:
    shape = static_shape(src)
    set_shape(dst, None if shape is None else [shape[p] for p in perm], src.dtype)


class InterfaceLayout(ir.passes.InPlacePass):
    """``--layout target``: move boundary transposes out of the model.

    An input consumed by a free Transpose with ``inward`` perm (for a Keras
    target cf->cl, for a PyTorch target cl->cf) becomes an input in the target
    layout; an output produced by a free Transpose with the inverse perm is
    returned before it.  Anything else is left alone: the interface then stays
    in the source layout for that tensor.  ``self.interface`` records, per
    input and output name, the permutation from source layout to the new one.
    """

    def __init__(self, channels_last_target: bool):
        super().__init__()
        self.cl_target = channels_last_target
        self.interface: dict[str, dict[str, list[int]]] = {"inputs": {}, "outputs": {}}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        changed = False
        for x in list(graph.inputs):
            rank = rank_of(x)
            if rank is None or rank < 3:
                continue
            inward = to_last(rank) if self.cl_target else to_first(rank)
            users = x.consumers()
            if not any(is_free_transpose(u) and perm_of(u) == inward for u in users):
                continue
            shape = None if x.shape is None else list(x.shape)  # sizes may be symbols
            new = ir.Value(name=x.name, type=x.type)
            x.name = x.name + "__source_layout"
            if shape is not None:
                set_shape(new, [shape[p] for p in inward], x.dtype)
            graph.inputs[list(graph.inputs).index(x)] = new
            back = transpose_node(graph, new, [inward.index(i) for i in range(rank)], before=graph[0])
            x.replace_all_uses_with(back.outputs[0])
            self.interface["inputs"][new.name] = inward
            changed = True
        for i, y in enumerate(list(graph.outputs)):
            node = y.producer()
            rank = rank_of(y)
            if rank is None or rank < 3 or not is_free_transpose(node):
                continue
            outward = to_first(rank) if self.cl_target else to_last(rank)
            if perm_of(node) != outward:
                continue
            inner = node.inputs[0]
            if inner.is_graph_input() or inner.is_graph_output():
                continue
            public = y.name
            y.name = public + "__source_layout"
            inner.name = public
            graph.outputs[i] = inner
            remove_if_dead(graph, node)
            self.interface["outputs"][public] = [outward.index(k) for k in range(rank)]
            changed = True
        return ir.passes.PassResult(model, changed)
