"""Flat emulated DRAM of the NPU: little-endian bytes at 32-bit NPU addresses, every access bounds-checked.

Out-of-range accesses raise DeviceError naming the unit, address and size (the hardware raises the
DMA_READ_ERROR / DMA_WRITE_ERROR interrupt bits, PC_INTERRUPT_STATUS bits 12/13).
"""

from __future__ import annotations

import numpy as np

from opennpu.errors import DeviceError

MAX_MEMORY = 1 << 32  # 32-bit NPU addresses (drm_rocket_task.regcmd is u32; one IOMMU domain is 4 GiB)


class Memory:
    """``size`` bytes of zero-initialized emulated DRAM starting at NPU address 0."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or not 0 < size <= MAX_MEMORY:
            raise DeviceError(f"emulated memory size {size!r} must be 1..{MAX_MEMORY} bytes")
        self.size = size
        self.data = np.zeros(size, dtype=np.uint8)

    def check(self, addr: int, nbytes: int, what: str = "DMA access") -> None:
        if nbytes < 0 or addr < 0 or addr + nbytes > self.size:
            raise DeviceError(f"{what} of {nbytes} bytes at 0x{addr:x} is outside emulated memory "
                              f"[0x0, 0x{self.size:x})")

    def read(self, addr: int, nbytes: int, what: str = "DMA read") -> np.ndarray:
        """A copy of ``nbytes`` bytes at ``addr`` as uint8."""
        self.check(addr, nbytes, what)
        return self.data[addr:addr + nbytes].copy()

    def write(self, addr: int, buf: bytes | bytearray | memoryview | np.ndarray, what: str = "DMA write") -> None:
        a = np.frombuffer(bytes(buf), dtype=np.uint8) if not isinstance(buf, np.ndarray) else \
            np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
        self.check(addr, a.size, what)
        self.data[addr:addr + a.size] = a

    def read_words(self, addr: int, count: int, what: str = "regcmd fetch") -> list[int]:
        """``count`` little-endian 64-bit words at ``addr``."""
        raw = self.read(addr, count * 8, what)
        return [int(v) for v in raw.view("<u8")]

    def read_surfaces(self, addr: int, groups: int, lines: int, line_bytes: int, row_bytes: int,
                      surf_bytes: int, what: str) -> np.ndarray:
        """Gather ``groups`` surfaces of ``lines`` rows of ``row_bytes`` bytes (row ``y`` of surface ``g`` at
        ``addr + g*surf_bytes + y*line_bytes``) -> uint8 (groups, lines, row_bytes)."""
        last = addr + (groups - 1) * surf_bytes + (lines - 1) * line_bytes + row_bytes
        self.check(addr, last - addr, what)
        idx = (addr + np.arange(groups, dtype=np.int64)[:, None, None] * surf_bytes
               + np.arange(lines, dtype=np.int64)[None, :, None] * line_bytes
               + np.arange(row_bytes, dtype=np.int64)[None, None, :])
        return self.data[idx]

    def write_surfaces(self, addr: int, values: np.ndarray, line_bytes: int, surf_bytes: int, what: str) -> None:
        """Scatter uint8 (groups, lines, row_bytes) with the same addressing as :meth:`read_surfaces`."""
        groups, lines, row_bytes = values.shape
        last = addr + (groups - 1) * surf_bytes + (lines - 1) * line_bytes + row_bytes
        self.check(addr, last - addr, what)
        idx = (addr + np.arange(groups, dtype=np.int64)[:, None, None] * surf_bytes
               + np.arange(lines, dtype=np.int64)[None, :, None] * line_bytes
               + np.arange(row_bytes, dtype=np.int64)[None, None, :])
        self.data[idx] = values
