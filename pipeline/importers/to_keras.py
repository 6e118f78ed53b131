"""Stage 3 (Keras target): a normalized ONNX graph -> ``model.py`` + weights.

The generated file has ``build()``, a functional Keras model of native layers
and ``keras.ops`` calls, and ``load()``, which builds it and loads
``model.weights.h5``.  Constants that are not layer weights live in
``constants.npz``.  Each weight is written once: no ``model.keras`` beside the
``.weights.h5`` (it would hold every weight again; ``load()`` gives the same model).
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import onnx_ir as ir

from ..onnx_io import COLLECT_BYTES
from ..sources import import_file
from .codegen import Generator, py_literal
from .docs import interface_doc
from .keras_emit import HELPERS, KERAS_DTYPES


class KerasGenerator(Generator):
    def __init__(self, graph: ir.Graph):
        super().__init__(graph, "keras", reserved=("keras", "layers", "ops", "np", "os", "C", "HERE", *HELPERS))
        self.layer_weights: dict[str, list[np.ndarray]] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.helpers: set[str] = set()  # keras_emit.HELPERS the model uses

    def add_layer(self, hint: str, weights: list) -> str:
        name = self.layer_names.take(hint)
        if weights:
            self.layer_weights[name] = [np.ascontiguousarray(w) for w in weights]
        return name

    def constant(self, value: ir.Value, arr: np.ndarray) -> str:
        if arr.ndim == 0:
            return py_literal(arr)
        key = self.names.take(self.value_hint(value) if value.name else "const")
        self.constants[key] = np.ascontiguousarray(arr)
        expr = f'C["{key}"]'
        self.values[value] = expr
        return expr


def generate(model: ir.Model, out_dir: Path, title: str, origin: str, interface: dict, source_layout: str) -> dict:
    graph = model.graph
    gen = KerasGenerator(graph)
    input_lines = []
    input_names = []
    for v in graph.inputs:
        name = gen.names.take(v.name)
        gen.values[v] = name
        input_names.append(name)
        shape = [d if isinstance(d, int) else None for d in v.shape] if v.shape is not None else None
        if shape is None:
            from ..errors import Unsupported

            raise Unsupported("keras", [("input", v.name, "a graph input of unknown rank")])
        if len(shape) == 0:
            from ..errors import Unsupported

            raise Unsupported("keras", [("input", v.name, "a rank-0 (scalar) graph input: every Keras model input has "
                                                          "a batch axis")])
        dtype = KERAS_DTYPES.get(v.dtype.value, "float32")
        extra = f", dtype={dtype!r}" if dtype != "float32" else ""
        batch = f", batch_size={shape[0]}" if shape[0] is not None else ""  # a varying batch: any size
        layer_name = _input_layer_name(v.name)
        input_lines.append(f"{name} = keras.Input(shape={tuple(shape[1:])}{batch}, name={layer_name!r}{extra})")
    _outputs_depend_on_inputs(graph)
    gen.run()
    outs = [gen.expr(v) for v in graph.outputs]
    outs = _outputs_of_their_own(gen, graph, outs)
    gen.release_weights()
    ins = input_names[0] if len(input_names) == 1 else "[" + ", ".join(input_names) + "]"
    ret = outs[0] if len(outs) == 1 else "[" + ", ".join(outs) + "]"
    model_name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in title)

    doc = interface_doc(graph, interface, "keras", title, origin, source_layout)
    lines = [f'"""{doc}"""', "", "import os", "", "import keras", "import numpy as np", "from keras import layers, ops", "",
             "HERE = os.path.dirname(os.path.abspath(__file__))", "",
             *[HELPERS[h] for h in HELPERS if h in gen.helpers], "",
             "def build() -> keras.Model:", '    """The model\'s structure (weights are random until load())."""']
    if gen.constants:
        lines.append('    C = np.load(os.path.join(HERE, "constants.npz"))')
    lines += [f"    {line}" for line in input_lines]
    lines += [f"    {line}" for line in gen.lines]
    lines += [f"    return keras.Model(inputs={ins}, outputs={ret}, name={model_name!r})", "", "",
              'def load(weights: str = os.path.join(HERE, "model.weights.h5")) -> keras.Model:',
              '    """Build the model and load its weights."""', "    model = build()", "    model.load_weights(weights)",
              "    return model", ""]
    out_dir = Path(out_dir)
    (out_dir / "model.py").write_text("\n".join(lines))
    files = ["model.py", "model.weights.h5"]
    if gen.constants:
        np.savez(out_dir / "constants.npz", **gen.constants)
        files.append("constants.npz")

    params = int(sum(w.size for ws in gen.layer_weights.values() for w in ws))
    weight_bytes = sum(w.nbytes for ws in gen.layer_weights.values() for w in ws)
    note = _save_weights(out_dir, gen.layer_weights, files)
    if weight_bytes >= COLLECT_BYTES:  # the Keras model's reference cycles would keep its weights alive
        gc.collect()
    return {"files": files, "node_vars": gen.node_vars, "parameters": params, "note": note}


def _input_layer_name(name: str) -> str:
    """The input's name, unless it is the name Keras gives one of its own operations (an input
    called ``split`` beside ``ops.split``: keras.Model refuses two layers of one name); then
    ``NAME_input``.  The model takes its inputs by position, so nothing else changes."""
    from keras import ops

    return f"{name}_input" if callable(getattr(ops, name, None)) else name


def _outputs_of_their_own(gen: KerasGenerator, graph: ir.Graph, outs: list[str]) -> list[str]:
    """Model outputs made by one operation (both halves of a Split) share its name, which
    ``keras.Model`` refuses: each gets an ``Identity`` layer named after the output."""
    makers = [v.producer() for v in graph.outputs]
    own = []
    for value, expr, maker in zip(graph.outputs, outs, makers):
        if maker is not None and makers.count(maker) > 1:
            name = gen.add_layer(value.name or "output", [])
            var = gen.names.take(value.name or "output")
            gen.emit(f"{var} = layers.Identity(name={name!r})({expr})", "its own name: outputs of one operation")
            expr = var
        own.append(expr)
    return own


def _outputs_depend_on_inputs(graph: ir.Graph) -> None:
    """A functional Keras model's outputs are computed from its inputs: refuse a constant one."""
    from ..errors import Unsupported
    from .ops.gather import reaches_graph_input

    inputs = set(graph.inputs)
    constant = [v.name for v in graph.outputs if not reaches_graph_input(v, inputs)]
    if constant:
        raise Unsupported("keras", [("output", name, "a constant output (it depends on no input), which a functional "
                                                     "Keras model cannot return") for name in constant])


def _save_weights(out_dir: Path, layer_weights: dict[str, list[np.ndarray]], files: list[str]) -> str | None:
    """Build the generated model, set its weights, save ``model.weights.h5`` (what ``load()`` reads).

    ``layer_weights`` is emptied as the weights are set, so the Keras variables are then
    the only full copy.  The build and the save are timed into ``SAVE_PROFILE`` (``--profile``)."""
    import time

    start = time.perf_counter()
    built = import_file(out_dir / "model.py", "_pipeline_generated").build()
    SAVE_PROFILE["keras_build"] = time.perf_counter() - start
    start = time.perf_counter()
    while layer_weights:
        name, weights = layer_weights.popitem()
        layer = built.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]  # shapes only: get_weights() would copy them
        got = [tuple(w.shape) for w in weights]
        if expected != got:
            raise RuntimeError(f"layer {name}: weight shapes {got} do not fit the layer's {expected}")
        layer.set_weights(weights)
    SAVE_PROFILE["keras_set_weights"] = time.perf_counter() - start
    start = time.perf_counter()
    built.save_weights(str(out_dir / "model.weights.h5"))
    SAVE_PROFILE["keras_save"] = time.perf_counter() - start
    return None


# Seconds of the last ``_save_weights``'s steps, read by convert's ``--profile``.
SAVE_PROFILE: dict[str, float] = {}
