"""RK3588 NPU register command streams ("regcmd"): 64-bit words, tasks, the chaining tail, and a validating
decoder.

Facts and sources (details and open questions: docs/rk3588-hardware.md):

* Word format: ``target << 48 | value32 << 16 | reg_offset16`` -- Mesa ``rkt_regcmd.c`` ``emit_raw()``
  (bminor/mesa-mesa @5b829658). ``target = block_id | 0x1`` for a register write (``emit()``), see
  registers.py for the block ids.
* Every task ends with a 4-word tail -- Mesa ``rkt_regcmd.c`` end of ``fill_first_regcmd()``, patched by
  ``compile_operation()`` in ``rkt_ml.c`` (commit 17355f71, "positions are relative to end"):

  1. ``[n-4]`` PC_BASE_ADDRESS = NPU address of the next task (0, or a raw zero word, when there is none);
  2. ``[n-3]`` PC_REGISTER_AMOUNTS = amount of words the PC fetches for the next task (0 when none);
  3. ``[n-2]`` ``0x0041_0000_0000_0000`` -- TRM quote in Mesa: "before op_en, 64'h0041_xxxx_xxxx_xxxx must be
     set";
  4. ``[n-1]`` ``0x0081`` word writing offset 0x0008 (PC_OPERATION_ENABLE) -- TRM quote in Mesa:
     "64'h0081_0000_007f_0008 will set each block's op_en (CNA, CORE, ..., PPU_RDMA)". Mesa itself writes the
     value ``RESERVED_0(14) | OP_EN(1)`` = 0x1D, the TRM example 0x7F (see :data:`MESA_OP_ENABLE_VALUE`).

* Amount encoding. The kernel programs the first task with
  ``PC_DATA_AMOUNT = (regcmd_count + 1) / 2 - 1`` (torvalds/linux ``drivers/accel/rocket/rocket_job.c``
  ``rocket_job_hw_submit``), i.e. the PC fetches ``2 * (amount + 1)`` words (widgetii/orangepi5plus-npu
  ``qemu/NPU_HW_QUIRKS.md`` §5 and its QEMU model). Mesa chains with ``ALIGN((n_next - 4) / 2, 2)``. The two
  formulas agree exactly when ``n % 4 == 2`` (Mesa's conv tasks have n = 130), so :func:`link` pads every task
  with zero words before its tail until ``n % 4 == 2`` [I]. A zero word is what Mesa itself emits at ``[n-4]``
  for single-task operations; widgetii's notes call it a null entry.
* Tasks start on 64-byte boundaries -- Mesa ``compile_operation()``: ``regcmd_offset += ALIGN(size*8, 64)``.
* Addresses are 32-bit NPU IOVAs (``drm_rocket_task.regcmd`` is u32; PC_BASE_ADDRESS.PC_SOURCE_ADDR is bits
  [31:4]).

Error policy: structural problems of a word stream raise ProgramFormatError; problems the device would hit
while following the chain (address out of range, unaligned, a loop) raise DeviceError; values that cannot
be encoded raise CompileError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from opennpu.errors import CompileError, DeviceError, ProgramFormatError

from .registers import (
    BLOCKS,
    TARGET_OP_ENABLE,
    TARGET_PRE_OP_ENABLE,
    TARGETS,
    Register,
    block_offsets,
    pack,
    register,
)

TAIL_WORDS = 4
TASK_ALIGN = 64
WORD_BYTES = 8
MAX_ADDRESS = 0xFFFFFFFF
PRE_OP_ENABLE_WORD = TARGET_PRE_OP_ENABLE << 48
# Mesa rkt_regcmd.c: PC_OPERATION_ENABLE_RESERVED_0(14) | PC_OPERATION_ENABLE_OP_EN(1) = (14 << 1) | 1.
MESA_OP_ENABLE_VALUE = 0x1D
# The TRM example quoted in Mesa ("64'h0081_0000_007f_0008").
TRM_OP_ENABLE_VALUE = 0x7F
_PC_BASE_ADDRESS = register("PC_BASE_ADDRESS")
_PC_REGISTER_AMOUNTS = register("PC_REGISTER_AMOUNTS")
_PC_OPERATION_ENABLE = register("PC_OPERATION_ENABLE")
_PC_TARGET = 0x0101
_MAX_FETCH = 2 * (0xFFFF + 1)  # PC_DATA_AMOUNT is 16 bits


# ---------------------------------------------------------------------------------------------- words
def encode_word(target: int, value: int, reg: int) -> int:
    """``target << 48 | value << 16 | reg`` with range checks (16/32/16 bits)."""
    if not 0 <= target <= 0xFFFF:
        raise CompileError(f"regcmd target 0x{target:x} does not fit 16 bits")
    if not 0 <= value <= 0xFFFFFFFF:
        raise CompileError(f"regcmd value {value} does not fit 32 bits (register 0x{reg:04x})")
    if not 0 <= reg <= 0xFFFF:
        raise CompileError(f"regcmd register offset 0x{reg:x} does not fit 16 bits")
    return target << 48 | value << 16 | reg


def decode_word(word: int) -> tuple[int, int, int]:
    """``(target, value, reg)`` of a 64-bit word."""
    if not 0 <= word <= 0xFFFFFFFFFFFFFFFF:
        raise ProgramFormatError(f"regcmd word {word:#x} is not a 64-bit unsigned integer")
    return word >> 48, (word >> 16) & 0xFFFFFFFF, word & 0xFFFF


def write_word(reg: str | int | Register, value: int) -> int:
    """The word writing ``value`` to a register of a regcmd-addressable block (target = block id | 1)."""
    r = register(reg)
    target = BLOCKS[r.block].target
    if target is None:
        raise CompileError(f"{r.full_name}: block {r.block} cannot be written through regcmd words")
    return encode_word(target, value, r.offset)


def op_enable_word(value: int = MESA_OP_ENABLE_VALUE) -> int:
    """The last tail word: target 0x0081, register PC_OPERATION_ENABLE (0x0008)."""
    return encode_word(TARGET_OP_ENABLE, value, _PC_OPERATION_ENABLE.offset)


def words_to_bytes(words: Iterable[int]) -> bytes:
    """Little-endian uint64 serialization (the NPU reads the buffer as an array of u64)."""
    return np.asarray(list(words), dtype=np.uint64).astype("<u8").tobytes()


def bytes_to_words(buf: bytes | bytearray | memoryview) -> list[int]:
    if len(buf) % WORD_BYTES:
        raise ProgramFormatError(f"regcmd buffer of {len(buf)} bytes is not a whole number of 64-bit words")
    return [int(w) for w in np.frombuffer(bytes(buf), dtype="<u8")]


# ---------------------------------------------------------------------------------------------- amounts
def kernel_amount(count: int) -> int:
    """PC_DATA_AMOUNT the kernel writes for a task of ``count`` words (rocket_job.c: ``(count + 1) / 2 - 1``)."""
    if count < 1:
        raise CompileError(f"a task needs at least one regcmd word, got {count}")
    return (count + 1) // 2 - 1


def fetch_count(amount: int) -> int:
    """Words the PC fetches for PC_DATA_AMOUNT ``amount`` (widgetii QEMU model: ``(amount + 1) * 2``)."""
    return 2 * (amount + 1)


def mesa_chain_amount(count: int) -> int:
    """The amount Mesa patches into the previous task's tail (rkt_ml.c: ``ALIGN((count - 4) / 2, 2)``)."""
    half = (count - TAIL_WORDS) // 2
    return (half + 1) & ~1


def padded_count(body_words: int) -> int:
    """Task length (body + zero padding + 4-word tail) with ``n % 4 == 2`` so kernel and Mesa amounts agree."""
    n = body_words + TAIL_WORDS
    return n + (2 - n) % 4


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


# ---------------------------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """One hardware task: the ordered register writes of its body (the tail is added by :func:`link`).

    Writes go to CNA/CORE/DPU/DPU_RDMA/PPU/PPU_RDMA registers; PC registers only appear in the tail.
    """

    writes: list[tuple[Register, int]] = field(default_factory=list)
    name: str = ""

    def write(self, reg: str | int | Register, value: int | None = None, **fields: int) -> Task:
        """Append a write: either a raw 32-bit ``value`` or named ``fields`` packed with registers.pack."""
        r = register(reg)
        if value is not None and fields:
            raise CompileError(f"{r.full_name}: give a raw value or fields, not both")
        v = pack(r, **fields) if value is None else value
        if not 0 <= v <= 0xFFFFFFFF:
            raise CompileError(f"{r.full_name}: value {v} does not fit 32 bits")
        self.writes.append((r, v))
        return self

    def body_words(self) -> list[int]:
        out = []
        for r, v in self.writes:
            if r.block == "PC":
                raise CompileError(f"{r.full_name}: PC registers are written only by the task tail")
            out.append(write_word(r, v))
        return out

    def words(self, next_addr: int | None = None, next_count: int | None = None,
              op_enable: int = MESA_OP_ENABLE_VALUE) -> list[int]:
        """Body, zero padding (to ``n % 4 == 2``), then the 4-word tail chaining to ``next_addr``."""
        body = self.body_words()
        n = padded_count(len(body))
        if n > _MAX_FETCH:
            raise CompileError(f"task {self.name!r} has {n} regcmd words, more than the PC can fetch ({_MAX_FETCH})")
        if next_addr is None:
            nxt, amount = 0, 0
        else:
            _check_addr(next_addr, CompileError)
            if next_count is None or next_count % 4 != 2 or next_count < TAIL_WORDS or next_count > _MAX_FETCH:
                raise CompileError(f"next task word count {next_count} is not a valid padded task length")
            nxt, amount = next_addr, kernel_amount(next_count)
        tail = [
            write_word(_PC_BASE_ADDRESS, nxt),
            write_word(_PC_REGISTER_AMOUNTS, amount),
            PRE_OP_ENABLE_WORD,
            op_enable_word(op_enable),
        ]
        return body + [0] * (n - len(body) - TAIL_WORDS) + tail


def _check_addr(addr: int, err: type[Exception]) -> None:
    if not 0 <= addr <= MAX_ADDRESS:
        raise err(f"regcmd address 0x{addr:x} is outside the 32-bit NPU address space")
    if addr % TASK_ALIGN:
        raise err(f"regcmd address 0x{addr:x} is not {TASK_ALIGN}-byte aligned")


@dataclass(frozen=True)
class Placement:
    """Where a linked task lives: NPU address, word count (``drm_rocket_task.regcmd_count``) and the
    PC_DATA_AMOUNT for it."""

    addr: int
    count: int

    @property
    def amount(self) -> int:
        return kernel_amount(self.count)


def link(tasks: Sequence[Task], base_addr: int, op_enable: int = MESA_OP_ENABLE_VALUE
         ) -> tuple[bytes, list[Placement]]:
    """Lay ``tasks`` out from ``base_addr`` (64-byte aligned each) and chain each to the next.

    Returns the regcmd buffer (zero-filled between tasks) and the placement of each task; the first placement
    is what the kernel programs (``PC_BASE_ADDRESS``, ``PC_REGISTER_AMOUNTS``).
    """
    if not tasks:
        raise CompileError("cannot link an empty task list")
    _check_addr(base_addr, CompileError)
    counts = [padded_count(len(t.writes)) for t in tasks]
    places, addr = [], base_addr
    for c in counts:
        places.append(Placement(addr, c))
        addr += _align(c * WORD_BYTES, TASK_ALIGN)
    if addr - 1 > MAX_ADDRESS:
        raise CompileError(f"regcmd buffer would end at 0x{addr:x}, beyond the 32-bit NPU address space")
    buf = bytearray(addr - base_addr)
    for i, (t, p) in enumerate(zip(tasks, places, strict=True)):
        nxt = places[i + 1] if i + 1 < len(places) else None
        words = t.words(nxt.addr if nxt else None, nxt.count if nxt else None, op_enable)
        assert len(words) == p.count
        off = p.addr - base_addr
        buf[off:off + p.count * WORD_BYTES] = words_to_bytes(words)
    return bytes(buf), places


# ---------------------------------------------------------------------------------------------- decoding
@dataclass
class DecodedTask:
    """A task read back from a word stream."""

    addr: int
    count: int
    writes: list[tuple[Register, int]]
    next_addr: int | None
    next_amount: int
    pre_op_value: int
    op_enable_value: int

    def as_task(self) -> Task:
        return Task(list(self.writes))


def decode_task(words: Sequence[int], addr: int = 0) -> DecodedTask:
    """Validate and decode one task's words (body, optional zero padding, 4-word tail)."""
    n = len(words)
    if n < TAIL_WORDS:
        raise ProgramFormatError(f"task at 0x{addr:x} has {n} words, fewer than the {TAIL_WORDS}-word tail")
    body, tail = words[: n - TAIL_WORDS], words[n - TAIL_WORDS:]
    writes: list[tuple[Register, int]] = []
    padding = False
    for i, w in enumerate(body):
        target, value, reg = decode_word(w)
        where = f"task at 0x{addr:x}, word {i}"
        if w == 0:
            padding = True
            continue
        if padding:
            raise ProgramFormatError(f"{where}: register write after zero padding (amount mismatch or corrupt)")
        if target in (TARGET_PRE_OP_ENABLE, TARGET_OP_ENABLE):
            raise ProgramFormatError(f"{where}: op-enable word 0x{target:04x} before the task tail")
        block = TARGETS.get(target)
        if block is None:
            raise ProgramFormatError(f"{where}: unknown regcmd target id 0x{target:04x}")
        if block.name == "PC":
            raise ProgramFormatError(f"{where}: PC register 0x{reg:04x} written outside the task tail")
        if reg not in block_offsets(block.name):
            raise ProgramFormatError(f"{where}: 0x{reg:04x} is not a {block.name} register")
        writes.append((register(reg), value))

    t0, v0, r0 = decode_word(tail[0])
    where = f"task at 0x{addr:x} tail"
    if tail[0] == 0:
        next_addr = None
    elif t0 == _PC_TARGET and r0 == _PC_BASE_ADDRESS.offset:
        next_addr = v0 or None
    else:
        raise ProgramFormatError(f"{where}: word n-4 is not PC_BASE_ADDRESS (amount mismatch or corrupt stream)")
    t1, v1, r1 = decode_word(tail[1])
    if t1 != _PC_TARGET or r1 != _PC_REGISTER_AMOUNTS.offset:
        raise ProgramFormatError(f"{where}: word n-3 is not PC_REGISTER_AMOUNTS (amount mismatch or corrupt)")
    if v1 >> 16:
        raise ProgramFormatError(f"{where}: PC_REGISTER_AMOUNTS 0x{v1:x} sets reserved bits")
    t2, v2, r2 = decode_word(tail[2])
    if t2 != TARGET_PRE_OP_ENABLE:
        raise ProgramFormatError(f"{where}: word n-2 is not the 0x0041 pre-op-enable word")
    t3, v3, r3 = decode_word(tail[3])
    if t3 != TARGET_OP_ENABLE or r3 != _PC_OPERATION_ENABLE.offset:
        raise ProgramFormatError(f"{where}: last word is not the 0x0081 op-enable word for register 0x0008")
    if next_addr is None and v1 != 0:
        raise ProgramFormatError(f"{where}: PC_REGISTER_AMOUNTS={v1} without a next task address")
    if next_addr is not None and fetch_count(v1) < TAIL_WORDS:
        raise ProgramFormatError(f"{where}: PC_REGISTER_AMOUNTS={v1} is too small for a task tail")
    return DecodedTask(addr, n, writes, next_addr, v1, (v2 << 16) | r2, v3)


def decode_chain(buf: bytes | bytearray | memoryview, buf_addr: int, first_addr: int, first_amount: int,
                 max_tasks: int = 1 << 20) -> list[DecodedTask]:
    """Follow the PC chain through a regcmd buffer mapped at NPU address ``buf_addr``.

    ``first_addr``/``first_amount`` are what the kernel writes to PC_BASE_ADDRESS/PC_REGISTER_AMOUNTS. Each step
    fetches ``2 * (amount + 1)`` words; the chain ends at a task whose tail has no next address. Raises
    DeviceError for addresses outside the buffer, unaligned or revisited addresses (a loop), and
    ProgramFormatError for malformed tasks or a buffer that ends inside a fetch.
    """
    mem = bytes(buf)
    end = buf_addr + len(mem)
    tasks: list[DecodedTask] = []
    seen: set[int] = set()
    addr, amount = first_addr, first_amount
    while True:
        if not 0 <= amount <= 0xFFFF:
            raise ProgramFormatError(f"PC_DATA_AMOUNT {amount} does not fit 16 bits")
        _check_addr(addr, DeviceError)
        if addr in seen:
            raise DeviceError(f"regcmd chain loops back to task at 0x{addr:x} after {len(tasks)} tasks")
        if not buf_addr <= addr < end:
            raise DeviceError(f"regcmd address 0x{addr:x} is outside the command buffer "
                              f"[0x{buf_addr:x}, 0x{end:x})")
        n = fetch_count(amount)
        stop = addr + n * WORD_BYTES
        if stop > end:
            raise ProgramFormatError(f"task at 0x{addr:x} needs {n} words but the buffer ends after "
                                     f"{(end - addr) // WORD_BYTES} (truncated buffer or amount mismatch)")
        off = addr - buf_addr
        task = decode_task(bytes_to_words(mem[off:off + n * WORD_BYTES]), addr)
        tasks.append(task)
        seen.add(addr)
        if task.next_addr is None:
            return tasks
        if len(tasks) >= max_tasks:
            raise DeviceError(f"regcmd chain longer than {max_tasks} tasks")
        addr, amount = task.next_addr, task.next_amount


def decode_program(buf: bytes | bytearray | memoryview, buf_addr: int, first_addr: int, first_count: int
                   ) -> list[DecodedTask]:
    """Like :func:`decode_chain`, starting from a ``drm_rocket_task`` (address, word count) as the kernel does."""
    if first_count < 1:
        raise ProgramFormatError(f"regcmd_count {first_count} must be > 0 (rocket_job.c rejects 0)")
    return decode_chain(buf, buf_addr, first_addr, kernel_amount(first_count))
