"""Errors that map to the CLI's documented exit codes.

0  converted, parity within tolerance
1  converted, parity failed
2  bad input or usage
3  unsupported ops
4  internal error (a bug: please report it)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARITY = 1
EXIT_BAD_INPUT = 2
EXIT_UNSUPPORTED = 3
EXIT_INTERNAL = 4


class PipelineError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = EXIT_BAD_INPUT


class BadInput(PipelineError):
    """The model, a file, a flag or a config is wrong (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class Unsupported(PipelineError):
    """The graph has ops the chosen target cannot express (exit 3).

    ``ops`` lists every offending node as ``(op_type, node_name, reason)``
    so the user sees all of them at once, not just the first.
    """

    exit_code = EXIT_UNSUPPORTED

    def __init__(self, target: str, ops: list[tuple[str, str, str]]):
        self.target = target
        self.ops = ops
        kinds = sorted({op for op, _, _ in ops})
        listed = "; ".join(
            f"{op} at '{name}'" + (f" ({why})" if why else "") for op, name, why in ops
        )
        super().__init__(
            f"{len(ops)} node(s) cannot be converted to {target} "
            f"(op types: {', '.join(kinds)}): {listed}"
        )
