"""Bit-exact functional emulator of the RK3588 NPU (one core): regcmd words in emulated DRAM -> results.

It sees only memory and register command words, never the IR, and never imports a target package: the register
table comes in as data (``RegisterSpec``), built by the device wiring (``opennpu.targets.rk3588.codegen.
make_emulator``). The integer arithmetic is ``npu_math``, shared with the compiler's reference
(``opennpu.targets.rk3588.arith``). Modules: memory (bounds-checked DRAM), decoder (register table data and
register files), conv (one conv task from register state), device (the program controller).
"""

from .decoder import RegisterFile, RegisterSpec
from .device import Emulator, TaskRecord
from .memory import Memory
from .npu_math import DEFAULT_ROUNDING, RoundingModel

__all__ = ["DEFAULT_ROUNDING", "Emulator", "Memory", "RegisterFile", "RegisterSpec", "RoundingModel", "TaskRecord"]
