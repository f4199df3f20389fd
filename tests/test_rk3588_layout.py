"""RK3588 NPU memory layouts: NC1HWC2 feature maps, first-layer mode, weights, biases, strides."""

from __future__ import annotations

import numpy as np
import pytest

from opennpu.errors import CompileError, ShapeError
from opennpu.targets.rk3588 import layout as L

RNG = np.random.default_rng(0)


def _i8(shape):
    return RNG.integers(-128, 128, size=shape, dtype=np.int8)


@pytest.mark.parametrize("c,h,w", [(1, 1, 1), (3, 5, 7), (16, 4, 4), (17, 3, 9), (40, 6, 2), (64, 2, 3)])
def test_feature_round_trip_int8(c, h, w):
    x = _i8((1, c, h, w))
    packed = L.pack_feature(x, pad_value=-7)
    assert packed.shape == (-(-c // 16), h, w, 16)
    buf = packed.tobytes()
    assert len(buf) == L.feature_bytes(c, h, w) <= L.mesa_feature_alloc_bytes(c, h, w)
    np.testing.assert_array_equal(L.unpack_feature(buf, c, h, w), x[0])
    # byte offsets follow [C/16][H][W][16] with W contiguous (iav: width = the contiguous memory row)
    raw = np.frombuffer(buf, dtype=np.int8)
    for ch, y, xx in [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w - 1)]:
        assert raw[L.feature_offset(ch, y, xx, h, w)] == x[0, ch, y, xx]
    if c % 16:
        assert (packed[-1, :, :, c % 16:] == -7).all()


def test_feature_fp16_and_custom_c2():
    x = RNG.standard_normal((11, 4, 5)).astype(np.float16)
    packed = L.pack_feature(x)
    assert packed.shape == (2, 4, 5, 8)  # C2 = 8 for fp16 (16-byte atoms)
    assert L.feature_bytes(11, 4, 5, "float16") == len(packed.tobytes()) == 2 * 4 * 5 * 8 * 2
    np.testing.assert_array_equal(L.unpack_feature(packed.tobytes(), 11, 4, 5, "float16"), x)
    assert L.feature_offset(9, 1, 2, 4, 5, c2=8, itemsize=2) == ((1 * 4 + 1) * 5 + 2) * 16 + 1 * 2
    # RKNN's first-layer example (1,3,224,224) -> (1,1,224,224,3): C2 = C
    rgb = RNG.integers(0, 256, size=(1, 3, 8, 8), dtype=np.uint8)
    p3 = L.pack_feature(rgb, c2=3)
    assert p3.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(L.unpack_feature(p3.tobytes(), 3, 8, 8, "uint8", c2=3), rgb[0])
    # RKNN doc example (1,32,112,112) -> (1,2,112,112,16)
    assert L.feature_shape(32, 112, 112, 16) == (2, 112, 112, 16)


def test_feature_errors():
    with pytest.raises(ShapeError):
        L.pack_feature(np.zeros((2, 3, 4, 4), np.int8))
    with pytest.raises(ShapeError):
        L.unpack_feature(b"\0" * 10, 16, 2, 2)
    with pytest.raises(CompileError):
        L.c2_for("float32")


@pytest.mark.parametrize("h,w", [(5, 3), (16, 16), (7, 40)])
def test_single_channel_round_trip(h, w):
    x = RNG.integers(0, 256, size=(1, 1, h, w), dtype=np.uint8)
    packed = L.pack_single_channel(x, pad_value=128)
    assert packed.shape == (h, max(w, 16))
    assert (packed[:, w:] == 128).all()
    np.testing.assert_array_equal(L.unpack_single_channel(packed.tobytes(), h, w), x[0, 0])
    assert L.cna_single_channel_strides(h, w) == (max(w, 16), max(w, 16) * (h - 1))


def test_int8_domain():
    u = np.arange(256, dtype=np.uint8)
    n = L.to_npu_int8(u)
    np.testing.assert_array_equal(n.view(np.uint8), u ^ 0x80)  # x - 0x80 == x ^ 0x80 as bytes
    np.testing.assert_array_equal(L.from_npu_int8(n, "uint8"), u)
    s = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(L.to_npu_int8(s), s)
    assert L.npu_zero_point(128, "uint8") == 0 and L.npu_zero_point(-5, "int8") == -5
    with pytest.raises(CompileError):
        L.to_npu_int8(np.zeros(3, np.float32))


def _expected_offset(oc, ic, y, x, cout, cin, kh, kw, dw):
    """Byte offset from the documented index order [oc/32][ic/G][kh][kw][oc%32][ic%G] for layers whose
    channel counts are multiples of the groups (no partial groups)."""
    g = 64 if dw else 32
    ic1n, ic2n = -(-cin // g), min(cin, g)
    oc_tot = 1 if dw else cout
    oc2n = min(oc_tot, 32)
    return ((((oc // 32 * ic1n + ic // g) * kh + y) * kw + x) * oc2n + oc % 32) * ic2n + ic % g


@pytest.mark.parametrize("cout,cin,k", [(64, 64, 3), (32, 96, 1), (96, 32, 3)])
def test_weight_index_order(cout, cin, k):
    w = _i8((cout, cin, k, k))
    packed = L.pack_conv_weights(w, pad_value=0)
    assert packed.size == cout * cin * k * k
    for oc, ic, y, x in [(0, 0, 0, 0), (cout - 1, cin - 1, k - 1, k - 1), (33 % cout, 17, k // 2, 0)]:
        assert packed[_expected_offset(oc, ic, y, x, cout, cin, k, k, False)] == w[oc, ic, y, x]


def test_depthwise_index_order():
    c, k = 128, 3
    w = _i8((c, 1, k, k))
    packed = L.pack_conv_weights(w, pad_value=0, depthwise=True)
    assert packed.size == c * k * k
    for ch, y, x in [(0, 0, 0), (127, 2, 2), (70, 1, 0)]:
        assert packed[_expected_offset(0, ch, y, x, c, c, k, k, True)] == w[ch, 0, y, x]


@pytest.mark.parametrize("cout,cin,kh,kw,dw", [
    (1, 1, 1, 1, False), (5, 3, 3, 3, False), (33, 16, 1, 1, False), (32, 40, 3, 3, False),
    (48, 56, 1, 1, False), (100, 100, 1, 1, False), (16, 16, 3, 3, True), (40, 40, 3, 3, True),
    (72, 72, 5, 5, True), (120, 120, 3, 3, True), (3, 8, 2, 1, False)])
def test_weight_round_trip(cout, cin, kh, kw, dw):
    w = _i8((cout, 1 if dw else cin, kh, kw))
    packed = L.pack_conv_weights(w, pad_value=-3, depthwise=dw)
    assert packed.size == L.weight_bytes(cout, cin, kh, kw, dw) <= L.mesa_weight_alloc_bytes(cout, cin, kh, kw, dw)
    np.testing.assert_array_equal(L.unpack_conv_weights(packed.tobytes(), cout, cin, kh, kw, dw), w)
    # per (kernel, tap) the input channels are padded to a multiple of 16 (at least 16), except a depthwise
    # group of 64 that holds the whole channel count
    kernels = 1 if dw else cout + (cout % 2)
    per_tap = packed.size // (kernels * kh * kw)
    if not (dw and 16 < cin < 64):
        assert per_tap == max(16, -(-cin // 16) * 16)
    if not dw:  # every real kernel carries (per_tap - cin) padded channels holding pad_value
        assert (packed == -3).sum() >= cout * kh * kw * (per_tap - cin)


def test_padded_channels_hold_zero_point():
    w = np.ones((2, 3, 1, 1), np.int8)
    packed = L.pack_conv_weights(w, pad_value=-9)
    # Cout=2, Cin=3 -> 2 kernels x 16 channels: 3 real weights then 13 pads per kernel
    assert packed.tolist() == ([1] * 3 + [-9] * 13) * 2
    w5 = np.ones((5, 16, 1, 1), np.int8)
    packed5 = L.pack_conv_weights(w5, pad_value=-9)
    assert packed5.size == 6 * 16 and (packed5[5 * 16:] == 0).all()  # kernel 5 (align2 padding) is zero


def test_weight_errors():
    with pytest.raises(CompileError):
        L.pack_conv_weights(np.zeros((2, 2, 1, 1), np.uint8), 0)
    with pytest.raises(CompileError):
        L.pack_conv_weights(np.zeros((4, 2, 3, 3), np.int8), 0, depthwise=True)
    with pytest.raises(ShapeError):
        L.unpack_conv_weights(b"\0" * 4, 32, 32, 1, 1)


def test_bias_correction_matches_zero_point_identity():
    # sum_x (x_npu)(w - wzp) + (bias - corr) == sum_x (x - izp)(w - wzp) + bias   (all NPU-domain integers)
    cout, cin, k = 7, 5, 3
    w = _i8((cout, cin, k, k))
    x = _i8((cin, k, k)).astype(np.int64)
    wzp, izp = 3, -20
    bias = RNG.integers(-1000, 1000, size=cout)
    corr = L.bias_correction(w, wzp, izp)
    packed = L.pack_bias(bias, corr)
    wc = w.astype(np.int64) - wzp
    lhs = np.einsum("oihw,ihw->o", wc, x) + packed
    rhs = np.einsum("oihw,ihw->o", wc, x - izp) + bias
    np.testing.assert_array_equal(lhs, rhs)
    assert packed.dtype == np.dtype("<i4")


def test_bias_truncation_toward_zero():
    bias = np.array([7, -7, 8, -9, 0, 2**31 - 1])
    out = L.pack_bias(bias, np.zeros(6, np.int64), truncate_bits=1)
    assert out.tolist() == [int(v / 2) for v in bias]
    with pytest.raises(CompileError):
        L.pack_bias(np.array([2**31 - 1]), np.array([-1]))
    with pytest.raises(CompileError):
        L.pack_bias(bias, np.zeros(6), truncate_bits=32)


def test_strides():
    assert L.line_stride_bytes(224) == 224 * 16
    assert L.surface_stride_bytes(112, 112) == 112 * 112 * 16
    assert L.dpu_dst_surf_stride(112, 112) == 12544  # field value; byte stride = value << 4
    assert L.cna_line_stride(112) == 448  # Mesa: W * 16 / 4
    assert L.cna_surface_stride(112, 112) == 448 * 27  # Mesa: line * (H/4 - 1)
