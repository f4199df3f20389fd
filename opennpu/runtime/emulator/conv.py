"""Execute one conv task from the register state: CNA reads, CORE MACs, DPU post-processing, WDMA writes.

The registers are interpreted as docs/rk3588-arithmetic.md ("What the emulator honours") describes; every
combination outside that model raises DeviceError naming the register(s), so a program never silently
computes something the model does not know. Arithmetic: npu_math (shared with the compiler's reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opennpu.errors import DeviceError

from . import npu_math as nm
from .decoder import RegisterFile
from .lut import LutRam, decode_lut
from .memory import Memory

ATOM = 16  # bytes per feature atom = int8 channels per NC1HWC2 group
KERNEL_GROUP = 32  # kernels per weight block (WEIGHT_ATOMIC_SIZE)
CBUF_BANKS, CBUF_BANK_ENTRIES, CBUF_ENTRY_BYTES = 12, 256, 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise DeviceError(msg)


@dataclass
class ConvJob:
    """The decoded parameters of one conv task (all sizes real, i.e. count-1 fields already +1)."""

    depthwise: bool
    in_w: int
    in_h: int
    in_c: int  # DATAIN_CHANNEL (aligned lanes read)
    in_c_real: int
    in_addr: int
    line_bytes: int
    surf_bytes: int
    pad_top: int
    pad_left: int
    pad_value: int
    sx: int
    sy: int
    kw: int
    kh: int
    kernels: int
    weight_addr: int
    out_w: int
    out_h: int
    out_c_real: int
    out_addr: int
    out_surf_bytes: int
    truncate: int
    bs_alu: str  # "stream" | "register" | "bypass"
    bs_alu_operand: int
    bs_mul: str  # "stream" | "register" | "bypass"
    bs_mul_operand: int
    bs_mul_shift: int
    bs_relu: bool
    bs_relux: int | None
    bs_addr: int
    bs_record: int  # bytes per channel in the BS stream (4 or 8)
    ew: bool
    ew_addr: int
    ew_surf_bytes: int
    ew_offset: int
    ew_scale: int
    ew_shift: int
    ew_relu: bool
    ew_relux: int | None
    out_scale: int
    out_shift: int
    out_offset: int
    bn_mul: int | None = None  # BN MUL register operand (None: BN bypassed)
    bn_shift: int = 0
    ew_op: str = "add"  # EW operand op: "add" (ALU add) or "mul" (EW_OP_TYPE=1)
    ew_truncate: int = 0
    ew_per_channel: bool = False  # ERDMA per-kernel mode: one operand value per channel
    lut: bool = False  # EW-stage LUT on (LO table, emulator/lut.py)
    lut_start: int = 0


def decode_conv(r: RegisterFile) -> ConvJob:
    """Validate the register state of a conv task and collect its parameters."""
    f = r.field
    # ---------------------------------------------------------------- CNA
    mode = f("CNA_CONV_CON1", "CONV_MODE")
    _require(mode in (0, 3), f"CNA_CONV_CON1.CONV_MODE={mode} not modelled (0 = conv, 3 = depthwise)")
    dw = mode == 3
    for fld in ("NONALIGN_DMA", "GROUP_LINE_OFF", "ARGB_IN", "DECONV", "IN_PRECISION", "PROC_PRECISION"):
        _require(f("CNA_CONV_CON1", fld) == 0, f"CNA_CONV_CON1.{fld}={f('CNA_CONV_CON1', fld)} not modelled "
                 "(int8 NC1HWC2 input only; the 1-channel/ARGB first-layer mode is not emulated)")
    _require(f("CORE_MISC_CFG", "DW_EN") == int(dw), "CORE_MISC_CFG.DW_EN disagrees with CNA_CONV_CON1.CONV_MODE")
    _require(f("CORE_MISC_CFG", "PROC_PRECISION") == 0, "CORE_MISC_CFG.PROC_PRECISION != int8 not modelled")
    _require(f("DPU_FEATURE_MODE_CFG", "CONV_MODE") == (3 if dw else 0),
             "DPU_FEATURE_MODE_CFG.CONV_MODE disagrees with CNA_CONV_CON1.CONV_MODE")
    _require(f("DPU_FEATURE_MODE_CFG", "OUTPUT_MODE") == 2 and f("DPU_FEATURE_MODE_CFG", "FLYING_MODE") == 0,
             "DPU_FEATURE_MODE_CFG: only OUTPUT_MODE=2 (write to memory), FLYING_MODE=0 are modelled")
    con3 = r.get("CNA_CONV_CON3")
    sx, sy = f("CNA_CONV_CON3", "CONV_X_STRIDE"), f("CNA_CONV_CON3", "CONV_Y_STRIDE")
    _require(sx >= 1 and sy >= 1, f"CNA_CONV_CON3 stride {sx}x{sy}: strides must be >= 1")
    _require(con3 & ~0x3F == 0, f"CNA_CONV_CON3=0x{con3:x}: dilation/deconv/NN_MODE fields not modelled")
    cvt0 = r.get("CNA_CVT_CON0")
    _require(f("CNA_CVT_CON0", "CVT_BYPASS") == 1 and f("CNA_CVT_CON0", "DATA_SIGN") == 1,
             f"CNA_CVT_CON0=0x{cvt0:x}: only the bypassed input convert on signed int8 data is modelled")
    _require(r.get("CNA_CVT_CON5") == 0, "CNA_CVT_CON5 per-channel input convert not modelled")
    for reg in ("CNA_FC_CON0", "CNA_FC_CON1", "CNA_FC_CON2", "CNA_DCOMP_CTRL", "CNA_DCOMP_REGNUM"):
        _require(r.get(reg) == 0, f"{reg}=0x{r.get(reg):x} not modelled (no FC skip / weight decompression)")
    in_w, in_h = f("CNA_DATA_SIZE0", "DATAIN_WIDTH"), f("CNA_DATA_SIZE0", "DATAIN_HEIGHT")
    in_c, in_c_real = f("CNA_DATA_SIZE1", "DATAIN_CHANNEL"), f("CNA_DATA_SIZE1", "DATAIN_CHANNEL_REAL") + 1
    _require(in_w >= 1 and in_h >= 1, f"CNA_DATA_SIZE0: input {in_w}x{in_h} is empty")
    _require(in_c >= ATOM and in_c % ATOM == 0 and in_c_real <= in_c,
             f"CNA_DATA_SIZE1: DATAIN_CHANNEL={in_c} must be a multiple of 16 holding DATAIN_CHANNEL_REAL={in_c_real}")
    _require(f("CNA_FC_DATA_SIZE0", "DMA_WIDTH") == in_w and f("CNA_FC_DATA_SIZE0", "DMA_HEIGHT") == in_h
             and f("CNA_FC_DATA_SIZE1", "DMA_CHANNEL") == in_c,
             "CNA_FC_DATA_SIZE0/1 (DMA cube) disagree with CNA_DATA_SIZE0/1")
    line, surf = f("CNA_DMA_CON1", "LINE_STRIDE"), f("CNA_DMA_CON2", "SURF_STRIDE")
    line_bytes, surf_bytes = 4 * line, ATOM * (surf + line)
    groups = in_c // ATOM
    _require(line_bytes >= in_w * ATOM, f"CNA_DMA_CON1.LINE_STRIDE={line} ({line_bytes} bytes) is shorter than a "
             f"row of {in_w} atoms")
    _require(groups == 1 or surf_bytes >= (in_h - 1) * line_bytes + in_w * ATOM,
             f"CNA_DMA_CON2.SURF_STRIDE={surf} ({surf_bytes} bytes) makes input surfaces overlap")
    pad_top, pad_left = f("CNA_PAD_CON0", "PAD_TOP"), f("CNA_PAD_CON0", "PAD_LEFT")
    pad_value = r.sfield("CNA_PAD_CON1", "PAD_VALUE")
    _require(nm.INT8_MIN <= pad_value <= nm.INT8_MAX, f"CNA_PAD_CON1.PAD_VALUE={pad_value} is not an int8 value")
    kw, kh = f("CNA_WEIGHT_SIZE2", "WEIGHT_WIDTH"), f("CNA_WEIGHT_SIZE2", "WEIGHT_HEIGHT")
    kernels = f("CNA_WEIGHT_SIZE2", "WEIGHT_KERNELS")
    _require(kw >= 1 and kh >= 1 and kernels >= 1, f"CNA_WEIGHT_SIZE2: kernel {kw}x{kh} x {kernels} is empty")
    _require(not dw or kernels == 1, f"CNA_WEIGHT_SIZE2.WEIGHT_KERNELS={kernels}: depthwise uses 1")
    per_kernel = f("CNA_WEIGHT_SIZE1", "WEIGHT_BYTES_PER_KERNEL")
    _require(per_kernel == kw * kh * in_c, f"CNA_WEIGHT_SIZE1={per_kernel} != KW*KH*DATAIN_CHANNEL={kw * kh * in_c} "
             "(other weight layouts not modelled)")
    _require(f("CNA_WEIGHT_SIZE0", "WEIGHT_BYTES") == kernels * per_kernel,
             f"CNA_WEIGHT_SIZE0={r.get('CNA_WEIGHT_SIZE0')} != WEIGHT_KERNELS*WEIGHT_SIZE1={kernels * per_kernel}")
    # CBUF capacity
    dbank, wbank = f("CNA_CBUF_CON0", "DATA_BANK"), f("CNA_CBUF_CON0", "WEIGHT_BANK")
    entries = f("CNA_CBUF_CON1", "DATA_ENTRIES")
    _require(dbank >= 1 and wbank >= 1 and dbank + wbank <= CBUF_BANKS,
             f"CNA_CBUF_CON0: {dbank} data + {wbank} weight banks is not a split of the {CBUF_BANKS} CBUF banks")
    row_entries = _cdiv(in_w * in_c, CBUF_ENTRY_BYTES)  # Mesa programs DATA_ENTRIES = 2x this (unexplained)
    _require(entries >= row_entries, f"CNA_CBUF_CON1.DATA_ENTRIES={entries} cannot hold one input row "
             f"({in_w * in_c} bytes = {row_entries} entries)")
    _require(row_entries * in_h <= dbank * CBUF_BANK_ENTRIES,
             f"CBUF overflow: {in_h} input rows x {row_entries} entries > {dbank} data banks")
    _require(_cdiv(kernels * per_kernel, CBUF_ENTRY_BYTES) <= wbank * CBUF_BANK_ENTRIES,
             f"CBUF overflow: {kernels * per_kernel} weight bytes > {wbank} weight banks")
    # ---------------------------------------------------------------- CORE / output cube
    out_w, out_h = f("CNA_DATA_SIZE2", "DATAOUT_WIDTH"), f("CORE_DATAOUT_SIZE_0", "DATAOUT_HEIGHT") + 1
    _require(f("CORE_DATAOUT_SIZE_0", "DATAOUT_WIDTH") + 1 == out_w,
             "CORE_DATAOUT_SIZE_0.DATAOUT_WIDTH+1 disagrees with CNA_DATA_SIZE2.DATAOUT_WIDTH")
    _require(f("CNA_DATA_SIZE3", "DATAOUT_ATOMICS") == out_w * out_h,
             "CNA_DATA_SIZE3.DATAOUT_ATOMICS != output width x height")
    for reg, wf, hf in (("DPU_DATA_CUBE_WIDTH", "WIDTH", None), ("DPU_DATA_CUBE_HEIGHT", None, "HEIGHT"),
                        ("DPU_WDMA_SIZE_1", "WIDTH_WDMA", "HEIGHT_WDMA"),
                        ("DPU_RDMA_RDMA_DATA_CUBE_WIDTH", "WIDTH", None),
                        ("DPU_RDMA_RDMA_DATA_CUBE_HEIGHT", None, "HEIGHT")):
        if wf:
            _require(f(reg, wf) + 1 == out_w, f"{reg}.{wf}+1 disagrees with the output width {out_w}")
        if hf:
            _require(f(reg, hf) + 1 == out_h, f"{reg}.{hf}+1 disagrees with the output height {out_h}")
    ch = f("CORE_DATAOUT_SIZE_1", "DATAOUT_CHANNEL") + 1
    for reg, fld in (("DPU_DATA_CUBE_CHANNEL", "CHANNEL"), ("DPU_WDMA_SIZE_0", "CHANNEL_WDMA"),
                     ("DPU_RDMA_RDMA_DATA_CUBE_CHANNEL", "CHANNEL")):
        _require(f(reg, fld) + 1 == ch, f"{reg}.{fld}+1 disagrees with CORE_DATAOUT_SIZE_1 ({ch} channels)")
    out_c_real = f("DPU_DATA_CUBE_CHANNEL", "ORIG_CHANNEL") + 1
    _require(out_c_real <= ch, f"DPU_DATA_CUBE_CHANNEL.ORIG_CHANNEL+1={out_c_real} exceeds CHANNEL+1={ch}")
    _require(out_c_real <= (in_c if dw else kernels),
             f"{out_c_real} output channels but only {in_c if dw else kernels} kernels/channels")
    pad_bottom = (out_h - 1) * sy + kh - in_h - pad_top
    pad_right = (out_w - 1) * sx + kw - in_w - pad_left
    _require(pad_bottom <= 15 and pad_right <= 15 and (out_h - 1) * sy < in_h + pad_top
             and (out_w - 1) * sx < in_w + pad_left,
             f"output {out_w}x{out_h} implies bottom/right padding {pad_bottom}/{pad_right} outside the input")
    truncate = f("CORE_CLIP_TRUNCATE", "CLIP_TRUNCATE")
    _require(f("CORE_CLIP_TRUNCATE", "ROUND_TYPE") == 0, "CORE_CLIP_TRUNCATE.ROUND_TYPE=1 not modelled")
    # ---------------------------------------------------------------- DPU
    _require(r.get("DPU_DATA_FORMAT") == 0, f"DPU_DATA_FORMAT=0x{r.get('DPU_DATA_FORMAT'):x}: only int8 in/out "
             "with no shift overrides is modelled")
    _require(f("DPU_BS_CFG", "BS_BYPASS") == 0 and f("DPU_BS_CFG", "BS_MUL_PRELU") == 0,
             "DPU_BS_CFG: BS_BYPASS/BS_MUL_PRELU not modelled")
    bs_relu = f("DPU_BS_CFG", "BS_RELU_BYPASS") == 0
    bs_relux = r.sfield("DPU_BS_RELUX_CMP_VALUE", "BS_RELUX_CMP_DAT") if f("DPU_BS_CFG", "BS_RELUX_EN") else None
    if f("DPU_BS_CFG", "BS_ALU_BYPASS"):
        bs_alu = "bypass"
    else:
        algo = f("DPU_BS_CFG", "BS_ALU_ALGO")
        _require(algo == 2, f"DPU_BS_CFG.BS_ALU_ALGO={algo} not modelled (2 = add)")
        bs_alu = "stream" if f("DPU_BS_CFG", "BS_ALU_SRC") else "register"
    bs_mul = "bypass"
    if not f("DPU_BS_CFG", "BS_MUL_BYPASS"):
        _require(f("DPU_BS_MUL_CFG", "BS_TRUNCATE_SRC") == 0, "DPU_BS_MUL_CFG.BS_TRUNCATE_SRC not modelled")
        bs_mul = "stream" if f("DPU_BS_MUL_CFG", "BS_MUL_SRC") else "register"
    use = f("DPU_RDMA_RDMA_BRDMA_CFG", "BRDMA_DATA_USE")
    need = (1 if bs_alu == "stream" else 0) | (2 if bs_mul == "stream" else 0)
    _require(use == need, f"DPU_RDMA_RDMA_BRDMA_CFG.BRDMA_DATA_USE={use} but the BS stage needs {need} "
             "(bit 0 ALU operands, bit 1 MUL operands)")
    bs_record = 8 if use == 3 else 4
    _require(use != 2, "DPU_RDMA_RDMA_BRDMA_CFG.BRDMA_DATA_USE=2 (MUL-only stream) not modelled")
    if use == 3 and 0x5024 in r.written:
        n = r.get("DPU_RDMA_RDMA_UNKNOWN_5024") + 1
        _require(n == out_c_real, f"DPU_RDMA 0x5024 says {n} BS records, the cube has {out_c_real} channels")
    _require(r.get("DPU_BS_OW_OP") == 0 and f("DPU_BS_OW_CFG", "OW_SRC") == 0 and f("DPU_BS_OW_CFG", "OD_BYPASS") == 0,
             "DPU_BS_OW_OP/OW_CFG: a weight offset (asymmetric weights) is not modelled")
    bn_mul, bn_shift = None, 0
    if f("DPU_BN_CFG", "BN_BYPASS") == 0:
        bn = r.get("DPU_BN_CFG")
        _require(f("DPU_BN_CFG", "BN_ALU_BYPASS") == 1 and f("DPU_BN_CFG", "BN_MUL_BYPASS") == 0
                 and f("DPU_BN_CFG", "BN_RELU_BYPASS") == 1 and f("DPU_BN_CFG", "BN_RELUX_EN") == 0
                 and f("DPU_BN_CFG", "BN_MUL_PRELU") == 0 and f("DPU_BN_MUL_CFG", "BN_MUL_SRC") == 0
                 and f("DPU_BN_MUL_CFG", "BN_TRUNCATE_SRC") == 0,
                 f"DPU_BN_CFG=0x{bn:x}: only the BN MUL with a register operand (ALU and ReLU bypassed) is modelled")
        bn_mul = r.sfield("DPU_BN_MUL_CFG", "BN_MUL_OPERAND")
        bn_shift = f("DPU_BN_MUL_CFG", "BN_MUL_SHIFT_VALUE")
    ew_cfg = r.get("DPU_EW_CFG")
    ew_on = f("DPU_EW_CFG", "EW_BYPASS") == 0
    lut = ew_on and f("DPU_EW_CFG", "EW_LUT_BYPASS") == 0
    ew = ew_on and f("DPU_EW_CFG", "EW_OP_BYPASS") == 0  # an EW operand is read and combined
    ew_op, ew_truncate, ew_per_channel = "add", 0, False
    ew_relu = ew_relux = None
    ew_offset = ew_scale = ew_shift = 0
    ew_addr = ew_surf = 0
    erdma_off = f("DPU_RDMA_RDMA_ERDMA_CFG", "ERDMA_DISABLE") == 1
    if ew:
        ew_op = "mul" if f("DPU_EW_CFG", "EW_OP_TYPE") == 1 else "add"
        _require(f("DPU_EW_CFG", "EW_OP_SRC") == 1
                 and f("DPU_EW_CFG", "EW_ALU_ALGO") == (0 if ew_op == "mul" else 2)
                 and f("DPU_EW_CFG", "EW_OP_CVT_BYPASS") == 0 and f("DPU_EW_CFG", "EW_CVT_ROUND") == 0
                 and f("DPU_EW_CFG", "EW_BINARY_EN") == 0 and f("DPU_EW_CFG", "EW_MUL_PRELU") == 0,
                 f"DPU_EW_CFG=0x{ew_cfg:x}: only an int8 operand from memory, converted and added (EW_OP_TYPE=0, "
                 "ALU_ALGO=2) or multiplied (EW_OP_TYPE=1, ALU_ALGO=0), is modelled")
        mode = f("DPU_RDMA_RDMA_ERDMA_CFG", "ERDMA_DATA_MODE")
        _require(not erdma_off and f("DPU_RDMA_RDMA_ERDMA_CFG", "ERDMA_DATA_SIZE") == 1 and mode in (0, 1)
                 and f("DPU_EW_CFG", "EW_DATA_MODE") == mode,
                 "DPU_RDMA_RDMA_ERDMA_CFG must enable the int8 EW operand read for the EW stage, per element "
                 "(ERDMA_DATA_MODE=1) or per channel (0), with the same DPU_EW_CFG.EW_DATA_MODE")
        ew_per_channel = mode == 0
        ew_truncate = f("DPU_EW_CVT_SCALE_VALUE", "EW_TRUNCATE")
        _require(ew_op == "mul" or ew_truncate == 0,
                 "DPU_EW_CVT_SCALE_VALUE.EW_TRUNCATE is the EW MUL's truncate: it must be 0 for an add")
        ew_relu = f("DPU_EW_CFG", "EW_RELU_BYPASS") == 0
        ew_relux = r.sfield("DPU_EW_RELUX_CMP_VALUE", "EW_RELUX_CMP_DAT") if f("DPU_EW_CFG", "EW_RELUX_EN") else None
        ew_offset = r.sfield("DPU_EW_CVT_OFFSET_VALUE", "EW_OP_CVT_OFFSET")
        ew_scale = f("DPU_EW_CVT_SCALE_VALUE", "EW_OP_CVT_SCALE")
        ew_shift = f("DPU_EW_CVT_SCALE_VALUE", "EW_OP_CVT_SHIFT")
        ew_addr = f("DPU_RDMA_RDMA_EW_BASE_ADDR", "EW_BASE_ADDR")
        ew_surf = ATOM * f("DPU_RDMA_RDMA_EW_SURF_STRIDE", "EW_SURF_STRIDE")
        _require(_cdiv(out_c_real, ATOM) == 1 or ew_surf >= (ATOM if ew_per_channel else out_w * out_h * ATOM),
                 "DPU_RDMA_RDMA_EW_SURF_STRIDE makes EW operand surfaces overlap")
    else:
        _require(erdma_off, "DPU_RDMA_RDMA_ERDMA_CFG reads an EW operand but DPU_EW_CFG bypasses the EW operand")
        _require(not ew_on or (lut and f("DPU_EW_CFG", "EW_RELU_BYPASS") == 1 and f("DPU_EW_CFG", "EW_RELUX_EN") == 0),
                 f"DPU_EW_CFG=0x{ew_cfg:x}: an EW stage without operand is modelled only as the LUT (ReLU bypassed)")
    if lut:
        _require(f("DPU_EW_CFG", "EW_RELU_BYPASS") == 1 and f("DPU_EW_CFG", "EW_RELUX_EN") == 0,
                 "DPU_EW_CFG: ReLU together with the LUT is not modelled (order unknown)")
    rfm = "DPU_RDMA_RDMA_FEATURE_MODE_CFG"
    _require(f(rfm, "MRDMA_DISABLE") == 1 and f(rfm, "COMB_USE") == 0 and f(rfm, "CONV_MODE") == (3 if dw else 0)
             and f(rfm, "FLYING_MODE") == 0 and f(rfm, "IN_PRECISION") == 0 and f(rfm, "PROC_PRECISION") == 0,
             f"{rfm}=0x{r.get(rfm):x}: only MRDMA disabled, COMB_USE=0, matching CONV_MODE is modelled")
    _require(r.get("DPU_RDMA_RDMA_NRDMA_CFG") == 0, "DPU_RDMA_RDMA_NRDMA_CFG: BN operand stream not modelled")
    lut_start = decode_lut(r) if lut else 0
    _require(lut or r.get("DPU_LUT_CFG") == 0, "DPU_LUT_CFG is set but DPU_EW_CFG bypasses the LUT")
    shift_reg = "DPU_OUT_CVT_SHIFT"
    _require(f(shift_reg, "CVT_TYPE") == 0 and f(shift_reg, "CVT_ROUND") == 0 and f(shift_reg, "MINUS_EXP") == 0,
             f"{shift_reg}=0x{r.get(shift_reg):x}: CVT_TYPE/CVT_ROUND/MINUS_EXP not modelled")
    _require(f("DPU_OUT_CVT_SCALE", "FP32TOFP16_EN") == 0, "DPU_OUT_CVT_SCALE.FP32TOFP16_EN not modelled")
    out_surf = ATOM * f("DPU_DST_SURF_STRIDE", "DST_SURF_STRIDE")
    _require(_cdiv(out_c_real, ATOM) == 1 or out_surf >= out_w * out_h * ATOM,
             f"DPU_DST_SURF_STRIDE ({out_surf} bytes) makes output surfaces overlap")
    return ConvJob(
        depthwise=dw, in_w=in_w, in_h=in_h, in_c=in_c, in_c_real=in_c_real,
        in_addr=f("CNA_FEATURE_DATA_ADDR", "FEATURE_BASE_ADDR"), line_bytes=line_bytes, surf_bytes=surf_bytes,
        pad_top=pad_top, pad_left=pad_left, pad_value=pad_value, sx=sx, sy=sy, kw=kw, kh=kh, kernels=kernels,
        weight_addr=f("CNA_DCOMP_ADDR0", "DECOMPRESS_ADDR0"), out_w=out_w, out_h=out_h, out_c_real=out_c_real,
        out_addr=f("DPU_DST_BASE_ADDR", "DST_BASE_ADDR"), out_surf_bytes=out_surf, truncate=truncate,
        bs_alu=bs_alu, bs_alu_operand=r.sfield("DPU_BS_ALU_CFG", "BS_ALU_OPERAND"),
        bs_mul=bs_mul, bs_mul_operand=r.sfield("DPU_BS_MUL_CFG", "BS_MUL_OPERAND"),
        bs_mul_shift=f("DPU_BS_MUL_CFG", "BS_MUL_SHIFT_VALUE"), bs_relu=bs_relu or bs_relux is not None,
        bs_relux=bs_relux, bs_addr=f("DPU_RDMA_RDMA_BS_BASE_ADDR", "BS_BASE_ADDR"), bs_record=bs_record,
        ew=ew, ew_addr=ew_addr, ew_surf_bytes=ew_surf, ew_offset=ew_offset, ew_scale=ew_scale, ew_shift=ew_shift,
        ew_relu=bool(ew_relu) or ew_relux is not None, ew_relux=ew_relux,
        out_scale=f("DPU_OUT_CVT_SCALE", "OUT_CVT_SCALE"), out_shift=f(shift_reg, "OUT_CVT_SHIFT"),
        out_offset=r.sfield("DPU_OUT_CVT_OFFSET", "OUT_CVT_OFFSET"), bn_mul=bn_mul, bn_shift=bn_shift, ew_op=ew_op,
        ew_truncate=ew_truncate, ew_per_channel=ew_per_channel, lut=lut, lut_start=lut_start)


def read_weights(mem: Memory, j: ConvJob) -> np.ndarray:
    """Weights in Mesa's packed layout -> (K, C, KH, KW) int64 (depthwise: (C, 1, KH, KW)).

    Layout (rkt_coefs.c): blocks of up to 32 kernels; inside a block, groups of up to G input channels
    (G = 32, depthwise 64), each group stored ``[KH][KW][kernel][channel]``.
    """
    raw = mem.read(j.weight_addr, j.kernels * j.kh * j.kw * j.in_c, "CNA weight read").view(np.int8)
    g = 64 if j.depthwise else 32
    k_total = j.kernels
    out = np.zeros((k_total, j.in_c, j.kh, j.kw), dtype=np.int64)
    pos = 0
    for k0 in range(0, k_total, KERNEL_GROUP):
        nk = min(KERNEL_GROUP, k_total - k0)
        for c0 in range(0, j.in_c, g):
            nc = min(g, j.in_c - c0)
            n = j.kh * j.kw * nk * nc
            blk = raw[pos:pos + n].reshape(j.kh, j.kw, nk, nc).astype(np.int64)
            out[k0:k0 + nk, c0:c0 + nc] = blk.transpose(2, 3, 0, 1)
            pos += n
    if j.depthwise:
        return out[0][:, None]  # (C, 1, KH, KW)
    return out


def read_bs_stream(mem: Memory, j: ConvJob, lanes: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-lane ALU and MUL operands (lanes past the real channels: 0)."""
    alu = mul = None
    if j.bs_alu == "register":
        alu = np.full(lanes, j.bs_alu_operand, dtype=np.int64)
    if j.bs_mul == "register":
        mul = np.full(lanes, j.bs_mul_operand, dtype=np.int64)
    if j.bs_alu == "stream" or j.bs_mul == "stream":
        raw = mem.read(j.bs_addr, j.out_c_real * j.bs_record, "DPU BS stream read")
        if j.bs_record == 4:
            a = raw.view("<i4").astype(np.int64)
            alu = np.zeros(lanes, np.int64)
            alu[: j.out_c_real] = a
        else:
            rec = raw.view(np.dtype([("bias", "<i4"), ("ow", "<i2"), ("mul", "<i2")]))
            _require(bool(np.all(rec["ow"] == 0)), "BS stream: per-channel weight offsets (ow != 0) not modelled")
            alu = np.zeros(lanes, np.int64)
            mul = np.zeros(lanes, np.int64)
            alu[: j.out_c_real] = rec["bias"]
            mul[: j.out_c_real] = rec["mul"]
    if j.bs_alu == "bypass":
        alu = None
    if j.bs_mul == "bypass":
        mul = None
    return alu, mul


def run_conv(regs: RegisterFile, mem: Memory, rounding: nm.RoundingModel, lut_ram: LutRam | None = None) -> ConvJob:
    """Decode, read operands, compute, write the output. Returns the decoded job (for traces)."""
    j = decode_conv(regs)
    lo_table = None
    if j.lut:
        _require(lut_ram is not None, "DPU_EW_CFG enables the LUT but this core has no LUT RAM")
        lo_table = lut_ram.lo_table("DPU LUT")
    groups_in = j.in_c // ATOM
    raw = mem.read_surfaces(j.in_addr, groups_in, j.in_h, j.line_bytes, j.in_w * ATOM, j.surf_bytes,
                            "CNA feature read")
    x = raw.view(np.int8).reshape(groups_in, j.in_h, j.in_w, ATOM).transpose(0, 3, 1, 2)
    x = x.reshape(j.in_c, j.in_h, j.in_w)
    w = read_weights(mem, j)
    groups_out = _cdiv(j.out_c_real, ATOM)
    lanes = groups_out * ATOM
    # Output lanes: real channels plus the padding of the last group (computed with zero weights/operands).
    if j.depthwise:  # one kernel per channel: lanes are channels (lanes <= DATAIN_CHANNEL)
        w = w[:lanes].copy()
        x = x[:lanes]
    else:
        wz = np.zeros((lanes,) + w.shape[1:], np.int64)
        n = min(lanes, w.shape[0])
        wz[:n] = w[:n]
        w = wz
    w[j.out_c_real:] = 0
    xp = nm.pad_input(x, j.pad_top, j.pad_left, j.out_h, j.out_w, j.kh, j.kw, j.sy, j.sx, j.pad_value)
    acc = nm.conv_mac(xp, w, j.sy, j.sx, j.out_h, j.out_w, j.depthwise)
    v = nm.clip_truncate(acc, j.truncate, rounding.truncate)
    alu, mul = read_bs_stream(mem, j, lanes)
    v = nm.bs_stage(v, alu, mul, j.bs_mul_shift, j.bs_relu, j.bs_relux, rounding)
    if j.bn_mul is not None:
        v = nm.bs_stage(v, None, j.bn_mul, j.bn_shift, rounding=rounding)
    if j.ew:
        eh, ew_ = (1, 1) if j.ew_per_channel else (j.out_h, j.out_w)  # per channel: broadcast over H x W
        e = mem.read_surfaces(j.ew_addr, groups_out, eh, ew_ * ATOM, ew_ * ATOM, j.ew_surf_bytes,
                              "DPU EW operand read")
        e = e.view(np.int8).reshape(groups_out, eh, ew_, ATOM).transpose(0, 3, 1, 2)
        e = e.reshape(lanes, eh, ew_)
        if j.ew_op == "mul":
            v = nm.ew_mul_stage(v, e, j.ew_offset, j.ew_scale, j.ew_shift, j.ew_truncate, j.ew_relu, j.ew_relux,
                                rounding)
        else:
            v = nm.ew_stage(v, e, j.ew_offset, j.ew_scale, j.ew_shift, j.ew_relu, j.ew_relux, rounding)
    if lo_table is not None:
        v = nm.lut_lo_stage(v, lo_table, j.lut_start)
    y = nm.out_cvt(v, j.out_scale, j.out_shift, j.out_offset, rounding).astype(np.int8)
    out = y.reshape(groups_out, ATOM, j.out_h, j.out_w).transpose(0, 2, 3, 1).reshape(groups_out, j.out_h, -1)
    mem.write_surfaces(j.out_addr, out.view(np.uint8), j.out_w * ATOM, j.out_surf_bytes, "DPU output write")
    return j
