"""Input specifications: ``NAME=DIM,DIM,...[:DTYPE]`` on the command line.

Each DIM is ``INT`` (a static size) or ``SYMBOL=INT`` (a size that varies, with the
example used to export and check), or a bare ``SYMBOL`` whose example comes from
another place that names it or from ``--dim SYMBOL=INT``.  One symbol in several
places, in one input or several, is one size.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
    "uint8": np.uint8,
}

_NAME_EQ = re.compile(r"^([A-Za-z_][\w.:/-]*?)=(.+)$")
_RANGE = re.compile(r"^(-?[0-9]+)\.\.(-?[0-9]+)$")
_SYMBOL = re.compile(r"^[A-Za-z_]\w*$")
_SYMBOL_DIM = re.compile(r"^([A-Za-z_]\w*)(?:=([0-9]+))?$")
USAGE = "expected NAME=DIM,DIM,...[:DTYPE[:LOW..HIGH]] with DIM an INT or SYMBOL=INT, e.g. x=1,3,224,224, " \
        "ids=2,16:int64, ids=2,16:int64:0..30000 or mixture=B=4,K=10,128"
INTEGER_DTYPES = ("int64", "int32", "uint8")
DEFAULT_INT_RANGE = (0, 8)  # integer inputs that index nothing the graph shows: small non-negative values


@dataclass(frozen=True)
class Symbol:
    """A dimension that varies: its name and the example size used to export and check
    (None until it is known: from another place naming it, ``--dim`` or ``--input``)."""

    name: str
    example: int | None = None

    def __str__(self) -> str:
        return self.name if self.example is None else f"{self.name}={self.example}"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, example shape and numpy dtype name.

    ``dims`` says which dimensions vary: each an int (static) or a :class:`Symbol`;
    ``shape`` stays the example shape (every size an int once the symbols are
    resolved), so code that only needs one concrete shape reads ``shape`` as before.
    Built without ``dims``, a spec is static.

    ``value_range``: ``(low, high)``, the half-open interval ``[low, high)`` an integer
    input's values are drawn from (``--input ids=2,16:int64:0..30000``, or the size of the
    embedding it indexes, see :func:`index_ranges`); None for the default.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dims: tuple = ()
    value_range: tuple[int, int] | None = None

    def __post_init__(self):
        if not self.dims:
            object.__setattr__(self, "dims", tuple(self.shape))
        else:
            shape = tuple(d.example if isinstance(d, Symbol) else d for d in self.dims)
            object.__setattr__(self, "shape", shape)

    @classmethod
    def of(cls, name: str, dims, dtype: str = "float32", value_range: tuple[int, int] | None = None) -> InputSpec:
        """A spec from its dims (ints and Symbols); the shape follows from them."""
        dims = tuple(dims)
        return cls(name, tuple(d.example if isinstance(d, Symbol) else d for d in dims), dtype, dims or (),
                   value_range)

    @property
    def symbols(self) -> list[Symbol]:
        return [d for d in self.dims if isinstance(d, Symbol)]

    @property
    def is_static(self) -> bool:
        return not self.symbols

    def at(self, sizes: dict[str, int]) -> InputSpec:
        """The same input with its symbols at ``sizes`` (a size set for parity)."""
        return InputSpec.of(self.name, [Symbol(d.name, sizes.get(d.name, d.example)) if isinstance(d, Symbol) else d
                                        for d in self.dims], self.dtype, self.value_range)

    def with_dims(self, dims) -> InputSpec:
        """The same input (name, dtype, value range) with other dims."""
        return InputSpec.of(self.name, dims, self.dtype, self.value_range)

    def frozen(self) -> InputSpec:
        """Every symbol fixed at its example (``--static``)."""
        return InputSpec(self.name, self.shape, self.dtype, value_range=self.value_range)

    def as_arg(self) -> str:
        """The ``--input`` text that parses back to this spec (a batch task carries it)."""
        dims = ",".join(str(d) for d in self.dims)
        values = f":{self.value_range[0]}..{self.value_range[1]}" if self.value_range else ""
        return f"{self.name}={dims}:{self.dtype}{values}"

    def shown_dims(self) -> str:
        return "(" + ", ".join(d.name if isinstance(d, Symbol) else str(d) for d in self.dims) + ")"

    def describe(self) -> str:
        values = f" in [{self.value_range[0]}, {self.value_range[1]})" if self.value_range else ""
        return f"{self.name}: {self.dtype}{list(self.shape)}{values}"


def parse_dim_token(token: str, where: str, axis: int):
    """``128`` -> 128, ``B=4`` -> Symbol('B', 4), ``B`` -> Symbol('B')."""
    token = token.strip()
    if token.isdigit():
        return int(token)
    m = _SYMBOL_DIM.match(token)
    if not m:
        raise BadInput(f"{where}: dimension {axis} {token!r} is not INT or SYMBOL=INT (e.g. 128 or B=4)")
    if m.group(2) is not None and int(m.group(2)) < 1:
        raise BadInput(f"{where}: dimension {axis}: symbol {m.group(1)!r} needs an example size of at least 1")
    return Symbol(m.group(1), int(m.group(2)) if m.group(2) is not None else None)


def parse_input(text: str) -> InputSpec:
    """Parse ``x=1,3,224,224``, ``ids=2,16:int64``, ``ids=2,16:int64:0..30000`` or ``mixture=B=4,K=10,128``."""
    m = _NAME_EQ.match(text.strip())
    if not m:
        raise BadInput(f"--input {text!r}: {USAGE}")
    name, rest = m.group(1), m.group(2)
    dtype, value_range = "float32", None
    if ":" in rest and ".." in rest.rpartition(":")[2]:
        rest, _, values = rest.rpartition(":")
        value_range = parse_range(values, f"--input {name}")
    if ":" in rest:
        rest, _, dtype = rest.rpartition(":")
    if not rest or not re.fullmatch(r"[\w=,]+", rest):
        raise BadInput(f"--input {text!r}: {USAGE}")
    if dtype not in DTYPES:
        raise BadInput(f"--input {text!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    where = f"--input {name}"
    spec = InputSpec.of(name, [parse_dim_token(t, where, i) for i, t in enumerate(rest.split(","))], dtype, value_range)
    check_range(spec, where)
    return spec


def parse_range(text, where: str) -> tuple[int, int]:
    """``"0..30000"`` (or a YAML ``[0, 30000]``) -> (0, 30000): values drawn from ``[0, 30000)``."""
    if isinstance(text, str):
        m = _RANGE.match(text.strip())
        pair = (int(m.group(1)), int(m.group(2))) if m else None
    elif isinstance(text, (list, tuple)) and len(text) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in text):
        pair = (int(text[0]), int(text[1]))
    else:
        pair = None
    if pair is None:
        raise BadInput(f"{where}: range {text!r} is not LOW..HIGH (or [LOW, HIGH]) with integers, e.g. 0..30000")
    if pair[1] <= pair[0]:
        raise BadInput(f"{where}: range {pair[0]}..{pair[1]} is empty; values are drawn from [LOW, HIGH), "
                       "so HIGH must be above LOW")
    return pair


def check_range(spec: InputSpec, where: str) -> None:
    """A value range is for integer inputs only (floats stay standard normal)."""
    if spec.value_range is None:
        return
    if spec.dtype not in INTEGER_DTYPES:
        raise BadInput(f"{where}: a value range needs an integer dtype ({', '.join(INTEGER_DTYPES)}), not "
                       f"{spec.dtype}; e.g. {spec.name}=2,16:int64:{spec.value_range[0]}..{spec.value_range[1]}")
    info = np.iinfo(DTYPES[spec.dtype])
    low, high = spec.value_range
    if low < info.min or high - 1 > info.max:
        raise BadInput(f"{where}: range {low}..{high} does not fit {spec.dtype} ({info.min}..{info.max + 1})")


# ``metadata_props`` key of the ONNX files a conversion writes (``source.onnx``,
# ``normalized.onnx``): each symbol's example size and the range the exporter proved, as JSON
# ``{"B": {"example": 4}, "T": {"example": 1013, "min": 30, "multiple_of": 1, "offset": 0}}``,
# so converting such a file again needs no ``--dim``.
SYMBOLS_KEY = "pipeline.symbols"


def symbols_metadata(specs: list[InputSpec], constraints: dict[str, dict] | None = None) -> dict[str, str]:
    """The :data:`SYMBOLS_KEY` entry for inputs ``specs`` (empty when nothing varies)."""
    found: dict[str, dict] = {}
    for s in specs:
        for d in s.symbols:
            found.setdefault(d.name, {"example": d.example, **(constraints or {}).get(d.name, {})})
    return {SYMBOLS_KEY: json.dumps(found, sort_keys=True)} if found else {}


def recorded_symbols(props: dict[str, str]) -> dict[str, dict]:
    """What :func:`symbols_metadata` wrote, read back from ``metadata_props``; entries that are
    not a name with a positive integer example are left out (the file is input, not ours)."""
    try:
        found = json.loads(props.get(SYMBOLS_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}

    def whole(v, least: int | None = None) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and (least is None or v >= least)

    out = {}
    for name, entry in found.items():
        if not (isinstance(entry, dict) and whole(entry.get("example"), 1)):
            continue
        out[name] = {"example": entry["example"]}
        ranged = {k: entry.get(k) for k in ("min", "multiple_of", "offset")}
        if whole(ranged["min"], 0) and whole(ranged["multiple_of"], 1) and whole(ranged["offset"]):
            out[name].update(ranged)
            if whole(entry.get("max"), ranged["min"]):
                out[name]["max"] = entry["max"]
    return out


def parse_dim(text: str) -> tuple[str, int]:
    """Parse ``--dim B=4``."""
    m = re.fullmatch(r"([A-Za-z_]\w*)=([0-9]+)", text.strip())
    if not m or int(m.group(2)) < 1:
        raise BadInput(f"--dim {text!r}: expected SYMBOL=INT with INT >= 1, e.g. --dim B=4")
    return m.group(1), int(m.group(2))


def symbol_sizes(specs: list[InputSpec], given: dict[str, int] | None = None, complete: bool = True) -> dict[str, int]:
    """Each symbol's one example size, from ``given`` (``--dim``) and every place that states it.

    Two different sizes for one symbol, or (``complete``) a symbol no one sizes or a
    ``--dim`` no input names, is bad input naming the input, the dimension and the symbol."""
    given = dict(given or {})
    sizes: dict[str, tuple[int, str]] = {k: (v, f"--dim {k}={v}") for k, v in given.items()}
    for s in specs:
        for axis, d in enumerate(s.dims):
            if not isinstance(d, Symbol) or d.example is None:
                continue
            here = f"input {s.name!r} dimension {axis}"
            if d.name in sizes and sizes[d.name][0] != d.example:
                size, there = sizes[d.name]
                raise BadInput(f"{here}: symbol {d.name!r} is {d.example} here but {size} at {there}; "
                               "one symbol is one size")
            sizes.setdefault(d.name, (d.example, here))
    if not complete:
        return {k: v for k, (v, _) in sizes.items()}
    for s in specs:
        for axis, d in enumerate(s.dims):
            if isinstance(d, Symbol) and d.name not in sizes:
                raise BadInput(f"input {s.name!r} has a dynamic dimension {axis}, the symbol {d.name!r}, with no "
                               f"example size; pass --dim {d.name}=N (or --input {s.name}={_example_text(s, d.name)})")
    named = {d.name for s in specs for d in s.symbols}
    unused = sorted(set(given) - named)
    if unused:
        raise BadInput(f"--dim {unused[0]}={given[unused[0]]}: no input has a dimension named {unused[0]!r} "
                       f"(symbols: {', '.join(sorted(named)) or 'none'})")
    return {k: v for k, (v, _) in sizes.items()}


def _example_text(spec: InputSpec, missing: str) -> str:
    return ",".join(f"{d.name}=N" if isinstance(d, Symbol) and d.name == missing else str(d)
                    for d in spec.dims)


def with_sizes(specs: list[InputSpec], given: dict[str, int] | None = None) -> list[InputSpec]:
    """``specs`` with every symbol's example filled in (see :func:`symbol_sizes`)."""
    sizes = symbol_sizes(specs, given)
    return [s.at(sizes) for s in specs]


def make_inputs(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal floats; integers from the spec's value range,
    else small non-negative ones (``DEFAULT_INT_RANGE``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        dt = DTYPES[s.dtype]
        if np.issubdtype(dt, np.floating):
            out[s.name] = rng.standard_normal(s.shape).astype(dt)
        elif dt is np.bool_:
            out[s.name] = rng.integers(0, 2, s.shape).astype(np.bool_)
        else:
            low, high = s.value_range or DEFAULT_INT_RANGE
            out[s.name] = rng.integers(low, high, s.shape).astype(dt)
    return out


# -- integer inputs: the values the model can index ---------------------------------------
#
# Token ids drawn from [0, 8) are out of range for an embedding of 2 rows (a BERT's segment
# ids): the source model itself fails on them.  The range an integer input may take is read
# off the exported graph, in exact cases only: the input reaches a Gather's indices (or a
# Div/Mod divisor) through ops that pass its values on unchanged (Cast to an integer type,
# Reshape, Unsqueeze, Squeeze, Flatten, Identity, Transpose, Expand, Slice, Gather of its
# elements), through Add/Sub of a constant (which shifts the range), or through the
# negative-index wrap Keras' Embedding writes, ``where(ids < 0, ids + n, ids)`` (tf2onnx: an
# arithmetic select), which passes non-negative ids on unchanged.  A Gather over ``n`` rows
# asks for ``[0, n)``, a divisor for ``[1, ...)``; an input used several ways gets the
# intersection.  Anything else an input feeds (a mask's Cast and Mul, a comparison) asks
# nothing, and such an input keeps ``DEFAULT_INT_RANGE``.

_PASS_ON = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Transpose", "Expand", "Slice"}
_ONNX_INTEGERS = {2, 3, 4, 5, 6, 7, 12, 13}  # uint8, int8, uint16, int16, int32, int64, uint32, uint64


def index_ranges(onnx_path, specs: list[InputSpec]) -> dict[str, tuple[int, int, str]]:
    """``{input: (low, high, why)}``: the range ``[low, high)`` each integer input without a
    stated ``value_range`` can take, where the graph says (see above)."""
    wanted = [s.name for s in specs if s.dtype in INTEGER_DTYPES and s.value_range is None]
    if not wanted:
        return {}
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return _GraphRanges(graph, str(Path(onnx_path).parent)).ranges(wanted)


class _GraphRanges:
    """The constraints a graph puts on its integer inputs' values (see :func:`index_ranges`)."""

    def __init__(self, graph, base_dir: str = ""):
        from onnx import numpy_helper

        self.consumers: dict[str, list] = {}
        self.producer: dict[str, object] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
            for name in node.output:
                self.producer[name] = node
        self.shapes = {t.name: list(t.dims) for t in graph.initializer}
        self.constants = {}
        for t in graph.initializer:
            if int(np.prod(t.dims)) <= 4096:  # offsets and zeros are small; tables are not read
                self.constants[t.name] = numpy_helper.to_array(t, base_dir)  # external data beside the file
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                t = node.attribute[0].t
                self.shapes[node.output[0]] = list(t.dims)
                if int(np.prod(t.dims)) <= 4096:
                    self.constants[node.output[0]] = numpy_helper.to_array(t)
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if vi.name not in self.shapes and vi.type.tensor_type.HasField("shape") and all(
                    d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = [d.dim_value for d in dims]

    def ranges(self, names: list[str]) -> dict[str, tuple[int, int, str]]:
        out = {}
        for name in names:
            low, high, why = self._walk(name)
            if why and low < high:
                start = max(low, 0) if max(low, 0) < high else low
                out[name] = (int(start), int(high if high != np.inf else start + 8), "; ".join(why))
        return out

    def _walk(self, name: str):
        """(low, high, reasons): the intersection of what every use of ``name`` asks."""
        low, high, why = -np.inf, np.inf, []
        todo, seen = [(name, 0, 0)], set()  # (value, least and greatest shift added to the input)
        while todo:
            value, dmin, dmax = todo.pop()
            if (value, dmin, dmax) in seen:
                continue
            seen.add((value, dmin, dmax))
            for node, slot in self.consumers.get(value, []):
                need = self._asks(node, slot)
                if need is not None:  # the value must lie in [a, b): the input in [a - dmin, b - dmax)
                    a, b, reason = need
                    low, high = max(low, a - dmin), min(high, b - dmax)
                    why.append(reason)
                    continue
                step = self._passes(node, slot, value)
                if step is None:
                    continue
                out, lo_shift, hi_shift, needs_non_negative = step
                if needs_non_negative:  # the wrap of negative ids is the identity on ids >= 0
                    low = max(low, -dmin)
                todo.append((out, dmin + lo_shift, dmax + hi_shift))
        return low, high, why

    def _asks(self, node, slot: int):
        """(low, high, why) when ``node`` needs its input ``slot`` in ``[low, high)``."""
        if node.op_type == "Gather" and slot == 1 and node.input[0] in self.shapes:
            shape = self.shapes[node.input[0]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            axis = axis + len(shape) if axis < 0 else axis
            if 0 <= axis < len(shape) and shape[axis] > 0:
                return 0, shape[axis], f"Gather {node.name!r} over {shape[axis]} rows"
        if node.op_type in ("Div", "Mod") and slot == 1:
            return 1, np.inf, f"{node.op_type} {node.name!r} divides by it"
        return None

    def _passes(self, node, slot: int, value: str):
        """(output, least shift, greatest shift, needs ids >= 0) when ``node`` passes the
        values of its input ``slot`` on to its output exactly (shifted by a constant)."""
        op = node.op_type
        if not node.output:
            return None
        if op == "Cast" and next((a.i for a in node.attribute if a.name == "to"), 0) in _ONNX_INTEGERS:
            return node.output[0], 0, 0, False
        if (op in _PASS_ON or op == "Gather") and slot == 0:
            return node.output[0], 0, 0, False
        if op in ("Add", "Sub") and len(node.input) == 2:
            other = node.input[1 - slot]
            c = self.constants.get(other)
            if c is None or c.size == 0 or not np.issubdtype(c.dtype, np.integer):
                return None
            if op == "Add":
                return node.output[0], int(c.min()), int(c.max()), False
            if slot == 0:
                return node.output[0], -int(c.max()), -int(c.min()), False
            return None
        if op == "Where" and slot == 2 and self._is_negative(node.input[0], value):
            return node.output[0], 0, 0, True
        if op == "Mul" and self._arithmetic_select(node, value) is not None:
            return self._arithmetic_select(node, value), 0, 0, True
        return None

    def _is_negative(self, cond: str, value: str) -> bool:
        """``cond`` is ``value < 0`` (``value`` maybe cast first)."""
        less = self.producer.get(cond)
        if less is None or less.op_type != "Less":
            return False
        left = less.input[0]
        cast = self.producer.get(left)
        if left != value and not (cast is not None and cast.op_type == "Cast" and cast.input[0] == value):
            return False
        zero = self.constants.get(less.input[1])
        return zero is not None and zero.size == 1 and float(zero.reshape(())) == 0

    def _arithmetic_select(self, mul, value: str) -> str | None:
        """The output of tf2onnx's ``where(value < 0, ..., value)`` when ``mul`` is its
        ``value * Cast(Not(value < 0))`` half: ``Add(Mul(Cast(c), a), Mul(value, Cast(Not(c))))``."""
        other = mul.input[1] if mul.input[0] == value else mul.input[0]
        cast = self.producer.get(other)
        negation = self.producer.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
        if negation is None or negation.op_type != "Not" or not self._is_negative(negation.input[0], value):
            return None
        adds = [n for n, _ in self.consumers.get(mul.output[0], []) if n.op_type == "Add"]
        if len(adds) != 1:
            return None
        add = adds[0]
        first = self.producer.get(add.input[0] if add.input[1] == mul.output[0] else add.input[1])
        if first is None or first.op_type != "Mul":
            return None
        masks = [self.producer.get(i) for i in first.input]
        if not any(m is not None and m.op_type == "Cast" and m.input[0] == negation.input[0] for m in masks):
            return None
        return add.output[0]


def trace_inputs(specs: list[InputSpec], seed: int) -> dict:
    """The inputs the export traces with: the seeded ones, but every integer at one value that
    is valid before the ranges are read off the exported graph (see :func:`with_index_ranges`):
    one above the low end of its range, so 1 by default, an index into any table of two rows
    or more and never a zero divisor.  Tracers use only shapes and dtypes; a fallback that runs
    the model must not fail on ids drawn past a small embedding."""
    out = make_inputs(specs, seed)
    for s in specs:
        if s.dtype in INTEGER_DTYPES:
            low, high = s.value_range or DEFAULT_INT_RANGE
            out[s.name] = np.full(s.shape, low + 1 if low + 1 < high else low, dtype=out[s.name].dtype)
    return out


def with_index_ranges(specs: list[InputSpec], onnx_path) -> tuple[list[InputSpec], dict]:
    """``specs`` with each integer input's value range read off the exported graph (the rows
    of the embedding or Gather it indexes: :func:`index_ranges`) where the user stated none,
    and ``report["input_ranges"]``: per integer input, ``range`` ``[low, high)`` and ``from``."""
    found = index_ranges(onnx_path, specs)
    out, report = [], {}
    for s in specs:
        if s.name in found:
            low, high, why = found[s.name]
            s = InputSpec.of(s.name, s.dims, s.dtype, (low, high))
            report[s.name] = {"range": [low, high], "from": why}
        elif s.dtype in INTEGER_DTYPES:
            given = s.value_range is not None
            report[s.name] = {"range": list(s.value_range or DEFAULT_INT_RANGE),
                              "from": "given" if given else "default: it indexes nothing the graph shows"}
        out.append(s)
    return out, report


# -- the user's own inputs (--sample) -------------------------------------------------------

def load_sample(path) -> dict[str, np.ndarray]:
    """The arrays of ``--sample``: a ``.npz`` file (arrays by input name) or a folder of
    ``NAME.npy`` files.  Unreadable, empty, non-numeric or non-finite arrays are bad input
    naming the array."""
    from pathlib import Path

    where = f"--sample {path}"
    p = Path(path)
    try:
        if p.is_dir():
            files = sorted(p.glob("*.npy"))
            if not files:
                raise BadInput(f"{where}: the folder holds no NAME.npy files")
            arrays = {f.stem: np.load(f, allow_pickle=False) for f in files}
        elif p.is_file():
            loaded = np.load(p, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a .npy file: one array, no name
                raise BadInput(f"{where}: one array with no name; give FILE.npz with arrays named by input "
                               "(np.savez(FILE, ids=..., mask=...)) or a folder of NAME.npy")
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        else:
            raise BadInput(f"{where}: no such file or folder")
    except BadInput:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise BadInput(f"{where}: cannot read it as .npz or a folder of .npy ({type(exc).__name__}: {first})") from exc
    if not arrays:
        raise BadInput(f"{where}: holds no arrays")
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise BadInput(f"{where}: array {name!r} has dtype {a.dtype}, not numbers")
        if a.size == 0:
            raise BadInput(f"{where}: array {name!r} is empty (shape {list(a.shape)})")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            what = f"NaN in {nan}" if nan else f"an infinity in {inf}"
            raise BadInput(f"{where}: array {name!r} holds {what} of its {a.size} values")
    return arrays


def check_sample(arrays: dict[str, np.ndarray], specs: list[InputSpec], path) -> dict[str, int]:
    """Check ``--sample`` arrays against the model's inputs; return the symbols' sizes in them.

    Every input needs one array of its dtype and rank; a static dimension must match, a
    symbol may take any size but one size wherever it occurs.  Bad input names the array."""
    where = f"--sample {path}"
    names = [s.name for s in specs]
    for name in arrays:
        if name not in names:
            raise BadInput(f"{where}: array {name!r} is not an input of the model (inputs: {', '.join(names)})")
    sizes: dict[str, tuple[int, str]] = {}
    for s in specs:
        if s.name not in arrays:
            raise BadInput(f"{where}: no array for input {s.name!r} (arrays: {', '.join(arrays)}; "
                           f"inputs: {', '.join(names)})")
        a = arrays[s.name]
        if a.dtype != np.dtype(DTYPES[s.dtype]):
            raise BadInput(f"{where}: array {s.name!r} is {a.dtype}, the input is {s.dtype} "
                           f"(save it with .astype(np.{s.dtype}))")
        if a.ndim != len(s.dims):
            raise BadInput(f"{where}: array {s.name!r} has rank {a.ndim} (shape {list(a.shape)}), the input has "
                           f"rank {len(s.dims)} {s.shown_dims()}")
        for axis, (d, size) in enumerate(zip(s.dims, a.shape)):
            if not isinstance(d, Symbol):
                if size != d:
                    raise BadInput(f"{where}: array {s.name!r} has size {size} on axis {axis} where the model fixes "
                                   f"{d} (shape {list(a.shape)}, input {s.shown_dims()})")
                continue
            there = sizes.setdefault(d.name, (size, f"{s.name!r} axis {axis}"))
            if there[0] != size:
                raise BadInput(f"{where}: array {s.name!r} has size {size} on axis {axis}, symbol {d.name!r}, "
                               f"which is {there[0]} in {there[1]}; one symbol is one size")
    return {k: v for k, (v, _) in sizes.items()}
