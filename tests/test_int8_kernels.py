"""opennpu.quant int8 kernels vs LiteRT, byte for byte.

Every case builds a one-op .tflite with tests/tflite_builder.py, runs it in LiteRT with the builtin
optimized kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES: no XNNPACK) and with the reference kernels
(BUILTIN_REF), and requires identical output bytes from our kernel in the matching flavor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tflite_builder import ModelBuilder  # noqa: E402

from opennpu.quant import fixedpoint as fp  # noqa: E402
from opennpu.quant import kernels as K  # noqa: E402

litert = pytest.importorskip("ai_edge_litert.interpreter")
Interpreter, OpResolverType = litert.Interpreter, litert.OpResolverType

FLAVORS = {
    "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": OpResolverType.BUILTIN_REF,
}


def run_litert(model: bytes, feeds: list[np.ndarray],
               resolver=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
    it = Interpreter(model_content=model, experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    for d, v in zip(it.get_input_details(), feeds, strict=True):
        it.set_tensor(d["index"], v)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def rand_i8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, size=shape).astype(np.int8)


# ---------------------------------------------------------------- fixedpoint unit checks
def _mbqm_reference(x: int, m: int, s: int, rounding: str) -> int:
    """Scalar big-int restatement of the three rounding schemes, independent of the numpy code."""
    left, right = max(s, 0), max(-s, 0)
    if rounding == "single":
        t = 31 - s
        return (x * m + (1 << (t - 1))) >> t
    xs = x << left
    xs = (xs + (1 << 31)) % (1 << 32) - (1 << 31)
    if rounding == "double":
        ab = xs * m
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        hi = int((ab + nudge) / (1 << 31)) if abs(ab + nudge) < (1 << 52) else (
            (ab + nudge) // (1 << 31) if ab + nudge >= 0 else -((-(ab + nudge)) // (1 << 31)))
        if right == 0:
            return hi
        mask = (1 << right) - 1
        rem = hi & mask
        thr = (mask >> 1) + (1 if hi < 0 else 0)
        return (hi >> right) + (1 if rem > thr else 0)
    hi = (xs * m + (1 << 30)) >> 31
    return (hi + ((1 << (right - 1)) if right else 0)) >> right


def test_quantize_multiplier_matches_frexp_definition():
    rng = np.random.default_rng(0)
    reals = np.concatenate([rng.uniform(1e-6, 4.0, 200), [0.0, 1.0, 0.5, 2.0**-40, 1 - 2**-40, 3.0 * 2**-33]])
    m, s = fp.quantize_multiplier(reals)
    for r, mi, si in zip(reals, m, s, strict=True):
        if r == 0 or r < 2.0**-32:
            assert (mi, si) == (0, 0)
            continue
        assert (1 << 30) <= mi < (1 << 31)
        assert abs(mi * 2.0 ** (si - 31) - r) <= r * 2.0**-30
    # the 2^31 corner case: mantissa rounding up to 1.0 carries into the exponent
    m, s = fp.quantize_multiplier(1 - 2**-40)
    assert (int(m), int(s)) == (1 << 30, 1)


@pytest.mark.parametrize("rounding", ["double", "single", "ruy"])
def test_multiply_by_quantized_multiplier_scalar_model(rounding):
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 20), 1 << 20, 400)
    m = rng.integers(1 << 30, (1 << 31) - 1, 400)
    s = rng.integers(-20, 3, 400)
    got = fp.multiply_by_quantized_multiplier(x, m, s, rounding)
    want = [_mbqm_reference(int(a), int(b), int(c), rounding) for a, b, c in zip(x, m, s, strict=True)]
    np.testing.assert_array_equal(got, want)


def test_srdhm_saturation_and_rdbpot_ties():
    assert fp.saturating_rounding_doubling_high_mul(fp.INT32_MIN, fp.INT32_MIN) == fp.INT32_MAX
    np.testing.assert_array_equal(fp.rounding_divide_by_pot(np.array([5, -5, 6, -6, 7, -7]), 1),
                                  [3, -3, 3, -3, 4, -4])


# ---------------------------------------------------------------- model builders
def _bias(rng, n, in_scale, w_scales):
    bscale = np.float32(in_scale) * np.asarray(w_scales, np.float32)
    return rng.integers(-3000, 3000, n).astype(np.int32), bscale


def _conv_model(x_shape, w, bias, bscale, in_q, w_scales, out_q, out_shape, *, depthwise, **opts):
    b = ModelBuilder()
    per_channel = np.size(w_scales) > 1
    qdim = 3 if depthwise else 0
    xi = b.tensor("x", x_shape, "int8", in_q[0], in_q[1])
    wi = b.tensor("w", w.shape, "int8", w_scales, 0, axis=qdim, data=w)
    bi = b.tensor("b", bias.shape, "int32", bscale if per_channel else bscale[:1], 0, data=bias)
    yi = b.tensor("y", out_shape, "int8", out_q[0], out_q[1])
    b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [xi, wi, bi], [yi], version=3, **opts)
    return b.finish([xi], [yi])


CONV_CASES = [
    # (x shape, out ch, k, stride, dilation, padding, per_channel, activation, out_scale)
    ((1, 9, 11, 3), 5, (3, 3), 1, 1, "SAME", True, "NONE", 0.05),
    ((1, 10, 7, 4), 6, (3, 2), 2, 1, "VALID", True, "RELU", 0.02),
    ((2, 8, 8, 5), 7, (5, 5), 2, 1, "SAME", False, "RELU6", 0.03),
    ((1, 7, 9, 16), 8, (1, 1), 1, 1, "VALID", True, "NONE", 0.0008),   # multiplier > 1
    ((1, 12, 12, 3), 4, (3, 3), 1, 2, "SAME", True, "RELU", 0.04),     # dilation
    ((1, 16, 16, 32), 24, (3, 3), 2, 1, "SAME", True, "NONE", 0.5),    # K = 288, big acc
    ((1, 24, 24, 16), 32, (3, 3), 1, 1, "SAME", True, "NONE", 0.3),    # 18k outputs: rounding ties occur
]


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d(case, flavor):
    x_shape, oc, (kh, kw), stride, dil, padding, per_channel, act, out_scale = CONV_CASES[case]
    rng = np.random.default_rng(100 + case)
    c = x_shape[3]
    w = rand_i8(rng, (oc, kh, kw, c), -127, 127)
    w_scales = rng.uniform(0.002, 0.02, oc).astype(np.float32) if per_channel else np.float32([0.01])
    in_q, out_q = (0.04, int(rng.integers(-20, 20))), (out_scale, int(rng.integers(-10, 10)))
    bias, bscale = _bias(rng, oc, in_q[0], np.broadcast_to(w_scales, (oc,)))
    x = rand_i8(rng, x_shape)
    ref = K.conv2d(x, w, bias, input_scale=in_q[0], input_zp=in_q[1], filter_scales=w_scales,
                   output_scale=out_q[0], output_zp=out_q[1], stride=stride, dilation=dil, padding=padding,
                   activation=act, kernel=flavor)
    model = _conv_model(x_shape, w, bias, bscale, in_q, w_scales, out_q, ref.shape, depthwise=False,
                        Padding=padding, StrideW=stride, StrideH=stride, DilationWFactor=dil,
                        DilationHFactor=dil, FusedActivationFunction=act)
    (got,) = run_litert(model, [x], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


DW_CASES = [
    # (x shape, multiplier, k, stride, dilation, padding, per_channel, activation, out_scale)
    ((1, 9, 11, 4), 1, (3, 3), 1, 1, "SAME", True, "NONE", 0.03),
    ((1, 10, 10, 3), 2, (3, 3), 2, 1, "SAME", True, "RELU6", 0.02),
    ((2, 7, 8, 5), 1, (5, 3), 1, 1, "VALID", False, "RELU", 0.01),
    ((1, 8, 8, 8), 1, (3, 3), 1, 1, "SAME", True, "NONE", 0.0005),     # multiplier > 1
    ((1, 11, 9, 2), 3, (3, 3), 2, 2, "VALID", True, "NONE", 0.05),
    ((1, 40, 40, 12), 1, (3, 3), 1, 1, "SAME", True, "NONE", 0.05),    # 19k outputs, NEON block + tail
    ((1, 30, 30, 5), 4, (3, 3), 2, 1, "SAME", True, "RELU", 0.02),      # 20 channels: 2 blocks + 4
]


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("case", range(len(DW_CASES)))
def test_depthwise_conv2d(case, flavor):
    x_shape, mult, (kh, kw), stride, dil, padding, per_channel, act, out_scale = DW_CASES[case]
    rng = np.random.default_rng(200 + case)
    oc = x_shape[3] * mult
    w = rand_i8(rng, (1, kh, kw, oc), -127, 127)
    w_scales = rng.uniform(0.002, 0.03, oc).astype(np.float32) if per_channel else np.float32([0.01])
    in_q, out_q = (0.05, int(rng.integers(-20, 20))), (out_scale, int(rng.integers(-10, 10)))
    bias, bscale = _bias(rng, oc, in_q[0], np.broadcast_to(w_scales, (oc,)))
    x = rand_i8(rng, x_shape)
    ref = K.depthwise_conv2d(x, w, bias, input_scale=in_q[0], input_zp=in_q[1], filter_scales=w_scales,
                             output_scale=out_q[0], output_zp=out_q[1], stride=stride, dilation=dil,
                             padding=padding, activation=act, depth_multiplier=mult, kernel=flavor)
    model = _conv_model(x_shape, w, bias, bscale, in_q, w_scales, out_q, ref.shape, depthwise=True,
                        Padding=padding, StrideW=stride, StrideH=stride, DepthMultiplier=mult,
                        DilationWFactor=dil, DilationHFactor=dil, FusedActivationFunction=act)
    (got,) = run_litert(model, [x], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


FC_CASES = [
    # (batch, K, O, per_channel, activation, out_scale)
    (1, 37, 10, False, "NONE", 0.05),
    (3, 64, 17, True, "RELU", 0.04),
    (4, 200, 33, False, "RELU6", 0.1),
    (2, 16, 8, True, "NONE", 0.0005),     # multiplier > 1
    (5, 1500, 12, True, "NONE", 0.9),     # long accumulation
]


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("case", range(len(FC_CASES)))
def test_fully_connected(case, flavor):
    batch, k, o, per_channel, act, out_scale = FC_CASES[case]
    rng = np.random.default_rng(300 + case)
    w = rand_i8(rng, (o, k), -127, 127)
    w_scales = rng.uniform(0.002, 0.02, o).astype(np.float32) if per_channel else np.float32([0.007])
    in_q, out_q = (0.03, int(rng.integers(-20, 20))), (out_scale, int(rng.integers(-10, 10)))
    bias, bscale = _bias(rng, o, in_q[0], np.broadcast_to(w_scales, (o,)))
    x = rand_i8(rng, (batch, k))
    ref = K.fully_connected(x, w, bias, input_scale=in_q[0], input_zp=in_q[1], filter_scales=w_scales,
                            output_scale=out_q[0], output_zp=out_q[1], activation=act, kernel=flavor)
    b = ModelBuilder()
    xi = b.tensor("x", x.shape, "int8", *in_q)
    wi = b.tensor("w", w.shape, "int8", w_scales, 0, axis=0, data=w)
    bi = b.tensor("b", bias.shape, "int32", bscale if per_channel else bscale[:1], 0, data=bias)
    yi = b.tensor("y", ref.shape, "int8", *out_q)
    b.op("FULLY_CONNECTED", [xi, wi, bi], [yi], version=5 if per_channel else 4, FusedActivationFunction=act)
    (got,) = run_litert(b.finish([xi], [yi]), [x], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


BIN_CASES = [
    # (shape a, shape b, scale a, scale b, scale out, activation)
    ((1, 7, 9, 3), (1, 7, 9, 3), 0.05, 0.02, 0.06, "NONE"),
    ((2, 5, 4, 6), (1, 1, 1, 6), 0.1, 0.1, 0.05, "RELU"),
    ((3, 11), (3, 11), 0.01, 0.3, 0.2, "RELU6"),
    ((1, 4, 4, 8), (1, 4, 4, 8), 0.02, 0.03, 0.0002, "NONE"),   # MUL multiplier > 1, int16 wrap
    ((1, 5, 7, 9), (1, 5, 7, 9), 0.9, 0.013, 0.0009, "NONE"),   # ADD: saturating outputs
    ((4, 33, 17), (4, 33, 17), 0.071, 0.0123, 0.05, "RELU"),
]


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("op", ["ADD", "MUL"])
@pytest.mark.parametrize("case", range(len(BIN_CASES)))
def test_add_mul(case, op, flavor):
    sa_shape, sb_shape, sa, sb, so, act = BIN_CASES[case]
    rng = np.random.default_rng(400 + case)
    za, zb, zo = (int(v) for v in rng.integers(-30, 30, 3))
    a, bb = rand_i8(rng, sa_shape), rand_i8(rng, sb_shape)
    out_shape = np.broadcast_shapes(sa_shape, sb_shape)
    fn = K.add if op == "ADD" else K.mul
    ref = fn(a, bb, a_scale=sa, a_zp=za, b_scale=sb, b_zp=zb, output_scale=so, output_zp=zo, activation=act,
             kernel=flavor)
    b = ModelBuilder()
    ai = b.tensor("a", sa_shape, "int8", sa, za)
    bi = b.tensor("b", sb_shape, "int8", sb, zb)
    yi = b.tensor("y", out_shape, "int8", so, zo)
    b.op(op, [ai, bi], [yi], version=2, FusedActivationFunction=act)
    (got,) = run_litert(b.finish([ai, bi], [yi]), [a, bb], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


POOL_CASES = [
    # (x shape, pool, stride, padding, activation)
    ((1, 9, 11, 3), (3, 3), 2, "SAME", "NONE"),
    ((2, 8, 8, 5), (2, 2), 2, "VALID", "RELU"),
    ((1, 7, 10, 4), (3, 2), 1, "SAME", "RELU6"),
    ((1, 6, 6, 17), (6, 6), 1, "VALID", "NONE"),   # global pool, count 36
]


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pool(case, op, flavor):
    x_shape, pool, stride, padding, act = POOL_CASES[case]
    rng = np.random.default_rng(500 + case)
    q = (0.05, int(rng.integers(-20, 20)))
    x = rand_i8(rng, x_shape)
    fn = K.average_pool2d if op == "AVERAGE_POOL_2D" else K.max_pool2d
    ref = fn(x, pool=pool, stride=stride, padding=padding, activation=act, output_scale=q[0], output_zp=q[1])
    b = ModelBuilder()
    xi = b.tensor("x", x_shape, "int8", *q)
    yi = b.tensor("y", ref.shape, "int8", *q)
    b.op(op, [xi], [yi], version=2, Padding=padding, StrideW=stride, StrideH=stride, FilterWidth=pool[1],
         FilterHeight=pool[0], FusedActivationFunction=act)
    (got,) = run_litert(b.finish([xi], [yi]), [x], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_concatenation(dtype, flavor):
    rng = np.random.default_rng(600)
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    shapes = [(1, 5, 7, 3), (1, 5, 7, 4), (1, 5, 7, 1)]
    out_q = (0.05, 3 if dtype == "int8" else 130)
    # LiteRT's int8 concat requires equal quantization; uint8 exercises the requantizing path
    in_q = [out_q] * 3 if dtype == "int8" else [out_q, (0.031, 100), (0.27, 128)]
    xs = [rng.integers(lo, hi + 1, s).astype(dtype) for s in shapes]
    ref = K.concatenation(xs, 3, scales=[q[0] for q in in_q], zero_points=[q[1] for q in in_q],
                          output_scale=out_q[0], output_zp=out_q[1], dtype=dtype)
    b = ModelBuilder()
    ins = [b.tensor(f"x{i}", s, dtype, *q) for i, (s, q) in enumerate(zip(shapes, in_q, strict=True))]
    yi = b.tensor("y", ref.shape, dtype, *out_q)
    b.op("CONCATENATION", ins, [yi], version=2, Axis=3)
    got = run_litert(b.finish(ins, [yi]), xs, FLAVORS[flavor])[0]
    np.testing.assert_array_equal(ref, got)


@pytest.mark.parametrize("in_scale,beta", [(0.1, 1.0), (0.03, 1.0), (0.25, 0.5), (0.0625, 2.0)])
def test_softmax(in_scale, beta):
    rng = np.random.default_rng(700)
    x = rand_i8(rng, (6, 33))
    ref = K.softmax(x, input_scale=in_scale, beta=beta)
    b = ModelBuilder()
    xi = b.tensor("x", x.shape, "int8", in_scale, 5)
    yi = b.tensor("y", x.shape, "int8", 1 / 256, -128)
    b.op("SOFTMAX", [xi], [yi], version=2, Beta=beta)
    (got,) = run_litert(b.finish([xi], [yi]), [x])
    np.testing.assert_array_equal(ref, got)


@pytest.mark.parametrize("flavor", list(FLAVORS))
@pytest.mark.parametrize("in_scale,in_zp", [(0.1, 0), (0.03, -20), (0.5, 7)])
def test_logistic(in_scale, in_zp, flavor):
    x = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    ref = K.logistic(x, input_scale=in_scale, input_zp=in_zp)
    b = ModelBuilder()
    xi = b.tensor("x", x.shape, "int8", in_scale, in_zp)
    yi = b.tensor("y", x.shape, "int8", 1 / 256, -128)
    b.op("LOGISTIC", [xi], [yi], version=2)
    (got,) = run_litert(b.finish([xi], [yi]), [x], FLAVORS[flavor])
    np.testing.assert_array_equal(ref, got)


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_quantize_dequantize(flavor):
    rng = np.random.default_rng(800)
    xf = (rng.standard_normal((4, 50)) * 3).astype(np.float32)
    xf[0, :8] = np.float32([0.5, -0.5, 1.5, -1.5, 2.5, 0.05 * 3.5, -1e9, 1e9])  # ties and clamps
    q = (0.05, -7)
    b = ModelBuilder()
    xi = b.tensor("x", xf.shape, "float32")
    qi = b.tensor("q", xf.shape, "int8", *q)
    yi = b.tensor("y", xf.shape, "float32")
    b.op("QUANTIZE", [xi], [qi])
    b.op("DEQUANTIZE", [qi], [yi], version=2)
    model = b.finish([xi], [qi, yi])
    got_q, got_f = run_litert(model, [xf], FLAVORS[flavor])
    ref_q = K.quantize(xf, *q)
    np.testing.assert_array_equal(ref_q, got_q)
    np.testing.assert_array_equal(K.dequantize(ref_q, *q, kernel=flavor).view(np.int32), got_f.view(np.int32))


def test_xnnpack_conv_is_not_byte_exact_but_within_one():
    """The default resolver (XNNPACK delegate) requantizes with a single round-half-up ("single"), not
    ruy's double rounding: outputs may differ from the builtin kernels by one step. Documented, not
    relied upon."""
    x_shape, oc, (kh, kw), stride, dil, padding, _, act, out_scale = CONV_CASES[5]
    rng = np.random.default_rng(105)
    w = rand_i8(rng, (oc, kh, kw, x_shape[3]), -127, 127)
    w_scales = rng.uniform(0.002, 0.02, oc).astype(np.float32)
    bias, bscale = _bias(rng, oc, 0.04, w_scales)
    x = rand_i8(rng, x_shape)
    ref = K.conv2d(x, w, bias, input_scale=0.04, input_zp=1, filter_scales=w_scales, output_scale=out_scale,
                   output_zp=-3, stride=stride, padding=padding, activation=act)
    model = _conv_model(x_shape, w, bias, bscale, (0.04, 1), w_scales, (out_scale, -3), ref.shape,
                        depthwise=False, Padding=padding, StrideW=stride, StrideH=stride)
    (got,) = run_litert(model, [x], OpResolverType.AUTO)
    assert np.abs(ref.astype(int) - got).max() <= 1
