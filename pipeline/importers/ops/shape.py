"""Shape and layout plumbing: Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Concat, Split,
Slice, Expand, Range, Tile, Pad, DepthToSpace, SpaceToDepth.

Readers take each op's arguments in every opset's form (Slice and Pad took attributes
before opset 10 and 11, Split and Squeeze/Unsqueeze before 13) and return what the
emitters need; reshapes are written with the inferred output shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from ...normalize.graph import PIN_IN, PIN_OUT, pin_role
from .. import keras_emit as K
from .. import torch_emit as T
from ..codegen import Translation, layout_note, py_literal, shape_literal
from ..registry import Op, register
from .linear import linear_nd
from .norm import keras_wrapped_group_norm, torch_group_norm_of


@register
class Transpose(Op):
    types = ("Transpose",)

    def read(self, t: Translation) -> list[int]:
        return t.ints("perm") or list(reversed(range(t.rank(0))))

    def torch(self, t: Translation, perm: list[int]) -> None:
        t.assign(f"{t.inp(0)}.permute{tuple(perm)}", comment=layout_note(t.node, perm))

    def keras(self, t: Translation, perm: list[int]) -> None:
        if pin_role(t.node) in (PIN_IN, PIN_OUT):
            t.alias(t.inp(0))  # the wrapped op works channels-last: no data movement
            return
        t.assign(f"ops.transpose({t.inp(0)}, {tuple(perm)})", comment=layout_note(t.node, perm))


def _feeds_group_norm(t: Translation) -> bool:
    users = t.node.outputs[0].consumers()
    return len(users) == 1 and torch_group_norm_of(users[0]) is not None


@register
class Reshape(Op):
    """Reshape, Flatten, Squeeze, Unsqueeze: the inferred output shape.

    Plan: True when the reshape is part of a pattern written as one layer by the next
    node (the flattening Reshape before a Dense on an N-D input): it writes nothing then.
    """

    types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    traits = frozenset({"shape"})

    def read(self, t: Translation) -> bool:
        if sum(not isinstance(d, int) for d in t.out_dims()) > 1:
            for d in t.out_dims():
                if not isinstance(d, int) and any(s.name.startswith("_unknown_") for s in d.free_symbols):
                    t.unsupported("a reshape to sizes that shape inference could not work out")
        users = t.node.outputs[0].consumers()
        return t.op == "Reshape" and len(users) == 1 and linear_nd(users[0]) is not None

    def needs(self, t: Translation) -> list[int]:
        return [0]  # the output's sizes come from shape inference (ints, or expressions of the symbols)

    @staticmethod
    def _sizes(t: Translation, target: str) -> list[str] | None:
        """The output's sizes as code: ints, ``-1`` for a lone varying one, run-time expressions
        (PyTorch) for several; None when Keras needs a run-time reshape layer."""
        dims = t.out_dims()
        varying = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if len(varying) == 1:
            return [str(d) if isinstance(d, int) else "-1" for d in dims]
        codes = [t.size_code(d) for d in dims]
        if any(c is None for c in codes):
            if target == "keras":
                return None
            t.unsupported(f"a reshape to sizes {dims} that cannot be written from the inputs' sizes")
        return codes

    @staticmethod
    def _unit_axes(t: Translation) -> list[int] | None:
        """A Squeeze's or Unsqueeze's axes (of its input or output), non-negative and sorted; None
        when they are not constants."""
        if t.has_input(1):
            arr = t.const(1)
            axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
        else:
            axes = t.ints("axes")
        if not axes:
            return None
        rank = len(t.out_dims()) if t.op == "Unsqueeze" else t.rank(0)
        return sorted(a % rank for a in axes)

    def torch(self, t: Translation, into_layer: bool) -> None:
        x = t.inp(0)
        sizes = self._sizes(t, "torch")
        args = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})" if sizes else "(())"
        if into_layer or _feeds_group_norm(t):
            t.alias(f"{x}.reshape{args}")  # unused: the Linear/GroupNorm takes the N-D input
        elif t.op == "Flatten" and t.int("axis", 1) == 1:
            t.assign(f"torch.flatten({x}, 1)")
        else:
            t.assign(f"{x}.reshape{args}")

    def keras(self, t: Translation, into_layer: bool) -> None:
        x = t.inp(0)
        sizes = self._sizes(t, "keras")
        if sizes is None and t.op in ("Squeeze", "Unsqueeze") and not into_layer:
            axes = self._unit_axes(t)
            if axes is not None:  # unit axes in or out: no size to know
                fn = "expand_dims" if t.op == "Unsqueeze" else "squeeze"
                t.assign(f"ops.{fn}({x}, {axes[0] if len(axes) == 1 else tuple(axes)})")
                return
        if sizes is None:
            t.assign(K.reshape_to(t, x, t.out_dims()), comment="sizes known at run time only")
            return
        args = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
        if into_layer:
            t.alias(f"ops.reshape({x}, {args})")  # unused: the Dense takes the N-D input
        elif not keras_wrapped_group_norm(t):
            t.assign(f"ops.reshape({x}, {args})")


@register
class Concat(Op):
    types = ("Concat",)

    def read(self, t: Translation) -> int:
        return t.int("axis")

    def torch(self, t: Translation, axis: int) -> None:
        t.assign(f"torch.cat([{t.inps()}], dim={axis})")

    def keras(self, t: Translation, axis: int) -> None:
        t.assign(f"ops.concatenate([{t.inps()}], axis={axis})")


@register
class Split(Op):
    """Plan: ``(axis, sizes)`` read off the outputs' inferred shapes (every opset's form agrees on them)."""

    types = ("Split",)

    def read(self, t: Translation) -> tuple[int, list[int]]:
        axis = t.int("axis", 0) % t.rank(0)
        return axis, [int(t.out_sizes(j, [axis])[0]) for j in range(len(t.node.outputs))]

    def torch(self, t: Translation, p) -> None:
        axis, sizes = p
        names = ", ".join(t.out(j) for j in range(len(sizes)))
        t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = torch.split({t.inp(0)}, {sizes}, dim={axis})")

    def keras(self, t: Translation, p) -> None:
        axis, sizes = p
        cuts = [int(c) for c in (sum(sizes[:i + 1]) for i in range(len(sizes) - 1))]
        names = ", ".join(t.out(j) for j in range(len(sizes)))
        t.gen.emit(f"{names}{',' if len(sizes) == 1 else ''} = ops.split({t.inp(0)}, {cuts}, axis={axis})")


@dataclass
class Cut:
    """One sliced axis: ``[start:stop:step]`` of the axis, flipped first when ONNX walks it backwards."""

    axis: int
    start: int | None  # None (no bound) only on an axis whose size varies
    stop: int | None
    step: int
    flipped: bool
    length: object = None  # an end known at run time only: the slice's size (shape inference's), stop = start + it


@register
class Slice(Op):
    types = ("Slice",)

    def read(self, t: Translation) -> list[Cut]:
        shape = t.dims(0)
        if t.opset < 10:
            starts, ends = t.ints("starts"), t.ints("ends")
            axes, steps = t.ints("axes") or list(range(len(starts))), [1] * len(starts)
        else:
            starts = t.need_const(1, "starts").tolist()
            axes = t.need_const(3, "axes").tolist() if t.has_input(3) else list(range(len(starts)))
            steps = t.need_const(4, "steps").tolist() if t.has_input(4) else [1] * len(starts)
            if t.const(2) is None:
                return self._runtime_ends(t, shape, starts, axes, steps)
            ends = t.need_const(2, "ends").tolist()
        cuts = []
        for s, e, a, st in zip(starts, ends, axes, steps):
            a %= len(shape)
            n = shape[a]
            if st == 0:
                t.unsupported("a slice step of 0")
            if not isinstance(n, int):
                cuts.append(self._varying(t, a, n, s, e, st))
                continue
            s, e = (s + n if s < 0 else s), (e + n if e < 0 else e)
            if st > 0:
                cuts.append(Cut(a, max(0, min(n, s)), max(0, min(n, e)), st, False))
            else:  # index i of the axis is n - 1 - i of the flipped axis
                s, e = max(0, min(n - 1, s)), max(-1, min(n - 1, e))
                cuts.append(Cut(a, n - 1 - s, n - 1 - e, -st, True))
        return cuts

    def needs(self, t: Translation) -> list[int]:
        """An end known at run time only is the output's size (see ``_runtime_ends``): the nodes
        computing it are not written."""
        return [i for i in range(len(t.node.inputs)) if i == 0 or t.const(i) is not None]

    @staticmethod
    def _runtime_ends(t: Translation, shape, starts, axes, steps) -> list[Cut]:
        """Ends computed when the model runs (BERT's ``position_ids[:, :S]``, ``S`` read off
        ``Shape``): each cut is ``[start:start + size]``, its size the output's on that axis
        (shape inference's, which clamps the end to the axis as ONNX does)."""
        out = t.out_dims()
        cuts = []
        for s, a, st in zip(starts, axes, steps):
            a %= len(shape)
            n = shape[a]
            if st != 1:
                t.unsupported(f"a slice of axis {a} with step {st} to an end known at run time only")
            if s < 0 and not isinstance(n, int):
                t.unsupported(f"a slice of axis {a}, whose size ({n}) varies, from the end to an end known at run "
                              "time only")
            s = max(0, min(n, s + n if s < 0 else s)) if isinstance(n, int) else s
            if any(str(x).startswith("_unknown_") for x in getattr(out[a], "free_symbols", ())):
                t.unsupported(f"a slice of axis {a} to an end that shape inference could not work out")
            cuts.append(Cut(a, s, None, 1, False, length=out[a]))
        return cuts

    @staticmethod
    def _varying(t: Translation, axis: int, n, start: int, stop: int, step: int) -> Cut:
        """A cut of an axis whose size varies, as Python's ``[start:stop:step]`` (None: no bound):
        ONNX's rule for a positive step (a negative index counts from the end, then clamp to
        the axis) is Python's own."""
        if step < 0:
            t.unsupported(f"a backwards slice of axis {axis}, whose size ({n}) varies")
        big = 2 ** 31
        return Cut(axis, None if start == 0 or start <= -big else start, None if stop >= big else stop, step, False)

    @staticmethod
    def _index(cuts: list[Cut], shape) -> str:
        index = [":"] * len(shape)
        for c in cuts:
            stop = "" if c.stop is None or c.stop == shape[c.axis] else c.stop
            index[c.axis] = f"{c.start or ''}:{stop}" + (f":{c.step}" if c.step != 1 else "")
        while index and index[-1] == ":":
            index.pop()
        return ", ".join(index) or "..."

    def torch(self, t: Translation, cuts: list[Cut]) -> None:
        x = t.inp(0)
        if any(c.length is not None for c in cuts):
            index = [":"] * t.rank(0)
            for c in cuts:
                size = t.size_code(c.length)
                if size is None:
                    t.unsupported(f"a slice to the size {c.length}, which cannot be written from the inputs' sizes")
                index[c.axis] = f"{c.start or ''}:{f'{c.start} + ' if c.start else ''}{size}"
            while index and index[-1] == ":":
                index.pop()
            t.assign(f"{x}[{', '.join(index)}]", comment="an end known at run time only")
            return
        flips = tuple(c.axis for c in cuts if c.flipped)
        if flips:
            x = f"{x}.flip({flips[0] if len(flips) == 1 else flips})"
        t.assign(f"{x}[{self._index(cuts, t.dims(0))}]")

    def keras(self, t: Translation, cuts: list[Cut]) -> None:
        shape = t.dims(0)
        x = t.inp(0)
        if any(c.length is not None for c in cuts):
            begin = [0] * len(shape)
            for c in cuts:
                begin[c.axis] = c.start
            t.assign(K.reshape_to(t, x, t.out_dims(), helper="SliceTo", begin=begin),
                     comment="an end known at run time only")
            return
        for c in cuts:
            if c.flipped:
                x = f"ops.flip({x}, axis={c.axis})"
        if not all(isinstance(d, int) for d in shape):  # sizes known at run time only: Python slicing
            index = self._index(cuts, shape)
            if "," not in index:  # a KerasTensor takes a tuple of slices only, never one bare slice
                index += ","
            t.assign(x if index == "...," else f"{x}[{index}]")
            return
        begin, size, strided = [0] * len(shape), list(shape), []
        for c in cuts:
            begin[c.axis], size[c.axis] = c.start, max(0, c.stop - c.start)
            if c.step != 1:
                strided.append((c.axis, c.step))
        expr = f"ops.slice({x}, {tuple(begin)}, {tuple(size)})"
        for a, step in strided:
            expr = f"ops.take({expr}, {list(range(0, size[a], step))}, axis={a})"
        t.assign(expr)


@register
class Expand(Op):
    """Plan: the output's sizes, ints or expressions of the symbols (see ``Reshape``)."""

    types = ("Expand",)

    def read(self, t: Translation) -> list:
        dims = t.out_dims()
        if any(not isinstance(d, int) and any(s.name.startswith("_unknown_") for s in d.free_symbols) for d in dims):
            t.unsupported("an expand to sizes that shape inference could not work out")
        return dims

    def needs(self, t: Translation) -> list[int]:
        return [0]  # the output's sizes come from shape inference

    def torch(self, t: Translation, dims) -> None:
        x, arr = t.inp(0), t.const(0)
        if arr is not None and arr.ndim == 0:  # a bare Python number has no .expand
            dtype = T.DTYPE_NAMES.get(ir.DataType.from_numpy(arr.dtype).value, "torch.float32")
            x = f"torch.tensor({x}, dtype={dtype})"
        if all(isinstance(d, int) for d in dims):
            t.assign(f"{x}.expand{shape_literal(dims)}")
            return
        own = [None] * (len(dims) - t.rank(0)) + t.dims(0)
        codes = [str(d) if isinstance(d, int) else "-1" if d == o else t.size_code(d)  # -1: the input's own size
                 for d, o in zip(dims, own)]
        if any(c is None for c in codes):
            t.unsupported(f"an expand to sizes {dims} that cannot be written from the inputs' sizes")
        t.assign(f"{x}.expand({', '.join(codes)}{',' if len(codes) == 1 else ''})")

    def keras(self, t: Translation, dims) -> None:
        if all(isinstance(d, int) for d in dims):
            t.assign(f"ops.broadcast_to({t.inp(0)}, {shape_literal(dims)})")
            return
        x, arr = t.inp(0), t.const(0)
        if arr is not None and arr.ndim == 0:  # a Keras layer takes arrays, not a bare Python number
            x = f"np.array({x}, {str(arr.dtype)!r})"
        t.assign(K.reshape_to(t, x, dims, helper="BroadcastTo"), comment="sizes known at run time only")


@dataclass
class Steps:
    """A Range: ``start + delta * [0, 1, ..., length - 1]``, its length shape inference's."""

    start: object
    delta: object
    length: object  # an int, or an expression of the symbols
    dtype: str


@register
class Range(Op):
    """A Range whose limit is known at run time only (``torch.arange(x.shape[1])``): its length
    is the output's size as shape inference gives it, so the nodes computing the limit are not
    written; start and delta must be constants."""

    types = ("Range",)

    def read(self, t: Translation) -> Steps:
        start, delta = t.need_const(0, "start"), t.need_const(2, "delta")
        (length,) = t.out_dims()
        if not isinstance(length, int) and any(s.name.startswith("_unknown_") for s in length.free_symbols):
            t.unsupported("a range whose length shape inference could not work out")
        names = {"INT64": "int64", "INT32": "int32", "FLOAT": "float32", "DOUBLE": "float64"}
        dtype = names.get(t.out_dtype().name)
        if dtype is None:
            t.unsupported(f"a range of {t.out_dtype().name}")
        return Steps(py_literal(start.reshape(())), py_literal(delta.reshape(())), length, dtype)

    def needs(self, t: Translation) -> list[int]:
        return [0, 2]  # the limit only sets the length, which shape inference gave

    @staticmethod
    def _affine(steps: str, p: Steps) -> str:
        if p.delta not in ("1", "1.0"):
            steps = f"{steps} * {p.delta}"
        return steps if p.start in ("0", "0.0") else f"{steps} + {p.start}"

    def torch(self, t: Translation, p: Steps) -> None:
        n = t.size_code(p.length)
        if n is None:
            t.unsupported(f"a range of length {p.length}, which cannot be written from the inputs' sizes")
        device = t.gen.values[t.gen.graph.inputs[0]] + ".device" if t.gen.graph.inputs else "None"
        t.assign(self._affine(f"torch.arange({n}, dtype=torch.{p.dtype}, device={device})", p))

    def keras(self, t: Translation, p: Steps) -> None:
        if isinstance(p.length, int):
            t.assign(self._affine(f"ops.arange({p.length}, dtype={p.dtype!r})", p))
            return
        sizes, refs = K.runtime_sizes(t, [p.length])
        t.gen.helpers.update({"ReshapeTo", "Arange"})
        name = t.gen.add_layer(t.layer_hint(), [])
        t.assign(f"Arange({sizes}, start={p.start}, delta={p.delta}, value_dtype={p.dtype!r}, name={name!r})"
                 f"({', '.join(refs)})", comment="a length known at run time only")


@register
class Tile(Op):
    types = ("Tile",)

    def read(self, t: Translation) -> list[int]:
        return [int(r) for r in t.need_const(1, "repeats").reshape(-1)]

    def torch(self, t: Translation, reps: list[int]) -> None:
        t.assign(f"{t.inp(0)}.repeat{shape_literal(reps)}")

    def keras(self, t: Translation, reps: list[int]) -> None:
        t.assign(f"ops.tile({t.inp(0)}, {shape_literal(reps)})")


@dataclass
class PadPlan:
    mode: str  # constant | reflect | edge | wrap
    widths: list[tuple[int, int]]  # (begin, end) per axis
    value: object  # the constant's literal, None for 0 or other modes


@register
class Pad(Op):
    """Pads per axis; opset < 11 takes ``pads`` and ``value`` as attributes, opset 18 adds ``axes``."""

    types = ("Pad",)

    def read(self, t: Translation) -> PadPlan:
        rank = t.rank(0)
        mode = t.str("mode", "constant")
        if mode not in ("constant", "reflect", "edge", "wrap"):
            t.unsupported(f"pad mode {mode!r}")
        if t.opset < 11:
            pads = t.ints("pads", None) or t.ints("paddings")
            value = t.float("value", 0.0)
            axes = list(range(rank))
        else:
            pads = [int(p) for p in t.need_const(1, "pads").reshape(-1)]
            const = t.need_const(2, "the constant value") if t.has_input(2) else None
            value = None if const is None or const.size == 0 else const.reshape(())
            axes = [int(a) for a in t.need_const(3, "axes").reshape(-1)] if t.has_input(3) else list(range(rank))
        widths = [(0, 0)] * rank
        for i, a in enumerate(axes):
            widths[a % rank] = (int(pads[i]), int(pads[i + len(axes)]))
        if any(b < 0 or e < 0 for b, e in widths):
            t.unsupported("negative pads (cropping)")
        literal = None if mode != "constant" or value is None or float(value) == 0.0 else py_literal(value)
        return PadPlan(mode, widths, literal)

    def torch(self, t: Translation, p: PadPlan) -> None:
        rank = len(p.widths)
        first = min((a for a, w in enumerate(p.widths) if any(w)), default=rank - 1)
        if p.mode != "constant" and (first < max(1, rank - 3) or rank > 5):
            t.unsupported(f"{p.mode} padding of axis {first} of a rank-{rank} tensor (F.pad pads the last 3 at most)")
        order = []
        for a in range(rank - 1, first - 1, -1):
            order += list(p.widths[a])
        mode = {"constant": None, "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[p.mode]
        extra = f", value={p.value}" if p.value is not None else f", mode='{mode}'" if mode else ""
        t.assign(f"F.pad({t.inp(0)}, {tuple(order)}{extra})")

    def keras(self, t: Translation, p: PadPlan) -> None:
        if p.mode in ("edge", "wrap"):  # TensorFlow pads constant, reflect and symmetric only
            self._keras_by_slices(t, p)
            return
        extra = f", mode={p.mode!r}" if p.mode != "constant" else ""
        if p.value is not None:
            extra += f", constant_values={p.value}"
        t.assign(f"ops.pad({t.inp(0)}, {[tuple(w) for w in p.widths]}{extra})")

    @staticmethod
    def _keras_by_slices(t: Translation, p: PadPlan) -> None:
        """Edge (PyTorch's replicate) and wrap (circular) padding as concatenated slices, axis by axis:
        the first and last element repeated, or the other end's elements."""
        x = t.inp(0)
        rank = len(p.widths)
        for axis, (begin, end) in enumerate(p.widths):
            if not begin and not end:
                continue
            n = t.sizes(0, [axis])[0]
            lead = ":, " * axis

            def part(lo, hi):
                return f"{x}[{lead}{lo}:{hi}]"

            if p.mode == "edge":
                parts = [part(0, 1)] * begin + [x] + [part(n - 1, n)] * end
            else:
                if begin > n or end > n:
                    t.unsupported(f"wrap padding wider than the axis ({begin}, {end} on {n})")
                parts = ([part(n - begin, n)] if begin else []) + [x] + ([part(0, end)] if end else [])
            var = t.gen.names.take(f"{t.layer_hint()}_{p.mode}_{axis}")
            t.gen.emit(f"{var} = ops.concatenate([{', '.join(parts)}], axis={axis - rank})",
                       f"{p.mode} padding of axis {axis}")
            x = var
        t.alias(x)


@register
class DepthToSpace(Op):
    """Channels into ``blocksize x blocksize`` pixels: DCR (TensorFlow's order) or CRD (PyTorch's PixelShuffle)."""

    types = ("DepthToSpace",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> tuple[int, str]:
        if t.rank(0) != 4:
            t.unsupported("DepthToSpace of a tensor that is not 4-D")
        return t.int("blocksize"), t.str("mode", "DCR")

    def torch(self, t: Translation, p) -> None:
        bs, mode = p
        n, c, h, w = t.shape(0)
        if mode == "CRD":
            t.assign(f"self.{T.module(t, f'nn.PixelShuffle({bs})')}({t.inp(0)})")
            return
        c_out = c // (bs * bs)
        t.assign(f"{t.inp(0)}.reshape({n}, {bs}, {bs}, {c_out}, {h}, {w}).permute(0, 3, 4, 1, 5, 2)"
                 f".reshape({n}, {c_out}, {h * bs}, {w * bs})",
                 comment="depth to space, DCR order (nn.PixelShuffle is CRD)")

    def keras(self, t: Translation, p) -> None:
        bs, mode = p
        K.channels_last(t)
        n, c, h, w = t.shape(0)
        c_out = c // (bs * bs)
        split, perm = ((n, h, w, bs, bs, c_out), (0, 1, 3, 2, 4, 5)) if mode == "DCR" else \
            ((n, h, w, c_out, bs, bs), (0, 1, 4, 2, 5, 3))
        note = "pixel shuffle (PyTorch's CRD order)" if mode == "CRD" else "depth to space (TensorFlow's DCR order)"
        t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), {perm}), {(n, h * bs, w * bs, c_out)})",
                 comment=note)


@register
class SpaceToDepth(Op):
    """Pixels into channels: output channel ``(b1 * block + b2) * C + c`` (``nn.PixelUnshuffle`` orders them otherwise)."""

    types = ("SpaceToDepth",)
    traits = frozenset({"layout"})

    def read(self, t: Translation) -> int:
        if t.rank(0) != 4:
            t.unsupported("SpaceToDepth of a tensor that is not 4-D")
        return t.int("blocksize")

    def torch(self, t: Translation, bs: int) -> None:
        n, c, h, w = t.shape(0)
        t.assign(f"{t.inp(0)}.reshape({n}, {c}, {h // bs}, {bs}, {w // bs}, {bs}).permute(0, 3, 5, 1, 2, 4)"
                 f".reshape({n}, {c * bs * bs}, {h // bs}, {w // bs})",
                 comment="space to depth (nn.PixelUnshuffle orders channels differently)")

    def keras(self, t: Translation, bs: int) -> None:
        K.channels_last(t)
        n, c, h, w = t.shape(0)
        split = (n, h // bs, bs, w // bs, bs, c)
        t.assign(f"ops.reshape(ops.transpose(ops.reshape({t.inp(0)}, {split}), (0, 1, 3, 2, 4, 5)), "
                 f"{(n, h // bs, w // bs, c * bs * bs)})", comment="space to depth")
