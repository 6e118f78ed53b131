"""Input specifications: ``NAME=D0,D1,...[:DTYPE]`` on the command line."""

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

_SPEC = re.compile(r"^([A-Za-z_][\w.:/-]*)=([0-9]+(?:,[0-9]+)*)(?::(\w+))?$")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, static shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)}"


def parse_input(text: str) -> InputSpec:
    """Parse ``x=1,3,224,224`` or ``ids=2,16:int64``."""
    m = _SPEC.match(text.strip())
    if not m:
        raise BadInput(
            f"--input {text!r}: expected NAME=D0,D1,...[:DTYPE], e.g. x=1,3,224,224 or ids=2,16:int64"
        )
    name, dims, dtype = m.group(1), m.group(2), m.group(3) or "float32"
    if dtype not in DTYPES:
        raise BadInput(f"--input {text!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    return InputSpec(name, tuple(int(d) for d in dims.split(",")), dtype)


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
