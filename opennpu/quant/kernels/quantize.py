"""QUANTIZE (float32 -> int8/uint8) and DEQUANTIZE (8-bit -> float32) as TFLite computes them."""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import round_half_away, wrap_int32
from opennpu.quant.kernels._common import DTYPE_RANGE, KernelFlavor


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """round(x / scale) (float32 division, halves away from zero) + zero_point, clamped.

    Quotients outside int32 (or NaN) convert like x86's cvttss2si, to INT32_MIN, and the zero point is
    then added with int32 wraparound: this is what LiteRT does on x86 (C++ leaves it undefined)."""
    lo, hi = DTYPE_RANGE[dtype]
    v = round_half_away(np.asarray(x, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    bad = ~(np.abs(v) < 2.0**31)
    q = np.where(bad, -(2**31), np.nan_to_num(v)).astype(np.int64)
    q = wrap_int32(q + zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int,
               kernel: KernelFlavor = "optimized") -> np.ndarray:
    """scale * (q - zero_point). The reference kernel keeps the scale as double and rounds the double
    product to float32. LiteRT's optimized kernel (NEON code, via NEON_2_SSE on x86) handles blocks of
    8 elements as float32 q * scale + float32(-zero_point * scale), unfused, and the tail like the
    reference; the two differ in the last ulp."""
    q = np.asarray(q)
    d = q.astype(np.int64) - zero_point
    out = (np.float64(np.float32(scale)) * d).astype(np.float32)
    if kernel == "optimized":
        sc = np.float32(scale)
        zts = np.float32(-zero_point * np.float64(sc))
        vec = q.astype(np.float32) * sc + zts
        n = q.size
        mask = (np.arange(n) < (n // 8) * 8).reshape(q.shape)
        out = np.where(mask, vec, out)
    return out
