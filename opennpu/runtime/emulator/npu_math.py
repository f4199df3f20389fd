"""The RK3588 NPU's integer conv pipeline as pure numpy functions (no registers, no memory, no IR).

Both sides use this module: the emulator (opennpu.runtime.emulator.conv) after decoding registers, and the
compiler's integer reference (opennpu.targets.rk3588.arith). The compiler may import the runtime, never the
reverse. Every function works on int64 arrays of shape (C, H, W) (channel first), one output channel per
row of the first axis; per-channel operands broadcast along that axis.

Pipeline of one conv task (docs/rk3588-arithmetic.md has the sources and the open questions):

1. CNA: the input is read as signed int8 (CNA_CVT_CON0.DATA_SIGN=1, CVT bypassed), padded with PAD_VALUE.
2. CORE (MAC): ``sum(x * (w + ow))`` exactly, saturated to the 34-bit INT8 accumulator (NVDLA CACC text quoted
   in Mesa rkt_coefs.c), then CLIP_TRUNCATE: a rounding right shift by ``t`` bits and saturation to int32 (the
   CACC -> SDP path is 32 bits).
3. DPU BS stage: ALU add (bias, per channel from the BS stream or one register operand), saturate int32;
   MUL (per-channel int16 operand, common shift), saturate int32; ReLU / ReLUx (clamp to [0, X]).
4. DPU BN stage: bypassed (not modelled).
5. DPU EW stage: operand ``e`` (int8 map) converted ``(e + offset) * scale >> shift``, added, saturate int32;
   ReLU / ReLUx.
6. OUT_CVT: ``(x * scale) >> shift`` (rounded) ``+ offset``, saturated to int8.

Rounding is not settled by any source (docs/rk3588-hardware.md, open question 1), so every rounding shift
takes an explicit mode, grouped per stage in :class:`RoundingModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from opennpu.quant.kernels._common import exact_int_matmul

RoundMode = Literal["half_up", "half_away", "half_even", "floor", "trunc"]
ROUND_MODES: tuple[str, ...] = ("half_up", "half_away", "half_even", "floor", "trunc")

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ACC_BITS_INT8 = 34  # NVDLA CACC: "34bits for INT8"


@dataclass(frozen=True)
class RoundingModel:
    """Rounding of each right shift in the pipeline.

    Defaults: CLIP_TRUNCATE rounds half to even (widgetii's QEMU model, NPU_HW_QUIRKS.md [3P]); BS MUL, EW
    convert and OUT_CVT add half an LSB then shift arithmetically ("half_up", widgetii's "64-bit rounded shift"
    for OUT_CVT [3P], and the usual NVDLA-style ``(x + (1 << (s-1))) >> s``). None of these is confirmed on
    hardware; they are parameters so a hardware dump can pick them later.
    """

    truncate: RoundMode = "half_even"
    bs_mul: RoundMode = "half_up"
    ew_cvt: RoundMode = "half_up"
    out_cvt: RoundMode = "half_up"

    def __post_init__(self) -> None:
        for name in ("truncate", "bs_mul", "ew_cvt", "out_cvt"):
            if getattr(self, name) not in ROUND_MODES:
                raise ValueError(f"RoundingModel.{name}: unknown rounding {getattr(self, name)!r}")


DEFAULT_ROUNDING = RoundingModel()


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def round_shift(x, shift: int, mode: RoundMode) -> np.ndarray:
    """``x / 2**shift`` rounded to an integer with ``mode`` (shift >= 0; shift 0 returns x)."""
    x = _i64(x)
    shift = int(shift)
    if shift < 0:
        raise ValueError(f"negative shift {shift}")
    if shift == 0:
        return x.copy()
    if shift > 62:  # everything rounds to 0 or -1 (floor) / 0 (others); avoid int64 overflow in 1 << shift
        return np.where(x < 0, -1, 0).astype(np.int64) if mode == "floor" else np.zeros_like(x)
    half = np.int64(1) << (shift - 1)
    if mode == "half_up":
        return (x + half) >> shift
    if mode == "floor":
        return x >> shift
    mag = np.abs(x)
    if mode == "half_away":
        return np.sign(x) * ((mag + half) >> shift)
    if mode == "trunc":
        return np.sign(x) * (mag >> shift)
    if mode == "half_even":
        fl = x >> shift
        rem = x - (fl << shift)
        up = (rem > half) | ((rem == half) & ((fl & 1) == 1))
        return fl + up
    raise ValueError(f"unknown rounding {mode!r}")


def saturate(x, bits: int) -> np.ndarray:
    """Clamp to the signed ``bits``-bit range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(_i64(x), lo, hi)


# ---------------------------------------------------------------------------------------------- CNA + CORE
def pad_input(x, pad_top: int, pad_left: int, out_h: int, out_w: int, kh: int, kw: int, sy: int, sx: int,
              pad_value: int) -> np.ndarray:
    """(C, H, W) -> (C, Hn, Wn): the window area ``(out-1)*stride + k`` with ``pad_value`` outside the map.

    Bottom/right padding is implied by the output size (no register holds it); rows/columns of the input
    that no window reaches are dropped.
    """
    x = _i64(x)
    c, h, w = x.shape
    hn, wn = (out_h - 1) * sy + kh, (out_w - 1) * sx + kw
    out = np.full((c, hn, wn), pad_value, dtype=np.int64)
    y0, y1 = max(pad_top, 0), min(pad_top + h, hn)
    x0, x1 = max(pad_left, 0), min(pad_left + w, wn)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = x[:, y0 - pad_top:y1 - pad_top, x0 - pad_left:x1 - pad_left]
    return out


def conv_mac(xp, w, sy: int, sx: int, out_h: int, out_w: int, depthwise: bool) -> np.ndarray:
    """MAC array: exact ``sum(x * w)`` over each window of the padded input ``xp`` (C, Hn, Wn).

    ``w`` is (K, C, KH, KW) (depthwise: (C, 1, KH, KW)), already including any weight offset. Dense convs are
    one exact integer GEMM (quant.kernels._common.exact_int_matmul: float32 BLAS in K-chunks whose partial sums
    stay below 2^24); depthwise convs add their KH*KW taps as whole-map products in int64. The sum is then
    saturated to the 34-bit accumulator. Returns int64 (K, out_h, out_w).
    """
    xp = np.asarray(xp)
    w = np.asarray(w)
    k, c, kh, kw = w.shape
    if depthwise:
        xp = xp.astype(np.int64, copy=False)
        acc = np.zeros((k, out_h, out_w), np.int64)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:k, i:i + (out_h - 1) * sy + 1:sy, j:j + (out_w - 1) * sx + 1:sx]
                acc += w[:, 0, i, j].astype(np.int64)[:, None, None] * tap
    else:
        if kh == kw == sy == sx == 1:
            cols = xp[:, :out_h, :out_w].reshape(c, out_h * out_w)
        else:  # im2col rows ordered (c, i, j) like w.reshape(k, -1)
            s = xp.strides
            win = np.lib.stride_tricks.as_strided(
                xp, shape=(c, kh, kw, out_h, out_w), strides=(s[0], s[1], s[2], s[1] * sy, s[2] * sx),
                writeable=False)
            cols = win.reshape(c * kh * kw, out_h * out_w)
        acc = exact_int_matmul(w.reshape(k, -1), cols).reshape(k, out_h, out_w)
    return saturate(acc, ACC_BITS_INT8)


def clip_truncate(acc, bits: int, mode: RoundMode) -> np.ndarray:
    """CORE_CLIP_TRUNCATE: 34-bit accumulator -> 32-bit value sent to the DPU (round, then saturate)."""
    return saturate(round_shift(acc, bits, mode), 32)


# ---------------------------------------------------------------------------------------------- DPU
def _per_channel(v, n: int) -> np.ndarray:
    a = _i64(v)
    if a.ndim == 0:
        return np.broadcast_to(a, (n,)).reshape(n, 1, 1)
    if a.shape != (n,):
        raise ValueError(f"per-channel operand of shape {a.shape} for {n} channels")
    return a.reshape(n, 1, 1)


def relu_stage(x, relu: bool, relux: int | None) -> np.ndarray:
    """ReLU (``max(x, 0)``) or ReLUx (``clip(x, 0, X)``); ReLUx implies ReLU."""
    x = _i64(x)
    if relux is not None:
        return np.clip(x, 0, relux)
    if relu:
        return np.maximum(x, 0)
    return x


def bs_stage(x, alu=None, mul=None, mul_shift: int = 0, relu: bool = False, relux: int | None = None,
             rounding: RoundingModel = DEFAULT_ROUNDING) -> np.ndarray:
    """DPU BS stage in NVDLA order ALU -> MUL -> ReLU. ``alu``/``mul`` are scalars or per-channel arrays; None
    bypasses the unit. Each unit saturates to int32."""
    x = _i64(x)
    n = x.shape[0]
    if alu is not None:
        x = saturate(x + _per_channel(alu, n), 32)
    if mul is not None:
        x = saturate(round_shift(x * _per_channel(mul, n), mul_shift, rounding.bs_mul), 32)
    return relu_stage(x, relu, relux)


def ew_convert(e, offset: int, scale: int, shift: int, rounding: RoundingModel = DEFAULT_ROUNDING) -> np.ndarray:
    """EW operand convert: ``round((e + offset) * scale / 2**shift)``."""
    return round_shift((_i64(e) + int(offset)) * int(scale), shift, rounding.ew_cvt)


def ew_stage(x, e, offset: int, scale: int, shift: int, relu: bool = False, relux: int | None = None,
             rounding: RoundingModel = DEFAULT_ROUNDING) -> np.ndarray:
    """DPU EW stage with ALU add: ``sat32(x + convert(e))`` then ReLU/ReLUx."""
    v = saturate(_i64(x) + ew_convert(e, offset, scale, shift, rounding), 32)
    return relu_stage(v, relu, relux)


def out_cvt(x, scale: int, shift: int, offset: int, rounding: RoundingModel = DEFAULT_ROUNDING) -> np.ndarray:
    """DPU OUT_CVT: ``sat8(round(x * scale / 2**shift) + offset)``; the offset (output zero point) is added
    after the shift, as Mesa's OUT_CVT_OFFSET = out_zp - 0x80 requires. Returns int64 in [-128, 127]."""
    return saturate(round_shift(_i64(x) * int(scale), shift, rounding.out_cvt) + int(offset), 8)


# ---------------------------------------------------------------------------------------------- PPU
RECIP_ONE = 1 << 16  # PPU_RECIP_KERNEL_WIDTH/HEIGHT: "actual value * 2^16" for int8/int16 (NVDLA PDP)


def _mul_recip_round(x, recip: int) -> np.ndarray:
    """``x * recip / 2**16`` rounded half away from zero (NVDLA cmod: ``(tmp > 0) ? tmp + 0.5 : tmp - 0.5``,
    then truncation toward zero)."""
    return round_shift(_i64(x) * int(recip), 16, "half_away")


def ppu_average(window_sum, recip_w: int, recip_h: int) -> np.ndarray:
    """PPU (NVDLA PDP) int8 average of a window sum: two fixed-point reciprocal multiplies, each rounded half
    away from zero (nvdla/hw cmod/pdp/NV_NVDLA_pdp.cpp PoolingStage1Calc, POOLING_METHOD_AVE), then
    saturation to int8 [I] (unreachable with reciprocals within 2**-16 of 1/k). Returns int64."""
    return saturate(_mul_recip_round(_mul_recip_round(window_sum, recip_w), recip_h), 8)


# ---------------------------------------------------------------------------------------------- DPU EW MUL, LUT
def ew_mul_stage(x, e, offset: int, scale: int, shift: int, truncate: int, relu: bool = False,
                 relux: int | None = None, rounding: RoundingModel = DEFAULT_ROUNDING) -> np.ndarray:
    """DPU EW stage with the MUL op (EW_OP_TYPE=1, our reading [I]): ``sat32(round((x * convert(e)) / 2**T))``
    with ``T`` = EW_TRUNCATE (NVDLA SDP's EW MUL truncate; rounded like the BS MUL), then ReLU/ReLUx."""
    prod = _i64(x) * ew_convert(e, offset, scale, shift, rounding)
    v = saturate(round_shift(prod, truncate, rounding.bs_mul), 32)
    return relu_stage(v, relu, relux)


# RK3588 LUT tables: LE (id 0) and LO (id 1) of 513 x 16 bits each -- allbilly/rk3588 examples/silu.py @8a1c572a
# (LUT_SIZE = 513 per table, run on the board, "mirrors experimental/rknnops.h") [3P]; NVDLA's are 65 / 257.
LUT_LO_ENTRIES = 513
LUT_LE_ENTRIES = 513


def lut_lo_stage(x, lo_table, lo_start: int) -> np.ndarray:
    """DPU LUT, LO table in linear mode with LUT_LO_INDEX_SELECT=0 and zero under/overflow slopes (the only
    configuration opennpu programs, docs/rk3588-arithmetic.md "LUT activations"): ``index = x - LO_START``;
    ``index <= 0`` is an underflow and gives ``LO[0]``; ``index >= 512`` an overflow giving ``LO[512]``
    (``LO[0/512] + (x - START/END) * 0``); otherwise ``LO[index]`` (interpolation fraction 0). NVDLA's index
    and interpolation math: nvdla/doc lut-programming.rst [R]. Entries are signed 16-bit values."""
    t = np.asarray(lo_table, dtype=np.int64)
    if t.shape != (LUT_LO_ENTRIES,):
        raise ValueError(f"LO table must have {LUT_LO_ENTRIES} entries, got {t.shape}")
    idx = np.clip(_i64(x) - int(lo_start), 0, LUT_LO_ENTRIES - 1)
    return t[idx]
