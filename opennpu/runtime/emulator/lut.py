"""The DPU's LUT RAM and its register protocol, as the emulator models them.

NVDLA SDP's LUT (nvdla/doc ``doc/hw/v1/ias/lut-programming.rst`` [R]; the RK3588 DPU is SDP-like and has the
same registers, Mesa ``registers.xml`` DPU_LUT_* [R]): two tables of 16-bit entries, LE and LO (513 entries each
on the RK3588, npu_math.LUT_LO_ENTRIES, where NVDLA has 65 / 257), written through ``LUT_ACCESS_CFG`` (table
id, access type, start address) followed by ``LUT_ACCESS_DATA`` writes that auto-increment the address. "If the
address beyond the total LUT entry ... the hardware behavior is undefined" (same page): the emulator raises
DeviceError instead, like for every other undefined combination.
NVDLA enums, the same in the RK3588 TRM's register description: LUT_TABLE_ID LE=0 / LO=1, LUT_ACCESS_TYPE
READ=0 / WRITE=1; allbilly/rk3588 examples/silu.py uploads both 513-entry tables this way on the board [3P].

The RAM is per core and survives tasks (it is not part of the ping-pong register groups); an entry read by a
task but never written raises DeviceError.
"""

from __future__ import annotations

import numpy as np

from opennpu.errors import DeviceError

from .decoder import RegisterFile
from .npu_math import LUT_LE_ENTRIES, LUT_LO_ENTRIES

TABLE_SIZES = {0: LUT_LE_ENTRIES, 1: LUT_LO_ENTRIES}
TABLE_NAMES = {0: "LE", 1: "LO"}


class LutRam:
    """LE and LO tables (uint16 as written) with the access pointer of the register protocol."""

    def __init__(self) -> None:
        self.tables = {t: np.zeros(n, np.uint16) for t, n in TABLE_SIZES.items()}
        self.written = {t: np.zeros(n, bool) for t, n in TABLE_SIZES.items()}
        self.pointer: tuple[int, int, int] | None = None  # (table id, access type, next address)

    def access_cfg(self, regs: RegisterFile, where: str) -> None:
        """A write to DPU_LUT_ACCESS_CFG: latch table id, access type and start address."""
        raw = regs.get("DPU_LUT_ACCESS_CFG")
        table, access = regs.field("DPU_LUT_ACCESS_CFG", "LUT_TABLE_ID"), regs.field("DPU_LUT_ACCESS_CFG",
                                                                                       "LUT_ACCESS_TYPE")
        addr = regs.field("DPU_LUT_ACCESS_CFG", "LUT_ADDR")
        if raw & ~0x303FF:
            raise DeviceError(f"{where}: DPU_LUT_ACCESS_CFG=0x{raw:x} sets reserved bits")
        if access == 1 and addr >= TABLE_SIZES[table]:
            raise DeviceError(f"{where}: DPU_LUT_ACCESS_CFG.LUT_ADDR={addr} is outside the {TABLE_NAMES[table]} "
                              f"table ({TABLE_SIZES[table]} entries)")
        self.pointer = (table, access, addr)

    def access_data(self, regs: RegisterFile, where: str) -> None:
        """A write to DPU_LUT_ACCESS_DATA: store one entry at the pointer and advance it."""
        if self.pointer is None:
            raise DeviceError(f"{where}: DPU_LUT_ACCESS_DATA written before any DPU_LUT_ACCESS_CFG")
        table, access, addr = self.pointer
        if access == 0:
            # read access: a data write does not change the RAM [I]. Mesa writes LUT_ACCESS_CFG=0 (LE, read, 0)
            # and LUT_ACCESS_DATA=0 in every conv task and its programs run.
            return
        raw = regs.get("DPU_LUT_ACCESS_DATA")
        if raw >> 16:
            raise DeviceError(f"{where}: DPU_LUT_ACCESS_DATA=0x{raw:x} sets reserved bits 31:16")
        if addr >= TABLE_SIZES[table]:
            raise DeviceError(f"{where}: LUT write past the end of the {TABLE_NAMES[table]} table "
                              f"({TABLE_SIZES[table]} entries; NVDLA: undefined behaviour)")
        self.tables[table][addr] = raw
        self.written[table][addr] = True
        self.pointer = (table, access, addr + 1)

    def lo_table(self, where: str) -> np.ndarray:
        """The LO table as signed 16-bit values; every entry must have been written."""
        missing = np.flatnonzero(~self.written[1])
        if missing.size:
            raise DeviceError(f"{where}: the LUT reads LO entries never written (first: {int(missing[0])}, "
                              f"{missing.size} in all)")
        return self.tables[1].view(np.int16).astype(np.int64)


def decode_lut(r: RegisterFile) -> int:
    """Validate the LUT configuration opennpu's model covers and return LUT_LO_START (signed).

    Modelled: LO table in linear mode, LO selected on every hit/miss combination (LUT_LE_START = INT32_MAX so
    every input underflows LE, HYBRID/OFLOW/UFLOW priority = 1 = LO; NVDLA's selection rules), LUT_LO_LE_MUX=2
    (iav/rk3568-npu's and allbilly/rk3588's value [3P]), no expansion, road 0, LUT_LO_INDEX_SELECT=0 (integer
    index, no interpolation), LO_END = LO_START + 512 and zero LO slopes (the ends saturate to LO[0] / LO[512]).
    Anything else raises DeviceError naming the register.
    """
    f = r.field
    cfg = r.get("DPU_LUT_CFG")
    if not (f("DPU_LUT_CFG", "LUT_HYBRID_PRIORITY") == f("DPU_LUT_CFG", "LUT_OFLOW_PRIORITY")
            == f("DPU_LUT_CFG", "LUT_UFLOW_PRIORITY") == 1 and f("DPU_LUT_CFG", "LUT_LO_LE_MUX") == 2
            and f("DPU_LUT_CFG", "LUT_EXPAND_EN") == 0 and f("DPU_LUT_CFG", "LUT_ROAD_SEL") == 0
            and f("DPU_LUT_CFG", "LUT_CAL_SEL") == 0 and cfg >> 8 == 0):
        raise DeviceError(f"DPU_LUT_CFG=0x{cfg:x}: only the LO table selected on every hit/miss (priorities 1, "
                          "LO_LE_MUX=2, no expansion) is modelled")
    if r.sfield("DPU_LUT_LE_START", "LUT_LE_START") != (1 << 31) - 1:
        raise DeviceError(f"DPU_LUT_LE_START={r.sfield('DPU_LUT_LE_START', 'LUT_LE_START')}: the LE table could be "
                          "selected (it hits above its start); only LE_START = INT32_MAX (LE never hits, LO always "
                          "selected) is modelled")
    if f("DPU_LUT_INFO", "LUT_LO_INDEX_SELECT") != 0:
        raise DeviceError(f"DPU_LUT_INFO.LUT_LO_INDEX_SELECT={f('DPU_LUT_INFO', 'LUT_LO_INDEX_SELECT')}: "
                          "interpolation between LO entries is not modelled (index select 0 only)")
    start = r.sfield("DPU_LUT_LO_START", "LUT_LO_START")
    end = r.sfield("DPU_LUT_LO_END", "LUT_LO_END")
    if end != start + LUT_LO_ENTRIES - 1:
        raise DeviceError(f"DPU_LUT_LO_END={end} != LUT_LO_START + {LUT_LO_ENTRIES - 1} = "
                          f"{start + LUT_LO_ENTRIES - 1} (the LO range must span its {LUT_LO_ENTRIES} entries at "
                          "index select 0)")
    if r.get("DPU_LUT_LO_SLOPE_SCALE") or r.get("DPU_LUT_LO_SLOPE_SHIFT"):
        raise DeviceError("DPU_LUT_LO_SLOPE_SCALE/SHIFT: out-of-range extrapolation is not modelled (slopes 0: the "
                          "ends saturate to the first / last LO entry)")
    return start
