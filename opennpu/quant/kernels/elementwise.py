"""int8 ADD and MUL with numpy broadcasting, TFLite semantics (gemmlowp rounding).

LiteRT's optimized x86 build compiles its NEON code paths through NEON_2_SSE. For same-shape inputs
the optimized ADD/MUL process blocks of 16 elements with NEON semantics and the remaining tail with
the scalar code; they differ from the scalar code in two ways that `kernel="optimized"` reproduces:
- ADD folds the input rescale's right shift into the left shift (one rounding instead of two), and
  narrows the int32 result to int16 without saturation before adding the output offset;
- MUL saturates to int16 and then adds the output offset in wrapping int16 arithmetic, so outputs far
  beyond the int8 range (|value| > 2^15) can come out with the wrong sign.
Broadcasting inputs always use the scalar semantics here (LiteRT's broadcast kernels split the work
differently; the two agree except for those rare ties/overflows).
"""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import (
    activation_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multiplier_smaller_than_one,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)
from opennpu.quant.kernels._common import KernelFlavor

_ADD_LEFT_SHIFT = 20  # TFLite's headroom shift for 8-bit ADD


def _wrap16(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def _neon_mask(a, b, kernel: KernelFlavor) -> np.ndarray | None:
    """Flat-index mask of the elements LiteRT's optimized kernel handles in 16-wide NEON blocks."""
    a, b = np.asarray(a), np.asarray(b)
    if kernel != "optimized" or a.shape != b.shape:
        return None
    n = a.size
    return (np.arange(n) < (n // 16) * 16).reshape(a.shape)


def add(a: np.ndarray, b: np.ndarray, *, a_scale: float, a_zp: int, b_scale: float, b_zp: int,
        output_scale: float, output_zp: int, activation: str | None = None,
        kernel: KernelFlavor = "optimized") -> np.ndarray:
    """Both inputs are shifted left by 20 bits, rescaled to twice the larger input scale, summed, and
    the sum is rescaled to the output scale (all multipliers < 1)."""
    sa, sb, so = np.float32(a_scale), np.float32(b_scale), np.float32(output_scale)
    twice_max = np.float64(2 * max(sa, sb))  # float32 doubling is exact
    ma, sha = quantize_multiplier_smaller_than_one(np.float64(sa) / twice_max)
    mb, shb = quantize_multiplier_smaller_than_one(np.float64(sb) / twice_max)
    out_real = twice_max / np.float64(np.float32((1 << _ADD_LEFT_SHIFT) * so))
    mo, sho = quantize_multiplier_smaller_than_one(out_real)
    va = (np.asarray(a, dtype=np.int64) - a_zp) << _ADD_LEFT_SHIFT
    vb = (np.asarray(b, dtype=np.int64) - b_zp) << _ADD_LEFT_SHIFT
    total = multiply_by_quantized_multiplier(va, ma, sha) + multiply_by_quantized_multiplier(vb, mb, shb)
    out = multiply_by_quantized_multiplier(total, mo, sho) + output_zp
    mask = _neon_mask(a, b, kernel)
    if mask is not None and mask.any():
        xa = wrap_int32((np.asarray(a, dtype=np.int64) - a_zp) << (_ADD_LEFT_SHIFT + int(sha)))
        xb = wrap_int32((np.asarray(b, dtype=np.int64) - b_zp) << (_ADD_LEFT_SHIFT + int(shb)))
        srdhm = saturating_rounding_doubling_high_mul
        t = wrap_int32(srdhm(xa, ma) + srdhm(xb, mb))
        t = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(t, mo), -int(sho))
        v = np.clip(_wrap16(_wrap16(t) + output_zp), -128, 127)
        out = np.where(mask, v, out)
    lo, hi = activation_range(activation, output_scale, output_zp)
    return np.clip(out, lo, hi).astype(np.int8)


def mul(a: np.ndarray, b: np.ndarray, *, a_scale: float, a_zp: int, b_scale: float, b_zp: int,
        output_scale: float, output_zp: int, activation: str | None = None,
        kernel: KernelFlavor = "optimized") -> np.ndarray:
    """(a - a_zp) * (b - b_zp) rescaled by a_scale * b_scale / output_scale (computed in float32, as
    TFLite does)."""
    real = np.float32(np.float32(a_scale) * np.float32(b_scale)) / np.float32(output_scale)
    m, s = quantize_multiplier(np.float64(np.float32(real)))
    prod = (np.asarray(a, dtype=np.int64) - a_zp) * (np.asarray(b, dtype=np.int64) - b_zp)
    out = multiply_by_quantized_multiplier(prod, m, s) + output_zp
    mask = _neon_mask(a, b, kernel)
    if mask is not None and mask.any():
        v = multiply_by_quantized_multiplier(prod, m, s)
        v = np.clip(_wrap16(np.clip(v, -(1 << 15), (1 << 15) - 1) + output_zp), -128, 127)
        out = np.where(mask, v, out)
    lo, hi = activation_range(activation, output_scale, output_zp)
    return np.clip(out, lo, hi).astype(np.int8)
