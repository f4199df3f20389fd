"""DPU LUT activations and standalone element-wise Add / Mul, as conv-like ops (docs/rk3588-arithmetic.md,
"LUT activations" and "Element-wise Add / Mul").

* **LUT activations** (Sigmoid, Tanh, Silu, HardSwish, HardSigmoid and every other int8 table op of
  ``opennpu.quant.lut``): the int8 -> int8 table the integer executor defines (TFLite's LOGISTIC / TANH tables,
  ``lut_table`` for the others, the node's fused clip folded in) becomes the DPU's LO table. After the producing
  conv (fused) the BN MUL requantizes the accumulator to the conv's int8 output domain (the OUT_CVT operands it
  would have used) and the LO table is indexed by that value; otherwise an identity 1x1 depthwise conv carrier
  (weight 1) feeds the input through unchanged (``v = x - zp``, exact).
* **Add** of two same-shape int8 maps: a depthwise carrier with weight ``2**CARRIER_SHIFT`` on the operand with
  the larger scale and the other one through the EW stage (the fused-Add path of lower.py); ``Add`` of a
  per-tensor or per-channel constant: the constant becomes the carrier's bias in accumulator units.
* **Mul** of two same-shape maps: a weight-1 carrier and the EW stage's MUL (EW_OP_TYPE=1, operand converted
  with scale 1, shift 0, offset -zp: the exact product reaches OUT_CVT), the second map possibly (1, C, 1, 1)
  (squeeze-and-excitation: the EW operand read per channel); by a per-tensor or per-channel constant:
  a weight-1 carrier whose BS MUL multiplies by the constant's codes minus its zero point (exact).

Everything here returns plain data; lower.py turns it into conv specs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from opennpu.errors import CompileError
from opennpu.ir.graph import Graph, Node
from opennpu.quant import kernels as K
from opennpu.quant.lut import LUT_OPS, lut_table, tanh_table
from opennpu.runtime.emulator.npu_math import LUT_LO_ENTRIES

from . import arith

CARRIER_SHIFT = 6  # Add carrier weight 64: the EW operand converts with 1/64 input-LSB resolution
BN_SHIFT_MAX = (1 << 6) - 1  # DPU_BN_MUL_CFG.BN_MUL_SHIFT_VALUE[13:8]
BN_MUL_MAX = (1 << 15) - 1  # DPU_BN_MUL_CFG.BN_MUL_OPERAND is a signed 16-bit field


@dataclass
class LutFusion:
    """A LUT node applied by a conv-like op: its node index, int8 table (entry i for code i - 128) and the
    tensor whose quantization the table's input codes use."""

    node: int
    table: np.ndarray
    input: str


@dataclass
class Carrier:
    """An identity-like 1x1 depthwise conv standing for a non-conv node."""

    kind: str  # "lut" | "add" | "mul"
    input: str
    ew_input: str | None
    weights: np.ndarray  # (C, 1, 1, 1) int8
    w_scales: np.ndarray  # (1,) float32
    bias: np.ndarray  # (C,) int32
    geometry: arith.ConvGeometry
    ew_op: str = "add"
    channel_mul: np.ndarray | None = None  # per-channel BS MUL operands (Mul by a constant), shift 0
    ew_per_channel: bool = False  # the EW operand is a (1, C, 1, 1) map broadcast over H x W


def is_lut_op(op_type: str) -> bool:
    return op_type in LUT_OPS


def _q(graph: Graph, name: str) -> tuple[float, int]:
    t = graph.tensor(name)
    if t.quant is None:
        raise CompileError(f"tensor {name!r} has no quantization")
    s, z = np.asarray(t.quant.scale).reshape(-1), np.asarray(t.quant.zero_point).reshape(-1)
    if s.size != 1 or z.size > 1:
        raise CompileError(f"tensor {name!r} is quantized per channel")
    return float(s[0]), int(z[0]) if z.size else 0


def _map(graph: Graph, name: str) -> tuple[int, int, int]:
    s = graph.tensor(name).shape
    s = tuple(int(d) for d in s) if s is not None else None
    if s is not None and len(s) == 4 and s[0] == 1 and min(s) >= 1:
        return s[1], s[2], s[3]
    if s is not None and len(s) == 2 and s[0] == 1 and s[1] >= 1:
        return s[1], 1, 1
    raise CompileError(f"tensor {name!r} of shape {s} is not a (1, C, H, W) map or (1, C) vector")


def activation_table(graph: Graph, node: Node) -> np.ndarray:
    """The int8 table of a LUT node exactly as the integer executor builds it (executor._int_unary_table):
    TFLite's LOGISTIC table for Sigmoid, TANH for Tanh, ``lut_table`` otherwise; a fused clip is applied to the
    entries. Entry i is the output for input code i - 128."""
    from .lower import clip_range

    x, y = node.inputs[0], node.outputs[0]
    for t in (x, y):
        if graph.tensor(t).dtype != "int8":
            raise CompileError(f"rk3588 lowering of {graph.tensor(t).dtype} {node.op_type} not implemented yet "
                               f"(planned: uint8 through the 0x80 offset); {t!r} is {graph.tensor(t).dtype}")
    (si, zi), (so, zo) = _q(graph, x), _q(graph, y)
    op = node.op_type
    if op == "Sigmoid":
        table = K.logistic_table(si, zi, so, zo)
    elif op == "Tanh":
        table = tanh_table(si, zi, so, zo)
    elif op in LUT_OPS:
        table = lut_table(op, node.attrs, si, zi, so, zo, "int8", "int8")
    else:
        raise CompileError(f"{op} is not a table-defined activation")
    table = np.asarray(table, np.int64).reshape(-1)
    if table.size != 256:
        raise CompileError(f"{op} table has {table.size} entries, expected 256")
    lo, hi = clip_range(node.attrs.get("clip"), so, zo)
    return np.clip(table, lo, hi).astype(np.int8)


def with_lut(requant: arith.NpuRequant, table: np.ndarray, in_clamp: tuple[int, int] = (-128, 127)
             ) -> arith.NpuRequant:
    """Turn the requantization of a conv into its int8 output domain (``requant`` computed for the LUT input
    tensor, no ReLU) into conv + LUT: the OUT_CVT operands move to the BN MUL (the zero point to LUT_LO_START),
    OUT_CVT becomes the identity. ``in_clamp`` (a clamp the producer applied to its int8 output) is folded into
    the table: LO[i] = table[clamp(i - 128)] for i < 256 and LO[256..512] = table[clamp(127)] (codes above 127
    and the overflow saturate)."""
    if requant.relu or requant.relux is not None or requant.ew is not None:
        raise CompileError("a LUT activation after a clamped or EW-fused conv is not lowered")
    if not 0 <= requant.out_shift <= BN_SHIFT_MAX or not 0 < requant.out_scale <= BN_MUL_MAX:
        raise CompileError(f"requantization ({requant.out_scale}, >> {requant.out_shift}) does not fit the BN MUL "
                           f"(operand <= {BN_MUL_MAX}, shift <= {BN_SHIFT_MAX})")
    t = np.asarray(table, np.int64)
    codes = np.clip(np.arange(-128, 128), in_clamp[0], in_clamp[1])
    lo = np.append(t[codes + 128], np.full(LUT_LO_ENTRIES - 256, t[codes[-1] + 128]))
    if lo.size != LUT_LO_ENTRIES:
        raise CompileError(f"LO table of {lo.size} entries, the DPU's has {LUT_LO_ENTRIES}")
    stage = arith.LutStage(requant.out_scale, requant.out_shift, -128 - requant.out_offset,
                           tuple(int(v) for v in lo))
    return replace(requant, lut=stage, out_scale=1, out_shift=0, out_offset=0,
                   clamp=(int(t.min()), int(t.max())))


def _carrier_geometry(graph: Graph, name: str) -> arith.ConvGeometry:
    c, h, w = _map(graph, name)
    return arith.ConvGeometry(c, h, w, c, 1, 1, depthwise=True)


def lut_carrier(graph: Graph, node: Node) -> Carrier:
    """Identity 1x1 depthwise conv (weight 1, scale 1) in front of the LUT: BS output = x - zp exactly."""
    x = node.inputs[0]
    geo = _carrier_geometry(graph, x)
    if _map(graph, node.outputs[0]) != (geo.in_c, geo.in_h, geo.in_w):
        raise CompileError(f"{node.op_type} output shape differs from its input")
    return Carrier("lut", x, None, np.ones((geo.in_c, 1, 1, 1), np.int8), np.ones(1, np.float32),
                   np.zeros(geo.in_c, np.int32), geo)


def _const_per_channel(graph: Graph, name: str, c: int, op: str) -> tuple[np.ndarray, float]:
    """A quantized int8 constant broadcastable to (1, C, 1, 1) -> its (C,) codes minus zero point, scale."""
    t = graph.tensor(name)
    if t.data is None or t.dtype != "int8" or t.quant is None:
        raise CompileError(f"{op} by a constant needs a quantized int8 constant; {name!r} is {t.dtype}")
    s, z = _q(graph, name)
    d = np.asarray(t.data, np.int64)
    shape = (1,) * (4 - d.ndim) + tuple(d.shape) if d.ndim <= 4 else d.shape
    if len(shape) != 4 or any(v != 1 for i, v in enumerate(shape) if i != 1) or shape[1] not in (1, c):
        raise CompileError(f"rk3588 lowering of {op} by a constant of shape {tuple(d.shape)} not implemented yet "
                           "(planned: EW operand from a constant buffer)")
    return np.broadcast_to(d.reshape(-1) - z, (c,)).copy(), s


def eltwise_carrier(graph: Graph, node: Node) -> Carrier:
    """Carrier for a standalone Add / Mul (see module doc). CompileError when the operands do not fit."""
    op = node.op_type
    if len(node.inputs) != 2:
        raise CompileError(f"{op} with {len(node.inputs)} inputs is not lowered")
    y = node.outputs[0]
    consts = [graph.tensor(t).is_const for t in node.inputs]
    dyn = [t for t, k in zip(node.inputs, consts, strict=True) if not k]
    if not dyn:
        raise CompileError(f"{op} of two constants is folded at compile time")
    for t in [*dyn, y]:
        if graph.tensor(t).dtype != "int8":
            raise CompileError(f"rk3588 lowering of {graph.tensor(t).dtype} {op} not implemented yet "
                               "(planned: int8 only)")
        _q(graph, t)
    geo = _carrier_geometry(graph, y)
    c = geo.in_c
    if len(dyn) == 2:
        a, b = node.inputs
        if op == "Mul" and _map(graph, a) == (c, 1, 1) != _map(graph, b):  # the full map on the CNA
            a, b = b, a
        if op == "Mul" and _map(graph, a) == _map(graph, y) and _map(graph, b) == (c, 1, 1) != _map(graph, y):
            # SE-block scaling: EW MUL by a per-channel operand (ERDMA per-kernel mode, docs "Element-wise")
            return Carrier("mul", a, b, np.ones((c, 1, 1, 1), np.int8), np.full(1, _q(graph, b)[0], np.float32),
                           np.zeros(c, np.int32), geo, "mul", ew_per_channel=True)
        if graph.tensor(a).shape != graph.tensor(b).shape or _map(graph, a) != _map(graph, y):
            raise CompileError(f"rk3588 lowering of {op} broadcasting {graph.tensor(a).shape} and "
                               f"{graph.tensor(b).shape} not implemented yet (planned: EW operand re-layout)")
        if op == "Add":
            if _q(graph, b)[0] > _q(graph, a)[0]:  # the larger scale on the CNA keeps the EW convert ratio <= 64
                a, b = b, a
            return Carrier("add", a, b, np.full((c, 1, 1, 1), 1 << CARRIER_SHIFT, np.int8),
                           np.full(1, 2.0 ** -CARRIER_SHIFT, np.float32), np.zeros(c, np.int32), geo, "add")
        sb = _q(graph, b)[0]
        return Carrier("mul", a, b, np.ones((c, 1, 1, 1), np.int8), np.full(1, sb, np.float32),
                       np.zeros(c, np.int32), geo, "mul")
    x = dyn[0]
    k = next(t for t in node.inputs if t != x) if node.inputs[0] != node.inputs[1] else x
    if _map(graph, x) != _map(graph, y):
        raise CompileError(f"{op} output shape {graph.tensor(y).shape} differs from its input")
    codes, sc = _const_per_channel(graph, k, c, op)
    sx = _q(graph, x)[0]
    if op == "Add":
        unit = float(np.float32(sx)) * 2.0 ** -CARRIER_SHIFT  # real value of one accumulator unit
        bias = np.asarray(np.round(codes * float(np.float32(sc)) / unit), np.int64)
        if np.abs(bias).max(initial=0) > (1 << 30):
            raise CompileError(f"Add constant too large for the carrier bias ({int(np.abs(bias).max())} units)")
        return Carrier("add", x, None, np.full((c, 1, 1, 1), 1 << CARRIER_SHIFT, np.int8),
                       np.full(1, 2.0 ** -CARRIER_SHIFT, np.float32), bias.astype(np.int32), geo)
    return Carrier("mul", x, None, np.ones((c, 1, 1, 1), np.int8), np.full(1, sc, np.float32),
                   np.zeros(c, np.int32), geo, channel_mul=codes)


def mul_ew(requant: arith.NpuRequant, ew_zp: int, per_channel: bool = False) -> arith.NpuRequant:
    """The EW MUL operands of a dynamic Mul carrier: ``(e - zp) * 1 >> 0``, product not truncated."""
    return replace(requant, ew=arith.EwRequant(1, 0, -int(ew_zp), 1.0, "mul", 0, per_channel))


def mul_const(requant: arith.NpuRequant, codes: np.ndarray) -> arith.NpuRequant:
    """Mul by a constant: the BS MUL multiplies each channel by the constant's code minus its zero point (signed
    16-bit BS stream operand, shift 0: exact), OUT_CVT applies ``s_x * s_c / s_out``."""
    c = np.asarray(codes, np.int64)
    if c.min(initial=0) < -(1 << 15) or c.max(initial=0) >= 1 << 15:
        raise CompileError("Mul constant codes do not fit the 16-bit BS MUL operand")
    return replace(requant, channel_mul=tuple(int(v) for v in c), mul_shift=0)


__all__ = ["CARRIER_SHIFT", "Carrier", "LutFusion", "activation_table", "eltwise_carrier", "is_lut_op",
           "lut_carrier", "mul_const", "mul_ew", "with_lut"]
