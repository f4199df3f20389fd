"""Register code generation for one RK3588 conv task: ``emit_conv(task) -> [(register, value), ...]``.

The order and the fixed values follow Mesa's ``fill_first_regcmd`` (rkt_regcmd.c @5b829658; the table in
docs/rk3588-hardware.md); every value is packed field by field with ``registers.pack`` (CompileError when a
value does not fit). Where opennpu departs from Mesa it says so below and in docs/rk3588-arithmetic.md:

* requantization operands come from arith.compute_requant_params (no hard-coded scale tables);
* the input pad value is the input zero point (Mesa's special cases 0xffff8080 / 0x0b0b are not used);
* CNA_DMA_CON1/CON2 encode byte strides as ``LINE = line/4``, ``SURF = surf/16 - LINE`` (our reading of Mesa's
  ``W*16/4`` and ``line*(H/4 - 1)``; equal to Mesa's values for dense maps of >= 4 rows);
* fused ReLU/ReLU6 use the BS (or EW) ReLU/ReLUx units (Mesa bypasses them);
* per-channel scales use the BS MUL with an 8-byte BS stream record (iav [3P]) and DPU_RDMA 0x5024 = records-1;
* a fused add reads its whole operand through the ERDMA (EW_BASE_ADDR, MRDMA disabled), where Mesa points
  SRC_BASE_ADDR at the operand and EW_BASE_ADDR one surface further with COMB_USE=5 (unexplained);
* LUT activations: BN MUL (register operand) + EW-stage LUT with the LO table uploaded in the task
  (:func:`emit_lut`); element-wise Mul: the EW op with EW_OP_TYPE=1 (our reading [I]).
"""

from __future__ import annotations

from collections.abc import Sequence

from opennpu.errors import CompileError
from opennpu.runtime.emulator import Emulator, RegisterSpec
from opennpu.runtime.emulator.npu_math import DEFAULT_ROUNDING, LUT_LO_ENTRIES, RoundingModel

from . import regcmd
from .arith import LutStage
from .registers import BLOCKS, pack, twos
from .task import ATOM, ConvTask

LE_NEVER_HITS = 0x7FFFFFFF  # LUT_LE_START/END: INT32_MAX, every input underflows the LE table


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def cna_dma_strides(task: ConvTask) -> tuple[int, int]:
    """(CNA_DMA_CON1.LINE_STRIDE, CNA_DMA_CON2.SURF_STRIDE) for the task's byte strides."""
    line = task.input_line_stride // 4
    surf = task.input_surf_stride // ATOM - line
    if _cdiv(task.in_channels_aligned, ATOM) == 1:
        surf = max(surf, 0)  # one surface: the stride is never used
    return line, surf


def emit_conv(task: ConvTask) -> list[tuple[str, int]]:
    """The register writes of one conv task, in Mesa's order (the PC tail is added by regcmd.link)."""
    g, r = task.geometry, task.requant
    sy, sx = g.stride
    dw = g.depthwise
    out: list[tuple[str, int]] = []

    def w(name: str, value: int | None = None, **fields: int) -> None:
        out.append((name, pack(name, **fields) if value is None else value))

    con0 = pack("CNA_CBUF_CON0", WEIGHT_BANK=task.weight_banks, DATA_BANK=task.data_banks,
                WEIGHT_REUSE=int(task.weight_reuse))
    con1 = pack("CNA_CONV_CON1", CONV_MODE=3 if dw else 0)
    pp = dict(POINTER_PP_MODE=1, EXECUTER_PP_EN=1, POINTER_PP_EN=1)
    w("CNA_CBUF_CON0", con0)
    w("CNA_DCOMP_REGNUM", 0)
    w("CNA_DCOMP_CTRL", 0)
    w("CNA_CONV_CON1", con1)
    w("DPU_S_POINTER", **pp)
    w("DPU_RDMA_RDMA_S_POINTER", **pp)
    w("CNA_CONV_CON1", con1)
    w("CNA_CONV_CON2", FEATURE_GRAINS=50 + sy + 1)  # Mesa: "Magic: Seems to pass the most tests"
    w("CNA_CONV_CON3", CONV_X_STRIDE=sx, CONV_Y_STRIDE=sy)
    w("CNA_DATA_SIZE0", DATAIN_WIDTH=g.in_w, DATAIN_HEIGHT=g.in_h)
    w("CNA_DATA_SIZE1", DATAIN_CHANNEL_REAL=g.in_c - 1, DATAIN_CHANNEL=task.in_channels_aligned)
    w("CNA_DATA_SIZE2", DATAOUT_WIDTH=g.out_w)
    w("CNA_DATA_SIZE3", DATAOUT_ATOMICS=g.out_w * g.out_h)
    w("CNA_WEIGHT_SIZE0", WEIGHT_BYTES=task.weight_bytes)
    w("CNA_WEIGHT_SIZE1", WEIGHT_BYTES_PER_KERNEL=task.weight_bytes_per_kernel)
    w("CNA_WEIGHT_SIZE2", WEIGHT_WIDTH=g.kw, WEIGHT_HEIGHT=g.kh, WEIGHT_KERNELS=task.weight_kernels)
    w("CNA_CBUF_CON0", con0)
    w("CNA_CBUF_CON1", DATA_ENTRIES=task.data_entries)
    w("CNA_CVT_CON0", DATA_SIGN=1, CVT_TYPE=1, CVT_BYPASS=1)  # signed int8 input, convert bypassed
    w("CNA_CVT_CON1", CVT_SCALE0=1)
    w("CNA_CVT_CON2", CVT_SCALE1=1)
    w("CNA_CVT_CON3", CVT_SCALE2=1)
    w("CNA_CVT_CON4", CVT_SCALE3=1)
    w("CNA_FC_CON0", 0)
    w("CNA_FC_CON1", 0)
    w("CNA_PAD_CON0", PAD_LEFT=g.pads[1], PAD_TOP=g.pads[0])
    w("CNA_FEATURE_DATA_ADDR", FEATURE_BASE_ADDR=task.input_addr)
    w("CNA_FC_CON2", 0)
    w("CNA_DMA_CON0", WEIGHT_BURST_LEN=15, DATA_BURST_LEN=15)
    line, surf = cna_dma_strides(task)
    w("CNA_DMA_CON1", LINE_STRIDE=line)
    w("CNA_DMA_CON2", SURF_STRIDE=surf)
    w("CNA_FC_DATA_SIZE0", DMA_WIDTH=g.in_w, DMA_HEIGHT=g.in_h)
    w("CNA_FC_DATA_SIZE1", DMA_CHANNEL=task.in_channels_aligned)
    w("CNA_DCOMP_CTRL", 0)
    w("CNA_DCOMP_REGNUM", 0)
    w("CNA_DCOMP_ADDR0", DECOMPRESS_ADDR0=task.weight_addr)
    for i in range(16):
        w(f"CNA_DCOMP_AMOUNT{i}", 0)
    w("CNA_CVT_CON5", 0)
    w("CNA_PAD_CON1", PAD_VALUE=twos(r.input_zero_point, 32))

    w("CORE_MISC_CFG", QD_EN=1, DW_EN=int(dw))
    w("CORE_DATAOUT_SIZE_0", DATAOUT_HEIGHT=g.out_h - 1, DATAOUT_WIDTH=g.out_w - 1)
    w("CORE_DATAOUT_SIZE_1", DATAOUT_CHANNEL=task.out_channels_aligned - 1)
    w("CORE_CLIP_TRUNCATE", CLIP_TRUNCATE=r.truncate_bits)
    w("CORE_UNKNOWN_3030", 0)

    w("DPU_FEATURE_MODE_CFG", BURST_LEN=15, OUTPUT_MODE=2, CONV_MODE=3 if dw else 0)
    w("DPU_DATA_FORMAT", 0)
    w("DPU_OFFSET_PEND", 0)
    w("DPU_DST_BASE_ADDR", DST_BASE_ADDR=task.output_addr)
    w("DPU_DST_SURF_STRIDE", DST_SURF_STRIDE=task.output_surf_stride // ATOM)
    w("DPU_DATA_CUBE_WIDTH", WIDTH=g.out_w - 1)
    w("DPU_DATA_CUBE_HEIGHT", HEIGHT=g.out_h - 1)
    w("DPU_DATA_CUBE_NOTCH_ADDR", 0)
    w("DPU_DATA_CUBE_CHANNEL", ORIG_CHANNEL=g.out_c - 1, CHANNEL=task.out_channels_aligned - 1)

    ew = r.ew
    bs_relu = r.relu and ew is None
    bs_relux = r.relux is not None and ew is None
    w("DPU_BS_CFG", BS_ALU_ALGO=2, BS_ALU_SRC=1, BS_RELU_BYPASS=int(not bs_relu), BS_RELUX_EN=int(bs_relux),
      BS_MUL_BYPASS=int(not r.per_channel))
    w("DPU_BS_ALU_CFG", 0)
    if r.per_channel:
        w("DPU_BS_MUL_CFG", BS_MUL_SHIFT_VALUE=r.mul_shift, BS_MUL_SRC=1)
    else:
        w("DPU_BS_MUL_CFG", 0)
    w("DPU_BS_RELUX_CMP_VALUE", BS_RELUX_CMP_DAT=twos(r.relux, 32) if bs_relux else 0)
    size_e = 3 if dw else 1
    w("DPU_BS_OW_CFG", SIZE_E_2=size_e, SIZE_E_1=size_e, SIZE_E_0=size_e)
    w("DPU_BS_OW_OP", OW_OP=0)  # symmetric int8 weights: 0x80 - (wzp + 0x80) = 0
    w("DPU_WDMA_SIZE_0", CHANNEL_WDMA=task.out_channels_aligned - 1)
    w("DPU_WDMA_SIZE_1", HEIGHT_WDMA=g.out_h - 1, WIDTH_WDMA=g.out_w - 1)
    lut = r.lut
    if lut is not None:  # BN MUL with a register operand: requantize to the LUT's int8 input domain
        w("DPU_BN_CFG", BN_RELU_BYPASS=1, BN_ALU_BYPASS=1)
        w("DPU_BN_ALU_CFG", 0)
        w("DPU_BN_MUL_CFG", BN_MUL_OPERAND=lut.bn_mul, BN_MUL_SHIFT_VALUE=lut.bn_shift)
    else:
        w("DPU_BN_CFG", BN_RELU_BYPASS=1, BN_MUL_BYPASS=1, BN_ALU_BYPASS=1, BN_BYPASS=1)
        w("DPU_BN_ALU_CFG", 0)
        w("DPU_BN_MUL_CFG", 0)
    w("DPU_BN_RELUX_CMP_VALUE", 0)
    if ew is not None:
        mul = ew.op == "mul"
        mode = 0 if ew.per_channel else 1  # NVDLA ERDMA_DATA_MODE PER_KERNEL=0, PER_ELEMENT=1 [R]; EW_DATA_MODE [I]
        w("DPU_EW_CFG", EW_CVT_TYPE=1, EW_DATA_MODE=mode, EDATA_SIZE=1, EW_ALU_ALGO=0 if mul else 2,
          EW_RELU_BYPASS=int(not r.relu), EW_RELUX_EN=int(r.relux is not None), EW_LUT_BYPASS=int(lut is None),
          EW_OP_SRC=1, EW_OP_TYPE=int(mul))
        w("DPU_EW_CVT_OFFSET_VALUE", EW_OP_CVT_OFFSET=twos(ew.offset, 32))
        w("DPU_EW_CVT_SCALE_VALUE", EW_TRUNCATE=ew.truncate, EW_OP_CVT_SHIFT=ew.shift, EW_OP_CVT_SCALE=ew.scale)
        w("DPU_EW_RELUX_CMP_VALUE", EW_RELUX_CMP_DAT=twos(r.relux, 32) if r.relux is not None else 0)
    elif lut is not None:  # EW stage on, its operand off, the LUT on
        w("DPU_EW_CFG", EW_RELU_BYPASS=1, EW_OP_CVT_BYPASS=1, EW_OP_BYPASS=1)
        w("DPU_EW_CVT_OFFSET_VALUE", 0)
        w("DPU_EW_CVT_SCALE_VALUE", EW_OP_CVT_SCALE=1)
        w("DPU_EW_RELUX_CMP_VALUE", 0)
    else:
        w("DPU_EW_CFG", EW_RELU_BYPASS=1, EW_OP_CVT_BYPASS=1, EW_LUT_BYPASS=1, EW_OP_BYPASS=1, EW_BYPASS=1)
        w("DPU_EW_CVT_OFFSET_VALUE", 0)
        w("DPU_EW_CVT_SCALE_VALUE", EW_OP_CVT_SCALE=1)
        w("DPU_EW_RELUX_CMP_VALUE", 0)
    if lut is not None and (r.out_scale, r.out_shift, r.out_offset) != (1, 0, 0):
        raise CompileError(f"task {task.name!r}: a LUT activation needs the identity OUT_CVT (1, 0, 0), got "
                           f"({r.out_scale}, {r.out_shift}, {r.out_offset})")
    w("DPU_OUT_CVT_OFFSET", OUT_CVT_OFFSET=twos(r.out_offset, 32))
    w("DPU_OUT_CVT_SCALE", OUT_CVT_SCALE=r.out_scale)
    w("DPU_OUT_CVT_SHIFT", OUT_CVT_SHIFT=r.out_shift)
    for i in range(8):
        w(f"DPU_EW_OP_VALUE_{i}", 0)
    w("DPU_SURFACE_ADD", SURF_ADD=g.out_w * g.out_h * 2 * (2 if dw else 1))  # Mesa's value, meaning unknown
    w("DPU_UNKNOWN_40C4", 0)
    if lut is not None:
        out.extend(emit_lut(lut))
    else:
        for name in ("LUT_ACCESS_CFG", "LUT_ACCESS_DATA", "LUT_CFG", "LUT_INFO", "LUT_LE_START", "LUT_LE_END",
                     "LUT_LO_START", "LUT_LO_END", "LUT_LE_SLOPE_SCALE", "LUT_LE_SLOPE_SHIFT", "LUT_LO_SLOPE_SCALE",
                     "LUT_LO_SLOPE_SHIFT"):
            w(f"DPU_{name}", 0)

    w("DPU_RDMA_RDMA_DATA_CUBE_WIDTH", WIDTH=g.out_w - 1)
    w("DPU_RDMA_RDMA_DATA_CUBE_HEIGHT", HEIGHT=g.out_h - 1)
    w("DPU_RDMA_RDMA_DATA_CUBE_CHANNEL", CHANNEL=task.out_channels_aligned - 1)
    w("DPU_RDMA_RDMA_SRC_BASE_ADDR", 0)
    w("DPU_RDMA_RDMA_BRDMA_CFG", BRDMA_DATA_USE=3 if r.per_channel else 1)
    w("DPU_RDMA_RDMA_BS_BASE_ADDR", BS_BASE_ADDR=task.bias_addr)
    if r.per_channel:
        w("DPU_RDMA_RDMA_UNKNOWN_5024", g.out_c - 1)  # iav (RK3568): BS stream length in 8-byte words - 1
    w("DPU_RDMA_RDMA_NRDMA_CFG", 0)
    w("DPU_RDMA_RDMA_BN_BASE_ADDR", 0)
    if ew is not None:
        assert task.ew_addr is not None
        w("DPU_RDMA_RDMA_ERDMA_CFG", ERDMA_DATA_MODE=0 if ew.per_channel else 1, ERDMA_DATA_SIZE=1)
        w("DPU_RDMA_RDMA_EW_BASE_ADDR", EW_BASE_ADDR=task.ew_addr)
        w("DPU_RDMA_RDMA_EW_SURF_STRIDE", EW_SURF_STRIDE=task.ew_surf_stride // ATOM)
    else:
        w("DPU_RDMA_RDMA_ERDMA_CFG", ERDMA_DISABLE=1)
        w("DPU_RDMA_RDMA_EW_BASE_ADDR", 0)
        w("DPU_RDMA_RDMA_EW_SURF_STRIDE", 0)
    w("DPU_RDMA_RDMA_FEATURE_MODE_CFG", BURST_LEN=15, MRDMA_DISABLE=1, CONV_MODE=3 if dw else 0)
    w("DPU_RDMA_RDMA_SRC_DMA_CFG", 0)
    w("DPU_RDMA_RDMA_SURF_NOTCH", 0)
    w("DPU_RDMA_RDMA_PAD_CFG", 0)
    w("DPU_RDMA_RDMA_WEIGHT", E_WEIGHT=1, N_WEIGHT=1, B_WEIGHT=1, M_WEIGHT=1)
    w("DPU_RDMA_RDMA_EW_SURF_NOTCH", 0)
    return out


def emit_lut(lut: LutStage) -> list[tuple[str, int]]:
    """LUT registers and the LO table upload (docs/rk3588-arithmetic.md "LUT activations").

    NVDLA's upload protocol (nvdla/doc lut-programming.rst [R]): one LUT_ACCESS_CFG write (table id, write
    access, start address), then one LUT_ACCESS_DATA write per entry with the address auto-incrementing. NVDLA
    enums: LUT_TABLE_ID LE=0 / LO=1, LUT_ACCESS_TYPE READ=0 / WRITE=1 [R, nvdla hw manual]. LUT_CFG: the three
    priority bits select the LO table on every hit/miss combination (NVDLA's selection logic), LUT_LO_LE_MUX=2
    as iav/rk3568-npu programs it for SiLU (LUT_CFG 0x28 there, meaning of the field unknown [3P]).
    Table size 513 (npu_math.LUT_LO_ENTRIES, allbilly/rk3588 examples/silu.py [3P]). LO linear mode with
    LUT_LO_INDEX_SELECT=0 (no interpolation fraction), LO_END = LO_START + 512 and zero under/overflow slopes:
    out-of-range inputs give LO[0] / LO[512] (saturation). LUT_LE_START = INT32_MAX: every input underflows the
    LE table (NVDLA: ``x <= START``), so it never hits and the priorities pick LO on every combination.
    """
    if len(lut.lo_table) != LUT_LO_ENTRIES:
        raise CompileError(f"LUT LO table has {len(lut.lo_table)} entries, the DPU's has {LUT_LO_ENTRIES}")
    out: list[tuple[str, int]] = [("DPU_LUT_ACCESS_CFG", pack("DPU_LUT_ACCESS_CFG", LUT_ACCESS_TYPE=1, LUT_TABLE_ID=1,
                                                               LUT_ADDR=0))]
    for v in lut.lo_table:
        if not -(1 << 15) <= int(v) < (1 << 15):
            raise CompileError(f"LUT entry {v} does not fit 16 signed bits")
        out.append(("DPU_LUT_ACCESS_DATA", pack("DPU_LUT_ACCESS_DATA", LUT_ACCESS_DATA=twos(int(v), 16))))
    out += [
        ("DPU_LUT_CFG", pack("DPU_LUT_CFG", LUT_HYBRID_PRIORITY=1, LUT_OFLOW_PRIORITY=1, LUT_UFLOW_PRIORITY=1,
                             LUT_LO_LE_MUX=2)),
        ("DPU_LUT_INFO", pack("DPU_LUT_INFO", LUT_LO_INDEX_SELECT=0, LUT_LE_INDEX_SELECT=0)),
        ("DPU_LUT_LE_START", LE_NEVER_HITS), ("DPU_LUT_LE_END", LE_NEVER_HITS),
        ("DPU_LUT_LO_START", twos(lut.lo_start, 32)),
        ("DPU_LUT_LO_END", twos(lut.lo_start + LUT_LO_ENTRIES - 1, 32)),
        ("DPU_LUT_LE_SLOPE_SCALE", 0), ("DPU_LUT_LE_SLOPE_SHIFT", 0),
        ("DPU_LUT_LO_SLOPE_SCALE", 0), ("DPU_LUT_LO_SLOPE_SHIFT", 0),
    ]
    return out


def regcmd_task(name: str, writes: Sequence[tuple[str, int]]) -> regcmd.Task:
    """A regcmd.Task (body only; regcmd.link adds the chaining tail) from a task's register writes."""
    t = regcmd.Task(name=name)
    for reg, value in writes:
        t.write(reg, value)
    return t


def conv_regcmd_task(task: ConvTask) -> regcmd.Task:
    """The regcmd.Task of one conv task."""
    return regcmd_task(task.name, emit_conv(task))


def link_conv_tasks(tasks: Sequence[ConvTask], base_addr: int) -> tuple[bytes, list[regcmd.Placement]]:
    """Emit and chain several conv tasks into one regcmd buffer at ``base_addr`` (regcmd.link)."""
    return regcmd.link([conv_regcmd_task(t) for t in tasks], base_addr)


def register_spec() -> RegisterSpec:
    """The RK3588 register table as the plain data the emulator takes (it never imports the target)."""
    return RegisterSpec.from_blocks(BLOCKS.values())


def make_emulator(memory_size: int, rounding: RoundingModel = DEFAULT_ROUNDING) -> Emulator:
    """An emulator wired with the RK3588 register table."""
    return Emulator(memory_size, register_spec(), rounding=rounding)
