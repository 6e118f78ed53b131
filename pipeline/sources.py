"""Resolve the MODEL argument into a loaded source model.

MODEL may be
- a name registered in ``models/`` (``models/NAME.py`` with ``build()`` and
  ``INPUTS``),
- ``path/to/file.py:factory`` or ``package.module:factory`` (a callable
  returning an ``nn.Module`` or a ``keras.Model``),
- a file: ``.onnx``, ``.keras``, ``.pt2`` (torch.export) or a SavedModel folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput
from .quiet import native_stderr_to_log
from .spec import (DTYPES, InputSpec, Symbol, check_range, parse_dim_token, parse_range, recorded_symbols,
                   symbol_sizes, with_sizes)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

FRAMEWORKS = ("torch", "keras", "onnx", "tf")


@dataclass
class Source:
    """A model ready to export, with the inputs it will be checked on."""

    framework: str  # torch | keras | tf (SavedModel) | onnx
    name: str  # short name: default output folder, report title
    origin: str  # what the user passed as MODEL
    obj: Any  # nn.Module, keras.Model, tf SavedModel signature, or ONNX path
    inputs: list[InputSpec]
    output_names: list[str] = field(default_factory=list)
    # What the exporter proved each symbol's sizes must satisfy (torch.export's suggested
    # fixes): ``{symbol: {"min": m, "multiple_of": k, "offset": c}}``, size = k*n + c >= m
    # (and <= ``"max"`` where torch bounds it).
    constraints: dict[str, dict] = field(default_factory=dict)
    # Example sizes the file records for its symbols (an ONNX file this tool wrote:
    # ``spec.SYMBOLS_KEY``), used where neither ``--dim`` nor ``--input`` gives one.
    recorded_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def default_target(self) -> str:
        return {"torch": "keras", "keras": "torch", "tf": "torch"}.get(self.framework, "")


def list_registered() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.py") if not p.stem.startswith("_"))


def import_file(path: Path, prefix: str = "_pipeline_user"):
    """Import a Python file under a fresh module name (user factories, generated model.py)."""
    stem = re.sub(r"\W", "_", Path(path).stem)
    name = f"{prefix}_{stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_module_from_file(path: Path):
    if not path.is_file():
        raise BadInput(f"model file not found: {path}")
    try:
        with native_stderr_to_log():  # user code may import TensorFlow, which is noisy on fd 2
            module = import_file(path)
    except Exception as exc:
        raise BadInput(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _framework_of(obj: Any) -> str | None:
    for klass in type(obj).__mro__:
        mod = klass.__module__ or ""
        if mod.startswith("torch.nn") or mod.startswith("torch.fx"):
            return "torch"
        if mod.startswith("keras") or mod.startswith("tf_keras"):
            return "keras"
    return None


def _call_factory(module, attr: str, where: str, overrides: list[InputSpec], name: str) -> Source:
    factory = getattr(module, attr, None)
    if factory is None:
        raise BadInput(f"{where} has no attribute {attr!r}")
    if not callable(factory):
        raise BadInput(f"{where}:{attr} is not callable")
    try:
        with native_stderr_to_log():
            obj = factory()
    except Exception as exc:
        raise BadInput(f"{where}:{attr}() raised {type(exc).__name__}: {exc}") from exc
    fw = _framework_of(obj)
    if fw is None:
        raise BadInput(
            f"{where}:{attr}() returned {type(obj).__module__}.{type(obj).__qualname__}; "
            "expected a torch.nn.Module or a keras.Model"
        )
    declared = _declared_inputs(getattr(module, "INPUTS", None), where)
    if fw == "torch":
        return _torch_source(obj, name, f"{where}:{attr}", overrides or declared)
    return _keras_source(obj, name, f"{where}:{attr}", overrides or declared)


def _declared_inputs(value, where: str) -> list[InputSpec]:
    """``INPUTS = {"x": (1, 3, 32, 32)}``, ``{"ids": ((2, 16), "int64")}`` or, with the range its
    values are drawn from, ``{"ids": ((2, 16), "int64", (0, 30000))}``.  Anything else is bad
    input naming the entry (a user's file, not a bug of ours)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise BadInput(f"{where}: INPUTS must be a dict NAME -> shape, not {type(value).__name__}")
    specs = []
    for k, v in value.items():
        here = f"{where}: INPUTS[{k!r}]"
        if not isinstance(k, str) or not k:
            raise BadInput(f"{here}: an input name must be a non-empty string")
        shape, dtype, values = v, "float32", None
        if isinstance(v, (tuple, list)) and len(v) in (2, 3) and isinstance(v[0], (tuple, list)):
            shape, dtype = v[0], v[1]
            values = parse_range(v[2], here) if len(v) == 3 else None
        if not isinstance(shape, (tuple, list)) or not shape:
            raise BadInput(f"{here}: expected a shape such as (1, 3, 32, 32) or ((2, 16), \"int64\"), got {v!r}")
        if dtype not in DTYPES:
            raise BadInput(f"{here}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        spec = InputSpec.of(k, [_declared_dim(d, here, i) for i, d in enumerate(shape)], dtype, values)
        check_range(spec, here)
        specs.append(spec)
    return specs


def _declared_dim(d, where: str, axis: int):
    """An INPUTS dimension: a positive int, or a string ``"B=4"`` / ``"B"`` naming a symbol."""
    if isinstance(d, str):
        return parse_dim_token(d, where, axis)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise BadInput(f"{where}: dimension {axis} {d!r} is not a positive integer or a \"SYMBOL=INT\" string")
    return int(d)


def symbol_name(text: str) -> str:
    """A source's name for a dynamic dimension as a symbol name (an identifier)."""
    name = re.sub(r"\W", "_", str(text)).strip("_") or "dim"
    return name if not name[0].isdigit() else f"d{name}"


def _dynamic_dims(shape, input_name: str, batch_name: str | None = "B") -> list:
    """A shape with None for unknown sizes -> dims with a Symbol (no example yet) there:
    the batch axis is ``batch_name`` (shared by every input), any other ``INPUT_AXIS``."""
    dims = []
    for axis, d in enumerate(shape):
        if d is None:
            name = batch_name if axis == 0 and batch_name else f"{symbol_name(input_name)}_{axis}"
            dims.append(Symbol(name))
        else:
            dims.append(int(d))
    return dims


def _fits(given: InputSpec, model_dims, allow_symbol_on_static: bool) -> bool:
    """The user's dims fit the model's: same rank; a static model size is matched by the
    same int (or, where ``allow_symbol_on_static``, by a symbol with that example)."""
    if len(given.dims) != len(model_dims):
        return False
    for g, w in zip(given.dims, model_dims):
        if isinstance(w, Symbol) or w is None:
            continue
        if isinstance(g, Symbol):
            if not allow_symbol_on_static or (g.example is not None and g.example != w):
                return False
        elif g != w:
            return False
    return True


def _check_names(given: list[InputSpec], expected: list[str], origin: str) -> None:
    names = [s.name for s in given]
    if sorted(names) != sorted(expected):
        raise BadInput(
            f"{origin}: --input names {names} do not match the model's inputs {expected}"
        )


def _torch_source(model, name: str, origin: str, specs: list[InputSpec]) -> Source:
    params = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    keyword = _keyword_inputs(model, params, specs, origin)
    if keyword is not None:  # e.g. transformers models: every input is an optional keyword argument
        return Source("torch", name, origin, *keyword)
    if not specs:
        example = ",".join(f"--input {p}=D0,D1,..." for p in params)
        raise BadInput(f"{origin}: a PyTorch model needs input shapes; pass {example}")
    _check_names(specs, params, origin)
    order = {p: i for i, p in enumerate(params)}
    specs = sorted(specs, key=lambda s: order[s.name])
    model.eval()
    return Source("torch", name, origin, model, specs)


def _keyword_inputs(model, required: list[str], specs: list[InputSpec], origin: str):
    """(module, specs) when ``specs`` name optional ``forward`` arguments (``input_ids``,
    ``attention_mask``, ``pixel_values`` of a transformers model), else None.

    The module calls ``model(**inputs)`` from positional tensors, so export and parity
    call it like any other; a dict-like output (transformers' ``ModelOutput``) becomes
    the tuple of its tensors, in order (caches and other non-tensors are left out)."""
    sig = inspect.signature(model.forward).parameters.values()
    names = [p.name for p in sig if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required or not names:
        given = {s.name for s in specs}
        if given == set(required) or not set(required) <= given <= set(names):
            return None
    else:  # forward() takes only optional arguments: the --input names choose them
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        if not specs:
            raise BadInput(f"{origin}: a PyTorch model needs input shapes; forward() takes only optional "
                           f"arguments ({shown}): pass e.g. --input {names[0]}=D0,D1,...")
        given = {s.name for s in specs}
        if not given <= set(names):
            raise BadInput(f"{origin}: --input names {sorted(given - set(names))} are not arguments of forward() ({shown})")
    import torch

    order = [n for n in names if n in given]
    specs = sorted(specs, key=lambda s: order.index(s.name))

    class KeywordCall(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(order, args)))
            if isinstance(out, dict):
                out = tuple(v for v in out.values() if isinstance(v, torch.Tensor))
            return out

    return KeywordCall().eval(), specs


def _keras_source(model, name: str, origin: str, specs: list[InputSpec]) -> Source:
    model_inputs = list(getattr(model, "inputs", None) or [])
    if not model_inputs:
        raise BadInput(f"{origin}: the Keras model has no defined inputs (build it with keras.Input)")
    keys = keras_input_keys(model)
    names = keys or [_keras_input_name(t) for t in model_inputs]
    if len(specs) == 1 and len(names) == 1 and specs[0].name != names[0]:
        # One input: unambiguous.  (Keras renames auto-named inputs per build: input_layer_1, ...)
        specs = [InputSpec.of(names[0], specs[0].dims, specs[0].dtype, specs[0].value_range)]
    if specs:
        _check_names(specs, names, origin)
        by_name = {s.name: s for s in specs}
        specs = [by_name[n] for n in names]
        for s, t in zip(specs, model_inputs):
            want = tuple(t.shape)
            if not _fits(s, want, allow_symbol_on_static=True):
                raise BadInput(f"{origin}: --input {s.name} shape {s.shown_dims()} does not fit the model's {list(want)}")
    else:
        for t, n in zip(model_inputs, names):
            dtype = str(getattr(t, "dtype", "float32"))
            specs.append(InputSpec.of(n, _dynamic_dims(tuple(t.shape), n), dtype if dtype in DTYPES else "float32"))
    outs = []
    for i, t in enumerate(model.outputs):
        layer = getattr(getattr(t, "_keras_history", None), "operation", None)
        outs.append(getattr(layer, "name", None) or f"output_{i}")
    if len(set(outs)) != len(outs):
        outs = [f"{n}_{i}" for i, n in enumerate(outs)]
    return Source("keras", name, origin, model, specs, outs)


def _keras_input_name(t) -> str:
    layer = getattr(getattr(t, "_keras_history", None), "operation", None)
    return getattr(layer, "name", None) or t.name


def keras_input_keys(model) -> list[str] | None:
    """The keys of a Keras model built on a dict of inputs (every keras-hub backbone:
    ``{"token_ids", "padding_mask", "segment_ids"}``), in the order of ``model.inputs``
    (Keras flattens the dict by sorted key); None for a model built on a list or one input.

    Such a model refuses a list whose order is not the sorted keys' (and says nothing
    useful inside a trace), so export and parity call it with the same dict."""
    struct = getattr(model, "_inputs_struct", None)
    if not isinstance(struct, dict) or not all(isinstance(k, str) for k in struct):
        return None
    keys = sorted(struct)
    flat = list(getattr(model, "inputs", None) or [])
    if len(flat) != len(keys) or any(struct[k] is not t for k, t in zip(keys, flat)):
        return None  # nested structures: not a flat dict of inputs
    return keys


def keras_call_inputs(model, names: list[str], xs):
    """What to call a Keras model with for the tensors ``xs`` of the inputs ``names``: the
    dict it was built on (see :func:`keras_input_keys`), a list, or the one tensor."""
    xs = list(xs)
    if keras_input_keys(model) is not None:
        return dict(zip(names, xs))
    return xs if len(xs) > 1 else xs[0]


def _onnx_source(path: Path, overrides: list[InputSpec]) -> Source:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadInput(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if not proto.graph.node:
        raise BadInput(f"{path}: the ONNX graph has no nodes")
    init = {i.name for i in proto.graph.initializer}
    given = {s.name: s for s in overrides}
    specs = []
    np_of = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8"}
    for vi in proto.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        dtype = np_of.get(tt.elem_type)
        if dtype is None:
            raise BadInput(f"{path}: input {vi.name!r} has an unsupported element type {tt.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else
                Symbol(symbol_name(d.dim_param) if d.dim_param else f"{symbol_name(vi.name)}_{axis}")
                for axis, d in enumerate(tt.shape.dim)]
        if vi.name in given:
            s = given.pop(vi.name)
            if not _fits(s, dims, allow_symbol_on_static=False):
                shown = [str(d) for d in dims]
                raise BadInput(f"{path}: --input {s.name} shape {s.shown_dims()} does not fit the model's "
                               f"[{', '.join(shown)}] (a size the file fixes cannot be a symbol)")
            specs.append(InputSpec.of(vi.name, s.dims, dtype, s.value_range))
        else:
            specs.append(InputSpec.of(vi.name, dims, dtype))
    if given:
        raise BadInput(f"{path}: --input names {sorted(given)} are not inputs of the model ({[s.name for s in specs]})")
    recorded = recorded_symbols({p.key: p.value for p in proto.metadata_props})
    named = {d.name for s in specs for d in s.symbols}
    return Source("onnx", path.stem, str(path), str(path), specs, [o.name for o in proto.graph.output],
                  constraints={k: {c: v for c, v in r.items() if c != "example"}
                               for k, r in recorded.items() if k in named and "min" in r},
                  recorded_sizes={k: r["example"] for k, r in recorded.items() if k in named})


def _keras_file_source(path: Path, overrides: list[InputSpec]) -> Source:
    from .quiet import import_tensorflow

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: cannot load as a Keras model (a .keras file is a zip archive; this one is not)")
    _, keras = import_tensorflow()
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise BadInput(f"{path}: cannot load as a Keras model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    return _keras_source(model, path.stem, str(path), list(overrides))


def _pt2_source(path: Path, overrides: list[InputSpec]) -> Source:
    from .quiet import import_torch

    torch = import_torch()
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise BadInput(f"{path}: cannot load as a torch.export program ({type(exc).__name__})") from exc
    module = ep.module()
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    specs = list(overrides)
    if not specs:
        args, _ = ep.example_inputs or ((), {})
        placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        for n, a in zip(names, args):
            val = getattr(placeholders.get(n), "meta", {}).get("val")
            sym = list(val.shape) if val is not None and len(val.shape) == len(a.shape) else list(a.shape)
            dims = [int(d) if isinstance(d, int) else Symbol(symbol_name(str(d)), int(e))
                    for d, e in zip(sym, a.shape)]  # torch.export Dims (SymInts) stay symbols
            specs.append(InputSpec.of(n, dims, str(a.dtype).replace("torch.", "")))
    if [s.name for s in specs] != names:
        _check_names(specs, names, str(path))
    return Source("torch", path.stem, str(path), _ExportedModule(ep, module, names), specs)


class _ExportedModule:
    """Wraps ``ExportedProgram.module()`` so it is called like an nn.Module."""

    def __init__(self, program, module, names):
        self.program = program  # what export hands to torch.onnx.export
        self.module = module
        self.names = names

    def eval(self):
        return self

    def __call__(self, *args):
        return self.module(*args)


def _savedmodel_source(path: Path, overrides: list[InputSpec]) -> Source:
    from .quiet import import_tensorflow

    tf, _ = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except Exception as exc:
        raise BadInput(f"{path}: cannot load the SavedModel's serving_default signature ({type(exc).__name__})") from exc
    _, kw = fn.structured_input_signature
    given = {s.name: s for s in overrides}
    specs = []
    for name, spec in kw.items():
        shape = tuple(spec.shape)
        if name in given:
            specs.append(given.pop(name))
        else:
            specs.append(InputSpec.of(name, _dynamic_dims(shape, name), spec.dtype.name))
    if given:
        raise BadInput(f"{path}: --input names {sorted(given)} are not inputs of the SavedModel")
    return Source("tf", path.name, str(path), (loaded, fn), specs, sorted(fn.structured_outputs))


def _registered_source(model: str, overrides: list[InputSpec]) -> Source | None:
    """``NAME`` (``models/NAME.py`` with ``build()`` and ``INPUTS``) or ``ZOO:member``; None for other MODELs.

    A zoo (``models/ZOO.py`` with a ``SHAPES`` dict NAME -> inputs and no ``build``) is
    converted one member at a time: ``torch_zoo:resnet`` calls ``resnet()`` with the
    inputs ``SHAPES["resnet"]`` declares.  The zoo's name alone lists its members.
    """
    zoo, _, member = model.partition(":")
    file = MODELS_DIR / f"{zoo}.py"
    if not re.fullmatch(r"[A-Za-z_]\w*", zoo) or not file.is_file() or (member and not member.isidentifier()):
        return None
    module = _load_module_from_file(file)
    shapes = getattr(module, "SHAPES", None)
    if not isinstance(shapes, dict) or (not member and hasattr(module, "build")):
        attr = member or "build"
        return _call_factory(module, attr, f"models/{zoo}.py", overrides, zoo if attr == "build" else f"{zoo}_{attr}")
    if member not in shapes:
        members = ", ".join(f"{zoo}:{m}" for m in shapes)
        what = f"has no member {member!r}" if member else "is a zoo: name one member"
        raise BadInput(f"{model}: models/{zoo}.py {what} ({members})")
    single = type(module)(f"{module.__name__}_{member}")  # the member as a one-model module
    setattr(single, member, getattr(module, member))
    single.INPUTS = shapes[member]
    return _call_factory(single, member, f"models/{zoo}.py", overrides, f"{zoo}_{member}")


def resolve(model: str, overrides: list[InputSpec] | None = None, dims: dict[str, int] | None = None) -> Source:
    """Turn the MODEL argument into a :class:`Source`; raise BadInput if it cannot be.

    ``dims`` (``--dim SYMBOL=INT``) gives example sizes of symbols; every symbol of the
    returned inputs has one (a missing or conflicting size is bad input)."""
    source = _resolve(model, list(overrides or []))
    source.inputs = with_sizes(source.inputs, _recorded(source, _default_batch(source, dims or {})))
    return source


def _recorded(source: Source, dims: dict[str, int]) -> dict[str, int]:
    """``dims`` plus the sizes the file records (``Source.recorded_sizes``) for symbols that
    neither ``dims`` nor an ``--input`` sizes."""
    stated = symbol_sizes(source.inputs, dims, complete=False)
    return {**{k: v for k, v in source.recorded_sizes.items() if k not in stated}, **dims}


# The example size of a Keras or SavedModel batch the model leaves open (``Input(shape=(32,
# 32, 3))``): every such model would otherwise need ``--dim B=N``.  Two, not one: an exporter
# may treat a size-1 dimension as a broadcast (parity checks size 1 too).
DEFAULT_BATCH_EXAMPLE = 2


def _default_batch(source: Source, dims: dict[str, int]) -> dict[str, int]:
    """``dims`` plus ``B`` = :data:`DEFAULT_BATCH_EXAMPLE` where a Keras or SavedModel source's
    open batch (the symbol ``B`` this module names it) has no example from the user."""
    if source.framework not in ("keras", "tf") or "B" in dims:
        return dims
    batch = [d for s in source.inputs for d in s.dims[:1] if isinstance(d, Symbol) and d.name == "B"]
    if batch and all(d.example is None for d in batch):
        return {**dims, "B": DEFAULT_BATCH_EXAMPLE}
    return dims


def _resolve(model: str, overrides: list[InputSpec]) -> Source:
    if not model or not model.strip():
        raise BadInput("MODEL is empty")
    path = Path(model)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return _savedmodel_source(path, overrides)
        raise BadInput(f"{model}: a folder, but not a SavedModel (no saved_model.pb)")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".keras", ".pt2", ".h5"):
        if not path.is_file():
            raise BadInput(f"model file not found: {model}")
        if path.stat().st_size == 0:
            raise BadInput(f"{model}: the file is empty")
        loader = {".onnx": _onnx_source, ".keras": _keras_file_source, ".h5": _keras_file_source, ".pt2": _pt2_source}[suffix]
        return loader(path, overrides)
    registered = _registered_source(model, overrides)
    if registered is not None:
        return registered
    if ":" in model:
        where, _, attr = model.rpartition(":")
        if not attr.isidentifier():
            raise BadInput(f"{model}: expected FILE.py:factory or package.module:factory")
        if where.endswith(".py") or os.sep in where or "/" in where:
            module = _load_module_from_file(Path(where))
            stem = Path(where).stem
        else:
            try:
                with native_stderr_to_log():
                    module = importlib.import_module(where)
            except Exception as exc:
                raise BadInput(f"cannot import module {where!r}: {type(exc).__name__}: {exc}") from exc
            stem = where.rsplit(".", 1)[-1]
        name = stem if attr in ("build", "model", "factory") else f"{stem}_{attr}"
        return _call_factory(module, attr, where, overrides, name)
    known = ", ".join(list_registered()) or "none"
    raise BadInput(
        f"unknown MODEL {model!r}: not a registered name (known: {known}), "
        "not FILE.py:factory or module:factory, and not a .onnx/.keras/.pt2 file or SavedModel folder"
    )
