"""The weights of a TensorFlow export, held once, outside every graph (used by ``export``).

Freezing, grappler and tf2onnx each copy every weight they see into protobufs of
their own, and the upb protobuf runtime frees a cleared field only with its whole
message: a Keras model of 100 M parameters peaked at 6x its weights on the way to
ONNX.  Here each weight is one NumPy array — for a variable, a view of the
variable's own buffer (TensorFlow copies on write, so the view never changes
under us) — and every graph carries only a reference to it:

1. ``freezing()``: TensorFlow's variable freezing makes each large constant as a
   TensorProto whose content is a short marker naming the held array;
2. ``hold_constants()`` / ``restore_constants()``: around grappler, large
   constants become Placeholders (grappler copies its graph many times over); after
   it they are Consts with *no* content, tf2onnx's own large-model form;
3. ``reading()``: tf2onnx reads a held constant's value through the marker
   (``const_node_values``), so its TensorFlow-side folding sees views, not copies;
4. ``take_from(graph)``: after tf2onnx's optimizers, each large ONNX constant
   leaves its node as an array and the node keeps an empty stub, so the ModelProto
   tf2onnx writes is small; ``attach(model)`` gives the arrays to the onnx-ir
   model as initializers, which ``save_inline`` streams to disk.

At every point each weight is in memory about once beside the source model: the
held view, or tf2onnx's one ONNX copy while it converts.
"""

from __future__ import annotations

import contextlib

import numpy as np

# tf2onnx's own threshold for a "large" constant (tf_utils.compress_graph_def)
LARGE_BYTES = 1000
_MARK = b"\x00pipeline-held-weight:"


class HeldWeights:
    """Arrays held aside during one TensorFlow -> ONNX export, keyed by short markers."""

    def __init__(self):
        self._arrays: dict[bytes, np.ndarray] = {}
        self._by_node: dict[str, bytes] = {}  # TF Const node name -> marker
        self._taken: dict[str, np.ndarray] = {}  # ONNX initializer name -> array

    def _hold(self, array: np.ndarray) -> bytes:
        key = _MARK + str(len(self._arrays)).encode()
        self._arrays[key] = array
        return key

    def _array(self, content: bytes) -> np.ndarray | None:
        return self._arrays.get(content) if content.startswith(_MARK) else None

    # -- 1. freezing ----------------------------------------------------------------

    @contextlib.contextmanager
    def freezing(self):
        """Within: TensorFlow's variable freezing holds values here instead of copying them.

        A variable's value is read as a view of its buffer (TensorFlow's own freezing
        takes ``numpy()``, a copy), and a large value becomes a TensorProto whose
        content is a marker (TensorFlow would copy it into the proto, then the proto
        into the graph).
        """
        from tensorflow.core.framework import tensor_pb2
        from tensorflow.python.framework import convert_to_constants, tensor_shape, tensor_util
        from tensorflow.python.framework import dtypes as tf_dtypes

        make_proto = tensor_util.make_tensor_proto
        converter = convert_to_constants._FunctionConverterDataInEager
        evaluate = converter._eval

        def held_proto(values, dtype=None, shape=None, verify_shape=False, allow_broadcast=False):
            if not isinstance(values, np.ndarray) or values.nbytes <= LARGE_BYTES or values.dtype == object:
                return make_proto(values, dtype, shape, verify_shape, allow_broadcast)
            proto = tensor_pb2.TensorProto(
                dtype=tf_dtypes.as_dtype(dtype if dtype is not None else values.dtype).as_datatype_enum,
                tensor_shape=tensor_shape.as_shape(values.shape).as_proto())
            proto.tensor_content = self._hold(values)
            return proto

        def view_of_variable(data, tensor):
            value = getattr(tensor, "read_value", None)
            if value is not None and getattr(tensor, "dtype", None) is not None and tensor.dtype.is_numpy_compatible:
                try:
                    return value()._numpy()  # aliases the variable's buffer (copy-on-write in TF)
                except Exception:  # noqa: BLE001 - fall back to TensorFlow's own copy
                    pass
            return evaluate(data, tensor)

        tensor_util.make_tensor_proto, converter._eval = held_proto, view_of_variable
        try:
            yield
        finally:
            tensor_util.make_tensor_proto, converter._eval = make_proto, evaluate

    # -- 2. around grappler -----------------------------------------------------------

    def hold_constants(self, graph_def) -> dict[str, tuple]:
        """Every large (or held) Const of ``graph_def`` becomes a Placeholder, in place.

        Returns ``{node name: (dtype enum, shape proto)}`` for ``restore_constants``.
        """
        from tensorflow.python.framework import dtypes as tf_dtypes

        swapped = {}
        for node in graph_def.node:
            if node.op != "Const":
                continue
            tensor = node.attr["value"].tensor
            content = tensor.tensor_content
            key = content if self._array(content) is not None else None
            if key is None and len(content) > LARGE_BYTES:
                shape = [d.size for d in tensor.tensor_shape.dim]
                key = self._hold(np.frombuffer(content, tf_dtypes.as_dtype(tensor.dtype).as_numpy_dtype).reshape(shape))
            if key is None:
                continue
            self._by_node[node.name] = key
            shape = type(tensor.tensor_shape)()
            shape.CopyFrom(tensor.tensor_shape)
            swapped[node.name] = (tensor.dtype, shape)
            node.op = "Placeholder"
            node.attr.clear()
            node.attr["dtype"].type = swapped[node.name][0]
            node.attr["shape"].shape.CopyFrom(shape)
        return swapped

    @staticmethod
    def restore_constants(graph_def, swapped: dict[str, tuple]) -> None:
        """The Placeholders of ``hold_constants`` become Consts again, with no content, in place."""
        for node in graph_def.node:
            if node.op == "Placeholder" and node.name in swapped:
                dtype, shape = swapped[node.name]
                node.op = "Const"
                node.attr.clear()
                node.attr["dtype"].type = dtype
                tensor = node.attr["value"].tensor
                tensor.dtype = dtype
                tensor.tensor_shape.CopyFrom(shape)

    # -- 3. tf2onnx reads ---------------------------------------------------------------

    def const_node_values(self) -> dict[str, bytes]:
        """tf2onnx's ``const_node_values``: node name -> marker (a few bytes, not the weight)."""
        return dict(self._by_node)

    @contextlib.contextmanager
    def reading(self):
        """Within: tf2onnx's TensorProto -> NumPy reader resolves markers to the held arrays."""
        from tf2onnx import tf_utils

        read = tf_utils.get_tf_tensor_data

        def held_or_read(tensor):
            array = self._array(tensor.tensor_content)
            return array if array is not None else read(tensor)

        tf_utils.get_tf_tensor_data = held_or_read
        try:
            yield
        finally:
            tf_utils.get_tf_tensor_data = read

    # -- 4. out of tf2onnx, into onnx-ir ---------------------------------------------------

    def take_from(self, graph) -> None:
        """Move each large constant of tf2onnx's ``graph`` out of its node, leaving a stub.

        The stub has the dtype and dims and no data; its node gets fresh protos so
        the ones holding the data are freed.  The held TensorFlow arrays are dropped:
        from here on the ONNX values are the weights.
        """
        from onnx import AttributeProto, TensorProto, helper, numpy_helper

        self._arrays.clear()
        self._by_node.clear()
        for node in graph.get_nodes():
            attr = node.attr.get("value") if node.type == "Const" else None
            if attr is None or attr.type != AttributeProto.TENSOR:
                continue
            tensor = attr.t
            if tensor.data_location == TensorProto.EXTERNAL or tensor.ByteSize() <= LARGE_BYTES:
                continue
            self._taken[node.output[0]] = numpy_helper.to_array(tensor)
            stub = TensorProto(data_type=tensor.data_type, dims=list(tensor.dims), name=tensor.name)
            node._attr = {"value": helper.make_attribute("value", stub)}
            node._op = helper.make_node("Const", [], list(node.output), name=node.name)

    def attach(self, model) -> None:
        """Give the taken arrays to the onnx-ir ``model``'s initializers (no copy)."""
        import onnx_ir as ir

        initializers = model.graph.initializers
        for name, array in self._taken.items():
            value = initializers.get(name)
            if value is None:
                raise RuntimeError(f"tf2onnx constant {name} is not an initializer of the exported graph")
            value.const_value = ir.Tensor(array, name=name)
        self._taken.clear()
