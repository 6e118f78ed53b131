"""Stage 1: export the source model to ONNX (the hub).

- PyTorch: ``torch.onnx.export(..., dynamo=True)`` (the exporter PyTorch maintains).
- Keras / TensorFlow: a ``tf.function`` traced at the fixed input shapes, frozen (variables
  and captured tensors become constants), every nested function call made inlinable
  (Keras 3 runs grouped convolutions under ``jit_compile``), then tf2onnx.  Keras
  BatchNormalization is traced as a fused batch norm so it stays one ONNX
  BatchNormalization with its exact parameters (tf2onnx would otherwise see plain
  Mul/Add math, or fold it into the Conv).
- ONNX: copied as it is.

The exported file keeps the source's names: graph inputs are the model's input
names, and Keras outputs are named after the layers that produce them.

Symbolic dimensions (``InputSpec.dims``) are exported as such: ``torch.export.Dim``s
named after the symbols (one per symbol, shared by every input that names it), ``None``
in the TensorFlow input signature.  The graph inputs of ``source.onnx`` carry the
symbol names as ``dim_param`` and every static size as ``dim_value``, whatever names the
exporter chose (``s0``, ``unk__12``).  A symbol the exporter specializes (PyTorch:
``x.view(4, -1, 64)`` pins the batch) stays static and is returned as a *pin*.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from .errors import BadInput, PipelineError
from .onnx_io import save_inline
from .quiet import import_tensorflow, import_torch, native_stderr_to_log
from .sources import Source
from .tf_weights import HeldWeights

DEFAULT_KERAS_OPSET = 18


class ExportError(PipelineError):
    """The source framework's exporter failed (exit 2: the model cannot be read as given)."""


def export(source: Source, inputs: dict[str, np.ndarray], path: Path, opset: int | None = None) -> list[dict]:
    """Write ``source`` as ONNX to ``path``; return the pins (symbols the exporter made static).

    Each pin: ``symbol``, ``size``, ``places`` (``[input, axis]`` pairs), ``reason`` (the
    exporter's words) and ``where`` (the source line that pins it, when known)."""
    path = Path(path)
    if source.framework == "onnx":
        import onnx  # load + save, not a file copy: inlines weights kept beside it (model.onnx.data)
        # (convert reads the file in place instead when ``onnx_as_is`` finds nothing to fix.)

        try:
            proto = onnx.load(str(source.obj))
            _lower_ir_version(proto)
            stamp_input_dims_proto(proto.graph, source.inputs)
            onnx.save(proto, str(path))
        except Exception as exc:
            raise ExportError(f"cannot read {source.obj}: {type(exc).__name__}: {str(exc)[:300]}") from exc
        return []
    if source.framework == "torch":
        return _export_torch(source, inputs, path, opset)
    if source.framework == "keras":
        return _export_keras(source, path, opset)
    if source.framework == "tf":
        return _export_savedmodel(source, path, opset)
    raise BadInput(f"cannot export a {source.framework} model")  # pragma: no cover - resolve() only yields the above


def onnx_as_is(source: Source) -> Path | None:
    """The ``.onnx`` source's own path when every later stage can read it as it is, else None.

    ``export`` rewrites the file only to lower its IR version or to stamp the user's sizes on its
    inputs; when neither changes anything, a copy would only write the weights once more (and
    read them twice).  Reading the graph to find out costs one parse, with the weights of an
    inline file (external ones are not read).  A file that cannot be read is left to
    ``export``, which says why."""
    if source.framework != "onnx":
        return None
    import onnx

    try:
        proto = onnx.load(str(source.obj), load_external_data=False)
    except Exception:
        return None

    def interface():
        g = proto.graph
        return proto.ir_version, [m.SerializeToString() for m in (*g.input, *g.output, *g.value_info)]

    before = interface()
    _lower_ir_version(proto)
    stamp_input_dims_proto(proto.graph, source.inputs)
    return Path(source.obj) if interface() == before else None


# -- symbolic dimensions in the exported graph ------------------------------------------

def stamp_input_dims(graph, specs) -> list[dict]:
    """Write the specs' dims onto ``graph``'s inputs (an onnx-ir graph), in place: a symbol
    as ``dim_param`` (its name), a static size as its value.  The exporter's own names for
    the same dims (``s0``, ``unk__3``) are renamed wherever they occur in the graph's values.

    Returns the pins: symbols whose dimension the exporter made static anyway."""
    import onnx_ir as ir

    from .spec import Symbol

    renames, pins = {}, {}
    for value, spec in zip(graph.inputs, specs):
        if value.shape is None or len(value.shape) != len(spec.dims):
            continue
        new = []
        for axis, (got, want) in enumerate(zip(value.shape, spec.dims)):
            if isinstance(want, Symbol):
                if isinstance(got, int):  # the exporter fixed it: keep that, say so
                    pin = pins.setdefault(want.name, {"symbol": want.name, "size": got, "places": [],
                                                      "reason": "the exporter wrote this input dimension static",
                                                      "where": None})
                    pin["places"].append([spec.name, axis])
                    new.append(got)
                    continue
                if got.value is not None and got.value != want.name:
                    renames[got.value] = want.name
                new.append(ir.SymbolicDim(want.name))
            else:
                if not isinstance(got, int) and got.value is not None:
                    renames[got.value] = want
                new.append(int(want))
        value.shape = ir.Shape(new)
    if renames:
        # a symbol renamed in expressions too (``s39//2 - 1`` is ``T//2 - 1``); a size the spec
        # fixes only where it is the whole dimension
        symbols = sorted((k for k, v in renames.items() if isinstance(v, str)), key=len, reverse=True)
        inner = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, symbols)) + r")(?![\w.])") if symbols else None

        def renamed(d):
            if isinstance(d, int) or not d.value:
                return d
            if d.value in renames:
                return renames[d.value]
            return inner.sub(lambda m: renames[m.group(0)], d.value) if inner else d.value

        inputs = set(graph.inputs)
        for value in _all_values(graph):
            if value in inputs or value.shape is None:
                continue
            new = [renamed(d) for d in value.shape]
            if new != [d if isinstance(d, int) or not d.value else d.value for d in value.shape]:
                value.shape = ir.Shape(new)
    return list(pins.values())


def _all_values(graph):
    seen = set()
    for value in [*graph.inputs, *graph.outputs] + [v for n in graph for v in n.outputs]:
        if value is not None and value not in seen:
            seen.add(value)
            yield value


def stamp_input_dims_proto(graph, specs) -> None:
    """:func:`stamp_input_dims` on a GraphProto (an ``.onnx`` source read with ``onnx.load``).

    A size the user gave where the file has a ``dim_param`` becomes static, in every value
    that names that ``dim_param`` too."""
    from .spec import Symbol

    init = {i.name for i in graph.initializer}
    renames = {}
    for vi, spec in zip([v for v in graph.input if v.name not in init], specs):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(spec.dims):
            continue
        for d, want in zip(dims, spec.dims):
            old = d.dim_param if d.HasField("dim_param") else None
            if isinstance(want, Symbol):
                if old and old != want.name:
                    renames[old] = want
                if not d.HasField("dim_value"):
                    d.dim_param = want.name
            else:
                if old:
                    renames[old] = want
                d.dim_value = int(want)
    if not renames:
        return
    for vi in [*graph.output, *graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in renames:
                want = renames[d.dim_param]
                if isinstance(want, Symbol):
                    d.dim_param = want.name
                else:
                    d.dim_value = int(want)


# The newest IR version onnxruntime 1.23 reads; onnx 1.19's helper.make_model writes 12.
ORT_MAX_IR_VERSION = 11
_IR12_TYPES = {24}  # FLOAT8E8M0, the one element type IR 12 added to IR 11


def _lower_ir_version(proto) -> None:
    """IR version 12 (onnx 1.19's default) is lowered to 11, which onnxruntime reads, when the
    graph uses nothing IR 12 added (one element type), in place.

    The IR version is a format stamp: a graph without that type means the same under
    both, so the rewrite is exact.  Otherwise, and for IR versions newer than 12 (whose
    additions this code cannot know), the file is left as it is and onnxruntime says
    what it cannot read.
    """
    if proto.ir_version != 12 or _element_types(proto.graph) & _IR12_TYPES:
        return
    proto.ir_version = ORT_MAX_IR_VERSION


def _element_types(graph) -> set[int]:
    """Every element type ``graph`` names: values, initializers, tensor and type attributes, subgraphs."""
    from onnx import AttributeProto

    types = {t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.output, *graph.value_info]:
        types.add(info.type.tensor_type.elem_type)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                types.add(attr.t.data_type)
            elif attr.type == AttributeProto.INT and attr.name in ("to", "dtype", "output_dtype"):
                types.add(attr.i)
            elif attr.type == AttributeProto.GRAPH:
                types |= _element_types(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    types |= _element_types(g)
    return types


def _export_torch(source: Source, inputs, path: Path, opset: int | None) -> list[dict]:
    torch = import_torch()
    model = getattr(source.obj, "program", None) or source.obj
    args = tuple(torch.from_numpy(inputs[s.name]) for s in source.inputs)
    # optimize=False: torch.onnx's optimizer rewrites `x + 1e-8` to `x` (it treats the
    # epsilon as zero), which turns a PyTorch 0 into NaN.  Our passes fold constants exactly.
    kwargs = {"dynamo": True, "verbose": False, "optimize": False, "input_names": [s.name for s in source.inputs]}
    if opset is not None:
        kwargs["opset_version"] = opset
    pins = []
    if any(s.symbols for s in source.inputs) and not hasattr(source.obj, "program"):
        model, pins, source.constraints = _torch_export_symbolic(model, args, source.inputs)
    try:
        with torch.no_grad(), native_stderr_to_log():
            program = torch.onnx.export(model, args, **kwargs)
            pinned = {p["symbol"]: p["size"] for p in pins}
            stamped = stamp_input_dims(program.model.graph, [_pinned(s, pinned) for s in source.inputs])
            save_inline(program.model, path)  # = program.save(path), streaming the weights
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {_torch_export_reason(exc)}") from exc
    return pins + stamped


def _pinned(spec, pinned: dict[str, int]):
    """``spec`` with the pinned symbols static at their size."""
    from .spec import InputSpec, Symbol

    return InputSpec.of(spec.name, [pinned.get(d.name, d) if isinstance(d, Symbol) and d.name in pinned else d
                                    for d in spec.dims], spec.dtype)


_SUGGESTED_CONSTANT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(\d+)\s*$")


def _torch_export_symbolic(model, args, specs):
    """``torch.export.export`` with one ``Dim`` per symbol; returns (program, pins, constraints).

    A symbol torch can only trace within a range or on a stride ("Suggested fixes:
    _H = Dim('_H', min=1)", "H = 4*_H": the code holds for multiples of 4) is exported with
    that ``Dim``; the constraint is returned so parity draws its other sizes from it.

    A symbol torch specializes to a constant (its error's "Suggested fixes: B = 4") is
    exported static on the next try and recorded as a pin with torch's words and the
    user's source line whose shape guard fixed it (read off torch's shape log)."""
    torch = import_torch()
    from torch.export import Dim

    from .spec import Symbol

    # torch.export specializes sizes 0 and 1: a symbol with such an example (a batch of 1) is
    # traced at 2 (non-strict export runs on fake tensors, so only the sizes matter); parity
    # still runs at the example.
    args = tuple(_at_least_two(a, s, Symbol) for a, s in zip(args, specs))
    auto = _export_auto(model, args, specs)
    if auto is not None:
        return auto[0], [], auto[1]
    pins: dict[str, dict] = {}
    constraints: dict[str, dict] = {}  # torch's suggested ranges and strides, applied on the next try
    names = {d.name for s in specs for d in s.symbols}
    for _ in range(2 + 2 * len(names)):
        dims = {name: _constrained_dim(Dim, name, constraints.get(name)) for name in names - set(pins)}
        shapes = tuple({axis: dims[d.name] for axis, d in enumerate(s.dims) if isinstance(d, Symbol) and d.name in dims}
                       or None for s in specs)
        if _takes_varargs(model):  # forward(*args) (keyword-input wrappers): the shapes of ``args`` as one entry
            shapes = (shapes,)
        witness = _GuardWitness()
        try:
            with torch.no_grad(), native_stderr_to_log(), witness:
                program = torch.export.export(model, args, dynamic_shapes=shapes, strict=False)
                return program, list(pins.values()), {k: v for k, v in constraints.items() if k not in pins}
        except Exception as exc:
            text = str(exc)
            fixes = _suggested_constants(text)
            ranges = {k: v for k, v in _suggested_ranges(text).items() if k in names and constraints.get(k) != v}
            if ranges and not fixes:
                constraints.update(ranges)
                continue
            if not fixes or set(fixes) & set(pins):
                raise ExportError(f"torch.export with symbolic dimensions failed: {_torch_export_reason(exc)}") from exc
            for name, size in fixes.items():
                places = [[s.name, axis] for s in specs for axis, d in enumerate(s.dims)
                          if isinstance(d, Symbol) and d.name == name]
                reason = next((line.strip(" -") for line in text.splitlines() if f"marked {name} as dynamic" in line),
                              f"torch.export specialized {name} to {size}")
                pins[name] = {"symbol": name, "size": size, "places": places, "reason": reason.split(". ")[0],
                              "where": witness.where(size)}
    raise ExportError("torch.export kept specializing symbols")  # pragma: no cover - each round pins one more


def _export_auto(model, args, specs):
    """One ``torch.export.export`` with ``Dim.AUTO`` on each symbol's axes: (program,
    constraints) when torch kept every symbol as one size of its own, else None and the
    named-``Dim`` loop above runs (it names what pins a symbol and why).

    The constraints are the ranges torch proved (``range_constraints``): a lower bound above
    2 (torch assumes a varying size is at least 2 anyway) and a finite upper bound, in
    ``_suggested_ranges``' form.  Only when torch's shape log shows the symbols made and no
    guard that ties a size to a constant or a stride (``Eq(s53, 2*((s53//2)))``): such a guard
    does not show in the program, and the named loop turns it into ``H = 2*_H``.  Guards that
    only exclude a value (``Ne(((T - 9)//4) - 1, 1)``: an output length is not 1) are torch's
    usual assumption about varying sizes; named ``Dim``s refuse them outright (a strided
    Conv1d over ``T`` failed to export), here parity checks the smallest sizes torch allows.

    One trace instead of one that fails and tells the range and one that succeeds: the audio
    encoder's ``T >= 50`` cost a second trace before."""
    torch = import_torch()
    from torch.export import Dim
    from torch.utils._sympy.numbers import int_oo

    from .spec import Symbol

    shapes = tuple({axis: Dim.AUTO for axis, d in enumerate(s.dims) if isinstance(d, Symbol)} or None for s in specs)
    if _takes_varargs(model):
        shapes = (shapes,)
    witness = _GuardWitness()
    try:
        with torch.no_grad(), native_stderr_to_log(), witness:
            program = torch.export.export(model, args, dynamic_shapes=shapes, strict=False)
    except Exception:  # the named-Dim loop says why, in torch's words
        return None
    if not witness.symbols or witness.equalities:
        return None  # a size tied to a constant or a stride (H = 2*_H): ranges cannot say it, the loop can
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    names = program.graph_signature.user_inputs
    if len(names) != len(specs):
        return None
    found: dict[str, object] = {}
    for name, spec in zip(names, specs):
        value = placeholders[name].meta.get("val")
        if value is None or len(value.shape) != len(spec.dims):
            return None
        for axis, d in enumerate(spec.dims):
            if not isinstance(d, Symbol):
                continue
            got = value.shape[axis]
            expr = getattr(getattr(got, "node", None), "expr", None)
            if expr is None or not expr.is_Symbol or found.setdefault(d.name, expr) != expr:
                return None  # specialized, a stride of another size, or two sizes where one was named
    if len(set(found.values())) != len(found):
        return None  # two named symbols torch proved equal: the loop reports it
    constraints = {}
    for name, expr in found.items():
        bounds = program.range_constraints.get(expr)
        if bounds is None:
            continue
        low, high = int(bounds.lower), bounds.upper
        c = {"min": low if low > 2 else 0, "multiple_of": 1, "offset": 0}
        if high is not int_oo and high != int_oo:
            c["max"] = int(high)
        if low > 2 or "max" in c:
            constraints[name] = c
    return program, constraints


def _at_least_two(arg, spec, symbol_type):
    """``arg`` grown to size 2 on each symbolic axis whose example is 0 or 1."""
    torch = import_torch()
    for axis, d in enumerate(spec.dims):
        if isinstance(d, symbol_type) and arg.shape[axis] < 2:
            shape = list(arg.shape)
            shape[axis] = 2
            arg = arg.new_zeros(shape) if arg.shape[axis] == 0 else torch.cat([arg, arg], dim=axis)
    return arg


def _takes_varargs(model) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return False
    return any(p.kind == p.VAR_POSITIONAL for p in params)


_SUGGESTED_DIM = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*Dim\('\1'(?:,\s*min=(\d+))?(?:,\s*max=(\d+|oo))?\)\s*$")
_SUGGESTED_MULTIPLE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(\d+)\*([A-Za-z_]\w*)(?:\s*\+\s*(\d+))?\s*$")


def _suggested_ranges(text: str) -> dict[str, dict]:
    """``{symbol: {"min": m, "multiple_of": k, "offset": c}}`` from torch's "Suggested fixes:"
    (``H = Dim('H', min=8)``, or ``_H = Dim('_H', min=1)`` with ``H = 4*_H``): the sizes a
    symbol can take for the traced code to hold, ``k*n + c >= m``; with ``"max": M`` too where
    torch bounds it from above (``S = Dim('S', max=32)``: a position table of 32 rows)."""
    lines = [line.strip() for line in text.splitlines()]
    if "Suggested fixes:" not in lines:
        return {}
    bounds, highs, derived = {}, {}, {}
    for line in lines[lines.index("Suggested fixes:") + 1:]:
        m = _SUGGESTED_DIM.match(line)
        if m:
            bounds[m.group(1)] = int(m.group(2) or 0)
            if m.group(3) not in (None, "oo"):
                highs[m.group(1)] = int(m.group(3))
            continue
        m = _SUGGESTED_MULTIPLE.match(line)
        if m:
            derived[m.group(1)] = (int(m.group(2)), m.group(3), int(m.group(4) or 0))
            continue
        if line and not _SUGGESTED_CONSTANT.match(line):
            break
    out = {name: {"min": low, "multiple_of": 1, "offset": 0} for name, low in bounds.items() if not name.startswith("_")}
    for name, high in highs.items():  # a table the size indexes (BERT's 32 positions): at most that
        if name in out:
            out[name]["max"] = high
    for name, (k, base, c) in derived.items():
        out[name] = {"min": k * max(bounds.get(base, 1), 1) + c, "multiple_of": k, "offset": c}
        if base in highs:
            out[name]["max"] = k * highs[base] + c
    return out


def _constrained_dim(Dim, name: str, constraint: dict | None):
    """A ``torch.export.Dim`` for ``name`` that satisfies ``constraint`` (see above)."""
    if not constraint:
        return Dim(name)
    k, c, low, high = constraint["multiple_of"], constraint["offset"], constraint["min"], constraint.get("max")
    if k == 1:
        return Dim(name, min=max(low, 0)) if high is None else Dim(name, min=max(low, 0), max=high)
    bounds = {"min": max((low - c + k - 1) // k, 1)}
    if high is not None:
        bounds["max"] = (high - c) // k
    base = Dim(f"_{name}", **bounds)
    return k * base + c if c else k * base


def _suggested_constants(text: str) -> dict[str, int]:
    """``{symbol: size}`` from torch's "Suggested fixes:" lines of the form ``B = 4``."""
    lines = text.splitlines()
    if "Suggested fixes:" not in [line.strip() for line in lines]:
        return {}
    start = [line.strip() for line in lines].index("Suggested fixes:") + 1
    fixes = {}
    for line in lines[start:]:
        m = _SUGGESTED_CONSTANT.match(line)
        if not m:
            break
        fixes[m.group(1)] = int(m.group(2))
    return fixes


class _GuardWitness:
    """Listens to torch's shape log while exporting and remembers, for each guard that fixes a
    size to a constant (``eval Eq(s77, 4) [guard added]``), the user's source line that
    asked for it: the innermost stack frame outside torch and pipeline."""

    def __init__(self):
        import logging

        self.logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
        self.seen: list[tuple[int, str]] = []
        self.symbols = 0  # sizes torch made symbolic ("create_symbol s53 = 8 for L['x'].size()[2]")
        self.equalities: list[str] = []  # guards that tie a size to a value or a stride ("Eq(s53, 2*((s53//2)))")
        witness = self

        class Handler(logging.Handler):
            def emit(self, record):
                try:
                    text = record.getMessage()
                    witness.symbols += text.startswith("create_symbol ")
                    if text.startswith("eval ") and "[guard added]" in text and "Eq(" in text.split("[guard added]")[0]:
                        witness.equalities.append(text.split(" [guard added]")[0][5:])
                    m = re.match(r"eval Eq\((s\d+), (\d+)\)", text)
                    if m:
                        witness.seen.append((int(m.group(2)), _user_frame()))
                except Exception:  # a diagnosis aid: never break the export
                    pass

        self.handler = Handler()

    def __enter__(self):
        import logging

        self.level, self.propagate = self.logger.level, self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.logger.propagate = self.propagate
        return False

    def where(self, size: int) -> str | None:
        return next((frame for value, frame in self.seen if value == size and frame), None)


def _user_frame() -> str | None:
    """``file:line in function: code`` of the innermost frame outside torch, pipeline and logging."""
    import logging
    import os
    import traceback

    torch = import_torch()
    skip = tuple(os.path.dirname(m.__file__) for m in (torch, logging)) + (os.path.dirname(__file__),)
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip) and "<frozen" not in frame.filename:
            return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
    return None


def _torch_export_reason(exc: Exception) -> str:
    """One line saying why torch.onnx.export failed: the root exception from its
    "## Exception summary" section when there is one (its first line is boilerplate)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        summary = lines[lines.index("## Exception summary") + 1:]
        if summary:
            return re.sub(r"^<class '([\w.]+)'>:", lambda m: m.group(1).rsplit(".", 1)[-1] + ":", summary[0])[:300]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _tf2onnx(fn, specs, path: Path, opset: int | None, output_names: list[str], keras_bn: bool = False) -> None:
    """Trace ``fn`` at the specs' shapes, freeze it, inline every function call, convert with tf2onnx.

    ``keras_bn``: trace Keras BatchNormalization as a fused batch norm, so it stays an
    ONNX BatchNormalization (see ``fused_batch_norm``).
    """
    tf, _ = import_tensorflow()
    from .spec import Symbol

    signature = [tf.TensorSpec([None if isinstance(d, Symbol) else d for d in s.dims], tf.as_dtype(s.dtype),
                               name=s.name) for s in specs]
    held = HeldWeights()
    try:
        with native_stderr_to_log():
            with fused_batch_norm() if keras_bn else contextlib.nullcontext():
                concrete = tf.function(fn).get_concrete_function(*signature)
            concrete_name = concrete.name
            graph_def, in_names, out_names = frozen_graph_def(concrete, held)
            del concrete
            proto = _graph_def_to_onnx(graph_def, concrete_name, in_names, out_names, opset or DEFAULT_KERAS_OPSET,
                                       dict(zip(in_names, (s.name for s in specs))), held)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        varying = [f"input {s.name!r} dimension {axis} ({d.name})" for s in specs for axis, d in enumerate(s.dims)
                   if isinstance(d, Symbol)]
        if varying:  # most often a layer that needs that size fixed (Flatten -> Dense over a symbolic length)
            raise ExportError(f"tracing with symbolic {', '.join(varying)} failed: {type(exc).__name__}: {first}; "
                              "if the model cannot vary it, give that dimension as INT (or pass --static)") from exc
        raise ExportError(f"tf2onnx failed: {type(exc).__name__}: {first}") from exc
    import onnx_ir as ir

    model = ir.from_proto(proto)
    del proto, graph_def
    held.attach(model)
    _infer_shapes(model)
    _check_exported(model.graph, [s.name for s in specs])
    _rename_outputs(model.graph, output_names)
    _erfc_to_erf(model.graph)
    _transpose_conv_extends_at_end(model.graph)
    _grouped_conv_group(model.graph)
    _batch_norm_at_source_rank(model.graph)
    pins = stamp_input_dims(model.graph, specs)
    save_inline(model, path)
    return pins


def _export_keras(source: Source, path: Path, opset: int | None) -> None:
    from .sources import keras_call_inputs

    model = source.obj
    names = [s.name for s in source.inputs]

    def call(*xs):  # the model's own input structure: a dict-input model is called with its dict
        return model(keras_call_inputs(model, names, xs), training=False)

    pins = _keras_input_pins(model, source.inputs)
    specs = [_pinned(s, {p["symbol"]: p["size"] for p in pins}) for s in source.inputs]
    return pins + _tf2onnx(call, specs, path, opset, source.output_names, keras_bn=True)


def _keras_input_pins(model, specs) -> list[dict]:
    """Symbols where the Keras model's ``Input`` fixes the size (any axis but the batch, which
    Keras does not enforce): a functional model refuses any other size, so they stay static."""
    from .spec import Symbol

    pins: dict[str, dict] = {}
    for spec, tensor in zip(specs, list(getattr(model, "inputs", None) or [])):
        fixed = tuple(tensor.shape)
        if len(fixed) != len(spec.dims):
            continue
        for axis, (d, size) in enumerate(zip(spec.dims, fixed)):
            if axis > 0 and isinstance(d, Symbol) and size is not None:
                pin = pins.setdefault(d.name, {"symbol": d.name, "size": int(size), "places": [],
                                               "reason": f"the Keras model's Input fixes this dimension at {size}",
                                               "where": f"keras.Input {spec.name!r} of shape {list(fixed)}"})
                pin["places"].append([spec.name, axis])
    return list(pins.values())


def _export_savedmodel(source: Source, path: Path, opset: int | None) -> None:
    _, fn = source.obj
    names = [s.name for s in source.inputs]
    keys = source.output_names

    def call(*xs):
        out = fn(**dict(zip(names, xs)))
        return [out[k] for k in keys]

    return _tf2onnx(call, source.inputs, path, opset, keys)


def _erfc_to_erf(graph) -> None:
    """tf2onnx passes TensorFlow's ``Erfc`` (Keras' exact gelu) through as an ONNX node,
    but ONNX has no Erfc: write it as ``1 - Erf(x)`` so the exported file is valid ONNX."""
    import onnx_ir as ir

    from .normalize.graph import add_initializer

    for node in [n for n in graph if n.op_type == "Erfc" and n.domain == ""]:
        x, out = node.inputs[0], node.outputs[0]
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32  # tf2onnx leaves some types unset
        one = add_initializer(graph, np.array(1.0, dtype=dtype), "one")
        erf = ir.node("Erf", [x], name=f"{node.name}_erf")
        sub = ir.node("Sub", [one, erf.outputs[0]], name=f"{node.name}_one_minus")
        erf.outputs[0].name = f"{node.name}_erf_out"
        graph.insert_before(node, [erf, sub])
        if out.type is not None:
            sub.outputs[0].type, sub.outputs[0].shape = out.type, out.shape
        public = out.name
        out.replace_all_uses_with(sub.outputs[0], replace_graph_outputs=True)
        graph.remove(node, safe=True)
        sub.outputs[0].name = public


def _transpose_conv_extends_at_end(graph) -> None:
    """A ConvTranspose whose begin pads tf2onnx wrote negative gets them moved to the end.

    TensorFlow's transposed convolution starts its output at the full output's first
    element (its "same" padding before is never negative); where its output is longer than
    the full one (a kernel shorter than the stride with "same", or Keras' output_padding), the
    extra elements come at the end.  tf2onnx splits that negative total over both sides,
    shifting the result by one element (measured against Keras: max error 4.4 on a
    Conv1DTranspose(kernel 1, stride 3, "same")).
    """
    import onnx_ir as ir

    for node in graph:
        if node.op_type != "ConvTranspose" or node.domain != "" or "pads" not in node.attributes:
            continue
        pads = list(node.attributes["pads"].as_ints())
        nd = len(pads) // 2
        if all(p >= 0 for p in pads[:nd]):
            continue
        begins = [max(p, 0) for p in pads[:nd]]
        ends = [e + min(b, 0) for b, e in zip(pads[:nd], pads[nd:])]
        node.attributes["pads"] = ir.AttrInt64s("pads", begins + ends)



def _grouped_conv_group(graph) -> None:
    """A Conv whose kernel takes fewer input channels than its input has gets ``group`` set.

    TensorFlow's convolutions group implicitly (the group count is the input's channels over
    the kernel's), and tf2onnx writes ``group`` for 1-D and 2-D convolutions only: a Keras
    ``Conv3D(groups=3)`` came out with ``group=1``, an ONNX graph onnxruntime
    refuses ("Input channels C is not equal to kernel channels * group").  ONNX requires
    ``C == W.shape[1] * group``, so the group is that quotient; nothing else is changed, and a
    Conv whose sizes are unknown or do not divide is left for the check to report."""
    import onnx_ir as ir

    for node in graph:
        if node.op_type != "Conv" or node.domain != "" or len(node.inputs) < 2:
            continue
        x, w = node.inputs[0], node.inputs[1]
        if x is None or w is None or x.shape is None or w.shape is None or len(x.shape) < 3:
            continue
        c, per_group, filters = x.shape[1], w.shape[1], w.shape[0]
        if not all(isinstance(d, int) and d > 0 for d in (c, per_group, filters)):
            continue
        group = node.attributes.get_int("group", 1)
        if c == per_group * group or c % per_group or filters % (c // per_group):
            continue
        node.attributes["group"] = ir.AttrInt64("group", c // per_group)

def _rename_outputs(graph, names: list[str]) -> None:
    """Give graph outputs readable names (tf2onnx calls them ``Identity:0``)."""
    if len(names) != len(graph.outputs):
        return
    taken = {v.name for n in graph for v in (*n.inputs, *n.outputs) if v is not None}
    taken |= {v.name for v in graph.inputs} | set(graph.initializers)
    for value, new in zip(graph.outputs, names):
        if value.name != new and new not in taken:
            value.name = new
            taken.add(new)


# -- TensorFlow graph: freeze and inline ------------------------------------------------

# Attributes that stop grappler from inlining a function call: XLA compilation (Keras 3
# runs a grouped Conv2D, hence ConvNeXt's depthwise conv, under tf.function(jit_compile=True))
# and an explicit no-inline.  A call left in place reaches ONNX as a StatefulPartitionedCall.
_NO_INLINE_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_XlaScope", "_noinline")


def frozen_graph_def(concrete, held: HeldWeights):
    """``(graph_def, input_names, output_names)`` of a concrete function, ready for tf2onnx.

    Variables *and* captured tensors (e.g. a Keras Normalization layer's mean and
    variance, which are eager tensors, not variables) become constants, so the only
    placeholders left are the function's own arguments: tf2onnx's ``from_function`` takes
    every placeholder, captures included, as a graph input.  The freezing is tf2onnx's
    large-model one (the GraphDef is not loaded back as a function first).  Every function
    call is made inlinable, then grappler inlines it and folds constants, as in tf2onnx
    (see ``_grappler``).  The weights stay in ``held`` (see ``tf_weights``): the
    GraphDef's large constants have no content.
    """
    from tf2onnx import tf_loader

    n_args = len(concrete.inputs) - len(concrete.captured_inputs)
    in_names = [t.name for t in concrete.inputs[:n_args]]
    out_names = [t.name for t in concrete.outputs]
    with held.freezing():
        graph_def = tf_loader.convert_variables_to_constants_large_model(concrete)
    graph_def = tf_loader.fix_freezing_errors_part2(graph_def)
    allow_inlining(graph_def)
    graph_def = _grappler(graph_def, in_names, out_names, held)
    _bias_add_of_activations(graph_def)
    return graph_def, in_names, out_names


def _grappler(graph_def, input_names, output_names, held: HeldWeights):
    """tf2onnx's grappler run (function inlining, constant folding) with the weights held aside.

    Grappler copies the graph many times over (11x the weights: 9 GB for ConvNeXtLarge),
    so each large constant is a Placeholder of its dtype and shape while it runs, and a
    Const without content after (its value stays in ``held``).  Nothing computed from a
    placeholder is folded, so no weight is altered; shape arithmetic still folds, and
    tf2onnx folds what concerns the weights.
    """
    from tf2onnx import tf_loader

    tf, _ = import_tensorflow()
    swapped = held.hold_constants(graph_def)
    with tf.Graph().as_default():  # grappler runs in graph mode
        graph_def = tf_loader.tf_optimize(input_names, output_names, graph_def)
    held.restore_constants(graph_def, swapped)
    return graph_def


def _bias_add_of_activations(graph_def) -> None:
    """``BiasAdd(x, b)`` with a computed (not constant) ``b`` becomes ``AddV2(x, b)``, in place.

    Grappler writes ``x + y`` with ``y`` of shape (1, 1, 1, C) as ``BiasAdd(x, Squeeze(y))``
    (ResNet50V2's residual add at a 1x1 map); tf2onnx then merges a BiasAdd of a Conv that
    already has its bias into one Conv with four inputs, an invalid graph.  For the
    channels-last format ``AddV2`` broadcasts the vector over the last axis exactly as
    ``BiasAdd`` does.
    """
    producers = {n.name: n for n in graph_def.node}
    for node in graph_def.node:
        if node.op != "BiasAdd" or ("data_format" in node.attr and node.attr["data_format"].s != b"NHWC"):
            continue
        bias = producers.get(node.input[1].split(":")[0].lstrip("^"))
        if bias is not None and bias.op != "Const":
            node.op = "AddV2"
            if "data_format" in node.attr:
                del node.attr["data_format"]

def _graph_def_to_onnx(graph_def, name: str, input_names, output_names, opset: int, renames: dict,
                       held: HeldWeights):
    """tf2onnx on a frozen, inlined GraphDef; returns the ONNX ModelProto.

    As tf2onnx's large-model mode: the weights are not in the TensorFlow graph (tf2onnx
    reads them through ``const_node_values``, here from ``held``), and they leave the
    ONNX graph before tf2onnx writes it (``held.take_from``; ``held.attach`` puts them
    back into the onnx-ir model).  Its optimizer passes first run without the deep copy
    of the whole graph, weights included, that it makes before each pass so that a
    failing pass can be skipped (that copy was half of its time on a ConvNeXt); only if
    one fails is the conversion redone that careful way.
    """
    from tf2onnx import optimizer
    from tf2onnx.tfonnx import process_tf_graph

    tf, _ = import_tensorflow()
    const_values = held.const_node_values()
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
    for careful in (False, True):
        try:
            with tf_graph.as_default(), keep_batch_norm(), _square_keeps_shape(), _const_protos_copied_once(), \
                    held.reading():
                graph = process_tf_graph(tf_graph, continue_on_error=True, opset=opset, input_names=input_names,
                                         output_names=output_names, const_node_values=const_values,
                                         tensors_to_rename=renames)
                graph = optimizer.optimize_graph(graph, catch_errors=careful)
            break
        except Exception:
            if careful:
                raise
    held.take_from(graph)
    return graph.make_model(f"converted from {name}")


@contextlib.contextmanager
def _const_protos_copied_once():
    """Stop tf2onnx from copying every weight again after each of its optimizer passes.

    After each pass tf2onnx rewrites every node's NodeProto from its attributes, a Const's
    tensor included; with the upb protobuf runtime the replaced copies stay allocated
    with the message, so memory grew by the weights' size per pass (114 MB of ConvNeXtTiny
    weights took 6 GB; ConvNeXtLarge ran out of memory) and the copying was half the
    export time.  A Const whose ``value`` attribute and outputs are the very objects its
    NodeProto was built or last written with is already up to date, so it is skipped; a
    changed value (the optimizers replace the attribute, never edit it in place) is
    written as before.
    """
    import weakref

    from tf2onnx.graph import Node

    original_init, original_update = Node.__init__, Node.update_proto
    written = weakref.WeakKeyDictionary()  # Const node -> its state when its NodeProto was last in sync

    def state(node):
        return node._attr.get("value"), tuple(node._output), tuple(node._attr)

    def init(self, node, graph, skip_conversion=False):
        original_init(self, node, graph, skip_conversion)
        if self.type == "Const":  # built from ``node``, whose attributes it holds: in sync
            written[self] = state(self)

    def update_proto(self, external_tensor_storage=None):
        if self.type != "Const" or external_tensor_storage is not None:
            return original_update(self, external_tensor_storage)
        now, last = state(self), written.get(self)
        if last is not None and last[0] is now[0] and last[1:] == now[1:]:
            return None
        original_update(self, external_tensor_storage)
        written[self] = now
        return None

    Node.__init__, Node.update_proto = init, update_proto
    try:
        yield
    finally:
        Node.__init__, Node.update_proto = original_init, original_update


@contextlib.contextmanager
def _square_keeps_shape():
    """Fix tf2onnx's transpose optimizer on ``Mul(t, t)`` with ``t = Transpose(x)``.

    It moves the Transpose below the Mul but, unlike for any other Mul, leaves the Mul's
    recorded shape in the old layout; its last step then turns a Transpose of a tensor
    with unit axes into a Reshape *to that stale shape*.  A LayerNormalization's
    variance (``SquaredDifference``) on a 1x1 map, e.g. ConvNeXt's last stage at 32x32,
    got a Reshape that onnxruntime rejects.  The wrapper records the permuted shapes, as
    the optimizer's own ``_switch_transpose_and_node`` does.
    """
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer, invert_perm

    original = TransposeOptimizer._mul_handler

    def mul_handler(self, trans, node):
        square = all(i == trans.output[0] for i in node.input)
        shape = self._g.get_shape(node.output[0]) if square else None
        done = original(self, trans, node)
        if done and shape:
            perm_inv = invert_perm(trans.get_attr_value("perm"))
            self._g.set_shape(node.output[0], [shape[i] for i in perm_inv])
            self._g.set_shape(trans.output[0], shape)
        return done

    TransposeOptimizer._mul_handler = mul_handler
    try:
        yield
    finally:
        TransposeOptimizer._mul_handler = original


def allow_inlining(graph_def) -> None:
    """Drop the attributes that keep grappler from inlining a function (XLA, no-inline), in place."""
    library = graph_def.library.function
    for attrs in [n.attr for n in graph_def.node] + [f.attr for f in library] + \
            [n.attr for f in library for n in f.node_def]:
        for key in _NO_INLINE_ATTRS:
            if key in attrs:
                del attrs[key]


def _infer_shapes(model) -> None:
    """Record ONNX shape inference's value shapes on ``model`` (tf2onnx records few), in place.

    onnx-ir's pass hands ONNX a copy without the large weights.  Non-strict: an op ONNX
    does not know (tf2onnx's Erfc, rewritten later) only leaves its outputs unshaped;
    the shapes are a help to ``_batch_norm_at_source_rank``, never required.
    """
    from onnx_ir.passes.common.shape_inference import ShapeInferencePass

    ShapeInferencePass(strict_mode=False)(model)


def _check_exported(graph, input_names: list[str]) -> None:
    """The exported graph's inputs are exactly the model's, and no TensorFlow call node is left."""
    got = [v.name for v in graph.inputs]
    if got != input_names:
        extra = [n for n in got if n not in input_names]
        raise ExportError(f"tf2onnx made graph inputs {got}, expected {input_names}"
                          + (f" (not frozen: {', '.join(extra)})" if extra else ""))
    calls = [n.name for n in graph if n.op_type in ("PartitionedCall", "StatefulPartitionedCall")]
    if calls:
        raise ExportError(f"tf2onnx left {len(calls)} TensorFlow function call(s) un-inlined: {', '.join(calls[:5])}")


# -- Keras BatchNormalization as ONNX BatchNormalization ----------------------------------

@contextlib.contextmanager
def fused_batch_norm():
    """While tracing, run Keras BatchNormalization's inference branch as ``FusedBatchNormV3``.

    Keras 3 on TensorFlow computes it with ``tf.nn.batch_normalization`` (Mul/Sub/Add
    math), which tf2onnx cannot tell from any other arithmetic; ``FusedBatchNormV3`` is
    what tf2onnx maps to ONNX BatchNormalization with the layer's exact gamma, beta,
    moving mean/variance and epsilon.  The patch is on the class and is restored on exit;
    training calls and cases the fused op cannot take run the original code.
    """
    _, keras = import_tensorflow()
    klass = keras.layers.BatchNormalization
    original = klass.call

    def call(self, inputs, training=None, mask=None):
        fused = None if (training and self.trainable) else _fused_inference(self, inputs)
        return original(self, inputs, training=training, mask=mask) if fused is None else fused

    klass.call = call
    try:
        yield
    finally:
        klass.call = original


def _fused_inference(layer, inputs):
    """``layer``'s inference output through ``FusedBatchNormV3``, or None when it does not apply.

    Rank 4/5 with the channel first or last is the op's own layout; any other rank or
    axis moves the channel to axis 1 and views the rest as ``(N, C, -1, 1)`` (NCHW), a
    reshape ``_batch_norm_at_source_rank`` removes again in the ONNX graph.
    """
    tf, _ = import_tensorflow()
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    shape = inputs.shape
    if len(axes) != 1 or inputs.dtype not in (tf.float16, tf.bfloat16, tf.float32) \
            or shape.rank is None or not 2 <= shape.rank <= 5:
        return None
    rank = shape.rank
    axis = axes[0] % rank
    channels = shape[axis]
    if channels is None:  # symbolic dimensions elsewhere are fine; the channel count must be known
        return None

    def param(var, enabled, fill):
        return tf.cast(var, tf.float32) if enabled else tf.constant(np.full(channels, fill, np.float32))

    x = tf.cast(inputs, tf.float32)
    params = dict(scale=param(layer.gamma, layer.scale, 1.0), offset=param(layer.beta, layer.center, 0.0),
                  mean=tf.cast(layer.moving_mean, tf.float32), variance=tf.cast(layer.moving_variance, tf.float32))

    def fused(t, data_format):
        return tf.raw_ops.FusedBatchNormV3(x=t, **params, epsilon=float(layer.epsilon), exponential_avg_factor=1.0,
                                           data_format=data_format, is_training=False)[0]

    if rank in (4, 5) and axis in (1, rank - 1):
        y = fused(x, {(4, 1): "NCHW", (4, 3): "NHWC", (5, 1): "NCDHW", (5, 4): "NDHWC"}[rank, axis])
    else:
        perm = [0, axis] + [d for d in range(1, rank) if d != axis]
        first = tf.transpose(x, perm) if perm != list(range(rank)) else x
        if shape.is_fully_defined():
            y = tf.reshape(fused(tf.reshape(first, [first.shape[0], channels, -1, 1]), "NCHW"), first.shape)
        else:  # symbolic sizes: the reshape reads them at run time
            dynamic = tf.shape(first)
            y = tf.reshape(fused(tf.reshape(first, [dynamic[0], channels, -1, 1]), "NCHW"), dynamic)
        y = tf.transpose(y, np.argsort(perm).tolist()) if perm != list(range(rank)) else y
    return tf.cast(y, layer.compute_dtype)


@contextlib.contextmanager
def keep_batch_norm():
    """Keep tf2onnx from folding a BatchNormalization into the Conv before it (its
    back-to-back optimizer does so unasked); folding is the opt-in ``--fold-bn`` pass."""
    from tf2onnx.optimizer import back_to_back_optimizer as b2b

    key = ("Conv", "BatchNormalization")
    handler = b2b._func_map.pop(key, None)
    try:
        yield
    finally:
        if handler is not None:
            b2b._func_map[key] = handler


def _batch_norm_at_source_rank(graph) -> None:
    """``Reshape(x, (N, C, ...)) -> BatchNormalization -> Reshape(back to x's shape)`` -> BN on ``x``.

    A batch norm normalizes per (batch, channel) slice, so viewing the trailing axes
    differently changes nothing: the BN on ``x`` is exact, and a rank-2/3 ``x`` becomes
    the ``nn.BatchNorm1d`` a user writes instead of a BatchNorm2d on a reshaped tensor.
    """
    from .normalize.graph import remove_if_dead, replace_value, single_consumer, static_shape

    for bn in [n for n in graph if n.op_type == "BatchNormalization" and n.domain == ""]:
        before = bn.inputs[0].producer()
        if before is None or before.op_type != "Reshape" or single_consumer(bn.inputs[0]) is not bn:
            continue
        if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
            continue
        after = single_consumer(bn.outputs[0])
        x = before.inputs[0]
        src, viewed = static_shape(x), static_shape(bn.inputs[0])
        if after is None or after.op_type != "Reshape" or src is None or viewed is None:
            continue
        if len(src) < 2 or src[:2] != viewed[:2] or static_shape(after.outputs[0]) != src:
            continue
        bn.replace_input_with(0, x)
        bn.outputs[0].shape = after.outputs[0].shape
        replace_value(graph, after.outputs[0], bn.outputs[0])
        remove_if_dead(graph, after)
        remove_if_dead(graph, before)
