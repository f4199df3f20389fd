"""int8 AVERAGE_POOL_2D and MAX_POOL_2D (NHWC), TFLite semantics: windows clipped to the input (padded
positions are neither summed nor counted), output quantization equal to the input's."""

from __future__ import annotations

import numpy as np

from opennpu.quant.fixedpoint import activation_range
from opennpu.quant.kernels._common import Padding, pad_nhwc, pair, resolve_padding, windows


def _windows(x, pool, stride, padding, fill):
    kh, kw = pair(pool)
    sh, sw = pair(stride)
    oh, ow, pt, pb, pl, pr = resolve_padding(x.shape[1:3], (kh, kw), (sh, sw), (1, 1), padding)
    xp = pad_nhwc(x, pt, pb, pl, pr, fill)
    return windows(xp, kh, kw, sh, sw, 1, 1, oh, ow), (kh, kw, sh, sw, oh, ow, pt, pb, pl, pr)


def average_pool2d(x: np.ndarray, *, pool, stride, padding: Padding = "VALID", activation: str | None = None,
                   output_scale: float = 1.0, output_zp: int = 0) -> np.ndarray:
    """Integer mean over each window, rounded half away from zero ((acc +- count/2) / count, C division)."""
    x = np.asarray(x)
    win, (kh, kw, sh, sw, oh, ow, pt, pb, pl, pr) = _windows(x.astype(np.int64), pool, stride, padding, 0)
    acc = win.sum(axis=(3, 4))
    ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int64)
    onesp = pad_nhwc(ones, pt, pb, pl, pr, 0)
    count = windows(onesp, kh, kw, sh, sw, 1, 1, oh, ow).sum(axis=(3, 4))
    if np.any(count == 0):
        raise ValueError("average_pool2d: a window lies entirely in padding")
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.sign(num) * (np.abs(num) // count)  # C division truncates toward zero
    lo, hi = activation_range(activation, output_scale, output_zp)
    return np.clip(q, lo, hi).astype(np.int8)


def max_pool2d(x: np.ndarray, *, pool, stride, padding: Padding = "VALID", activation: str | None = None,
               output_scale: float = 1.0, output_zp: int = 0) -> np.ndarray:
    x = np.asarray(x)
    win, _ = _windows(x.astype(np.int64), pool, stride, padding, np.iinfo(np.int64).min)
    q = win.max(axis=(3, 4))
    lo, hi = activation_range(activation, output_scale, output_zp)
    return np.clip(q, lo, hi).astype(np.int8)
