"""Integer executor of quantized graphs (the quantized-IR contract, see opennpu/frontends/tflite.py).

Nodes whose outputs are integer-quantized tensors (int8 / int16 with ``Tensor.quant``) run integer kernels
with LiteRT's arithmetic: the NHWC kernels of ``opennpu.quant.kernels`` where they exist (reused as they
are, through NCHW <-> NHWC transposes: exactness does not depend on layout), and for the GEMM-heavy ops
(Conv, FC) an exact NCHW accumulation followed by the kernels' own requantization (``conv_multipliers``,
``requantize``), so that a batch of images runs through BLAS:

- int8 Conv accumulates (x - zp) * w in float32 over input-channel chunks of at most 512 products
  (|(x - zp) * w| <= 255 * 128 < 2^15, so every partial sum is an integer below 2^24 and float32 is exact),
  chunks summed in float64; int16 activations accumulate in float64 (exact below 2^53).
- Requantization rounding follows the kernel flavour: ``kernels="optimized"`` = LiteRT's builtin resolver
  (ruy rounding for conv / FC / batch-matmul, 8-channel NEON blocks + scalar tail for depthwise),
  ``kernels="reference"`` = BUILTIN_REF (gemmlowp double rounding).
- 16x8 ops (int16 activations, int8 weights, int64/int32 bias) requantize with TFLite's int64
  MultiplyByQuantizedMultiplier (multiplier reduced to 16 bits, one round-half-up shift).

Float nodes run the float kernels of ``opennpu.runtime.cpu``; nodes with float16 outputs compute in float32
and round every float16 output (the fp16 NPU path). Boundaries are explicit QuantizeLinear /
DequantizeLinear nodes with TFLite QUANTIZE / DEQUANTIZE arithmetic (round half away from zero), and a
DequantizeLinear -> QuantizeLinear pair (int -> int) is executed as TFLite's integer Requantize.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.graph import Graph, Node, Tensor
from ..ir.ops.conv import conv2d_float, conv_geometry
from ..ir.ops.pool import pool_geometry
from ..runtime.cpu import execute, run_node
from . import kernels as K
from .fixedpoint import (
    activation_range,
    conv_multipliers,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multiplier_smaller_than_one,
    requantize,
    round_half_away,
)
from .kernels._common import DTYPE_RANGE, gemm_rounding
from .lut import LUT_OPS, apply_table, lut_table, tanh_table

INT_DTYPES = ("int8", "int16", "uint8")
FLAVOURS = ("optimized", "reference")
F32_CHUNK = 512  # products per exact float32 partial sum (see module docstring)

Array = np.ndarray


def is_quantized(t: Tensor) -> bool:
    return t.dtype in INT_DTYPES and t.quant is not None


def _qp(t: Tensor, node: Node) -> tuple[float, int]:
    q = t.quant
    if q is None:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): tensor {t.name!r} has no quantization")
    s, z = np.asarray(q.scale).reshape(-1), np.asarray(q.zero_point).reshape(-1)
    if s.size != 1 or (z.size > 1 and np.any(z != z[0])):
        if np.all(s == s[0]) and (z.size == 0 or np.all(z == z[0])):
            return float(s[0]), int(z[0]) if z.size else 0
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): activation {t.name!r} is quantized "
                                 "per channel; only weights may be")
    return float(s[0]), int(z[0]) if z.size else 0


def _clip_range(node: Node, scale: float, zp: int, dtype: str) -> tuple[int, int]:
    """Fused clamp (real units) -> quantized range, as TFLite's CalculateActivationRangeQuantized."""
    qmin, qmax = DTYPE_RANGE[dtype]
    clip = node.attrs.get("clip")
    if clip is None:
        return qmin, qmax
    lo, hi = float(clip[0]), float(clip[1])
    named = {(0.0, float("inf")): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi))
    if named is not None:
        return activation_range(named, scale, zp, qmin, qmax)

    def q(v: float) -> int:
        return zp + int(round_half_away(np.float32(v) / np.float32(scale)))

    return (max(qmin, q(lo)) if np.isfinite(lo) else qmin, min(qmax, q(hi)) if np.isfinite(hi) else qmax)


def mbqm_int64(x: Array, multiplier, shift) -> Array:
    """TFLite's MultiplyByQuantizedMultiplier(int64 x, ...) used by 16x8 kernels: the multiplier is reduced
    to 16 bits (rounded) and applied with one round-half-up shift."""
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - s
    return (x * reduced + (np.int64(1) << (total - 1))) >> total


def _requant_int(x: Array, in_q: tuple[float, int], out_q: tuple[float, int], dtype: str,
                 simd_blocks: bool = False) -> Array:
    """TFLite Requantize (QUANTIZE int -> int, RELU rescale): MBQM(x - in_zp, in_s / out_s) + out_zp with
    gemmlowp double rounding (ties away from zero), as LiteRT's reference kernel. ``simd_blocks``: LiteRT's
    optimized int8 -> int8 QUANTIZE (optimized_ops::Requantize; on x86 its NEON code runs through NEON_2_SSE)
    takes the flattened tensor in blocks of 16 through MultiplyByQuantizedMultiplier4Rows, i.e. vqrdmulh then
    vrshl, both rounding ties up (toward +inf), and only the tail of fewer than 16 values through the scalar
    gemmlowp path. ``dtype="int32"`` keeps the unclamped int32 value (RELU / RELU6 rescale first, then clamp
    to their own activation range)."""
    m, s = quantize_multiplier(np.float64(np.float32(in_q[0])) / np.float64(np.float32(out_q[0])))
    xc = np.asarray(x, np.int64) - in_q[1]
    v = multiply_by_quantized_multiplier(xc, m, s, "double")
    if simd_blocks:
        flat, blocked = v.reshape(-1), xc.size // 16 * 16
        flat[:blocked] = multiply_by_quantized_multiplier(xc.reshape(-1)[:blocked], m, s, "ruy")
    v = v + out_q[1]
    lo, hi = DTYPE_RANGE[dtype]
    return np.clip(v, lo, hi).astype(dtype)


def _same_q(a: tuple[float, int], b: tuple[float, int]) -> bool:
    return np.float32(a[0]) == np.float32(b[0]) and a[1] == b[1]


def _to_out_q(v: Array, in_q: tuple[float, int], out_q: tuple[float, int], dtype: str) -> Array:
    """Data-movement ops keep the input's quantization (TFLite requires equal params); if a graph gives the
    output other params, requantize with TFLite's float rescale (requantize_8bit)."""
    if _same_q(in_q, out_q):
        return v.astype(dtype, copy=False)
    return K.requantize_8bit(v, in_q[0], in_q[1], out_q[0], out_q[1], dtype)


def requantize_fast(acc: Array, multiplier: Array, shift: Array, zp: int, lo: int, hi: int,
                    rounding: str) -> Array:
    """``fixedpoint.requantize`` for the common case of an int32-range accumulator and multipliers < 1
    (shift <= 0): the same integer arithmetic with fewer numpy passes (batched conv outputs are large).
    Falls back to ``requantize`` otherwise; tests check both agree."""
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if rounding not in ("ruy", "double") or np.any(s > 0) or acc.size == 0 or \
            max(int(acc.max()), -int(acc.min())) >= (1 << 31) - 1:
        return requantize(acc, m, s, zp, lo, hi, rounding)
    right = -s
    ab = acc * m
    if rounding == "ruy":
        # round-half-up high product (no int64 overflow: |acc * m| < 2^62), then a round-half-up right
        # shift; the SIMD saturation branch (hi + nudge > INT32_MAX) is checked once and falls back
        hi32 = (ab + (1 << 30)) >> 31
        nudge = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
        if int(hi32.max()) > (1 << 31) - 1 - int(np.max(nudge)):
            return requantize(acc, m, s, zp, lo, hi, rounding)
        out = (hi32 + nudge) >> right
    else:
        # gemmlowp SRDHM (ties away from zero, C truncating division) then RoundingDivideByPOT
        neg = ab < 0
        v = ab + np.where(neg, 1 - (1 << 30), 1 << 30)
        hi32 = np.where(v >= 0, v >> 31, -((-v) >> 31))
        mask = np.left_shift(np.int64(1), right) - 1
        rem = hi32 & mask
        thr = (mask >> 1) + (hi32 < 0)
        out = (hi32 >> right) + (rem > thr)
    out += zp
    np.clip(out, lo, hi, out=out)
    return out


# ---- accumulation helpers (exact) ---------------------------------------------------------------------------

def _conv_acc(x: Array, zp: int, w: Array, attrs: dict[str, Any], wide: bool) -> Array:
    """Exact int64 sum of (x - zp) * w for a single-group Conv (NCHW / OIHW)."""
    dt = np.float64 if wide else np.float32
    xs = x.astype(dt) - dt(zp)
    wf = w.astype(dt)
    sub = dict(attrs, group=1)
    sub.pop("clip", None)
    cin = x.shape[1]
    taps = int(np.prod(w.shape[2:]))
    step = cin if wide else max(1, F32_CHUNK // max(taps, 1))
    if step >= cin:
        return conv2d_float(xs, wf, None, sub).astype(np.int64)
    acc = None
    for c0 in range(0, cin, step):
        part = conv2d_float(xs[:, c0:c0 + step], wf[:, c0:c0 + step], None, sub).astype(np.float64)
        acc = part if acc is None else acc + part
    return acc.astype(np.int64)


def _dw_acc(x: Array, zp: int, w: Array, attrs: dict[str, Any], wide: bool) -> Array:
    """Depthwise (group == C, one input channel per filter): taps accumulate in float32, exact for < 512 taps."""
    taps = int(np.prod(w.shape[2:]))
    dt = np.float64 if wide or taps > F32_CHUNK else np.float32
    sub = dict(attrs)
    sub.pop("clip", None)
    return conv2d_float(x.astype(dt) - dt(zp), w.astype(dt), None, sub).astype(np.int64)


# ---- integer op implementations -----------------------------------------------------------------------------

class _Ctx:
    def __init__(self, graph: Graph, kernels: str) -> None:
        self.g = graph
        self.kernels = kernels

    def t(self, name: str) -> Tensor:
        return self.g.tensor(name)


def _weight_scales(wt: Tensor, n_out: int, axis: int, node: Node) -> Array:
    q = wt.quant
    if q is None:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): weight {wt.name!r} is not quantized")
    zp = np.asarray(q.zero_point).reshape(-1)
    if zp.size and np.any(zp != 0):
        raise UnsupportedOpError(f"node {node.name!r}: weight {wt.name!r} is not symmetric (zero point != 0)")
    s = np.asarray(q.scale, dtype=np.float32).reshape(-1)
    if s.size == 1:
        return np.broadcast_to(s, (n_out,)).astype(np.float32)
    if q.axis is None or q.axis % len(wt.shape) != axis or s.size != n_out:
        raise UnsupportedOpError(f"node {node.name!r}: weight {wt.name!r} is quantized along axis {q.axis}, "
                                 f"expected the output-channel axis {axis}")
    return s


def _int_conv(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    xt, wt, yt = ctx.t(node.inputs[0]), ctx.t(node.inputs[1]), ctx.t(node.outputs[0])
    if w is None or x.ndim != 4:
        raise UnsupportedOpError(f"node {node.name!r}: integer Conv needs a 2-D spatial input and constant weights")
    in_s, in_z = _qp(xt, node)
    out_s, out_z = _qp(yt, node)
    o = w.shape[0]
    fs = _weight_scales(wt, o, 0, node)
    group = int(node.attrs.get("group", 1))
    cin = x.shape[1]
    wide = xt.dtype == "int16"
    depthwise = group == cin and w.shape[1] == 1 and group > 1
    conv_geometry(x.shape, w.shape, node.attrs)  # validates
    if depthwise:
        acc = _dw_acc(x, in_z, w, node.attrs, wide)
    elif group == 1:
        acc = _conv_acc(x, in_z, w, node.attrs, wide)
    else:
        cg, og = cin // group, o // group
        acc = np.concatenate([_conv_acc(x[:, g * cg:(g + 1) * cg], in_z, w[g * og:(g + 1) * og], node.attrs, wide)
                              for g in range(group)], axis=1)
    if b is not None:
        acc = acc + np.asarray(b, dtype=np.int64).reshape(1, o, 1, 1)
    m, s = conv_multipliers(in_s, fs, out_s)
    m, s = m.reshape(1, o, 1, 1), s.reshape(1, o, 1, 1)
    lo, hi = _clip_range(node, out_s, out_z, yt.dtype)
    if wide:
        if yt.dtype != "int16":
            raise UnsupportedOpError(f"node {node.name!r}: int16 input needs an int16 output")
        return [np.clip(mbqm_int64(acc, m, s) + out_z, lo, hi).astype(np.int16)]
    if yt.dtype != "int8" or xt.dtype != "int8":
        raise UnsupportedOpError(f"node {node.name!r}: Conv {xt.dtype} -> {yt.dtype} is not supported")
    if depthwise:
        nb = (o // 8) * 8 if ctx.kernels == "optimized" else 0  # LiteRT's NEON blocks of 8 channels: ruy rounding
        out = np.empty(acc.shape, np.int64)
        if nb:
            out[:, :nb] = requantize_fast(acc[:, :nb], m[:, :nb], s[:, :nb], out_z, lo, hi, "ruy")
        if nb < o:
            out[:, nb:] = requantize_fast(acc[:, nb:], m[:, nb:], s[:, nb:], out_z, lo, hi, "double")
    else:
        out = requantize_fast(acc, m, s, out_z, lo, hi, gemm_rounding(ctx.kernels))
    return [out.astype(np.int8)]


def _fc(ctx: _Ctx, node: Node, x2: Array, w: Array, fs: Array, bias: Array | None, xt: Tensor,
        yt: Tensor) -> Array:
    """x2 (B, K) integer, w (O, K) int8 -> (B, O)."""
    in_s, in_z = _qp(xt, node)
    out_s, out_z = _qp(yt, node)
    lo, hi = _clip_range(node, out_s, out_z, yt.dtype)
    if xt.dtype == "int16":
        if yt.dtype != "int16":
            raise UnsupportedOpError(f"node {node.name!r}: int16 input needs an int16 output")
        acc = (x2.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
        if bias is not None:
            acc = acc + np.asarray(bias, np.int64)
        m, s = conv_multipliers(in_s, fs, out_s, float_product=np.asarray(fs).size == 1)
        # LiteRT's 16x8 FULLY_CONNECTED requantizes with the 32-bit MultiplyByQuantizedMultiplier (unlike
        # its 16x8 CONV_2D, which uses the int64 variant): established against LiteRT in the tests
        out = multiply_by_quantized_multiplier(acc, m, s, "double") + out_z
        return np.clip(out, lo, hi).astype(np.int16)
    if xt.dtype != "int8" or yt.dtype != "int8":
        raise UnsupportedOpError(f"node {node.name!r}: {node.op_type} {xt.dtype} -> {yt.dtype} is not supported")
    per_channel = np.unique(fs).size > 1
    out = K.fully_connected(x2, w, bias, input_scale=in_s, input_zp=in_z,
                            filter_scales=fs if per_channel else fs[:1], output_scale=out_s, output_zp=out_z,
                            kernel=ctx.kernels)
    return np.clip(out, lo, hi).astype(np.int8)


def _int_gemm(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x, w = args[0], args[1]
    a = node.attrs
    if w is None or a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        raise UnsupportedOpError(f"node {node.name!r}: integer Gemm needs constant B, transA=0, alpha=beta=1")
    wt = ctx.t(node.inputs[1])
    if a.get("transB", 0):
        fs = _weight_scales(wt, w.shape[0], 0, node)
    else:
        fs = _weight_scales(wt, w.shape[1], 1, node)
        w = w.T
    bias = args[2].reshape(-1) if len(args) > 2 and args[2] is not None else None
    return [_fc(ctx, node, x, w, fs, bias, ctx.t(node.inputs[0]), ctx.t(node.outputs[0]))]


def _int_matmul(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    a, b = args[0], args[1]
    at, bt, yt = ctx.t(node.inputs[0]), ctx.t(node.inputs[1]), ctx.t(node.outputs[0])
    if bt.is_const and b.ndim == 2:
        fs = _weight_scales(bt, b.shape[1], 1, node)
        lead = a.shape[:-1]
        y = _fc(ctx, node, a.reshape(-1, a.shape[-1]), b.T, fs, None, at, yt)
        return [y.reshape(*lead, b.shape[1])]
    # Two activations: TFLite BATCH_MATMUL int8, one per-tensor multiplier a_s * b_s / out_s.
    if not (at.dtype == bt.dtype == yt.dtype == "int8"):
        raise UnsupportedOpError(f"node {node.name!r}: MatMul {at.dtype} x {bt.dtype} -> {yt.dtype} is not "
                                 "supported")
    sa, za = _qp(at, node)
    sb, zb = _qp(bt, node)
    so, zo = _qp(yt, node)
    acc = np.matmul(a.astype(np.float64) - za, b.astype(np.float64) - zb).astype(np.int64)
    m, s = quantize_multiplier(np.float64(np.float32(sa)) * np.float64(np.float32(sb)) / np.float64(np.float32(so)))
    lo, hi = _clip_range(node, so, zo, "int8")
    return [requantize(acc, m, s, zo, lo, hi, gemm_rounding(ctx.kernels)).astype(np.int8)]


def _add16(a: Array, b: Array, qa, qb, qo, lo: int, hi: int, negate_b: bool = False) -> Array:
    """TFLite general int16 ADD/SUB (left shift 15, gemmlowp rounding)."""
    sa, sb, so = np.float32(qa[0]), np.float32(qb[0]), np.float32(qo[0])
    twice_max = np.float64(2 * max(sa, sb))
    ma, sha = quantize_multiplier_smaller_than_one(np.float64(sa) / twice_max)
    mb, shb = quantize_multiplier_smaller_than_one(np.float64(sb) / twice_max)
    mo, sho = quantize_multiplier_smaller_than_one(twice_max / np.float64(np.float32((1 << 15) * so)))
    va = (np.asarray(a, np.int64) - qa[1]) << 15
    vb = (np.asarray(b, np.int64) - qb[1]) << 15
    sb_ = multiply_by_quantized_multiplier(vb, mb, shb)
    total = multiply_by_quantized_multiplier(va, ma, sha) + (-sb_ if negate_b else sb_)
    out = multiply_by_quantized_multiplier(total, mo, sho) + qo[1]
    return np.clip(out, lo, hi).astype(np.int16)


def _int_binary(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    a, b = args[0], args[1]
    ta, tb, ty = ctx.t(node.inputs[0]), ctx.t(node.inputs[1]), ctx.t(node.outputs[0])
    if not (is_quantized(ta) and is_quantized(tb)):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): both inputs must be quantized")
    qa, qb, qo = _qp(ta, node), _qp(tb, node), _qp(ty, node)
    lo, hi = _clip_range(node, qo[0], qo[1], ty.dtype)
    dts = {ta.dtype, tb.dtype, ty.dtype}
    op = node.op_type
    if dts == {"int16"}:
        if op in ("Add", "Sub"):
            return [_add16(a, b, qa, qb, qo, lo, hi, negate_b=op == "Sub")]
        real = np.float32(np.float32(qa[0]) * np.float32(qb[0])) / np.float32(qo[0])
        m, s = quantize_multiplier(np.float64(np.float32(real)))
        prod = (np.asarray(a, np.int64) - qa[1]) * (np.asarray(b, np.int64) - qb[1])
        return [np.clip(multiply_by_quantized_multiplier(prod, m, s) + qo[1], lo, hi).astype(np.int16)]
    if dts != {"int8"}:
        raise UnsupportedOpError(f"node {node.name!r}: {op} of {ta.dtype}, {tb.dtype} -> {ty.dtype}")
    kw = dict(a_scale=qa[0], a_zp=qa[1], output_scale=qo[0], output_zp=qo[1], kernel=ctx.kernels)
    if op == "Add":
        out = K.add(a, b, b_scale=qb[0], b_zp=qb[1], **kw)
    elif op == "Sub":
        # a - b = a + (-b): negating codes and zero point negates (b - b_zp) exactly (int64, no int8 wrap)
        # LiteRT's SUB has no NEON block path: the scalar (reference) arithmetic in both flavours
        out = K.add(a, -np.asarray(b, np.int64), b_scale=qb[0], b_zp=-qb[1], **{**kw, "kernel": "reference"})
    else:
        out = K.mul(a, b, b_scale=qb[0], b_zp=qb[1], **kw)
    return [np.clip(out, lo, hi).astype(np.int8)]


def _nhwc(x: Array) -> Array:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(x: Array) -> Array:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _int_pool(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x = args[0]
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    if x.ndim != 4:
        raise UnsupportedOpError(f"node {node.name!r}: integer pooling needs a 4-D input")
    kernel, strides, dilations, pads, out = pool_geometry(x.shape, node.attrs)
    if node.attrs.get("ceil_mode", 0) or any(d != 1 for d in dilations):
        raise UnsupportedOpError(f"node {node.name!r}: integer pooling without ceil_mode/dilation only")
    if node.op_type == "AveragePool" and node.attrs.get("count_include_pad", 0) and any(pads):
        raise UnsupportedOpError(f"node {node.name!r}: integer AveragePool needs count_include_pad=0 "
                                 "(TFLite averages valid pixels only)")
    qi, qo = _qp(xt, node), _qp(yt, node)
    lo, hi = _clip_range(node, qi[0], qi[1], xt.dtype)
    padding = (pads[0], pads[2], pads[1], pads[3])
    if xt.dtype == "int8":
        fn = K.average_pool2d if node.op_type == "AveragePool" else K.max_pool2d
        y = _nchw(fn(_nhwc(x), pool=tuple(kernel), stride=tuple(strides), padding=padding,
                     output_scale=qi[0], output_zp=qi[1]))
    elif xt.dtype == "int16":
        y = _pool16(x, node.op_type, kernel, strides, pads)
    else:
        raise UnsupportedOpError(f"node {node.name!r}: {node.op_type} on {xt.dtype}")
    y = np.clip(y, lo, hi).astype(xt.dtype)
    return [_to_out_q(y, qi, qo, yt.dtype)]


def _pool16(x: Array, op: str, kernel, strides, pads) -> Array:
    from ..ir.ops.conv import windows

    if op == "MaxPool":
        win = windows(x.astype(np.int64), kernel, strides, [1, 1], pads, value=np.iinfo(np.int64).min)
        return win.max(axis=(4, 5))
    win = windows(x.astype(np.int64), kernel, strides, [1, 1], pads, value=0)
    acc = win.sum(axis=(4, 5))
    ones = np.ones((1, 1) + x.shape[2:], np.int64)
    count = windows(ones, kernel, strides, [1, 1], pads, value=0).sum(axis=(4, 5))
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    return np.sign(num) * (np.abs(num) // count)


def _mean_hw(ctx: _Ctx, node: Node, x: Array, xt: Tensor, yt: Tensor) -> Array:
    """TFLite MEAN over H, W with keep_dims (input N, C, H, W here)."""
    qi, qo = _qp(xt, node), _qp(yt, node)
    n = x.shape[2] * x.shape[3]
    dtype = yt.dtype
    lo, hi = DTYPE_RANGE[dtype]
    if ctx.kernels == "optimized" and dtype == "int8":
        # optimized_integer_ops::Mean: float32 sum / count, then round(v * s + bias) (+ zp) for rescaling
        tot = x.astype(np.float32).sum(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
        v = tot / np.float32(n)
        if _same_q(qi, qo):
            q = round_half_away(v.astype(np.float64)).astype(np.int64)
        else:
            sc = np.float32(np.float32(qi[0]) / np.float32(qo[0]))
            bias = np.float32(np.float32(-qi[1]) * sc + np.float32(0.5))
            q = round_half_away((v * sc + bias).astype(np.float64)).astype(np.int64) + qo[1]
        return np.clip(q, lo, hi).astype(dtype)
    m, s = quantize_multiplier(np.float64(np.float32(qi[0])) / np.float64(np.float32(qo[0])))
    acc = (x.astype(np.int64) - qi[1]).sum(axis=(2, 3), keepdims=True)
    acc = multiply_by_quantized_multiplier(acc, m, s)
    half = n // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.sign(num) * (np.abs(num) // n) + qo[1]
    return np.clip(q, lo, hi).astype(dtype)


def _int_gap(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x = args[0]
    if x.ndim != 4:
        raise UnsupportedOpError(f"node {node.name!r}: integer GlobalAveragePool needs a 4-D input")
    return [_mean_hw(ctx, node, x, ctx.t(node.inputs[0]), ctx.t(node.outputs[0]))]


def _int_reduce_mean(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x = args[0]
    axes = args[1] if len(args) > 1 and args[1] is not None else node.attrs.get("axes")
    axes = sorted(int(a) % x.ndim for a in np.asarray(axes).reshape(-1)) if axes is not None else None
    if x.ndim != 4 or axes != [2, 3] or not node.attrs.get("keepdims", 1):
        raise UnsupportedOpError(f"node {node.name!r}: integer ReduceMean only over the spatial axes of a 4-D "
                                 "tensor with keepdims (TFLite MEAN)")
    return [_mean_hw(ctx, node, x, ctx.t(node.inputs[0]), ctx.t(node.outputs[0]))]


def _int_concat(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    yt = ctx.t(node.outputs[0])
    qo = _qp(yt, node)
    ts = [ctx.t(i) for i in node.inputs]
    if any(t.dtype != yt.dtype for t in ts):
        raise UnsupportedOpError(f"node {node.name!r}: Concat of mixed dtypes")
    qs = [_qp(t, node) for t in ts]
    axis = int(node.attrs.get("axis", 0)) % args[0].ndim
    y = K.concatenation(list(args), axis, scales=[q[0] for q in qs], zero_points=[q[1] for q in qs],
                        output_scale=qo[0], output_zp=qo[1], dtype=yt.dtype)
    lo, hi = _clip_range(node, qo[0], qo[1], yt.dtype)
    return [np.clip(y, lo, hi).astype(yt.dtype)]


def _int_move(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    """Reshape / Flatten / Squeeze / Unsqueeze / Transpose / Identity: the float kernel moves the codes."""
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    y = run_node(Node(node.op_type, node.inputs, node.outputs, {k: v for k, v in node.attrs.items() if k != "clip"},
                      node.name), args)[0]
    return [_to_out_q(np.asarray(y), _qp(xt, node), _qp(yt, node), yt.dtype)]


def _int_pad(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    qi = _qp(xt, node)
    value = args[2] if len(args) > 2 else None
    if value is None or np.size(value) == 0:
        v = qi[1]  # real 0 is the zero point
    elif np.asarray(value).dtype.kind == "f":
        v = int(K.quantize(np.asarray(value, np.float32).reshape(-1)[:1], qi[0], qi[1], xt.dtype)[0])
    else:
        v = int(np.asarray(value).reshape(-1)[0])
    if mode != "constant":
        v = 0
    ins = [args[0], args[1], np.array(v, dtype=xt.dtype)] + list(args[3:])
    y = run_node(Node("Pad", node.inputs, node.outputs, {"mode": mode}, node.name), ins)[0]
    return [_to_out_q(y, qi, _qp(yt, node), yt.dtype)]


def _int_resize(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    mode = node.attrs.get("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "nearest":
        raise UnsupportedOpError(f"node {node.name!r}: integer Resize supports mode='nearest' only")
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    ins = [args[0].astype(np.float32)] + list(args[1:])
    y = run_node(node, ins)[0]  # nearest only gathers: float32 holds the codes exactly
    return [_to_out_q(np.rint(y).astype(xt.dtype), _qp(xt, node), _qp(yt, node), yt.dtype)]


def _int_relu(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    qi, qo = _qp(xt, node), _qp(yt, node)
    if node.op_type == "Relu":
        lo_r, hi_r = 0.0, float("inf")
    else:
        lo_v = args[1] if len(args) > 1 and args[1] is not None else node.attrs.get("min")
        hi_v = args[2] if len(args) > 2 and args[2] is not None else node.attrs.get("max")
        lo_r = float(np.asarray(lo_v).reshape(-1)[0]) if lo_v is not None else float("-inf")
        hi_r = float(np.asarray(hi_v).reshape(-1)[0]) if hi_v is not None else float("inf")
    if np.asarray(args[1] if len(args) > 1 and args[1] is not None else 0.0).dtype.kind in "iu":
        raise UnsupportedOpError(f"node {node.name!r}: Clip bounds must be real (float) values")
    tmp = Node(node.op_type, node.inputs, node.outputs, {"clip": (lo_r, hi_r)}, node.name)
    lo, hi = _clip_range(tmp, qo[0], qo[1], yt.dtype)
    if "clip" in node.attrs:
        lo2, hi2 = _clip_range(node, qo[0], qo[1], yt.dtype)
        lo, hi = max(lo, lo2), min(hi, hi2)
    v = _requant_int(args[0], qi, qo, "int32") if not _same_q(qi, qo) else args[0].astype(np.int64)
    return [np.clip(v, lo, hi).astype(yt.dtype)]


def _int_softmax(ctx: _Ctx, node: Node, args: list, beta: float = 1.0) -> list[Array]:
    x = args[0]
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    if xt.dtype != "int8" or yt.dtype != "int8":
        raise UnsupportedOpError(f"node {node.name!r}: integer Softmax supports int8 only")
    qi, qo = _qp(xt, node), _qp(yt, node)
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    xm = np.moveaxis(x, axis, -1)
    y = K.softmax(xm, input_scale=qi[0], beta=beta, output_scale=qo[0], output_zp=qo[1])
    return [np.ascontiguousarray(np.moveaxis(y, -1, axis))]


def _int_unary_table(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    xt, yt = ctx.t(node.inputs[0]), ctx.t(node.outputs[0])
    qi, qo = _qp(xt, node), _qp(yt, node)
    op = node.op_type
    if xt.dtype == yt.dtype == "int8" and op == "Sigmoid":
        table = K.logistic_table(qi[0], qi[1], qo[0], qo[1])
    elif xt.dtype == yt.dtype == "int8" and op == "Tanh":
        table = tanh_table(qi[0], qi[1], qo[0], qo[1])
    elif op in ("Sigmoid", "Tanh"):
        raise UnsupportedOpError(f"node {node.name!r}: integer {op} supports int8 only")
    elif xt.dtype in ("int8", "int16") and yt.dtype in ("int8", "int16"):
        table = lut_table(op, node.attrs, qi[0], qi[1], qo[0], qo[1], xt.dtype, yt.dtype)
    else:
        raise UnsupportedOpError(f"node {node.name!r}: {op} on {xt.dtype} -> {yt.dtype}")
    y = apply_table(args[0], table, xt.dtype)
    if "clip" in node.attrs:
        lo, hi = _clip_range(node, qo[0], qo[1], yt.dtype)
        y = np.clip(y, lo, hi).astype(yt.dtype)
    return [y]


def _qparams(args: list, node: Node, x_ndim: int) -> tuple[Array, Array]:
    """Scale / zero point of a QuantizeLinear / DequantizeLinear, shaped to broadcast against x."""
    scale = np.asarray(args[1])
    zp = np.asarray(args[2]) if len(args) > 2 and args[2] is not None else np.zeros((), np.int64)
    if scale.size > 1:
        axis = int(node.attrs.get("axis", 1)) % x_ndim
        shape = [1] * x_ndim
        shape[axis] = scale.size
        return scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp.reshape(()))
    return scale.reshape(()), zp.reshape(())


def _quantize_linear(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    x = args[0]
    yt = ctx.t(node.outputs[0])
    dtype = yt.dtype if yt.dtype in INT_DTYPES else np.asarray(args[2]).dtype.name
    if dtype not in INT_DTYPES:
        raise UnsupportedOpError(f"node {node.name!r}: QuantizeLinear to {dtype}")
    scale, zp = _qparams(args, node, x.ndim)
    if x.dtype.kind in "iu":
        raise UnsupportedOpError(f"node {node.name!r}: QuantizeLinear of integer input {node.inputs[0]!r}")
    out = K.quantize(x, scale.astype(np.float32), zp.astype(np.int64), dtype)
    if ctx.kernels == "optimized" and scale.ndim == 0 and x.size >= 8:
        out = _quantize_neon_blocks(x, float(scale), int(zp), dtype, out)
    return [out]


def _quantize_neon_blocks(x: Array, scale: float, zp: int, dtype: str, out: Array) -> Array:
    """LiteRT's optimized QUANTIZE handles blocks of 8 elements with NEON code (NEON_2_SSE on x86):
    x * float32(1 / scale), rounded half to even (vcvtnq), + zp, clamped; the tail keeps the scalar
    division with rounding half away from zero (kernels.quantize)."""
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    nb = (flat.size // 8) * 8
    v = flat[:nb] * (np.float32(1) / np.float32(scale))
    bad = ~(np.abs(v) < np.float32(2.0**31))  # cvtps2dq: out of range / NaN -> INT32_MIN
    r = np.where(bad, -(2**31), np.rint(np.nan_to_num(v)).astype(np.float64)).astype(np.int64)
    r = ((r + zp + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    lo, hi = DTYPE_RANGE[dtype]
    res = out.reshape(-1).copy()
    res[:nb] = np.clip(r, lo, hi).astype(dtype)
    return res.reshape(out.shape)


def _dequantize_linear(ctx: _Ctx, node: Node, args: list) -> list[Array]:
    q = args[0]
    if q.dtype.kind not in "iu":
        raise UnsupportedOpError(f"node {node.name!r}: DequantizeLinear of {q.dtype} input")
    scale, zp = _qparams(args, node, q.ndim)
    flavour = ctx.kernels if scale.ndim == 0 else "reference"  # per-axis: reference code in LiteRT too
    y = K.dequantize(q, scale.astype(np.float32), zp.astype(np.int64), kernel=flavour)
    yt = ctx.t(node.outputs[0])
    return [y.astype(yt.dtype) if yt.dtype in ("float16", "float64") else y]


INT_OPS: dict[str, Callable[[_Ctx, Node, list], list[Array]]] = {
    "Conv": _int_conv,
    "Gemm": _int_gemm,
    "MatMul": _int_matmul,
    "Add": _int_binary,
    "Sub": _int_binary,
    "Mul": _int_binary,
    "Concat": _int_concat,
    "MaxPool": _int_pool,
    "AveragePool": _int_pool,
    "GlobalAveragePool": _int_gap,
    "ReduceMean": _int_reduce_mean,
    "Reshape": _int_move,
    "Flatten": _int_move,
    "Squeeze": _int_move,
    "Unsqueeze": _int_move,
    "Transpose": _int_move,
    "Identity": _int_move,
    "Pad": _int_pad,
    "Resize": _int_resize,
    "Relu": _int_relu,
    "Clip": _int_relu,
    "Softmax": _int_softmax,
    **{op: _int_unary_table for op in LUT_OPS},
}
INTEGER_OP_TYPES = frozenset(INT_OPS) | {"QuantizeLinear", "DequantizeLinear"}


# ---- graph walk -----------------------------------------------------------------------------------------------

def _plan(graph: Graph) -> tuple[dict[str, Node], dict[str, float], set[str]]:
    """Pairs executed specially: DequantizeLinear -> QuantizeLinear (integer requantize) and
    Mul(x, scalar const) -> Softmax on integer x (TFLite SOFTMAX beta, as the TFLite importer writes it)."""
    consumers = graph.consumers()
    requant: dict[str, Node] = {}  # QuantizeLinear node name -> its DequantizeLinear producer
    betas: dict[str, float] = {}
    skip: set[str] = set()
    producers = graph.producers()
    for n in graph.nodes:
        if n.op_type == "QuantizeLinear":
            p = producers.get(n.inputs[0])
            if p is not None and p.op_type == "DequantizeLinear" and len(consumers.get(n.inputs[0], [])) == 1:
                if graph.tensor(n.inputs[1]).data is not None and graph.tensor(p.inputs[1]).data is not None:
                    if np.size(graph.tensor(n.inputs[1]).data) == 1 and np.size(graph.tensor(p.inputs[1]).data) == 1:
                        requant[n.name] = p
        if n.op_type == "Softmax":
            p = producers.get(n.inputs[0])
            if p is None or p.op_type != "Mul" or len(consumers.get(n.inputs[0], [])) != 1:
                continue
            xt = graph.tensor(p.inputs[0])
            c = graph.const(p.inputs[1])
            if is_quantized(xt) and c is not None and c.dtype.kind == "f" and c.size == 1 \
                    and p.inputs[0] not in graph.outputs:
                betas[n.name] = float(c.reshape(-1)[0])
                skip.add(p.name)
    return requant, betas, skip


def run_quantized(graph: Graph, feeds: Mapping[str, np.ndarray], kernels: str = "optimized", keep: bool = False,
                  on_node: Callable[[Node, list[np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
    """Execute a quantized graph with integer semantics (see the module docstring).

    Returns the graph outputs (all tensors with ``keep``; integer tensors as stored codes: dequantize them
    with their QuantInfo). ``on_node(node, outputs)`` is called after every node.
    """
    if kernels not in FLAVOURS:
        raise ValueError(f"kernels must be one of {FLAVOURS}, got {kernels!r}")
    ctx = _Ctx(graph, kernels)
    requant, betas, skip = _plan(graph)
    producers = graph.producers()

    def run_one(node: Node, args: list, env: dict[str, np.ndarray]) -> list[Array]:
        if node.op_type == "Softmax" and node.name in betas:
            # Mul-by-beta -> Softmax runs as one softmax with beta on the Mul's input (the Mul is skipped)
            mul = producers[node.inputs[0]]
            node_in = Node(node.op_type, [mul.inputs[0]], node.outputs, node.attrs, node.name)
            return _int_softmax(ctx, node_in, [env[mul.inputs[0]]], betas[node.name])
        return _run_one(ctx, node, args, requant, env)

    # an integer requantize reads the DequantizeLinear's integer input: keep it alive until then
    reads = {q: (dq.inputs[0],) for q, dq in requant.items()}
    return execute(graph, feeds, run_one, keep, on_node, skip, reads)


def _run_one(ctx: _Ctx, node: Node, args: list, requant: dict[str, Node], env: dict) -> list[Array]:
    g = ctx.g
    op = node.op_type
    if op == "QuantizeLinear":
        dq = requant.get(node.name)
        if dq is not None and dq.inputs[0] in env:
            # int -> int: TFLite QUANTIZE on integer input is an integer Requantize
            src = env[dq.inputs[0]]
            in_q = (float(np.asarray(g.const(dq.inputs[1])).reshape(-1)[0]),
                    int(np.asarray(g.const(dq.inputs[2])).reshape(-1)[0]) if len(dq.inputs) > 2 and dq.inputs[2]
                    else 0)
            out_q = (float(np.asarray(args[1]).reshape(-1)[0]),
                     int(np.asarray(args[2]).reshape(-1)[0]) if len(args) > 2 and args[2] is not None else 0)
            dtype = np.asarray(args[2]).dtype.name if len(args) > 2 and args[2] is not None else "uint8"
            return [_requant_int(src, in_q, out_q, dtype, simd_blocks=ctx.kernels == "optimized" and dtype == "int8"
                                 and src.dtype == np.int8)]
        return _quantize_linear(ctx, node, args)
    if op == "DequantizeLinear":
        return _dequantize_linear(ctx, node, args)
    out_ts = [g.tensor(o) for o in node.outputs if o]
    if any(is_quantized(t) for t in out_ts):
        fn = INT_OPS.get(op)
        if fn is None:
            dts = ", ".join(sorted({t.dtype for t in out_ts}))
            raise UnsupportedOpError(f"node {node.name!r}: {op} has no integer kernel ({dts} output)")
        return fn(ctx, node, args)
    # float node (float32 island or fp16 layer)
    for name, a in zip(node.inputs, args, strict=True):
        if name and a is not None and is_quantized(g.tensor(name)) and not g.tensor(name).is_const:
            raise UnsupportedOpError(f"node {node.name!r} ({op}) is a float node but reads the integer tensor "
                                     f"{name!r}: a DequantizeLinear is missing")
    fargs = [a.astype(np.float32) if a is not None and a.dtype == np.float16 else a for a in args]
    outs = run_node(node, fargs)
    res = []
    for name, v in zip(node.outputs, outs, strict=False):
        t = g.tensors.get(name) if name else None
        if t is not None and t.dtype == "float16" and v.dtype != np.float16:
            v = v.astype(np.float16)
        res.append(v)
    return res


__all__ = ["INTEGER_OP_TYPES", "INT_OPS", "is_quantized", "mbqm_int64", "requantize_fast", "run_quantized"]
