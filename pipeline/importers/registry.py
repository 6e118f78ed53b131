"""The op registry: for each ONNX op, one reader and one emitter per target.

An op is a small class in a family file under ``pipeline/importers/ops/``::

    @register
    class Clip(Op):
        types = ("Clip",)
        traits = frozenset({"unary"})

        def read(self, t):            # validates the node (every opset), returns a plan
            ...
        def torch(self, t, plan):     # writes PyTorch code from the plan, nothing else
            ...
        def keras(self, t, plan):     # writes Keras code from the plan
            ...

The reader sees the node through a :class:`~pipeline.importers.codegen.Translation`
and is the one place that knows the op's ONNX semantics (attributes that later
became inputs, defaults, what cannot be expressed); the emitters only write code.
A target that cannot express the op at all names the reason in ``refusals``
instead of an emitter.

Entries are keyed by ``(domain, op_type)`` and an opset range (``since`` ..
``until``, both inclusive): registering an op twice for overlapping versions
raises, so a second definition can never silently replace the first.  The
facts the normalize passes need about an op (``traits``: ``unary``, ``binary``,
``reduce``, ``shape``, ``layout``) are read from here as well.
"""

from __future__ import annotations

import importlib
from typing import Any

TARGETS = ("torch", "keras")
TRAITS = frozenset({
    "unary",  # elementwise on input 0 (other inputs are scalars or attributes): commutes with any Transpose
    "binary",  # elementwise with numpy broadcasting over every input
    "reduce",  # reduces over an ``axes`` attribute/input
    "shape",  # only reshapes its input (Reshape, Squeeze, Unsqueeze, Flatten)
    "layout",  # axis 1 is the channel axis; a channels-last target wraps it (see normalize.layout)
})


class DuplicateOp(ValueError):
    """Two definitions claim the same op for overlapping opset versions."""


class Op:
    """One ONNX op, or a set of ops read alike (``types``): a reader and an emitter per target.

    ``read(t)`` returns a plan (any object; ``None`` for ops that need none) or calls
    ``t.unsupported(reason)``.  ``torch(t, plan)`` and ``keras(t, plan)`` write code.
    """

    types: tuple[str, ...] = ()
    domain: str = ""
    since: int = 1
    until: int | None = None
    traits: frozenset[str] = frozenset()
    refusals: dict[str, str] = {}  # target -> why that target cannot express the op

    family: str = ""  # the family module, set by ``register``

    def read(self, t) -> Any:
        return None

    def needs(self, t) -> list[int]:
        """The inputs the emitters read: all by default.  An op whose output size is known
        without a shape input (a Reshape to sizes inference gave) does not need the nodes that
        compute it, and they are not written."""
        return list(range(len(t.node.inputs)))

    def emitter(self, target: str):
        fn = getattr(self, target, None)
        return fn if callable(fn) else None

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'/'.join(self.types)} opset {self.since}..{self.until or ''}>"


_REGISTRY: dict[tuple[str, str], list[Op]] = {}
_FAMILIES = "pipeline.importers.ops"
_loaded = False


def _overlap(a: Op, b: Op) -> bool:
    a_hi = a.until if a.until is not None else 10**9
    b_hi = b.until if b.until is not None else 10**9
    return a.since <= b_hi and b.since <= a_hi


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add one instance of ``cls`` for each of its ``types``."""
    op = cls()
    op.family = cls.__module__.rsplit(".", 1)[-1]
    if not op.types:
        raise ValueError(f"{cls.__name__}: no op types")
    unknown = set(op.traits) - TRAITS
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown traits {sorted(unknown)}")
    for target in TARGETS:
        if op.emitter(target) is None and target not in op.refusals:
            raise ValueError(f"{cls.__name__}: no {target} emitter and no refusal reason for {target}")
    for op_type in op.types:
        entries = _REGISTRY.setdefault((op.domain, op_type), [])
        for other in entries:
            if _overlap(op, other):
                raise DuplicateOp(f"{op.domain or 'ai.onnx'}::{op_type} is registered twice for overlapping "
                                  f"opsets: {other!r} (family {other.family}) and {op!r} (family {op.family})")
        entries.append(op)
    return cls


def load() -> None:
    """Import every family module (each registers its ops once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(_FAMILIES)


def lookup(domain: str, op_type: str, opset: int) -> Op | None:
    """The definition of ``op_type`` valid at ``opset``, or None."""
    load()
    domain = "" if domain == "ai.onnx" else domain
    for op in _REGISTRY.get((domain, op_type), ()):
        if op.covers(opset):
            return op
    return None


def entries() -> list[tuple[str, str, Op]]:
    """Every registration as ``(domain, op_type, op)``, sorted."""
    load()
    return [(d, t, op) for (d, t), ops in sorted(_REGISTRY.items()) for op in ops]


def ops_with(trait: str) -> frozenset[str]:
    """The standard-domain op types that have ``trait`` (in any opset)."""
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}")
    load()
    return frozenset(t for (d, t), ops in _REGISTRY.items() if d == "" and any(trait in op.traits for op in ops))


def translatable(target: str) -> frozenset[str]:
    """The standard-domain op types that have an emitter for ``target`` (in some opset)."""
    load()
    return frozenset(t for (d, t), ops in _REGISTRY.items()
                     if d == "" and any(op.emitter(target) is not None for op in ops))
