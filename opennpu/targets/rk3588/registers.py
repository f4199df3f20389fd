"""RK3588 NPU register table: every block, register and bit field of Mesa's rocket ``registers.xml``.

Source of the table: ``bminor/mesa-mesa`` ``src/gallium/drivers/rocket/registers.xml`` at commit
5b829658f74f8108fef7decf3fae5d317c85fd01 (a rules-ng XML database written by Tomeu Vizoso from the TRM; MIT).
The literal ``_XML_TABLE`` below was generated once from that file by a small script (parse every
``<domain>/<reg32>/<bitfield>``; ``pos=N`` becomes ``low=high=N``; fields sorted high to low); the XML
itself is not part of opennpu. Every register of the XML is 32 bits wide and its fields cover all 32 bits
without overlap (checked by the tests).

Extra, *undocumented* registers (not in the XML) are listed in ``_EXTRA`` with their sources: Mesa's
``rkt_regcmd.c`` writes CORE 0x3030 and DPU 0x40C4 with ``emit_raw`` (value 0), and mtx512/rk3588-npu
``include/npu_hw.h`` @7da9561f names them ``CORE_3030`` ("Doesn't seem to be documented") and ``DPU_40C4``.

Block ids (``<enum name="target">`` in the XML; also ``BLOCK_*`` in npu_hw.h): PC 0x100, CNA 0x200,
CORE 0x800, DPU 0x1000, DPU_RDMA 0x2000, PPU 0x4000, PPU_RDMA 0x8000, DDMA 0x10000, SDMA 0x20000,
GLOBAL 0x40000. A regcmd word addresses a block with ``target = block_id | 0x1`` (Mesa ``rkt_regcmd.c``
``emit()``: ``rkt_get_target(reg) + 0x1``; npu_hw.h ``PC_OP_01`` "reg"), e.g. CNA = 0x0201. The target is a
16-bit field, so DDMA/SDMA/GLOBAL (ids above 0xFFFF) cannot be written through regcmd words; they are kept
in the table for MMIO-level modelling. Two special targets are not blocks: 0x0041 and 0x0081 (see regcmd.py).

Register names are ``<BLOCK>_<REG>`` as in Mesa's generated header (``REG_CNA_CONV_CON1``,
``REG_DPU_RDMA_RDMA_S_POINTER``); field names are the XML's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from opennpu.errors import CompileError


@dataclass(frozen=True)
class Field:
    """A bit field ``[high:low]`` of a 32-bit register (inclusive bounds, as in the XML)."""

    name: str
    low: int
    high: int

    @property
    def width(self) -> int:
        return self.high - self.low + 1

    @property
    def max(self) -> int:
        return (1 << self.width) - 1

    @property
    def mask(self) -> int:
        return self.max << self.low

    @property
    def reserved(self) -> bool:
        return self.name.startswith("RESERVED")


@dataclass(frozen=True)
class Register:
    """One 32-bit register: block name, offset inside the core's MMIO window, fields high to low."""

    block: str
    name: str
    offset: int
    fields: tuple[Field, ...]
    documented: bool = True
    note: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.block}_{self.name}"

    def __repr__(self) -> str:
        return f"Register({self.full_name}@0x{self.offset:04X})"

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise CompileError(f"register {self.full_name} has no field {name!r}")


@dataclass(frozen=True)
class Block:
    """A hardware block: its id (``<enum name="target">``) and its registers ordered by offset."""

    name: str
    block_id: int
    registers: tuple[Register, ...]

    @property
    def target(self) -> int | None:
        """The regcmd target id (``block_id | 1``), or None when the id does not fit the 16-bit target field."""
        t = self.block_id | 0x1
        return t if t <= 0xFFFF else None


# Special regcmd target ids (not blocks). Mesa rkt_regcmd.c, quoting the TRM: "before op_en,
# 64'h0041_xxxx_xxxx_xxxx must be set" and "64'h0081_0000_007f_0008 will set each block's op_en".
TARGET_PRE_OP_ENABLE = 0x0041
TARGET_OP_ENABLE = 0x0081

# --- GENERATED from registers.xml (see module docstring); do not edit by hand ---
_XML_TABLE: tuple[tuple[str, int, tuple[tuple[int, str, tuple[tuple[str, int, int], ...]], ...]], ...] = (
    ("PC", 0x100, (
        (0x0000, "VERSION", (("VERSION", 0, 31),)),
        (0x0004, "VERSION_NUM", (("VERSION_NUM", 0, 31),)),
        (0x0008, "OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x0010, "BASE_ADDRESS", (("PC_SOURCE_ADDR", 4, 31), ("RESERVED_0", 1, 3), ("PC_SEL", 0, 0),)),
        (0x0014, "REGISTER_AMOUNTS", (("RESERVED_0", 16, 31), ("PC_DATA_AMOUNT", 0, 15),)),
        (0x0020, "INTERRUPT_MASK", (
            ("RESERVED_0", 14, 31),
            ("DMA_WRITE_ERROR", 13, 13),
            ("DMA_READ_ERROR", 12, 12),
            ("PPU_1", 11, 11),
            ("PPU_0", 10, 10),
            ("DPU_1", 9, 9),
            ("DPU_0", 8, 8),
            ("CORE_1", 7, 7),
            ("CORE_0", 6, 6),
            ("CNA_CSC_1", 5, 5),
            ("CNA_CSC_0", 4, 4),
            ("CNA_WEIGHT_1", 3, 3),
            ("CNA_WEIGHT_0", 2, 2),
            ("CNA_FEATURE_1", 1, 1),
            ("CNA_FEATURE_0", 0, 0),
        )),
        (0x0024, "INTERRUPT_CLEAR", (
            ("RESERVED_0", 14, 31),
            ("DMA_WRITE_ERROR", 13, 13),
            ("DMA_READ_ERROR", 12, 12),
            ("PPU_1", 11, 11),
            ("PPU_0", 10, 10),
            ("DPU_1", 9, 9),
            ("DPU_0", 8, 8),
            ("CORE_1", 7, 7),
            ("CORE_0", 6, 6),
            ("CNA_CSC_1", 5, 5),
            ("CNA_CSC_0", 4, 4),
            ("CNA_WEIGHT_1", 3, 3),
            ("CNA_WEIGHT_0", 2, 2),
            ("CNA_FEATURE_1", 1, 1),
            ("CNA_FEATURE_0", 0, 0),
        )),
        (0x0028, "INTERRUPT_STATUS", (
            ("RESERVED_0", 14, 31),
            ("DMA_WRITE_ERROR", 13, 13),
            ("DMA_READ_ERROR", 12, 12),
            ("PPU_1", 11, 11),
            ("PPU_0", 10, 10),
            ("DPU_1", 9, 9),
            ("DPU_0", 8, 8),
            ("CORE_1", 7, 7),
            ("CORE_0", 6, 6),
            ("CNA_CSC_1", 5, 5),
            ("CNA_CSC_0", 4, 4),
            ("CNA_WEIGHT_1", 3, 3),
            ("CNA_WEIGHT_0", 2, 2),
            ("CNA_FEATURE_1", 1, 1),
            ("CNA_FEATURE_0", 0, 0),
        )),
        (0x002C, "INTERRUPT_RAW_STATUS", (
            ("RESERVED_0", 14, 31),
            ("DMA_WRITE_ERROR", 13, 13),
            ("DMA_READ_ERROR", 12, 12),
            ("PPU_1", 11, 11),
            ("PPU_0", 10, 10),
            ("DPU_1", 9, 9),
            ("DPU_0", 8, 8),
            ("CORE_1", 7, 7),
            ("CORE_0", 6, 6),
            ("CNA_CSC_1", 5, 5),
            ("CNA_CSC_0", 4, 4),
            ("CNA_WEIGHT_1", 3, 3),
            ("CNA_WEIGHT_0", 2, 2),
            ("CNA_FEATURE_1", 1, 1),
            ("CNA_FEATURE_0", 0, 0),
        )),
        (0x0030, "TASK_CON", (
            ("RESERVED_0", 14, 31),
            ("TASK_COUNT_CLEAR", 13, 13),
            ("TASK_PP_EN", 12, 12),
            ("TASK_NUMBER", 0, 11),
        )),
        (0x0034, "TASK_DMA_BASE_ADDR", (("DMA_BASE_ADDR", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x003C, "TASK_STATUS", (("RESERVED_0", 28, 31), ("TASK_STATUS", 0, 27),)),
    )),
    ("CNA", 0x200, (
        (0x1000, "S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x1004, "S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x1008, "OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x100C, "CONV_CON1", (
            ("RESERVED_0", 31, 31),
            ("NONALIGN_DMA", 30, 30),
            ("GROUP_LINE_OFF", 29, 29),
            ("RESERVED_1", 17, 28),
            ("DECONV", 16, 16),
            ("ARGB_IN", 12, 15),
            ("RESERVED_2", 10, 11),
            ("PROC_PRECISION", 7, 9),
            ("IN_PRECISION", 4, 6),
            ("CONV_MODE", 0, 3),
        )),
        (0x1010, "CONV_CON2", (
            ("RESERVED_0", 24, 31),
            ("KERNEL_GROUP", 16, 23),
            ("RESERVED_1", 14, 15),
            ("FEATURE_GRAINS", 4, 13),
            ("RESERVED_2", 3, 3),
            ("CSC_WO_EN", 2, 2),
            ("CSC_DO_EN", 1, 1),
            ("CMD_FIFO_SRST", 0, 0),
        )),
        (0x1014, "CONV_CON3", (
            ("RESERVED_0", 31, 31),
            ("NN_MODE", 28, 30),
            ("RESERVED_1", 26, 27),
            ("ATROUS_Y_DILATION", 21, 25),
            ("ATROUS_X_DILATION", 16, 20),
            ("RESERVED_2", 14, 15),
            ("DECONV_Y_STRIDE", 11, 13),
            ("DECONV_X_STRIDE", 8, 10),
            ("RESERVED_3", 6, 7),
            ("CONV_Y_STRIDE", 3, 5),
            ("CONV_X_STRIDE", 0, 2),
        )),
        (0x1020, "DATA_SIZE0", (
            ("RESERVED_0", 27, 31),
            ("DATAIN_WIDTH", 16, 26),
            ("RESERVED_1", 11, 15),
            ("DATAIN_HEIGHT", 0, 10),
        )),
        (0x1024, "DATA_SIZE1", (("RESERVED_0", 30, 31), ("DATAIN_CHANNEL_REAL", 16, 29), ("DATAIN_CHANNEL", 0, 15),)),
        (0x1028, "DATA_SIZE2", (("RESERVED_0", 11, 31), ("DATAOUT_WIDTH", 0, 10),)),
        (0x102C, "DATA_SIZE3", (("RESERVED_0", 24, 31), ("SURF_MODE", 22, 23), ("DATAOUT_ATOMICS", 0, 21),)),
        (0x1030, "WEIGHT_SIZE0", (("WEIGHT_BYTES", 0, 31),)),
        (0x1034, "WEIGHT_SIZE1", (("RESERVED_0", 19, 31), ("WEIGHT_BYTES_PER_KERNEL", 0, 18),)),
        (0x1038, "WEIGHT_SIZE2", (
            ("RESERVED_0", 29, 31),
            ("WEIGHT_WIDTH", 24, 28),
            ("RESERVED_1", 21, 23),
            ("WEIGHT_HEIGHT", 16, 20),
            ("RESERVED_2", 14, 15),
            ("WEIGHT_KERNELS", 0, 13),
        )),
        (0x1040, "CBUF_CON0", (
            ("RESERVED_0", 14, 31),
            ("WEIGHT_REUSE", 13, 13),
            ("DATA_REUSE", 12, 12),
            ("RESERVED_1", 11, 11),
            ("FC_DATA_BANK", 8, 10),
            ("WEIGHT_BANK", 4, 7),
            ("DATA_BANK", 0, 3),
        )),
        (0x1044, "CBUF_CON1", (("RESERVED_0", 14, 31), ("DATA_ENTRIES", 0, 13),)),
        (0x104C, "CVT_CON0", (
            ("RESERVED_0", 28, 31),
            ("CVT_TRUNCATE_3", 22, 27),
            ("CVT_TRUNCATE_2", 16, 21),
            ("CVT_TRUNCATE_1", 10, 15),
            ("CVT_TRUNCATE_0", 4, 9),
            ("DATA_SIGN", 3, 3),
            ("ROUND_TYPE", 2, 2),
            ("CVT_TYPE", 1, 1),
            ("CVT_BYPASS", 0, 0),
        )),
        (0x1050, "CVT_CON1", (("CVT_SCALE0", 16, 31), ("CVT_OFFSET0", 0, 15),)),
        (0x1054, "CVT_CON2", (("CVT_SCALE1", 16, 31), ("CVT_OFFSET1", 0, 15),)),
        (0x1058, "CVT_CON3", (("CVT_SCALE2", 16, 31), ("CVT_OFFSET2", 0, 15),)),
        (0x105C, "CVT_CON4", (("CVT_SCALE3", 16, 31), ("CVT_OFFSET3", 0, 15),)),
        (0x1060, "FC_CON0", (("FC_SKIP_DATA", 16, 31), ("RESERVED_0", 1, 15), ("FC_SKIP_EN", 0, 0),)),
        (0x1064, "FC_CON1", (("RESERVED_0", 17, 31), ("DATA_OFFSET", 0, 16),)),
        (0x1068, "PAD_CON0", (("RESERVED_0", 8, 31), ("PAD_LEFT", 4, 7), ("PAD_TOP", 0, 3),)),
        (0x1070, "FEATURE_DATA_ADDR", (("FEATURE_BASE_ADDR", 0, 31),)),
        (0x1074, "FC_CON2", (("RESERVED_0", 17, 31), ("WEIGHT_OFFSET", 0, 16),)),
        (0x1078, "DMA_CON0", (
            ("OV4K_BYPASS", 31, 31),
            ("RESERVED_0", 20, 30),
            ("WEIGHT_BURST_LEN", 16, 19),
            ("RESERVED_1", 4, 15),
            ("DATA_BURST_LEN", 0, 3),
        )),
        (0x107C, "DMA_CON1", (("RESERVED_0", 28, 31), ("LINE_STRIDE", 0, 27),)),
        (0x1080, "DMA_CON2", (("RESERVED_0", 28, 31), ("SURF_STRIDE", 0, 27),)),
        (0x1084, "FC_DATA_SIZE0", (
            ("RESERVED_0", 30, 31),
            ("DMA_WIDTH", 16, 29),
            ("RESERVED_1", 11, 15),
            ("DMA_HEIGHT", 0, 10),
        )),
        (0x1088, "FC_DATA_SIZE1", (("RESERVED_0", 16, 31), ("DMA_CHANNEL", 0, 15),)),
        (0x1090, "CLK_GATE", (
            ("RESERVED_0", 5, 31),
            ("CBUF_CS_DISABLE_CLKGATE", 4, 4),
            ("RESERVED_1", 3, 3),
            ("CSC_DISABLE_CLKGATE", 2, 2),
            ("CNA_WEIGHT_DISABLE_CLKGATE", 1, 1),
            ("CNA_FEATURE_DISABLE_CLKGATE", 0, 0),
        )),
        (0x1100, "DCOMP_CTRL", (("RESERVED_0", 4, 31), ("WT_DEC_BYPASS", 3, 3), ("DECOMP_CONTROL", 0, 2),)),
        (0x1104, "DCOMP_REGNUM", (("DCOMP_REGNUM", 0, 31),)),
        (0x1110, "DCOMP_ADDR0", (("DECOMPRESS_ADDR0", 0, 31),)),
        (0x1140, "DCOMP_AMOUNT0", (("DCOMP_AMOUNT0", 0, 31),)),
        (0x1144, "DCOMP_AMOUNT1", (("DCOMP_AMOUNT1", 0, 31),)),
        (0x1148, "DCOMP_AMOUNT2", (("DCOMP_AMOUNT2", 0, 31),)),
        (0x114C, "DCOMP_AMOUNT3", (("DCOMP_AMOUNT3", 0, 31),)),
        (0x1150, "DCOMP_AMOUNT4", (("DCOMP_AMOUNT4", 0, 31),)),
        (0x1154, "DCOMP_AMOUNT5", (("DCOMP_AMOUNT5", 0, 31),)),
        (0x1158, "DCOMP_AMOUNT6", (("DCOMP_AMOUNT6", 0, 31),)),
        (0x115C, "DCOMP_AMOUNT7", (("DCOMP_AMOUNT7", 0, 31),)),
        (0x1160, "DCOMP_AMOUNT8", (("DCOMP_AMOUNT8", 0, 31),)),
        (0x1164, "DCOMP_AMOUNT9", (("DCOMP_AMOUNT9", 0, 31),)),
        (0x1168, "DCOMP_AMOUNT10", (("DCOMP_AMOUNT10", 0, 31),)),
        (0x116C, "DCOMP_AMOUNT11", (("DCOMP_AMOUNT11", 0, 31),)),
        (0x1170, "DCOMP_AMOUNT12", (("DCOMP_AMOUNT12", 0, 31),)),
        (0x1174, "DCOMP_AMOUNT13", (("DCOMP_AMOUNT13", 0, 31),)),
        (0x1178, "DCOMP_AMOUNT14", (("DCOMP_AMOUNT14", 0, 31),)),
        (0x117C, "DCOMP_AMOUNT15", (("DCOMP_AMOUNT15", 0, 31),)),
        (0x1180, "CVT_CON5", (("PER_CHANNEL_CVT_EN", 0, 31),)),
        (0x1184, "PAD_CON1", (("PAD_VALUE", 0, 31),)),
    )),
    ("CORE", 0x800, (
        (0x3000, "S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x3004, "S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x3008, "OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x300C, "MAC_GATING", (("RESERVED_0", 27, 31), ("SLCG_OP_EN", 0, 26),)),
        (0x3010, "MISC_CFG", (
            ("RESERVED_0", 20, 31),
            ("SOFT_GATING", 14, 19),
            ("RESERVED_1", 11, 13),
            ("PROC_PRECISION", 8, 10),
            ("RESERVED_2", 2, 7),
            ("DW_EN", 1, 1),
            ("QD_EN", 0, 0),
        )),
        (0x3014, "DATAOUT_SIZE_0", (("DATAOUT_HEIGHT", 16, 31), ("DATAOUT_WIDTH", 0, 15),)),
        (0x3018, "DATAOUT_SIZE_1", (("RESERVED_0", 16, 31), ("DATAOUT_CHANNEL", 0, 15),)),
        (0x301C, "CLIP_TRUNCATE", (
            ("RESERVED_0", 7, 31),
            ("ROUND_TYPE", 6, 6),
            ("RESERVED_1", 5, 5),
            ("CLIP_TRUNCATE", 0, 4),
        )),
    )),
    ("DPU", 0x1000, (
        (0x4000, "S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x4004, "S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x4008, "OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x400C, "FEATURE_MODE_CFG", (
            ("COMB_USE", 31, 31),
            ("TP_EN", 30, 30),
            ("RGP_TYPE", 26, 29),
            ("NONALIGN", 25, 25),
            ("SURF_LEN", 9, 24),
            ("BURST_LEN", 5, 8),
            ("CONV_MODE", 3, 4),
            ("OUTPUT_MODE", 1, 2),
            ("FLYING_MODE", 0, 0),
        )),
        (0x4010, "DATA_FORMAT", (
            ("OUT_PRECISION", 29, 31),
            ("IN_PRECISION", 26, 28),
            ("EW_TRUNCATE_NEG", 16, 25),
            ("BN_MUL_SHIFT_VALUE_NEG", 10, 15),
            ("BS_MUL_SHIFT_VALUE_NEG", 4, 9),
            ("MC_SURF_OUT", 3, 3),
            ("PROC_PRECISION", 0, 2),
        )),
        (0x4014, "OFFSET_PEND", (("RESERVED_0", 16, 31), ("OFFSET_PEND", 0, 15),)),
        (0x4020, "DST_BASE_ADDR", (("DST_BASE_ADDR", 0, 31),)),
        (0x4024, "DST_SURF_STRIDE", (("DST_SURF_STRIDE", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x4030, "DATA_CUBE_WIDTH", (("RESERVED_0", 13, 31), ("WIDTH", 0, 12),)),
        (0x4034, "DATA_CUBE_HEIGHT", (
            ("RESERVED_0", 25, 31),
            ("MINMAX_CTL", 22, 24),
            ("RESERVED_1", 13, 21),
            ("HEIGHT", 0, 12),
        )),
        (0x4038, "DATA_CUBE_NOTCH_ADDR", (
            ("RESERVED_0", 29, 31),
            ("NOTCH_ADDR_1", 16, 28),
            ("RESERVED_1", 13, 15),
            ("NOTCH_ADDR_0", 0, 12),
        )),
        (0x403C, "DATA_CUBE_CHANNEL", (
            ("RESERVED_0", 29, 31),
            ("ORIG_CHANNEL", 16, 28),
            ("RESERVED_1", 13, 15),
            ("CHANNEL", 0, 12),
        )),
        (0x4040, "BS_CFG", (
            ("RESERVED_0", 20, 31),
            ("BS_ALU_ALGO", 16, 19),
            ("RESERVED_1", 9, 15),
            ("BS_ALU_SRC", 8, 8),
            ("BS_RELUX_EN", 7, 7),
            ("BS_RELU_BYPASS", 6, 6),
            ("BS_MUL_PRELU", 5, 5),
            ("BS_MUL_BYPASS", 4, 4),
            ("RESERVED_2", 2, 3),
            ("BS_ALU_BYPASS", 1, 1),
            ("BS_BYPASS", 0, 0),
        )),
        (0x4044, "BS_ALU_CFG", (("BS_ALU_OPERAND", 0, 31),)),
        (0x4048, "BS_MUL_CFG", (
            ("BS_MUL_OPERAND", 16, 31),
            ("RESERVED_0", 14, 15),
            ("BS_MUL_SHIFT_VALUE", 8, 13),
            ("RESERVED_1", 2, 7),
            ("BS_TRUNCATE_SRC", 1, 1),
            ("BS_MUL_SRC", 0, 0),
        )),
        (0x404C, "BS_RELUX_CMP_VALUE", (("BS_RELUX_CMP_DAT", 0, 31),)),
        (0x4050, "BS_OW_CFG", (
            ("RGP_CNTER", 28, 31),
            ("TP_ORG_EN", 27, 27),
            ("RESERVED_0", 11, 26),
            ("SIZE_E_2", 8, 10),
            ("SIZE_E_1", 5, 7),
            ("SIZE_E_0", 2, 4),
            ("OD_BYPASS", 1, 1),
            ("OW_SRC", 0, 0),
        )),
        (0x4054, "BS_OW_OP", (("RESERVED_0", 16, 31), ("OW_OP", 0, 15),)),
        (0x4058, "WDMA_SIZE_0", (
            ("RESERVED_0", 28, 31),
            ("TP_PRECISION", 27, 27),
            ("SIZE_C_WDMA", 16, 26),
            ("RESERVED_1", 13, 15),
            ("CHANNEL_WDMA", 0, 12),
        )),
        (0x405C, "WDMA_SIZE_1", (
            ("RESERVED_0", 29, 31),
            ("HEIGHT_WDMA", 16, 28),
            ("RESERVED_1", 13, 15),
            ("WIDTH_WDMA", 0, 12),
        )),
        (0x4060, "BN_CFG", (
            ("RESERVED_0", 20, 31),
            ("BN_ALU_ALGO", 16, 19),
            ("RESERVED_1", 9, 15),
            ("BN_ALU_SRC", 8, 8),
            ("BN_RELUX_EN", 7, 7),
            ("BN_RELU_BYPASS", 6, 6),
            ("BN_MUL_PRELU", 5, 5),
            ("BN_MUL_BYPASS", 4, 4),
            ("RESERVED_2", 2, 3),
            ("BN_ALU_BYPASS", 1, 1),
            ("BN_BYPASS", 0, 0),
        )),
        (0x4064, "BN_ALU_CFG", (("BN_ALU_OPERAND", 0, 31),)),
        (0x4068, "BN_MUL_CFG", (
            ("BN_MUL_OPERAND", 16, 31),
            ("RESERVED_0", 14, 15),
            ("BN_MUL_SHIFT_VALUE", 8, 13),
            ("RESERVED_1", 2, 7),
            ("BN_TRUNCATE_SRC", 1, 1),
            ("BN_MUL_SRC", 0, 0),
        )),
        (0x406C, "BN_RELUX_CMP_VALUE", (("BN_RELUX_CMP_DAT", 0, 31),)),
        (0x4070, "EW_CFG", (
            ("EW_CVT_TYPE", 31, 31),
            ("EW_CVT_ROUND", 30, 30),
            ("EW_DATA_MODE", 28, 29),
            ("RESERVED_0", 24, 27),
            ("EDATA_SIZE", 22, 23),
            ("EW_EQUAL_EN", 21, 21),
            ("EW_BINARY_EN", 20, 20),
            ("EW_ALU_ALGO", 16, 19),
            ("RESERVED_1", 11, 15),
            ("EW_RELUX_EN", 10, 10),
            ("EW_RELU_BYPASS", 9, 9),
            ("EW_OP_CVT_BYPASS", 8, 8),
            ("EW_LUT_BYPASS", 7, 7),
            ("EW_OP_SRC", 6, 6),
            ("EW_MUL_PRELU", 5, 5),
            ("RESERVED_2", 3, 4),
            ("EW_OP_TYPE", 2, 2),
            ("EW_OP_BYPASS", 1, 1),
            ("EW_BYPASS", 0, 0),
        )),
        (0x4074, "EW_CVT_OFFSET_VALUE", (("EW_OP_CVT_OFFSET", 0, 31),)),
        (0x4078, "EW_CVT_SCALE_VALUE", (
            ("EW_TRUNCATE", 22, 31),
            ("EW_OP_CVT_SHIFT", 16, 21),
            ("EW_OP_CVT_SCALE", 0, 15),
        )),
        (0x407C, "EW_RELUX_CMP_VALUE", (("EW_RELUX_CMP_DAT", 0, 31),)),
        (0x4080, "OUT_CVT_OFFSET", (("OUT_CVT_OFFSET", 0, 31),)),
        (0x4084, "OUT_CVT_SCALE", (("RESERVED_0", 17, 31), ("FP32TOFP16_EN", 16, 16), ("OUT_CVT_SCALE", 0, 15),)),
        (0x4088, "OUT_CVT_SHIFT", (
            ("CVT_TYPE", 31, 31),
            ("CVT_ROUND", 30, 30),
            ("RESERVED_0", 20, 29),
            ("MINUS_EXP", 12, 19),
            ("OUT_CVT_SHIFT", 0, 11),
        )),
        (0x4090, "EW_OP_VALUE_0", (("EW_OPERAND_0", 0, 31),)),
        (0x4094, "EW_OP_VALUE_1", (("EW_OPERAND_1", 0, 31),)),
        (0x4098, "EW_OP_VALUE_2", (("EW_OPERAND_2", 0, 31),)),
        (0x409C, "EW_OP_VALUE_3", (("EW_OPERAND_3", 0, 31),)),
        (0x40A0, "EW_OP_VALUE_4", (("EW_OPERAND_4", 0, 31),)),
        (0x40A4, "EW_OP_VALUE_5", (("EW_OPERAND_5", 0, 31),)),
        (0x40A8, "EW_OP_VALUE_6", (("EW_OPERAND_6", 0, 31),)),
        (0x40AC, "EW_OP_VALUE_7", (("EW_OPERAND_7", 0, 31),)),
        (0x40C0, "SURFACE_ADD", (("SURF_ADD", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x4100, "LUT_ACCESS_CFG", (
            ("RESERVED_0", 18, 31),
            ("LUT_ACCESS_TYPE", 17, 17),
            ("LUT_TABLE_ID", 16, 16),
            ("RESERVED_1", 10, 15),
            ("LUT_ADDR", 0, 9),
        )),
        (0x4104, "LUT_ACCESS_DATA", (("RESERVED_0", 16, 31), ("LUT_ACCESS_DATA", 0, 15),)),
        (0x4108, "LUT_CFG", (
            ("RESERVED_0", 8, 31),
            ("LUT_CAL_SEL", 7, 7),
            ("LUT_HYBRID_PRIORITY", 6, 6),
            ("LUT_OFLOW_PRIORITY", 5, 5),
            ("LUT_UFLOW_PRIORITY", 4, 4),
            ("LUT_LO_LE_MUX", 2, 3),
            ("LUT_EXPAND_EN", 1, 1),
            ("LUT_ROAD_SEL", 0, 0),
        )),
        (0x410C, "LUT_INFO", (
            ("RESERVED_0", 24, 31),
            ("LUT_LO_INDEX_SELECT", 16, 23),
            ("LUT_LE_INDEX_SELECT", 8, 15),
            ("RESERVED_1", 0, 7),
        )),
        (0x4110, "LUT_LE_START", (("LUT_LE_START", 0, 31),)),
        (0x4114, "LUT_LE_END", (("LUT_LE_END", 0, 31),)),
        (0x4118, "LUT_LO_START", (("LUT_LO_START", 0, 31),)),
        (0x411C, "LUT_LO_END", (("LUT_LO_END", 0, 31),)),
        (0x4120, "LUT_LE_SLOPE_SCALE", (("LUT_LE_SLOPE_OFLOW_SCALE", 16, 31), ("LUT_LE_SLOPE_UFLOW_SCALE", 0, 15),)),
        (0x4124, "LUT_LE_SLOPE_SHIFT", (
            ("RESERVED_0", 10, 31),
            ("LUT_LE_SLOPE_OFLOW_SHIFT", 5, 9),
            ("LUT_LE_SLOPE_UFLOW_SHIFT", 0, 4),
        )),
        (0x4128, "LUT_LO_SLOPE_SCALE", (("LUT_LO_SLOPE_OFLOW_SCALE", 16, 31), ("LUT_LO_SLOPE_UFLOW_SCALE", 0, 15),)),
        (0x412C, "LUT_LO_SLOPE_SHIFT", (
            ("RESERVED_0", 10, 31),
            ("LUT_LO_SLOPE_OFLOW_SHIFT", 5, 9),
            ("LUT_LO_SLOPE_UFLOW_SHIFT", 0, 4),
        )),
    )),
    ("DPU_RDMA", 0x2000, (
        (0x5000, "RDMA_S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x5004, "RDMA_S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x5008, "RDMA_OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x500C, "RDMA_DATA_CUBE_WIDTH", (("RESERVED_0", 13, 31), ("WIDTH", 0, 12),)),
        (0x5010, "RDMA_DATA_CUBE_HEIGHT", (
            ("RESERVED_0", 29, 31),
            ("EW_LINE_NOTCH_ADDR", 16, 28),
            ("RESERVED_1", 13, 15),
            ("HEIGHT", 0, 12),
        )),
        (0x5014, "RDMA_DATA_CUBE_CHANNEL", (("RESERVED_0", 13, 31), ("CHANNEL", 0, 12),)),
        (0x5018, "RDMA_SRC_BASE_ADDR", (("SRC_BASE_ADDR", 0, 31),)),
        (0x501C, "RDMA_BRDMA_CFG", (("RESERVED_0", 5, 31), ("BRDMA_DATA_USE", 1, 4), ("RESERVED_1", 0, 0),)),
        (0x5020, "RDMA_BS_BASE_ADDR", (("BS_BASE_ADDR", 0, 31),)),
        (0x5028, "RDMA_NRDMA_CFG", (("RESERVED_0", 5, 31), ("NRDMA_DATA_USE", 1, 4), ("RESERVED_1", 0, 0),)),
        (0x502C, "RDMA_BN_BASE_ADDR", (("BN_BASE_ADDR", 0, 31),)),
        (0x5034, "RDMA_ERDMA_CFG", (
            ("ERDMA_DATA_MODE", 30, 31),
            ("ERDMA_SURF_MODE", 29, 29),
            ("ERDMA_NONALIGN", 28, 28),
            ("RESERVED_0", 4, 27),
            ("ERDMA_DATA_SIZE", 2, 3),
            ("OV4K_BYPASS", 1, 1),
            ("ERDMA_DISABLE", 0, 0),
        )),
        (0x5038, "RDMA_EW_BASE_ADDR", (("EW_BASE_ADDR", 0, 31),)),
        (0x5040, "RDMA_EW_SURF_STRIDE", (("EW_SURF_STRIDE", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x5044, "RDMA_FEATURE_MODE_CFG", (
            ("RESERVED_0", 18, 31),
            ("IN_PRECISION", 15, 17),
            ("BURST_LEN", 11, 14),
            ("COMB_USE", 8, 10),
            ("PROC_PRECISION", 5, 7),
            ("MRDMA_DISABLE", 4, 4),
            ("MRDMA_FP16TOFP32_EN", 3, 3),
            ("CONV_MODE", 1, 2),
            ("FLYING_MODE", 0, 0),
        )),
        (0x5048, "RDMA_SRC_DMA_CFG", (
            ("LINE_NOTCH_ADDR", 19, 31),
            ("RESERVED_0", 14, 18),
            ("POOLING_METHOD", 13, 13),
            ("UNPOOLING_EN", 12, 12),
            ("KERNEL_STRIDE_HEIGHT", 9, 11),
            ("KERNEL_STRIDE_WIDTH", 6, 8),
            ("KERNEL_HEIGHT", 3, 5),
            ("KERNEL_WIDTH", 0, 2),
        )),
        (0x504C, "RDMA_SURF_NOTCH", (("SURF_NOTCH_ADDR", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x5064, "RDMA_PAD_CFG", (
            ("PAD_VALUE", 16, 31),
            ("RESERVED_0", 7, 15),
            ("PAD_TOP", 4, 6),
            ("RESERVED_1", 3, 3),
            ("PAD_LEFT", 0, 2),
        )),
        (0x5068, "RDMA_WEIGHT", (
            ("E_WEIGHT", 24, 31),
            ("N_WEIGHT", 16, 23),
            ("B_WEIGHT", 8, 15),
            ("M_WEIGHT", 0, 7),
        )),
        (0x506C, "RDMA_EW_SURF_NOTCH", (("EW_SURF_NOTCH", 4, 31), ("RESERVED_0", 0, 3),)),
    )),
    ("PPU", 0x4000, (
        (0x6000, "S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x6004, "S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x6008, "OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x600C, "DATA_CUBE_IN_WIDTH", (("RESERVED_0", 13, 31), ("CUBE_IN_WIDTH", 0, 12),)),
        (0x6010, "DATA_CUBE_IN_HEIGHT", (("RESERVED_0", 13, 31), ("CUBE_IN_HEIGHT", 0, 12),)),
        (0x6014, "DATA_CUBE_IN_CHANNEL", (("RESERVED_0", 13, 31), ("CUBE_IN_CHANNEL", 0, 12),)),
        (0x6018, "DATA_CUBE_OUT_WIDTH", (("RESERVED_0", 13, 31), ("CUBE_OUT_WIDTH", 0, 12),)),
        (0x601C, "DATA_CUBE_OUT_HEIGHT", (("RESERVED_0", 13, 31), ("CUBE_OUT_HEIGHT", 0, 12),)),
        (0x6020, "DATA_CUBE_OUT_CHANNEL", (("RESERVED_0", 13, 31), ("CUBE_OUT_CHANNEL", 0, 12),)),
        (0x6024, "OPERATION_MODE_CFG", (
            ("RESERVED_0", 31, 31),
            ("INDEX_EN", 30, 30),
            ("RESERVED_1", 29, 29),
            ("NOTCH_ADDR", 16, 28),
            ("RESERVED_2", 8, 15),
            ("USE_CNT", 5, 7),
            ("FLYING_MODE", 4, 4),
            ("RESERVED_3", 2, 3),
            ("POOLING_METHOD", 0, 1),
        )),
        (0x6034, "POOLING_KERNEL_CFG", (
            ("RESERVED_0", 24, 31),
            ("KERNEL_STRIDE_HEIGHT", 20, 23),
            ("KERNEL_STRIDE_WIDTH", 16, 19),
            ("RESERVED_1", 12, 15),
            ("KERNEL_HEIGHT", 8, 11),
            ("RESERVED_2", 4, 7),
            ("KERNEL_WIDTH", 0, 3),
        )),
        (0x6038, "RECIP_KERNEL_WIDTH", (("RESERVED_0", 17, 31), ("RECIP_KERNEL_WIDTH", 0, 16),)),
        (0x603C, "RECIP_KERNEL_HEIGHT", (("RESERVED_0", 17, 31), ("RECIP_KERNEL_HEIGHT", 0, 16),)),
        (0x6040, "POOLING_PADDING_CFG", (
            ("RESERVED_0", 15, 31),
            ("PAD_BOTTOM", 12, 14),
            ("RESERVED_1", 11, 11),
            ("PAD_RIGHT", 8, 10),
            ("RESERVED_2", 7, 7),
            ("PAD_TOP", 4, 6),
            ("RESERVED_3", 3, 3),
            ("PAD_LEFT", 0, 2),
        )),
        (0x6044, "PADDING_VALUE_1_CFG", (("PAD_VALUE_0", 0, 31),)),
        (0x6048, "PADDING_VALUE_2_CFG", (("RESERVED_0", 3, 31), ("PAD_VALUE_1", 0, 2),)),
        (0x6070, "DST_BASE_ADDR", (("DST_BASE_ADDR", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x607C, "DST_SURF_STRIDE", (("DST_SURF_STRIDE", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x6084, "DATA_FORMAT", (("INDEX_ADD", 4, 31), ("DPU_FLYIN", 3, 3), ("PROC_PRECISION", 0, 2),)),
        (0x60DC, "MISC_CTRL", (
            ("SURF_LEN", 16, 31),
            ("RESERVED_0", 9, 15),
            ("MC_SURF_OUT", 8, 8),
            ("NONALIGN", 7, 7),
            ("RESERVED_1", 4, 6),
            ("BURST_LEN", 0, 3),
        )),
    )),
    ("PPU_RDMA", 0x8000, (
        (0x7000, "RDMA_S_STATUS", (
            ("RESERVED_0", 18, 31),
            ("STATUS_1", 16, 17),
            ("RESERVED_1", 2, 15),
            ("STATUS_0", 0, 1),
        )),
        (0x7004, "RDMA_S_POINTER", (
            ("RESERVED_0", 17, 31),
            ("EXECUTER", 16, 16),
            ("RESERVED_1", 6, 15),
            ("EXECUTER_PP_CLEAR", 5, 5),
            ("POINTER_PP_CLEAR", 4, 4),
            ("POINTER_PP_MODE", 3, 3),
            ("EXECUTER_PP_EN", 2, 2),
            ("POINTER_PP_EN", 1, 1),
            ("POINTER", 0, 0),
        )),
        (0x7008, "RDMA_OPERATION_ENABLE", (("RESERVED_0", 1, 31), ("OP_EN", 0, 0),)),
        (0x700C, "RDMA_CUBE_IN_WIDTH", (("RESERVED_0", 13, 31), ("CUBE_IN_WIDTH", 0, 12),)),
        (0x7010, "RDMA_CUBE_IN_HEIGHT", (("RESERVED_0", 13, 31), ("CUBE_IN_HEIGHT", 0, 12),)),
        (0x7014, "RDMA_CUBE_IN_CHANNEL", (("RESERVED_0", 13, 31), ("CUBE_IN_CHANNEL", 0, 12),)),
        (0x701C, "RDMA_SRC_BASE_ADDR", (("SRC_BASE_ADDR", 0, 31),)),
        (0x7024, "RDMA_SRC_LINE_STRIDE", (("SRC_LINE_STRIDE", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x7028, "RDMA_SRC_SURF_STRIDE", (("SRC_SURF_STRIDE", 4, 31), ("RESERVED_0", 0, 3),)),
        (0x7030, "RDMA_DATA_FORMAT", (("RESERVED_0", 2, 31), ("IN_PRECISION", 0, 1),)),
    )),
    ("DDMA", 0x10000, (
        (0x8000, "CFG_OUTSTANDING", (("RESERVED_0", 16, 31), ("WR_OS_CNT", 8, 15), ("RD_OS_CNT", 0, 7),)),
        (0x8004, "RD_WEIGHT_0", (
            ("RD_WEIGHT_PDP", 24, 31),
            ("RD_WEIGHT_DPU", 16, 23),
            ("RD_WEIGHT_KERNEL", 8, 15),
            ("RD_WEIGHT_FEATURE", 0, 7),
        )),
        (0x8008, "WR_WEIGHT_0", (("RESERVED_0", 16, 31), ("WR_WEIGHT_PDP", 8, 15), ("WR_WEIGHT_DPU", 0, 7),)),
        (0x800C, "CFG_ID_ERROR", (
            ("RESERVED_0", 10, 31),
            ("WR_RESP_ID", 6, 9),
            ("RESERVED_1", 5, 5),
            ("RD_RESP_ID", 0, 4),
        )),
        (0x8010, "RD_WEIGHT_1", (("RESERVED_0", 8, 31), ("RD_WEIGHT_PC", 0, 7),)),
        (0x8014, "CFG_DMA_FIFO_CLR", (("RESERVED_0", 1, 31), ("DMA_FIFO_CLR", 0, 0),)),
        (0x8018, "CFG_DMA_ARB", (
            ("RESERVED_0", 10, 31),
            ("WR_ARBIT_MODEL", 9, 9),
            ("RD_ARBIT_MODEL", 8, 8),
            ("RESERVED_1", 7, 7),
            ("WR_FIX_ARB", 4, 6),
            ("RESERVED_2", 3, 3),
            ("RD_FIX_ARB", 0, 2),
        )),
        (0x8020, "CFG_DMA_RD_QOS", (
            ("RESERVED_0", 10, 31),
            ("RD_PC_QOS", 8, 9),
            ("RD_PPU_QOS", 6, 7),
            ("RD_DPU_QOS", 4, 5),
            ("RD_KERNEL_QOS", 2, 3),
            ("RD_FEATURE_QOS", 0, 1),
        )),
        (0x8024, "CFG_DMA_RD_CFG", (
            ("RESERVED_0", 13, 31),
            ("RD_ARLOCK", 12, 12),
            ("RD_ARCACHE", 8, 11),
            ("RD_ARPROT", 5, 7),
            ("RD_ARBURST", 3, 4),
            ("RD_ARSIZE", 0, 2),
        )),
        (0x8028, "CFG_DMA_WR_CFG", (
            ("RESERVED_0", 13, 31),
            ("WR_AWLOCK", 12, 12),
            ("WR_AWCACHE", 8, 11),
            ("WR_AWPROT", 5, 7),
            ("WR_AWBURST", 3, 4),
            ("WR_AWSIZE", 0, 2),
        )),
        (0x802C, "CFG_DMA_WSTRB", (("WR_WSTRB", 0, 31),)),
        (0x8030, "CFG_STATUS", (("RESERVED_0", 9, 31), ("IDEL", 8, 8), ("RESERVED_1", 0, 7),)),
    )),
    ("SDMA", 0x20000, (
        (0x9000, "CFG_OUTSTANDING", (("RESERVED_0", 16, 31), ("WR_OS_CNT", 8, 15), ("RD_OS_CNT", 0, 7),)),
        (0x9004, "RD_WEIGHT_0", (
            ("RD_WEIGHT_PDP", 24, 31),
            ("RD_WEIGHT_DPU", 16, 23),
            ("RD_WEIGHT_KERNEL", 8, 15),
            ("RD_WEIGHT_FEATURE", 0, 7),
        )),
        (0x9008, "WR_WEIGHT_0", (("RESERVED_0", 16, 31), ("WR_WEIGHT_PDP", 8, 15), ("WR_WEIGHT_DPU", 0, 7),)),
        (0x900C, "CFG_ID_ERROR", (
            ("RESERVED_0", 10, 31),
            ("WR_RESP_ID", 6, 9),
            ("RESERVED_1", 5, 5),
            ("RD_RESP_ID", 0, 4),
        )),
        (0x9010, "RD_WEIGHT_1", (("RESERVED_0", 8, 31), ("RD_WEIGHT_PC", 0, 7),)),
        (0x9014, "CFG_DMA_FIFO_CLR", (("RESERVED_0", 1, 31), ("DMA_FIFO_CLR", 0, 0),)),
        (0x9018, "CFG_DMA_ARB", (
            ("RESERVED_0", 10, 31),
            ("WR_ARBIT_MODEL", 9, 9),
            ("RD_ARBIT_MODEL", 8, 8),
            ("RESERVED_1", 7, 7),
            ("WR_FIX_ARB", 4, 6),
            ("RESERVED_2", 3, 3),
            ("RD_FIX_ARB", 0, 2),
        )),
        (0x9020, "CFG_DMA_RD_QOS", (
            ("RESERVED_0", 10, 31),
            ("RD_PC_QOS", 8, 9),
            ("RD_PPU_QOS", 6, 7),
            ("RD_DPU_QOS", 4, 5),
            ("RD_KERNEL_QOS", 2, 3),
            ("RD_FEATURE_QOS", 0, 1),
        )),
        (0x9024, "CFG_DMA_RD_CFG", (
            ("RESERVED_0", 13, 31),
            ("RD_ARLOCK", 12, 12),
            ("RD_ARCACHE", 8, 11),
            ("RD_ARPROT", 5, 7),
            ("RD_ARBURST", 3, 4),
            ("RD_ARSIZE", 0, 2),
        )),
        (0x9028, "CFG_DMA_WR_CFG", (
            ("RESERVED_0", 13, 31),
            ("WR_AWLOCK", 12, 12),
            ("WR_AWCACHE", 8, 11),
            ("WR_AWPROT", 5, 7),
            ("WR_AWBURST", 3, 4),
            ("WR_AWSIZE", 0, 2),
        )),
        (0x902C, "CFG_DMA_WSTRB", (("WR_WSTRB", 0, 31),)),
        (0x9030, "CFG_STATUS", (("RESERVED_0", 9, 31), ("IDEL", 8, 8), ("RESERVED_1", 0, 7),)),
    )),
    ("GLOBAL", 0x40000, (
        (0xF008, "OPERATION_ENABLE", (
            ("RESERVED_0", 7, 31),
            ("PPU_RDMA_OP_EN", 6, 6),
            ("PPU_OP_EN", 5, 5),
            ("DPU_RDMA_OP_EN", 4, 4),
            ("DPU_OP_EN", 3, 3),
            ("CORE_OP_EN", 2, 2),
            ("RESERVED_1", 1, 1),
            ("CNA_OP_EN", 0, 0),
        )),
    )),
)
# --- END GENERATED ---

# Registers written by open drivers but absent from registers.xml: (block, offset, name, note).
_EXTRA: tuple[tuple[str, int, str, str], ...] = (
    ("CORE", 0x3030, "UNKNOWN_3030",
     "not in registers.xml; Mesa rkt_regcmd.c emit_raw(CORE|1, 0x3030, 0); npu_hw.h CORE_3030 'not documented'"),
    ("DPU", 0x40C4, "UNKNOWN_40C4",
     "not in registers.xml; Mesa rkt_regcmd.c emit_raw(DPU|1, 0x40c4, 0); npu_hw.h DPU_40C4 'Not documented'"),
    ("DPU_RDMA", 0x5024, "RDMA_UNKNOWN_5024",
     "not in registers.xml; iav/rk3568-npu README-rk3568.md: on RK3568 the BS stream length in 8-byte words "
     "minus one [3P, unverified on RK3588]"),
)


def _build() -> tuple[dict[str, Block], dict[str, Register], dict[int, Register]]:
    blocks: dict[str, Block] = {}
    by_name: dict[str, Register] = {}
    by_offset: dict[int, Register] = {}
    extra = {b: [(o, n, note) for bb, o, n, note in _EXTRA if bb == b] for b, _, _ in _XML_TABLE}
    for bname, bid, regs in _XML_TABLE:
        items = [Register(bname, rname, off, tuple(Field(*f) for f in fields)) for off, rname, fields in regs]
        items += [Register(bname, rname, off, (Field("VALUE", 0, 31),), documented=False, note=note)
                  for off, rname, note in extra[bname]]
        items.sort(key=lambda r: r.offset)
        blocks[bname] = Block(bname, bid, tuple(items))
        for r in items:
            if r.full_name in by_name or r.offset in by_offset:
                raise AssertionError(f"duplicate register {r.full_name} @0x{r.offset:04x}")
            by_name[r.full_name] = r
            by_offset[r.offset] = r
    return blocks, by_name, by_offset


BLOCKS, REGISTERS, _BY_OFFSET = _build()
TARGETS: dict[int, Block] = {b.target: b for b in BLOCKS.values() if b.target is not None}
# Block of each 4 KiB page of the per-core MMIO window (0x0xxx PC, 0x1xxx CNA, 0x3xxx CORE, ...).
PAGE_BLOCK: dict[int, str] = {r.offset >> 12: r.block for r in REGISTERS.values()}


def register(name_or_offset: str | int | Register) -> Register:
    """Look a register up by full name (``"CNA_CONV_CON1"``) or by offset (``0x100C``)."""
    if isinstance(name_or_offset, Register):
        return name_or_offset
    if isinstance(name_or_offset, int):
        reg = _BY_OFFSET.get(name_or_offset)
        if reg is None:
            raise CompileError(f"no RK3588 NPU register at offset 0x{name_or_offset:04x}")
        return reg
    reg = REGISTERS.get(name_or_offset)
    if reg is None:
        raise CompileError(f"unknown RK3588 NPU register {name_or_offset!r}")
    return reg


def lookup_offset(offset: int) -> Register | None:
    """The register at ``offset`` or None."""
    return _BY_OFFSET.get(offset)


def block_of_target(target: int) -> Block | None:
    """The block a regcmd target id (e.g. 0x0201) writes to, or None."""
    return TARGETS.get(target)


def pack(reg: str | int | Register, **fields: int) -> int:
    """Assemble a 32-bit register value from named fields; omitted fields are 0.

    Raises CompileError naming register and field when a field is unknown or a value does not fit (values are
    unsigned; use :func:`twos` for negative quantities such as offsets).
    """
    r = register(reg)
    value = 0
    for name, v in fields.items():
        f = r.field(name)
        if not isinstance(v, int):
            raise CompileError(f"{r.full_name}.{name}: value {v!r} is not an integer")
        if v < 0 or v > f.max:
            raise CompileError(f"{r.full_name}.{name}: value {v} does not fit {f.width} bits [{f.high}:{f.low}]")
        value |= int(v) << f.low
    return value


def unpack(reg: str | int | Register, value: int) -> dict[str, int]:
    """Split a 32-bit value into all fields of the register (reserved fields included)."""
    r = register(reg)
    if not 0 <= value <= 0xFFFFFFFF:
        raise CompileError(f"{r.full_name}: value {value} is not a 32-bit unsigned integer")
    return {f.name: (value >> f.low) & f.max for f in r.fields}


def twos(value: int, bits: int) -> int:
    """Two's complement encoding of a signed ``value`` in ``bits`` bits (e.g. OUT_CVT_OFFSET = zp - 0x80)."""
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise CompileError(f"value {value} does not fit a {bits}-bit field")
    return value & ((1 << bits) - 1)


def untwos(value: int, bits: int) -> int:
    """Inverse of :func:`twos`: read a ``bits``-bit field as a signed integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@cache
def block_offsets(block: str) -> frozenset[int]:
    """Register offsets belonging to ``block`` (the registers a regcmd word of that target may write)."""
    return frozenset(r.offset for r in BLOCKS[block].registers)
