"""Pooling: MaxPool, AveragePool, LpPool and their Global forms, in 1-D, 2-D and 3-D.

A window of ``kernel_shape`` taps ``dilations`` apart slides by ``strides`` over the input
padded by ``pads`` (``auto_pad`` is already explicit pads after normalize's ExplicitPads
when shapes are static); ``ceil_mode`` adds a last window that runs past the end, unless
it would start in the end padding.  A max ignores the padding, a mean counts it only with
``count_include_pad``.  PyTorch's and Keras' pooling layers pad symmetrically (or "same"),
so other paddings are written explicitly here, and the means rescaled where they would
divide by the wrong count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...normalize.padding import (
    ceil_end_pads,
    mean_divisor,
    pool_len,
    same_pads,
    tap_pool,
    valid_counts,
)
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register


@dataclass
class PoolPlan:
    nd: int
    kernel: list[int]
    strides: list[int]
    pads: list[int]
    dil: list[int]
    ceil: bool
    include_pad: bool  # AveragePool's count_include_pad (False for MaxPool)
    indices: str | None = None  # the name of MaxPool's Indices output when something reads it
    storage_order: int = 0  # Indices count row-major (0) or column-major (1)
    same: str | None = None  # "SAME_UPPER"/"SAME_LOWER" left for run time: spatial sizes that vary


def read_pool(t: Translation) -> PoolPlan:
    """MaxPool's and AveragePool's attributes, as every opset gives them (absent ones default)."""
    kernel = t.ints("kernel_shape")
    if kernel is None:
        t.unsupported(f"{t.op} without kernel_shape")
    nd = len(kernel)
    if nd not in (1, 2, 3):
        t.unsupported(f"{nd}-D pooling")
    auto_pad = t.str("auto_pad", "NOTSET")
    varying = not all(isinstance(n, int) for n in t.dims(0)[2:])
    if auto_pad != "NOTSET" and not (varying and auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID")
                                     and t.op in ("MaxPool", "AveragePool")):
        t.unsupported("auto_pad with an unknown input shape")  # normalize's ExplicitPads took every static one
    is_max = t.op == "MaxPool"
    indices = None
    if is_max and len(t.node.outputs) > 1 and (t.node.outputs[1].uses() or t.node.outputs[1].is_graph_output()):
        indices = t.node.outputs[1].name or "Indices"
    plan = PoolPlan(nd=nd, kernel=kernel, strides=t.ints("strides", [1] * nd), pads=t.ints("pads", [0] * (2 * nd)),
                    dil=t.ints("dilations", [1] * nd), ceil=bool(t.int("ceil_mode", 0)),
                    include_pad=not is_max and bool(t.int("count_include_pad", 0)), indices=indices,
                    storage_order=t.int("storage_order", 0) if is_max else 0,
                    same=auto_pad if auto_pad.startswith("SAME") else None)
    if auto_pad != "NOTSET":  # the padding is the run time's (same) or none (VALID)
        plan.pads, plan.ceil = [0] * (2 * nd), False
    if indices is not None and plan.storage_order == 1 and nd == 3:
        t.unsupported(f"MaxPool output {indices!r} (Indices) with storage_order=1 on a 3-D input")
    return plan


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
    out = t.out_sizes(0, range(2, t.rank(0)))
    return all(torch_pool_len(n, k, s, bg, d, True) == o
               for n, k, s, bg, d, o in zip(shape, kernel, strides, begins, dil, out))


@register
class Pool(Op):
    """MaxPool and AveragePool; MaxPool's optional second output holds each maximum's
    index into the whole input flattened (N, C and the spatial axes; padding not counted)."""

    types = ("MaxPool", "AveragePool")
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> PoolPlan:
        return read_pool(t)

    # -- PyTorch ----------------------------------------------------------------
    def torch(self, t: Translation, p: PoolPlan) -> None:
        nd, kernel, strides, pads, dil, ceil = p.nd, p.kernel, p.strides, p.pads, p.dil, p.ceil
        is_max = t.op == "MaxPool"
        include_pad = p.include_pad
        if p.same:
            self._torch_same(t, p, is_max)
            return
        if not is_max and any(d != 1 for d in dil):
            _dilated_average(t, p)
            return
        args = [f"kernel_size={T.tuple_or_int(kernel)}", f"stride={T.tuple_or_int(strides)}"]
        begins, ends = pads[:nd], pads[nd:]
        x = t.inp(0)
        rescale = None
        padded = False  # padded here, before an unpadded nn pool
        # AvgPool3d checks the *unpadded* input against the kernel: pad it explicitly instead
        small_3d = not is_max and nd == 3 and any(n < k for n, k in zip(t.sizes(0, range(2, t.rank(0))), kernel))
        if begins == ends and all(bg <= k // 2 for bg, k in zip(begins, kernel)) and not small_3d:
            if any(begins):
                args.append(f"padding={T.tuple_or_int(begins)}")
                if not is_max:
                    args.append(f"count_include_pad={include_pad}")
        elif not ceil and not small_3d and (is_max or not include_pad) and _ceil_pads_fit(t, t.sizes(0, range(2, t.rank(0))), kernel,
                                                                                            strides, begins, ends, dil):
            # TF "same" pooling: the extra end padding becomes PyTorch's ceil_mode windows,
            # which PyTorch clips to the input (and averages over what is left).
            if any(begins):
                args.append(f"padding={T.tuple_or_int(begins)}")
            args.append("ceil_mode=True")
            if not is_max:
                args.append("count_include_pad=False")
        elif is_max:
            if p.indices is not None:
                t.unsupported(f"MaxPool output {p.indices!r} (Indices) with padding {pads} that nn.MaxPool{nd}d "
                              "cannot take (its indices would count the explicit padding)")
            x = T.pad_first(t, x, list(zip(begins, ends)), nd, value=float("-inf"))
            padded = True
        else:
            padded = True
            if ceil and not include_pad:
                t.unsupported("ceil_mode average pooling with asymmetric padding excluded from the mean")
            x = T.pad_first(t, x, list(zip(begins, ends)), nd)
            if not include_pad:  # the zero-padded mean divides by the whole window; TF by its real part
                counts = valid_counts(t.sizes(0, range(2, t.rank(0))), kernel, strides, begins, t.out_sizes(0, range(2, t.rank(0))))
                rescale = T.buffer(t, T.hint(t) + "_rescale", float(np.prod(kernel)) / counts)
        if ceil:
            args.append("ceil_mode=True")
        if is_max:
            if any(d != 1 for d in dil):
                args.append(f"dilation={T.tuple_or_int(dil)}")
            if p.indices is not None:
                args.append("return_indices=True")
            ctor = f"nn.MaxPool{nd}d({', '.join(args)})"
        else:
            ctor = f"nn.AvgPool{nd}d({', '.join(args)})"
        mod = T.module(t, ctor)
        call = f"self.{mod}({x})"
        if p.indices is not None:
            self._with_indices(t, p, call)
            return
        if ceil and padded:
            # ONNX drops a ceil_mode window that would start in the end padding; on the padded
            # input PyTorch sees no padding and keeps it: crop it off
            shape = t.sizes(0, range(2, t.rank(0)))
            want = [pool_len(n, k, s, b, e, d, True)
                    for n, k, s, b, e, d in zip(shape, kernel, strides, begins, ends, dil)]
            got = [torch_pool_len(n + b + e, k, s, 0, d, True)
                   for n, k, s, b, e, d in zip(shape, kernel, strides, begins, ends, dil)]
            if want != got:
                call += "[:, :, " + ", ".join(f":{w}" if w != g else ":" for w, g in zip(want, got)) + "]"
        if rescale is None:
            t.assign(call)
        else:
            t.assign(f"{call} * {rescale}", comment="mean over the unpadded part of each window")

    @staticmethod
    def _torch_same(t: Translation, p: PoolPlan, is_max: bool) -> None:
        """ONNX's (TensorFlow's) "same" over sizes that vary: ``same_padding`` pads by what each
        size needs when the model runs (-inf before a max); a mean that leaves the padding out
        divides by the same pooling of a padded mask of ones."""
        if p.indices is not None or (not is_max and any(d != 1 for d in p.dil)):
            t.unsupported(f"{p.same} pooling over a varying size with Indices or dilations")
        t.gen.helpers.add("same_padding")
        where = f"{tuple(p.kernel)}, {tuple(p.strides)}, {tuple(p.dil)}{', upper=False' if p.same == 'SAME_LOWER' else ''}"
        args = [f"kernel_size={T.tuple_or_int(p.kernel)}", f"stride={T.tuple_or_int(p.strides)}"]
        if is_max and any(d != 1 for d in p.dil):
            args.append(f"dilation={T.tuple_or_int(p.dil)}")
        mod = T.module(t, f"nn.{'Max' if is_max else 'Avg'}Pool{p.nd}d({', '.join(args)})")
        fill = ", value=float('-inf')" if is_max else ""
        pooled = f"self.{mod}(same_padding({t.inp(0)}, {where}{fill}))"
        if is_max or p.include_pad:
            t.assign(pooled, comment=f"{p.same}: padded by what the size needs")
            return
        ones = f"same_padding(torch.ones_like({t.inp(0)}[:, :1]), {where})"
        t.assign(f"{pooled} / self.{mod}({ones})", comment=f"{p.same}: the mean over each window's unpadded part")

    @staticmethod
    def _with_indices(t: Translation, p: PoolPlan, call: str) -> None:
        """``return_indices=True`` gives each maximum's index into its own (n, c) plane of the
        unpadded input, row-major, the first maximum of a tie as in onnxruntime; ONNX counts
        into the whole tensor: plus ``(n * C + c) * plane``, column-major if asked."""
        shape = t.shape(0)
        sizes = shape[2:]
        plane = int(np.prod(sizes))
        raw = t.gen.names.take(t.layer_hint() + "_argmax")
        t.gen.emit(f"{t.out(0)}, {raw} = {call}")
        if p.storage_order == 1 and p.nd == 2:
            h, w = sizes
            raw = f"({raw} // {w} + ({raw} % {w}) * {h})"
        n, c = shape[0], shape[1]
        offset = f"torch.arange({n * c}, device={t.inp(0)}.device).reshape({n}, {c}{', 1' * p.nd}) * {plane}"
        t.assign(f"{raw} + {offset}", j=1, comment="indices into the whole input flattened, as ONNX counts them")

    # -- Keras ------------------------------------------------------------------
    def keras(self, t: Translation, p: PoolPlan) -> None:
        if p.indices is not None:
            t.unsupported(f"MaxPool output {p.indices!r} (Indices) is read: Keras has no max pooling that "
                          "returns the positions of its maxima")
        K.channels_last(t)
        nd, kernel, strides, pads, dil = p.nd, p.kernel, p.strides, p.pads, p.dil
        is_max = t.op == "MaxPool"
        if any(d != 1 for d in dil):
            if p.same:
                t.unsupported(f"dilated {p.same} pooling over a varying size")
            _tap_pool(t, p, is_max)
            return
        if not all(isinstance(n, int) for n in t.dims(0)[2:]):
            self._keras_varying(t, p, is_max)
            return
        x = t.inp(0)
        rescale = None
        in_sizes = t.sizes(0, range(2, t.rank(0)))
        include_pad = p.include_pad
        counted = pads  # the padding a mean counting it counts: not the overhang of ceil_mode's windows
        if p.ceil:
            # ceil_mode as floor mode with larger end pads: its extra windows see only padding beyond
            # the input, which max pooling and pad-excluding means ignore (a counting mean is rescaled)
            pads = list(pads[:nd]) + ceil_end_pads(in_sizes, kernel, strides, [1] * nd, pads)
        begins, ends = pads[:nd], pads[nd:]
        out_sizes = [(n + b + e - k) // s + 1 for n, b, e, k, s in zip(in_sizes, begins, ends, kernel, strides)]
        if not any(pads):
            padding = "valid"
        elif (pads == same_pads(in_sizes, kernel, strides, dil, upper=True) and not include_pad
              and not K.tf_3d_same_shifts(in_sizes, kernel, strides, dil)):
            padding = "same"  # TF's "same" pooling ignores the padding, as ONNX does here
        else:
            x, padding = K.pool_pad(t, x, pads, is_max), "valid"
            if not is_max:  # the zero-padded mean divides by the whole window: rescale by kernel / count
                counts = mean_divisor(in_sizes, kernel, strides, dil, counted, out_sizes, include_pad)
                if np.any(counts != np.prod(kernel)):
                    rescale = np.moveaxis(float(np.prod(kernel)) / counts, 1, -1)  # (1, *spatial, 1): channels-last
        cls = f"{'Max' if is_max else 'Average'}Pooling{nd}D"
        args = [f"pool_size={K.tuple_or_int(kernel)}", f"strides={K.tuple_or_int(strides)}"]
        if padding != "valid":
            args.append(f"padding={padding!r}")
        if rescale is None:
            t.assign(K.layer(t, cls, args, None, x))
        else:
            pooled = K.layer(t, cls, args, None, x)
            factor = K.new_constant(t, rescale, "rescale")
            what = "the padded input (not ceil_mode's overhang)" if include_pad else "the unpadded part"
            t.assign(f"ops.multiply({pooled}, {factor})", comment=f"mean over {what} of each window")

    @staticmethod
    def _keras_varying(t: Translation, p: PoolPlan, is_max: bool) -> None:
        """Pooling over spatial sizes that vary: the padding must not depend on them.  "same"
        where it pads alike at every size (stride-1 axes), else the pads made explicit (-inf
        before a max, zeros before a mean).  ceil_mode's last window is ``stride - 1`` more
        end padding, exact where that window never starts in the end padding (end pad <=
        kernel - stride; refused otherwise).  A mean whose divisor is not the whole window
        (padding left out of it, or ceil_mode's overhang) divides by the same pooling of a
        mask of ones, which counts at run time what each window holds."""
        nd, kernel, strides, pads, dil = p.nd, p.kernel, p.strides, p.pads, p.dil
        dims = t.dims(0)[2:]
        if p.same:  # TF's own "same": SAME_UPPER, the padding left out of a mean
            if p.same != "SAME_UPPER" or p.include_pad or (nd == 3 and any(k < s for k, s in zip(kernel, strides))):
                t.unsupported(f"{p.same} pooling over a varying size ({dims}) that Keras' 'same' does not compute")
            cls = f"{'Max' if is_max else 'Average'}Pooling{nd}D"
            args = [f"pool_size={K.tuple_or_int(kernel)}", f"strides={K.tuple_or_int(strides)}", "padding='same'"]
            t.assign(K.layer(t, cls, args, None, t.inp(0)))
            return
        varying = [not isinstance(n, int) for n in dims]
        in_sizes = [1 if v else n for v, n in zip(varying, dims)]
        begins, ends = list(pads[:nd]), list(pads[nd:])
        grown = ends  # the end pads with ceil_mode's extra windows
        if p.ceil:
            fixed = ceil_end_pads(in_sizes, kernel, strides, [1] * nd, pads)
            grown = []
            for i in range(nd):
                if varying[i] and ends[i] + strides[i] > kernel[i]:
                    t.unsupported(f"ceil_mode pooling over a varying size ({dims[i]}) whose last window can start "
                                  f"in the end padding (end pad {ends[i]}, stride {strides[i]}, kernel {kernel[i]})")
                grown.append(ends[i] + strides[i] - 1 if varying[i] else fixed[i])
        x, padding = t.inp(0), "valid"
        if (any(pads) and not p.ceil and not any(v and s != 1 for v, s in zip(varying, strides)) and not p.include_pad
                and pads == same_pads(in_sizes, kernel, strides, dil, upper=True)
                and not K.tf_3d_same_shifts(in_sizes, kernel, strides, dil)):
            padding = "same"
        elif any(begins + grown):
            x = K.pool_pad(t, x, begins + grown, is_max)
        cls = f"{'Max' if is_max else 'Average'}Pooling{nd}D"
        args = [f"pool_size={K.tuple_or_int(kernel)}", f"strides={K.tuple_or_int(strides)}"]
        if padding != "valid":
            args.append(f"padding={padding!r}")
        pooled = K.layer(t, cls, args, None, x)
        if is_max or padding == "same" or (grown == ends and (p.include_pad or not any(pads))):
            t.assign(pooled)
            return
        # ones over the input (and over its padding when the mean counts it), zeros past it
        mask = t.gen.names.take(t.layer_hint() + "_mask")
        counted = [(b, e) if p.include_pad else (0, 0) for b, e in zip(begins, ends)]
        rest = [(b - c, g - d) for b, g, (c, d) in zip(begins, grown, counted)]
        ones = f"ops.ones_like({t.inp(0)}[..., :1])"
        if any(b or e for b, e in counted):
            ones = f"ops.pad({ones}, {[(0, 0), *counted, (0, 0)]}, constant_values=1.0)"
        t.gen.emit(f"{mask} = ops.pad({ones}, {[(0, 0), *rest, (0, 0)]})",
                   "1 where a window's mean counts, 0 where it does not: pooled, each window's share")
        counts = K.layer(t, cls, args, None, mask, name=t.layer_hint() + "_count")
        t.assign(f"ops.divide({pooled}, {counts})", comment="mean over what each window counts, at every size")


def _torch_taps(t: Translation, x: str, plan, what: str = "dilated average pooling") -> str:
    """``x`` zero-padded, then on each spatial axis the sum of the ``k`` strided slices ``d`` apart:
    each window's sum (``plan`` from ``tap_pool``)."""
    nd = len(plan.kernel)
    if any(plan.pads):
        x = T.pad_first(t, x, list(zip(plan.pads[:nd], plan.pads[nd:])), nd, note="explicit pooling padding")
    for axis, name, k, s, d, extent, span in plan.axes():
        lead = ":, :, " + ":, " * axis
        step = f":{s}" if s != 1 else ""
        var = t.gen.names.take(f"{T.hint(t)}_{name}")
        if k == 1:
            t.gen.emit(f"{var} = {x}[{lead}0:{span}{step}]", f"pooling of size 1 along the {name}")
        else:
            t.gen.emit(f"{var} = torch.stack([{x}[{lead}i:i + {span}{step}] for i in range(0, {extent}, {d})]).sum(0)",
                       f"{what} along the {name}: sum of {k} taps {d} apart")
        x = var
    return x


def _dilated_average(t: Translation, p: PoolPlan) -> None:
    """nn.AvgPool has no dilation (ONNX has since opset 19): each window's sum over the taps,
    then divided by the taps each window counts."""
    plan = tap_pool(t.sizes(0, range(2, t.rank(0))), p.kernel, p.strides, p.dil, p.pads, p.ceil, True, p.include_pad)
    x = _torch_taps(t, t.inp(0), plan)
    inverse = T.buffer(t, T.hint(t) + "_inverse_count", (1.0 / plan.divisor).astype(np.float32))
    t.assign(f"{x} * {inverse}", comment="mean: divided by the taps each window counts")


def _keras_taps(t: Translation, x: str, plan, is_max: bool) -> str:
    """Keras pooling takes no dilation: ``x`` (channels-last) padded (with -inf for a max), then on
    each spatial axis the max or sum of the ``k`` strided slices that start ``d`` apart (a max or
    sum over a box is one over each axis in turn)."""
    x = K.pool_pad(t, x, plan.pads, is_max) if any(plan.pads) else x
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
    return x


def _tap_pool(t: Translation, p: PoolPlan, is_max: bool) -> None:
    """A dilated max or average for Keras: the taps' max or sum, an average then divided by the
    taps each window counts."""
    plan = tap_pool(t.sizes(0, range(2, t.rank(0))), p.kernel, p.strides, p.dil, p.pads, p.ceil, not is_max, p.include_pad)
    x = _keras_taps(t, t.inp(0), plan, is_max)
    if is_max:
        t.alias(x)
        return
    inverse = np.moveaxis(1.0 / plan.divisor, 1, -1).astype(np.float32)  # (1, *spatial, 1): channels-last
    factor = K.new_constant(t, inverse, "inverse_count")
    t.assign(f"ops.multiply({x}, {factor})", comment="mean: divided by the taps each window counts")


def read_p(t: Translation) -> float:
    """LpPool's and GlobalLpPool's ``p``: a float before opset 2, an int since (default 2)."""
    attr = t.node.attributes.get("p")
    p = 2.0 if attr is None else float(attr.value)
    if p <= 0:
        t.unsupported(f"{t.op} with p={p}")
    return p


def _num(p: float) -> str:
    return str(int(p)) if p == int(p) else repr(p)


@register
class LpPool(Op):
    """``(sum over the window of |x| ** p) ** (1 / p)``, the padding adding zeros."""

    types = ("LpPool",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> tuple[PoolPlan, float]:
        return read_pool(t), read_p(t)

    def torch(self, t: Translation, plan) -> None:
        p, power = plan
        x = t.inp(0)
        if power % 2 == 0 and not any(p.pads) and not any(d != 1 for d in p.dil) and not p.ceil:
            # nn.LPPool pools x ** p: |x| ** p for an even p; its mean times the window is the sum
            args = [_num(power), T.tuple_or_int(p.kernel), f"stride={T.tuple_or_int(p.strides)}"]
            mod = T.module(t, f"nn.LPPool{p.nd}d({', '.join(args)})")
            t.assign(f"self.{mod}({x})")
            return
        taps = tap_pool(t.sizes(0, range(2, t.rank(0))), p.kernel, p.strides, p.dil, p.pads, p.ceil, False, False)
        powered = t.gen.names.take(T.hint(t) + "_powered")
        t.gen.emit(f"{powered} = {x}.abs().pow({_num(power)})")
        t.assign(f"{_torch_taps(t, powered, taps, 'p-norm pooling')}.pow({1 / power!r})", comment="the p-norm of each window")

    def keras(self, t: Translation, plan) -> None:
        K.channels_last(t)
        p, power = plan
        taps = tap_pool(t.sizes(0, range(2, t.rank(0))), p.kernel, p.strides, p.dil, p.pads, p.ceil, False, False)
        powered = t.gen.names.take(t.layer_hint() + "_powered")
        t.gen.emit(f"{powered} = ops.power(ops.abs({t.inp(0)}), {_num(power)})")
        summed = _keras_taps(t, powered, taps, False)
        t.assign(f"ops.power({summed}, {1 / power!r})", comment="the p-norm of each window")


@register
class GlobalPool(Op):
    """The mean or max over every spatial axis, kept as size-1 axes."""

    types = ("GlobalAveragePool", "GlobalMaxPool")
    traits = frozenset({"layout"})

    def torch(self, t: Translation, plan) -> None:
        dims = tuple(range(2, t.rank(0)))
        fn = "mean" if t.op == "GlobalAveragePool" else "amax"
        t.assign(f"{t.inp(0)}.{fn}(dim={dims}, keepdim=True)")

    def keras(self, t: Translation, plan) -> None:
        K.channels_last(t)
        nd = t.rank(0) - 2
        cls = f"Global{'Average' if t.op == 'GlobalAveragePool' else 'Max'}Pooling{nd}D"
        t.assign(K.layer(t, cls, ["keepdims=True"], None, t.inp(0)))


@register
class GlobalLpPool(Op):
    """The p-norm over every spatial axis, kept as size-1 axes."""

    types = ("GlobalLpPool",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> float:
        return read_p(t)

    def torch(self, t: Translation, power: float) -> None:
        dims = tuple(range(2, t.rank(0)))
        t.assign(f"torch.linalg.vector_norm({t.inp(0)}, {_num(power)}, dim={dims}, keepdim=True)")

    def keras(self, t: Translation, power: float) -> None:
        K.channels_last(t)
        axes = tuple(range(1, t.rank(0) - 1))
        t.assign(f"ops.power(ops.sum(ops.power(ops.abs({t.inp(0)}), {_num(power)}), axis={axes}, keepdims=True), "
                 f"{1 / power!r})", comment="the p-norm over the spatial axes")
