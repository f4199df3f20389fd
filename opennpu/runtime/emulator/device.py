"""The emulated NPU core: program controller (regcmd fetch, PC chain), register files, task execution.

``Emulator(memory_size, registers)`` sees only emulated memory and the regcmd words in it, never the IR.
``run(regcmd_address, count)`` starts like the kernel (rocket_job.c): PC_DATA_AMOUNT = (count + 1) / 2 - 1,
then the PC fetches ``2 * (amount + 1)`` words, applies them in order, executes the task at the op-enable
word and follows the chain set by the tail (PC_BASE_ADDRESS / PC_REGISTER_AMOUNTS) until a task has no next
address.

Word handling (docs/rk3588-hardware.md "The regcmd word and the task tail"):
* 0: null entry, ignored;
* target = block id | 1 (CNA 0x0201, CORE 0x0801, DPU 0x1001, DPU_RDMA 0x2001, PPU...): a register write; the
  offset must be a register of that block;
* PC (0x0101) writes: only PC_BASE_ADDRESS (next task) and PC_REGISTER_AMOUNTS (its amount);
* 0x0041: the "before op_en" word; 0x0081 to PC_OPERATION_ENABLE (0x0008): op-enable. The value enables blocks
  with GLOBAL_OPERATION_ENABLE's bit layout (CNA bit 0, CORE 2, DPU 3, DPU_RDMA 4, PPU 5, PPU_RDMA 6); Mesa
  writes 0x1D, the TRM example 0x7F. A conv task needs CNA|CORE|DPU|DPU_RDMA; a pool task exactly
  PPU|PPU_RDMA (0x60, ppu.py).
Errors: DeviceError for anything the device would fault or hang on (DMA out of range, unknown targets or
registers, chain loops, misaligned chain addresses, a fetch without op-enable, register combinations the model
does not honour); ProgramFormatError for a zero word count.
"""

from __future__ import annotations

from dataclasses import dataclass

from opennpu.errors import DeviceError, ProgramFormatError

from . import npu_math as nm
from .conv import ConvJob, run_conv
from .decoder import (
    PC_BASE_ADDRESS,
    PC_OPERATION_ENABLE,
    PC_REGISTER_AMOUNTS,
    TARGET_OP_ENABLE,
    TARGET_PRE_OP_ENABLE,
    RegisterFile,
    RegisterSpec,
    decode_word,
)
from .lut import LutRam
from .memory import Memory
from .ppu import PoolJob, run_pool

PC_TARGET = 0x0101
TASK_ALIGN = 64
OP_EN_CNA, OP_EN_CORE, OP_EN_DPU, OP_EN_DPU_RDMA, OP_EN_PPU, OP_EN_PPU_RDMA = 1, 4, 8, 16, 32, 64
CONV_BLOCKS = OP_EN_CNA | OP_EN_CORE | OP_EN_DPU | OP_EN_DPU_RDMA
POOL_BLOCKS = OP_EN_PPU | OP_EN_PPU_RDMA
IRQ_DPU_0 = 1 << 8
IRQ_PPU_0 = 1 << 10  # PC_INTERRUPT_MASK bit 10: PPU group 0 (TRM)


@dataclass(frozen=True)
class TaskRecord:
    """What one executed task did (for traces and tests)."""

    addr: int
    words: int
    kind: str  # "conv" | "pool"
    job: ConvJob | PoolJob | None


class Emulator:
    """One emulated NPU core with ``memory_size`` bytes of DRAM at NPU address 0."""

    def __init__(self, memory_size: int, registers: RegisterSpec, rounding: nm.RoundingModel = nm.DEFAULT_ROUNDING,
                 max_tasks: int = 1 << 16) -> None:
        if not isinstance(registers, RegisterSpec):
            raise DeviceError("the emulator needs a RegisterSpec (register table data) from the device wiring")
        self.memory = Memory(memory_size)
        self.spec = registers
        self.rounding = rounding
        self.max_tasks = max_tasks
        self.regs = RegisterFile(registers)
        self.irq_raw = 0
        self.trace: list[TaskRecord] = []
        self.lut = LutRam()  # the DPU LUT RAM, written through register writes (emulator/lut.py)
        self._lut_ports = {registers.by_name.get("DPU_LUT_ACCESS_CFG"): self.lut.access_cfg,
                           registers.by_name.get("DPU_LUT_ACCESS_DATA"): self.lut.access_data}
        self._lut_ports.pop(None, None)

    # ------------------------------------------------------------------ memory helpers
    def write(self, addr: int, buf) -> None:
        self.memory.write(addr, buf, "host write")

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.memory.read(addr, nbytes, "host read").tobytes()

    # ------------------------------------------------------------------ program controller
    def run(self, regcmd_address: int, count: int) -> list[TaskRecord]:
        """Run the chain starting at ``regcmd_address`` with ``count`` words in the first task (as
        ``drm_rocket_task``). Returns the records of the tasks executed by this call."""
        if not isinstance(count, int) or count < 1:
            raise ProgramFormatError(f"regcmd_count {count!r} must be a positive integer (rocket_job.c rejects 0)")
        amount = (count + 1) // 2 - 1
        if amount > 0xFFFF:
            raise DeviceError(f"regcmd_count {count} does not fit PC_REGISTER_AMOUNTS (16 bits)")
        addr = regcmd_address
        seen: set[int] = set()
        done: list[TaskRecord] = []
        while True:
            if not 0 <= addr <= 0xFFFFFFFF or addr % TASK_ALIGN:
                raise DeviceError(f"regcmd address 0x{addr:x} is not a 64-byte aligned 32-bit NPU address")
            if addr in seen:
                raise DeviceError(f"regcmd chain loops back to 0x{addr:x} after {len(done)} tasks")
            if len(done) >= self.max_tasks:
                raise DeviceError(f"regcmd chain longer than {self.max_tasks} tasks")
            seen.add(addr)
            n = 2 * (amount + 1)
            words = self.memory.read_words(addr, n, f"regcmd fetch of task {len(done)}")
            rec, next_addr, next_amount = self._run_fetch(addr, words)
            done.append(rec)
            self.trace.append(rec)
            if not next_addr:
                return done
            addr, amount = next_addr, next_amount

    def _run_fetch(self, addr: int, words: list[int]) -> tuple[TaskRecord, int, int]:
        next_addr, next_amount = 0, 0
        pre_op = False
        record: TaskRecord | None = None
        self.regs.clear_written()
        for i, word in enumerate(words):
            where = f"task at 0x{addr:x}, word {i}"
            if word == 0:
                continue
            if record is not None:
                raise DeviceError(f"{where}: register word 0x{word:016x} after the op-enable word")
            target, value, reg = decode_word(word)
            if target == TARGET_PRE_OP_ENABLE:
                pre_op = True
            elif target == TARGET_OP_ENABLE:
                if reg != PC_OPERATION_ENABLE:
                    raise DeviceError(f"{where}: op-enable word addresses 0x{reg:04x}, not PC_OPERATION_ENABLE")
                if not pre_op:
                    raise DeviceError(f"{where}: op-enable without the preceding 0x0041 word")
                job = self._execute(value, where)
                record = TaskRecord(addr, len(words), "pool" if isinstance(job, PoolJob) else "conv", job)
            elif target == PC_TARGET:
                if reg == PC_BASE_ADDRESS:
                    next_addr = value
                elif reg == PC_REGISTER_AMOUNTS:
                    if value >> 16:
                        raise DeviceError(f"{where}: PC_REGISTER_AMOUNTS 0x{value:x} sets reserved bits")
                    next_amount = value
                else:
                    raise DeviceError(f"{where}: PC register 0x{reg:04x} cannot be written by a regcmd stream")
            else:
                self.regs.write(target, reg, value, where)
                port = self._lut_ports.get(reg)
                if port is not None:  # LUT RAM access: a side effect of the write itself
                    port(self.regs, where)
        if record is None:
            raise DeviceError(f"task at 0x{addr:x}: {len(words)} fetched words end without an op-enable word "
                              "(0x0081...0008); the PC would wait forever")
        if next_amount and not next_addr:
            raise DeviceError(f"task at 0x{addr:x}: PC_REGISTER_AMOUNTS={next_amount} without a next address")
        return record, next_addr, next_amount

    def _execute(self, enable: int, where: str) -> ConvJob | PoolJob:
        if enable >> 7:
            raise DeviceError(f"{where}: op-enable value 0x{enable:x} sets bits above PPU_RDMA")
        if enable & POOL_BLOCKS:  # a PPU task reading DRAM (off-flying); DPU -> PPU flying mode is not modelled
            if enable & POOL_BLOCKS != POOL_BLOCKS or enable & CONV_BLOCKS:
                raise DeviceError(f"{where}: op-enable value 0x{enable:x}: a pool task needs exactly PPU and "
                                  "PPU_RDMA (0x60); conv + PPU in one task (flying mode) is not modelled")
            job = run_pool(self.regs, self.memory, where)
            self.irq_raw |= IRQ_PPU_0
            return job
        missing = [n for n, b in (("CNA", OP_EN_CNA), ("CORE", OP_EN_CORE), ("DPU", OP_EN_DPU),
                                  ("DPU_RDMA", OP_EN_DPU_RDMA)) if not enable & b]
        if missing:
            raise DeviceError(f"{where}: op-enable value 0x{enable:x} does not enable {', '.join(missing)} "
                              "(a conv task needs CNA, CORE, DPU and DPU_RDMA)")
        job = run_conv(self.regs, self.memory, self.rounding, self.lut)
        self.irq_raw |= IRQ_DPU_0
        return job
