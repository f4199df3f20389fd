"""RK3588 register table, regcmd words, task chaining and the validating decoder."""

from __future__ import annotations

import random

import pytest

from opennpu.errors import CompileError, DeviceError, ProgramFormatError
from opennpu.targets.rk3588 import regcmd as C
from opennpu.targets.rk3588 import registers as R

BASE = 0x0010_0000


# ---------------------------------------------------------------------------------------------- the table
def test_table_covers_every_xml_register_and_bit():
    documented = [r for r in R.REGISTERS.values() if r.documented]
    assert len(documented) == 199  # <reg32> elements in registers.xml @5b829658
    assert {b: len(v.registers) for b, v in R.BLOCKS.items()}["CNA"] == 52
    for r in R.REGISTERS.values():
        covered = 0
        for f in r.fields:
            assert 0 <= f.low <= f.high <= 31, r
            assert covered & f.mask == 0, f"{r.full_name}.{f.name} overlaps"
            covered |= f.mask
        assert covered == 0xFFFFFFFF, r.full_name
        assert R.PAGE_BLOCK[r.offset >> 12] == r.block


def test_block_pages_and_targets():
    pages = {"PC": 0x0, "CNA": 0x1, "CORE": 0x3, "DPU": 0x4, "DPU_RDMA": 0x5, "PPU": 0x6, "PPU_RDMA": 0x7,
             "DDMA": 0x8, "SDMA": 0x9, "GLOBAL": 0xF}
    for b, page in pages.items():
        assert {r.offset >> 12 for r in R.BLOCKS[b].registers} == {page}
    assert {b.name: b.target for b in R.BLOCKS.values()} == {
        "PC": 0x0101, "CNA": 0x0201, "CORE": 0x0801, "DPU": 0x1001, "DPU_RDMA": 0x2001, "PPU": 0x4001,
        "PPU_RDMA": 0x8001, "DDMA": None, "SDMA": None, "GLOBAL": None}


def test_lookup_and_undocumented_registers():
    assert R.register(0x100C).full_name == "CNA_CONV_CON1"
    assert R.register("DPU_RDMA_RDMA_S_POINTER").offset == 0x5004
    assert R.lookup_offset(0x1018) is None
    for off in (0x3030, 0x40C4, 0x5024):
        assert not R.register(off).documented
    with pytest.raises(CompileError, match="0x1018"):
        R.register(0x1018)
    with pytest.raises(CompileError, match="NOPE"):
        R.register("CNA_NOPE")


def test_pack_unpack():
    v = R.pack("CNA_DATA_SIZE0", DATAIN_WIDTH=2047, DATAIN_HEIGHT=5)
    assert R.unpack("CNA_DATA_SIZE0", v) == {"RESERVED_0": 0, "DATAIN_WIDTH": 2047, "RESERVED_1": 0,
                                             "DATAIN_HEIGHT": 5}
    with pytest.raises(CompileError, match=r"CNA_DATA_SIZE0\.DATAIN_WIDTH.*11 bits"):
        R.pack("CNA_DATA_SIZE0", DATAIN_WIDTH=2048)
    with pytest.raises(CompileError, match=r"CNA_CONV_CON3\.CONV_X_STRIDE"):
        R.pack("CNA_CONV_CON3", CONV_X_STRIDE=-1)
    with pytest.raises(CompileError, match="no field 'STRIDE'"):
        R.pack("CNA_CONV_CON3", STRIDE=1)
    assert R.twos(-128, 32) == 0xFFFFFF80 and R.untwos(0xFFFFFF80, 32) == -128
    with pytest.raises(CompileError):
        R.twos(1 << 16, 16)


# ---------------------------------------------------------------------------------------------- golden words
def test_golden_words():
    # CNA_CONV_CON1 (0x100C) for a 1-channel input, depthwise: CONV_MODE[3:0]=3, ARGB_IN[15:12]=8,
    # GROUP_LINE_OFF[29]=1, NONALIGN_DMA[30]=1 -> 3 + (8 << 12) + (1 << 29) + (1 << 30) = 0x60008003;
    # word = 0x0201 << 48 | 0x60008003 << 16 | 0x100C.
    assert C.write_word("CNA_CONV_CON1", R.pack("CNA_CONV_CON1", CONV_MODE=3, ARGB_IN=8, GROUP_LINE_OFF=1,
                                                NONALIGN_DMA=1)) == 0x0201_6000_8003_100C
    # CNA_DATA_SIZE0 (0x1020): DATAIN_WIDTH[26:16]=224, DATAIN_HEIGHT[10:0]=224 -> (0xE0 << 16) | 0xE0.
    assert C.write_word("CNA_DATA_SIZE0", R.pack("CNA_DATA_SIZE0", DATAIN_WIDTH=224, DATAIN_HEIGHT=224)) \
        == 0x0201_00E0_00E0_1020
    # CNA_WEIGHT_SIZE2 (0x1038): WEIGHT_WIDTH[28:24]=3, WEIGHT_HEIGHT[20:16]=3, WEIGHT_KERNELS[13:0]=32
    # -> (3 << 24) | (3 << 16) | 32 = 0x03030020.
    assert C.write_word("CNA_WEIGHT_SIZE2", R.pack("CNA_WEIGHT_SIZE2", WEIGHT_WIDTH=3, WEIGHT_HEIGHT=3,
                                                   WEIGHT_KERNELS=32)) == 0x0201_0303_0020_1038
    # CORE_DATAOUT_SIZE_0 (0x3014), stored as value-1: HEIGHT[31:16]=112-1, WIDTH[15:0]=112-1 -> 0x006F006F.
    assert C.write_word("CORE_DATAOUT_SIZE_0", R.pack("CORE_DATAOUT_SIZE_0", DATAOUT_HEIGHT=111,
                                                      DATAOUT_WIDTH=111)) == 0x0801_006F_006F_3014
    # DPU_BS_CFG (0x4040) as Mesa programs it: BS_ALU_ALGO[19:16]=2, BS_ALU_SRC[8]=1, BS_RELU_BYPASS[6]=1,
    # BS_MUL_BYPASS[4]=1 -> 0x20000 + 0x100 + 0x40 + 0x10 = 0x20150.
    assert C.write_word("DPU_BS_CFG", R.pack("DPU_BS_CFG", BS_ALU_ALGO=2, BS_ALU_SRC=1, BS_RELU_BYPASS=1,
                                             BS_MUL_BYPASS=1)) == 0x1001_0002_0150_4040
    # DPU_DST_SURF_STRIDE (0x4024): DST_SURF_STRIDE[31:4] = 112*112 -> 12544 << 4 = 0x31000.
    assert C.write_word("DPU_DST_SURF_STRIDE", R.pack("DPU_DST_SURF_STRIDE", DST_SURF_STRIDE=12544)) \
        == 0x1001_0003_1000_4024
    # DPU_RDMA_RDMA_WEIGHT (0x5068): E[31:24]=N[23:16]=B[15:8]=M[7:0]=1 -> 0x01010101.
    assert C.write_word("DPU_RDMA_RDMA_WEIGHT", R.pack("DPU_RDMA_RDMA_WEIGHT", E_WEIGHT=1, N_WEIGHT=1,
                                                       B_WEIGHT=1, M_WEIGHT=1)) == 0x2001_0101_0101_5068
    # PPU_POOLING_KERNEL_CFG (0x6034): STRIDE_H[23:20]=2, STRIDE_W[19:16]=2, KH[11:8]=3, KW[3:0]=3
    # -> 0x200000 + 0x20000 + 0x300 + 0x3 = 0x220303.
    assert C.write_word("PPU_POOLING_KERNEL_CFG", R.pack("PPU_POOLING_KERNEL_CFG", KERNEL_STRIDE_HEIGHT=2,
                                                         KERNEL_STRIDE_WIDTH=2, KERNEL_HEIGHT=3,
                                                         KERNEL_WIDTH=3)) == 0x4001_0022_0303_6034
    # Tail words: Mesa's op enable RESERVED_0[31:1]=14, OP_EN[0]=1 -> (14 << 1) | 1 = 0x1D; the TRM example
    # quoted in Mesa is 64'h0081_0000_007f_0008.
    assert R.pack("PC_OPERATION_ENABLE", RESERVED_0=14, OP_EN=1) == C.MESA_OP_ENABLE_VALUE
    assert C.op_enable_word(C.TRM_OP_ENABLE_VALUE) == 0x0081_0000_007F_0008
    assert C.PRE_OP_ENABLE_WORD == 0x0041_0000_0000_0000
    # PC_BASE_ADDRESS (0x0010) with next task at 0x00100040: 0x0101 << 48 | 0x00100040 << 16 | 0x0010.
    assert C.write_word("PC_BASE_ADDRESS", 0x0010_0040) == 0x0101_0010_0040_0010
    assert C.decode_word(0x0201_6000_8003_100C) == (0x0201, 0x60008003, 0x100C)


def test_amount_encodings():
    # rocket_job.c: (130 + 1) / 2 - 1 = 64 -> the PC fetches (64 + 1) * 2 = 130 words (widgetii §5).
    assert C.kernel_amount(130) == 64 and C.fetch_count(64) == 130
    assert C.mesa_chain_amount(130) == 64
    for n in range(6, 400, 4):  # n % 4 == 2: both formulas agree and round-trip exactly
        assert C.kernel_amount(n) == C.mesa_chain_amount(n) and C.fetch_count(C.kernel_amount(n)) == n
    assert C.kernel_amount(128) != C.mesa_chain_amount(128)  # why link() pads to n % 4 == 2
    assert [C.padded_count(b) % 4 for b in range(20)] == [2] * 20


# ---------------------------------------------------------------------------------------------- round trip
_WRITABLE = [r for r in R.REGISTERS.values() if r.block not in ("PC", "DDMA", "SDMA", "GLOBAL")]


def _random_tasks(rng: random.Random, n_tasks: int) -> list[C.Task]:
    tasks = []
    for i in range(n_tasks):
        t = C.Task(name=f"t{i}")
        for _ in range(rng.randrange(1, 140)):
            t.write(rng.choice(_WRITABLE), rng.getrandbits(32))
        tasks.append(t)
    return tasks


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_random_tasks(seed):
    rng = random.Random(seed)
    tasks = _random_tasks(rng, rng.randrange(1, 6))
    base = rng.randrange(0, 1 << 20) * 64
    buf, places = C.link(tasks, base)
    assert all(p.addr % 64 == 0 for p in places) and len(buf) % 64 == 0
    decoded = C.decode_chain(buf, base, places[0].addr, places[0].amount)
    assert [d.writes for d in decoded] == [t.writes for t in tasks]
    assert [d.addr for d in decoded] == [p.addr for p in places]
    assert all(d.op_enable_value == C.MESA_OP_ENABLE_VALUE for d in decoded)
    assert C.decode_program(buf, base, places[0].addr, places[0].count)[-1].next_addr is None
    # words -> task -> words is the identity
    for d, p in zip(decoded, places, strict=True):
        nxt = [q for q in places if q.addr > p.addr]
        words = d.as_task().words(nxt[0].addr if nxt else None, nxt[0].count if nxt else None)
        off = p.addr - base
        assert words == C.bytes_to_words(buf[off:off + 8 * p.count])


# ---------------------------------------------------------------------------------------------- malformed
def _program():
    t0 = C.Task().write("CNA_CONV_CON1", CONV_MODE=3).write("CORE_MISC_CFG", QD_EN=1)
    t1 = C.Task().write("DPU_BS_CFG", BS_BYPASS=1).write("DPU_RDMA_RDMA_WEIGHT", 0x01010101)
    t2 = C.Task().write("PPU_OPERATION_MODE_CFG", 0).write("CNA_PAD_CON0", PAD_TOP=1)
    buf, places = C.link([t0, t1, t2], BASE)
    return C.bytes_to_words(buf), places


def _idx(places, task: int, pos: int) -> int:
    """Word index of position ``pos`` (negative = from the end) of task ``task``."""
    p = places[task]
    start = (p.addr - BASE) // 8
    return start + (pos if pos >= 0 else p.count + pos)


def _set(task, pos, word):
    def mutate(words, places):
        words[_idx(places, task, pos)] = word
    return mutate


def _chain(task, addr_fn, amount_fn=None):
    def mutate(words, places):
        words[_idx(places, task, -4)] = C.write_word("PC_BASE_ADDRESS", addr_fn(places))
        if amount_fn is not None:
            words[_idx(places, task, -3)] = C.write_word("PC_REGISTER_AMOUNTS", amount_fn(places))
    return mutate


MALFORMED = [
    ("unknown target id", _set(0, 0, C.encode_word(0x0301, 0, 0x100C)), ProgramFormatError),
    ("target 0 with payload", _set(0, 0, C.encode_word(0, 5, 0x100C)), ProgramFormatError),
    ("target without write opcode", _set(0, 0, C.encode_word(0x0200, 0, 0x100C)), ProgramFormatError),
    ("DPU register under CNA target", _set(0, 0, C.encode_word(0x0201, 0, 0x4040)), ProgramFormatError),
    ("unknown CNA offset", _set(0, 1, C.encode_word(0x0201, 0, 0x1018)), ProgramFormatError),
    ("unaligned offset", _set(1, 0, C.encode_word(0x1001, 0, 0x4041)), ProgramFormatError),
    ("PC write in body", _set(1, 0, C.encode_word(0x0101, 1, 0x0008)), ProgramFormatError),
    ("op enable in body", _set(1, 1, C.op_enable_word()), ProgramFormatError),
    ("pre-op word in body", _set(2, 0, C.PRE_OP_ENABLE_WORD), ProgramFormatError),
    ("tail n-4 not PC_BASE_ADDRESS", _set(0, -4, C.write_word("CNA_CONV_CON1", 0)), ProgramFormatError),
    ("tail n-3 not REGISTER_AMOUNTS", _set(0, -3, C.write_word("PC_BASE_ADDRESS", 0)), ProgramFormatError),
    ("tail missing 0x0041", _set(1, -2, C.write_word("CORE_MISC_CFG", 0)), ProgramFormatError),
    ("op enable on wrong register", _set(2, -1, C.encode_word(0x0081, 0x1D, 0x0010)), ProgramFormatError),
    ("amount reserved bits", _set(0, -3, C.write_word("PC_REGISTER_AMOUNTS", 0x10002)), ProgramFormatError),
    ("amount without next address", _set(2, -3, C.write_word("PC_REGISTER_AMOUNTS", 2)), ProgramFormatError),
    ("next address with amount 0", _set(0, -3, C.write_word("PC_REGISTER_AMOUNTS", 0)), ProgramFormatError),
    ("next amount too large", _set(0, -3, C.write_word("PC_REGISTER_AMOUNTS", 4)), ProgramFormatError),
    ("write after zero padding", _set(0, 3, C.write_word("CORE_MISC_CFG", 1)), ProgramFormatError),
    ("chain to unaligned address", _chain(0, lambda p: p[1].addr + 16), DeviceError),
    ("chain past the buffer", _chain(0, lambda p: p[2].addr + 0x10000), DeviceError),
    ("chain below the buffer", _chain(1, lambda p: BASE - 64), DeviceError),
    ("chain loops to the first task", _chain(2, lambda p: p[0].addr, lambda p: p[0].amount), DeviceError),
    ("task chains to itself", _chain(1, lambda p: p[1].addr, lambda p: p[1].amount), DeviceError),
]


@pytest.mark.parametrize("name,mutate,err", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_streams(name, mutate, err):
    words, places = _program()
    C.decode_chain(C.words_to_bytes(words), BASE, places[0].addr, places[0].amount)  # intact program is fine
    mutate(words, places)
    with pytest.raises(err):
        C.decode_chain(C.words_to_bytes(words), BASE, places[0].addr, places[0].amount)


def test_malformed_entry_points():
    words, places = _program()
    buf = C.words_to_bytes(words)
    first = places[0]
    with pytest.raises(ProgramFormatError, match="truncated"):
        C.decode_chain(buf[: places[2].addr - BASE + 8 * 3], BASE, first.addr, first.amount)  # truncated
    with pytest.raises(ProgramFormatError):
        C.decode_chain(buf[: 8 * 3], BASE, first.addr, first.amount)
    with pytest.raises(ProgramFormatError):
        C.bytes_to_words(buf[:13])  # not whole words
    with pytest.raises(ProgramFormatError):
        C.decode_chain(buf, BASE, first.addr, first.amount - 1)  # amount mismatch (too small)
    with pytest.raises(ProgramFormatError):
        C.decode_chain(buf, BASE, first.addr, first.amount + 2)  # amount mismatch (too large)
    with pytest.raises(ProgramFormatError):
        C.decode_chain(buf, BASE, first.addr, 0x10000)  # amount does not fit 16 bits
    with pytest.raises(DeviceError):
        C.decode_chain(buf, BASE, 1 << 32, first.amount)  # outside the 32-bit space
    with pytest.raises(DeviceError):
        C.decode_chain(buf, BASE, first.addr + 8, first.amount)  # unaligned start
    with pytest.raises(ProgramFormatError):
        C.decode_program(buf, BASE, first.addr, 0)  # regcmd_count 0 (rocket_job.c rejects it)
    with pytest.raises(ProgramFormatError):
        C.decode_task([C.PRE_OP_ENABLE_WORD, C.op_enable_word()])  # shorter than a tail
    with pytest.raises(ProgramFormatError):
        C.decode_word(1 << 64)


def test_encoding_errors():
    with pytest.raises(CompileError, match="CNA_DATA_SIZE0.DATAIN_HEIGHT"):
        C.Task().write("CNA_DATA_SIZE0", DATAIN_HEIGHT=4096)
    with pytest.raises(CompileError, match="32 bits"):
        C.Task().write("CNA_FEATURE_DATA_ADDR", 1 << 32)
    with pytest.raises(CompileError, match="raw value or fields"):
        C.Task().write("CNA_CONV_CON1", 1, CONV_MODE=1)
    with pytest.raises(CompileError, match="PC registers"):
        C.Task().write("PC_TASK_CON", 1).body_words()
    with pytest.raises(CompileError, match="regcmd"):
        C.write_word("GLOBAL_OPERATION_ENABLE", 1)
    with pytest.raises(CompileError, match="aligned"):
        C.link([C.Task()], BASE + 8)
    with pytest.raises(CompileError, match="32-bit"):
        C.link([C.Task().write("CORE_MISC_CFG", 0)] * 2, 0xFFFF_FFC0)
    with pytest.raises(CompileError):
        C.link([], BASE)
    with pytest.raises(CompileError):
        C.encode_word(0x10001, 0, 0)
