"""pipeline.onnx_io: the streaming single-file writer and the external-data path to onnxruntime.

The reference is onnx_ir's own ``ir.save`` (one-piece serialization) read back with
``onnx.load``, and onnxruntime on that file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import helper, numpy_helper

from pipeline import referee
from pipeline.onnx_io import LARGE_BYTES, external_copy, save_inline


def _model() -> ir.Model:
    """x @ W1 (above the streaming threshold) + b, then * s (small, stays in the skeleton), Reshape by a constant."""
    rng = np.random.default_rng(0)
    n = int(np.sqrt(LARGE_BYTES // 4)) + 8
    inits = [numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((n,)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((n // 2, n)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([2, -1], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Gemm", ["a", "w2"], ["g"], transB=1),
             helper.make_node("Reshape", ["g", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, n])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, n // 2])], inits)
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10))


def _feed(model: ir.Model) -> dict[str, np.ndarray]:
    shape = [int(d) for d in model.graph.inputs[0].shape]
    return {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}


def test_save_inline_is_the_same_model_as_ir_save(tmp_path):
    model = _model()
    ir.save(model, tmp_path / "reference.onnx")
    save_inline(model, tmp_path / "streamed.onnx")

    ref, got = onnx.load(str(tmp_path / "reference.onnx")), onnx.load(str(tmp_path / "streamed.onnx"))
    onnx.checker.check_model(got)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in got.graph.initializer)
    ref_w = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    got_w = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}
    assert ref_w.keys() == got_w.keys()
    for name, value in ref_w.items():
        assert got_w[name].dtype == value.dtype and np.array_equal(got_w[name], value), name
    assert list(got.graph.node) == list(ref.graph.node)
    assert got.graph.input == ref.graph.input and got.graph.output == ref.graph.output
    assert got.opset_import == ref.opset_import
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.onnx", "streamed.onnx"]  # no temporaries left

    feed = _feed(model)
    expected = ort.InferenceSession(str(tmp_path / "reference.onnx")).run(None, feed)
    actual = ort.InferenceSession(str(tmp_path / "streamed.onnx")).run(None, feed)
    assert np.array_equal(expected[0], actual[0])


def test_big_in_memory_models_reach_onnxruntime_through_a_file(tmp_path, monkeypatch):
    model = _model()
    feed = _feed(model)
    ir.save(model, tmp_path / "reference.onnx")
    expected = referee.run_onnx(str(tmp_path / "reference.onnx"), feed)[0]  # same session settings

    monkeypatch.setattr(referee, "BIG_MODEL_BYTES", 0)  # every model takes the external-data path
    assert np.array_equal(referee.run_onnx(model, feed)[0], expected)
    with external_copy(model) as path:
        assert onnx.load(path, load_external_data=False).graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    assert np.array_equal(referee.run_onnx(model, feed)[0], expected)  # the model itself is unchanged


def test_source_and_normalized_share_each_tensor_once(tmp_path):
    """``externalize`` (source.onnx) then ``save_shared`` (normalized.onnx, one weight changed by a
    "pass"): ``onnx.data`` holds each distinct tensor once, and each file reads back (onnx.load,
    onnxruntime) as the inline file of the same model."""
    from pipeline.onnx_io import ONNX_DATA, SHARE_MIN_BYTES, externalize, save_shared

    first = _model()
    second = _model()
    w2 = second.graph.initializers["w2"]
    w2.const_value = ir.tensor(w2.const_value.numpy() * 2)  # w1 and b stay the same bytes
    feed = _feed(first)
    for name, model in (("source.onnx", first), ("normalized.onnx", second)):
        save_inline(model, tmp_path / f"inline-{name}")
    expected = {n: referee.run_onnx(str(tmp_path / f"inline-{n}"), feed)[0] for n in ("source.onnx", "normalized.onnx")}
    weights = {n: {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / f"inline-{n}")).graph.initializer}
               for n in expected}

    save_inline(first, tmp_path / "source.onnx")
    index = externalize(tmp_path / "source.onnx")
    save_shared(second, tmp_path / "normalized.onnx", index)
    assert np.array_equal(second.graph.initializers["w2"].const_value.numpy(), weights["normalized.onnx"]["w2"])
    blobs = [t.raw_data for n in expected for t in onnx.load(str(tmp_path / f"inline-{n}")).graph.initializer
             if len(t.raw_data) >= SHARE_MIN_BYTES]
    assert len(blobs) == 6 and len(set(blobs)) == 4  # w1 and b common, w2 differs, the Reshape shape stays inline
    assert (tmp_path / ONNX_DATA).stat().st_size == sum(len(b) for b in set(blobs))
    for name in expected:
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(
            str(tmp_path / name), load_external_data=False).graph.initializer)
        got = onnx.load(str(tmp_path / name))  # external data read from the folder
        onnx.checker.check_model(got)
        for t in got.graph.initializer:
            assert np.array_equal(numpy_helper.to_array(t), weights[name][t.name]), (name, t.name)
        assert np.array_equal(referee.run_onnx(str(tmp_path / name), feed)[0], expected[name])
