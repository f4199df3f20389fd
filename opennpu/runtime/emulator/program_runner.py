"""Run a compiled RK3588 program (``.npu``) segment by segment: NPU segments on an emulated core, CPU
segments with the integer executor.

The runner sees only the Program: blobs are loaded at their planned addresses into the emulator's DRAM, NPU
segments write their inputs as NC1HWC2 int8 into the planned buffers (padded channel lanes = the zero point),
run their jobs (``Emulator.run(regcmd_addr, regcmd_count)``, the chain follows the words) and read their
outputs back to NCHW; CPU segments run their embedded graphs with ``opennpu.quant.executor.run_quantized``.
It never imports a target package: the emulator (with its register table) comes from a factory the device
wiring passes in (``opennpu.runtime.devices``).

``validate_program`` checks the manifest's target payload before anything runs (ProgramFormatError): schema,
segment/job/buffer references, buffers inside the declared memory and the 32-bit space, blob sizes equal to
buffer sizes, regcmd entry points inside their buffer and 64-byte aligned, conversion shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from opennpu.errors import ProgramFormatError, ShapeError

from ..program import Program
from .device import Emulator
from .npu_math import ROUND_MODES, RoundingModel

ATOM = 16
TARGET = "rk3588"
PAYLOAD_SCHEMA = 1
MAX_MEMORY = 1 << 32

EmulatorFactory = Callable[[int, RoundingModel], Emulator]


def _fail(msg: str) -> ProgramFormatError:
    return ProgramFormatError(f"rk3588 program: {msg}")


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_MEMORY) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(f"{what} must be an integer in [{lo}, {hi}], got {str(v)[:40]}")
    return v


def _dict(v: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(f"{what} is not an object")
    missing = [k for k in keys if k not in v]
    if missing:
        raise _fail(f"{what} is missing {missing}")
    return v


def _conv_spec(c: Any, what: str, buffers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    c = _dict(c, ("tensor", "buffer", "address", "shape", "dtype", "chw", "surf_stride", "pad_value"), what)
    b = buffers.get(c["buffer"])
    if b is None:
        raise _fail(f"{what} refers to unknown buffer {str(c['buffer'])[:60]!r}")
    offset = _int(c["address"], f"{what} address") - b["address"]  # > 0: a concat leg's channel groups
    if offset < 0 or offset % ATOM:
        raise _fail(f"{what} address lies before its buffer or off the 16-byte atom")
    chw = c["chw"]
    if not (isinstance(chw, list) and len(chw) == 3 and all(isinstance(v, int) and v >= 1 for v in chw)):
        raise _fail(f"{what} chw must be three positive integers")
    shape = c["shape"]
    if not (isinstance(shape, list) and all(isinstance(v, int) and v >= 1 for v in shape)) or \
            int(np.prod(shape)) != chw[0] * chw[1] * chw[2]:
        raise _fail(f"{what} shape {str(shape)[:40]} does not hold a {chw} map")
    if c["dtype"] != "int8":
        raise _fail(f"{what} dtype {str(c['dtype'])[:20]} is not int8")
    surf = _int(c["surf_stride"], f"{what} surf_stride", 1)
    if surf % ATOM or surf < chw[1] * chw[2] * ATOM:
        raise _fail(f"{what} surface stride {surf} is not a multiple of 16 holding one {chw[1]}x{chw[2]} surface")
    need = (-(-chw[0] // ATOM) - 1) * surf + chw[1] * chw[2] * ATOM
    if offset + need > b["size"]:
        raise _fail(f"{what} needs {need} bytes, its buffer has {b['size']}")
    _int(c["pad_value"], f"{what} pad_value", -128, 127)
    return c


def validate_program(program: Program) -> dict[str, Any]:
    """Check the rk3588 payload of a loaded program; returns the parsed pieces (ProgramFormatError otherwise)."""
    m = program.manifest
    if m.target != TARGET:
        raise _fail(f"target is {m.target!r}, not {TARGET!r}")
    p = _dict(m.target_payload, ("schema", "rounding", "segments", "placements", "stats"), "target_payload")
    if p["schema"] != PAYLOAD_SCHEMA:
        raise _fail(f"payload schema {str(p['schema'])[:20]} is not {PAYLOAD_SCHEMA}")
    r = _dict(p["rounding"], ("truncate", "bs_mul", "ew_cvt", "out_cvt"), "rounding")
    if not all(r[k] in ROUND_MODES for k in ("truncate", "bs_mul", "ew_cvt", "out_cvt")):
        raise _fail(f"unknown rounding mode in {r}")
    rounding = RoundingModel(r["truncate"], r["bs_mul"], r["ew_cvt"], r["out_cvt"])
    mp = _dict(m.memory_plan, ("memory_size", "buffers"), "memory_plan")
    size = _int(mp["memory_size"], "memory_size", 1)
    if not isinstance(mp["buffers"], list):
        raise _fail("memory_plan buffers is not a list")
    buffers: dict[str, dict[str, Any]] = {}
    for i, b in enumerate(mp["buffers"]):
        b = _dict(b, ("name", "kind", "address", "size", "blob"), f"buffer #{i}")
        if not isinstance(b["name"], str) or b["name"] in buffers:
            raise _fail(f"buffer #{i} has a bad or duplicate name")
        a, n = _int(b["address"], f"buffer {b['name']!r} address"), _int(b["size"], f"buffer {b['name']!r} size")
        if a + n > size:
            raise _fail(f"buffer {b['name']!r} [0x{a:x}, 0x{a + n:x}) lies outside the {size}-byte memory")
        if b["blob"] is not None:
            blob = program.blobs.get(b["blob"]) if isinstance(b["blob"], str) else None
            if blob is None:
                raise _fail(f"buffer {b['name']!r} refers to a missing blob {str(b['blob'])[:60]!r}")
            if blob.nbytes != n:
                raise _fail(f"blob {b['blob']!r} has {blob.nbytes} bytes, its buffer {n}")
        buffers[b["name"]] = b
    if not isinstance(m.jobs, list):
        raise _fail("jobs is not a list")
    jobs: dict[int, dict[str, Any]] = {}
    for i, j in enumerate(m.jobs):
        j = _dict(j, ("id", "segment", "regcmd_blob", "regcmd_addr", "regcmd_count"), f"job #{i}")
        if j["id"] != i:
            raise _fail(f"job #{i} has id {str(j['id'])[:20]}")
        b = buffers.get(j["regcmd_blob"]) if isinstance(j["regcmd_blob"], str) else None
        if b is None or b["kind"] != "regcmd" or b["blob"] is None:
            raise _fail(f"job {i} regcmd buffer {str(j['regcmd_blob'])[:60]!r} is not a loaded regcmd buffer")
        a = _int(j["regcmd_addr"], f"job {i} regcmd_addr")
        count = _int(j["regcmd_count"], f"job {i} regcmd_count", 1, 2 * (0xFFFF + 1))
        if a % 64 or not b["address"] <= a or a + 8 * count > b["address"] + b["size"]:
            raise _fail(f"job {i} entry 0x{a:x} (+{count} words) is unaligned or outside its regcmd buffer")
        jobs[i] = j
    segs = p["segments"]
    if not isinstance(segs, list) or not segs:
        raise _fail("no segments")
    used_jobs: list[int] = []
    for i, s in enumerate(segs):
        s = _dict(s, ("id", "device", "inputs", "outputs"), f"segment #{i}")
        if s["id"] != i or s["device"] not in ("npu", "cpu"):
            raise _fail(f"segment #{i} has a bad id or device")
        if not all(isinstance(t, str) for t in s["inputs"] + s["outputs"]):
            raise _fail(f"segment {i} inputs/outputs must be tensor names")
        if s["device"] == "cpu":
            program.graph(_dict(s, ("graph",), f"segment {i}")["graph"])
        else:
            _dict(s, ("jobs", "to_npu", "to_cpu", "source_graph"), f"segment {i}")
            for j in s["jobs"]:
                if j not in jobs or jobs[j]["segment"] != i:
                    raise _fail(f"segment {i} lists job {str(j)[:20]} which is not one of its jobs")
                used_jobs.append(j)
            for k, c in enumerate(s["to_npu"]):
                _conv_spec(c, f"segment {i} to_npu #{k}", buffers)
            for k, c in enumerate(s["to_cpu"]):
                _conv_spec(c, f"segment {i} to_cpu #{k}", buffers)
    if sorted(used_jobs) != list(range(len(jobs))):
        raise _fail("every job must belong to exactly one NPU segment")
    return {"rounding": rounding, "memory_size": size, "buffers": buffers, "segments": segs, "jobs": jobs}


def pack_nc1hwc2(x: np.ndarray, c: int, h: int, w: int, pad_value: int) -> np.ndarray:
    """NCHW int8 map -> (C1, H, W*16) uint8 surfaces, padded lanes = pad_value."""
    c1 = -(-c // ATOM)
    out = np.full((c1 * ATOM, h, w), pad_value, np.int8)
    out[:c] = x.reshape(c, h, w)
    return out.reshape(c1, ATOM, h, w).transpose(0, 2, 3, 1).reshape(c1, h, w * ATOM).view(np.uint8)


def unpack_nc1hwc2(raw: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """(C1, H, W*16) uint8 surfaces -> (C, H, W) int8."""
    c1 = raw.shape[0]
    a = raw.view(np.int8).reshape(c1, h, w, ATOM).transpose(0, 3, 1, 2).reshape(c1 * ATOM, h, w)
    return np.ascontiguousarray(a[:c])


class ProgramRunner:
    """A program loaded into one emulated NPU (blobs written once); ``run(feeds)`` may be called repeatedly."""

    def __init__(self, program: Program, emulator_factory: EmulatorFactory) -> None:
        self.program = program
        self.info = validate_program(program)
        self.emu = emulator_factory(self.info["memory_size"], self.info["rounding"])
        for b in self.info["buffers"].values():
            if b["blob"] is not None:
                self.emu.write(b["address"], np.ascontiguousarray(program.blobs[b["blob"]]).view(np.uint8))
        self.graphs = {k: program.graph(k) for k in program.graphs}
        self.npu_seconds = 0.0
        self.cpu_seconds = 0.0
        self.tasks_run = 0

    def _to_npu(self, c: dict[str, Any], x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.dtype != np.int8 or tuple(x.shape) != tuple(c["shape"]):
            raise ShapeError(f"tensor {c['tensor']!r} for the NPU is {x.dtype} {x.shape}, expected int8 "
                             f"{tuple(c['shape'])}")
        cc, h, w = c["chw"]
        self.emu.memory.write_surfaces(c["address"], pack_nc1hwc2(x, cc, h, w, c["pad_value"]), w * ATOM,
                                       c["surf_stride"], f"host write of {c['tensor']!r}")

    def _to_cpu(self, c: dict[str, Any]) -> np.ndarray:
        cc, h, w = c["chw"]
        raw = self.emu.memory.read_surfaces(c["address"], -(-cc // ATOM), h, w * ATOM, w * ATOM, c["surf_stride"],
                                            f"host read of {c['tensor']!r}")
        return unpack_nc1hwc2(raw, cc, h, w).reshape(c["shape"])

    def run(self, feeds: Mapping[str, np.ndarray], device: str = "emulator") -> dict[str, np.ndarray]:
        from opennpu.quant.executor import run_quantized

        m = self.program.manifest
        names = [s.name for s in m.inputs]
        missing, extra = [n for n in names if n not in feeds], [n for n in feeds if n not in names]
        if missing or extra:
            raise ShapeError(f"program inputs are {names}; missing {missing}, unknown {extra}")
        env: dict[str, np.ndarray] = {}
        for s in m.inputs:
            a = np.asarray(feeds[s.name])
            if tuple(a.shape) != tuple(s.shape):
                raise ShapeError(f"input {s.name!r} has shape {a.shape}, the program expects {tuple(s.shape)}")
            env[s.name] = a.astype(s.dtype, copy=False)
        for s in self.info["segments"]:
            if s["device"] == "cpu" or device == "cpu":
                key = s["graph"] if s["device"] == "cpu" else s["source_graph"]
                t0 = time.perf_counter()
                env.update(run_quantized(self.graphs[key], {t: env[t] for t in self.graphs[key].inputs}))
                self.cpu_seconds += time.perf_counter() - t0
                continue
            t0 = time.perf_counter()
            for c in s["to_npu"]:
                if c["tensor"] not in env:
                    raise ProgramFormatError(f"rk3588 program: segment {s['id']} reads {c['tensor']!r} before any "
                                             "segment produced it")
                self._to_npu(c, env[c["tensor"]])
            for j in s["jobs"]:
                job = self.info["jobs"][j]
                self.tasks_run += len(self.emu.run(job["regcmd_addr"], job["regcmd_count"]))
            for c in s["to_cpu"]:
                env[c["tensor"]] = self._to_cpu(c)
            self.npu_seconds += time.perf_counter() - t0
        missing = [s.name for s in m.outputs if s.name not in env]
        if missing:
            raise ProgramFormatError(f"rk3588 program: outputs {missing} are produced by no segment")
        return {s.name: env[s.name] for s in m.outputs}


__all__ = ["ProgramRunner", "pack_nc1hwc2", "unpack_nc1hwc2", "validate_program"]
