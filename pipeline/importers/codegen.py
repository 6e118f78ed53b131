"""Shared machinery for the importers: walk the graph, call one op's reader and emitter per
node, and collect readable Python source.

Each op is defined once in a family file under ``pipeline/importers/ops/`` (see
``registry``): its reader sees the node through a :class:`Translation` (inputs as Python
expressions, constants as numpy arrays, attributes, shapes) and returns a plan; the
target's emitter writes statements with ``t.assign(expr)``.  A node that cannot be
expressed exactly calls ``t.unsupported(reason)``; the generator collects every such node
and reports them all at once.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from ..errors import Unsupported
from ..normalize.graph import const_array, pin_role, static_shape, topological_nodes

Translator = Callable[["Translation"], None]


class NotExpressible(Exception):
    """Raised by a translator through ``Translation.unsupported``."""


# Globals of the generated model.py files (both targets), which a name must not rebind.
MODULE_GLOBALS = frozenset({
    "self", "os", "torch", "nn", "F", "load_file", "WEIGHTS", "Model", "load",  # PyTorch model.py
    "keras", "layers", "ops", "np", "C", "HERE", "build",  # Keras model.py
})
# Every name an ONNX node or value name must not become as is: Python's builtins
# (``max``, ``input``, ``sum``, ``type``...) and the generated file's own globals.
# ``identifier`` appends ``_`` to these; keywords get the same treatment.
SHADOWED = frozenset(dir(builtins)) | MODULE_GLOBALS
# Attributes of ``torch.nn.Module`` (as of torch 2.x): a submodule or buffer by one of these
# names would hide or break the method (``self.train = nn.Conv2d(...)`` breaks ``.eval()``).
TORCH_MODULE_ATTRS = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
})


def identifier(text: str, fallback: str = "v") -> str:
    """A readable Python identifier from an ONNX name; never a keyword, builtin or generated-file global."""
    text = text or fallback
    text = re.sub(r":\d+$", "", text)
    if "/" in text:  # tf2onnx: model/layer/op -> layer_op
        parts = [p for p in text.split("/") if p]
        text = "_".join(parts[1:3] if len(parts) > 2 else parts[-2:])
    text = re.sub(r"^(node_|val_)", "", text)
    text = re.sub(r"\W+", "_", text).strip("_") or fallback
    if text[0].isdigit():
        text = f"{fallback}_{text}"
    text = text[:40]
    if keyword.iskeyword(text) or text in SHADOWED:
        text += "_"
    return text


class Names:
    """Hands out unique identifiers, preferring the hint as given."""

    def __init__(self, reserved=()):
        self.used = set(reserved)

    def take(self, hint: str) -> str:
        base = identifier(hint)
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def py_literal(value) -> str:
    """A short Python literal for a scalar or small int array."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        item = arr.item()
        if isinstance(item, bool) or arr.dtype == np.bool_:
            return repr(bool(item))
        if np.issubdtype(arr.dtype, np.integer):
            return repr(int(item))
        if np.isinf(item):
            return "float('inf')" if item > 0 else "float('-inf')"
        if np.isnan(item):
            return "float('nan')"
        if arr.dtype == np.float32:
            text = str(arr.astype(np.float32))  # the shortest text that reads back as this float32
            if abs(float(text)) <= float(np.finfo(np.float32).max):  # -3.4028235e+38 would not fit (torch refuses)
                return text
        return repr(float(item))
    items = ", ".join(py_literal(v) for v in arr.reshape(-1))
    return f"({items},)" if arr.size == 1 else f"({items})"


def layout_note(node: ir.Node, perm: list[int]) -> str | None:
    """A comment for a Transpose that converts between channels-first and channels-last.

    For rank 3 both directions are the same permutation, so the direction is
    read from the neighbouring ops: a layout op (Conv, pooling, ...) consuming
    the result means the result is in that op's layout.
    """
    from ..normalize.graph import ops_with

    layout_ops = ops_with("layout")
    rank = len(perm)
    if rank < 3:
        return None
    to_cl, to_cf = [0, *range(2, rank), 1], [0, rank - 1, *range(1, rank - 1)]
    if perm not in (to_cl, to_cf):
        return None
    feeds = any(c.op_type in layout_ops for c in node.outputs[0].consumers())
    producer = node.inputs[0].producer()
    made_by = producer is not None and producer.op_type in layout_ops
    if rank == 3 and feeds == made_by:
        return None
    first_result = feeds if rank == 3 else perm == to_cf
    return "channels-last -> channels-first" if first_result else "channels-first -> channels-last"


def python_size(expr, name_of) -> str:
    """A symbolic size (sympy: sums, products, floor/ceiling of a division by an integer) as
    integer Python arithmetic; ``name_of`` maps a symbol's name to its variable.  Raises
    ValueError for anything else."""
    import sympy

    if expr.is_Integer:
        return str(int(expr))
    if expr.is_Symbol:
        return name_of(expr.name)
    if isinstance(expr, (sympy.floor, sympy.ceiling)):
        num, den = sympy.fraction(sympy.together(expr.args[0]))
        if not den.is_Integer or int(den) <= 0:
            raise ValueError(f"cannot write the size {expr}")
        inner = python_size(sympy.expand(num), name_of)
        return f"({inner}) // {int(den)}" if isinstance(expr, sympy.floor) else f"-(-({inner}) // {int(den)})"
    if expr.is_Add:
        terms = sorted(expr.args, key=lambda a: a.is_Number)  # symbols first, the constant last
        text = python_size(terms[0], name_of)
        for term in terms[1:]:
            negative = term.could_extract_minus_sign()
            text += f" - {python_size(-term, name_of)}" if negative else f" + {python_size(term, name_of)}"
        return text
    if expr.is_Mul:
        parts = []
        for factor in expr.args:
            code = python_size(factor, name_of)
            parts.append(f"({code})" if factor.is_Add else code)
        return " * ".join(parts)
    if expr.is_Pow and expr.exp.is_Integer and int(expr.exp) > 0:
        base = python_size(expr.base, name_of)
        return " * ".join([f"({base})" if expr.base.is_Add else base] * int(expr.exp))
    raise ValueError(f"cannot write the size {expr}")


def tuple_or_int(values) -> str:
    """``3`` when every value is 3, else ``(3, 5)``: how both frameworks' layers take per-axis sizes."""
    values = [int(v) for v in values]
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def shape_literal(shape) -> str:
    shape = tuple(int(d) for d in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


@dataclass
class Translation:
    node: ir.Node
    gen: "Generator"

    # -- reading the node -------------------------------------------------
    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def opset(self) -> int:
        """The graph's version of the standard ONNX domain (attributes became inputs over versions)."""
        return self.gen.opset

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] is not None

    def value(self, i: int) -> ir.Value:
        return self.node.inputs[i]

    def inp(self, i: int = 0) -> str:
        return self.gen.expr(self.node.inputs[i])

    def inps(self) -> str:
        """Every input's expression, comma-separated (variadic ops: Concat, Einsum, Sum...)."""
        return ", ".join(self.gen.expr(v) for v in self.node.inputs)

    def const(self, i: int) -> np.ndarray | None:
        return const_array(self.node.inputs[i]) if self.has_input(i) else None

    def selu_constants(self) -> tuple[float, float] | None:
        """A Selu's ``(alpha, gamma)``, or None when they are the standard ones that the
        frameworks' own ``selu`` has built in."""
        alpha, gamma = self.float("alpha", 1.67326319217681884765625), self.float("gamma", 1.05070102214813232421875)
        if abs(alpha - 1.6732632) < 1e-6 and abs(gamma - 1.0507010) < 1e-6:
            return None
        return alpha, gamma

    def const_shape(self, i: int) -> tuple[int, ...]:
        """Input ``i``'s static shape, read off its value when it is a constant (folded
        constants can carry symbolic shapes)."""
        arr = self.const(i)
        return tuple(arr.shape) if arr is not None else tuple(self.shape(i))

    def need_const(self, i: int, what: str) -> np.ndarray:
        arr = self.const(i)
        if arr is None:
            self.unsupported(f"{what} must be a constant")
        return arr

    def shape(self, i: int = 0) -> tuple[int, ...]:
        s = static_shape(self.node.inputs[i])
        if s is None:
            self.unsupported(f"input {i} has no static shape")
        return s

    def out_shape(self, j: int = 0) -> tuple[int, ...]:
        s = static_shape(self.node.outputs[j])
        if s is None:
            self.unsupported(f"output {j} has no static shape")
        return s

    # -- sizes that may vary (symbols; see normalize.symbolic) ------------------
    def dims(self, i: int = 0) -> list:
        """Input ``i``'s dimensions: ints where static, sympy expressions of the symbols where not."""
        return self._dims(self.node.inputs[i], f"input {i}")

    def out_dims(self, j: int = 0) -> list:
        return self._dims(self.node.outputs[j], f"output {j}")

    def _dims(self, value: ir.Value, what: str) -> list:
        from ..normalize.symbolic import dims

        found = dims(value)
        if found is None:
            self.unsupported(f"{what} has no known shape")
        return found

    def rank(self, i: int = 0) -> int:
        return len(self.dims(i))

    def sizes(self, i: int, axes) -> tuple[int, ...]:
        """Input ``i``'s sizes on ``axes``, which must be static (other axes may vary)."""
        return self._fixed(self.dims(i), axes, f"input {i}")

    def out_sizes(self, j: int, axes) -> tuple[int, ...]:
        """Output ``j``'s sizes on ``axes``, which must be static."""
        return self._fixed(self.out_dims(j), axes, f"output {j}")

    def _fixed(self, dims: list, axes, what: str) -> tuple[int, ...]:
        out = []
        for a in axes:
            d = dims[a % len(dims)]
            if not isinstance(d, int):
                self.unsupported(f"{what} varies in size on axis {a} ({d}), where this op needs a fixed size")
            out.append(d)
        return tuple(out)

    def size_code(self, expr) -> str | None:
        """Python source for a size in the generated code: an int, or the target's run-time
        expression of the symbols (None where the target has none, e.g. Keras' functional build)."""
        if isinstance(expr, int):
            return str(expr)
        return self.gen.size_code(expr)

    def out_dtype(self, j: int = 0):
        return self.node.outputs[j].dtype

    def ints(self, name: str, default=None):
        v = self.node.attributes.get_ints(name, default)
        return None if v is None else [int(x) for x in v]

    def int(self, name: str, default=None):
        return self.node.attributes.get_int(name, default)

    def float(self, name: str, default=None):
        return self.node.attributes.get_float(name, default)

    def str(self, name: str, default=None):
        return self.node.attributes.get_string(name, default)

    def unsupported(self, reason: str):
        raise NotExpressible(reason)

    # -- ONNX semantics shared by every target ---------------------------------
    def following_bias(self, units: int, node: ir.Node | None = None) -> tuple[np.ndarray | None, ir.Node | None]:
        """A lone ``Add`` of a constant ``(units,)`` vector after ``node`` (default: this node), foldable into a bias."""
        node = node or self.node
        out = node.outputs[0]
        users = out.consumers()
        add = users[0] if len(users) == 1 and not out.is_graph_output() else None
        if add is None or add.op_type != "Add" or add.domain != "":
            return None, None
        other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        arr = const_array(other)
        if arr is None or arr.size != units or (arr.ndim > 1 and arr.shape[-1] != units):
            return None, None
        if out.shape is None or arr.ndim > len(out.shape):  # the vector would add axes: not a bias
            return None, None
        return arr.reshape(units).astype(np.float32), add

    # -- writing code -------------------------------------------------------
    def out(self, j: int = 0) -> str:
        return self.gen.var(self.node.outputs[j])

    def assign(self, expr: str, j: int = 0, comment: str | None = None) -> str:
        name = self.out(j)
        self.gen.emit(f"{name} = {expr}", comment)
        return name

    def alias(self, expr: str, j: int = 0) -> None:
        """The output is ``expr`` itself (no statement needed)."""
        self.gen.values[self.node.outputs[j]] = expr

    def layer_hint(self) -> str:
        return self.gen.layer_hint(self.node)

    def only_consumer(self, j: int = 0) -> ir.Node | None:
        v = self.node.outputs[j]
        users = v.consumers()
        return users[0] if len(users) == 1 and not v.is_graph_output() else None

    def absorb(self, node: ir.Node, expr_name: str) -> None:
        """Fuse ``node`` into this one: its output is ``expr_name``."""
        self.gen.absorbed.add(node)
        self.gen.values[node.outputs[0]] = expr_name


# Layer-name prefixes for numbered modules (nn.Sequential): what a person would call them
_OP_PREFIX = {"ConvTranspose": "conv_transpose", "BatchNormalization": "bn", "Gemm": "linear", "MatMul": "linear",
              "InstanceNormalization": "instance_norm", "LayerNormalization": "layer_norm"}


@dataclass
class Generator:
    """Walks a normalized graph and accumulates a target's source code."""

    graph: ir.Graph
    target: str
    reserved: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    absorbed: set = field(default_factory=set)
    names: Names = None
    layer_names: Names = None
    # Map from ONNX node name to the generated statement's variable, for bisection.
    node_vars: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        self.names = Names(self.reserved)
        # Layer names become ``self.<name>`` attributes of an nn.Module for PyTorch.
        self.layer_names = Names((*self.reserved, *(TORCH_MODULE_ATTRS if self.target == "torch" else ())))

    def expr(self, value: ir.Value) -> str:
        if value in self.values:
            return self.values[value]
        arr = const_array(value)
        if arr is not None:
            return self.constant(value, arr)
        raise KeyError(f"value {value.name!r} used before it is defined")

    def var(self, value: ir.Value) -> str:
        if value not in self.values:
            self.values[value] = self.names.take(self.value_hint(value))
        return self.values[value]

    def value_hint(self, value: ir.Value) -> str:
        name = value.name or ""
        if value.is_graph_input() or value.is_graph_output():
            return name
        producer = value.producer()
        if "/" in name or ":" in name or "__" in name or len(name) > 30:
            return (producer.op_type.lower() if producer is not None else "v")
        return name or "v"

    def layer_hint(self, node: ir.Node) -> str:
        """A layer/module name: from the weight's name (``conv1.weight``) or the node's.

        A name that starts with a digit (``nn.Sequential``'s ``0.weight``) gets the op in
        front: ``conv_0``, not the ``v_0`` a bare identifier fix would give.
        """
        hint = self._layer_hint(node)
        if not hint[:1].isdigit():
            return hint
        return f"{_OP_PREFIX.get(node.op_type, node.op_type.lower())}_{hint}"

    def _layer_hint(self, node: ir.Node) -> str:
        for v in node.inputs[1:2]:
            if v is not None and v.is_initializer() and v.name:
                name = v.name
                if name.endswith((".weight", ".bias")):
                    return name.rsplit(".", 1)[0]
                if "/" in name:
                    parts = [p for p in name.split("/") if p]
                    if len(parts) > 1:
                        return parts[1]
        name = node.name or node.op_type
        if "/" in name:
            parts = [p for p in name.split("/") if p]
            return parts[1] if len(parts) > 1 else parts[0]
        return re.sub(r"^node_", "", name)

    def emit(self, line: str, comment: str | None = None) -> None:
        self.lines.append(f"{line}  # {comment}" if comment else line)

    def constant(self, value: ir.Value, arr: np.ndarray) -> str:  # pragma: no cover - per target
        raise NotImplementedError

    def size_code(self, expr) -> str | None:
        """A symbolic size as code of this target; None when it cannot be written (the default)."""
        return None

    def symbol_places(self) -> dict[str, tuple[ir.Value, int]]:
        """Each symbol of the graph inputs' shapes, with the first input and axis that carries it."""
        places: dict[str, tuple[ir.Value, int]] = {}
        for v in self.graph.inputs:
            for axis, d in enumerate(v.shape or ()):
                if not isinstance(d, int) and d.value is not None and d.value not in places:
                    places[d.value] = (v, axis)
        return places

    def release_weights(self) -> None:
        """Drop the graph's initializer values once the translators have taken their copies.

        The caller keeps the graph's structure only (it reads ``normalized.onnx`` for
        parity), so the weights need not sit beside the target's own copies.
        """
        for value in self.graph.initializers.values():
            value.const_value = None

    @property
    def opset(self) -> int:
        return self.graph.opset_imports.get("", self.graph.opset_imports.get("ai.onnx", 1))

    def translator(self, node: ir.Node) -> tuple[Translator | None, str]:
        """The function that writes ``node`` for this target, or None and the reason there is none."""
        from . import registry

        op = registry.lookup(node.domain, node.op_type, self.opset)
        if op is not None:
            emit = op.emitter(self.target)
            if emit is None:
                return None, op.refusals[self.target]
            return (lambda t: emit(t, op.read(t))), ""
        return None, ""

    def live_nodes(self, nodes: list[ir.Node]) -> set[ir.Node]:
        """The nodes whose outputs the graph's outputs need, through the inputs each op reads."""
        from . import registry

        needed = set(self.graph.outputs)
        live = set()
        for node in reversed(nodes):
            if not any(o in needed for o in node.outputs):
                continue
            live.add(node)
            op = registry.lookup(node.domain, node.op_type, self.opset)
            try:
                reads = op.needs(Translation(node, self)) if op is not None else range(len(node.inputs))
            except NotExpressible:
                reads = range(len(node.inputs))
            needed.update(node.inputs[i] for i in reads if node.inputs[i] is not None)
        return live

    def run(self) -> None:
        problems: list[tuple[str, str, str]] = []
        nodes = topological_nodes(self.graph)
        live = self.live_nodes(nodes)
        for node in nodes:
            if node in self.absorbed or node not in live:
                continue
            if node.op_type == "Constant":
                continue
            if node.domain not in ("", "ai.onnx"):
                problems.append((f"{node.domain}::{node.op_type}", node.name or "?", "custom-domain op"))
                for o in node.outputs:
                    self.var(o)
                continue
            fn, why = self.translator(node)
            if fn is None:
                problems.append((node.op_type, node.name or "?", why))
                for o in node.outputs:
                    self.var(o)
                continue
            start = len(self.lines)
            try:
                fn(Translation(node, self))
            except NotExpressible as exc:
                problems.append((node.op_type, node.name or "?", str(exc)))
                del self.lines[start:]
                for o in node.outputs:  # keep going so every problem is reported
                    self.var(o)
                continue
            produced = [self.values.get(o) for o in node.outputs if o in self.values]
            self.node_vars[node.name or ""] = [p for p in produced if p]
        if problems:
            raise Unsupported(self.target, problems)

    def pin(self, node: ir.Node) -> str | None:
        return pin_role(node)
