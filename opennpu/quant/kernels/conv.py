"""int8 CONV_2D (NHWC input, OHWI filter) and DEPTHWISE_CONV_2D (1HW(C*M) filter), TFLite semantics.

Accumulation: sum over the window of (x - input_zp) * w (+ int32 bias), exact int32; padded positions
contribute nothing (equivalent to padding with the input zero point). Requantization per output channel
with TFLite's multiplier, then + output_zp and the fused-activation clamp.
Products are summed in float64 through BLAS: |(x - zp) * w| <= 255 * 128 < 2^15, so any K < 2^38 is exact.
"""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import activation_range, conv_multipliers, requantize
from opennpu.quant.kernels._common import (
    KernelFlavor,
    Padding,
    gemm_rounding,
    pad_nhwc,
    pair,
    resolve_padding,
    windows,
)


def _prep(x, input_zp, kh, kw, stride, dilation, padding):
    x = np.asarray(x)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    oh, ow, pt, pb, pl, pr = resolve_padding(x.shape[1:3], (kh, kw), (sh, sw), (dh, dw), padding)
    xs = pad_nhwc(x.astype(np.float64) - float(input_zp), pt, pb, pl, pr, 0.0)
    return windows(xs, kh, kw, sh, sw, dh, dw, oh, ow)


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, input_scale: float, input_zp: int,
           filter_scales, output_scale: float, output_zp: int, stride=1, dilation=1,
           padding: Padding = "VALID", activation: str | None = None,
           kernel: KernelFlavor = "optimized") -> np.ndarray:
    """x (N,H,W,C) int8, w (O,KH,KW,C) int8 (symmetric), bias (O,) int32 or None -> (N,OH,OW,O) int8.

    kernel="optimized" reproduces LiteRT's builtin conv (im2col + ruy GEMM, ruy requantization);
    "reference" its BUILTIN_REF kernel (gemmlowp double rounding).
    """
    w = np.asarray(w)
    o, kh, kw, c = w.shape
    if x.shape[3] != c:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels, filter expects {c}")
    win = _prep(x, input_zp, kh, kw, stride, dilation, padding)
    n, oh, ow = win.shape[:3]
    cols = win.reshape(n * oh * ow, kh * kw * c)
    acc = cols @ w.reshape(o, -1).astype(np.float64).T
    acc = acc.astype(np.int64).reshape(n, oh, ow, o)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    m, s = conv_multipliers(input_scale, np.broadcast_to(np.atleast_1d(filter_scales), (o,)), output_scale)
    lo, hi = activation_range(activation, output_scale, output_zp)
    return requantize(acc, m, s, output_zp, lo, hi, gemm_rounding(kernel)).astype(np.int8)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, input_scale: float,
                     input_zp: int, filter_scales, output_scale: float, output_zp: int, stride=1,
                     dilation=1, padding: Padding = "VALID", activation: str | None = None,
                     depth_multiplier: int | None = None,
                     kernel: KernelFlavor = "optimized") -> np.ndarray:
    """x (N,H,W,C) int8, w (1,KH,KW,C*M) int8, bias (C*M,) -> (N,OH,OW,C*M) int8; output channel
    c*M + m reads input channel c. LiteRT's optimized depthwise kernel requantizes output channels in
    blocks of 8 with NEON code (compiled through NEON_2_SSE on x86: vqrdmulh + vrshl, i.e. the "ruy"
    rounding) and the remaining C*M % 8 channels with the scalar gemmlowp code ("double");
    BUILTIN_REF uses "double" throughout."""
    w = np.asarray(w)
    _, kh, kw, oc = w.shape
    c = x.shape[3]
    mult = oc // c if depth_multiplier is None else int(depth_multiplier)
    if c * mult != oc:
        raise ValueError(f"depthwise_conv2d: {oc} output channels is not {c} x depth multiplier")
    win = _prep(x, input_zp, kh, kw, stride, dilation, padding)  # (N,OH,OW,KH,KW,C)
    wf = w.reshape(kh, kw, c, mult).astype(np.float64)
    acc = np.einsum("nyxhwc,hwcm->nyxcm", win, wf, optimize=True)
    n, oh, ow = win.shape[:3]
    acc = acc.reshape(n, oh, ow, oc).astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    m, s = conv_multipliers(input_scale, np.broadcast_to(np.atleast_1d(filter_scales), (oc,)), output_scale)
    lo, hi = activation_range(activation, output_scale, output_zp)
    out = requantize(acc, m, s, output_zp, lo, hi, "double")
    if kernel == "optimized" and oc >= 8:
        neon = np.arange(oc) < (oc // 8) * 8
        out = np.where(neon, requantize(acc, m, s, output_zp, lo, hi, "ruy"), out)
    return out.astype(np.int8)
