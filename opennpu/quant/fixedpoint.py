"""TFLite / gemmlowp integer requantization, vectorized on int64 numpy arrays.

A real multiplier M > 0 is stored as (m, shift) with M ~= m * 2^(shift - 31), m in [2^30, 2^31).
Applying it to an int32 accumulator x is done differently by different LiteRT kernels, so the
rounding scheme is an explicit argument (`rounding=`):

- "double": gemmlowp's SaturatingRoundingDoublingHighMul followed by RoundingDivideByPOT (both round
  half away from zero). This is what LiteRT 2.3's x86 wheel uses in every reference kernel and in the
  optimized kernels that do their own requantization (add, mul):
  the wheel is built without TFLITE_SINGLE_ROUNDING.
- "ruy": what ruy's AVX2/AVX-512 kernels do, i.e. the int8 CONV_2D and FULLY_CONNECTED of LiteRT's
  builtin (optimized) resolver on x86, and the 8-channel NEON blocks of its DEPTHWISE_CONV_2D:
  round-half-up of (x << left) * m / 2^31, then a round-half-up right shift. Also a double rounding,
  but with different tie handling than "double".
- "single": one round-half-up of x * m / 2^(31 - shift) (TFLITE_SINGLE_ROUNDING builds; ruy's portable
  C++ path and its ARM NEON kernels).

Which kernel uses which scheme on this wheel was established by tests/test_int8_kernels.py against LiteRT.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Rounding = Literal["double", "single", "ruy"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Two's complement wrap of int64 values to the int32 range (C int32 overflow on x86)."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_half_away(x) -> np.ndarray:
    """C's std::round / TfLiteRound: halves away from zero (numpy's rint rounds halves to even)."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real, single_rounding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: real (float64) -> (int32 multiplier, int shift).

    frexp gives real = q * 2^shift with |q| in [0.5, 1); q is rounded to Q31. A q that rounds up to
    exactly 2^31 is halved with shift+1. Shifts below -31 flush to (0, 0) (everything would be
    shifted out). With single_rounding (TFLITE_SINGLE_ROUNDING builds) shifts above 30 saturate.
    Scalars in give 0-d arrays out; use int() on them.
    """
    real = np.asarray(real, dtype=np.float64)
    q, shift = np.frexp(real)
    shift = shift.astype(np.int64)
    q_fixed = round_half_away(q * float(1 << 31)).astype(np.int64)
    if np.any(np.abs(q_fixed) > (1 << 31)):
        raise ValueError("quantize_multiplier: mantissa out of range")
    corner = q_fixed == (1 << 31)
    q_fixed = np.where(corner, q_fixed // 2, q_fixed)
    shift = np.where(corner, shift + 1, shift)
    tiny = shift < -31
    q_fixed = np.where(tiny, 0, q_fixed)
    shift = np.where(tiny | (real == 0), 0, shift)
    if single_rounding:
        big = shift > 30
        q_fixed = np.where(big, (1 << 31) - 1, q_fixed)
        shift = np.where(big, 30, shift)
    return q_fixed.astype(np.int32), shift.astype(np.int32)


def quantize_multiplier_smaller_than_one(real) -> tuple[np.ndarray, np.ndarray]:
    """QuantizeMultiplierSmallerThanOneExp: same as quantize_multiplier, asserting shift <= 0."""
    m, s = quantize_multiplier(real)
    if np.any(s > 0):
        raise ValueError("multiplier is not smaller than one")
    return m, s


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a*b / 2^31), ties away from zero, saturating
    only for a == b == INT32_MIN."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    # C integer division truncates toward zero
    res = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, res)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    x, e = _i64(x), _i64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def _rounding_right_shift_half_up(x, right) -> np.ndarray:
    """ruy / AVX2 rounding right shift on int32 lanes: (x + 2^(r-1)) >> r, saturating like the SIMD code."""
    x, r = _i64(x), _i64(right)
    nudge = np.where(r > 0, np.int64(1) << np.maximum(r - 1, 0), 0)
    shifted = (x + nudge) >> r
    overflow = x > INT32_MAX - nudge
    return np.where(overflow, np.int64(1) << (31 - r), shifted)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding: Rounding = "double") -> np.ndarray:
    """x * multiplier * 2^(shift-31) with TFLite's integer rounding; x int32 values, result int64 array.

    multiplier/shift broadcast against x (per-channel: shape them along the channel axis).
    """
    x, m, s = _i64(x), _i64(multiplier), _i64(shift)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    if rounding == "double":
        # C code multiplies by (1 << left) in int32: wraps on overflow
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(wrap_int32(x << left), m), right)
    if rounding == "single":
        total = 31 - s
        return (x * m + (np.int64(1) << (total - 1))) >> total
    if rounding == "ruy":
        hi = wrap_int32((wrap_int32(x << left) * m + (1 << 30)) >> 31)
        return _rounding_right_shift_half_up(hi, right)
    raise ValueError(f"unknown rounding {rounding!r}")


def requantize(acc, multiplier, shift, zero_point: int, qmin: int = -128, qmax: int = 127,
               rounding: Rounding = "double") -> np.ndarray:
    """Scale an int32 accumulator, add the output zero point, clamp to [qmin, qmax]; returns int64."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift, rounding) + zero_point
    return np.clip(out, qmin, qmax)


def conv_multipliers(input_scale: float, filter_scales, output_scale: float,
                     float_product: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (multiplier, shift) for conv-like ops.

    TFLite's PopulateConvolutionQuantizationParams (conv, depthwise, per-channel FC) forms
    double(input_scale) * double(filter_scale) / double(output_scale); the per-tensor FC path
    (GetQuantizedConvolutionMultipler) multiplies the two float32 scales in float32 first:
    float_product=True reproduces that.
    """
    fs = np.atleast_1d(np.asarray(filter_scales, dtype=np.float32))
    if float_product:
        prod = (np.float32(input_scale) * fs).astype(np.float64)
    else:
        prod = np.float64(np.float32(input_scale)) * fs.astype(np.float64)
    return quantize_multiplier(prod / np.float64(np.float32(output_scale)))


def activation_range(activation: str | None, scale: float, zero_point: int,
                     qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: fused relu/relu6/relu_n1_to_1 clamp, quantized."""
    def q(v: float) -> int:
        return zero_point + int(round_half_away(np.float32(v) / np.float32(scale)))

    if activation in (None, "NONE"):
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise ValueError(f"unsupported fused activation {activation!r}")
