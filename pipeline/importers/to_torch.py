"""Stage 3 (PyTorch target): a normalized ONNX graph -> ``model.py`` + ``model.safetensors``.

The generated file defines ``class Model(nn.Module)`` with named submodules
and a straight-line ``forward``, and ``load()`` that returns it with weights
loaded and in eval mode.  It imports only torch and safetensors.

The model trains: a floating-point tensor of the graph that no module holds (a bare
``nn.Parameter`` of the source) and a functional convolution's weight and bias are
``nn.Parameter`` too, so ``model.parameters()`` gives every weight to an optimizer.  Buffers
stay: integer tensors, tensors the source itself keeps out of training (``FROZEN``: its
buffers), BatchNorm's running statistics (inside ``nn.BatchNorm*d``), and arrays an emitter
computes (a pooling's rescale factors, an index).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_ir as ir

from .codegen import Generator, identifier, py_literal, python_size
from .docs import interface_doc
from .torch_emit import DTYPE_NAMES, HELPERS

SMALL_CONST = 16  # int constants up to this size are written inline

# ``graph.meta[FROZEN]``: names of ONNX initializers the source does not train (a PyTorch
# source's buffers and parameters with ``requires_grad=False``); convert.py sets it.
FROZEN = "pipeline.frozen"


class TorchGenerator(Generator):
    def __init__(self, graph: ir.Graph):
        super().__init__(graph, "torch", reserved=("self", "torch", "nn", "F", "load_file", "os", *HELPERS))
        self.modules: list[tuple[str, str]] = []
        self.buffers: list[tuple[str, np.ndarray]] = []
        self.state: dict[str, np.ndarray] = {}
        self.attrs = set()
        self.symbols: dict[str, str] = {}  # symbol -> its variable in forward
        self.helpers: set[str] = set()  # torch_emit.HELPERS the model uses
        self.frozen_names: set[str] = set(graph.meta.get(FROZEN, ()))
        self.trainable: set[str] = set()  # buffer attributes that are the graph's own floating-point tensors

    def add_module(self, hint: str, ctor: str, weights: dict) -> str:
        attr = self.layer_names.take(hint)
        self.names.used.add(attr)
        self.modules.append((attr, ctor))
        for key, arr in weights.items():
            if arr is not None:
                self.state[f"{attr}.{key}"] = np.ascontiguousarray(arr)
        return attr

    def size_code(self, expr) -> str | None:
        """A symbolic size as Python arithmetic on variables bound from the inputs' shapes at
        the top of ``forward`` (``B = mixture.shape[0]``)."""
        places = self.symbol_places()

        def name_of(symbol: str) -> str:
            if symbol not in places:
                raise ValueError(symbol)
            if symbol not in self.symbols:
                self.symbols[symbol] = self.names.take(symbol)
            return self.symbols[symbol]

        try:
            return python_size(expr, name_of)
        except ValueError:
            return None

    def constant(self, value: ir.Value, arr: np.ndarray) -> str:
        if arr.ndim == 0:
            return py_literal(arr)
        if arr.size <= SMALL_CONST and np.issubdtype(arr.dtype, np.integer) and arr.ndim == 1:
            dtype = DTYPE_NAMES.get(ir.DataType.from_numpy(arr.dtype).value, "torch.int64")
            expr = f"torch.tensor({list(int(v) for v in arr)}, dtype={dtype})"
            self.values[value] = expr
            return expr
        attr = self.layer_names.take(self.value_hint(value) if value.name else "const")
        self.names.used.add(attr)
        self.buffers.append((attr, arr))
        self.state[attr] = np.ascontiguousarray(arr)
        if trainable(arr) and of_the_graph(value) and value.name not in self.frozen_names:
            self.trainable.add(attr)
        expr = f"self.{attr}"
        self.values[value] = expr
        return expr


def trainable(arr: np.ndarray) -> bool:
    """Whether a tensor can be an ``nn.Parameter``: only floating-point ones have gradients."""
    return np.issubdtype(arr.dtype, np.floating)


def of_the_graph(value: ir.Value) -> bool:
    """Whether ``value`` is a tensor of the ONNX graph (an initializer, a Constant's output),
    not one an emitter made while generating (``keras_emit.new_constant``'s fresh values)."""
    return value.is_initializer() or value.producer() is not None


# ``torch_emit.buffer`` names of a functional convolution's weight and bias (conv.py,
# conv_transpose.py): the source's weights, laid out for ``F.convNd``.
FUNCTIONAL_WEIGHT = re.compile(r"_(weight|bias)(_\d+)?$")


def release_dead(lines: list[str], keep: set[str]) -> list[str]:
    """``lines`` with ``del`` after each statement that last reads a value.

    A straight-line ``forward`` otherwise keeps every intermediate tensor alive until it
    returns: a call's peak memory is then the sum of all of them, and the allocator pays
    for it in page faults on every call.  Values never read again after being assigned
    are dropped at once; ``keep`` (the arguments and what is returned) never are.
    """
    import ast

    stores: list[set[str]] = []
    loads: list[set[str]] = []
    for line in lines:
        tree = ast.parse(line)
        targets = [t for stmt in tree.body if isinstance(stmt, ast.Assign) for t in stmt.targets]
        stores.append({n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)})  # not comprehension names
        loads.append({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)})
    last: dict[str, int] = {}
    for i, (stored, loaded) in enumerate(zip(stores, loads)):
        for name in stored | loaded:
            last[name] = i
    assigned = set().union(*stores) if stores else set()
    drop: dict[int, list[str]] = {}
    for name, i in last.items():
        if name in assigned and name not in keep and not name.startswith("_") and name != "self":
            drop.setdefault(i, []).append(name)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in drop:
            out.append(f"del {', '.join(sorted(drop[i], key=lambda n: line.find(n)))}")
    return out


def _names(expr: str) -> set[str]:
    import ast

    return {n.id for n in ast.walk(ast.parse(expr)) if isinstance(n, ast.Name)}


def generate(model: ir.Model, out_dir: Path, title: str, origin: str, interface: dict, source_layout: str) -> dict:
    """Write ``model.py`` and ``model.safetensors`` into ``out_dir``; return file info."""
    from safetensors.numpy import save_file

    graph = model.graph
    gen = TorchGenerator(graph)
    args = []
    for v in graph.inputs:
        name = gen.names.take(v.name)
        gen.values[v] = name
        args.append(name)
    gen.run()
    outs = [gen.expr(v) for v in graph.outputs]
    gen.release_weights()
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"

    doc = interface_doc(graph, interface, "torch", title, origin, source_layout)
    lines = [f'"""{doc}"""', "", "import os", "", "import torch", "import torch.nn.functional as F",
             "from safetensors.torch import load_file", "from torch import nn", "",
             'WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.safetensors")', "",
             *[HELPERS[h] for h in sorted(gen.helpers)], "",
             "class Model(nn.Module):", f'    """{title}, converted to native torch.nn modules."""', "",
             "    def __init__(self):", "        super().__init__()"]
    for attr, ctor in gen.modules:
        lines.append(f"        self.{attr} = {ctor}")
    for attr, arr in gen.buffers:
        dtype = DTYPE_NAMES.get(ir.DataType.from_numpy(arr.dtype).value, "torch.float32")
        empty = f"torch.empty({tuple(arr.shape)}, dtype={dtype})"
        if attr in gen.trainable or (trainable(arr) and FUNCTIONAL_WEIGHT.search(attr)):
            lines.append(f"        self.{attr} = nn.Parameter({empty})")
        else:
            lines.append(f'        self.register_buffer("{attr}", {empty})')
    lines += ["", f"    def forward(self, {', '.join(args)}):"]
    places = gen.symbol_places()
    bindings = [f"{var} = {gen.values[places[sym][0]]}.shape[{places[sym][1]}]" for sym, var in gen.symbols.items()]
    lines += [f"        {line}" for line in bindings + release_dead(gen.lines, keep={*args, *_names(ret)})]
    lines += [f"        return {ret}", "", "",
              "def load(weights: str = WEIGHTS) -> Model:",
              '    """Build the model, load its weights, and put it in eval mode."""',
              "    model = Model()", "    model.load_state_dict(load_file(weights))", "    return model.eval()", ""]
    out_dir = Path(out_dir)
    (out_dir / "model.py").write_text("\n".join(lines))
    save_file(gen.state, str(out_dir / "model.safetensors"))
    return {"files": ["model.py", "model.safetensors"], "node_vars": gen.node_vars,
            "parameters": int(sum(a.size for a in gen.state.values()))}


__all__ = ["generate", "identifier"]
