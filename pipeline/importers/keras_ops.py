"""ONNX op -> Keras 3 source, one small translator per op.

Layout-sensitive ops (Conv, pooling, BatchNormalization, ...) arrive wrapped
by the ``ChannelsLast`` pass as ``T_pin(cl->cf) -> op -> T_pin(cf->cl)``.  The
pinned transposes are not emitted: their outputs alias their inputs, so the
Keras layer reads and writes channels-last tensors, as Keras layers do.
Everything else maps to ``keras.ops`` on the tensors as they are.
"""

from __future__ import annotations

import numpy as np

from ..normalize.graph import PIN_IN, PIN_OUT, const_array, pin_role, static_shape
from ..normalize.patterns import match_group_norm, module_name
from ..normalize.padding import ceil_end_pads, mean_divisor, same_pads, tap_pool
from .codegen import Translation, embedding_lookup, layout_note, plan_gather_nd, py_literal, registry, shape_literal

OPS, register = registry()

from .keras_emit import KERAS_DTYPES  # noqa: E402,F401 (to_keras reads it here until the op families land)
from .keras_emit import add as _add  # noqa: E402
from .keras_emit import channels_last as _channels_last  # noqa: E402
from .keras_emit import new_constant as _new_constant  # noqa: E402
from .keras_emit import pool_pad as _pool_pad  # noqa: E402
from .keras_emit import spatial_padding as _spatial_padding  # noqa: E402
from .keras_emit import tf_3d_same_shifts as _tf_3d_same_shifts  # noqa: E402,F401
from .keras_emit import tuple_or_int as _ints  # noqa: E402


def _layer(t: Translation, cls: str, args: list[str], weights: list | None, x: str, hint: str | None = None) -> str:
    from .keras_emit import layer

    return layer(t, cls, args, weights, x, name=hint)

@register("Transpose")
def transpose(t: Translation) -> None:
    role = pin_role(t.node)
    if role in (PIN_IN, PIN_OUT):
        t.alias(t.inp(0))  # the wrapped op works channels-last: no data movement
        return
    perm = t.ints("perm") or list(reversed(range(len(t.shape(0)))))
    t.assign(f"ops.transpose({t.inp(0)}, {tuple(perm)})", comment=layout_note(t.node, perm))


@register("Conv")
def conv(t: Translation) -> None:
    _channels_last(t)
    w, b = t.weight_and_bias()
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D convolution")
    group = t.int("group", 1)
    kernel = list(w.shape[2:])
    strides = t.ints("strides", [1] * nd)
    dil = t.ints("dilations", [1] * nd)
    pads = t.ints("pads", [0] * (2 * nd))
    subsample = None
    if any(s > 1 for s in strides) and any(d > 1 for d in dil):
        # Keras refuses strides with dilation: the stride-1 dilated convolution, then every
        # s-th output — output i of the strided one is output i * s of the stride-1 one
        subsample, strides = strides, [1] * nd
    out_ch, in_per_group = w.shape[0], w.shape[1]
    in_ch = in_per_group * group
    # TF's CPU DepthwiseConv2dNative needs equal strides: otherwise a grouped Conv2D
    depthwise = group == in_ch and in_per_group == 1 and group > 1 and nd in (1, 2) and len(set(strides)) == 1
    # DepthwiseConv1D has no padding="causal": an explicit ZeroPadding1D instead
    padding, x = _spatial_padding(t, t.inp(0), nd, pads, kernel, strides, dil, allow_causal=not depthwise)
    spatial = list(range(2, 2 + nd))
    common = [f"strides={_ints(strides)}"] if any(s != 1 for s in strides) else []
    if padding != "valid":
        common.append(f"padding={padding!r}")
    if any(d != 1 for d in dil):
        common.append(f"dilation_rate={_ints(dil)}")
    if b is None:
        common.append("use_bias=False")
    if depthwise:
        mult = out_ch // in_ch
        # ONNX output channel c*mult + m reads input channel c -> Keras kernel[..., c, m].
        kernel_w = w.reshape(in_ch, mult, *kernel).transpose(*[i + 2 for i in range(nd)], 0, 1)
        args = [_ints(kernel)] + ([f"depth_multiplier={mult}"] if mult != 1 else []) + common
        weights = [kernel_w] + ([b] if b is not None else [])
        _assign_subsampled(t, _layer(t, f"DepthwiseConv{nd}D", args, weights, x), subsample)
        return
    kernel_w = w.transpose(*spatial, 1, 0)
    args = [str(out_ch), _ints(kernel)] + common
    if group != 1:
        args.append(f"groups={group}")
    weights = [kernel_w] + ([b] if b is not None else [])
    _assign_subsampled(t, _layer(t, f"Conv{nd}D", args, weights, x), subsample)


def _assign_subsampled(t: Translation, expr: str, strides: list[int] | None) -> None:
    """``expr`` (channels-last), keeping every ``strides[i]``-th position of spatial axis i if given."""
    if strides is None:
        t.assign(expr)
        return
    full = t.gen.names.take(t.layer_hint() + "_stride1")
    t.gen.emit(f"{full} = {expr}", f"stride 1: Keras has no strided dilated convolution; strides {tuple(strides)} next")
    steps = ", ".join(f"::{s}" if s != 1 else ":" for s in strides)
    t.assign(f"{full}[:, {steps}, :]")


@register("ConvTranspose")
def conv_transpose(t: Translation) -> None:
    _channels_last(t)
    w, b = t.weight_and_bias()
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D transposed convolution (Keras has none)")
    group = t.int("group", 1)
    kernel = list(w.shape[2:])
    strides = t.ints("strides", [1] * nd)
    dil = t.ints("dilations", [1] * nd)
    if any(d != 1 for d in dil):  # Keras refuses it with strides > 1, TF's CPU kernels always
        w, kernel = _zero_dilated(w, dil), [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        t.gen.emit(f"# {t.layer_hint()}: dilation {tuple(dil)} written into the kernel as zeros "
                   f"(TensorFlow's CPU kernels have no dilated transposed convolution)")
        dil = [1] * nd
    pads = t.ints("pads", [0] * (2 * nd))
    outpad = t.ints("output_padding", [0] * nd)
    begins, ends = pads[:nd], pads[nd:]
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    same = [k - s for k, s in zip(k_eff, strides)]  # Keras "same" crops k - s (TF: the odd one at the end)
    is_same = not any(outpad) and all(0 <= tot and bg == tot // 2 and en == tot - tot // 2
                                      for bg, en, tot in zip(begins, ends, same))
    # Otherwise Keras' output_padding= gives the exact length (n - 1) * s + k + output_padding
    # (without it, "valid" gives n * s when k < s); ONNX pads then crop that output.
    extra = [op - en for op, en in zip(outpad, ends)]  # what ONNX keeps beyond the full output
    if any(bg < 0 for bg in begins) or any(x >= s for x, s in zip(extra, strides)):
        _conv_transpose_window(t, w, b, group, kernel, strides, begins, extra)
        return
    keras_outpad = [max(x, 0) for x in extra]
    exact = not is_same and (any(keras_outpad) or any(k < s for k, s in zip(k_eff, strides)))
    args = [str(w.shape[1]), _ints(kernel)]
    if any(s != 1 for s in strides):
        args.append(f"strides={_ints(strides)}")
    if is_same and any(same):
        args.append("padding='same'")
    if exact:
        args.append(f"output_padding={_ints(keras_outpad)}")
    if any(d != 1 for d in dil):
        args.append(f"dilation_rate={_ints(dil)}")
    if b is None:
        args.append("use_bias=False")
    if group == 1:
        # ONNX (Cin, Cout, k...) -> Keras (k..., Cout, Cin)
        weights = [w.transpose(*range(2, 2 + nd), 1, 0)] + ([b] if b is not None else [])
        expr = _layer(t, f"Conv{nd}DTranspose", args, weights, t.inp(0))
    else:
        expr = _grouped_conv_transpose(t, w, b, group, args)
    crop = [(bg, max(-x, 0)) for bg, x in zip(begins, extra)]
    if is_same or not any(c for pair in crop for c in pair):
        t.assign(expr)
        return
    full = t.gen.names.take(t.layer_hint() + "_full")
    t.gen.emit(f"{full} = {expr}")
    cropping = crop[0] if nd == 1 else tuple(crop)
    name = t.gen.add_layer(t.layer_hint() + "_crop", [])
    t.assign(f"layers.Cropping{nd}D({cropping}, name={name!r})({full})", comment="ONNX pads crop the full output")


def _conv_transpose_window(t: Translation, w, b, group: int, kernel, strides, begins, extra) -> None:
    """ONNX keeps ``[b, full + extra)`` of the full transposed convolution, beyond what Keras'
    padding and output_padding reach (a negative begin pad, or more extension than a stride):
    the layer without bias ("valid": the full output, then zeros up to ``n * s`` where the
    kernel is shorter than the stride), sliced and zero-padded to that window, then the bias."""
    nd = len(kernel)
    args = [str(w.shape[1]), _ints(kernel)]
    if any(s != 1 for s in strides):
        args.append(f"strides={_ints(strides)}")
    args.append("use_bias=False")
    if group == 1:
        expr = _layer(t, f"Conv{nd}DTranspose", args, [w.transpose(*range(2, 2 + nd), 1, 0)], t.inp(0))
    else:
        expr = _grouped_conv_transpose(t, w, None, group, args)
    full = t.gen.names.take(t.layer_hint() + "_full")
    t.gen.emit(f"{full} = {expr}")
    sizes = t.shape(0)[2:]
    made = [(n - 1) * s + max(k, s) for n, k, s in zip(sizes, kernel, strides)]  # Keras' "valid" length
    stops = [(n - 1) * s + k + x for n, k, s, x in zip(sizes, kernel, strides, extra)]
    window = ", ".join(f"{max(bg, 0) or ''}:{min(stop, m) if stop < m else ''}"
                       for bg, stop, m in zip(begins, stops, made))
    expr = f"{full}[:, {window}, :]"
    widths = [(max(-bg, 0), max(stop - m, 0)) for bg, stop, m in zip(begins, stops, made)]
    if any(a or z for a, z in widths):
        expr = f"ops.pad({expr}, {[(0, 0)] + widths + [(0, 0)]})"
    if b is not None:
        import onnx_ir as ir

        bias = t.gen.constant(ir.Value(name=f"{t.layer_hint()}_bias"), np.ascontiguousarray(b.astype(np.float32)))
        expr = f"ops.add({expr}, {bias})"
    t.assign(expr, comment="ONNX's output window of the full transposed convolution: zeros beyond it, then the bias")


def _zero_dilated(w: np.ndarray, dil: list[int]) -> np.ndarray:
    """The kernel ``w`` (channels first, then k...) with ``d - 1`` zeros between taps on each axis.

    Spread this way, an undilated convolution (transposed or not) computes exactly what the
    dilated one computes with ``w``: the zero taps add nothing."""
    spread = np.zeros(w.shape[:2] + tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dil)), dtype=w.dtype)
    spread[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dil)] = w
    return spread


def _grouped_conv_transpose(t: Translation, w: np.ndarray, b: np.ndarray | None, group: int, args: list[str]) -> str:
    """Keras has no grouped transposed convolution: one layer per group on its slice of the
    channels, concatenated in group order (ONNX output channel g * Cout/G + j is group g's j)."""
    nd = w.ndim - 2
    cin, cout = w.shape[0] // group, w.shape[1]
    base = t.gen.layer_names.take(t.layer_hint())
    for g in range(group):
        per = w[g * cin:(g + 1) * cin].transpose(*range(2, 2 + nd), 1, 0)
        weights = [per] + ([b[g * cout:(g + 1) * cout]] if b is not None else [])
        if t.gen.add_layer(f"{base}_g{g}", weights) != f"{base}_g{g}":
            t.unsupported(f"layer names {base}_g* are taken")
    parts = t.gen.names.take(t.layer_hint() + "_groups")
    name = "name=f'" + base + "_g{g}'"  # base is an identifier: no quoting needed
    call = f"layers.Conv{nd}DTranspose({', '.join(args + [name])})"
    t.gen.emit(f"{parts} = [{call}({t.inp(0)}[..., g * {cin}:(g + 1) * {cin}]) for g in range({group})]",
               f"{group} groups: Keras has no grouped transposed convolution")
    return f"ops.concatenate({parts}, axis=-1)"


@register("MaxPool", "AveragePool")
def pool(t: Translation) -> None:
    _channels_last(t)
    if len(t.node.outputs) > 1 and t.node.outputs[1].uses():
        t.unsupported("MaxPool indices output")
    kernel = t.ints("kernel_shape")
    nd = len(kernel)
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D pooling")
    strides = t.ints("strides", [1] * nd)
    pads = t.ints("pads", [0] * (2 * nd))
    dil = t.ints("dilations", [1] * nd)
    is_max = t.op == "MaxPool"
    if any(d != 1 for d in dil):
        _tap_pool(t, kernel, strides, dil, pads, is_max)
        return
    x = t.inp(0)
    rescale = None
    in_sizes = t.shape(0)[2:]
    include_pad = not is_max and bool(t.int("count_include_pad", 0))
    counted = pads  # the padding a mean counting it counts: not the overhang of ceil_mode's windows
    if t.int("ceil_mode", 0):
        # ceil_mode as floor mode with larger end pads: its extra windows see only padding beyond
        # the input, which max pooling and pad-excluding means ignore (a counting mean is rescaled)
        pads = list(pads[:nd]) + ceil_end_pads(in_sizes, kernel, strides, [1] * nd, pads)
    begins, ends = pads[:nd], pads[nd:]
    out_sizes = [(n + b + e - k) // s + 1 for n, b, e, k, s in zip(in_sizes, begins, ends, kernel, strides)]
    if not any(pads):
        padding = "valid"
    elif (pads == same_pads(in_sizes, kernel, strides, dil, upper=True) and not include_pad
          and not _tf_3d_same_shifts(in_sizes, kernel, strides, dil)):
        padding = "same"  # TF's "same" pooling ignores the padding, as ONNX does here
    else:
        x, padding = _pool_pad(t, x, pads, is_max), "valid"
        if not is_max:  # the zero-padded mean divides by the whole window: rescale by kernel / count
            counts = mean_divisor(in_sizes, kernel, strides, dil, counted, out_sizes, include_pad)
            if np.any(counts != np.prod(kernel)):
                rescale = np.moveaxis(float(np.prod(kernel)) / counts, 1, -1)  # (1, *spatial, 1): channels-last
    cls = f"{'Max' if is_max else 'Average'}Pooling{nd}D"
    args = [f"pool_size={_ints(kernel)}", f"strides={_ints(strides)}"]
    if padding != "valid":
        args.append(f"padding={padding!r}")
    if rescale is None:
        t.assign(_layer(t, cls, args, None, x))
    else:
        import onnx_ir as ir

        pooled = _layer(t, cls, args, None, x)
        factor = t.gen.constant(ir.Value(name=f"{t.layer_hint()}_rescale"), np.ascontiguousarray(rescale))
        what = "the padded input (not ceil_mode's overhang)" if include_pad else "the unpadded part"
        t.assign(f"ops.multiply({pooled}, {factor})", comment=f"mean over {what} of each window")


def _tap_pool(t: Translation, kernel, strides, dil, pads, is_max: bool) -> None:
    """Keras pooling takes no dilation: pad (with -inf for a max), then on each spatial axis
    reduce the ``k`` strided slices that start ``d`` apart (a max or sum over a box is one over
    each axis in turn); an average then divides by the taps each window counts."""
    plan = tap_pool(t.shape(0)[2:], kernel, strides, dil, pads, bool(t.int("ceil_mode", 0)), not is_max,
                    bool(t.int("count_include_pad", 0)))
    x = _pool_pad(t, t.inp(0), plan.pads, is_max) if any(plan.pads) else t.inp(0)
    reduce, what = ("ops.max", "max") if is_max else ("ops.sum", "sum")
    for axis, name, k, s, d, extent, span in plan.axes():
        lead = ":, " * (axis + 1)
        step = f":{s}" if s != 1 else ""
        var = t.gen.names.take(f"{t.layer_hint()}_{name}")
        if k == 1:
            t.gen.emit(f"{var} = {x}[{lead}0:{span}{step}]", f"pooling of size 1 along the {name}")
        else:
            t.gen.emit(f"{var} = {reduce}(ops.stack([{x}[{lead}i:i + {span}{step}] for i in range(0, {extent}, {d})]), "
                       f"axis=0)", f"dilated pooling along the {name}: {what} of {k} taps {d} apart")
        x = var
    if is_max:
        t.alias(x)
        return
    import onnx_ir as ir

    inverse = np.moveaxis(1.0 / plan.divisor, 1, -1).astype(np.float32)  # (1, *spatial, 1): channels-last
    factor = t.gen.constant(ir.Value(name=f"{t.layer_hint()}_inverse_count"), np.ascontiguousarray(inverse))
    t.assign(f"ops.multiply({x}, {factor})", comment="mean: divided by the taps each window counts")


@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(t: Translation) -> None:
    _channels_last(t)
    nd = len(t.shape(0)) - 2
    cls = f"Global{'Average' if t.op == 'GlobalAveragePool' else 'Max'}Pooling{nd}D"
    t.assign(_layer(t, cls, ["keepdims=True"], None, t.inp(0)))


def _dense(t: Translation, kernel_io: np.ndarray, bias, x: str, absorb=None) -> None:
    args = [str(kernel_io.shape[1])] + ([] if bias is not None else ["use_bias=False"])
    weights = [kernel_io] + ([bias] if bias is not None else [])
    expr = _layer(t, "Dense", args, weights, x)
    if absorb is None:
        t.assign(expr)
    else:
        name = t.gen.var(absorb.outputs[0])
        t.gen.emit(f"{name} = {expr}")
        t.absorb(absorb, name)


@register("MatMul")
def matmul(t: Translation) -> None:
    w = t.const(1)
    if w is not None and w.ndim == 2 and t.const(0) is None:
        bias, add = t.following_bias(w.shape[1])
        _dense(t, w, bias, t.inp(0), add)
        return
    t.assign(f"ops.matmul({t.inp(0)}, {t.inp(1)})")


@register("Gemm")
def gemm(t: Translation) -> None:
    alpha, beta = t.float("alpha", 1.0), t.float("beta", 1.0)
    ta, tb = t.int("transA", 0), t.int("transB", 0)
    w = t.const(1)
    c = t.const(2) if t.has_input(2) else None
    if w is not None and alpha == 1.0 and not ta and (not t.has_input(2) or (c is not None and beta == 1.0)):
        kernel = w.T if tb else w
        bias = None if c is None else np.broadcast_to(c, (kernel.shape[1],)).astype(np.float32)
        _dense(t, np.ascontiguousarray(kernel), bias, t.inp(0))
        return
    a = f"ops.transpose({t.inp(0)})" if ta else t.inp(0)
    b = f"ops.transpose({t.inp(1)})" if tb else t.inp(1)
    expr = f"ops.matmul({a}, {b})"
    if alpha != 1.0:
        expr = f"ops.multiply({py_literal(np.float32(alpha))}, {expr})"
    if t.has_input(2):
        cexpr = t.inp(2) if beta == 1.0 else f"ops.multiply({py_literal(np.float32(beta))}, {t.inp(2)})"
        expr, note = _add(expr, static_shape(t.node.outputs[0]), cexpr, static_shape(t.node.inputs[2]))
        t.assign(expr, comment=note)
        return
    t.assign(expr)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(t: Translation) -> None:
    if _wrapped_group_norm(t):
        return
    t.assign(f"ops.reshape({t.inp(0)}, {shape_literal(t.out_shape())})")


@register("Concat")
def concat(t: Translation) -> None:
    parts = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"ops.concatenate([{parts}], axis={t.int('axis')})")


@register("Split")
def split(t: Translation) -> None:
    axis = t.int("axis", 0)
    sizes = [t.out_shape(j)[axis] for j in range(len(t.node.outputs))]
    cuts = list(np.cumsum(sizes)[:-1].astype(int))
    names = ", ".join(t.out(j) for j in range(len(t.node.outputs)))
    t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = ops.split({t.inp(0)}, {[int(c) for c in cuts]}, axis={axis})")


@register("Slice")
def slice_(t: Translation) -> None:
    shape = t.shape(0)
    begin, size, strided = [0] * len(shape), list(shape), []
    for a, start, stop, step in t.slice_bounds():
        begin[a], size[a] = start, max(0, stop - start)
        if step != 1:
            strided.append((a, step))
    expr = f"ops.slice({t.inp(0)}, {tuple(begin)}, {tuple(size)})"
    for a, step in strided:
        expr = f"ops.take({expr}, {list(range(0, size[a], step))}, axis={a})"
    t.assign(expr)


@register("Gather")
def gather(t: Translation) -> None:
    axis = t.int("axis", 0) % len(t.shape(0))
    idx = t.const(1)
    if idx is not None and idx.ndim == 0:
        t.assign(f"ops.take({t.inp(0)}, {int(idx) % t.shape(0)[axis]}, axis={axis})")
        return
    table = embedding_lookup(t)
    if table is not None:
        # rows of a constant table picked by runtime ids: an Embedding layer, whose table is
        # a weight in model.weights.h5 (as a constant it would be baked into the graph)
        t.assign(_layer(t, "Embedding", [str(table.shape[0]), str(table.shape[1])], [table], t.inp(1)))
        return
    if idx is not None and np.any(idx < 0):
        t.unsupported("negative constant gather indices")
    t.assign(f"ops.take({t.inp(0)}, {t.inp(1)}, axis={axis})")


_REDUCE = {
    "ReduceMean": "ops.mean({x}, axis={d}, keepdims={k})", "ReduceSum": "ops.sum({x}, axis={d}, keepdims={k})",
    "ReduceMax": "ops.max({x}, axis={d}, keepdims={k})", "ReduceMin": "ops.min({x}, axis={d}, keepdims={k})",
    "ReduceL2": "ops.sqrt(ops.sum(ops.square({x}), axis={d}, keepdims={k}))",
    "ReduceL1": "ops.sum(ops.abs({x}), axis={d}, keepdims={k})",
    "ReduceSumSquare": "ops.sum(ops.square({x}), axis={d}, keepdims={k})",
    "ReduceLogSumExp": "ops.logsumexp({x}, axis={d}, keepdims={k})",
    "ReduceProd": "ops.prod({x}, axis={d}, keepdims={k})",
}


@register(*_REDUCE)
def reduce(t: Translation) -> None:
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    d = str(dims[0]) if len(dims) == 1 else str(tuple(dims))
    t.assign(_REDUCE[t.op].format(x=t.inp(0), d=d, k=bool(t.int("keepdims", 1))))


@register("Pad")
def pad(t: Translation) -> None:
    mode = t.str("mode", "constant")
    pads = t.need_const(1, "pads").tolist()
    rank = len(t.shape(0))
    axes = t.const(3).tolist() if t.has_input(3) else list(range(rank))
    width = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        width[a % rank] = [int(pads[i]), int(pads[i + len(axes)])]
    keras_mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode]
    extra = f", mode={keras_mode!r}" if keras_mode != "constant" else ""
    value = t.const(2) if t.has_input(2) else None
    if value is not None and float(value) != 0.0:
        extra += f", constant_values={py_literal(value)}"
    t.assign(f"ops.pad({t.inp(0)}, {[tuple(w) for w in width]}{extra})")


@register("Expand")
def expand(t: Translation) -> None:
    t.assign(f"ops.broadcast_to({t.inp(0)}, {shape_literal(t.out_shape())})")


@register("Tile")
def tile(t: Translation) -> None:
    reps = t.need_const(1, "repeats").tolist()
    t.assign(f"ops.tile({t.inp(0)}, {shape_literal(reps)})")


@register("Einsum")
def einsum(t: Translation) -> None:
    operands = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"ops.einsum({t.str('equation')!r}, {operands})")


@register("GatherND")
def gather_nd(t: Translation) -> None:
    """One ``ops.take`` on ``data`` flattened over the indexed (and batch) axes (see
    ``codegen.GatherND``).  Transformers' padding masks are written this way."""
    plan = plan_gather_nd(t)
    data = f"ops.reshape({t.inp(0)}, {shape_literal(plan.data_shape)})"
    if plan.linear is not None:
        t.assign(f"ops.take({data}, {_new_constant(t, plan.linear, 'index')}, axis=0)")
        return
    i = f"ops.cast({t.inp(1)}, 'int64')"
    i = f"ops.where(ops.less({i}, 0), ops.add({i}, np.array({tuple(plan.dims)}, 'int64')), {i})"
    linear = f"ops.sum(ops.multiply({i}, np.array({tuple(plan.strides)}, 'int64')), axis=-1)"
    if plan.batch_dims:
        linear, _ = _add(linear, plan.lead, _new_constant(t, plan.offset, "offset"), plan.offset.shape)
    t.assign(f"ops.take({data}, {linear}, axis=0)")


@register("GatherElements")
def gather_elements(t: Translation) -> None:
    """``ops.take_along_axis``; ONNX lets the indices be shorter than the data on the other
    axes (the output takes the indices' shape), so the data is cropped to them first."""
    shape, ishape = t.const_shape(0), t.const_shape(1)
    rank = len(shape)
    axis = t.int("axis", 0) % rank
    crop = tuple(ishape[a] if a != axis else shape[a] for a in range(rank))
    data, idx = t.const(0), t.const(1)
    if idx is not None:
        idx = np.where(idx < 0, idx + shape[axis], idx).astype(np.int64)
    if data is not None and idx is not None:  # e.g. BERT's token_type_ids buffer
        value = np.take_along_axis(data[tuple(slice(0, c) for c in crop)], idx, axis)
        if t.node.outputs[0].is_graph_output():
            t.assign(f"ops.convert_to_tensor({_new_constant(t, value, 'value')})")
        else:
            t.alias(_new_constant(t, value, "value"))
        return
    x = t.inp(0)
    if crop != tuple(shape):
        x = f"ops.slice({x}, {(0,) * rank}, {crop})"
    index = t.inp(1) if idx is None else _new_constant(t, idx, "index")
    t.assign(f"ops.take_along_axis({x}, {index}, axis={axis})")


@register("CumSum")
def cumsum(t: Translation) -> None:
    """``ops.cumsum``; ``reverse`` flips around it, ``exclusive`` shifts the input by one step."""
    shape = t.shape(0)
    rank = len(shape)
    axis = int(t.need_const(1, "the axis")) % rank
    reverse = bool(t.int("reverse", 0))
    x = f"ops.flip({t.inp(0)}, axis={axis})" if reverse else t.inp(0)
    if t.int("exclusive", 0):
        width = [(0, 0)] * rank
        width[axis] = (1, 0)
        x = f"ops.slice(ops.pad({x}, {width}), {(0,) * rank}, {tuple(shape)})"
    expr = f"ops.cumsum({x}, axis={axis})"
    t.assign(f"ops.flip({expr}, axis={axis})" if reverse else expr)


# -- channels-last lowerings of DepthToSpace, SpaceToDepth, LRN, GroupNormalization --------------
# Each runs between pinned transposes, on the (N, *spatial, C) tensor Keras layers use.


@register("DepthToSpace")
def depth_to_space(t: Translation) -> None:
    """NHWC depth-to-space: split the channels into (block, block, C') or (C', block, block), interleave."""
    _channels_last(t)
    n, c, h, w = t.shape(0)
    bs, mode = t.int("blocksize"), t.str("mode", "DCR")
    c_out = c // (bs * bs)
    split, perm = ((n, h, w, bs, bs, c_out), (0, 1, 3, 2, 4, 5)) if mode == "DCR" else \
        ((n, h, w, c_out, bs, bs), (0, 1, 4, 2, 5, 3))
    note = "pixel shuffle (PyTorch's CRD order)" if mode == "CRD" else "depth to space (TensorFlow's DCR order)"
    t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), {perm}), {(n, h * bs, w * bs, c_out)})",
             comment=note)


@register("SpaceToDepth")
def space_to_depth(t: Translation) -> None:
    """NHWC space-to-depth: output channel ``(b1 * block + b2) * C + c`` (TensorFlow's order)."""
    _channels_last(t)
    n, c, h, w = t.shape(0)
    bs = t.int("blocksize")
    split = (n, h // bs, bs, w // bs, bs, c)
    t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), (0, 1, 3, 2, 4, 5)), "
             f"{(n, h // bs, w // bs, c * bs * bs)})", comment="space to depth")


def _wrapped_group_norm(t: Translation) -> bool:
    """Moved to ``ops.norm.keras_wrapped_group_norm``; the Reshape translator here still calls it by this name."""
    from .ops.norm import keras_wrapped_group_norm

    return keras_wrapped_group_norm(t)


# -- ArgMax / ArgMin, TopK, ReverseSequence, LSTM / GRU ----------------------------------------------


@register("ArgMax", "ArgMin")
def arg_extreme(t: Translation) -> None:
    """``ops.argmax`` / ``argmin`` as int64 (ONNX's type); ``select_last_index`` searches the flipped axis."""
    rank = len(t.shape(0))
    axis = t.int("axis", 0) % rank
    keep = bool(t.int("keepdims", 1))
    fn = "ops.argmax" if t.op == "ArgMax" else "ops.argmin"
    if t.int("select_last_index", 0):
        last = t.shape(0)[axis] - 1
        found = f"ops.subtract({last}, {fn}(ops.flip({t.inp(0)}, axis={axis}), axis={axis}, keepdims={keep}))"
        t.assign(f"ops.cast({found}, 'int64')", comment="last index of ties")
    else:
        t.assign(f"ops.cast({fn}({t.inp(0)}, axis={axis}, keepdims={keep}), 'int64')")


@register("TopK")
def topk(t: Translation) -> None:
    """``ops.top_k`` (last axis, largest first): other axes move last and back, ``largest=0`` negates.

    Always sorted: ONNX leaves the order of ``sorted=0`` open.
    """
    k = int(t.need_const(1, "K").reshape(-1)[0])
    rank = len(t.shape(0))
    axis = t.int("axis", -1) % rank
    largest = bool(t.int("largest", 1))
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]  # a swap: its own inverse
    x = t.inp(0) if axis == rank - 1 else f"ops.transpose({t.inp(0)}, {tuple(perm)})"
    x = x if largest else f"ops.negative({x})"
    direct = largest and axis == rank - 1
    vals = t.out(0) if direct else t.gen.names.take(f"{t.out(0)}_top")
    idx = t.gen.names.take(f"{t.out(1)}_int32")
    t.gen.emit(f"{vals}, {idx} = ops.top_k({x}, {k})", None if largest else "the smallest: top_k of the negation")
    if not direct:
        vals = vals if largest else f"ops.negative({vals})"
        if axis != rank - 1:
            vals, idx = f"ops.transpose({vals}, {tuple(perm)})", f"ops.transpose({idx}, {tuple(perm)})"
        t.assign(vals, 0)
    t.assign(f"ops.cast({idx}, 'int64')", 1)
