"""Input specifications: ``NAME=DIM,DIM,...[:DTYPE]`` on the command line.

Each DIM is ``INT`` (a static size) or ``SYMBOL=INT`` (a size that varies, with the
example used to export and check), or a bare ``SYMBOL`` whose example comes from
another place that names it or from ``--dim SYMBOL=INT``.  One symbol in several
places, in one input or several, is one size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
_SYMBOL = re.compile(r"^[A-Za-z_]\w*$")
_SYMBOL_DIM = re.compile(r"^([A-Za-z_]\w*)(?:=([0-9]+))?$")
USAGE = "expected NAME=DIM,DIM,...[:DTYPE] with DIM an INT or SYMBOL=INT, e.g. x=1,3,224,224, ids=2,16:int64 " \
        "or mixture=B=4,K=10,128"


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
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dims: tuple = ()

    def __post_init__(self):
        if not self.dims:
            object.__setattr__(self, "dims", tuple(self.shape))
        else:
            shape = tuple(d.example if isinstance(d, Symbol) else d for d in self.dims)
            object.__setattr__(self, "shape", shape)

    @classmethod
    def of(cls, name: str, dims, dtype: str = "float32") -> InputSpec:
        """A spec from its dims (ints and Symbols); the shape follows from them."""
        dims = tuple(dims)
        return cls(name, tuple(d.example if isinstance(d, Symbol) else d for d in dims), dtype, dims or ())

    @property
    def symbols(self) -> list[Symbol]:
        return [d for d in self.dims if isinstance(d, Symbol)]

    @property
    def is_static(self) -> bool:
        return not self.symbols

    def at(self, sizes: dict[str, int]) -> InputSpec:
        """The same input with its symbols at ``sizes`` (a size set for parity)."""
        return InputSpec.of(self.name, [Symbol(d.name, sizes.get(d.name, d.example)) if isinstance(d, Symbol) else d
                                        for d in self.dims], self.dtype)

    def frozen(self) -> InputSpec:
        """Every symbol fixed at its example (``--static``)."""
        return InputSpec(self.name, self.shape, self.dtype)

    def shown_dims(self) -> str:
        return "(" + ", ".join(d.name if isinstance(d, Symbol) else str(d) for d in self.dims) + ")"

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)}"


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
    """Parse ``x=1,3,224,224``, ``ids=2,16:int64`` or ``mixture=B=4,K=10,128``."""
    m = _NAME_EQ.match(text.strip())
    if not m:
        raise BadInput(f"--input {text!r}: {USAGE}")
    name, rest = m.group(1), m.group(2)
    dtype = "float32"
    if ":" in rest:
        rest, _, dtype = rest.rpartition(":")
    if not rest or not re.fullmatch(r"[\w=,]+", rest):
        raise BadInput(f"--input {text!r}: {USAGE}")
    if dtype not in DTYPES:
        raise BadInput(f"--input {text!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    where = f"--input {name}"
    return InputSpec.of(name, [parse_dim_token(t, where, i) for i, t in enumerate(rest.split(","))], dtype)


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
    """Seeded random inputs: standard normal floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        dt = DTYPES[s.dtype]
        if np.issubdtype(dt, np.floating):
            out[s.name] = rng.standard_normal(s.shape).astype(dt)
        elif dt is np.bool_:
            out[s.name] = rng.integers(0, 2, s.shape).astype(np.bool_)
        else:
            out[s.name] = rng.integers(0, 8, s.shape).astype(dt)
    return out
