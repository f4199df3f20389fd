"""Exact integer GEMM through float BLAS (quant.kernels._common.exact_int_matmul) and the NPU MAC array built
on it (runtime.emulator.npu_math.conv_mac), against plain int64 arithmetic (numpy integer matmul / loops)."""

from __future__ import annotations

import numpy as np
import pytest

from opennpu.quant.kernels._common import exact_int_matmul
from opennpu.runtime.emulator.npu_math import conv_mac


@pytest.mark.parametrize("m, k, n, lo, hi", [
    (3, 7, 5, -128, 128),          # tiny
    (17, 1024, 9, -128, 128),      # exactly one float32 chunk of int8 products
    (5, 5000, 33, -128, 128),      # several chunks
    (4, 3000, 6, -255, 256),       # (x - zp) * w magnitudes: 514-wide chunks
    (3, 700, 4, -40000, 40000),    # products beyond float32 chunks: float64 path
])
def test_exact_int_matmul_equals_int64(m, k, n, lo, hi):
    rng = np.random.default_rng(k)
    a = rng.integers(lo, hi, (m, k))
    b = rng.integers(-128, 128, (k, n))
    a[0] = hi - 1  # worst-case magnitudes in one row, so chunk sums reach the bound
    b[:, 0] = -128
    np.testing.assert_array_equal(exact_int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_exact_int_matmul_refuses_inexact_sizes():
    a = np.full((1, 4), 1 << 30, np.int64)
    b = np.full((4, 1), 1 << 30, np.int64)
    with pytest.raises(OverflowError):
        exact_int_matmul(a, b)


def _naive_conv(xp, w, sy, sx, oh, ow, depthwise):
    k, _, kh, kw = w.shape
    out = np.zeros((k, oh, ow), np.int64)
    for y in range(oh):
        for x in range(ow):
            win = xp[:, y * sy:y * sy + kh, x * sx:x * sx + kw].astype(np.int64)
            if depthwise:
                out[:, y, x] = (win[:k] * w[:, 0]).sum(axis=(1, 2))
            else:
                out[:, y, x] = np.tensordot(w, win, axes=([1, 2, 3], [0, 1, 2]))
    return out


@pytest.mark.parametrize("c, k, kh, kw, sy, sx, depthwise", [
    (16, 32, 1, 1, 1, 1, False), (40, 8, 3, 3, 1, 1, False), (3, 16, 3, 3, 2, 2, False),
    (160, 16, 3, 1, 2, 1, False), (32, 32, 3, 3, 1, 1, True), (48, 48, 5, 5, 2, 2, True),
])
def test_conv_mac_equals_naive_loops(c, k, kh, kw, sy, sx, depthwise):
    rng = np.random.default_rng(c * k)
    oh, ow = 5, 7
    xp = rng.integers(-128, 128, (c, (oh - 1) * sy + kh + 1, (ow - 1) * sx + kw + 2))  # extra rows/cols unused
    w = rng.integers(-128, 128, (k, 1 if depthwise else c, kh, kw))
    np.testing.assert_array_equal(conv_mac(xp, w, sy, sx, oh, ow, depthwise),
                                  _naive_conv(xp, w, sy, sx, oh, ow, depthwise))
