"""opennpu.export.export_tflite: every exported model is run in LiteRT and compared with an independent result.

- float zoo models (two MediaPipe .tflite, two ONNX) -> export -> LiteRT vs our float run_graph (1e-4 relative)
- small ONNX graphs exercising each mapping (layouts, padding, resize modes, clamps) -> LiteRT vs run_graph
- int8 .tflite models written with tests/tflite_builder.py -> load_model -> export -> LiteRT: outputs equal byte
  for byte to LiteRT on the original file with the same resolver, and to opennpu's integer executor
- a quantized zoo model (opennpu.quantize) -> export -> LiteRT vs run_quantized, byte for byte
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tflite
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

import tflite_builder  # noqa: E402
from tflite_builder import ModelBuilder  # noqa: E402

from opennpu.errors import UnsupportedOpError  # noqa: E402
from opennpu.export import export_tflite  # noqa: E402
from opennpu.frontends import load_model  # noqa: E402
from opennpu.runtime.cpu import run_graph  # noqa: E402

litert = pytest.importorskip("ai_edge_litert.interpreter")
Interpreter, OpResolverType = litert.Interpreter, litert.OpResolverType
OPTIMIZED, REFERENCE = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, OpResolverType.BUILTIN_REF
FLAVORS = {"optimized": OPTIMIZED, "reference": REFERENCE}

# Ops the builder does not list but whose options tables these tests do not need.
for _op in ("RESHAPE", "HARD_SWISH", "TANH"):
    tflite_builder._OPTIONS.setdefault(_op, None)
_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def run_litert(model: bytes, feeds: dict[str, np.ndarray], resolver=OPTIMIZED) -> dict[str, np.ndarray]:
    it = Interpreter(model_content=model, experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def op_counts(model: bytes) -> Counter:
    m = tflite.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    return Counter(_OP_NAMES[m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode()]
                   for i in range(sg.OperatorsLength()))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max()) / max(float(np.abs(ref).max()), 1e-12)


def check_float(graph, feeds, rtol=1e-4, **kw) -> bytes:
    model = export_tflite(graph, **kw)
    ours = run_graph(graph, feeds)
    got = run_litert(model, feeds)
    assert set(got) == set(ours)
    for k, ref in ours.items():
        assert got[k].shape == ref.shape, (k, got[k].shape, ref.shape)
        assert rel_err(got[k], ref) <= rtol, (k, rel_err(got[k], ref))
    return model


# ---------------------------------------------------------------------------------------------- zoo (float)
ZOO = {  # model -> TFLite ops that must not appear (layout work that should have been avoided)
    "blazeface": {"TRANSPOSE"},
    "selfie-segmentation": {"TRANSPOSE"},
    "mnist-cnn": {"TRANSPOSE"},  # NCHW input with C=1 is a RESHAPE, Flatten -> Gemm permutes weights
    "mobilenetv2": set(),  # one TRANSPOSE: the declared NCHW input
    "yolov8n": set(),  # Split / Slice / Concat / nearest Resize / Softmax
    "ppocrv4-rec": set(),  # HardSigmoid, Slice, attention (MatMul, Softmax), ReduceMean
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_float_round_trip(name):
    from opennpu.zoo.inputs import example_inputs

    graph = load_model(name)
    feeds = example_inputs(name)
    t0 = time.perf_counter()
    model = export_tflite(graph)
    t_export = time.perf_counter() - t0
    ours = run_graph(graph, feeds)
    got = run_litert(model, feeds, OpResolverType.AUTO)
    assert set(got) == set(ours)
    for k, ref in ours.items():
        assert got[k].shape == ref.shape
        assert rel_err(got[k], ref) <= 1e-4, (k, rel_err(got[k], ref))
    ops = op_counts(model)
    assert not set(ops) & ZOO[name], ops
    if name == "mobilenetv2":
        assert ops["TRANSPOSE"] == 1
    print(f"{name}: export {t_export * 1000:.0f} ms, {sum(ops.values())} ops {dict(ops)}")


def test_nhwc_io_drops_boundary_transposes():
    from opennpu.zoo.inputs import example_inputs

    graph = load_model("mobilenetv2")
    feeds = example_inputs("mobilenetv2")
    model = export_tflite(graph, nhwc_io=True)
    assert "TRANSPOSE" not in op_counts(model)
    got = run_litert(model, {"input": np.ascontiguousarray(feeds["input"].transpose(0, 2, 3, 1))})
    ref = run_graph(graph, feeds)["logits"]
    assert rel_err(got["logits"], ref) <= 1e-4


# ---------------------------------------------------------------------------------------------- ONNX graphs
def onnx_graph(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return load_model(m.SerializeToString())


def rand(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def test_conv_chain_layouts_and_padding():
    """Asymmetric / stride-2 pads (PAD op), SAME pads, depthwise with multiplier, grouped conv, pools with
    count_include_pad and ceil_mode, general clip, per-channel Mul, Concat on channels, Flatten -> Gemm."""
    rng = np.random.default_rng(1)
    inits = {
        "w1": rand(rng, 8, 3, 3, 3), "b1": rand(rng, 8),
        "w2": rand(rng, 16, 1, 3, 3), "b2": rand(rng, 16),    # depthwise, multiplier 2
        "w3": rand(rng, 8, 4, 1, 1),                          # group 4
        "s": rand(rng, 8, 1, 1), "lo": np.float32(-0.2), "hi": np.float32(0.7),
        "wf": rand(rng, 8 * 16 + 16 * 16, 10), "bf": rand(rng, 10), "shape": np.array([1, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["k2"]),
        helper.make_node("Conv", ["k2", "w3"], ["c3"], group=4),
        helper.make_node("Mul", ["c3", "s"], ["m3"]),
        helper.make_node("AveragePool", ["m3"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("MaxPool", ["k2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Reshape", ["p1", "shape"], ["f1"]),
        helper.make_node("Flatten", ["p2"], ["f2"]),
        helper.make_node("Concat", ["f1", "f2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    g = onnx_graph(nodes, [("x", (1, 3, 15, 15))], ["prob", "k2"], inits)
    model = check_float(g, {"x": rand(rng, 1, 3, 15, 15, scale=1.0)})
    ops = op_counts(model)
    assert ops["DEPTHWISE_CONV_2D"] == 1 and ops["CONV_2D"] == 2 and ops["MINIMUM"] == 1, ops


def test_layout_sensitive_reshape_and_channel_softmax():
    """A Reshape of an NCHW tensor with H*W > 1 needs the NCHW order (one TRANSPOSE), Softmax over the
    channel axis runs on the NHWC tensor directly, MatMul with constant weights becomes FULLY_CONNECTED."""
    rng = np.random.default_rng(2)
    inits = {"w": rand(rng, 6, 4, 3, 3), "shape": np.array([1, 6, 25], np.int64), "wm": rand(rng, 25, 7),
             "axes": np.array([2, 3], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Softmax", ["c"], ["sm"], axis=1),
        helper.make_node("Reshape", ["sm", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "wm"], ["y"]),
        helper.make_node("ReduceMean", ["c", "axes"], ["mean"], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["gate"]),
    ]
    g = onnx_graph(nodes, [("x", (1, 4, 5, 5))], ["y", "gate"], inits, opset=18)
    model = check_float(g, {"x": rand(rng, 1, 4, 5, 5, scale=1.0)})
    ops = op_counts(model)
    assert ops["TRANSPOSE"] == 2 and ops["FULLY_CONNECTED"] == 1, ops  # input NCHW->NHWC, before the Reshape


RESIZE_CASES = [  # (mode, coordinate_transformation_mode, nearest_mode, in size, out size)
    ("nearest", "asymmetric", "floor", 6, 12),
    ("nearest", "half_pixel", "round_prefer_floor", 6, 12),
    ("nearest", "align_corners", "round_prefer_ceil", 5, 9),
    ("nearest", "tf_half_pixel_for_nn", "floor", 7, 3),
    ("linear", "half_pixel", "round_prefer_floor", 6, 12),
    ("linear", "pytorch_half_pixel", "round_prefer_floor", 5, 11),
    ("linear", "align_corners", "round_prefer_floor", 5, 9),
    ("linear", "asymmetric", "round_prefer_floor", 8, 5),
]


@pytest.mark.parametrize("case", RESIZE_CASES, ids=[f"{c[0]}-{c[1]}" for c in RESIZE_CASES])
def test_resize_modes(case):
    mode, coord, nearest, n_in, n_out = case
    rng = np.random.default_rng(3)
    inits = {"w": rand(rng, 3, 2, 1, 1), "roi": np.zeros(0, np.float32), "sc": np.zeros(0, np.float32),
             "sizes": np.array([1, 3, n_out, n_out + 1], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Resize", ["c", "roi", "sc", "sizes"], ["y"], mode=mode,
                              coordinate_transformation_mode=coord, nearest_mode=nearest)]
    g = onnx_graph(nodes, [("x", (1, 2, n_in, n_in + 1))], ["y"], inits)
    model = check_float(g, {"x": rand(rng, 1, 2, n_in, n_in + 1, scale=1.0)})
    assert op_counts(model)["RESIZE_BILINEAR" if mode == "linear" else "RESIZE_NEAREST_NEIGHBOR"] == 1


def test_resize_mode_without_tflite_equivalent_is_refused():
    inits = {"roi": np.zeros(0, np.float32), "sc": np.zeros(0, np.float32),
             "sizes": np.array([1, 1, 12, 12], np.int64)}
    nodes = [helper.make_node("Resize", ["x", "roi", "sc", "sizes"], ["y"], mode="nearest",
                              coordinate_transformation_mode="half_pixel", nearest_mode="ceil")]
    g = onnx_graph(nodes, [("x", (1, 1, 5, 5))], ["y"], inits)
    with pytest.raises(UnsupportedOpError, match="Resize"):
        export_tflite(g)


def test_conv_transpose_pads_and_activations():
    """PyTorch-style ConvTranspose (k3 s2 p1 output_padding 1: no SAME equivalent, exported as a cropped
    VALID one), a SAME-compatible one, HardSwish / Tanh / LeakyRelu and a reflect Pad."""
    rng = np.random.default_rng(4)
    inits = {"w1": rand(rng, 4, 3, 3, 3), "b1": rand(rng, 3), "w2": rand(rng, 3, 2, 2, 2),
             "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["u1"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("HardSwish", ["u1"], ["h"]),
        helper.make_node("ConvTranspose", ["h", "w2"], ["u2"], strides=[2, 2]),
        helper.make_node("Tanh", ["u2"], ["t"]),
        helper.make_node("Pad", ["t", "pads"], ["p"], mode="reflect"),
        helper.make_node("LeakyRelu", ["p"], ["y"], alpha=0.1),
    ]
    g = onnx_graph(nodes, [("x", (1, 4, 5, 6))], ["y"], inits)
    model = check_float(g, {"x": rand(rng, 1, 4, 5, 6, scale=1.0)})
    ops = op_counts(model)
    assert ops["TRANSPOSE_CONV"] == 2 and ops["SLICE"] == 1 and ops["MIRROR_PAD"] == 1, ops


def test_elementwise_and_data_movement_ops():
    """Explicit Transpose (free: a layout change), Squeeze/Unsqueeze, Sub/Div/PRelu/variadic Max, standalone
    Clip (RELU6), constant Pad with a non-zero value (PADV2), Cast, ReduceMean with keepdims, MatMul of
    two activations (BATCH_MATMUL) and Gemm with a non-constant B."""
    rng = np.random.default_rng(5)
    inits = {"w": rand(rng, 4, 3, 3, 3), "c": rand(rng, 4, 1, 1), "slope": np.abs(rand(rng, 4, 1, 1)),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "v": np.float32(0.5),
             "axes": np.array([0], np.int64), "ax23": np.array([2, 3], np.int64), "k": rand(rng, 4, 5),
             "zero": np.float32(0.0), "six": np.float32(6.0)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Sub", ["c0", "c"], ["s"]),
        helper.make_node("Div", ["s", "slope"], ["d"]),
        helper.make_node("PRelu", ["d", "slope"], ["pr"]),
        helper.make_node("Sigmoid", ["pr"], ["sg"]),
        helper.make_node("Clip", ["sg", "zero", "six"], ["r6"]),
        helper.make_node("Max", ["pr", "r6", "c0"], ["mx"]),
        helper.make_node("Tanh", ["mx"], ["th"]),
        helper.make_node("Pad", ["th", "pads", "v"], ["pd"]),
        helper.make_node("Transpose", ["pd"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Softmax", ["t"], ["sm"], axis=-1),
        helper.make_node("ReduceMean", ["sm", "ax23"], ["rm"], keepdims=1),
        helper.make_node("Cast", ["rm"], ["ci"], to=TensorProto.INT32),
        helper.make_node("Cast", ["ci"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["cf", "axes"], ["sq"]),
        helper.make_node("Unsqueeze", ["sq", "axes"], ["us"]),
        helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["sm", "tt"], ["bm"]),
        helper.make_node("Flatten", ["c0"], ["fl"], axis=3),
        helper.make_node("MatMul", ["fl", "k"], ["fk"]),
        helper.make_node("Transpose", ["fk"], ["fkt"], perm=[1, 0]),
        helper.make_node("Gemm", ["fk", "fkt"], ["gg"]),
    ]
    g = onnx_graph(nodes, [("x", (1, 3, 4, 4))], ["us", "bm", "gg"], inits, opset=18)
    model = check_float(g, {"x": rand(rng, 1, 3, 4, 4, scale=1.0)})
    ops = op_counts(model)
    assert ops["PADV2"] == 1 and ops["BATCH_MATMUL"] == 2 and ops["PRELU"] == 1 and ops["MAXIMUM"] == 2, ops
    assert ops["RELU6"] == 1 and ops["CAST"] == 2, ops


def test_unsupported_op_is_named():
    inits = {"k": np.array([2], np.int64)}
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1)]
    g = onnx_graph(nodes, [("x", (1, 8))], ["v"], inits)
    with pytest.raises(UnsupportedOpError, match="TopK"):
        export_tflite(g)


# ---------------------------------------------------------------------------------------------- int8 models
def _conv(b, rng, x, name, shape_out, cin, cout, k, *, stride=1, padding="SAME", act="NONE", depthwise=False,
          in_scale, out_q):
    w = rng.integers(-127, 128, (1, k, k, cout) if depthwise else (cout, k, k, cin))
    ws = rng.uniform(0.003, 0.02, cout)
    wi = b.tensor(f"{name}.w", w.shape, "int8", ws, 0, axis=3 if depthwise else 0, data=w)
    bi = b.tensor(f"{name}.b", (cout,), "int32", in_scale * ws, 0, data=rng.integers(-800, 800, cout))
    y = b.tensor(name, shape_out, "int8", *out_q)
    opts = dict(Padding=padding, StrideW=stride, StrideH=stride, FusedActivationFunction=act)
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wi, bi], [y], version=3, DepthMultiplier=cout // cin, **opts)
    else:
        b.op("CONV_2D", [x, wi, bi], [y], version=3, **opts)
    return y


def int8_classifier() -> tuple[bytes, dict]:
    """float in -> QUANTIZE -> conv/depthwise/add/pools -> RESHAPE -> FC -> SOFTMAX -> DEQUANTIZE -> float out."""
    rng = np.random.default_rng(10)
    b = ModelBuilder()
    x = b.tensor("x", (1, 12, 12, 3), "float32")
    xq = b.tensor("xq", (1, 12, 12, 3), "int8", 0.02, 3)
    b.op("QUANTIZE", [x], [xq])
    c1 = _conv(b, rng, xq, "c1", (1, 6, 6, 8), 3, 8, 3, stride=2, act="RELU6", in_scale=0.02, out_q=(0.03, -128))
    dw = _conv(b, rng, c1, "dw", (1, 6, 6, 8), 8, 8, 3, act="RELU", depthwise=True, in_scale=0.03,
               out_q=(0.04, -100))
    ad = b.tensor("ad", (1, 6, 6, 8), "int8", 0.06, -40)
    b.op("ADD", [c1, dw], [ad], version=2, FusedActivationFunction="NONE")
    mp = b.tensor("mp", (1, 3, 3, 8), "int8", 0.06, -40)
    b.op("MAX_POOL_2D", [ad], [mp], version=2, Padding="VALID", StrideW=2, StrideH=2, FilterWidth=2,
         FilterHeight=2)
    ap = b.tensor("ap", (1, 1, 1, 8), "int8", 0.06, -40)
    b.op("AVERAGE_POOL_2D", [mp], [ap], version=2, Padding="VALID", StrideW=1, StrideH=1, FilterWidth=3,
         FilterHeight=3)
    shape = b.tensor("shape", (2,), "int32", data=np.array([1, 8]))
    fl = b.tensor("fl", (1, 8), "int8", 0.06, -40)
    b.op("RESHAPE", [ap, shape], [fl])
    w = rng.integers(-127, 128, (5, 8))
    fw = b.tensor("fw", w.shape, "int8", 0.01, 0, data=w)
    fb = b.tensor("fb", (5,), "int32", 0.06 * 0.01, 0, data=rng.integers(-500, 500, 5))
    fo = b.tensor("logits", (1, 5), "int8", 0.05, 5)
    b.op("FULLY_CONNECTED", [fl, fw, fb], [fo], version=4)
    sm = b.tensor("sm", (1, 5), "int8", 1 / 256, -128)
    b.op("SOFTMAX", [fo], [sm], version=2, Beta=1.0)
    y = b.tensor("prob", (1, 5), "float32")
    b.op("DEQUANTIZE", [sm], [y], version=2)
    feeds = {"x": rng.uniform(-2.5, 2.5, (1, 12, 12, 3)).astype(np.float32)}
    return b.finish([x], [y, fo]), feeds


def int8_branches() -> tuple[bytes, dict]:
    """int8 in/out: SAME avg pool, MUL, CONCATENATION, LOGISTIC, per-tensor conv with VALID padding, a
    Reshape of a 4-D NHWC tensor with H*W > 1 (stays a plain RESHAPE), softmax with beta, QUANTIZE int8 ->
    int8 (imported as DequantizeLinear -> QuantizeLinear, exported as one QUANTIZE again)."""
    rng = np.random.default_rng(11)
    b = ModelBuilder()
    x = b.tensor("x", (2, 9, 9, 4), "int8", 0.05, -7)
    c = _conv(b, rng, x, "c", (2, 7, 7, 6), 4, 6, 3, padding="VALID", in_scale=0.05, out_q=(0.08, 2))
    ap = b.tensor("ap", (2, 7, 7, 6), "int8", 0.08, 2)
    b.op("AVERAGE_POOL_2D", [c], [ap], version=2, Padding="SAME", StrideW=1, StrideH=1, FilterWidth=3,
         FilterHeight=3, FusedActivationFunction="RELU")
    sg = b.tensor("sg", (2, 7, 7, 6), "int8", 1 / 256, -128)
    b.op("LOGISTIC", [c], [sg], version=2)
    mu = b.tensor("mu", (2, 7, 7, 6), "int8", 0.02, -3)
    b.op("MUL", [ap, sg], [mu], version=2, FusedActivationFunction="NONE")
    cat = b.tensor("cat", (2, 7, 7, 12), "int8", 0.02, -3)
    mu2 = b.tensor("mu2", (2, 7, 7, 6), "int8", 0.02, -3)
    b.op("MAX_POOL_2D", [mu], [mu2], version=2, Padding="SAME", StrideW=1, StrideH=1, FilterWidth=2,
         FilterHeight=2)
    b.op("CONCATENATION", [mu, mu2], [cat], version=2, Axis=3)
    rq = b.tensor("rq", (2, 7, 7, 6), "int8", 0.05, 10)  # int8 -> int8 requantization
    b.op("QUANTIZE", [mu], [rq])
    shape = b.tensor("shape", (3,), "int32", data=np.array([2, 49, 12]))
    r = b.tensor("r", (2, 49, 12), "int8", 0.02, -3)
    b.op("RESHAPE", [cat, shape], [r])
    sm = b.tensor("sm", (2, 49, 12), "int8", 1 / 256, -128)
    b.op("SOFTMAX", [r], [sm], version=2, Beta=2.0)
    feeds = {"x": rng.integers(-128, 128, (2, 9, 9, 4)).astype(np.int8)}
    return b.finish([x], [sm, mu, rq]), feeds


INT8_MODELS = {"classifier": int8_classifier, "branches": int8_branches}


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_int8_model_round_trip_is_byte_exact(name, flavor):
    from opennpu.quant.executor import run_quantized

    original, feeds = INT8_MODELS[name]()
    graph = load_model(original)
    model = export_tflite(graph)
    assert op_counts(model) == op_counts(original)
    want = run_litert(original, feeds, FLAVORS[flavor])
    got = run_litert(model, feeds, FLAVORS[flavor])
    ours = run_quantized(graph, feeds, kernels=flavor)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        if k != "rq":  # see test_int8_requantize_matches_integer_executor
            np.testing.assert_array_equal(ours[k], got[k], err_msg=k)


def test_int8_requantize_matches_integer_executor():
    from opennpu.quant.executor import run_quantized

    original, feeds = int8_branches()
    graph = load_model(original)
    got = run_litert(export_tflite(graph), feeds, OPTIMIZED)["rq"]
    np.testing.assert_array_equal(run_quantized(graph, feeds, kernels="optimized")["rq"], got)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("scales", [(0.125, 1.0), (0.1875, 1.0), (0.05, 0.1)])
@pytest.mark.parametrize("n", [37, 64])
def test_int8_to_int8_quantize_rounds_ties_like_litert(flavor, scales, n):
    """QUANTIZE int8 -> int8 with scale ratios that make exact ties: LiteRT's reference kernel rounds them with
    gemmlowp (ties away from zero), its optimized kernel rounds blocks of 16 up (vqrdmulh + vrshl) and the
    tail of fewer than 16 with gemmlowp; the integer executor's two flavours reproduce each byte for byte."""
    from opennpu.quant.executor import run_quantized

    b = ModelBuilder()
    x = b.tensor("x", (1, n), "int8", scales[0], 3)
    y = b.tensor("y", (1, n), "int8", scales[1], -2)
    b.op("QUANTIZE", [x], [y])
    model = b.finish([x], [y])
    feeds = {"x": (np.arange(n) * 7 % 256 - 128).astype(np.int8).reshape(1, n)}
    got = run_litert(model, feeds, FLAVORS[flavor])["y"]
    np.testing.assert_array_equal(run_quantized(load_model(model), feeds, kernels=flavor)["y"], got)
    other = run_litert(model, feeds, FLAVORS["reference" if flavor == "optimized" else "optimized"])["y"]
    if scales[1] / scales[0] in (8.0, 16 / 3):  # power-of-two-ish ratios: ties exist and the kernels differ
        assert not np.array_equal(got, other)


def test_int8_lut_activation_matches_integer_executor():
    """int8 HardSwish is defined by a table (opennpu/quant/lut.py); the export is CAST + ADD + GATHER over
    that table, so LiteRT reproduces the integer executor exactly (TFLite's own HARD_SWISH rounds
    differently)."""
    from opennpu.quant.executor import run_quantized

    b = ModelBuilder()
    x = b.tensor("x", (1, 5, 5, 8), "int8", 0.05, 10)
    h = b.tensor("h", (1, 5, 5, 8), "int8", 0.03, -40)
    b.op("HARD_SWISH", [x], [h])
    t = b.tensor("t", (1, 5, 5, 8), "int8", 1 / 128, 0)
    b.op("TANH", [h], [t], version=2)
    graph = load_model(b.finish([x], [t, h]))
    model = export_tflite(graph)
    assert op_counts(model)["GATHER"] == 1
    feeds = {"x": np.arange(-128, 72, dtype=np.int8).reshape(1, 5, 5, 8)}
    got = run_litert(model, feeds)
    ours = run_quantized(graph, feeds)
    for k in ("t", "h"):
        np.testing.assert_array_equal(ours[k], got[k], err_msg=k)


# ---------------------------------------------------------------------------------------------- quantizer
def test_quantized_mnist_matches_integer_executor():
    """opennpu.quantize(mnist-cnn) -> export -> LiteRT equals run_quantized byte for byte (both flavours)."""
    quantizer = pytest.importorskip("opennpu.quant.quantizer",
                                    reason="opennpu.quant.quantizer is not available yet")
    from opennpu import data
    from opennpu.quant.executor import run_quantized
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    images, _ = data.mnist5k()
    x = preprocess_mnist(images[:80])
    graph = load_model("mnist-cnn")
    calib = [{"input": x[i:i + 1]} for i in range(64)]
    qgraph = quantizer.quantize(graph, calib, method="minmax", dtype="int8", progress=False)
    model = export_tflite(qgraph)
    for flavor, resolver in FLAVORS.items():
        for i in range(64, 80):
            feeds = {"input": x[i:i + 1]}
            got = run_litert(model, feeds, resolver)
            ours = run_quantized(qgraph, feeds, kernels=flavor)
            for k in ours:
                np.testing.assert_array_equal(ours[k], got[k], err_msg=f"{flavor} image {i} {k}")


@pytest.mark.parametrize("name", ["mobilenetv2", "blazeface", "selfie-segmentation", "yolov8n"])
def test_quantized_zoo_model_matches_integer_executor(name):
    """int8 zoo models export so that LiteRT reproduces run_quantized byte for byte, float islands included
    (selfie-segmentation: bilinear Resize, ConvTranspose, HardSwish as a LUT; yolov8n: Split, SiLU LUTs)."""
    quantizer = pytest.importorskip("opennpu.quant.quantizer",
                                    reason="opennpu.quant.quantizer is not available yet")
    from opennpu.quant.executor import run_quantized
    from opennpu.zoo.inputs import example_inputs

    graph = load_model(name)
    feeds = example_inputs(name)
    rng = np.random.default_rng(0)
    noisy = {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * 0.1 * np.abs(v).max()) for k, v in feeds.items()}
    qgraph = quantizer.quantize(graph, [feeds, noisy], method="minmax", dtype="int8", progress=False)
    model = export_tflite(qgraph)
    for flavor, resolver in FLAVORS.items():
        got = run_litert(model, feeds, resolver)
        ours = run_quantized(qgraph, feeds, kernels=flavor)
        for k in ours:
            np.testing.assert_array_equal(ours[k], got[k], err_msg=f"{flavor} {k}")


def test_export_does_not_mutate_graph():
    graph = load_model("mnist-cnn")
    before = [(n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in graph.nodes]
    shapes = {k: t.shape for k, t in graph.tensors.items()}
    export_tflite(graph)
    assert before == [(n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in graph.nodes]
    assert shapes == {k: t.shape for k, t in graph.tensors.items()}


def test_dynamic_shapes_must_be_pinned():
    from opennpu.errors import ShapeError
    from opennpu.frontends import import_model

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    raw = import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(ShapeError, match="pin the input shapes"):
        export_tflite(raw)


def test_quantized_standalone_relu_rescales_like_litert():
    """Regression (ppocrv5-det crashed with KeyError 'int32'): a Relu / Clip that is not fused into a conv has
    its own output range ([0, hi] vs the input's [lo, hi]), so the integer kernel rescales then clamps, as
    LiteRT's RELU / RELU6 do with different input and output parameters."""
    from opennpu.quant.executor import run_quantized
    from opennpu.quant.quantizer import quantize

    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Add", ["x", "y"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Clip", ["s", "zero", "six"], ["r6"])]
    g = onnx_graph(nodes, [("x", (1, 4, 6, 6)), ("y", (1, 4, 6, 6))], ["r", "r6"],
                   {"zero": np.float32(0.0), "six": np.float32(6.0)})
    cal = [{"x": rand(rng, 1, 4, 6, 6, scale=3.0), "y": rand(rng, 1, 4, 6, 6, scale=2.0)} for _ in range(4)]
    q = quantize(g, cal, method="minmax", weight_rounding="nearest", progress=False)
    relu = next(n for n in q.nodes if n.op_type == "Relu")
    assert q.tensor(relu.inputs[0]).quant.scale[0] != q.tensor(relu.outputs[0]).quant.scale[0]  # a real rescale
    model = export_tflite(q)
    feeds = cal[0]  # inside the calibrated ranges
    want = run_graph(g, feeds)
    for flavor, resolver in FLAVORS.items():
        ours = run_quantized(q, feeds, kernels=flavor)
        got = run_litert(model, feeds, resolver)
        for k in ("r", "r6"):
            np.testing.assert_array_equal(ours[k], got[k], err_msg=f"{flavor} {k}")
            # and close to the float result: half a step of rounding at each of x, y, the Add and the rescale
            bound = sum(0.5 * float(q.tensor(t).quant.scale[0]) for t in ("x.int8", "y.int8", "s", f"{k}.int8"))
            assert np.abs(ours[k] - want[k]).max() <= bound * 1.01
