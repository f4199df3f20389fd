"""IR structure, shape inference limits and the canonicalization passes (oracle: ONNX Runtime)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from opennpu.errors import GraphError, ShapeError, TensorTooLargeError, UnsupportedOpError
from opennpu.frontends import load_model
from opennpu.ir import Graph, Tensor
from opennpu.ir.passes import Limits, canonicalize, parse_input_shapes
from opennpu.runtime.cpu import run_graph


def close(ours, ref, rtol=1e-4):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-12)
    assert np.abs(ours - ref).max() <= rtol * scale, np.abs(ours - ref).max() / scale


def ort_run(model: onnx.ModelProto, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def conv_bn_relu_model(rng, pad_node=True):
    """Pad -> Conv -> BatchNorm -> Clip(0, 6) -> Conv(depthwise) -> Relu -> Add(residual)."""
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32)
    bn = [rng.uniform(0.5, 1.5, 8), rng.standard_normal(8), rng.standard_normal(8) * 0.1, rng.uniform(0.5, 2, 8)]
    w2 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    for name, v in zip(["s", "b", "m", "v"], bn, strict=True):
        inits.append(numpy_helper.from_array(np.asarray(v, np.float32), name))
    nodes = []
    x = "x"
    if pad_node:
        nodes.append(helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"))
        x = "xp"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[0, 0, 0, 0] if pad_node else [1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"], epsilon=1e-3),
        helper.make_node("Clip", ["n1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Add", ["r2", "r1"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_passes_fold_and_fuse_and_match_onnxruntime():
    rng = np.random.default_rng(0)
    model = conv_bn_relu_model(rng)
    g = load_model(model.SerializeToString(), {"x": (2, 3, 16, 16)})
    ops = g.op_types()
    assert "BatchNormalization" not in ops and "Pad" not in ops and "Relu" not in ops and "Clip" not in ops
    assert ops == {"Conv": 2, "Add": 1}
    convs = list(g.iter_ops("Conv"))
    assert convs[0].attrs["clip"] == (0.0, 6.0) and convs[0].attrs["pads"] == [1, 1, 1, 1]
    assert convs[1].attrs["clip"] == (0.0, float("inf"))
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    close(run_graph(g, {"x": x})["y"], ort_run(model, {"x": x})[0])


def test_unfused_graph_gives_same_result():
    rng = np.random.default_rng(1)
    model = conv_bn_relu_model(rng, pad_node=False)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    fused = load_model(model.SerializeToString(), {"x": (1, 3, 16, 16)})
    raw = load_model(model.SerializeToString(), {"x": (1, 3, 16, 16)}, fuse=False)
    assert len(raw.nodes) > len(fused.nodes)
    close(run_graph(fused, {"x": x})["y"], run_graph(raw, {"x": x})["y"])


def test_dynamic_input_must_be_pinned():
    model = conv_bn_relu_model(np.random.default_rng(2))
    with pytest.raises(ShapeError, match="pin it"):
        load_model(model.SerializeToString())


def test_tensor_size_limit_is_enforced_before_allocation():
    model = conv_bn_relu_model(np.random.default_rng(3))
    with pytest.raises(TensorTooLargeError):
        load_model(model.SerializeToString(), {"x": (10_000_000, 3, 16, 16)})
    with pytest.raises(TensorTooLargeError):
        load_model(model.SerializeToString(), {"x": (1, 3, 16, 16)}, Limits(max_tensor_bytes=2_000))


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1x3x224x224", "ids=1x128"]) == {"x": (1, 3, 224, 224), "ids": (1, 128)}
    for bad in ["x", "x=1xfoo", "x=0x3", "=1x2"]:
        with pytest.raises(ShapeError):
            parse_input_shapes([bad])


def _two_node_graph():
    g = Graph()
    g.add_tensor(Tensor("x", (1, 4)))
    g.inputs = ["x"]
    g.add_node("Relu", ["b"], ["a"])
    g.add_node("Relu", ["a"], ["b"])
    g.outputs = ["b"]
    return g


def test_cycle_is_a_graph_error():
    with pytest.raises(GraphError, match="cycle"):
        canonicalize(_two_node_graph())


def test_missing_tensor_is_a_graph_error():
    g = Graph()
    g.add_tensor(Tensor("x", (1, 4)))
    g.inputs = ["x"]
    g.add_node("Add", ["x", "nowhere"], ["y"])
    g.outputs = ["y"]
    with pytest.raises(GraphError, match="nowhere"):
        canonicalize(g)


def test_unknown_op_is_unsupported():
    g = Graph()
    g.add_tensor(Tensor("x", (1, 4)))
    g.inputs = ["x"]
    g.add_node("FrobnicateV9", ["x"], ["y"])
    g.outputs = ["y"]
    with pytest.raises(UnsupportedOpError, match="FrobnicateV9"):
        canonicalize(g)


def test_toposort_reorders_nodes():
    g = Graph()
    g.add_tensor(Tensor("x", (2, 3)))
    g.inputs = ["x"]
    g.add_node("Relu", ["a"], ["y"])
    g.add_node("Neg", ["x"], ["a"])
    g.outputs = ["y"]
    canonicalize(g)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], np.maximum(-x, 0))


def test_shape_subgraph_folds_to_constants():
    """Shape -> Gather -> Concat -> Reshape, as exporters emit, folds away once the input is pinned."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load_model(model.SerializeToString(), {"x": (3, 4, 5)})
    assert g.op_types() == {"Reshape": 1}
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    close(run_graph(g, {"x": x})["y"], ort_run(model, {"x": x})[0])


@pytest.mark.parametrize("gate, fused", [("Sigmoid", "Silu"), ("HardSigmoid", "HardSwish")])
def test_gated_activations_fuse_and_match_onnxruntime(gate, fused):
    attrs = {"alpha": 1 / 6, "beta": 0.5} if gate == "HardSigmoid" else {}
    nodes = [helper.make_node(gate, ["x"], ["g"], **attrs), helper.make_node("Mul", ["x", "g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load_model(model.SerializeToString())
    assert g.op_types() == {fused: 1}
    x = (np.random.default_rng(0).standard_normal((2, 3, 4, 5)) * 4).astype(np.float32)
    close(run_graph(g, {"x": x})["y"], ort_run(model, {"x": x})[0])


def test_gate_with_other_consumers_is_not_fused():
    nodes = [helper.make_node("Sigmoid", ["x"], ["g"]), helper.make_node("Mul", ["x", "g"], ["y"]),
             helper.make_node("Add", ["g", "y"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    g = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert "Silu" not in g.op_types()
