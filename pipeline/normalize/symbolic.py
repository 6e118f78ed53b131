"""Symbolic shapes: what later stages need to know about dimensions that vary.

A graph whose inputs carry ``dim_param``s (symbols, see ``pipeline.spec``) keeps them
through normalize.  ONNX's own shape inference keeps a ``dim_param`` through elementwise
ops but gives up (an unnamed dimension, or no shape) wherever a size is computed: a
strided Conv or pool over a symbolic length, a Reshape whose ``-1`` absorbs a product of
symbols, a Slice to a symbolic end.  :func:`infer` fills those in with expressions of the
symbols, using onnxruntime's ``SymbolicShapeInference`` (sympy) and, where it cannot run,
the rules here for the ops whose output size is arithmetic of the input's.

Helpers for passes and importers: :func:`dims` (each dimension an int or a sympy
expression), :func:`is_static`, :func:`has_symbols`.
"""

from __future__ import annotations

import functools
import logging
import re

import onnx_ir as ir

logger = logging.getLogger(__name__)

# Names for a size nobody computed: ONNX's ``unk__N``, onnxruntime's ``Op_3_o0__d2`` (an op its
# inference has no rule for: ConvTranspose, or a ceil_mode pool left unknown on purpose).
_UNNAMED = re.compile(r"^(unk__\d+|\w+_o\d+__d\d+)$")


def has_symbols(model: ir.Model) -> bool:
    """True when a graph input has a dimension that is not a fixed integer."""
    return any(v.shape is not None and any(not isinstance(d, int) for d in v.shape) for v in model.graph.inputs)


def dims(value: ir.Value | None) -> list | None:
    """The value's dimensions: ints where static, sympy expressions of the symbols where not
    (``B``, ``floor(L/2) + 1``), a fresh sympy symbol where the size is unknown; None without
    a shape."""
    import sympy

    if value is None or value.shape is None:
        return None
    out = []
    for axis, d in enumerate(value.shape):
        if isinstance(d, int):
            out.append(d)
        elif d.value is None:
            out.append(sympy.Symbol(f"_unknown_{value.name}_{axis}", integer=True, positive=True))
        else:
            out.append(expression(d.value))
    return out


def expression(text: str):
    """A dim_param as a sympy expression; a name that is no expression stays one symbol."""
    import sympy

    try:
        expr = sympy.sympify(text, locals=_symbols_in(text))
        # onnxruntime's Reshape writes ``-1`` as floor(total / known), e.g. floor(32*B*(n - 1)/(8*n - 8)):
        # cancelled, the fraction is 4*B, a product of the symbols an importer can write.
        expr = expr.replace(lambda e: isinstance(e, sympy.floor), lambda e: sympy.floor(sympy.cancel(e.args[0])))
        return sympy.Integer(expr) if expr.is_Integer else expr
    except (sympy.SympifyError, SyntaxError, TypeError, AttributeError):
        return sympy.Symbol(text, integer=True, positive=True)


def _symbols_in(text: str) -> dict:
    import sympy

    names = set(re.findall(r"[A-Za-z_]\w*", text)) - {"floor", "ceiling", "Max", "Min", "Mod", "ceil"}
    return {n: sympy.Symbol(n, integer=True, positive=True) for n in names}


def is_static(value: ir.Value | None, axes=None) -> bool:
    """True when the value's dimensions at ``axes`` (all when None) are known integers."""
    if value is None or value.shape is None:
        return False
    shape = list(value.shape)
    picked = range(len(shape)) if axes is None else [a % len(shape) for a in axes]
    return all(isinstance(shape[a], int) for a in picked)


def infer(model: ir.Model) -> bool:
    """Fill in symbolic dimensions ONNX's inference left unknown, in place; True if any changed.

    A no-op for graphs without symbolic inputs (their shapes are already exact)."""
    if not has_symbols(model):
        return False
    changed = False
    try:
        changed = _from_onnxruntime(model)
    except Exception as exc:  # its coverage of ops is partial; the rules below still apply
        logger.info("SymbolicShapeInference did not run: %s", exc)
    return _own_rules(model) or changed


def _symbolic_shape_inference(proto):
    """onnxruntime's ``SymbolicShapeInference.infer_shapes`` with two changes: ``"SAME"``
    padding over a symbolic size gives ``ceiling(n / stride)`` (ONNX's definition; its own
    rule assumes the size divides by the stride, so an odd length came out one short), and
    an incomplete inference returns what it found instead of writing a file to the
    working directory and raising."""
    import sympy
    from onnxruntime.tools.symbolic_shape_infer import (
        SymbolicShapeInference,
        get_attribute,
        get_opset,
        is_literal,
    )

    class Inference(SymbolicShapeInference):
        def _infer_Shape(self, node):
            """Shape's ``start`` / ``end`` (opset 15), which its own rule ignores: torch.onnx's
            ``x.shape[0]`` is ``Shape(x, end=1)``, and taken whole it gave every size after
            the first to the reshape that reads it (a transformer's q/k/v)."""
            shape = self._get_sympy_shape(node, 0)
            start, end = get_attribute(node, "start", 0), get_attribute(node, "end", len(shape))
            self.sympy_data_[node.output[0]] = shape[slice(start, end)]

        def _compute_conv_pool_shape(self, node, channels_last=False):
            auto_pad = get_attribute(node, "auto_pad", b"NOTSET").decode("utf-8")
            if get_attribute(node, "ceil_mode", 0):
                shape = super()._compute_conv_pool_shape(node, channels_last)
                attrs = {a: get_attribute(node, a) for a in ("kernel_shape", "strides", "pads", "dilations")}
                for i in _ceil_pool_unsure_axes(attrs, self._get_sympy_shape(node, 0)):
                    shape[(1 if channels_last else 2) + i] = self._new_symbolic_dim_from_output(node, 0, i + 2)
                return shape
            if auto_pad not in ("SAME_UPPER", "SAME_LOWER") or get_attribute(node, "pads") is not None:
                return super()._compute_conv_pool_shape(node, channels_last)
            shape = super()._compute_conv_pool_shape(node, channels_last)  # channels and batch
            x = self._get_sympy_shape(node, 0)
            rank = len(x) - 2
            strides = get_attribute(node, "strides", [1] * rank)
            first = 1 if channels_last else 2
            for i in range(rank):
                n = x[first + i]
                if not is_literal(n):
                    shape[first + i] = sympy.ceiling(n / strides[i]) if strides[i] > 1 else n
            return shape

    if not get_opset(proto) or get_opset(proto) < 7:
        return None
    _constants_as_tensors(proto.graph)
    del proto.graph.value_info[:]  # inferred anew from the inputs (an entry without a shape stops it)
    inference = Inference(2**31 - 1, True, False, 0)
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


def _ceil_pool_unsure_axes(attrs: dict, x: list) -> list[int]:
    """Spatial axes of a ceil_mode pool whose size over a symbolic input is not one formula.

    ONNX's ceil formula counts a last window that starts inside the end padding; PyTorch and
    onnxruntime drop it (``padding.pool_len``), which can happen only with end padding or a
    stride longer than the window.  For such an axis the size is left unknown rather than
    wrong for some values of the symbol."""
    kernel = attrs.get("kernel_shape") or []
    nd = len(kernel)
    strides = attrs.get("strides") or [1] * nd
    pads = attrs.get("pads") or [0] * (2 * nd)
    dil = attrs.get("dilations") or [1] * nd
    out = []
    for i in range(nd):
        n = x[2 + i] if len(x) == nd + 2 else None
        if n is not None and not isinstance(n, int) and not getattr(n, "is_Integer", False) \
                and (pads[nd + i] > 0 or strides[i] > dil[i] * (kernel[i] - 1) + 1):
            out.append(i)
    return out


def _constants_as_tensors(graph) -> None:
    """``Constant(value_int=..)`` / ``value_ints`` / ``value_float(s)`` -> ``Constant(value=tensor)``
    in a GraphProto (a copy), in place: onnxruntime's inference reads only ``value``
    (torch.onnx writes shape constants as ``value_ints``)."""
    import numpy as np
    from onnx import numpy_helper

    kinds = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32, "value_floats": np.float32}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in list(node.attribute):
            if attr.name in kinds:
                data = attr.i if attr.name == "value_int" else attr.f if attr.name == "value_float" else \
                    list(attr.ints if attr.name == "value_ints" else attr.floats)
                tensor = numpy_helper.from_array(np.array(data, kinds[attr.name]))
                node.attribute.remove(attr)
                new = node.attribute.add()
                new.name, new.type = "value", 4  # AttributeProto.TENSOR
                new.t.CopyFrom(tensor)


def _from_onnxruntime(model: ir.Model) -> bool:
    from onnx_ir.passes.common import _c_api_utils

    from ..quiet import native_stderr_to_log

    def run(proto):
        with native_stderr_to_log():
            return _symbolic_shape_inference(proto)

    inferred = _c_api_utils.call_onnx_api(run, model)
    if inferred is None:
        return False
    found = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        shape = info.type.tensor_type.shape if info.type.HasField("tensor_type") else None
        if shape is not None and info.type.tensor_type.HasField("shape"):
            found[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]
    changed = False
    for node in model.graph:
        for v in node.outputs:
            if v is not None and v.name in found and _merge(v, found[v.name]):
                changed = True
    return changed


def _merge(value: ir.Value, other: list) -> bool:
    """Take ``other``'s dimension wherever ``value``'s is unknown or an exporter's ``unk__N``."""
    if value.shape is None:
        value.shape = ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in other])
        return True
    if len(value.shape) != len(other):
        return False
    if any(isinstance(mine, int) and theirs not in (None, mine) for mine, theirs in zip(value.shape, other)):
        return False  # the two inferences disagree on a size ONNX's knows: trust neither's unknowns
    new, changed = [], False
    for mine, theirs in zip(value.shape, other):
        unknown = not isinstance(mine, int) and (mine.value is None or _UNNAMED.match(mine.value))
        if unknown and theirs is not None and not (isinstance(theirs, str) and _UNNAMED.match(theirs)):
            new.append(theirs)
            changed = True
        else:
            new.append(mine)
    if changed:
        value.shape = ir.Shape(new)
    return changed


def _own_rules(model: ir.Model) -> bool:
    """Sizes still unknown (``None`` or ONNX's ``unk__N``) after the inference above, for the
    ops whose output size is arithmetic of the input's: Conv / ConvTranspose / pools over
    symbolic spatial dims and Reshape to a constant shape (``-1`` is the product of the
    symbols it absorbs, ``B*K``).  An ``unk__N`` replaced here is replaced wherever ONNX's
    inference carried it (it names one size)."""
    renames: dict[str, object] = {}
    changed = False
    for node in model.graph:
        for out in node.outputs:
            if out is not None and out.shape is not None and renames and _rename(out, renames):
                changed = True
        if node.domain != "" or not node.outputs or node.outputs[0] is None:
            continue
        if node.op_type in _SPATIAL:
            new = _spatial_dims(node)
        elif node.op_type == "Reshape":
            new = _reshape_dims(node)
        else:
            continue
        out = node.outputs[0]
        if new is None or out.shape is None or len(out.shape) != len(new):
            continue
        merged, here = [], False
        for mine, theirs in zip(out.shape, new):
            if _unknown(mine) and theirs is not None and "_unknown_" not in str(theirs):
                size = int(theirs) if getattr(theirs, "is_Integer", False) or isinstance(theirs, int) else str(theirs)
                if not isinstance(mine, int) and mine.value:
                    renames[mine.value] = size
                merged.append(size)
                here = True
            else:
                merged.append(mine)
        if here:
            out.shape = ir.Shape([d if isinstance(d, int) or not isinstance(d, str) else ir.SymbolicDim(d)
                                  for d in merged])
            changed = True
    return changed


def _unknown(d) -> bool:
    return not isinstance(d, int) and (d.value is None or bool(_UNNAMED.match(d.value)))


def _rename(value: ir.Value, renames: dict) -> bool:
    if not any(not isinstance(d, int) and d.value in renames for d in value.shape):
        return False
    value.shape = ir.Shape([renames[d.value] if not isinstance(d, int) and d.value in renames else d
                            for d in value.shape])
    return True


@functools.lru_cache(maxsize=4096)
def _simplified(expr):
    """``sympy.simplify(expr)``, remembered: shapes are inferred again after every pass, with the
    same sizes each time, and simplifying is most of what that costs."""
    import sympy

    return sympy.simplify(expr)


def _spatial_dims(node: ir.Node) -> list | None:
    """A Conv / ConvTranspose / pool's output dims as sympy expressions (None where not computed)."""
    import sympy

    xd = dims(node.inputs[0])
    if xd is None or len(xd) < 3:
        return None
    nd = len(xd) - 2
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    kernel = node.attributes.get_ints("kernel_shape", None)
    if kernel is None and len(node.inputs) > 1:
        w = node.inputs[1]
        kernel = list(w.shape)[2:] if w is not None and w.shape is not None and is_static(w) else None
    if kernel is None:
        return None
    strides = node.attributes.get_ints("strides", [1] * nd)
    pads = node.attributes.get_ints("pads", [0] * (2 * nd))
    dil = node.attributes.get_ints("dilations", [1] * nd)
    ceil = bool(node.attributes.get_int("ceil_mode", 0))
    unsure = _ceil_pool_unsure_axes({"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dil},
                                    xd) if ceil else []
    new = [xd[0], None]
    for i in range(nd):
        if i in unsure:
            new.append(None)
            continue
        n, s = xd[2 + i], strides[i]
        span = dil[i] * (kernel[i] - 1) + 1
        total = 0 if auto_pad == "VALID" else pads[i] + pads[nd + i]
        if node.op_type == "ConvTranspose":
            size = n * s if auto_pad.startswith("SAME") else s * (n - 1) + span - total
        elif auto_pad.startswith("SAME"):
            size = sympy.ceiling(sympy.Integer(1) * n / s)
        else:
            q = (n + total - span) / sympy.Integer(s)
            size = (sympy.ceiling(q) if ceil else sympy.floor(q)) + 1
        new.append(_simplified(size))
    return new


def _reshape_dims(node: ir.Node) -> list | None:
    """A Reshape to a constant shape: ``0`` copies the input's dim, ``-1`` takes the rest."""
    import sympy

    from .graph import const_array

    xd, target = dims(node.inputs[0]), const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if xd is None or target is None or target.ndim != 1:
        return None
    allowzero = node.attributes.get_int("allowzero", 0)
    new = [xd[i] if int(v) == 0 and not allowzero and i < len(xd) else (None if int(v) == -1 else int(v))
           for i, v in enumerate(target)]
    if new.count(None) == 1:
        known = sympy.Mul(*[d for d in new if d is not None])
        new[new.index(None)] = _simplified(sympy.Mul(*xd) / known) if known != 0 else None
    return new


_SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
