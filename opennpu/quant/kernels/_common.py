"""Shared helpers of the int8 reference kernels: padding arithmetic, windows, output casting."""

from __future__ import annotations

from typing import Literal

import numpy as np

from opennpu.quant.fixedpoint import Rounding

# Which LiteRT kernel family a reference kernel reproduces: "optimized" = the builtin op resolver
# (BUILTIN / BUILTIN_WITHOUT_DEFAULT_DELEGATES), "reference" = BUILTIN_REF.
KernelFlavor = Literal["optimized", "reference"]
Padding = str | tuple[int, int, int, int]

DTYPE_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int32": (-(1 << 31), (1 << 31) - 1)}


F32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is a float32


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer-valued arrays (M, K) x (K, N), exact, as int64, through float BLAS.

    float32 GEMM is exact when every partial sum is an integer of magnitude <= 2^24 (FMA rounds nothing
    then), whatever order BLAS sums in: with ``p = max|a| * max|b|``, chunks of K <= 2^24 / p products
    qualify (int8 x int8: 1024; (x - zp) * w with a uint8-range x: 514). Chunk results are added in int64.
    float64 (exact below 2^53) takes over when single products are too large for float32.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    k = a.shape[-1]
    if a.size == 0 or b.size == 0:
        return np.zeros(a.shape[:-1] + b.shape[-1:], np.int64)
    p = int(np.abs(a).max()) * int(np.abs(b).max())
    if p == 0:
        return np.zeros(a.shape[:-1] + b.shape[-1:], np.int64)
    chunk = F32_EXACT // p
    if chunk >= min(k, 64):
        dt = np.float32
    else:
        if p * k >= 1 << 53:
            raise OverflowError(f"exact_int_matmul: |products| up to {p} over K={k} exceed float64's exact range")
        dt, chunk = np.float64, k
    a = a.astype(dt, copy=False)
    b = b.astype(dt, copy=False)
    if k <= chunk:
        return (a @ b).astype(np.int64)
    out = np.zeros(a.shape[:-1] + b.shape[-1:], np.int64)
    for k0 in range(0, k, chunk):
        out += (a[..., k0:k0 + chunk] @ b[k0:k0 + chunk]).astype(np.int64)
    return out

def gemm_rounding(kernel: KernelFlavor) -> Rounding:
    """Requantization rounding of GEMM-based ops (conv, FC): ruy's x86 SIMD kernels vs gemmlowp."""
    if kernel == "optimized":
        return "ruy"
    if kernel == "reference":
        return "double"
    raise ValueError(f"unknown kernel flavor {kernel!r}")


def pair(v) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def out_size(size: int, k: int, stride: int, dilation: int, padding: Padding, before: int, after: int) -> int:
    eff = (k - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    if padding == "VALID":
        return (size - eff + stride) // stride
    return (size + before + after - eff) // stride + 1


def resolve_padding(in_hw: tuple[int, int], k_hw: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], padding: Padding) -> tuple[int, int, int, int, int, int]:
    """-> (out_h, out_w, pad_top, pad_bottom, pad_left, pad_right) with TFLite's SAME split
    (extra padding goes after) or explicit (top, bottom, left, right) pads."""
    res = []
    explicit = None if isinstance(padding, str) else tuple(int(p) for p in padding)
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        raise ValueError(f"unknown padding {padding!r}")
    for i in range(2):
        size, k, s, d = in_hw[i], k_hw[i], stride[i], dilation[i]
        eff = (k - 1) * d + 1
        if explicit is not None:
            before, after = explicit[2 * i], explicit[2 * i + 1]
            out = (size + before + after - eff) // s + 1
        elif padding == "SAME":
            out = (size + s - 1) // s
            total = max((out - 1) * s + eff - size, 0)
            before, after = total // 2, total - total // 2
        else:
            out = (size - eff + s) // s
            before, after = 0, 0
        if out <= 0:
            raise ValueError("kernel window larger than padded input")
        res.append((out, before, after))
    (oh, pt, pb), (ow, pl, pr) = res
    return oh, ow, pt, pb, pl, pr


def windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, oh: int,
            ow: int) -> np.ndarray:
    """(N, H, W, C) already padded -> strided view (N, oh, ow, kh, kw, C)."""
    n, _, _, c = x.shape
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c),
        strides=(s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
    return view


def pad_nhwc(x: np.ndarray, pt: int, pb: int, pl: int, pr: int, value) -> np.ndarray:
    # negative explicit pads crop
    if min(pt, pb, pl, pr) < 0:
        h, w = x.shape[1], x.shape[2]
        x = x[:, max(-pt, 0):h - max(-pb, 0), max(-pl, 0):w - max(-pr, 0), :]
        pt, pb, pl, pr = max(pt, 0), max(pb, 0), max(pl, 0), max(pr, 0)
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def clamp_cast(v: np.ndarray, lo: int, hi: int, dtype: str = "int8") -> np.ndarray:
    return np.clip(v, lo, hi).astype(dtype)
