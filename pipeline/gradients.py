"""Fine-tuning checks: what the source trains, what its eval-mode export dropped, and
gradient parity.

Parity proves the converted model computes the source's outputs; a user who keeps training
it also needs its gradients.  For the seeded parity inputs, the scalar

    f = sum over outputs i of sum(output_i * R_i),   R_i ~ N(0, 1) seeded by --seed

is differentiated in the source (eval mode, as parity runs it) and in the generated model,
with respect to every floating-point input and every trainable weight, and the two compared.

Weights are matched by value: a converted weight is the source weight whose values it equals
exactly under one permutation of its axes (PyTorch ``(out, in, k...)`` against Keras
``(k..., in, out)``, a Dense kernel against a Linear weight, ``--layout target``).  The
exporters rename weights (tf2onnx calls a Keras kernel ``model/conv_1/convolution/ReadVariableOp:0``)
and normalize folds and transposes them, so names alone cannot pair them; values can, and a
pairing is only made when it is unique (among equal candidates, the one whose layer name
matches).  What pairs with nothing, or with more than one weight, is reported as unmapped:
a folded BatchNorm, a Keras bias that was all zeros (the export drops it), gate-reordered
recurrent weights.  A source weight split into several converted ones is compared with the
sum of their gradients (the chain rule).

A gradient mismatch is reported (``report["gradients"]``, a line on stderr) but does not fail
parity: the exit code promises that the converted model computes the source's outputs, which
a gradient check cannot overturn, and a weight can legitimately differ in gradient only
where it is unmapped.  See README, "Fine-tuning".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRAD_RTOL = 1e-3  # an element passes when |converted - source| <= atol + GRAD_RTOL * max|source gradient|
PERMUTABLE_RANK = 5  # weights of higher rank are matched without a permutation only


@dataclass
class SourceSide:
    """What the conversion takes from the source model while it is loaded (``capture``)."""

    frozen: set[str] = field(default_factory=set)  # ONNX initializer names the source does not train
    dropout: list[dict] = field(default_factory=list)  # {"layer", "type", "rate"} per dropout layer
    gradients: dict | None = None  # see source_gradients
    skipped: str | None = None  # why there are no source gradients


def capture(source, inputs: dict[str, np.ndarray], seed: int, gradients: bool) -> SourceSide:
    """Everything the fine-tuning checks need from ``source`` before convert.py frees it."""
    side = SourceSide(frozen=frozen_names(source), dropout=dropout_layers(source))
    if not gradients:
        return side
    if source.framework not in ("torch", "keras"):
        side.skipped = f"gradients are taken from PyTorch and Keras sources only, not {source.framework}"
        return side
    try:
        side.gradients = source_gradients(source, inputs, seed)
    except Exception as exc:  # a diagnosis beside parity: the conversion goes on without it
        side.skipped = f"the source's gradients could not be taken: {type(exc).__name__}: {str(exc)[:200]}"
    return side


def _torch_module(source):
    """The source's ``nn.Module``: a ``.pt2`` file's is the ExportedProgram's ``module()``."""
    obj = source.obj
    return obj if hasattr(obj, "named_parameters") else getattr(obj, "module", obj)


def frozen_names(source) -> set[str]:
    """Names of the PyTorch source's buffers and frozen parameters: its exporter names ONNX
    initializers after them, and the importers keep those tensors out of training."""
    model = _torch_module(source) if source.framework == "torch" else None
    if not hasattr(model, "named_buffers"):
        return set()
    return {n for n, _ in model.named_buffers()} | {n for n, p in model.named_parameters() if not p.requires_grad}


def dropout_layers(source) -> list[dict]:
    """The source's dropout (and training-only noise) layers, which an eval-mode export removes."""
    found = []
    if source.framework == "torch":
        from torch import nn

        model = _torch_module(source)
        for name, m in (model.named_modules() if hasattr(model, "named_modules") else ()):
            if isinstance(m, (nn.modules.dropout._DropoutNd,)):
                found.append({"layer": name, "type": type(m).__name__, "rate": float(m.p)})
    elif source.framework == "keras":
        import keras

        kinds = tuple(getattr(keras.layers, k) for k in ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                                         "SpatialDropout3D", "GaussianDropout", "AlphaDropout",
                                                         "GaussianNoise") if hasattr(keras.layers, k))
        walk = getattr(source.obj, "_flatten_layers", None)  # every nested layer (Keras 3)
        for layer in walk(include_self=False, recursive=True) if walk else source.obj.layers:
            if isinstance(layer, kinds):
                rate = getattr(layer, "rate", getattr(layer, "stddev", None))
                found.append({"layer": layer.name, "type": type(layer).__name__,
                              "rate": None if rate is None else float(rate)})
    return found


def dropout_note(side: SourceSide) -> str | None:
    """The report's note on dropout the eval-mode export removed, None when the source had none."""
    if not side.dropout:
        return None
    listed = ", ".join(f"{d['layer']} ({d['type']}" + (f", rate {d['rate']:g})" if d["rate"] is not None else ")")
                       for d in side.dropout[:10])
    more = f" and {len(side.dropout) - 10} more" if len(side.dropout) > 10 else ""
    return (f"dropout removed: the source has {len(side.dropout)} dropout layer(s), {listed}{more}, which the "
            "eval-mode export drops; model.py computes the eval-mode function and has none (add them back "
            "before fine-tuning if you want them)")


def output_weights(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """The fixed random tensors ``R_i`` of ``f`` (source layout), one per output."""
    rng = np.random.default_rng(seed + 7919)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _floating(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def source_gradients(source, inputs: dict[str, np.ndarray], seed: int) -> dict:
    """``{"inputs": {name: grad}, "weights": {name: (value, grad)}, "R": [...]}`` of the source,
    eval mode, inputs in the source's order."""
    from .parity import _as_list

    names = [s.name for s in source.inputs]
    xs = [inputs[n] for n in names]
    if source.framework == "torch":
        import torch

        model = _torch_module(source)
        args = [torch.from_numpy(x.copy()).requires_grad_(_floating(x)) for x in xs]
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        outs = _as_list(model(*args), sort_dicts=False)
        R = output_weights([tuple(o.shape) for o in outs], seed)
        f = sum((o * torch.from_numpy(r)).sum() for o, r in zip(outs, R) if o.is_floating_point())
        grads = torch.autograd.grad(f, [a for a in args if a.requires_grad] + [p for _, p in params],
                                    allow_unused=True)
        grads = [None if g is None else g.detach().numpy() for g in grads]
        floats = [n for n, x in zip(names, xs) if _floating(x)]
        g_in, g_w = grads[:len(floats)], grads[len(floats):]
        weights = {n: (p.detach().numpy().copy(), g) for (n, p), g in zip(params, g_w)}
    else:
        import tensorflow as tf

        model = source.obj
        ts = [tf.constant(x) for x in xs]
        floats = [n for n, x in zip(names, xs) if _floating(x)]
        watched = [t for t, x in zip(ts, xs) if _floating(x)]
        variables = list(model.trainable_weights)
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outs = _as_list(model(ts if len(ts) > 1 else ts[0], training=False))
            R = output_weights([tuple(o.shape) for o in outs], seed)
            f = tf.add_n([tf.reduce_sum(o * r) for o, r in zip(outs, R) if o.dtype.is_floating])
        grads = tape.gradient(f, watched + variables)
        grads = [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in grads]
        g_in, g_w = grads[:len(floats)], grads[len(floats):]
        weights = {v.path: (np.asarray(v.numpy()).copy(), g) for v, g in zip(variables, g_w)}
    return {"inputs": dict(zip(floats, g_in)), "weights": weights, "R": R, "seed": seed}


def converted_gradients(model, target: str, feed: list[np.ndarray], input_order: list[str],
                        R: list[np.ndarray]) -> dict:
    """The same for a loaded generated model; ``R`` already in its output layout."""
    from .parity import _as_list

    floats = [n for n, x in zip(input_order, feed) if _floating(x)]
    if target == "torch":
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(_floating(x)) for x in feed]
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        outs = _as_list(model(*args))
        f = sum((o * torch.from_numpy(np.ascontiguousarray(r))).sum() for o, r in zip(outs, R) if o.is_floating_point())
        grads = torch.autograd.grad(f, [a for a in args if a.requires_grad] + [p for _, p in params],
                                    allow_unused=True)
        grads = [None if g is None else g.detach().numpy() for g in grads]
        weights = {n: (p.detach().numpy(), g) for (n, p), g in zip(params, grads[len(floats):])}
    else:
        import tensorflow as tf

        ts = [tf.constant(x) for x in feed]
        watched = [t for t, x in zip(ts, feed) if _floating(x)]
        variables = list(model.trainable_weights)
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outs = _as_list(model(ts if len(ts) > 1 else ts[0], training=False))
            f = tf.add_n([tf.reduce_sum(o * r) for o, r in zip(outs, R) if o.dtype.is_floating])
        grads = tape.gradient(f, watched + variables)
        grads = [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in grads]
        weights = {v.path: (np.asarray(v.numpy()), g) for v, g in zip(variables, grads[len(floats):])}
    return {"inputs": dict(zip(floats, grads[:len(floats)])), "weights": weights}


# -- pairing weights ---------------------------------------------------------------------------


def _layer_of(name: str) -> str:
    """``conv1.weight`` / ``conv1/kernel`` / ``conv1_1.weight`` -> ``conv1``: the layer a weight
    belongs to, as the importers name layers (a ``_N`` suffix for a repeated name dropped)."""
    import re

    base = name.replace("/", ".").rsplit(".", 1)[0]
    return re.sub(r"_\d+$", "", re.sub(r"\W", "_", base))


def _fingerprint(a: np.ndarray) -> tuple:
    """Invariant under axis permutations, and exact (a sum would depend on the order it is
    taken in): the sorted shape, the smallest and the largest element."""
    if a.size == 0:
        return tuple(sorted(a.shape)), None, None
    return tuple(sorted(a.shape)), float(np.min(a)), float(np.max(a))


def _perms(src: np.ndarray, conv: np.ndarray):
    """Axis permutations ``p`` with ``src.transpose(p).shape == conv.shape``, identity first."""
    if src.shape == conv.shape:
        yield tuple(range(src.ndim))
    if src.ndim > PERMUTABLE_RANK:
        return
    for p in itertools.permutations(range(src.ndim)):
        if p != tuple(range(src.ndim)) and tuple(src.shape[i] for i in p) == conv.shape:
            yield p


def pair_weights(source: dict, converted: dict) -> tuple[dict, list[str], list[str]]:
    """``{converted name: (source name, perm)}``, the unmapped source and converted names.

    ``source[n] = (value, grad)``; ``converted[n]`` likewise; ``conv = src.transpose(perm)``."""
    by_print: dict[tuple, list[str]] = {}
    for n, (v, _) in source.items():
        by_print.setdefault(_fingerprint(v), []).append(n)
    pairs, unmapped_conv = {}, []
    for cn, (cv, _) in converted.items():
        fp = _fingerprint(cv)
        found = [(sn, p) for sn in by_print.get(fp, [])
                 for p in _perms(source[sn][0], cv) if np.array_equal(source[sn][0].transpose(p), cv)]
        if len({sn for sn, _ in found}) > 1:  # equal values (a fresh model's ones and zeros): its layer's name decides
            found = [(sn, p) for sn, p in found if _layer_of(sn) == _layer_of(cn)]
        if len({sn for sn, _ in found}) == 1:
            pairs[cn] = found[0]
        else:
            unmapped_conv.append(cn)
    mapped_src = {sn for sn, _ in pairs.values()}
    return pairs, [n for n in source if n not in mapped_src], unmapped_conv


# -- the check -----------------------------------------------------------------------------------


def _compare(name: str, ref: np.ndarray | None, got: np.ndarray | None, atol: float) -> dict:
    ref = np.zeros_like(got) if ref is None and got is not None else ref
    got = np.zeros_like(ref) if got is None and ref is not None else got
    if ref is None:
        return {"name": name, "max_abs_err": 0.0, "max_rel_err": 0.0, "passed": True}
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return {"name": name, "passed": False, "error": f"shape {list(got.shape)}, expected {list(ref.shape)}"}
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return {"name": name, "max_abs_err": err, "max_rel_err": err / scale if scale else err,
            "passed": bool(err <= atol + GRAD_RTOL * scale)}


def check(side: SourceSide, out_dir: Path, target: str, interface: dict, inputs: dict[str, np.ndarray],
          input_order: list[str], output_names: list[str], atol: float) -> dict:
    """``report["gradients"]``: input and weight gradients of the generated model against the source's."""
    if side.gradients is None:
        return {"ran": False, "reason": side.skipped or "not asked for (--gradients)"}
    from .parity import load_generated
    from .referee import laid_out_inputs

    src = side.gradients
    perms_in, perms_out = interface.get("inputs", {}), interface.get("outputs", {})
    feed = laid_out_inputs(inputs, interface)
    R = [r.transpose(perms_out[n]) if n in perms_out else r for r, n in zip(src["R"], output_names)]
    model = load_generated(Path(out_dir) / "model.py")
    conv = converted_gradients(model, target, [feed[n] for n in input_order], input_order, R)

    rows_in = []
    for name, g in src["inputs"].items():
        got = conv["inputs"].get(name)
        if got is not None and name in perms_in:
            got = got.transpose(np.argsort(perms_in[name]))  # back to the source's layout
        rows_in.append(_compare(name, g, got, atol))

    pairs, unmapped_src, unmapped_conv = pair_weights(src["weights"], conv["weights"])
    by_source: dict[str, list[tuple[str, tuple]]] = {}
    for cn, (sn, p) in pairs.items():
        by_source.setdefault(sn, []).append((cn, p))
    rows_w = []
    for sn, convs in by_source.items():
        total = None
        for cn, p in convs:
            g = conv["weights"][cn][1]
            g = None if g is None else g.transpose(np.argsort(p))
            total = g if total is None else (total if g is None else total + g)
        row = _compare(sn, src["weights"][sn][1], total, atol)
        row["converted"] = [cn for cn, _ in convs]
        row["permutation"] = [list(p) for _, p in convs]
        rows_w.append(row)
    failed = [r["name"] for r in rows_in + rows_w if not r["passed"]]
    problems = [f"gradient of '{n}' differs from the source's" for n in failed]
    return {"ran": True, "passed": not failed,
            "function": f"sum(output * R) over the outputs, R ~ N(0, 1) (seed {src['seed']})",
            "rule": f"|converted - source| <= atol + {GRAD_RTOL:g} * max|source gradient| per tensor",
            "inputs": rows_in, "weights": rows_w,
            "unmapped": {"source": unmapped_src, "converted": unmapped_conv}, "problems": problems}
