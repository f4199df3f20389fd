"""The integer executor vs LiteRT, byte for byte, on int8 .tflite models.

Each model is written with tests/tflite_builder.py, imported with opennpu.load_model (TFLite importer +
canonicalize: transposes cancelled, conv chains in NCHW) and run with ``run_quantized`` under both kernel
flavours; LiteRT runs the same bytes with the matching op resolver (no XNNPACK). Every output byte must be
equal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tflite_builder  # noqa: E402
from tflite_builder import ModelBuilder  # noqa: E402

from opennpu import load_model  # noqa: E402
from opennpu.errors import UnsupportedOpError  # noqa: E402
from opennpu.ir.graph import Graph, QuantInfo, Tensor  # noqa: E402
from opennpu.quant import fixedpoint as fp  # noqa: E402
from opennpu.quant.executor import run_quantized  # noqa: E402
from opennpu.quant.lut import lut_table  # noqa: E402

litert = pytest.importorskip("ai_edge_litert.interpreter")
Interpreter, OpResolverType = litert.Interpreter, litert.OpResolverType

FLAVORS = {
    "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": OpResolverType.BUILTIN_REF,
}
# ops the shared builder does not list; registered here for this module only
for _op, _opt in {"RESHAPE": None, "TANH": None, "SUB": "SubOptions", "MEAN": "ReducerOptions",
                  "PAD": None, "BATCH_MATMUL": "BatchMatMulOptions"}.items():
    tflite_builder._OPTIONS.setdefault(_op, _opt)


def run_litert(model: bytes, feeds: list[np.ndarray], flavor: str) -> list[np.ndarray]:
    it = Interpreter(model_content=model, experimental_op_resolver_type=FLAVORS[flavor], num_threads=1)
    it.allocate_tensors()
    for d, v in zip(it.get_input_details(), feeds, strict=True):
        it.set_tensor(d["index"], v)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def check(model: bytes, feeds: list[np.ndarray], flavor: str) -> Graph:
    g = load_model(model)
    want = run_litert(model, feeds, flavor)
    got = run_quantized(g, dict(zip(g.inputs, feeds, strict=True)), kernels=flavor)
    for name, w in zip(g.outputs, want, strict=True):
        assert got[name].dtype == w.dtype, name
        np.testing.assert_array_equal(got[name].view(np.uint8), w.view(np.uint8), err_msg=name)
    return g


def i8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, size=shape).astype(np.int8)


def conv_layer(b: ModelBuilder, rng, x: int, x_q, cin: int, cout: int, k: int, out_shape, out_q, name: str,
               depthwise: bool = False, **opts) -> int:
    if depthwise:
        w = i8(rng, (1, k, k, cout), -127, 127)
        ws = rng.uniform(0.003, 0.03, cout).astype(np.float32)
        wi = b.tensor(f"{name}.w", w.shape, "int8", ws, 0, axis=3, data=w)
    else:
        w = i8(rng, (cout, k, k, cin), -127, 127)
        ws = rng.uniform(0.002, 0.02, cout).astype(np.float32)
        wi = b.tensor(f"{name}.w", w.shape, "int8", ws, 0, axis=0, data=w)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    bi = b.tensor(f"{name}.b", (cout,), "int32", np.float32(x_q[0]) * ws, 0, data=bias)
    y = b.tensor(name, out_shape, "int8", *out_q)
    b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, wi, bi], [y], version=3, **opts)
    return y


# ---------------------------------------------------------------- single-op models
@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("case", ["same_relu6", "valid_stride2", "dilated", "big_k"])
def test_conv(case, flavor):
    rng = np.random.default_rng(hash(case) % 1000)
    shape, cout, k, stride, dil, pad, act, out_s = {
        "same_relu6": ((2, 9, 11, 3), 5, 3, 1, 1, "SAME", "RELU6", 0.05),
        "valid_stride2": ((1, 10, 7, 4), 6, 3, 2, 1, "VALID", "RELU", 0.02),
        "dilated": ((1, 12, 12, 3), 4, 3, 1, 2, "SAME", "NONE", 0.04),
        "big_k": ((1, 12, 12, 96), 20, 3, 1, 1, "SAME", "NONE", 0.6),  # K = 864 > one float32 chunk
    }[case]
    n, h, w, c = shape
    oh = -(-h // stride) if pad == "SAME" else (h - (k - 1) * dil - 1) // stride + 1
    ow = -(-w // stride) if pad == "SAME" else (w - (k - 1) * dil - 1) // stride + 1
    b = ModelBuilder()
    xq = (0.04, int(rng.integers(-20, 20)))
    x = b.tensor("x", shape, "int8", *xq)
    y = conv_layer(b, rng, x, xq, c, cout, k, (n, oh, ow, cout), (out_s, int(rng.integers(-10, 10))), "y",
                   Padding=pad, StrideW=stride, StrideH=stride, DilationWFactor=dil, DilationHFactor=dil,
                   FusedActivationFunction=act)
    check(b.finish([x], [y]), [i8(rng, shape)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("mult,c", [(1, 20), (2, 6), (1, 5)])
def test_depthwise(mult, c, flavor):
    rng = np.random.default_rng(10 * mult + c)
    b = ModelBuilder()
    xq = (0.05, 3)
    x = b.tensor("x", (2, 13, 11, c), "int8", *xq)
    y = conv_layer(b, rng, x, xq, c, c * mult, 3, (2, 7, 6, c * mult), (0.03, -5), "y", depthwise=True,
                   Padding="SAME", StrideW=2, StrideH=2, DepthMultiplier=mult, FusedActivationFunction="RELU6")
    check(b.finish([x], [y]), [i8(rng, (2, 13, 11, c))], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("per_channel", [True, False])
def test_fully_connected(per_channel, flavor):
    rng = np.random.default_rng(3)
    o, k = 17, 300
    w = i8(rng, (o, k), -127, 127)
    ws = rng.uniform(0.002, 0.02, o).astype(np.float32) if per_channel else np.float32([0.008])
    b = ModelBuilder()
    x = b.tensor("x", (4, k), "int8", 0.03, -7)
    wi = b.tensor("w", w.shape, "int8", ws, 0, axis=0, data=w)
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    bi = b.tensor("b", (o,), "int32", np.float32(0.03) * np.broadcast_to(ws, (o,)) if per_channel
                  else np.float32(0.03) * ws, 0, data=bias)
    y = b.tensor("y", (4, o), "int8", 0.09, 4)
    b.op("FULLY_CONNECTED", [x, wi, bi], [y], version=5 if per_channel else 4, FusedActivationFunction="RELU")
    check(b.finish([x], [y]), [i8(rng, (4, k))], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_binary(op, flavor):
    rng = np.random.default_rng(4)
    shape = (2, 6, 7, 5)  # 420 elements: NEON blocks and a scalar tail
    b = ModelBuilder()
    a = b.tensor("a", shape, "int8", 0.05, 3)
    c = b.tensor("c", shape, "int8", 0.02, -9)
    y = b.tensor("y", shape, "int8", 0.06, -2)
    opts = {"FusedActivationFunction": "RELU"} if op != "SUB" else {}
    b.op(op, [a, c], [y], version=2, **opts)
    check(b.finish([a, c], [y]), [i8(rng, shape), i8(rng, shape)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("pad", ["SAME", "VALID"])
def test_pool(op, pad, flavor):
    rng = np.random.default_rng(5)
    shape = (2, 9, 10, 6)
    oh, ow = (5, 5) if pad == "SAME" else (4, 4)
    b = ModelBuilder()
    x = b.tensor("x", shape, "int8", 0.05, -4)
    y = b.tensor("y", (2, oh, ow, 6), "int8", 0.05, -4)
    b.op(op, [x], [y], version=2, Padding=pad, StrideW=2, StrideH=2, FilterWidth=3, FilterHeight=3)
    check(b.finish([x], [y]), [i8(rng, shape)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_concat(flavor):
    rng = np.random.default_rng(6)
    b = ModelBuilder()
    q = (0.05, 3)
    xs = [b.tensor(f"x{i}", (1, 5, 6, c), "int8", *q) for i, c in enumerate((3, 4, 2))]
    y = b.tensor("y", (1, 5, 6, 9), "int8", *q)
    b.op("CONCATENATION", xs, [y], version=2, Axis=3)
    check(b.finish(xs, [y]), [i8(rng, (1, 5, 6, c)) for c in (3, 4, 2)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_softmax(beta, flavor):
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x = b.tensor("x", (6, 33), "int8", 0.1, 5)
    y = b.tensor("y", (6, 33), "int8", 1 / 256, -128)
    b.op("SOFTMAX", [x], [y], version=2, Beta=beta)
    check(b.finish([x], [y]), [i8(rng, (6, 33))], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_logistic_tanh(op, flavor):
    b = ModelBuilder()
    x = b.tensor("x", (2, 128), "int8", 0.04, -10)
    y = b.tensor("y", (2, 128), "int8", *((1 / 256, -128) if op == "LOGISTIC" else (1 / 128, 0)))
    b.op(op, [x], [y], version=2)
    check(b.finish([x], [y]), [np.arange(-128, 128, dtype=np.int8).reshape(2, 128)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("same_q", [True, False])
def test_mean(same_q, flavor):
    rng = np.random.default_rng(8)
    c = 6  # below LiteRT's 8-channel NEON blocks (which use an approximate reciprocal)
    b = ModelBuilder()
    x = b.tensor("x", (2, 7, 5, c), "int8", 0.05, -3)
    axes = b.tensor("axes", (2,), "int32", data=np.array([1, 2], np.int32))
    y = b.tensor("y", (2, 1, 1, c), "int8", *((0.05, -3) if same_q else (0.02, 6)))
    b.op("MEAN", [x, axes], [y], version=2, KeepDims=True)
    check(b.finish([x], [y]), [i8(rng, (2, 7, 5, c))], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_quantize_dequantize_requantize(flavor):
    rng = np.random.default_rng(9)
    xf = (rng.standard_normal((3, 40)) * 3).astype(np.float32)
    xf[0, :4] = [0.025, -0.025, 0.075, 1e9]  # ties (NEON block: half to even) and a clamp
    xf[2, -3:] = [0.025, -0.075, 0.125]  # ties in the scalar tail: half away from zero
    b = ModelBuilder()
    x = b.tensor("x", xf.shape, "float32")
    q1 = b.tensor("q1", xf.shape, "int8", 0.05, -7)
    q2 = b.tensor("q2", xf.shape, "int8", 0.031, 11)
    y = b.tensor("y", xf.shape, "float32")
    b.op("QUANTIZE", [x], [q1])
    b.op("QUANTIZE", [q1], [q2], version=2)
    b.op("DEQUANTIZE", [q2], [y], version=2)
    check(b.finish([x], [q1, q2, y]), [xf], flavor)


# ---------------------------------------------------------------- multi-op models
def _small_net(rng, batch: int = 2) -> tuple[bytes, list[np.ndarray]]:
    """float in -> QUANTIZE -> conv -> depthwise -> add(residual) -> avgpool(global) -> reshape -> FC ->
    softmax -> DEQUANTIZE."""
    b = ModelBuilder()
    xf = b.tensor("image", (batch, 12, 12, 3), "float32")
    q0 = (0.02, 5)
    x = b.tensor("image_q", (batch, 12, 12, 3), "int8", *q0)
    b.op("QUANTIZE", [xf], [x])
    c1q = (0.03, -128)
    c1 = conv_layer(b, rng, x, q0, 3, 16, 3, (batch, 12, 12, 16), c1q, "conv1", Padding="SAME", StrideW=1,
                    StrideH=1, FusedActivationFunction="RELU6")
    d1q = (0.025, -100)
    d1 = conv_layer(b, rng, c1, c1q, 16, 16, 3, (batch, 12, 12, 16), d1q, "dw1", depthwise=True, Padding="SAME",
                    StrideW=1, StrideH=1, DepthMultiplier=1, FusedActivationFunction="RELU")
    aq = (0.04, -90)
    a = b.tensor("add", (batch, 12, 12, 16), "int8", *aq)
    b.op("ADD", [c1, d1], [a], version=2)
    p = b.tensor("pool", (batch, 1, 1, 16), "int8", *aq)
    b.op("AVERAGE_POOL_2D", [a], [p], version=2, Padding="VALID", StrideW=1, StrideH=1, FilterWidth=12,
         FilterHeight=12)
    shp = b.tensor("shape", (2,), "int32", data=np.array([batch, 16], np.int32))
    r = b.tensor("flat", (batch, 16), "int8", *aq)
    b.op("RESHAPE", [p, shp], [r])
    w = i8(rng, (10, 16), -127, 127)
    ws = rng.uniform(0.005, 0.03, 10).astype(np.float32)
    wi = b.tensor("fc.w", w.shape, "int8", ws, 0, axis=0, data=w)
    bi = b.tensor("fc.b", (10,), "int32", np.float32(aq[0]) * ws, 0,
                  data=rng.integers(-500, 500, 10).astype(np.int32))
    lq = (0.05, 2)
    lo = b.tensor("logits", (batch, 10), "int8", *lq)
    b.op("FULLY_CONNECTED", [r, wi, bi], [lo], version=5)
    sm = b.tensor("probs_q", (batch, 10), "int8", 1 / 256, -128)
    b.op("SOFTMAX", [lo], [sm], version=2, Beta=1.0)
    out = b.tensor("probs", (batch, 10), "float32")
    b.op("DEQUANTIZE", [sm], [out], version=2)
    model = b.finish([xf], [lo, sm, out])
    img = rng.uniform(-1.0, 3.5, (batch, 12, 12, 3)).astype(np.float32)
    return model, [img]


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_multi_op_model(flavor):
    rng = np.random.default_rng(11)
    model, feeds = _small_net(rng)
    g = check(model, feeds, flavor)
    assert g.op_types()["Conv"] == 2  # the conv chain runs in NCHW after the importer's transposes cancel


def test_multi_op_model_conv_chain_keep():
    """keep=True returns every tensor; integer tensors as codes with their QuantInfo."""
    rng = np.random.default_rng(12)
    model, feeds = _small_net(rng)
    g = load_model(model)
    env = run_quantized(g, {g.inputs[0]: feeds[0]}, keep=True)
    assert env["image_q"].dtype == np.int8 and g.tensor("image_q").quant is not None
    assert env["probs"].dtype == np.float32


def test_unsupported_raises_naming_node():
    g = Graph("bad")
    g.add_tensor(Tensor("x", (1, 4), "int8", None, QuantInfo(np.float32([0.1]), np.int64([0]))))
    g.add_tensor(Tensor("y", (1, 4), "int8", None, QuantInfo(np.float32([0.1]), np.int64([0]))))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Cos", ["x"], ["y"], name="the_cos")
    g.nodes[0].op_type = "TopK"
    with pytest.raises(UnsupportedOpError, match="the_cos"):
        run_quantized(g, {"x": np.zeros((1, 4), np.int8)})


def test_lut_definition():
    """LUT activations: float64 function, round half away from zero, saturate (int8 and int16)."""
    t = lut_table("Silu", {}, 0.1, 0, 0.05, -20)
    x = 0.1 * np.arange(-128, 128, dtype=np.float64)
    want = np.clip(fp.round_half_away(x / (1 + np.exp(-x)) / np.float64(np.float32(0.05))) - 20, -128, 127)
    np.testing.assert_array_equal(t, want)
    assert lut_table("HardSwish", {}, 0.001, 0, 0.001, 0, "int16", "int16").shape == (65536,)


def test_batched_speed():
    """A batch of 64 through the small net: the executor is vectorized over the batch."""
    rng = np.random.default_rng(13)
    model, _ = _small_net(rng, batch=64)
    g = load_model(model)
    x = rng.uniform(-1, 3, (64, 12, 12, 3)).astype(np.float32)
    t = time.perf_counter()
    run_quantized(g, {g.inputs[0]: x})
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("rounding", ["ruy", "double"])
def test_requantize_fast_matches_fixedpoint(rounding):
    from opennpu.quant.executor import requantize_fast

    rng = np.random.default_rng(14)
    acc = rng.integers(-(1 << 24), 1 << 24, (3, 16, 9, 9)).astype(np.int64)
    acc[0, 0, 0, :4] = [0, (1 << 31) - 2, -(1 << 31) + 1, 1 << 20]
    m, s = fp.quantize_multiplier(rng.uniform(1e-6, 0.99, 16))
    m, s = m.reshape(1, 16, 1, 1), s.reshape(1, 16, 1, 1)
    want = fp.requantize(acc, m, s, -7, -128, 127, rounding)
    np.testing.assert_array_equal(requantize_fast(acc, m, s, -7, -128, 127, rounding), want)
    # ties: accumulators that land exactly on .5 after the multiplier
    m2, s2 = fp.quantize_multiplier(np.full(16, 0.25))
    acc2 = np.arange(-(16 * 81 * 3) // 2, (16 * 81 * 3) // 2).reshape(3, 16, 9, 9).astype(np.int64)
    np.testing.assert_array_equal(requantize_fast(acc2, m2.reshape(1, 16, 1, 1), s2.reshape(1, 16, 1, 1), 0,
                                                  -128, 127, rounding),
                                  fp.requantize(acc2, m2.reshape(1, 16, 1, 1), s2.reshape(1, 16, 1, 1), 0, -128,
                                                127, rounding))


# ---------------------------------------------------------------- 16x8 (int16 activations, int8 weights)
@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_conv_16x8(flavor):
    rng = np.random.default_rng(15)
    b = ModelBuilder()
    xq = (0.001, 0)
    x = b.tensor("x", (2, 9, 9, 5), "int16", *xq)
    w = i8(rng, (7, 3, 3, 5), -127, 127)
    ws = rng.uniform(0.002, 0.02, 7).astype(np.float32)
    wi = b.tensor("w", w.shape, "int8", ws, 0, axis=0, data=w)
    bi = b.tensor("b", (7,), "int64", np.float32(xq[0]) * ws, 0,
                  data=rng.integers(-200000, 200000, 7).astype(np.int64))  # 16x8 conv takes int64 bias
    y = b.tensor("y", (2, 9, 9, 7), "int16", 0.003, 0)
    b.op("CONV_2D", [x, wi, bi], [y], version=4, Padding="SAME", StrideW=1, StrideH=1)
    check(b.finish([x], [y]), [rng.integers(-32768, 32768, (2, 9, 9, 5)).astype(np.int16)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("per_channel", [True, False])
def test_fully_connected_16x8(per_channel, flavor):
    rng = np.random.default_rng(16)
    b = ModelBuilder()
    x = b.tensor("x", (5, 40), "int16", 0.002, 0)
    w = i8(rng, (9, 40), -127, 127)
    ws = rng.uniform(0.002, 0.02, 9).astype(np.float32)
    ws = ws if per_channel else ws[:1]
    wi = b.tensor("w", w.shape, "int8", ws, 0, axis=0, data=w)
    bi = b.tensor("b", (9,), "int64", np.float32(0.002) * ws, 0, data=rng.integers(-20000, 20000, 9).astype(np.int64))
    y = b.tensor("y", (5, 9), "int16", 0.004, 0)
    b.op("FULLY_CONNECTED", [x, wi, bi], [y], version=7)
    check(b.finish([x], [y]), [rng.integers(-32768, 32768, (5, 40)).astype(np.int16)], flavor)


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_add_16x8(flavor):
    rng = np.random.default_rng(17)
    b = ModelBuilder()
    a = b.tensor("a", (2, 50), "int16", 0.001, 0)
    c = b.tensor("c", (2, 50), "int16", 0.0007, 0)
    y = b.tensor("y", (2, 50), "int16", 0.0015, 0)
    b.op("ADD", [a, c], [y], version=3)
    check(b.finish([a, c], [y]), [rng.integers(-32768, 32768, (2, 50)).astype(np.int16) for _ in range(2)], flavor)
