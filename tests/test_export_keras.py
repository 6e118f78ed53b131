"""Keras -> ONNX export (pipeline/export.py): a graph onnxruntime runs and that matches Keras.

- nested ``tf.function`` calls (Keras 3 runs a grouped Conv2D under ``jit_compile``) are
  inlined: no ``PartitionedCall`` reaches ONNX;
- tensors a layer captures (a Normalization layer's mean and variance) are constants,
  so the graph inputs are exactly the model's inputs;
- BatchNormalization stays one ONNX BatchNormalization with the layer's own gamma, beta,
  moving statistics and epsilon, at the input's rank, and is not folded into the conv.

The reference for every value is Keras itself (its layer weights and its output).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pipeline.quiet  # noqa: E402,F401  (before keras: silences TensorFlow)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402

from pipeline.export import export, fused_batch_norm  # noqa: E402
from pipeline.quiet import import_tensorflow  # noqa: E402
from pipeline.sources import _keras_source  # noqa: E402
from pipeline.spec import InputSpec  # noqa: E402

tf, keras = import_tensorflow()
L = keras.layers


def functional(shape, make) -> keras.Model:
    """A functional model on ``keras.Input(shape[1:], batch_size=shape[0], name="x")``."""
    x = keras.Input(shape=shape[1:], batch_size=shape[0], name="x")
    return keras.Model(x, make(x))


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Every weight from a seeded generator, variances positive, so no two parameters coincide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32") if "variance" in w.path
                               else rng.uniform(-0.5, 0.5, tuple(w.shape)).astype("float32") for w in layer.weights])


def export_model(tmp_path, model: keras.Model, shape) -> onnx.ModelProto:
    """Export through the pipeline's Keras path; return the ONNX model (checked by onnx.checker)."""
    source = _keras_source(model, "m", "test", [InputSpec("x", tuple(shape))])
    path = tmp_path / "source.onnx"
    export(source, {}, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


def assert_runs_like_keras(tmp_path, model: keras.Model, shape) -> None:
    """onnxruntime on the exported file matches Keras on the same seeded input."""
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    session = ort.InferenceSession(str(tmp_path / "source.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def nodes(proto: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == op_type]


def initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    found = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == name]
    assert found, f"{name} is not an initializer"
    return found[0]


def value_rank(proto: onnx.ModelProto, name: str) -> int:
    """Rank of a value from the graph inputs or value_info recorded in the export."""
    for v in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        if v.name == name:
            return len(v.type.tensor_type.shape.dim)
    raise AssertionError(f"no shape recorded for {name}")


# -- nested functions ------------------------------------------------------------------

def test_grouped_conv_has_no_function_call(tmp_path):
    shape = (2, 9, 11, 4)
    model = functional(shape, lambda x: L.Conv2D(6, 3, groups=2, padding="same")(x))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    assert {n.op_type for n in proto.graph.node} & {"PartitionedCall", "StatefulPartitionedCall"} == set()
    (conv,) = nodes(proto, "Conv")
    assert [a.i for a in conv.attribute if a.name == "group"] == [2]
    assert_runs_like_keras(tmp_path, model, shape)


class XlaScale(keras.layers.Layer):
    """A custom layer whose call runs a jit-compiled (hence non-inlined) tf.function."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        @tf.function(jit_compile=True)
        def scaled(t, w):
            return tf.nn.relu(t * w) + 1.0

        return scaled(x, self.w.value)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_jit_compiled_custom_layer_is_inlined(tmp_path):
    shape = (2, 5, 3)
    model = functional(shape, lambda x: XlaScale()(L.Dense(3)(x)))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    assert "StatefulPartitionedCall" not in {n.op_type for n in proto.graph.node}
    assert_runs_like_keras(tmp_path, model, shape)


# -- captured tensors are constants, not graph inputs ------------------------------------

def test_normalization_given_mean_variance(tmp_path):
    shape = (2, 6, 3)
    model = functional(shape, lambda x: L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0])(x))
    proto = export_model(tmp_path, model, shape)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert_runs_like_keras(tmp_path, model, shape)


def test_normalization_adapted(tmp_path):
    """adapt() leaves mean/variance as eager tensors the traced function captures."""
    shape = (2, 4, 4, 3)
    layer = L.Normalization()
    layer.adapt(np.random.default_rng(2).normal(3.0, 2.0, (16, 4, 4, 3)).astype("float32"))
    model = functional(shape, lambda x: L.Conv2D(2, 1)(layer(x)))
    proto = export_model(tmp_path, model, shape)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert_runs_like_keras(tmp_path, model, shape)


# -- BatchNormalization kept -----------------------------------------------------------

BN_CASES = {
    "2d-dense": ((2, 5), lambda x, bn: bn(L.Dense(4)(x))),
    "3d-conv1d": ((2, 11, 3), lambda x, bn: bn(L.Conv1D(4, 3, padding="same")(x))),
    "3d": ((2, 11, 3), lambda x, bn: bn(x)),
    "4d": ((2, 9, 11, 3), lambda x, bn: bn(x)),
    "4d-axis1": ((2, 3, 9, 11), lambda x, bn: bn(x)),
    "4d-axis2": ((2, 9, 5, 3), lambda x, bn: bn(x)),
    "5d-conv3d": ((2, 5, 6, 7, 2), lambda x, bn: bn(L.Conv3D(4, 3, padding="same")(x))),
}
BN_AXIS = {"4d-axis1": 1, "4d-axis2": 2}


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_batch_norm_kept_with_exact_parameters(tmp_path, case):
    shape, make = BN_CASES[case]
    bn = L.BatchNormalization(axis=BN_AXIS.get(case, -1), epsilon=2e-3)
    model = functional(shape, lambda x: make(x, bn))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    (node,) = nodes(proto, "BatchNormalization")
    assert [a.f for a in node.attribute if a.name == "epsilon"] == [pytest.approx(2e-3, rel=1e-6)]
    want = [bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance]
    for name, var in zip(node.input[1:5], want):
        np.testing.assert_array_equal(initializer(proto, name), np.asarray(var))
    assert value_rank(proto, node.input[0]) == len(shape)  # no reshape to a 4-D view
    assert_runs_like_keras(tmp_path, model, shape)


def test_batch_norm_without_scale_and_center(tmp_path):
    shape = (2, 9, 11, 3)
    bn = L.BatchNormalization(scale=False, center=False)
    model = functional(shape, bn)
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    (node,) = nodes(proto, "BatchNormalization")
    scale, bias, mean, var = (initializer(proto, name) for name in node.input[1:5])
    np.testing.assert_array_equal(scale, np.ones(3, np.float32))
    np.testing.assert_array_equal(bias, np.zeros(3, np.float32))
    np.testing.assert_array_equal(mean, np.asarray(bn.moving_mean))
    np.testing.assert_array_equal(var, np.asarray(bn.moving_variance))
    assert_runs_like_keras(tmp_path, model, shape)


def test_batch_norm_not_folded_into_conv(tmp_path):
    shape = (2, 9, 11, 3)
    conv = L.Conv2D(4, 3, padding="same", use_bias=False)
    model = functional(shape, lambda x: L.BatchNormalization()(conv(x)))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    assert len(nodes(proto, "BatchNormalization")) == 1
    (node,) = nodes(proto, "Conv")
    kernel_oihw = np.asarray(conv.kernel).transpose(3, 2, 0, 1)  # Keras HWIO
    np.testing.assert_array_equal(initializer(proto, node.input[1]), kernel_oihw)
    assert_runs_like_keras(tmp_path, model, shape)


def test_fused_batch_norm_patch_is_scoped():
    original = L.BatchNormalization.call
    with pytest.raises(RuntimeError):
        with fused_batch_norm():
            assert L.BatchNormalization.call is not original
            raise RuntimeError("a failing trace")
    assert L.BatchNormalization.call is original


def test_fused_batch_norm_leaves_training_alone():
    """Under the patch a training call still normalizes with the batch statistics."""
    bn = L.BatchNormalization(epsilon=1e-3, momentum=0.5)
    x = np.random.default_rng(3).normal(2.0, 3.0, (8, 5)).astype("float32")
    bn.build(x.shape)
    with fused_batch_norm():
        got = np.asarray(bn(x, training=True))
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.5 * x.mean(0), rtol=1e-5, atol=1e-6)


# -- tf2onnx's transpose optimizer on 1x1 maps -------------------------------------------

def test_layer_norm_on_1x1_map(tmp_path):
    """LayerNormalization's variance is Mul(t, t); on a 1x1 map tf2onnx used to turn the
    Transpose after it into a Reshape to a stale shape (ConvNeXt's last stage at 32x32)."""
    shape = (1, 2, 2, 3)
    model = functional(shape, lambda x: L.Dense(4)(L.LayerNormalization()(L.Conv2D(8, 2)(x))))
    randomize(model)
    export_model(tmp_path, model, shape)
    assert_runs_like_keras(tmp_path, model, shape)


def _tf2onnx_hooks() -> tuple:
    """The tf2onnx functions the export patches for its duration."""
    from tensorflow.python.framework import convert_to_constants, tensor_util
    from tf2onnx import tf_utils
    from tf2onnx.graph import Node
    from tf2onnx.optimizer import back_to_back_optimizer as b2b
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    return (Node.__init__, Node.update_proto, TransposeOptimizer._mul_handler, tensor_util.make_tensor_proto,
            convert_to_constants._FunctionConverterDataInEager._eval, tf_utils.get_tf_tensor_data,
            b2b._func_map.get(("Conv", "BatchNormalization")))


def test_tf2onnx_patches_are_restored(tmp_path):
    """The export's fixes to tf2onnx (keep BN, Mul(t, t) shapes, Const copies, held weights) last
    only for the export."""
    before = _tf2onnx_hooks()
    shape = (2, 9, 11, 3)
    model = functional(shape, lambda x: L.BatchNormalization()(L.Conv2D(4, 3)(x)))
    export_model(tmp_path, model, shape)
    after = _tf2onnx_hooks()
    assert before[-1] is not None and all(a is b for a, b in zip(before, after))


def test_failing_tf2onnx_pass_falls_back_to_careful_mode(tmp_path, monkeypatch):
    """The fast run of tf2onnx's optimizers (no copy before each pass) failing is not fatal:
    the export is redone with tf2onnx's own catch-and-skip mode."""
    import tf2onnx.optimizer

    real, calls = tf2onnx.optimizer.optimize_graph, []

    def optimize_graph(graph, catch_errors=True, optimizers=None):
        calls.append(catch_errors)
        if not catch_errors:
            raise ValueError("a tf2onnx optimizer bug")
        return real(graph, catch_errors, optimizers)

    monkeypatch.setattr(tf2onnx.optimizer, "optimize_graph", optimize_graph)
    shape = (2, 9, 11, 3)
    model = functional(shape, lambda x: L.BatchNormalization()(L.Conv2D(4, 3)(x)))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    assert calls == [False, True]
    assert len(nodes(proto, "BatchNormalization")) == 1
    assert_runs_like_keras(tmp_path, model, shape)


def test_residual_add_on_1x1_map(tmp_path):
    """Grappler writes this Add as a BiasAdd of a computed vector; tf2onnx used to fold that into
    the Conv before it as a fourth input, an invalid graph (ResNet50V2 at 32x32)."""
    shape = (1, 2, 2, 3)
    model = functional(shape, lambda x: L.Add()([L.Conv2D(4, 2)(x), L.Conv2D(4, 2)(x)]))
    randomize(model)
    export_model(tmp_path, model, shape)
    assert_runs_like_keras(tmp_path, model, shape)


# -- weights held once -------------------------------------------------------------------

def test_frozen_graph_holds_views_of_the_variables():
    """Freezing puts no weight bytes in the GraphDef: each large constant is a Const without
    content whose value is held aside as a view of the variable's own buffer (no copy)."""
    from pipeline.export import frozen_graph_def
    from pipeline.tf_weights import LARGE_BYTES, HeldWeights

    shape = (2, 8, 8, 3)
    model = functional(shape, lambda x: L.Dense(5)(L.Conv2D(16, 3)(x)))
    randomize(model)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    held = HeldWeights()
    graph_def, _, _ = frozen_graph_def(concrete, held)
    contents = [len(n.attr["value"].tensor.tensor_content) for n in graph_def.node if n.op == "Const"]
    assert max(contents) <= LARGE_BYTES
    values = held.const_node_values()
    large = [w for w in model.weights if w.numpy().nbytes > LARGE_BYTES]  # the conv kernel (1728 bytes) only
    assert len(values) == len(large) >= 1
    arrays = [held._array(key) for key in values.values()]
    for w in large:
        buffer = w.value.read_value()._numpy()
        assert any(a.shape == buffer.shape and np.shares_memory(a, buffer) for a in arrays), w.path


def test_export_of_held_weights_matches_keras(tmp_path):
    """Weights that went through the held path (large kernels) and ones that did not (small
    biases) both reach ONNX with Keras' values."""
    shape = (2, 8, 8, 3)
    model = functional(shape, lambda x: L.Dense(5, name="dense")(L.Conv2D(16, 3, name="conv")(x)))
    randomize(model)
    proto = export_model(tmp_path, model, shape)
    kernel = model.get_layer("conv").kernel.numpy()
    found = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.dims and list(t.dims)[0] == 16
             and len(t.dims) == 4]
    assert found and np.array_equal(found[0], kernel.transpose(3, 2, 0, 1))
    assert_runs_like_keras(tmp_path, model, shape)
