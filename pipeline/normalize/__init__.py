"""Stage 2: normalize the ONNX graph with exact, checked passes.

Each pass is an ``onnx_ir`` in-place pass.  ``normalize`` runs them in order
and, with ``check=True``, runs the graph under onnxruntime before and after
every pass that changed something: a pass that alters results is a bug, and
the conversion stops there naming the pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from ..errors import EXIT_PARITY, PipelineError
from ..referee import compare, laid_out_inputs, ort_message, run_onnx
from .fuse import FoldBatchNorm, FuseConvBias
from .gather import GridGathers
from .layout import ChannelsLast, InterfaceLayout, SqueezeUnitConv
from .padding import ExplicitPads
from .patterns import fill_kept_shapes
from .recurrent import LoopAsRecurrent
from .select import WhereFromMasks
from .symbolic import infer as infer_symbolic
from .transpose import TransposeOptimizer


class PassBroke(PipelineError):
    """A normalize pass changed the graph's results: an internal bug (exit 1)."""

    exit_code = EXIT_PARITY


class GraphDoesNotRun(PipelineError):
    """The (exported or given) ONNX graph is rejected by onnxruntime (exit 2)."""


class FoldConstants(ir.passes.InPlacePass):
    """Inline functions, fold constants (shape arithmetic included), drop dead nodes.

    Only onnxscript's constant folder runs here, not its full ``optimize``: the
    latter's rewrite rules remove ``Add(x, 1e-8)`` as if the epsilon were zero.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import onnxscript.optimizer

        before = _fingerprint(model)
        onnxscript.optimizer.inline(model)
        _drop_empty_squeeze_axes(model.graph)
        for _ in range(4):  # to a fixpoint: a fold can make shapes static, so a Shape further on folds too
            start = _fingerprint(model)
            onnxscript.optimizer.fold_constants_ir(model, should_fold=_fold_every_constant)
            RemoveUnusedNodesPass()(model)
            if _fingerprint(model) == start:
                break
            RefreshShapes()(model)
        _outputs_made_by_nodes(model.graph)
        return ir.passes.PassResult(model, _fingerprint(model) != before)


def _outputs_made_by_nodes(graph: ir.Graph) -> None:
    """A graph output that folded to a constant (Dropout's all-true mask) becomes ``Identity(constant)``:
    onnxruntime refuses a graph output that no node makes."""
    from .graph import fresh_name

    for i, out in enumerate(list(graph.outputs)):
        if out.producer() is not None or not out.is_initializer():
            continue
        name = out.name
        del graph.initializers[name]
        out.name = fresh_name(graph, name + "_value")
        graph.register_initializer(out)
        node = ir.node("Identity", [out], name=fresh_name(graph, "identity"))
        node.outputs[0].name, node.outputs[0].shape, node.outputs[0].type = name, out.shape, out.type
        graph.append(node)
        graph.outputs[i] = node.outputs[0]


# Ops that draw random numbers: the same inputs need not give the same outputs, so never folded.
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "Bernoulli"})
# Kept as they are by the folder's own rule (quantization information).
_KEEP_OPS = frozenset({"DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear"})


def _fold_every_constant(node: ir.Node) -> bool | None:
    """Fold every node whose inputs are all constants, whatever their size: a computed weight
    (weight normalization's ``v * g / ReduceL2(v)``, weight standardization's batch norm over
    the kernel) then becomes the plain weight a layer takes.  The folder still skips a result
    that would grow the model by more than its output bound (a large Expand of a constant)."""
    if node.domain in ("", "ai.onnx") and node.op_type in _RANDOM_OPS:
        return False
    if node.domain in ("", "ai.onnx") and node.op_type in _KEEP_OPS:
        return None
    return True


def _drop_empty_squeeze_axes(graph: ir.Graph) -> None:
    """``Squeeze(x, axes=[])``: onnxruntime squeezes every unit axis, ONNX shape inference
    squeezes none.  Dropping the empty ``axes`` input says what onnxruntime does in the
    form both agree on, so later passes can trust the inferred shapes."""
    from .graph import const_array

    for node in graph:
        if node.op_type == "Squeeze" and node.domain == "" and len(node.inputs) > 1 and node.inputs[1] is not None:
            axes = const_array(node.inputs[1])
            if axes is not None and axes.size == 0:
                node.resize_inputs(1)


class RefreshShapes(ir.passes.InPlacePass):
    """Forget intermediate shapes and infer them again from the inputs (static, or symbolic:
    see ``symbolic.infer``)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        kept: set[ir.Value] = set()  # shapes set here that ONNX's inference gets wrong
        for _ in range(8):  # a round corrects pools whose inputs the previous round corrected
            for node in model.graph:
                for v in node.outputs:
                    if not v.is_graph_output() and v not in kept:
                        v.shape = None
            ShapeInferencePass(strict_mode=False)(model)
            while fill_kept_shapes(model.graph):  # GroupNormalization: ONNX's inference gives no shape
                ShapeInferencePass(strict_mode=False)(model)
            if not _ceil_pool_shapes(model.graph, kept):
                break
        infer_symbolic(model)  # symbolic inputs only: sizes ONNX's inference left unknown become expressions
        _sequences_stay_sequences(model.graph)
        return ir.passes.PassResult(model, False)


_SEQUENCE_MAKERS = frozenset({"SplitToSequence", "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase"})


def _sequences_stay_sequences(graph: ir.Graph) -> None:
    """onnx_ir's shape inference types a tensor sequence (SplitToSequence's output) as a tensor,
    which onnxruntime then refuses: the outputs of ops that make sequences get their sequence
    type back, the element type from their tensor input."""
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _SEQUENCE_MAKERS:
            continue
        out = node.outputs[0]
        if isinstance(out.type, ir.SequenceType):
            continue
        element = next((v.dtype for v in node.inputs if v is not None and v.dtype is not None), None)
        if element is None and node.op_type == "SequenceEmpty":
            element = ir.DataType(node.attributes.get_int("dtype", 1))
        if element is not None:
            out.type = ir.SequenceType(ir.TensorType(element))
            out.shape = None


def _ceil_pool_shapes(graph: ir.Graph, kept: set) -> bool:
    """Correct ceil_mode pools' inferred output shapes; True if one changed (infer again after it).

    ONNX shape inference keeps a last ceil_mode window that would start inside the end
    padding; onnxruntime and PyTorch drop it (``padding.pool_len``).  An existing shape
    survives inference, so the correct one set here carries to the nodes after the pool.
    """
    from .padding import pool_len, spatial_sizes

    changed = False
    for node in graph:
        if (node.op_type not in ("MaxPool", "AveragePool") or node.domain != "" or not node.attributes.get_int("ceil_mode", 0)
                or node.attributes.get_string("auto_pad", "NOTSET") != "NOTSET"):
            continue
        sizes, out = spatial_sizes(node.inputs[0]), node.outputs[0]
        if sizes is None:
            continue  # the output's sizes follow from the spatial ones alone; batch and channels may vary
        kernel = node.attributes.get_ints("kernel_shape")
        nd = len(kernel)
        strides = node.attributes.get_ints("strides", [1] * nd)
        pads = node.attributes.get_ints("pads", [0] * (2 * nd))
        dil = node.attributes.get_ints("dilations", [1] * nd)
        want = (*list(node.inputs[0].shape)[:2], *(pool_len(n, k, s, b, e, d, True)
                                                    for n, k, s, b, e, d in zip(sizes, kernel, strides, pads[:nd],
                                                                                pads[nd:], dil)))
        if out.shape is None or list(out.shape) != list(want):
            out.shape = ir.Shape(list(want))
            kept.add(out)
            changed = True
    return changed


class Cleanup(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _fingerprint(model)
        RemoveUnusedNodesPass()(model)
        TopologicalSortPass()(model)
        for name in [n for n, v in model.graph.initializers.items() if not v.uses()]:
            del model.graph.initializers[name]
        return ir.passes.PassResult(model, _fingerprint(model) != before)


def _fingerprint(model: ir.Model) -> tuple:
    return tuple((n.op_type, tuple(id(v) for v in n.inputs)) for n in model.graph)


@dataclass
class PassRecord:
    name: str
    changed: bool
    nodes_after: int
    seconds: float
    max_abs_err: float | None = None
    pass_seconds: float = 0.0  # --profile: the pass itself,
    shapes_seconds: float = 0.0  # shape inference after it,
    check_seconds: float = 0.0  # onnxruntime before/after comparison
    checked_with: list[str] | None = None  # the passes one onnxruntime check covered (see CHECKED_TOGETHER)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Normalized:
    model: ir.Model
    passes: list[PassRecord]
    interface: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {"inputs": {}, "outputs": {}})
    reference_seconds: float = 0.0  # --profile: onnxruntime on the graph before any pass


# A layout pass and the transpose optimizer run right after it are checked once, after both: the
# optimizer is there to clean up the transposes the layout pass wrapped around every op, and the
# check compares their joint result with the same reference at the same tolerance, so the verdict
# is the same; a failure names both.  On a 100 MB graph each onnxruntime check costs about a second.
CHECKED_TOGETHER = {"channels_last": "transposes", "interface_layout": "transposes"}


def pass_plan(target: str, layout: str, fold_bn: bool = False) -> list[tuple[str, ir.passes.PassBase]]:
    """The passes for a target, in order; ``fold_bn`` adds the opt-in BatchNorm folding."""
    plan: list[tuple[str, ir.passes.PassBase]] = [
        ("fold_constants", FoldConstants()),
        ("loops_as_rnn", LoopAsRecurrent(then=FoldConstants())),
        ("where_from_masks", WhereFromMasks()),
        ("grid_gathers", GridGathers()),
        ("explicit_pads", ExplicitPads()),
        ("squeeze_unit_conv", SqueezeUnitConv()),
        ("transposes", TransposeOptimizer()),
        ("fuse_conv_bias", FuseConvBias()),
    ]
    if fold_bn:
        plan.append(("fold_batch_norm", FoldBatchNorm()))
    if target == "keras":
        plan += [("channels_last", ChannelsLast()), ("transposes", TransposeOptimizer())]
    if layout == "target":
        plan += [("interface_layout", InterfaceLayout(channels_last_target=target == "keras")),
                 ("transposes", TransposeOptimizer())]
    plan.append(("cleanup", Cleanup()))
    return plan


def load(path) -> ir.Model:
    model = ir.load(str(path))
    RefreshShapes()(model)
    if _split_sequences_as_split(model):
        RefreshShapes()(model)
    return model


def _split_sequences_as_split(model: ir.Model) -> bool:
    """``SplitToSequence`` read only by ``SequenceAt(seq, constant)`` -> one ``Split``.

    torch.onnx writes ``tensor.split(n, dim)`` (GPT-2's qkv split) this way.  Neither
    target has tensor sequences, and onnx_ir's shape inference types the sequence as a
    tensor, which onnxruntime then rejects; a plain ``Split`` says the same exactly."""
    from .graph import add_initializer, const_array, fresh_name, static_shape

    opset = model.opset_imports.get("", 0)
    changed = False
    for node in [n for n in model.graph if n.op_type == "SplitToSequence" and n.domain == ""]:
        seq, shape = node.outputs[0], static_shape(node.inputs[0])
        readers = list(seq.uses())
        positions = [const_array(u.node.inputs[1]) if u.node.op_type == "SequenceAt" else None for u in readers]
        if opset < 13 or shape is None or seq.is_graph_output() or any(p is None for p in positions):
            continue
        axis = node.attributes.get_int("axis", 0) % len(shape)
        dim = shape[axis]
        split = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if len(node.inputs) > 1 and node.inputs[1] is not None and split is None:
            continue
        if split is None:
            sizes = [1] * dim
        elif split.ndim == 0:
            sizes = [int(split)] * (dim // int(split)) + ([dim % int(split)] if dim % int(split) else [])
        else:
            sizes = [int(s) for s in split]
        squeeze = split is None and node.attributes.get_int("keepdims", 1) == 0
        sizes_value = add_initializer(model.graph, np.array(sizes, np.int64), "split_sizes")
        new = ir.node("Split", [node.inputs[0], sizes_value], {"axis": axis}, num_outputs=len(sizes),
                      name=fresh_name(model.graph, "split"))
        for out in new.outputs:
            out.name = fresh_name(model.graph, "split_out")
        model.graph.insert_before(node, new)
        for u, pos in zip(readers, positions):
            part = new.outputs[int(pos) % len(sizes)]
            if squeeze:
                axes = add_initializer(model.graph, np.array([axis], np.int64), "axes")
                sq = ir.node("Squeeze", [part, axes], name=fresh_name(model.graph, "squeeze"))
                sq.outputs[0].name = fresh_name(model.graph, "squeezed")
                model.graph.insert_before(u.node, sq)
                part = sq.outputs[0]
            public = u.node.outputs[0]
            if public.is_graph_output():
                ident = ir.node("Identity", [part], name=fresh_name(model.graph, "identity"))
                model.graph.insert_before(u.node, ident)
                name = public.name
                public.replace_all_uses_with(ident.outputs[0], replace_graph_outputs=True)
                public.name, ident.outputs[0].name = fresh_name(model.graph, name), name
            else:
                public.replace_all_uses_with(part)
            model.graph.remove(u.node, safe=True)
        model.graph.remove(node, safe=True)
        changed = True
    return changed


def normalize(model: ir.Model, target: str, layout: str = "source", inputs: dict[str, np.ndarray] | None = None,
              atol: float = 1e-4, rtol: float = 1e-4, progress=None, fold_bn: bool = False) -> Normalized:
    """Run the pass plan on ``model`` in place; check each change under onnxruntime if ``inputs``."""
    start = time.perf_counter()
    try:
        reference = run_onnx(model, inputs) if inputs is not None else None
    except Exception as exc:
        raise GraphDoesNotRun(f"onnxruntime cannot run the ONNX graph: {ort_message(exc)}") from exc
    reference_seconds = round(time.perf_counter() - start, 4)
    out_names = [v.name for v in model.graph.outputs]
    records: list[PassRecord] = []
    interface = {"inputs": {}, "outputs": {}}
    plan = pass_plan(target, layout, fold_bn)
    pending: list[PassRecord] = []  # changed passes not checked yet (a group's first pass)
    for i, (name, p) in enumerate(plan):
        if progress:
            progress(f"pass {name}")
        start = time.perf_counter()
        changed = p(model).modified
        mark = time.perf_counter()
        if changed:  # an unchanged graph keeps the shapes inferred for it
            RefreshShapes()(model)
        record = PassRecord(name, bool(changed), len(list(model.graph)), 0.0,
                            pass_seconds=round(mark - start, 4), shapes_seconds=round(time.perf_counter() - mark, 4))
        mark = time.perf_counter()
        if isinstance(p, InterfaceLayout):
            interface = p.interface
        if changed:
            pending.append(record)
        then = plan[i + 1][0] if i + 1 < len(plan) else None
        waits = name in CHECKED_TOGETHER and CHECKED_TOGETHER[name] == then  # checked after the next pass
        if pending and reference is not None and not waits:
            names = [r.name for r in pending]
            feed = laid_out_inputs(inputs, interface)
            got = run_onnx(model, feed)
            worst = 0.0
            for ref, val, oname in zip(reference, got, out_names):
                perm = interface["outputs"].get(oname)
                ref = ref.transpose(perm) if perm else ref
                c = compare(oname, ref, val, atol, rtol)
                worst = max(worst, c.max_abs_err)
                if not c.passed:
                    which = (f"normalize pass '{names[0]}'" if len(names) == 1 else
                             "normalize passes " + ", ".join(f"'{n}'" for n in names) + " (checked together)")
                    raise PassBroke(
                        f"{which} changed output '{oname}' (max abs err {c.max_abs_err:.3g}); "
                        "this is a bug in pipeline, please report it with the model"
                    )
            for r in pending:
                r.max_abs_err = worst
                r.checked_with = names if len(names) > 1 else None
            pending = []
        record.check_seconds = round(time.perf_counter() - mark, 4)
        record.seconds = round(time.perf_counter() - start, 4)
        records.append(record)
    return Normalized(model, records, interface, reference_seconds)
