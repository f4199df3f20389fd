"""Devices that run compiled programs, and ``run_program(program, feeds, device="emulator")``.

Registry (``DEVICES``):

* ``"emulator"`` (default): NPU segments on the bit-exact emulator of one RK3588 core (it sees only the
  regcmd buffers and emulated DRAM), CPU segments with the integer executor. This is the device wiring: the
  only place that hands the emulator the RK3588 register table (``opennpu.targets.rk3588.codegen``).
* ``"cpu"``: every segment with the integer executor (``opennpu.quant.executor.run_quantized``, TFLite int8
  semantics), NPU segments through the source subgraphs the program embeds. Needs no NPU; its results differ
  from the NPU's by the NPU's rounding (a few LSB).
* ``"rocket"``: the mainline Linux ``rocket`` accel driver (``/dev/accel/accel0``). Documented stub: it
  raises DeviceError when the device node is absent, and also when present, because submitting jobs
  (DRM_IOCTL_ROCKET_CREATE_BO / SUBMIT with the program's regcmd buffers) is not implemented yet. It never
  returns made-up results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from ..errors import DeviceError
from .emulator.npu_math import RoundingModel
from .emulator.program_runner import ProgramRunner
from .program import Program, load_program

ROCKET_NODE = "/dev/accel/accel0"


def _rk3588_emulator(memory_size: int, rounding: RoundingModel):
    from opennpu.targets.rk3588.codegen import make_emulator

    return make_emulator(memory_size, rounding)


class Device:
    """A loaded program on one device; ``run(feeds)`` returns the program's outputs."""

    name = "device"

    def __init__(self, program: Program) -> None:
        self.program = program

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class EmulatorDevice(Device):
    """The RK3588 emulator. Runs with one BLAS thread: its GEMMs are one task each (at most a few MFLOP), where
    waking BLAS worker threads costs more than it gains, and on a loaded machine much more (bench/emulator_speed.py
    measured mobilenetv2 at 1.04 s with OpenBLAS's default threads vs 0.25 s with one, load average 2.5)."""

    name = "emulator"

    def __init__(self, program: Program) -> None:
        super().__init__(program)
        self.runner = ProgramRunner(program, _rk3588_emulator)
        self._threads = ThreadpoolController()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._threads.limit(limits=1, user_api="blas"):
            return self.runner.run(feeds, "emulator")


class CpuDevice(Device):
    name = "cpu"

    def __init__(self, program: Program) -> None:
        super().__init__(program)
        self.runner = ProgramRunner(program, _rk3588_emulator)  # validates; the emulator is never started

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run(feeds, "cpu")


class RocketDevice(Device):
    """The RK3588 NPU through the mainline ``rocket`` driver. Not implemented: see the module docstring."""

    name = "rocket"

    def __init__(self, program: Program, node: str = ROCKET_NODE) -> None:
        super().__init__(program)
        if not os.path.exists(node):
            raise DeviceError(f"no {node} (the rocket NPU driver is not loaded or this is not an RK3588 board); "
                              "use --device emulator")
        raise DeviceError(f"{node} exists but submitting jobs to the rocket driver is not implemented yet; "
                          "use --device emulator")


DEVICES: dict[str, type[Device]] = {"emulator": EmulatorDevice, "cpu": CpuDevice, "rocket": RocketDevice}


def open_device(program: Program | str | Path | bytes, device: str = "emulator") -> Device:
    """Load (and validate) ``program`` on ``device``."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r} (one of {', '.join(DEVICES)})")
    if not isinstance(program, Program):
        program = load_program(program)
    return DEVICES[device](program)


def run_program(program: Program | str | Path | bytes, feeds: Mapping[str, np.ndarray],
                device: str = "emulator") -> dict[str, np.ndarray]:
    """Run a compiled program (a Program, a .npu path or its bytes) once; returns its outputs by name."""
    return open_device(program, device).run(feeds)


__all__ = ["DEVICES", "CpuDevice", "Device", "EmulatorDevice", "RocketDevice", "open_device", "run_program"]
