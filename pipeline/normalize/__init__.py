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
from ..referee import compare, laid_out_inputs, run_onnx
from .fuse import FuseConvBias
from .layout import ChannelsLast, InterfaceLayout, SqueezeUnitConv
from .padding import ExplicitPads
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
        onnxscript.optimizer.fold_constants_ir(model)
        RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, _fingerprint(model) != before)


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
    """Forget intermediate shapes and infer them again from the (static) inputs."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            for v in node.outputs:
                if not v.is_graph_output():
                    v.shape = None
        ShapeInferencePass(strict_mode=False)(model)
        return ir.passes.PassResult(model, False)


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Normalized:
    model: ir.Model
    passes: list[PassRecord]
    interface: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {"inputs": {}, "outputs": {}})


def pass_plan(target: str, layout: str) -> list[tuple[str, ir.passes.PassBase]]:
    """The passes for a target, in order."""
    plan: list[tuple[str, ir.passes.PassBase]] = [
        ("fold_constants", FoldConstants()),
        ("explicit_pads", ExplicitPads()),
        ("squeeze_unit_conv", SqueezeUnitConv()),
        ("transposes", TransposeOptimizer()),
        ("fuse_conv_bias", FuseConvBias()),
    ]
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
    return model


def normalize(model: ir.Model, target: str, layout: str = "source", inputs: dict[str, np.ndarray] | None = None,
              atol: float = 1e-4, rtol: float = 1e-4, progress=None) -> Normalized:
    """Run the pass plan on ``model`` in place; check each change under onnxruntime if ``inputs``."""
    try:
        reference = run_onnx(model, inputs) if inputs is not None else None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise GraphDoesNotRun(f"onnxruntime cannot run the ONNX graph: {first}") from exc
    out_names = [v.name for v in model.graph.outputs]
    records: list[PassRecord] = []
    interface = {"inputs": {}, "outputs": {}}
    for name, p in pass_plan(target, layout):
        if progress:
            progress(f"pass {name}")
        start = time.perf_counter()
        changed = p(model).modified
        RefreshShapes()(model)
        record = PassRecord(name, bool(changed), len(list(model.graph)), 0.0)
        if isinstance(p, InterfaceLayout):
            interface = p.interface
        if changed and reference is not None:
            feed = laid_out_inputs(inputs, interface)
            got = run_onnx(model, feed)
            worst = 0.0
            for ref, val, oname in zip(reference, got, out_names):
                perm = interface["outputs"].get(oname)
                ref = ref.transpose(perm) if perm else ref
                c = compare(oname, ref, val, atol, rtol)
                worst = max(worst, c.max_abs_err)
                if not c.passed:
                    raise PassBroke(
                        f"normalize pass '{name}' changed output '{oname}' (max abs err {c.max_abs_err:.3g}); "
                        "this is a bug in pipeline, please report it with the model"
                    )
            record.max_abs_err = worst
        record.seconds = round(time.perf_counter() - start, 4)
        records.append(record)
    return Normalized(model, records, interface)
