"""Device-side view of register command words: the register table as plain data, and per-block register files.

The emulator never imports a target package. The register table (block target ids, register offsets, names and
bit fields) is *data handed in by the device wiring*: ``RegisterSpec.from_blocks(blocks)`` accepts any objects
shaped like ``opennpu.targets.rk3588.registers.Block`` (``name``, ``target``, ``registers`` with ``offset``,
``full_name`` and ``fields`` of ``name``/``low``/``high``), and ``opennpu.targets.rk3588.codegen.make_emulator``
does that wiring. Only the PC tail protocol (targets 0x0041 / 0x0081, PC register offsets) is hard-wired
here, because it is the program controller's own behaviour, not a table entry.

Word format: ``target << 48 | value32 << 16 | reg_offset16`` (Mesa rkt_regcmd.c emit_raw).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opennpu.errors import DeviceError

TARGET_PRE_OP_ENABLE = 0x0041  # "before op_en, 64'h0041_xxxx_xxxx_xxxx must be set" (TRM via Mesa)
TARGET_OP_ENABLE = 0x0081  # "64'h0081_0000_007f_0008 will set each block's op_en" (TRM via Mesa)
PC_OPERATION_ENABLE = 0x0008
PC_BASE_ADDRESS = 0x0010
PC_REGISTER_AMOUNTS = 0x0014


def decode_word(word: int) -> tuple[int, int, int]:
    """``(target, value, reg_offset)`` of one 64-bit word."""
    return word >> 48, (word >> 16) & 0xFFFFFFFF, word & 0xFFFF


@dataclass(frozen=True)
class RegisterSpec:
    """Register table as data: ``targets`` maps a regcmd target id to a block name; ``registers`` maps an
    offset to ``(block, full_name, {field: (low, high)})``."""

    targets: dict[int, str]
    registers: dict[int, tuple[str, str, dict[str, tuple[int, int]]]]
    by_name: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.by_name:
            self.by_name.update({name: off for off, (_, name, _) in self.registers.items()})

    @classmethod
    def from_blocks(cls, blocks: Iterable[Any]) -> RegisterSpec:
        targets: dict[int, str] = {}
        regs: dict[int, tuple[str, str, dict[str, tuple[int, int]]]] = {}
        for b in blocks:
            if b.target is not None:
                targets[int(b.target)] = b.name
            for r in b.registers:
                regs[int(r.offset)] = (b.name, r.full_name, {f.name: (int(f.low), int(f.high)) for f in r.fields})
        return cls(targets, regs)

    def offset(self, name: str) -> int:
        try:
            return self.by_name[name]
        except KeyError:
            raise DeviceError(f"register {name!r} is not in the emulator's register table") from None


class RegisterFile:
    """Current value of every register of one core (reset value 0), addressed by full name."""

    def __init__(self, spec: RegisterSpec) -> None:
        self.spec = spec
        self.values: dict[int, int] = {}
        self.written: set[int] = set()

    def write(self, target: int, reg: int, value: int, where: str) -> None:
        block = self.spec.targets.get(target)
        if block is None:
            raise DeviceError(f"{where}: unknown regcmd target id 0x{target:04x}")
        entry = self.spec.registers.get(reg)
        if entry is None or entry[0] != block:
            raise DeviceError(f"{where}: 0x{reg:04x} is not a {block} register")
        self.values[reg] = value
        self.written.add(reg)

    def get(self, name: str) -> int:
        return self.values.get(self.spec.offset(name), 0)

    def field(self, name: str, fname: str) -> int:
        off = self.spec.offset(name)
        fields = self.spec.registers[off][2]
        if fname not in fields:
            raise DeviceError(f"register {name} has no field {fname}")
        low, high = fields[fname]
        return (self.values.get(off, 0) >> low) & ((1 << (high - low + 1)) - 1)

    def sfield(self, name: str, fname: str) -> int:
        """A field read as a two's complement signed integer."""
        off = self.spec.offset(name)
        low, high = self.spec.registers[off][2][fname]
        bits = high - low + 1
        v = self.field(name, fname)
        return v - (1 << bits) if v >> (bits - 1) else v

    def clear_written(self) -> None:
        self.written.clear()
