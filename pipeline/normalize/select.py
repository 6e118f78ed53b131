"""tf2onnx's arithmetic select on integers, written back as the ``Where`` it computes.

tf2onnx lowers TensorFlow's ``SelectV2(c, a, b)`` on integer tensors as::

    Add(Mul(Cast(c), a), Mul(b, Cast(Not(c))))

(Keras 3's ``Embedding`` wraps negative ids that way, ``where(ids < 0, ids + n, ids)``,
before its ``Gather``).  On integers every element is ``a * 1 + b * 0`` or ``a * 0 + b * 1``,
so ``Where(c, a, b)`` is exact; on floats it is not (``inf * 0`` is NaN), so floats are left
alone.  The importers then write one ``torch.where`` / ``ops.where`` instead of six lines.
"""

from __future__ import annotations

import onnx_ir as ir

from .graph import either, fresh_name, producer, replace_value

_INTEGERS = {ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64, ir.DataType.UINT8,
             ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64}


class WhereFromMasks(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for add in [n for n in model.graph if n.op_type == "Add" and n.domain == ""]:
            dtype = add.outputs[0].dtype
            found = either(add, lambda p, q: _select(p, q, dtype)) if dtype in _INTEGERS else None
            if found is None:
                continue
            where = ir.node("Where", list(found), name=fresh_name(model.graph, "where"))
            out = where.outputs[0]
            out.name, out.dtype, out.shape = fresh_name(model.graph, "where"), dtype, add.outputs[0].shape
            model.graph.insert_before(add, where)
            replace_value(model.graph, add.outputs[0], out)
            changed = True
        return ir.passes.PassResult(model, changed)


def _mask(value: ir.Value, dtype) -> ir.Value | None:
    """``c`` when ``value`` is ``Cast(c, to=dtype)`` of a boolean ``c``."""
    cast = producer(value, "Cast")
    if cast is None or cast.attributes.get_int("to", 0) != dtype.value or cast.inputs[0].dtype != ir.DataType.BOOL:
        return None
    return cast.inputs[0]


def _select(chosen: ir.Value, other: ir.Value, dtype) -> tuple[ir.Value, ir.Value, ir.Value] | None:
    """``(c, a, b)`` when ``chosen`` is ``Cast(c) * a`` and ``other`` is ``b * Cast(Not(c))``."""
    def masked(v):  # (mask, operand) of a Mul by a cast boolean
        def split(x, y):
            m = _mask(x, dtype)
            return (m, y) if m is not None and y.dtype == dtype else None
        return either(producer(v, "Mul"), split)

    first, second = masked(chosen), masked(other)
    if first is None or second is None:
        return None
    negated = producer(second[0], "Not")
    if negated is None or negated.inputs[0] is not first[0]:
        return None
    return first[0], first[1], second[1]
