"""The RK3588 NPU's integer arithmetic for one conv task: requantization parameters and the target's integer
reference.

The pure integer pipeline (MAC, CLIP_TRUNCATE, BS/EW stages, OUT_CVT, rounding modes) lives in
``opennpu.runtime.emulator.npu_math`` so the emulator and this compiler-side reference share one definition
(the target may import the runtime, never the reverse). This module adds what only the compiler knows: the
real-valued scales, how they become register operands, and the TFLite-facing clamp semantics.

Data domain: every int8 array here is in the *NPU domain*: the byte the NPU reads, interpreted as signed
int8 (CNA_CVT_CON0.DATA_SIGN=1). For an int8 TFLite tensor that is the int8 value itself; a uint8 tensor
is stored ``q - 0x80`` (Mesa's convention, layout.to_npu_int8) and its zero point becomes ``zp - 0x80``.

Decisions (docs/rk3588-arithmetic.md):

* OUT_CVT scale/shift: ``conv_scale = s_in * s_w / s_out`` (float64 of the float32 scales, as TFLite) becomes
  a 15-bit mantissa ``scale`` in [2**14, 2**15) and a right ``shift`` with ``conv_scale ~= scale / 2**shift``
  (:func:`out_cvt_params`, round to nearest). :func:`mesa_out_cvt` reproduces Mesa's derivation from the
  float32 bits (truncated mantissa + 1) for comparison; it is not the default.
* Per-channel weight scales: the BS MUL unit with a per-channel int16 operand from the BS stream
  ``mul_c = round(2**14 * s_w[c] / max(s_w))`` (iav/rk3568-npu [3P]); OUT_CVT uses max(s_w). The MUL shift is
  ``14 - frac`` where ``frac = clamp(ceil(log2(conv_scale)) + 3, 0, 14)`` extra fractional bits are kept (and
  taken back by OUT_CVT) so the MUL rounding stays below 1/16 output LSB when conv_scale > 1/8 (iav: 14).
* Bias: int32 per channel, corrected for the input zero point (the CNA pads with the input zero point and
  multiplies raw inputs) and divided by ``2**truncate_bits`` toward zero (layout.pack_bias, Mesa).
* Clamps (fused ReLU/ReLU6): ReLU / ReLUx in the last active DPU stage (BS, or EW when an add is fused),
  with the ReLUx threshold chosen on the NPU's own OUT_CVT so the result equals "OUT_CVT, then clamp to
  [lo, hi]" exactly; a plain int8 range needs no stage (saturation).
* Fused Add (EW stage): the second operand's real scale relative to the BS output unit becomes an EW convert
  (scale, shift) with 15-bit mantissa; offset = -its zero point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from opennpu.errors import CompileError
from opennpu.quant.fixedpoint import activation_range, round_half_away
from opennpu.runtime.emulator import npu_math as nm
from opennpu.runtime.emulator.npu_math import DEFAULT_ROUNDING, RoundingModel

from . import layout as L

OUT_CVT_MANTISSA_BITS = 15  # OUT_CVT_SCALE is 16 bits; iav: "15-bit float (exp + 14-bit mantissa)"; Mesa < 2**15
OUT_CVT_SHIFT_MAX = (1 << 12) - 1  # DPU_OUT_CVT_SHIFT.OUT_CVT_SHIFT[11:0]
BS_MUL_SHIFT = 14  # iav: mul = round(2^14 * s_wc / s_wmax), BS_MUL_CFG 0xe01 -> shift 14
EW_CVT_SHIFT_MAX = (1 << 6) - 1  # DPU_EW_CVT_SCALE_VALUE.EW_OP_CVT_SHIFT[21:16]
EW_CVT_SCALE_MAX = (1 << 15) - 1  # keep the 16-bit EW_OP_CVT_SCALE positive as a signed value [I]


# ---------------------------------------------------------------------------------------------- geometry
class _SlidingWindow:
    """Output size of a window slid over a padded map (floor formula), for the geometries below."""

    in_h: int
    in_w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]

    @property
    def out_h(self) -> int:
        return (self.in_h + self.pads[0] + self.pads[2] - self.kh) // self.stride[0] + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + self.pads[1] + self.pads[3] - self.kw) // self.stride[1] + 1


@dataclass(frozen=True)
class ConvGeometry(_SlidingWindow):
    """Shape of one conv: input C x H x W, output channels, kernel, strides (y, x), pads (top, left, bottom,
    right). Depthwise: out_c == in_c, one kernel per channel (depth multiplier 1)."""

    in_c: int
    in_h: int
    in_w: int
    out_c: int
    kh: int = 1
    kw: int = 1
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    depthwise: bool = False

    def __post_init__(self) -> None:
        if min(self.in_c, self.in_h, self.in_w, self.out_c, self.kh, self.kw, *self.stride) < 1:
            raise CompileError(f"conv geometry {self} has a non-positive dimension")
        if min(self.pads) < 0:
            raise CompileError(f"conv pads {self.pads} must be >= 0")
        if self.depthwise and self.out_c != self.in_c:
            raise CompileError(f"depthwise conv needs out_c == in_c, got {self.out_c} != {self.in_c}")
        if self.out_h < 1 or self.out_w < 1:
            raise CompileError(f"kernel {self.kh}x{self.kw} larger than the padded {self.in_h}x{self.in_w} input")

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_c, 1 if self.depthwise else self.in_c, self.kh, self.kw)

    def macs_per_output(self) -> int:
        return self.kh * self.kw * (1 if self.depthwise else self.in_c)


# ---------------------------------------------------------------------------------------------- requant
@dataclass(frozen=True)
class EwRequant:
    """EW stage operands of a fused Add: ``(e + offset) * scale >> shift`` added to the BS output."""

    scale: int
    shift: int
    offset: int  # -(zero point of the added tensor, NPU domain)
    real: float  # the real ratio s_e / s_bs the integers approximate
    op: str = "add"  # "add" (EW ALU add) or "mul" (EW MUL: x * convert(e), then >> truncate)
    truncate: int = 0  # EW MUL truncate (DPU_EW_CVT_SCALE_VALUE.EW_TRUNCATE)
    per_channel: bool = False  # operand is one value per channel (a (1, C, 1, 1) map), broadcast over H x W



def activation_quant(tensor, what: str = "activation") -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized activation (an IR Tensor); CompileError otherwise."""
    q = tensor.quant
    if q is None:
        raise CompileError(f"{what} {tensor.name!r} has no quantization")
    s, z = np.asarray(q.scale).reshape(-1), np.asarray(q.zero_point).reshape(-1)
    if s.size != 1 or z.size > 1:
        raise CompileError(f"{what} {tensor.name!r} is quantized per channel")
    return float(s[0]), int(z[0]) if z.size else 0

@dataclass(frozen=True)
class LutStage:
    """A LUT activation in the DPU (targets/rk3588/lut.py builds it): the BN MUL ``(v * bn_mul) >> bn_shift``
    requantizes the BS output to the activation's int8 input domain without its zero point, the LO table (513
    signed 16-bit entries) is indexed by ``v - lo_start`` and OUT_CVT passes the entry through (scale 1, shift 0,
    offset 0). ``lo_start = -128 - zp`` so index i is the int8 input code ``i - 128``."""

    bn_mul: int
    bn_shift: int
    lo_start: int
    lo_table: tuple[int, ...]


@dataclass(frozen=True)
class NpuRequant:
    """Every integer operand the DPU needs to requantize one conv task.

    OUT_CVT: ``out_scale``/``out_shift``/``out_offset``; CORE: ``truncate_bits``; BS: ``channel_mul`` (None =
    MUL bypassed) with ``mul_shift``, ``relu``/``relux`` (clamp stage, in BS or EW); EW: ``ew`` (None = no
    fused add). ``clamp`` is the int8 output range it implements (for reference and checks).
    """

    out_scale: int
    out_shift: int
    out_offset: int
    truncate_bits: int = 0
    channel_mul: tuple[int, ...] | None = None
    mul_shift: int = 0
    relu: bool = False
    relux: int | None = None
    input_zero_point: int = 0
    output_zero_point: int = 0
    clamp: tuple[int, int] = (nm.INT8_MIN, nm.INT8_MAX)
    ew: EwRequant | None = None
    lut: LutStage | None = None  # LUT activation: BN MUL + EW-stage LUT, OUT_CVT identity
    conv_scale: float = 0.0  # the real multiplier OUT_CVT approximates (BS output LSB -> output LSB)
    rounding: RoundingModel = field(default=DEFAULT_ROUNDING)

    @property
    def per_channel(self) -> bool:
        return self.channel_mul is not None


def out_cvt_params(real: float, truncate_bits: int = 0, mantissa_bits: int = OUT_CVT_MANTISSA_BITS
                   ) -> tuple[int, int]:
    """(scale, shift) with ``real * 2**truncate_bits ~= scale / 2**shift``, scale in [2**(m-1), 2**m).

    ``frexp(real) = f * 2**e`` with f in [0.5, 1): scale = round(f * 2**m) (half away from zero; a carry to
    2**m renormalizes), shift = m - e - truncate_bits (the accumulator reaching OUT_CVT was already divided by
    2**truncate_bits). Raises CompileError when the shift does not fit OUT_CVT_SHIFT (0..4095).
    """
    if not (real > 0 and np.isfinite(real)):
        raise CompileError(f"requantization scale {real} must be positive and finite")
    f, e = np.frexp(np.float64(real))
    scale = int(round_half_away(f * float(1 << mantissa_bits)))
    if scale == 1 << mantissa_bits:
        scale, e = scale >> 1, e + 1
    shift = mantissa_bits - int(e) - int(truncate_bits)
    if not 0 <= shift <= OUT_CVT_SHIFT_MAX:
        raise CompileError(f"requantization scale {real:g} needs OUT_CVT shift {shift}, outside 0..{OUT_CVT_SHIFT_MAX}")
    return scale, shift


def mesa_out_cvt(conv_scale: float, truncate_bits: int = 0) -> tuple[int, int]:
    """Mesa's OUT_CVT derivation (rkt_regcmd.c, "taken from QNNPACK requantization.h"), reproduced from the
    float32 bit pattern ``b`` of ``conv_scale``: ``shift = 142 - (b >> 23)`` (minus 1 when truncating; Mesa
    subtracts 1 whatever the truncate width), ``scale = ((b >> 9) & 0x7fff) + 1`` with bit 14 forced on, and the
    register gets ``shift - 1``. Returns (OUT_CVT_SCALE, OUT_CVT_SHIFT) as programmed.

    Properties: the 14 mantissa bits are truncated and then incremented (a bias of up to +1 unit of 2**-14);
    bit 14 of the field is the exponent's LSB, so when it is 0 and the mantissa bits are all ones the "+1"
    carry is lost (the scale halves). Kept for comparison only.
    """
    b = int(np.array(conv_scale, dtype=np.float32).view(np.uint32))
    if b >> 31 or not 0 < b < 0x7F800000:
        raise CompileError(f"Mesa's OUT_CVT derivation needs a positive finite float32 scale, got {conv_scale}")
    shift = 127 + 31 - 32 - (b >> 23) + 16
    if truncate_bits > 0:
        shift -= 1
    scale = ((b >> 9) & 0x7FFF) + 1
    if scale < 1 << 14:
        scale |= 1 << 14
    if not 1 <= shift <= OUT_CVT_SHIFT_MAX + 1 or scale > 0xFFFF:
        raise CompileError(f"Mesa's OUT_CVT derivation gives shift {shift - 1}, scale {scale} for {conv_scale:g}")
    return scale, shift - 1


def ew_cvt_params(real: float) -> tuple[int, int]:
    """EW convert (scale, shift) ~ real with a 15-bit mantissa; shift in 0..63 (a smaller scale when ``real`` is
    tiny). Raises CompileError when ``real`` needs a left shift (>= 2**15)."""
    if not (real > 0 and np.isfinite(real)):
        raise CompileError(f"EW operand scale ratio {real} must be positive and finite")
    scale, shift = out_cvt_params(real, 0, OUT_CVT_MANTISSA_BITS) if real < 2.0 ** 40 else (0, -1)
    if shift < 0 or scale > EW_CVT_SCALE_MAX:
        raise CompileError(f"EW operand scale ratio {real:g} too large for EW_OP_CVT_SCALE/SHIFT")
    if shift > EW_CVT_SHIFT_MAX:
        scale = int(round_half_away(real * 2.0 ** EW_CVT_SHIFT_MAX))
        shift = EW_CVT_SHIFT_MAX
    return scale, shift


def _scales(s_w) -> np.ndarray:
    a = np.atleast_1d(np.asarray(s_w, dtype=np.float32)).astype(np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(a > 0) or not np.all(np.isfinite(a)):
        raise CompileError(f"weight scales must be a positive finite scalar or 1-D array, got {s_w!r}")
    return a


def truncate_bits_for(acc_bound: int) -> int:
    """Smallest CLIP_TRUNCATE so an accumulator of magnitude ``acc_bound`` fits int32 after the shift."""
    t = 0
    while (int(acc_bound) >> t) > nm.INT32_MAX:
        t += 1
    if t > 31:
        raise CompileError(f"accumulator bound {acc_bound} needs more than 31 truncate bits")
    return t


def relux_threshold(scale: int, shift: int, offset: int, hi: int, rounding: RoundingModel) -> int:
    """Largest v >= 0 with ``out_cvt(v) <= hi`` (binary search on the monotone OUT_CVT): clamping the
    pre-OUT_CVT value to [0, v] equals clamping the int8 result to hi."""
    def f(v: int) -> int:
        return int(nm.out_cvt(np.array([v]), scale, shift, offset, rounding)[0])

    if f(0) > hi:
        raise CompileError(f"clamp upper bound {hi} is below the output zero point {f(0)}")
    lo_v, hi_v = 0, nm.INT32_MAX
    if f(hi_v) <= hi:
        return hi_v
    while hi_v - lo_v > 1:  # invariant: f(lo_v) <= hi < f(hi_v)
        mid = (lo_v + hi_v) // 2
        if f(mid) <= hi:
            lo_v = mid
        else:
            hi_v = mid
    return lo_v


def compute_requant_params(s_in: float, s_w, s_out: float, *, input_zp: int = 0, output_zp: int = 0,
                           activation: str | None = None, clip: tuple[int, int] | None = None,
                           truncate_bits: int = 0, ew_scale: float | None = None, ew_zp: int = 0,
                           method: str = "round", rounding: RoundingModel = DEFAULT_ROUNDING) -> NpuRequant:
    """Register operands of the DPU for ``y = requant(conv(x, w) + bias)`` (optionally ``+ ew``) in NPU domain.

    ``s_w`` is a scalar or per-output-channel array (symmetric weights); zero points are in the NPU domain.
    ``activation`` is TFLite's fused activation (None/"NONE"/"RELU"/"RELU6"), or give an int8 ``clip``.
    ``method``: "round" (:func:`out_cvt_params`) or "mesa" (:func:`mesa_out_cvt`). ``ew_scale``/``ew_zp``:
    quantization of a second int8 map added in the EW stage (fused Add; the output scale is then the Add's).
    """
    sw = _scales(s_w)
    s_in32, s_out32 = float(np.float32(s_in)), float(np.float32(s_out))
    if not (s_in32 > 0 and s_out32 > 0):
        raise CompileError(f"scales must be positive, got s_in={s_in}, s_out={s_out}")
    for name, zp in (("input", input_zp), ("output", output_zp), ("ew", ew_zp)):
        if not nm.INT8_MIN <= int(zp) <= nm.INT8_MAX:
            raise CompileError(f"{name} zero point {zp} is outside the int8 NPU domain")
    per_channel = sw.size > 1 and not np.all(sw == sw[0])
    s_ref = float(sw.max())
    channel_mul = None
    mul_shift = 0
    if per_channel:
        muls = round_half_away(sw / s_ref * float(1 << BS_MUL_SHIFT)).astype(np.int64)
        if muls.min() < 1:
            raise CompileError(f"per-channel weight scale ratio {sw.min() / s_ref:g} underflows the 14-bit BS MUL")
        channel_mul = tuple(int(m) for m in muls)
    conv_scale = s_in32 * s_ref / s_out32
    if per_channel:
        # Keep `frac` fractional bits at the MUL output so its rounding (half a BS-output LSB) stays below 1/16
        # of an output LSB even when one accumulator unit is worth more than an output LSB (conv_scale > 1/8).
        frac = min(BS_MUL_SHIFT, max(0, int(np.ceil(np.log2(conv_scale))) + 3))
        mul_shift = BS_MUL_SHIFT - frac
        conv_scale = conv_scale / float(1 << frac)
    if method == "round":
        scale, shift = out_cvt_params(conv_scale, truncate_bits)
    elif method == "mesa":
        scale, shift = mesa_out_cvt(conv_scale, truncate_bits)
    else:
        raise CompileError(f"unknown OUT_CVT method {method!r}")
    offset = int(output_zp)
    lo, hi = clip if clip is not None else activation_range(activation, s_out32, int(output_zp))
    lo, hi = max(int(lo), nm.INT8_MIN), min(int(hi), nm.INT8_MAX)
    if lo > hi:
        raise CompileError(f"empty clamp range [{lo}, {hi}]")
    relu, relux = False, None
    zero_out = int(nm.out_cvt(np.array([0]), scale, shift, offset, rounding)[0])
    if lo > nm.INT8_MIN:
        if lo != zero_out:
            raise CompileError(f"clamp lower bound {lo} differs from the output zero point {zero_out}: the DPU "
                               "ReLU clamps at real 0 only")
        relu = True
    if hi < nm.INT8_MAX:
        if not relu and zero_out > nm.INT8_MIN:
            raise CompileError(f"clamp [{lo}, {hi}] needs an upper bound without ReLU, which ReLUx cannot express")
        relux = relux_threshold(scale, shift, offset, hi, rounding)
        relu = True
    ew = None
    if ew_scale is not None:
        bs_unit = conv_scale * s_out32 * float(2 ** truncate_bits)  # real value of one LSB at the BS output
        real = float(np.float32(ew_scale)) / bs_unit
        esc, esh = ew_cvt_params(real)
        ew = EwRequant(esc, esh, -int(ew_zp), real)
    return NpuRequant(out_scale=scale, out_shift=shift, out_offset=offset, truncate_bits=int(truncate_bits),
                      channel_mul=channel_mul, mul_shift=mul_shift, relu=relu, relux=relux,
                      input_zero_point=int(input_zp), output_zero_point=int(output_zp), clamp=(lo, hi), ew=ew,
                      conv_scale=conv_scale, rounding=rounding)


# ---------------------------------------------------------------------------------------------- reference
def _chw(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise CompileError(f"{name}: batch must be 1, got shape {x.shape}")
        x = x[0]
    if x.ndim != 3 or x.dtype != np.int8:
        raise CompileError(f"{name}: expected a (1,)C,H,W int8 map in the NPU domain, got {x.dtype} {x.shape}")
    return x


def hw_bias(bias_q, w_q: np.ndarray, requant: NpuRequant, depthwise: bool) -> np.ndarray:
    """The int32 bias the BS stage adds: ``(bias - izp * sum(w)) / 2**t`` toward zero (layout.pack_bias)."""
    cout = w_q.shape[0]
    bias = np.zeros(cout, np.int64) if bias_q is None else np.asarray(bias_q, dtype=np.int64)
    if bias.shape != (cout,):
        raise CompileError(f"bias of shape {bias.shape} for {cout} output channels")
    corr = L.bias_correction(w_q, 0, requant.input_zero_point, depthwise)
    return L.pack_bias(bias, corr, requant.truncate_bits)


def conv_reference(x_q: np.ndarray, w_q: np.ndarray, bias_q: np.ndarray | None, requant: NpuRequant,
                   geometry: ConvGeometry, ew_q: np.ndarray | None = None) -> np.ndarray:
    """The target's integer reference for one conv task: NCHW int8 in (NPU domain) -> (1, Cout, OH, OW) int8.

    Follows the hardware order exactly: inputs padded with the input zero point, raw MAC, CLIP_TRUNCATE,
    BS (corrected bias, per-channel MUL, ReLU unless an EW op follows), BN MUL (LUT activations only), EW (fused
    add or multiply + ReLU), the LUT (LO table), OUT_CVT.
    """
    g = geometry
    x = _chw(x_q, "input")
    if x.shape != (g.in_c, g.in_h, g.in_w):
        raise CompileError(f"input shape {x.shape} does not match the geometry {g.in_c}x{g.in_h}x{g.in_w}")
    w = np.asarray(w_q)
    if w.dtype != np.int8 or w.shape != g.weight_shape:
        raise CompileError(f"weights must be int8 {g.weight_shape}, got {w.dtype} {w.shape}")
    r, rm = requant, requant.rounding
    sy, sx = g.stride
    xp = nm.pad_input(x, g.pads[0], g.pads[1], g.out_h, g.out_w, g.kh, g.kw, sy, sx, r.input_zero_point)
    acc = nm.conv_mac(xp, w, sy, sx, g.out_h, g.out_w, g.depthwise)
    acc = nm.clip_truncate(acc, r.truncate_bits, rm.truncate)
    last_bs = r.ew is None
    v = nm.bs_stage(acc, hw_bias(bias_q, w, r, g.depthwise), r.channel_mul, r.mul_shift,
                    relu=r.relu and last_bs, relux=r.relux if last_bs else None, rounding=rm)
    if r.lut is not None:  # BN MUL requantizes to the LUT's int8 input domain (docs "LUT activations")
        v = nm.bs_stage(v, None, r.lut.bn_mul, r.lut.bn_shift, rounding=rm)
    if r.ew is not None:
        if ew_q is None:
            raise CompileError("requant has a fused add (EW) but no ew operand was given")
        e = _chw(ew_q, "ew operand")
        want = (g.out_c, 1, 1) if r.ew.per_channel else (g.out_c, g.out_h, g.out_w)
        if e.shape != want:
            raise CompileError(f"ew operand shape {e.shape} != {want}")
        if r.ew.op == "mul":
            v = nm.ew_mul_stage(v, e, r.ew.offset, r.ew.scale, r.ew.shift, r.ew.truncate, r.relu, r.relux, rm)
        else:
            v = nm.ew_stage(v, e, r.ew.offset, r.ew.scale, r.ew.shift, r.relu, r.relux, rm)
    if r.lut is not None:
        v = nm.lut_lo_stage(v, r.lut.lo_table, r.lut.lo_start)
    y = nm.out_cvt(v, r.out_scale, r.out_shift, r.out_offset, rm)
    return y.astype(np.int8)[None]


def tflite_conv(x_q: np.ndarray, w_q: np.ndarray, bias_q: np.ndarray | None, geometry: ConvGeometry, *,
                s_in: float, s_w, s_out: float, input_zp: int, output_zp: int, activation: str | None = None,
                kernel: str = "reference") -> np.ndarray:
    """TFLite's int8 conv / depthwise conv (opennpu.quant.kernels.conv) on the same NCHW operands, for
    measuring the NPU's deviation. Returns (1, Cout, OH, OW) int8."""
    from opennpu.quant.kernels.conv import conv2d, depthwise_conv2d

    g = geometry
    x = _chw(x_q, "input").transpose(1, 2, 0)[None]
    pt, pl, pb, pr = g.pads
    pads = (pt, pb, pl, pr)
    common = dict(input_scale=s_in, input_zp=input_zp, filter_scales=s_w, output_scale=s_out, output_zp=output_zp,
                  stride=g.stride, padding=pads, activation=activation, kernel=kernel)
    if g.depthwise:
        w = np.asarray(w_q)[:, 0].transpose(1, 2, 0)[None]  # (1, KH, KW, C)
        y = depthwise_conv2d(x, w, bias_q, **common)
    else:
        w = np.asarray(w_q).transpose(0, 2, 3, 1)  # OHWI
        y = conv2d(x, w, bias_q, **common)
    return y[0].transpose(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------------- PPU pooling
POOL_METHODS = ("avg", "max", "min")  # PPU_OPERATION_MODE_CFG.POOLING_METHOD 0/1/2 (NVDLA PDP AVE/MAX/MIN)


@dataclass(frozen=True)
class PoolGeometry(_SlidingWindow):
    """One PPU pool: C x H x W int8 map, kernel (kh, kw), strides (y, x), pads (top, left, bottom, right).
    The output size is the floor formula; a window that input + padding does not cover is rejected (it
    "starves the PPU forever", iav/rk3568-npu [3P]), as is a window lying wholly in padding."""

    method: str
    c: int
    in_h: int
    in_w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        if self.method not in POOL_METHODS:
            raise CompileError(f"pool method {self.method!r} is not one of {POOL_METHODS}")
        if min(self.c, self.in_h, self.in_w, self.kh, self.kw, *self.stride) < 1 or min(self.pads) < 0:
            raise CompileError(f"pool geometry {self} has a non-positive size or a negative pad")
        pt, pl, pb, pr = self.pads
        if self.kh > self.in_h + pt + pb or self.kw > self.in_w + pl + pr:
            raise CompileError(f"pool kernel {self.kh}x{self.kw} is larger than the padded input "
                               f"{self.in_h + pt + pb}x{self.in_w + pl + pr} (the PPU would wait forever)")
        if max(pt, pb) >= self.kh or max(pl, pr) >= self.kw:
            raise CompileError(f"pool pads {list(self.pads)} reach a whole {self.kh}x{self.kw} window (a window "
                               "with no input element)")



def ppu_recip(k: int) -> int:
    """PPU_RECIP_KERNEL_WIDTH/HEIGHT for kernel size ``k``: ``round(2**16 / k)`` (NVDLA: "actual value *
    2^16" for int8 [R]; round to nearest is our choice [I], 1 -> 65536 fits the 17-bit field)."""
    if not 1 <= k <= 16:
        raise CompileError(f"pool kernel size {k} outside 1..16")
    return (2 * nm.RECIP_ONE + k) // (2 * k)


def pool_reference(x_q: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """The target's integer reference of one PPU pool: (1,)C,H,W int8 -> (1, C, OH, OW) int8.

    max/min: exact over the input elements of each window (padded positions take no part, NVDLA PDP);
    avg: no padding (the lowering rejects it), window sum of the raw int8 codes, then ``ppu_average`` with the
    programmed reciprocals ``ppu_recip(kw)``, ``ppu_recip(kh)`` (two roundings, docs/rk3588-arithmetic.md).
    """
    x = _chw(x_q, "pool input").astype(np.int64)
    if x.shape != (g.c, g.in_h, g.in_w):
        raise CompileError(f"pool input shape {x.shape} does not match {g.c}x{g.in_h}x{g.in_w}")
    pt, pl, pb, pr = g.pads
    if g.method == "avg" and any(g.pads):
        raise CompileError("PPU average pooling with padding is not modelled (pad-value semantics unknown)")
    fill = {"max": np.iinfo(np.int64).min, "min": np.iinfo(np.int64).max, "avg": 0}[g.method]
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (g.kh, g.kw), axis=(1, 2))
    win = win[:, ::g.stride[0], ::g.stride[1]][:, :g.out_h, :g.out_w]
    if g.method == "max":
        y = win.max(axis=(3, 4))
    elif g.method == "min":
        y = win.min(axis=(3, 4))
    else:
        y = nm.ppu_average(win.sum(axis=(3, 4)), ppu_recip(g.kw), ppu_recip(g.kh))
    return y.astype(np.int8)[None]


def tflite_average_pool(x_q: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """TFLite's int8 AVERAGE_POOL_2D on the same operands (sum / count rounded half away, once), for measuring
    the PPU's deviation. Returns (1, C, OH, OW) int8."""
    from opennpu.quant.kernels.pool import average_pool2d

    x = _chw(x_q, "pool input").transpose(1, 2, 0)[None]
    pt, pl, pb, pr = g.pads
    y = average_pool2d(x, pool=(g.kh, g.kw), stride=g.stride, padding=(pt, pb, pl, pr))
    return y[0].transpose(2, 0, 1)[None]
