"""``python -m pipeline explain "LAYER" --input-shape D0,D1,...``: one layer, both frameworks.

The expression is parsed, never evaluated: it must be a single call of a
constructor under ``keras.layers`` (also ``tf.keras.layers``, ``layers``) or
``torch.nn`` (also ``nn``), with literal arguments only.  The layer is built
with random weights, converted through the real pipeline, and the answer is
read off the generated code and the report.
"""

from __future__ import annotations

import ast
import re
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

KERAS_PREFIXES = ("keras.layers", "tf.keras.layers", "layers", "tensorflow.keras.layers", "keras.src.layers")
TORCH_PREFIXES = ("torch.nn", "nn")


@dataclass
class LayerCall:
    framework: str  # "keras" | "torch"
    cls: str
    args: list
    kwargs: dict
    text: str


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def parse_layer(text: str) -> LayerCall:
    """Parse ``keras.layers.Conv1D(...)`` / ``torch.nn.Conv1d(...)`` without executing anything."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise BadInput(f"not a Python expression: {exc.msg} (column {exc.offset})") from exc
    call = tree.body
    if not isinstance(call, ast.Call):
        raise BadInput("expected one layer constructor call, e.g. keras.layers.Conv1D(64, 3)")
    name = _dotted(call.func)
    if name is None:
        raise BadInput("the called object must be a dotted name like keras.layers.Conv1D")
    prefix, _, cls = name.rpartition(".")
    if prefix in KERAS_PREFIXES:
        framework = "keras"
    elif prefix in TORCH_PREFIXES:
        framework = "torch"
    else:
        raise BadInput(f"{name}: only constructors under keras.layers or torch.nn are explained")
    if not cls[:1].isupper():
        raise BadInput(f"{name}: expected a layer class (capitalized), not a function")
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except ValueError as exc:
        raise BadInput("arguments must be literals (numbers, strings, tuples, lists, True/False/None)") from exc
    if any(k.arg is None for k in call.keywords):
        raise BadInput("**kwargs is not allowed; write the arguments out")
    return LayerCall(framework, cls, args, kwargs, text.strip())


def _build(layer: LayerCall):
    if layer.framework == "keras":
        from .quiet import import_tensorflow

        _, keras = import_tensorflow()
        cls = getattr(keras.layers, layer.cls, None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
            raise BadInput(f"keras.layers.{layer.cls} is not a Keras layer class")
    else:
        from .quiet import import_torch

        torch = import_torch()
        cls = getattr(torch.nn, layer.cls, None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
            raise BadInput(f"torch.nn.{layer.cls} is not a torch.nn module class")
    try:
        return cls(*layer.args, **layer.kwargs)
    except Exception as exc:
        raise BadInput(f"{layer.text}: the constructor rejected its arguments: {exc}") from exc


def _write_factory(folder: Path, layer: LayerCall, shape: tuple[int, ...]) -> str:
    """A factory file that rebuilds the layer from its (literal) arguments, with random weights."""
    call_args = ", ".join([repr(a) for a in layer.args] + [f"{k}={v!r}" for k, v in layer.kwargs.items()])
    if layer.framework == "keras":
        body = f"""
            import keras
            import numpy as np

            def build():
                keras.utils.set_random_seed(0)
                x = keras.Input(shape={tuple(shape[1:])}, batch_size={shape[0]}, name="x")
                layer = keras.layers.{layer.cls}({call_args})
                model = keras.Model(x, layer(x))
                rng = np.random.default_rng(0)
                layer.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in layer.get_weights()])
                return model
        """
    else:
        body = f"""
            import torch
            from torch import nn

            class Layer(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.layer = nn.{layer.cls}({call_args})

                def forward(self, x):
                    return self.layer(x)

            def build():
                torch.manual_seed(0)
                model = Layer()
                with torch.no_grad():
                    for p in model.parameters():
                        p.normal_(0, 0.5)
                return model.eval()
        """
    path = folder / "layer_factory.py"
    path.write_text(textwrap.dedent(body))
    return f"{path}:build"


def _interesting_lines(code: str, target: str) -> tuple[list[str], list[str]]:
    """Constructor lines and forward/build statements from a generated model.py."""
    ctor, calls = [], []
    if target == "torch":
        init = code.split("def __init__(self):", 1)[1].split("def forward", 1)[0]
        ctor = [ln.strip() for ln in init.splitlines() if ln.strip().startswith("self.") and "super()" not in ln]
        fwd = code.split("def forward", 1)[1].split("\ndef load", 1)[0]
        calls = [ln.strip() for ln in fwd.splitlines()[1:] if ln.strip()]
    else:
        body = code.split("def build()", 1)[1].split("\ndef load", 1)[0]
        calls = [ln.strip() for ln in body.splitlines()[2:] if ln.strip() and not ln.strip().startswith("C =")]
    return ctor, calls


def explain(expression: str, input_shape: tuple[int, ...], out=print) -> dict:
    from .convert import Options, convert
    from .spec import InputSpec

    layer = parse_layer(expression)
    _build(layer)  # validate the class and arguments before any conversion work
    target = "torch" if layer.framework == "keras" else "keras"
    with tempfile.TemporaryDirectory(prefix="pipeline-explain-") as tmp:
        tmp_path = Path(tmp)
        factory = _write_factory(tmp_path, layer, input_shape)
        result = convert(Options(model=factory, to=target, out=str(tmp_path / "out"),
                                 inputs=[InputSpec("x", tuple(input_shape))]))
        code = (result.out_dir / "model.py").read_text()
        report = result.report
    ctor, calls = _interesting_lines(code, target)
    par = report["parity"]["outputs"][0]
    in_shape = tuple(input_shape)
    out_shape = tuple(par["shape"])
    src_name = "Keras" if layer.framework == "keras" else "PyTorch"
    dst_name = "PyTorch" if target == "torch" else "Keras"
    lines = [f"{src_name}: {layer.text}", f"  input {in_shape} -> output {out_shape}", "",
             f"{dst_name} equivalent (from the generated model.py):"]
    lines += [f"  {ln}" for ln in ctor]
    lines += [f"  {ln}" for ln in calls]
    lines += ["", f"  shapes: {dst_name} sees the same input {in_shape} and returns {out_shape} (source layout kept)"]
    lines += _weights_hint(layer, ctor, calls)
    note = _padding_note(calls + ctor)
    if note:
        lines += ["", note]
    lines += ["", f"checked: max abs error {par['max_abs_err']:.3g} (max rel {par['max_rel_err']:.3g}) "
                  f"on seeded random input, {'PASS' if report['parity']['passed'] else 'FAIL'}"]
    for ln in lines:
        out(ln)
    return {"report": report, "code": code, "lines": lines}


def _weights_hint(layer: LayerCall, ctor: list[str], calls: list[str]) -> list[str]:
    text = "\n".join(ctor + calls)
    if layer.framework == "keras" and re.search(r"nn\.Conv(1|2|3)d\(", text) and "Depthwise" not in layer.cls:
        nd = int(re.search(r"nn\.Conv(\d)d", text).group(1))
        axes = ", ".join(str(i) for i in range(nd))
        name = re.search(r"self\.(\w+) = nn\.Conv", text).group(1)
        return ["", "  weights: Keras kernel (k..., in, out) -> PyTorch (out, in, k...):",
                f"    torch_model.{name}.weight.data = torch.from_numpy(kernel.transpose({nd + 1}, {nd}, {axes}))"]
    if layer.framework == "keras" and "nn.Linear(" in text:
        name = re.search(r"self\.(\w+) = nn\.Linear", text).group(1)
        return ["", "  weights: Keras Dense kernel (in, out) -> PyTorch Linear (out, in):",
                f"    torch_model.{name}.weight.data = torch.from_numpy(kernel.T)"]
    if layer.framework == "torch" and re.search(r"layers\.Conv(1|2|3)D\(", text):
        nd = int(re.search(r"layers\.Conv(\d)D", text).group(1))
        axes = ", ".join(str(i + 2) for i in range(nd))
        bias = "" if "use_bias=False" in text else ", conv.bias.detach().numpy()"
        return ["", "  weights: PyTorch (out, in, k...) -> Keras kernel (k..., in, out):",
                f"    layer.set_weights([conv.weight.detach().numpy().transpose({axes}, 1, 0){bias}])"]
    if layer.framework == "torch" and "layers.Dense(" in text:
        bias = "" if "use_bias=False" in text else ", linear.bias.detach().numpy()"
        return ["", "  weights: PyTorch Linear (out, in) -> Keras Dense kernel (in, out):",
                f"    layer.set_weights([linear.weight.detach().numpy().T{bias}])"]
    return []


def _padding_note(lines: list[str]) -> str | None:
    for ln in lines:
        m = re.search(r"ZeroPad(?:ding)?(\d)[dD]\((.*?)(?:, name=.*)?\)\(?", ln)
        if m:
            return (f"why the extra padding: Keras 'same' pads asymmetrically here ({m.group(2)}: the extra row/column "
                    "goes at the end, because the stride is > 1 or the kernel is even), which a single symmetric "
                    "padding= number cannot express, so the padding is a separate layer before the conv.")
    return None
