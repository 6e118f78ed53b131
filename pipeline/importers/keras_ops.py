"""ONNX op -> Keras 3 source, one small translator per op.

Layout-sensitive ops (Conv, pooling, BatchNormalization, ...) arrive wrapped
by the ``ChannelsLast`` pass as ``T_pin(cl->cf) -> op -> T_pin(cf->cl)``.  The
pinned transposes are not emitted: their outputs alias their inputs, so the
Keras layer reads and writes channels-last tensors, as Keras layers do.
Everything else maps to ``keras.ops`` on the tensors as they are.
"""

from __future__ import annotations

import numpy as np

from ..normalize.graph import PIN_IN, PIN_OUT, pin_role
from ..normalize.padding import same_pads, valid_counts
from .codegen import Translation, layout_note, py_literal, registry, shape_literal

OPS, register = registry()

KERAS_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8", 3: "int8"}


@register("Transpose")
def transpose(t: Translation) -> None:
    role = pin_role(t.node)
    if role in (PIN_IN, PIN_OUT):
        t.alias(t.inp(0))  # the wrapped op works channels-last: no data movement
        return
    perm = t.ints("perm") or list(reversed(range(len(t.shape(0)))))
    t.assign(f"ops.transpose({t.inp(0)}, {tuple(perm)})", comment=layout_note(t.node, perm))


def _channels_last(t: Translation) -> bool:
    """True if the node sits between pinned transposes (channels-last), False for rank <= 2."""
    producer = t.value(0).producer()
    consumer = t.only_consumer()
    if producer is not None and pin_role(producer) == PIN_IN and consumer is not None and pin_role(consumer) == PIN_OUT:
        return True
    if len(t.shape(0)) <= 2:
        return False
    t.unsupported("layout-sensitive op was not lowered to channels-last")


def _layer(t: Translation, cls: str, args: list[str], weights: list | None, x: str, hint: str | None = None) -> str:
    name = t.gen.add_layer(hint or t.layer_hint(), weights or [])
    call = f"layers.{cls}({', '.join(args + [f'name={name!r}'])})({x})"
    return call


def _spatial_padding(t: Translation, x: str, nd: int, pads, kernel, strides, dil, allow_causal=False):
    """Return (padding string, x) — possibly after an explicit ZeroPadding layer."""
    in_sizes = t.shape(0)[2:]
    if not any(pads):
        return "valid", x
    if pads == same_pads(in_sizes, kernel, strides, dil, upper=True):
        return "same", x
    begins, ends = pads[:nd], pads[nd:]
    if allow_causal and nd == 1 and strides == [1] and begins[0] == dil[0] * (kernel[0] - 1) and ends[0] == 0:
        return "causal", x
    pairs = tuple((int(b), int(e)) for b, e in zip(begins, ends))
    padding = pairs[0] if nd == 1 else pairs
    name = t.gen.add_layer(t.layer_hint() + "_pad", [])
    var = t.gen.names.take(t.layer_hint() + "_padded")
    note = "asymmetric padding, made explicit" if begins != ends else "explicit padding: Keras 'same' would pad differently here"
    t.gen.emit(f"{var} = layers.ZeroPadding{nd}D({padding}, name={name!r})({x})", note)
    return "valid", var


def _ints(values):
    values = [int(v) for v in values]
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


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
    if any(s > 1 for s in strides) and any(d > 1 for d in dil):
        t.unsupported("Keras cannot combine strides > 1 with dilation > 1")
    out_ch, in_per_group = w.shape[0], w.shape[1]
    in_ch = in_per_group * group
    padding, x = _spatial_padding(t, t.inp(0), nd, pads, kernel, strides, dil, allow_causal=True)
    spatial = list(range(2, 2 + nd))
    common = [f"strides={_ints(strides)}"] if any(s != 1 for s in strides) else []
    if padding != "valid":
        common.append(f"padding={padding!r}")
    if any(d != 1 for d in dil):
        common.append(f"dilation_rate={_ints(dil)}")
    if b is None:
        common.append("use_bias=False")
    if group == in_ch and in_per_group == 1 and group > 1 and nd in (1, 2):
        mult = out_ch // in_ch
        # ONNX output channel c*mult + m reads input channel c -> Keras kernel[..., c, m].
        kernel_w = w.reshape(in_ch, mult, *kernel).transpose(*[i + 2 for i in range(nd)], 0, 1)
        args = [_ints(kernel)] + ([f"depth_multiplier={mult}"] if mult != 1 else []) + common
        weights = [kernel_w] + ([b] if b is not None else [])
        t.assign(_layer(t, f"DepthwiseConv{nd}D", args, weights, x))
        return
    kernel_w = w.transpose(*spatial, 1, 0)
    args = [str(out_ch), _ints(kernel)] + common
    if group != 1:
        args.append(f"groups={group}")
    weights = [kernel_w] + ([b] if b is not None else [])
    t.assign(_layer(t, f"Conv{nd}D", args, weights, x))


@register("ConvTranspose")
def conv_transpose(t: Translation) -> None:
    _channels_last(t)
    w, b = t.weight_and_bias()
    nd = w.ndim - 2
    if nd not in (1, 2, 3) or t.int("group", 1) != 1:
        t.unsupported("grouped or >3-D transposed convolution (Keras has none)")
    kernel = list(w.shape[2:])
    strides = t.ints("strides", [1] * nd)
    dil = t.ints("dilations", [1] * nd)
    pads = t.ints("pads", [0] * (2 * nd))
    outpad = t.ints("output_padding", [0] * nd)
    begins, ends = pads[:nd], pads[nd:]
    if any(op > e for op, e in zip(outpad, ends)):
        t.unsupported("output_padding larger than the end padding")
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    same = [max(k - s, 0) for k, s in zip(k_eff, strides)]
    is_same = not any(outpad) and all(bg == tot // 2 and en == tot - tot // 2 for bg, en, tot in zip(begins, ends, same))
    # ONNX (Cin, Cout, k...) -> Keras (k..., Cout, Cin)
    kernel_w = w.transpose(*range(2, 2 + nd), 1, 0)
    args = [str(w.shape[1]), _ints(kernel)]
    if any(s != 1 for s in strides):
        args.append(f"strides={_ints(strides)}")
    if is_same and any(same):
        args.append("padding='same'")
    if any(d != 1 for d in dil):
        args.append(f"dilation_rate={_ints(dil)}")
    if b is None:
        args.append("use_bias=False")
    weights = [kernel_w] + ([b] if b is not None else [])
    expr = _layer(t, f"Conv{nd}DTranspose", args, weights, t.inp(0))
    crop = [(bg, en - op) for bg, en, op in zip(begins, ends, outpad)]
    if is_same or not any(c for pair in crop for c in pair):
        t.assign(expr)
        return
    full = t.gen.names.take(t.layer_hint() + "_full")
    t.gen.emit(f"{full} = {expr}")
    cropping = crop[0] if nd == 1 else tuple(crop)
    name = t.gen.add_layer(t.layer_hint() + "_crop", [])
    t.assign(f"layers.Cropping{nd}D({cropping}, name={name!r})({full})", comment="ONNX pads crop the full output")


@register("Resize")
def resize(t: Translation) -> None:
    _channels_last(t)
    mode = t.str("mode", "nearest")
    coord = t.str("coordinate_transformation_mode", "half_pixel")
    in_shape, out_shape = t.shape(0), t.out_shape()
    nd = len(in_shape) - 2
    spatial_in, spatial_out = in_shape[2:], out_shape[2:]
    x = t.inp(0)
    if mode == "nearest":
        if t.str("nearest_mode", "round_prefer_floor") != "floor" or coord != "asymmetric":
            t.unsupported(f"nearest resize with {coord}/{t.str('nearest_mode', 'round_prefer_floor')}")
        if any(o % i for o, i in zip(spatial_out, spatial_in)):
            t.unsupported("nearest resize by a non-integer factor")
        size = [o // i for o, i in zip(spatial_out, spatial_in)]
        t.assign(_layer(t, f"UpSampling{nd}D", [_ints(size) if nd > 1 else str(size[0])], None, x))
        return
    if mode == "linear" and nd == 2 and coord in ("half_pixel", "pytorch_half_pixel"):
        if coord == "pytorch_half_pixel" and any(o == 1 for o in spatial_out):
            t.unsupported("pytorch_half_pixel resize to size 1")
        if t.float("cubic_coeff_a", -0.75) and t.int("antialias", 0):
            t.unsupported("antialiased resize")
        if all(o % i == 0 for o, i in zip(spatial_out, spatial_in)):
            size = [o // i for o, i in zip(spatial_out, spatial_in)]
            t.assign(_layer(t, "UpSampling2D", [_ints(size), "interpolation='bilinear'"], None, x))
        else:
            t.assign(_layer(t, "Resizing", [str(spatial_out[0]), str(spatial_out[1]), "interpolation='bilinear'"], None, x))
        return
    t.unsupported(f"{mode} resize with {coord} coordinates in {nd}-D")


@register("InstanceNormalization")
def instance_norm(t: Translation) -> None:
    _channels_last(t)
    scale, bias = t.need_const(1, "scale"), t.need_const(2, "bias")
    eps = t.float("epsilon", 1e-5)
    args = [f"groups={scale.shape[0]}", f"epsilon={py_literal(np.float32(eps))}"]
    t.assign(_layer(t, "GroupNormalization", args, [scale, bias], t.inp(0)))


def _ceil_as_end_pads(t: Translation, in_sizes, kernel, strides, pads) -> list[int]:
    """ceil_mode pooling as floor-mode pooling with larger end pads: the extra window
    ceil_mode adds sees only padding beyond the input, which max pooling and
    pad-excluding average pooling both ignore.

    The output length follows onnxruntime and PyTorch, which drop a last window that
    would start inside the end padding (ONNX shape inference does not, so it is not used).
    """
    if t.op == "AveragePool" and t.int("count_include_pad", 0):
        t.unsupported("ceil_mode average pooling that counts the padding")
    nd = len(kernel)
    ends = []
    for n, k, s, b, e in zip(in_sizes, kernel, strides, pads[:nd], pads[nd:]):
        out = -(-(n + b + e - k) // s) + 1
        if (out - 1) * s >= n + b:
            out -= 1
        ends.append(max(e, (out - 1) * s + k - n - b))
    return list(pads[:nd]) + ends


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
    if any(d != 1 for d in dil):
        t.unsupported("dilated pooling")
    is_max = t.op == "MaxPool"
    x = t.inp(0)
    rescale = None
    in_sizes = t.shape(0)[2:]
    if t.int("ceil_mode", 0):
        pads = _ceil_as_end_pads(t, in_sizes, kernel, strides, pads)
    if not any(pads):
        padding = "valid"
    elif pads == same_pads(in_sizes, kernel, strides, dil, upper=True) and (is_max or not t.int("count_include_pad", 0)):
        padding = "same"  # TF's "same" pooling ignores the padding, as ONNX does here
    elif is_max or t.int("count_include_pad", 0):
        begins, ends = pads[:nd], pads[nd:]
        width = [(0, 0)] + [(int(b), int(e)) for b, e in zip(begins, ends)] + [(0, 0)]
        fill = "float('-inf')" if is_max else "0.0"
        var = t.gen.names.take(t.layer_hint() + "_padded")
        t.gen.emit(f"{var} = ops.pad({x}, {width}, constant_values={fill})", "explicit pooling padding")
        x, padding = var, "valid"
    else:  # mean over the unpadded part of each window: zero-pad, average, rescale by kernel / count
        begins, ends = pads[:nd], pads[nd:]
        width = [(0, 0)] + [(int(b), int(e)) for b, e in zip(begins, ends)] + [(0, 0)]
        var = t.gen.names.take(t.layer_hint() + "_padded")
        t.gen.emit(f"{var} = ops.pad({x}, {width})", "explicit pooling padding")
        out_sizes = [(n + b + e - k) // s + 1 for n, b, e, k, s in zip(in_sizes, begins, ends, kernel, strides)]
        counts = valid_counts(in_sizes, kernel, strides, begins, out_sizes)
        rescale = np.moveaxis(float(np.prod(kernel)) / counts, 1, -1)  # (1, *spatial, 1): channels-last
        x, padding = var, "valid"
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
        t.assign(f"ops.multiply({pooled}, {factor})",
                 comment="mean over the unpadded part of each window")


@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(t: Translation) -> None:
    _channels_last(t)
    nd = len(t.shape(0)) - 2
    cls = f"Global{'Average' if t.op == 'GlobalAveragePool' else 'Max'}Pooling{nd}D"
    t.assign(_layer(t, cls, ["keepdims=True"], None, t.inp(0)))


@register("BatchNormalization")
def batch_norm(t: Translation) -> None:
    cl = _channels_last(t)
    rank = len(t.shape(0))
    scale, bias, mean, var = (t.need_const(i, "statistics") for i in range(1, 5))
    eps = t.float("epsilon", 1e-5)
    axis = -1 if (cl or rank == 2) else 1
    args = [f"epsilon={py_literal(np.float32(eps))}"] + ([] if axis == -1 else [f"axis={axis}"])
    t.assign(_layer(t, "BatchNormalization", args, [scale, bias, mean, var], t.inp(0)))


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
        expr = f"ops.add({expr}, {cexpr})"
    t.assign(expr)


_BINARY = {
    "Add": "ops.add", "Sub": "ops.subtract", "Mul": "ops.multiply", "Div": "ops.divide", "Pow": "ops.power",
    "Equal": "ops.equal", "Greater": "ops.greater", "Less": "ops.less", "GreaterOrEqual": "ops.greater_equal",
    "LessOrEqual": "ops.less_equal", "And": "ops.logical_and", "Or": "ops.logical_or", "Xor": "ops.logical_xor",
    "Max": "ops.maximum", "Min": "ops.minimum",
}


@register(*_BINARY)
def binary(t: Translation) -> None:
    fn = _BINARY[t.op]
    if t.op == "Div" and np.issubdtype(np.dtype(t.out_dtype().numpy()), np.integer):
        t.unsupported("integer division (ONNX truncates toward zero)")
    expr = t.inp(0)
    for i in range(1, len(t.node.inputs)):
        expr = f"{fn}({expr}, {t.inp(i)})"
    t.assign(expr)


@register("Sum", "Mean")
def nary(t: Translation) -> None:
    expr = t.inp(0)
    for i in range(1, len(t.node.inputs)):
        expr = f"ops.add({expr}, {t.inp(i)})"
    if t.op == "Mean":
        expr = f"ops.divide({expr}, {len(t.node.inputs)}.0)"
    t.assign(expr)


@register("Where")
def where(t: Translation) -> None:
    t.assign(f"ops.where({t.inp(0)}, {t.inp(1)}, {t.inp(2)})")


_UNARY = {
    "Relu": "ops.relu({x})", "Sigmoid": "ops.sigmoid({x})", "Tanh": "ops.tanh({x})", "Exp": "ops.exp({x})",
    "Log": "ops.log({x})", "Sqrt": "ops.sqrt({x})", "Abs": "ops.abs({x})", "Neg": "ops.negative({x})",
    "Reciprocal": "ops.reciprocal({x})", "Erf": "ops.erf({x})", "Floor": "ops.floor({x})", "Ceil": "ops.ceil({x})",
    "Round": "ops.round({x})", "Sign": "ops.sign({x})", "Sin": "ops.sin({x})", "Cos": "ops.cos({x})",
    "Softsign": "ops.soft_sign({x})", "Softplus": "ops.softplus({x})", "HardSwish": "ops.hard_swish({x})",
    "Not": "ops.logical_not({x})", "IsNaN": "ops.isnan({x})", "Mish": "ops.multiply({x}, ops.tanh(ops.softplus({x})))",
}


@register(*_UNARY)
def unary(t: Translation) -> None:
    t.assign(_UNARY[t.op].format(x=t.inp(0)))


@register("Identity", "Dropout")
def identity(t: Translation) -> None:
    t.alias(t.inp(0))


@register("LeakyRelu")
def leaky_relu(t: Translation) -> None:
    t.assign(f"ops.leaky_relu({t.inp(0)}, negative_slope={py_literal(np.float32(t.float('alpha', 0.01)))})")


@register("Elu")
def elu(t: Translation) -> None:
    t.assign(f"ops.elu({t.inp(0)}, alpha={py_literal(np.float32(t.float('alpha', 1.0)))})")


@register("Selu")
def selu(t: Translation) -> None:
    t.assign(f"ops.selu({t.inp(0)})")


@register("Gelu")
def gelu(t: Translation) -> None:
    approx = t.str("approximate", "none") == "tanh"
    t.assign(f"ops.gelu({t.inp(0)}, approximate={approx})")


@register("HardSigmoid")
def hard_sigmoid(t: Translation) -> None:
    alpha, beta = t.float("alpha", 0.2), t.float("beta", 0.5)
    a, b = py_literal(np.float32(alpha)), py_literal(np.float32(beta))
    t.assign(f"ops.clip(ops.add(ops.multiply({t.inp(0)}, {a}), {b}), 0.0, 1.0)")


@register("Clip")
def clip(t: Translation) -> None:
    lo = t.const(1) if t.has_input(1) else None
    hi = t.const(2) if t.has_input(2) else None
    if (t.has_input(1) and lo is None) or (t.has_input(2) and hi is None):
        t.unsupported("non-constant clip bounds")
    if lo is not None and hi is not None and float(lo) == 0.0 and float(hi) == 6.0:
        t.assign(f"ops.relu6({t.inp(0)})")
        return
    low = py_literal(lo) if lo is not None else "float('-inf')"
    high = py_literal(hi) if hi is not None else "float('inf')"
    t.assign(f"ops.clip({t.inp(0)}, {low}, {high})")


@register("Softmax", "LogSoftmax")
def softmax(t: Translation) -> None:
    fn = "ops.softmax" if t.op == "Softmax" else "ops.log_softmax"
    t.assign(f"{fn}({t.inp(0)}, axis={t.int('axis', -1)})")


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(t: Translation) -> None:
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


@register("Cast")
def cast(t: Translation) -> None:
    to = t.int("to")
    if to not in KERAS_DTYPES:
        t.unsupported(f"cast to ONNX type {to}")
    t.assign(f"ops.cast({t.inp(0)}, {KERAS_DTYPES[to]!r})")


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


@register("LayerNormalization")
def layer_norm(t: Translation) -> None:
    shape = t.shape(0)
    rank = len(shape)
    axis = t.int("axis", -1) % rank
    axes = list(range(axis, rank))
    norm_shape = shape[axis:]
    scale = np.broadcast_to(t.need_const(1, "scale"), norm_shape).astype(np.float32)
    bias = t.const(2) if t.has_input(2) else None
    if t.has_input(2) and bias is None:
        t.unsupported("non-constant bias")
    eps = t.float("epsilon", 1e-5)
    axis_arg = "-1" if axes == [rank - 1] else str([a for a in axes])
    args = [f"axis={axis_arg}", f"epsilon={py_literal(np.float32(eps))}"]
    weights = [scale]
    if bias is None:
        args.append("center=False")
    else:
        weights.append(np.broadcast_to(bias, norm_shape).astype(np.float32))
    t.assign(_layer(t, "LayerNormalization", args, weights, t.inp(0)))


@register("Einsum")
def einsum(t: Translation) -> None:
    operands = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"ops.einsum({t.str('equation')!r}, {operands})")


@register("PRelu")
def prelu(t: Translation) -> None:
    x = t.inp(0)
    t.assign(f"ops.where(ops.greater_equal({x}, 0.0), {x}, ops.multiply({x}, {t.inp(1)}))")
