"""ONNX op -> PyTorch source, one small translator per op.

Translators write native ``torch.nn`` modules where PyTorch has one (Conv,
Linear, BatchNorm, pooling, Upsample, padding) and plain tensor expressions
otherwise.  ONNX is
channels-first like PyTorch, so no layout work happens here: the normalize
passes already made every Transpose explicit.
"""

from __future__ import annotations

import re

import numpy as np

from ..normalize.graph import const_array, static_shape
from ..normalize.patterns import match_group_norm, module_name
from ..normalize.padding import pool_len, tap_pool, valid_counts
from .codegen import Translation, embedding_lookup, layout_note, plan_gather_nd, py_literal, registry, shape_literal

OPS, register = registry()

from .torch_emit import DTYPE_NAMES  # noqa: E402,F401 (to_torch reads it here until the op families land)
from .torch_emit import buffer as _buffer  # noqa: E402
from .torch_emit import hint as _hint  # noqa: E402
from .torch_emit import np_dtype as _np_dtype  # noqa: E402
from .torch_emit import pad_first as _pad_first  # noqa: E402
from .torch_emit import pad_order as torch_pad_order  # noqa: E402
from .torch_emit import shape_args as _shape_args  # noqa: E402
from .torch_emit import tuple_or_float as _tuple_or_float  # noqa: E402
from .torch_emit import tuple_or_int as _tuple_or_int  # noqa: E402


def _module(t: Translation, ctor: str, weights: dict | None = None, hint: str | None = None) -> str:
    from .torch_emit import module

    return module(t, ctor, weights, name=hint)

def conv_padding(pads, kernel, strides, dilations):
    """(``padding=`` text or None, explicit (begin, end) pairs for a pad module or None).

    Symmetric pads become ``padding=``; asymmetric ones (TF "same" with an even
    kernel or a stride) an explicit ``nn.ZeroPadNd`` before the conv.  PyTorch's
    ``padding="same"`` would be exact for stride 1 too, but it warns at run time
    that it copies the input for even kernels, and it hides where the odd pixel goes.
    """
    nd = len(kernel)
    begins, ends = pads[:nd], pads[nd:]
    if begins == ends:
        return (None if not any(begins) else _tuple_or_int(begins)), None
    return None, list(zip(begins, ends))


def transpose_padding(begins, ends, outpad, strides, dilations):
    """ONNX ConvTranspose (pads, output_padding) -> PyTorch (padding, output_padding, crop pairs).

    Per axis ONNX keeps ``[b, full + op - e)`` of the full transposed convolution
    (negative pads, as tf2onnx writes for Keras ``output_padding``, extend it).
    PyTorch keeps ``[p, full + op_t - p)`` with ``op_t < max(stride, dilation)``;
    whatever PyTorch keeps beyond ONNX is cropped from the output.  None if a
    begin pad is negative or the extension needs too much output_padding.
    """
    padding, out_pad, crop = [], [], []
    for b, e, op, s, d in zip(begins, ends, outpad, strides, dilations):
        net_end = e - op  # what ONNX removes at the end, net of its output_padding
        limit = max(s, d)
        p = max(0, min(b, net_end + limit - 1))
        op_t = max(0, p - net_end)
        if b < 0 or op_t >= limit:
            return None
        padding.append(p)
        out_pad.append(op_t)
        crop.append((b - p, op_t - p + net_end))
    return padding, out_pad, crop


def _crop_index(crop) -> str:
    """``[:, :, 1:, :-1]`` for (begin, end) crops of the spatial axes of an NC... tensor."""
    parts = [":", ":"] + [f"{bg or ''}:{-en if en else ''}" for bg, en in crop]
    while parts[-1] == ":":
        parts.pop()
    return ", ".join(parts)


@register("Conv", "ConvTranspose")
def conv(t: Translation) -> None:
    w, b = t.weight_and_bias()
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D convolution")
    if t.str("auto_pad", "NOTSET") != "NOTSET":
        t.unsupported("auto_pad with an unknown input shape")
    group = t.int("group", 1)
    kernel = list(w.shape[2:])
    strides = t.ints("strides", [1] * nd)
    dil = t.ints("dilations", [1] * nd)
    pads = t.ints("pads", [0] * (2 * nd))
    transposed = t.op == "ConvTranspose"
    if transposed:
        in_ch, out_ch = w.shape[0], w.shape[1] * group
    else:
        in_ch, out_ch = w.shape[1] * group, w.shape[0]
    args = [str(in_ch), str(out_ch), f"kernel_size={_tuple_or_int(kernel)}"]
    if any(s != 1 for s in strides):
        args.append(f"stride={_tuple_or_int(strides)}")
    x = t.inp(0)
    crop = []
    reshape_full = None  # F.pad pairs (negative crops) from PyTorch's full output to ONNX's
    if transposed:
        if t.ints("output_shape") is not None:
            t.unsupported("ConvTranspose with output_shape")
        outpad = t.ints("output_padding", [0] * nd)
        found = transpose_padding(pads[:nd], pads[nd:], outpad, strides, dil)
        if found is None:
            # a negative begin pad (tf2onnx, Keras "same" with a kernel shorter than the stride) or
            # more extension than output_padding allows: ONNX keeps [b, full + op - e) of the
            # full output, positions beyond it holding the bias only
            found = [0] * nd, [0] * nd, []
            reshape_full = [(-bg, op - en) for bg, en, op in zip(pads[:nd], pads[nd:], outpad)]
        padding, out_pad, crop = found
        if any(padding):
            args.append(f"padding={_tuple_or_int(padding)}")
        if any(out_pad):
            args.append(f"output_padding={_tuple_or_int(out_pad)}")
    else:
        if any(p < 0 for p in pads):
            t.unsupported(f"negative pads {pads}")
        padding, pairs = conv_padding(pads, kernel, strides, dil)
        if pairs is not None:
            x = _pad_first(t, x, pairs, nd)
        elif padding is not None:
            args.append(f"padding={padding}")
    if any(d != 1 for d in dil):
        args.append(f"dilation={_tuple_or_int(dil)}")
    if group != 1:
        args.append(f"groups={group}")
    if b is None or reshape_full is not None:
        args.append("bias=False")
    kind = "ConvTranspose" if transposed else "Conv"
    mod = _module(t, f"nn.{kind}{nd}d({', '.join(args)})", {"weight": w, "bias": None if reshape_full else b})
    if reshape_full is not None:
        y = t.gen.names.take(mod + "_full")
        t.gen.emit(f"{y} = self.{mod}({x})")
        expr = f"F.pad({y}, {torch_pad_order(reshape_full)})"
        if b is not None:
            bias = _buffer(t, mod + "_bias", b.reshape((1, -1) + (1,) * nd))
            expr = f"{expr} + {bias}"
        t.assign(expr, comment="ONNX's output window of the full transposed convolution: zeros beyond it, then the bias")
    elif any(c for pair in crop for c in pair):
        y = t.gen.names.take(mod + "_full")
        t.gen.emit(f"{y} = self.{mod}({x})")
        t.assign(f"{y}[{_crop_index(crop)}]", comment="asymmetric padding: crop the extra end")
    else:
        t.assign(f"self.{mod}({x})")


def torch_pool_len(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """Output length of a PyTorch pooling layer: ONNX's with equal pads (the same ceil rule)."""
    return pool_len(n, k, s, p, p, d, ceil)


def _ceil_pads_fit(t: Translation, shape, kernel, strides, begins, ends, dil) -> bool:
    """Whether ``padding=begins, ceil_mode=True`` gives ONNX's windows for end pads ``ends``.

    Window ``i`` starts at ``i * stride - begin`` in both; PyTorch clips a window that
    runs past the input, so only the window count must match.
    """
    if not all(0 <= bg <= en and bg <= k // 2 for bg, en, k in zip(begins, ends, kernel)):
        return False
    out = t.out_shape()[2:]
    return all(torch_pool_len(n, k, s, bg, d, True) == o
               for n, k, s, bg, d, o in zip(shape, kernel, strides, begins, dil, out))


@register("MaxPool", "AveragePool")
def pool(t: Translation) -> None:
    if len(t.node.outputs) > 1 and t.node.outputs[1].uses():
        t.unsupported("MaxPool indices output")
    kernel = t.ints("kernel_shape")
    nd = len(kernel)
    strides = t.ints("strides", [1] * nd)
    pads = t.ints("pads", [0] * (2 * nd))
    dil = t.ints("dilations", [1] * nd)
    ceil = t.int("ceil_mode", 0)
    if t.str("auto_pad", "NOTSET") != "NOTSET":
        t.unsupported("auto_pad with an unknown input shape")
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D pooling")
    is_max = t.op == "MaxPool"
    include_pad = bool(t.int("count_include_pad", 0))
    if not is_max and any(d != 1 for d in dil):
        _dilated_average(t, kernel, strides, dil, pads)
        return
    args = [f"kernel_size={_tuple_or_int(kernel)}", f"stride={_tuple_or_int(strides)}"]
    begins, ends = pads[:nd], pads[nd:]
    x = t.inp(0)
    rescale = None
    padded = False  # padded here, before an unpadded nn pool
    # AvgPool3d checks the *unpadded* input against the kernel: pad it explicitly instead
    small_3d = not is_max and nd == 3 and any(n < k for n, k in zip(t.shape(0)[2:], kernel))
    if begins == ends and all(bg <= k // 2 for bg, k in zip(begins, kernel)) and not small_3d:
        if any(begins):
            args.append(f"padding={_tuple_or_int(begins)}")
            if not is_max:
                args.append(f"count_include_pad={include_pad}")
    elif not ceil and not small_3d and (is_max or not include_pad) and _ceil_pads_fit(t, t.shape(0)[2:], kernel,
                                                                                        strides, begins, ends, dil):
        # TF "same" pooling: the extra end padding becomes PyTorch's ceil_mode windows,
        # which PyTorch clips to the input (and averages over what is left).
        if any(begins):
            args.append(f"padding={_tuple_or_int(begins)}")
        args.append("ceil_mode=True")
        if not is_max:
            args.append("count_include_pad=False")
    elif is_max:
        x = _pad_first(t, x, list(zip(begins, ends)), nd, value=float("-inf"))
        padded = True
    else:
        padded = True
        if ceil and not include_pad:
            t.unsupported("ceil_mode average pooling with asymmetric padding excluded from the mean")
        x = _pad_first(t, x, list(zip(begins, ends)), nd)
        if not include_pad:  # the zero-padded mean divides by the whole window; TF by its real part
            counts = valid_counts(t.shape(0)[2:], kernel, strides, begins, t.out_shape()[2:])
            rescale = _buffer(t, _hint(t) + "_rescale", float(np.prod(kernel)) / counts)
    if ceil:
        args.append("ceil_mode=True")
    if is_max:
        if any(d != 1 for d in dil):
            args.append(f"dilation={_tuple_or_int(dil)}")
        ctor = f"nn.MaxPool{nd}d({', '.join(args)})"
    else:
        ctor = f"nn.AvgPool{nd}d({', '.join(args)})"
    mod = _module(t, ctor)
    call = f"self.{mod}({x})"
    if ceil and padded:
        # ONNX drops a ceil_mode window that would start in the end padding; on the padded
        # input PyTorch sees no padding and keeps it: crop it off
        shape = t.shape(0)[2:]
        want = [pool_len(n, k, s, b, e, d, True) for n, k, s, b, e, d in zip(shape, kernel, strides, begins, ends, dil)]
        got = [torch_pool_len(n + b + e, k, s, 0, d, True)
               for n, k, s, b, e, d in zip(shape, kernel, strides, begins, ends, dil)]
        if want != got:
            call += "[:, :, " + ", ".join(f":{w}" if w != g else ":" for w, g in zip(want, got)) + "]"
    if rescale is None:
        t.assign(call)
    else:
        t.assign(f"{call} * {rescale}", comment="mean over the unpadded part of each window")


def _dilated_average(t: Translation, kernel, strides, dil, pads) -> None:
    """nn.AvgPool has no dilation (ONNX has since opset 19): zero-pad, then on each spatial
    axis the sum of the ``k`` strided slices ``d`` apart, then divide by the taps each window counts."""
    nd = len(kernel)
    plan = tap_pool(t.shape(0)[2:], kernel, strides, dil, pads, bool(t.int("ceil_mode", 0)), True,
                    bool(t.int("count_include_pad", 0)))
    x = t.inp(0)
    if any(plan.pads):
        x = _pad_first(t, x, list(zip(plan.pads[:nd], plan.pads[nd:])), nd, note="explicit pooling padding")
    for axis, name, k, s, d, extent, span in plan.axes():
        lead = ":, :, " + ":, " * axis
        step = f":{s}" if s != 1 else ""
        var = t.gen.names.take(f"{_hint(t)}_{name}")
        if k == 1:
            t.gen.emit(f"{var} = {x}[{lead}0:{span}{step}]", f"pooling of size 1 along the {name}")
        else:
            t.gen.emit(f"{var} = torch.stack([{x}[{lead}i:i + {span}{step}] for i in range(0, {extent}, {d})]).sum(0)",
                       f"dilated average pooling along the {name}: sum of {k} taps {d} apart")
        x = var
    inverse = _buffer(t, _hint(t) + "_inverse_count", (1.0 / plan.divisor).astype(np.float32))
    t.assign(f"{x} * {inverse}", comment="mean: divided by the taps each window counts")


@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(t: Translation) -> None:
    rank = len(t.shape(0))
    dims = tuple(range(2, rank))
    fn = "mean" if t.op == "GlobalAveragePool" else "amax"
    t.assign(f"{t.inp(0)}.{fn}(dim={dims}, keepdim=True)")


def _linear(t: Translation, weight_oi: np.ndarray, bias: np.ndarray | None, x: str, out_node=None) -> None:
    out_f, in_f = weight_oi.shape
    args = [str(in_f), str(out_f)] + ([] if bias is not None else ["bias=False"])
    mod = _module(t, f"nn.Linear({', '.join(args)})", {"weight": weight_oi, "bias": bias})
    if out_node is None:
        t.assign(f"self.{mod}({x})")
    else:
        name = t.gen.var(out_node.outputs[0])
        t.gen.emit(f"{name} = self.{mod}({x})")
        t.absorb(out_node, name)


def _linear_nd(node):
    """``Reshape(x, (-1, K)) -> MatMul(W) -> Reshape(back)``: a Linear on ``x`` itself.

    tf2onnx writes a Keras Dense on an N-D input this way; ``nn.Linear`` acts on
    the last axis of any tensor, so the two reshapes disappear.  Returns the
    original input and the reshape back, or None.
    """
    w = const_array(node.inputs[1]) if node.op_type == "MatMul" else None
    flat = node.inputs[0].producer()
    if w is None or w.ndim != 2 or flat is None or flat.op_type != "Reshape":
        return None
    if len(flat.outputs[0].consumers()) != 1 or flat.outputs[0].is_graph_output():
        return None
    x = flat.inputs[0]
    shape, flat_shape = static_shape(x), static_shape(flat.outputs[0])
    if shape is None or len(shape) < 3 or shape[-1] != w.shape[0]:
        return None
    if flat_shape != (int(np.prod(shape[:-1])), w.shape[0]):
        return None
    users = node.outputs[0].consumers()
    if len(users) != 1 or node.outputs[0].is_graph_output() or users[0].op_type != "Reshape":
        return None
    if static_shape(users[0].outputs[0]) != tuple(shape[:-1]) + (w.shape[1],):
        return None
    return x, users[0]


@register("MatMul")
def matmul(t: Translation) -> None:
    w = t.const(1)
    nd = _linear_nd(t.node)
    if nd is not None:
        x, back = nd
        bias, add = t.following_bias(w.shape[1], back)
        _linear(t, np.ascontiguousarray(w.T), bias, t.gen.expr(x), add or back)
        if add is not None:
            t.absorb(back, t.gen.values[add.outputs[0]])
        return
    if w is not None and w.ndim == 2 and t.const(0) is None:
        bias, add = t.following_bias(w.shape[1])
        _linear(t, np.ascontiguousarray(w.T), bias, t.inp(0), add)
        return
    t.assign(f"torch.matmul({t.inp(0)}, {t.inp(1)})")


@register("Gemm")
def gemm(t: Translation) -> None:
    alpha, beta = t.float("alpha", 1.0), t.float("beta", 1.0)
    ta, tb = t.int("transA", 0), t.int("transB", 0)
    w = t.const(1)
    c = t.const(2) if t.has_input(2) else None
    if w is not None and alpha == 1.0 and not ta and (not t.has_input(2) or (c is not None and beta == 1.0)):
        weight = w if tb else w.T
        bias = None if c is None else np.broadcast_to(c, (weight.shape[0],)).astype(np.float32)
        _linear(t, np.ascontiguousarray(weight), bias, t.inp(0))
        return
    a = f"{t.inp(0)}.T" if ta else t.inp(0)
    b = f"{t.inp(1)}.T" if tb else t.inp(1)
    expr = f"torch.matmul({a}, {b})"
    if alpha != 1.0:
        expr = f"{py_literal(np.float32(alpha))} * {expr}"
    if t.has_input(2):
        cexpr = t.inp(2) if beta == 1.0 else f"{py_literal(np.float32(beta))} * {t.inp(2)}"
        expr = f"{expr} + {cexpr}"
    t.assign(expr)


@register("Transpose")
def transpose(t: Translation) -> None:
    perm = t.ints("perm") or list(reversed(range(len(t.shape(0)))))
    t.assign(f"{t.inp(0)}.permute{tuple(perm)}", comment=layout_note(t.node, perm))


@register("Reshape")
def reshape(t: Translation) -> None:
    users = t.node.outputs[0].consumers()
    if len(users) == 1 and (_linear_nd(users[0]) is not None or _group_norm_of(users[0]) is not None):
        t.alias(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")  # unused: the Linear/GroupNorm takes the N-D input
        return
    t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Flatten")
def flatten(t: Translation) -> None:
    axis = t.int("axis", 1)
    if axis == 1:
        t.assign(f"torch.flatten({t.inp(0)}, 1)")
    else:
        t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Squeeze", "Unsqueeze")
def squeeze(t: Translation) -> None:
    t.assign(f"{t.inp(0)}.reshape{_shape_args(t.out_shape())}")


@register("Concat")
def concat(t: Translation) -> None:
    parts = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"torch.cat([{parts}], dim={t.int('axis')})")


@register("Split")
def split(t: Translation) -> None:
    axis = t.int("axis", 0)
    sizes = [s[axis] for s in (t.out_shape(j) for j in range(len(t.node.outputs)))]
    names = ", ".join(t.out(j) for j in range(len(t.node.outputs)))
    t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = torch.split({t.inp(0)}, {list(sizes)}, dim={axis})")


@register("Slice")
def slice_(t: Translation) -> None:
    shape = t.shape(0)
    index = [":"] * len(shape)
    for a, start, stop, step in t.slice_bounds():
        index[a] = f"{start or ''}:{stop if stop != shape[a] else ''}" + (f":{step}" if step != 1 else "")
    while index and index[-1] == ":":
        index.pop()
    t.assign(f"{t.inp(0)}[{', '.join(index) or '...'}]")


@register("Gather")
def gather(t: Translation) -> None:
    axis = t.int("axis", 0) % len(t.shape(0))
    idx = t.const(1)
    lead = ", ".join([":"] * axis)
    prefix = f"{lead}, " if lead else ""
    if idx is not None and idx.ndim == 0:
        t.assign(f"{t.inp(0)}[{prefix}{int(idx) % t.shape(0)[axis]}]")
        return
    table = embedding_lookup(t)
    if table is not None:
        mod = _module(t, f"nn.Embedding({table.shape[0]}, {table.shape[1]})", {"weight": table})
        t.assign(f"self.{mod}({t.inp(1)})")
        return
    t.assign(f"torch.index_select({t.inp(0)}, {axis}, {t.inp(1)}.reshape(-1)).reshape{_shape_args(t.out_shape())}")


@register("GatherElements")
def gather_elements(t: Translation) -> None:
    """``torch.gather``, which like ONNX lets the indices be shorter than the data on the other
    axes; negative indices (ONNX counts them from the end) are wrapped first."""
    shape = t.const_shape(0)
    axis = t.int("axis", 0) % len(shape)
    idx = t.const(1)
    if idx is not None:
        index = _buffer(t, _hint(t) + "_index", np.where(idx < 0, idx + shape[axis], idx).astype(np.int64))
    else:
        i = f"{t.inp(1)}.long()"
        index = f"torch.where({i} < 0, {i} + {shape[axis]}, {i})"
    t.assign(f"torch.gather({t.inp(0)}, {axis}, {index})")


@register("GatherND")
def gather_nd(t: Translation) -> None:
    """One index into ``data`` flattened over the indexed (and batch) axes (see ``codegen.GatherND``)."""
    plan = plan_gather_nd(t)
    data = f"{t.inp(0)}.reshape{_shape_args(plan.data_shape)}"
    if plan.linear is not None:
        t.assign(f"{data}[{_buffer(t, _hint(t) + '_index', plan.linear)}]")
        return
    i = f"{t.inp(1)}.long()"
    i = f"torch.where({i} < 0, {i} + torch.tensor({plan.dims}), {i})"
    linear = f"({i} * torch.tensor({plan.strides})).sum(-1)"
    if plan.batch_dims:
        linear = f"{linear} + {_buffer(t, _hint(t) + '_offset', plan.offset)}"
    t.assign(f"{data}[{linear}]")


@register("ReduceProd")
def reduce_prod(t: Translation) -> None:
    """``torch.prod`` takes one axis: one product per axis, from the last."""
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    keep = bool(t.int("keepdims", 1))
    expr = t.inp(0)
    for d in reversed(dims):
        expr = f"{expr}.prod(dim={d}, keepdim={keep})"
    t.assign(expr)


_REDUCE = {
    "ReduceMean": "{x}.mean(dim={d}, keepdim={k})", "ReduceSum": "{x}.sum(dim={d}, keepdim={k})",
    "ReduceMax": "{x}.amax(dim={d}, keepdim={k})", "ReduceMin": "{x}.amin(dim={d}, keepdim={k})",
    "ReduceL2": "torch.linalg.vector_norm({x}, 2, dim={d}, keepdim={k})",
    "ReduceL1": "torch.linalg.vector_norm({x}, 1, dim={d}, keepdim={k})",
    "ReduceSumSquare": "({x} * {x}).sum(dim={d}, keepdim={k})",
    "ReduceLogSumExp": "torch.logsumexp({x}, dim={d}, keepdim={k})",
}


@register(*_REDUCE)
def reduce(t: Translation) -> None:
    dims = t.reduce_axes()
    if dims is None:
        t.alias(t.inp(0))
        return
    t.assign(_REDUCE[t.op].format(x=t.inp(0), d=tuple(dims), k=bool(t.int("keepdims", 1))))


@register("Pad")
def pad(t: Translation) -> None:
    mode = t.str("mode", "constant")
    pads = t.need_const(1, "pads").tolist()
    rank = len(t.shape(0))
    value = t.const(2) if t.has_input(2) else None
    axes = t.const(3).tolist() if t.has_input(3) else list(range(rank))
    pairs = {a % rank: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    first = min((a for a, p in pairs.items() if any(p)), default=rank - 1)
    order = []
    for a in range(rank - 1, first - 1, -1):
        order += list(pairs.get(a, (0, 0)))
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    extra = ""
    if torch_mode == "constant" and value is not None and float(value) != 0.0:
        extra = f", value={py_literal(value)}"
    elif torch_mode != "constant":
        extra = f", mode='{torch_mode}'"
    t.assign(f"F.pad({t.inp(0)}, {tuple(int(v) for v in order)}{extra})")


@register("Expand")
def expand(t: Translation) -> None:
    t.assign(f"{t.inp(0)}.expand{shape_literal(t.out_shape())}")


@register("Tile")
def tile(t: Translation) -> None:
    reps = t.need_const(1, "repeats").tolist()
    t.assign(f"{t.inp(0)}.repeat{shape_literal(reps)}")


@register("Einsum")
def einsum(t: Translation) -> None:
    eq = t.str("equation")
    operands = ", ".join(t.inp(i) for i in range(len(t.node.inputs)))
    t.assign(f"torch.einsum({eq!r}, {operands})")


# -- DepthToSpace, SpaceToDepth, LRN, GroupNormalization, InstanceNormalization ----------------


@register("DepthToSpace")
def depth_to_space(t: Translation) -> None:
    """``nn.PixelShuffle`` for CRD order; TensorFlow's DCR order as reshape/permute."""
    n, c, h, w = t.shape(0)
    bs, mode = t.int("blocksize"), t.str("mode", "DCR")
    if mode == "CRD":
        t.assign(f"self.{_module(t, f'nn.PixelShuffle({bs})')}({t.inp(0)})")
        return
    c_out = c // (bs * bs)
    t.assign(f"{t.inp(0)}.reshape({n}, {bs}, {bs}, {c_out}, {h}, {w}).permute(0, 3, 4, 1, 5, 2)"
             f".reshape({n}, {c_out}, {h * bs}, {w * bs})",
             comment="depth to space, DCR order (nn.PixelShuffle is CRD)")


@register("SpaceToDepth")
def space_to_depth(t: Translation) -> None:
    """ONNX orders the output channels ``(b1 * block + b2) * C + c``; ``nn.PixelUnshuffle`` ``c * block**2 + ...``."""
    n, c, h, w = t.shape(0)
    bs = t.int("blocksize")
    t.assign(f"{t.inp(0)}.reshape({n}, {c}, {h // bs}, {bs}, {w // bs}, {bs}).permute(0, 3, 5, 1, 2, 4)"
             f".reshape({n}, {c * bs * bs}, {h // bs}, {w // bs})",
             comment="space to depth (nn.PixelUnshuffle orders channels differently)")


def _group_norm_of(node):
    """Moved to ``ops.norm.torch_group_norm_of``; the Reshape translator here still calls it by this name."""
    from .ops.norm import torch_group_norm_of

    return torch_group_norm_of(node)


# -- ArgMax / ArgMin, CumSum, TopK, ReverseSequence, LSTM / GRU ------------------------------------


def _axis_pad(axis: int, rank: int, before: int) -> tuple[int, ...]:
    """``F.pad`` widths that add ``before`` elements at the start of ``axis`` only."""
    return (0, 0) * (rank - 1 - axis) + (before, 0)


@register("ArgMax", "ArgMin")
def arg_extreme(t: Translation) -> None:
    """``torch.argmax`` / ``argmin`` (first index of ties); ``select_last_index`` searches the flipped axis."""
    rank = len(t.shape(0))
    axis = t.int("axis", 0) % rank
    keep = bool(t.int("keepdims", 1))
    fn = "torch.argmax" if t.op == "ArgMax" else "torch.argmin"
    if t.int("select_last_index", 0):
        last = t.shape(0)[axis] - 1
        t.assign(f"{last} - {fn}({t.inp(0)}.flip({axis}), dim={axis}, keepdim={keep})", comment="last index of ties")
    else:
        t.assign(f"{fn}({t.inp(0)}, dim={axis}, keepdim={keep})")


@register("CumSum")
def cumsum(t: Translation) -> None:
    """``torch.cumsum``; ``reverse`` flips around it, ``exclusive`` shifts the input one step along the axis."""
    shape = t.shape(0)
    rank = len(shape)
    axis = int(t.need_const(1, "the axis").reshape(-1)[0]) % rank
    x = f"{t.inp(0)}.flip({axis})" if t.int("reverse", 0) else t.inp(0)
    if t.int("exclusive", 0):
        x = f"F.pad({x}.narrow({axis}, 0, {shape[axis] - 1}), {_axis_pad(axis, rank, 1)})"
    dtype = DTYPE_NAMES.get(t.out_dtype().value)
    keep_int = np.issubdtype(_np_dtype(t), np.integer) and dtype != "torch.int64"
    expr = f"torch.cumsum({x}, dim={axis}{f', dtype={dtype}' if keep_int else ''})"  # torch sums ints as int64
    t.assign(f"{expr}.flip({axis})" if t.int("reverse", 0) else expr)


@register("TopK")
def topk(t: Translation) -> None:
    """``torch.topk``: values and int64 indices (``sorted=0`` leaves the order to the implementation)."""
    k = int(t.need_const(1, "K").reshape(-1)[0])
    rank = len(t.shape(0))
    axis = t.int("axis", -1) % rank
    args = [t.inp(0), str(k), f"dim={axis}"] + ([] if t.int("largest", 1) else ["largest=False"])
    args += [] if t.int("sorted", 1) else ["sorted=False"]
    t.gen.emit(f"{t.out(0)}, {t.out(1)} = torch.topk({', '.join(args)})")
