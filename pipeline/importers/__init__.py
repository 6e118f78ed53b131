"""Stage 3: import a normalized ONNX graph into the target framework as source code."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

TARGETS = ("torch", "keras")


def preflight(target: str, model: ir.Model) -> None:
    """Refuse graphs with custom-domain or unknown ops before anything tries to run them.

    onnxruntime cannot execute them and no translator exists, so every such
    node is listed at once (exit 3).  Standard ops without a translator are
    reported by the generator, after normalization has folded what it can.
    """
    import onnx.defs

    from ..errors import Unsupported

    problems = []
    for n in model.graph:
        if n.domain not in ("", "ai.onnx"):
            problems.append((f"{n.domain}::{n.op_type}", n.name or "?", "custom-domain op"))
        elif not onnx.defs.has(n.op_type):
            problems.append((n.op_type, n.name or "?", "not an ONNX operator"))
    if problems:
        raise Unsupported(target, problems)


def generate(target: str, model: ir.Model, out_dir: Path, title: str, origin: str, interface: dict,
             source_layout: str) -> dict:
    """Write ``model.py`` and weights for ``target`` into ``out_dir``.

    ``model``'s initializers lose their values once translated (the weights then live
    in the target's copies only); its structure is left as it was.
    """
    if target == "torch":
        from .to_torch import generate as gen
    elif target == "keras":
        from ..quiet import import_tensorflow

        import_tensorflow()
        from .to_keras import generate as gen
    else:  # pragma: no cover - the CLI validates targets
        raise ValueError(target)
    return gen(model, Path(out_dir), title, origin, interface, source_layout)
