"""Stage 3 (Keras target): a normalized ONNX graph -> ``model.py`` + weights.

The generated file has ``build()``, a functional Keras model of native layers
and ``keras.ops`` calls, and ``load()``, which builds it and loads
``model.weights.h5``.  Constants that are not layer weights live in
``constants.npz``.  Each weight is written once: no ``model.keras`` beside the
``.weights.h5`` (it would hold every weight again; ``load()`` gives the same model).

The model trains: a floating-point tensor of the graph no layer holds (a bare
``nn.Parameter`` of a PyTorch source) and a functional convolution's kernel and bias are the
trainable weight of a ``Weight`` layer, so ``model.trainable_weights`` holds every weight.
Integer tensors, those the source does not train (``FROZEN``, see to_torch) and arrays an
emitter computes (an LRN window, a pooling's rescale factors) stay numpy constants in
``constants.npz``.
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
from .to_torch import FROZEN, of_the_graph, trainable

# ``keras_emit.new_constant`` names of a functional convolution's kernel and bias (conv.py,
# conv_transpose.py): the source's weights, laid out for ``ops.conv``.
FUNCTIONAL_WEIGHT = ("_kernel", "_bias")

WEIGHT_LAYER = '''
@keras.saving.register_keras_serializable(package="pipeline")
class Weight(layers.Layer):
    """A trainable tensor no layer of Keras holds; called on a model input only to be part of
    the functional graph (its value does not depend on it)."""

    def __init__(self, shape, value_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.shape_, self.value_dtype = tuple(shape), value_dtype
        self.value = self.add_weight(shape=self.shape_, dtype=value_dtype, initializer="zeros", name="value")

    def call(self, anchor):
        return ops.convert_to_tensor(self.value)

    def compute_output_shape(self, input_shape):
        return self.shape_

    def get_config(self):
        return {**super().get_config(), "shape": self.shape_, "value_dtype": self.value_dtype}
'''


class KerasGenerator(Generator):
    def __init__(self, graph: ir.Graph):
        super().__init__(graph, "keras", reserved=("keras", "layers", "ops", "np", "os", "C", "HERE", "Weight", *HELPERS))
        self.layer_weights: dict[str, list[np.ndarray]] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.helpers: set[str] = set()  # keras_emit.HELPERS the model uses
        self.frozen_names: set[str] = set(graph.meta.get(FROZEN, ()))
        self.weight_layers: dict[str, str] = {}  # variable -> layer name of each Weight layer written

    def add_layer(self, hint: str, weights: list) -> str:
        name = self.layer_names.take(hint)
        if weights:
            self.layer_weights[name] = [np.ascontiguousarray(w) for w in weights]
        return name

    def constant(self, value: ir.Value, arr: np.ndarray) -> str:
        if arr.ndim == 0:
            return py_literal(arr)
        weight = of_the_graph(value) or value.name.endswith(FUNCTIONAL_WEIGHT)
        if trainable(arr) and weight and value.name not in self.frozen_names and self.graph.inputs:
            return self.weight(value, arr)
        key = self.names.take(self.value_hint(value) if value.name else "const")
        self.constants[key] = np.ascontiguousarray(arr)
        expr = f'C["{key}"]'
        self.values[value] = expr
        return expr


    def weight(self, value: ir.Value, arr: np.ndarray) -> str:
        """``arr`` as a ``Weight`` layer's trainable variable, called on the first model input."""
        hint = self.value_hint(value) if value.name else "const"
        name = self.add_layer(_weight_layer_name(hint), [arr])
        var = self.names.take(hint)
        dtype = KERAS_DTYPES.get(ir.DataType.from_numpy(arr.dtype).value, "float32")
        anchor = self.values[self.graph.inputs[0]]
        self.emit(f"{var} = Weight({tuple(arr.shape)}, {dtype!r}, name={name!r})({anchor})", "trainable")
        self.weight_layers[var] = name
        self.values[value] = var
        return var


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
    _drop_unread_weights(gen, outs)
    gen.release_weights()
    ins = input_names[0] if len(input_names) == 1 else "[" + ", ".join(input_names) + "]"
    ret = outs[0] if len(outs) == 1 else "[" + ", ".join(outs) + "]"
    model_name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in title)

    doc = interface_doc(graph, interface, "keras", title, origin, source_layout)
    lines = [f'"""{doc}"""', "", "import os", "", "import keras", "import numpy as np", "from keras import layers, ops", "",
             "HERE = os.path.dirname(os.path.abspath(__file__))", "",
             *[HELPERS[h] for h in HELPERS if h in gen.helpers], *([WEIGHT_LAYER] if gen.weight_layers else []), "",
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


def _weight_layer_name(hint: str) -> str:
    """``hint``, or ``hint_weight`` where Keras could name one of its own operations so
    (``mean``, ``add_1``): keras.Model refuses two operations of one name."""
    import re

    from keras import ops

    base = re.sub(r"_\d+$", "", hint)
    return f"{hint}_weight" if callable(getattr(ops, base, None)) else hint


def _drop_unread_weights(gen: KerasGenerator, outs: list[str]) -> None:
    """Remove the ``Weight`` layers no statement reads: a translator may ask for a constant's
    expression and then write a layer that holds it (Gather -> Embedding), and a functional
    model leaves such a layer out, so its weights could not be set."""
    import re

    for var, name in list(gen.weight_layers.items()):
        definition = f"{var} = Weight("
        text = "\n".join([li for li in gen.lines if not li.startswith(definition)] + outs)
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)  # a layer's name (name='v_2') is no use of v_2
        if re.search(rf"\b{re.escape(var)}\b", text):
            continue
        gen.lines = [li for li in gen.lines if not li.startswith(f"{var} = Weight(")]
        gen.layer_weights.pop(name, None)
        del gen.weight_layers[var]


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
