"""CONCATENATION of 8-bit tensors. Inputs whose (scale, zero point) differ from the output's are
requantized the way TFLite's ConcatenationWithScaling does it (float32 affine map, round half away).
LiteRT only takes that path for uint8; its int8 kernel requires equal quantization and copies."""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import round_half_away
from opennpu.quant.kernels._common import DTYPE_RANGE


def requantize_8bit(x: np.ndarray, in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                    dtype: str = "int8") -> np.ndarray:
    """TFLite float requantization: round(x * s + b) + out_zp with s = in_scale * (1 / out_scale) and
    b = -in_zp * s, all in float32."""
    lo, hi = DTYPE_RANGE[dtype]
    if np.float32(in_scale) == np.float32(out_scale) and in_zp == out_zp:
        return np.asarray(x).astype(dtype)
    inv = np.float32(1) / np.float32(out_scale)
    s = np.float32(np.float32(in_scale) * inv)
    b = np.float32(np.float32(-in_zp) * s)
    v = np.asarray(x).astype(np.float32) * s + b
    q = round_half_away(v).astype(np.int64) + out_zp
    return np.clip(q, lo, hi).astype(dtype)


def concatenation(xs: list[np.ndarray], axis: int, *, scales: list[float], zero_points: list[int],
                  output_scale: float, output_zp: int, dtype: str = "int8") -> np.ndarray:
    parts = [requantize_8bit(x, s, z, output_scale, output_zp, dtype)
             for x, s, z in zip(xs, scales, zero_points, strict=True)]
    return np.concatenate(parts, axis=axis)
