"""int8 FULLY_CONNECTED, TFLite semantics: y = x (B, K) . W(O, K)^T + bias, requantized per tensor or
per output channel. Float64 GEMM of int8 operands is exact (see conv.py)."""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import activation_range, conv_multipliers, requantize, round_half_away
from opennpu.quant.kernels._common import KernelFlavor, gemm_rounding


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, input_scale: float,
                    input_zp: int, filter_scales, output_scale: float, output_zp: int, filter_zp: int = 0,
                    activation: str | None = None, keep_num_dims: bool = False,
                    kernel: KernelFlavor = "optimized") -> np.ndarray:
    """x (..., K) int8, w (O, K) int8, bias (O,) int32 or None -> (B, O) int8; (..., O) with keep_num_dims.

    kernel="optimized": LiteRT's builtin FC (ruy GEMM and ruy requantization).
    kernel="reference": BUILTIN_REF, which since 2025 requantizes in floating point:
    round(double(acc) * in_scale * w_scale / out_scale), halves away from zero.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    o, k = w.shape
    lead = x.shape[:-1]
    xb = x.reshape(-1, k).astype(np.float64) - float(input_zp)
    acc = (xb @ (w.astype(np.float64) - float(filter_zp)).T).astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    fs = np.atleast_1d(np.asarray(filter_scales, dtype=np.float32))
    per_channel = fs.size > 1
    lo, hi = activation_range(activation, output_scale, output_zp)
    if kernel == "reference":
        eff = np.float64(np.float32(input_scale)) * fs.astype(np.float64)
        eff = eff / np.float64(np.float32(output_scale))
        out = np.clip(round_half_away(acc.astype(np.float64) * eff).astype(np.int64) + output_zp, lo, hi)
    else:
        m, s = conv_multipliers(input_scale, fs, output_scale, float_product=not per_channel)
        out = requantize(acc, m, s, output_zp, lo, hi, gemm_rounding(kernel))
    out = out.astype(np.int8)
    return out.reshape(*lead, o) if keep_num_dims else out
