"""Resize and Upsample: interpolation of the spatial axes of an ``(N, C, *spatial)`` tensor.

The ONNX spec (``onnx.reference``'s Resize is its executable form) resizes one axis at a
time: output ``o`` maps to the input coordinate ``x`` by the ``coordinate_transformation_mode``
and takes a weighted sum of ``x``'s neighbours (2 for nearest and linear, 4 for cubic),
indices past the edges reading the edge.  Where a framework layer computes exactly that
(``nn.Upsample``, ``layers.UpSampling2D``, ``layers.Resizing``) the emitters write the layer;
otherwise the spec's per-axis weights become constants: a gather of one index per output
for nearest, an ``einsum`` with an ``(out, in)`` matrix for linear and cubic.

Note that onnxruntime 1.23 departs from the spec for ``align_corners`` when ``in * scale``
is not a whole number: the spec maps with that unrounded length, onnxruntime (and
PyTorch's ``align_corners=True``) with the rounded output size.  The translation follows
the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation
from ..registry import Op, register

COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST = {  # (coordinate_transformation_mode, nearest_mode) -> PyTorch mode
    ("asymmetric", "floor"): "nearest",  # src = floor(dst / scale)
    ("half_pixel", "round_prefer_ceil"): "nearest-exact",  # src = floor((dst + 0.5) / scale)
    ("tf_half_pixel_for_nn", "floor"): "nearest-exact",
}
_LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}


@dataclass
class Resize:
    """What the spec computes.  ``scales``: per spatial axis, as given (None when ``sizes`` was)."""

    mode: str  # nearest | linear | cubic
    coord: str
    nearest_mode: str
    shape: tuple[int, ...]
    out: tuple[int, ...]
    scales: list[float] | None
    cubic_a: float
    exclude_outside: bool
    antialias: bool = False  # set only where it changes anything: some axis shrinks
    roi: list[tuple[float, float]] | None = None  # tf_crop_and_resize: (start, end) per spatial axis
    extrapolation: float = 0.0  # tf_crop_and_resize: the value of outputs that map outside the input
    factors: list[int] | None = None  # whole upsampling scales over spatial sizes that vary

    @property
    def spatial(self) -> list[tuple[int, int, float]]:
        """``(n_in, n_out, scale)`` per spatial axis; the spec's scale is ``out / in`` when sizes were given."""
        ins, outs = self.shape[2:], self.out[2:]
        scales = self.scales or [o / n for n, o in zip(ins, outs)]
        return list(zip(ins, outs, scales))

    @property
    def whole(self) -> bool:
        """Whether ``in * scale`` is the output size on every axis (layers that map by sizes agree then)."""
        return self.scales is None or all(n * s == o for n, o, s in self.spatial)


def _spatial_values(t: Translation, arr: np.ndarray, rank: int, axes: list[int] | None) -> list:
    """The spatial entries of a scales/sizes input (full rank, or one per ``axes``)."""
    values = arr.reshape(-1).tolist()
    if axes is None:
        return values[-(rank - 2):]
    by_axis = dict(zip(axes, values))
    return [by_axis[a] for a in range(2, rank)]


def read_resize(t: Translation) -> Resize:
    """The one reading of Resize (opsets 10..19) and Upsample (7, 9) for both targets.

    Upsample and Resize-10 take ``(X, scales)`` (Upsample-7: a ``scales`` attribute) and map
    coordinates asymmetrically with floor rounding; Resize-11 on takes ``(X, roi, scales, sizes)``.
    """
    rank = t.rank(0)
    if not all(isinstance(n, int) for n in t.dims(0)[2:]):
        return _read_varying(t, rank)
    # the batch may vary; the weights and layers are made for the channel and spatial sizes
    shape = (t.dims(0)[0], *t.sizes(0, range(1, rank)))
    out = (t.out_dims()[0], *t.out_sizes(0, range(1, rank)))
    if rank not in (3, 4, 5) or tuple(out[:2]) != tuple(shape[:2]):
        t.unsupported("resizing other axes than the spatial ones of an (N, C, ...) tensor")
    axes = t.ints("axes")
    if axes is not None:
        axes = [a % rank for a in axes]
        if sorted(axes) != list(range(2, rank)):
            t.unsupported("Resize axes other than the spatial ones")
    mode = t.str("mode", "nearest")
    old_style = t.op == "Upsample" or t.opset < 11
    if t.op == "Upsample" and t.opset < 7:
        t.unsupported("Upsample before opset 7 (the experimental height_scale/width_scale form)")
    if old_style:
        coord, rounding = "asymmetric", "floor"
        attr = t.node.attributes.get_floats("scales", None)
        scales = np.array(attr, np.float32) if attr is not None else t.const(1) if t.has_input(1) else None
        sizes = None
    else:
        coord = t.str("coordinate_transformation_mode", "half_pixel")
        rounding = t.str("nearest_mode", "round_prefer_floor")
        scales = t.const(2) if t.has_input(2) else None
        sizes = t.const(3) if t.has_input(3) else None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and sizes is None:
        t.unsupported("scales or sizes must be constants")
    policy = t.str("keep_aspect_ratio_policy", "stretch")
    spatial_scales = None if scales is None else [float(v) for v in _spatial_values(t, scales, rank, axes)]
    if policy != "stretch" and scales is None:  # one scale for every axis; sizes rounded half up
        ratios = [o / n for n, o in zip(shape[2:], _spatial_values(t, sizes, rank, axes))]
        if policy not in ("not_larger", "not_smaller"):
            t.unsupported(f"keep_aspect_ratio_policy={policy!r}")
        scale = min(ratios) if policy == "not_larger" else max(ratios)
        spatial_scales = [scale] * (rank - 2)
        if [int(scale * n + 0.5) for n in shape[2:]] != list(out[2:]):
            t.unsupported("sizes that do not give the output shape")
    elif spatial_scales is not None:
        products = [n * sc for n, sc in zip(shape[2:], spatial_scales)]
        integral = all(sc.is_integer() for sc in spatial_scales)
        if not integral and all(abs(p - o) < 1e-3 for p, o in zip(products, out[2:])):
            spatial_scales = None  # the scales are float32 roundings of out / in: say the size
        elif any(int(p) != o for p, o in zip(products, out[2:])):
            t.unsupported("scales that do not give the output shape")
    downscales = any(o < n for n, o in zip(shape[2:], out[2:]))
    antialias = bool(t.int("antialias", 0)) and downscales
    if antialias and mode == "nearest":
        t.unsupported("antialiased nearest resize")
    if mode not in ("nearest", "linear", "cubic"):
        t.unsupported(f"resize mode {mode}")
    if coord not in COORDS:
        t.unsupported(f"{mode} resize with {coord} coordinates")
    if old_style and mode == "nearest" and downscales:
        t.unsupported("nearest downscaling before opset 11 (the spec left its rounding open)")
    roi = _crop_box(t, rank, axes) if coord == "tf_crop_and_resize" else None
    return Resize(mode, coord, rounding, tuple(shape), tuple(out), spatial_scales,
                  t.float("cubic_coeff_a", -0.75), bool(t.int("exclude_outside", 0)), antialias,
                  roi, t.float("extrapolation_value", 0.0))


def _crop_box(t: Translation, rank: int, axes: list[int] | None) -> list[tuple[float, float]]:
    """tf_crop_and_resize's ``roi`` (starts then ends, as fractions of each axis) for the spatial axes."""
    roi = t.const(1) if t.has_input(1) else None
    if roi is None or roi.size == 0:
        t.unsupported("tf_crop_and_resize without a constant roi")
    values = [float(v) for v in roi.reshape(-1)]
    n = len(values) // 2
    box = dict(zip(axes or range(rank), zip(values[:n], values[n:])))
    if any(box.get(a, (0.0, 1.0)) != (0.0, 1.0) for a in (0, 1)):
        t.unsupported("tf_crop_and_resize cropping the batch or channel axis")
    return [box[a] for a in range(2, rank)]


def _read_varying(t: Translation, rank: int) -> Resize:
    """A Resize over spatial sizes that vary: only what a layer computes at every size, an
    upsampling by constant whole scales (nearest with ``asymmetric``/``floor``, or linear with
    half-pixel centres over two axes); ``Resize.factors`` holds the scales."""
    scales = None
    if t.op == "Resize" and t.opset >= 11 and t.has_input(2):
        scales = t.const(2)
    if scales is None or scales.size != rank or t.ints("axes") is not None or (t.has_input(3) and t.const(3) is None):
        t.unsupported("a resize over varying sizes by anything but constant scales")
    factors = [float(v) for v in scales.reshape(-1)]
    if factors[:2] != [1.0, 1.0] or not all(f.is_integer() and f >= 1 for f in factors[2:]):
        t.unsupported(f"a resize over varying sizes by scales {factors}, not whole upsampling factors")
    mode, coord = t.str("mode", "nearest"), t.str("coordinate_transformation_mode", "half_pixel")
    nearest = mode == "nearest" and (coord, t.str("nearest_mode", "round_prefer_floor")) == ("asymmetric", "floor")
    linear = (mode == "linear" and rank == 4 and (coord in ("half_pixel", "align_corners") or (
        coord == "pytorch_half_pixel" and min(factors[2:]) > 1)))  # align_corners: PyTorch only (see keras)
    if not (nearest or linear):
        t.unsupported(f"a {mode} resize with {coord} coordinates over varying sizes")
    return Resize(mode, coord, t.str("nearest_mode", "round_prefer_floor"), tuple(t.dims(0)), tuple(t.out_dims()),
                  factors[2:], -0.75, False, factors=[int(f) for f in factors[2:]])


# -- the spec's weights ------------------------------------------------------------------------------


def _source(o: int, n_in: int, scale: float, coord: str, n_out: int, box=None) -> float:
    """Output ``o``'s input coordinate (the spec's coordinate transformation for one axis)."""
    length = scale * n_in  # not rounded: the spec's "length_resized"
    if coord == "tf_crop_and_resize":
        start, end = box
        step = (end - start) * (n_in - 1)
        return (step / 2 if length == 1 else o * step / (length - 1)) + start * (n_in - 1)
    if coord == "align_corners":
        return 0.0 if length == 1 else o * (n_in - 1) / (length - 1)
    if coord == "asymmetric":
        return o / scale
    if coord == "pytorch_half_pixel":
        return -0.5 if length == 1 else (o + 0.5) / scale - 0.5
    if coord == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if coord == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / length)
        return offset + (o + 0.5) / scale - 0.5
    return (o + 0.5) / scale - 0.5  # half_pixel


def _cubic(a: float, x: np.ndarray) -> np.ndarray:
    """The cubic convolution kernel (Keys) with coefficient ``a``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _antialiased(p: Resize, ratio: float, scale: float) -> np.ndarray:
    """Downscaling with ``antialias``: the kernel stretched by ``1 / scale``, its weights summing to 1."""
    scale = min(scale, 1.0)
    reach = 1 if p.mode == "linear" else 2
    start = math.floor(-reach / scale) + 1
    args = (np.arange(start, 2 - start) - ratio) * scale
    coeffs = np.clip(1 - np.abs(args), 0, 1) if p.mode == "linear" else _cubic(p.cubic_a, args)
    return coeffs / coeffs.sum()


def _coeffs(p: Resize, ratio: float, scale: float) -> np.ndarray:
    """Weights of the neighbours of ``x``, ``ratio = x - floor(x)`` in ``(0, 1]``."""
    if p.antialias:
        return _antialiased(p, ratio, scale)
    if p.mode == "nearest":
        if ratio == 1:
            return np.array([0.0, 1.0])
        up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False,
              "ceil": True}[p.nearest_mode]
        return np.array([0.0, 1.0]) if up else np.array([1.0, 0.0])
    if p.mode == "linear":
        return np.array([1 - ratio, ratio])
    return _cubic(p.cubic_a, np.array([ratio + 1, ratio, 1 - ratio, 2 - ratio]))


def axis_weights(p: Resize, n_in: int, n_out: int, scale: float, box=None) -> tuple[np.ndarray, np.ndarray]:
    """``(n_out, n_in)`` weights of the spec's interpolation along one axis (float64), and which
    outputs map outside the input (tf_crop_and_resize: they take the extrapolation value).

    The neighbours of ``x`` are the ``n`` nearest integers (ties to the smaller); an index
    past an edge reads the edge, or with ``exclude_outside`` gets no weight.
    """
    weights, outside = np.zeros((n_out, n_in)), np.zeros(n_out, bool)
    for o in range(n_out):
        x = _source(o, n_in, scale, p.coord, n_out, box)
        if p.coord == "tf_crop_and_resize" and not 0 <= x <= n_in - 1:
            outside[o] = True
            continue
        ratio = 1.0 if float(x).is_integer() else x - math.floor(x)
        coeffs = _coeffs(p, ratio, scale)
        n = len(coeffs)
        pad = -(-n // 2)
        cand = np.arange(-pad, n_in + pad)
        idx = np.sort(cand[np.lexsort((cand, np.abs(x - cand)))[:n]])
        if p.exclude_outside and p.mode != "nearest":
            coeffs = np.where((idx < 0) | (idx >= n_in), 0.0, coeffs)
            coeffs = coeffs / coeffs.sum()
        np.add.at(weights[o], np.clip(idx, 0, n_in - 1), coeffs)
    return weights, outside


def _per_axis(p: Resize):
    """``(k, weights, outside)`` for each spatial axis ``k`` the resize changes (an identity is skipped)."""
    for k, (n_in, n_out, scale) in enumerate(p.spatial):
        w, outside = axis_weights(p, n_in, n_out, scale, p.roi[k] if p.roi else None)
        if not (n_in == n_out and np.array_equal(w, np.eye(n_in))):
            yield k, w, outside


def linear_resize_matrix(n_in: int, n_out: int, coord: str, scale: float) -> np.ndarray:
    """``(n_out, n_in)`` float32 weights of ONNX linear Resize along one axis."""
    p = Resize("linear", coord, "", (1, 1, n_in), (1, 1, n_out), [scale], -0.75, False)
    return axis_weights(p, n_in, n_out, scale)[0].astype(np.float32)


_LETTERS = {"d": "e", "h": "p", "w": "q"}  # a resized axis' new einsum letter (lowercase, for Keras)
_AXIS_NAMES = {"d": "depth", "h": "height", "w": "width"}


def _by_weights(t: Translation, p: Resize, x: str, first: int, channels_last: bool, emit_axis, add_fill) -> None:
    """The output as one gather (nearest) or einsum (linear, cubic) per resized axis; ``add_fill`` adds
    tf_crop_and_resize's extrapolation value where an output maps outside the input."""
    letters = "dhw"[-len(p.spatial):]
    rank = len(p.shape)
    shape = [p.shape[0], *p.shape[2:], p.shape[1]] if channels_last else list(p.shape)
    for k, w, outside in _per_axis(p):
        a = letters[k]
        note = f"{p.mode} resize of the {_AXIS_NAMES[a]} ({p.coord})"
        var = t.gen.names.take(f"{t.layer_hint()}_{a}")
        shape[first + k] = w.shape[0]
        fill = None
        if p.extrapolation and outside.any():  # broadcast along this axis of the result
            fill = (outside * np.float32(p.extrapolation)).astype(np.float32)
            fill = fill.reshape((-1,) + (1,) * (rank - 1 - first - k))
        if p.mode == "nearest" and not outside.any():
            expr = emit_axis(first + k, w.argmax(axis=1).astype(np.int64), f"{a}_index", None)
        else:
            axes = f"n{letters}c" if channels_last else f"nc{letters}"
            eq = f"{_LETTERS[a]}{a},{axes}->{axes.replace(a, _LETTERS[a])}"
            expr = emit_axis(first + k, w.astype(np.float32), f"{a}_weights", eq)
        expr = expr.format(x=x)
        if fill is not None:
            expr = add_fill(expr, tuple(shape), fill, f"{a}_outside")
            note += f"; {p.extrapolation} outside the box"
        t.gen.emit(f"{var} = {expr}", note)
        x = var
    t.alias(x)


@register
class ResizeOp(Op):
    types = ("Resize",)
    since = 10
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> Resize:
        return read_resize(t)

    # -- PyTorch ----------------------------------------------------------------------------------
    @staticmethod
    def _torch_mode(p: Resize) -> tuple[str, list[str]] | None:
        """``nn.Upsample``'s mode and extra arguments when it computes what the spec does, else None."""
        rank = len(p.shape)
        if p.antialias or (p.scales is not None and any(int(n * s) != o for n, o, s in p.spatial)):
            return None
        if p.mode == "nearest":
            mode = _NEAREST.get((p.coord, p.nearest_mode))
            return (mode, []) if mode else None
        if p.mode == "cubic" and (rank != 4 or abs(p.cubic_a + 0.75) > 1e-6 or p.exclude_outside):
            return None
        mode = _LINEAR[rank] if p.mode == "linear" else "bicubic"
        if p.coord == "align_corners" and p.whole:  # PyTorch maps by the output size, the spec by in * scale
            return mode, ["align_corners=True"]
        if p.coord == "half_pixel" or (p.coord == "pytorch_half_pixel" and min(p.out[2:]) > 1):
            return mode, []
        return None

    def torch(self, t: Translation, p: Resize) -> None:
        if p.factors is not None:  # whole factors: nn.Upsample's floor(n * f) is n * f at every size
            args = [f"scale_factor={T.tuple_or_float([float(f) for f in p.factors])}",
                    f"mode={'nearest' if p.mode == 'nearest' else _LINEAR[len(p.shape)]!r}"]
            if p.coord == "align_corners":  # by the output size, which is in * scale: the spec's length
                args.append("align_corners=True")
            mod = T.module(t, f"nn.Upsample({', '.join(args)})")
            t.assign(f"self.{mod}({t.inp(0)})")
            return
        native = self._torch_mode(p)
        if native is None:
            def emit_axis(axis, arr, name, eq):
                buf = T.buffer(t, f"{T.hint(t)}_{name}", arr)
                return f"{{x}}.index_select({axis}, {buf})" if eq is None else f"torch.einsum({eq!r}, {buf}, {{x}})"

            def add_fill(expr, shape, fill, name):
                return f"{expr} + {T.buffer(t, f'{T.hint(t)}_{name}', fill)}"

            _by_weights(t, p, t.inp(0), 2, False, emit_axis, add_fill)
            return
        mode, extra = native
        if p.scales is not None:  # PyTorch then maps coordinates with 1 / scale, as ONNX does
            size = f"scale_factor={T.tuple_or_float(p.scales)}"
        else:
            size = f"size={T.tuple_or_int(p.out[2:])}"
        args = [size, f'mode="{mode}"', *extra]
        mod = T.module(t, f"nn.Upsample({', '.join(args)})")
        t.assign(f"self.{mod}({t.inp(0)})")

    # -- Keras ------------------------------------------------------------------------------------
    def keras(self, t: Translation, p: Resize) -> None:
        K.channels_last(t)
        nd, x = len(p.shape) - 2, t.inp(0)
        if p.factors is not None:  # the layers upsample alike at every size
            if p.coord == "align_corners":
                t.unsupported("an align_corners resize over varying sizes (UpSampling2D maps by half pixels)")
            interpolation = ["interpolation='bilinear'"] if p.mode == "linear" else []
            size = K.tuple_or_int(p.factors) if nd > 1 else str(p.factors[0])
            t.assign(K.layer(t, f"UpSampling{nd}D", [size, *interpolation], None, x))
            return
        spatial_in, spatial_out = p.shape[2:], p.out[2:]
        factors = [o // n for n, o in zip(spatial_in, spatial_out)] if p.whole else None
        integral = factors is not None and all(o % n == 0 for n, o in zip(spatial_in, spatial_out))
        native = not p.antialias
        if native and p.mode == "nearest" and (p.coord, p.nearest_mode) == ("asymmetric", "floor") and integral:
            t.assign(K.layer(t, f"UpSampling{nd}D", [K.tuple_or_int(factors) if nd > 1 else str(factors[0])],
                             None, x))
            return
        if (native and p.mode == "linear" and nd == 2 and p.whole
                and (p.coord == "half_pixel" or (p.coord == "pytorch_half_pixel" and min(spatial_out) > 1))):
            if integral:
                t.assign(K.layer(t, "UpSampling2D", [K.tuple_or_int(factors), "interpolation='bilinear'"], None, x))
            else:
                args = [str(spatial_out[0]), str(spatial_out[1]), "interpolation='bilinear'"]
                t.assign(K.layer(t, "Resizing", args, None, x))
            return
        _keras_by_weights(t, p, channels_last=True)  # no Keras layer resizes so: the spec's weights instead


def _keras_by_weights(t: Translation, p: Resize, channels_last: bool) -> None:
    def emit_axis(axis, arr, name, eq):
        const = K.new_constant(t, arr, name)
        return f"ops.take({{x}}, {const}, axis={axis})" if eq is None else f"ops.einsum({eq!r}, {const}, {{x}})"

    def add_fill(expr, shape, fill, name):
        return K.add(expr, shape, K.new_constant(t, fill, name), fill.shape)[0]

    _by_weights(t, p, t.inp(0), 1 if channels_last else 2, channels_last, emit_axis, add_fill)


@register
class Upsample(ResizeOp):
    """Upsample (opsets 7 and 9, Resize's predecessor): read as Resize-10.  It is not a ``layout`` op
    for the normalize passes, so Keras resizes its channels-first axes with the spec's weights."""

    types = ("Upsample",)
    since = 1
    traits = frozenset()

    def keras(self, t: Translation, p: Resize) -> None:
        _keras_by_weights(t, p, channels_last=False)
