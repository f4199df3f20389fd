"""Execute one PPU (pooling) task from the register state: PPU_RDMA reads an NC1HWC2 int8 cube from DRAM, the
PPU pools it (NVDLA PDP semantics), and writes the output cube.

Interpretation of the registers (docs/rk3588-arithmetic.md "PPU pooling", docs/rk3588-hardware.md "PPU task
register sequence"): sizes are programmed minus one; kernel and stride minus one; SRC/DST addresses and
strides are byte values in fields at bits [31:4]; output lines are packed (``out_w * 16`` bytes, the PPU has
no destination line stride); POOLING_METHOD 0 average, 1 max, 2 min; max/min ignore padded positions; average
multiplies the window sum by RECIP_KERNEL_WIDTH then RECIP_KERNEL_HEIGHT (2**16 fixed point, each product
rounded half away from zero).
Whole 16-channel atoms are processed (padded channel lanes too), as the hardware moves atoms.

Everything outside that model raises DeviceError naming the register: on-flying mode (input from the DPU),
precisions other than int8, index output, PPU and PPU_RDMA cubes that disagree, output sizes that do not match
the windows (a window not covered by input + padding never completes: the PPU "starves forever", iav), windows
wholly in padding, average pooling with padding (pad-value registers not modelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opennpu.errors import DeviceError

from . import npu_math as nm
from .decoder import RegisterFile
from .memory import Memory

ATOM = 16
METHODS = {0: "avg", 1: "max", 2: "min"}


@dataclass(frozen=True)
class PoolJob:
    """The decoded parameters of one PPU task (sizes real, i.e. the minus-one fields already +1)."""

    method: str
    in_w: int
    in_h: int
    c: int
    out_w: int
    out_h: int
    kw: int
    kh: int
    sx: int
    sy: int
    pad_top: int
    pad_left: int
    pad_bottom: int
    pad_right: int
    recip_w: int
    recip_h: int
    src_addr: int
    src_line: int
    src_surf: int
    dst_addr: int
    dst_surf: int


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise DeviceError(msg)


def decode_pool(regs: RegisterFile, where: str = "PPU task") -> PoolJob:
    f = regs.field
    _require(f("PPU_OPERATION_MODE_CFG", "FLYING_MODE") == 1,
             f"{where}: PPU_OPERATION_MODE_CFG.FLYING_MODE=0 (on-flying input from the DPU) is not modelled")
    _require(f("PPU_OPERATION_MODE_CFG", "INDEX_EN") == 0, f"{where}: PPU index output (INDEX_EN) is not modelled")
    method = METHODS.get(f("PPU_OPERATION_MODE_CFG", "POOLING_METHOD"))
    _require(method is not None, f"{where}: PPU_OPERATION_MODE_CFG.POOLING_METHOD=3 is not a pooling method")
    _require(f("PPU_DATA_FORMAT", "PROC_PRECISION") == 0 and f("PPU_RDMA_RDMA_DATA_FORMAT", "IN_PRECISION") == 0,
             f"{where}: PPU_DATA_FORMAT.PROC_PRECISION / PPU_RDMA_RDMA_DATA_FORMAT.IN_PRECISION other than int8 (0)")
    cube = (f("PPU_DATA_CUBE_IN_WIDTH", "CUBE_IN_WIDTH"), f("PPU_DATA_CUBE_IN_HEIGHT", "CUBE_IN_HEIGHT"),
            f("PPU_DATA_CUBE_IN_CHANNEL", "CUBE_IN_CHANNEL"))
    rdma = (f("PPU_RDMA_RDMA_CUBE_IN_WIDTH", "CUBE_IN_WIDTH"), f("PPU_RDMA_RDMA_CUBE_IN_HEIGHT", "CUBE_IN_HEIGHT"),
            f("PPU_RDMA_RDMA_CUBE_IN_CHANNEL", "CUBE_IN_CHANNEL"))
    _require(cube == rdma, f"{where}: PPU input cube (w-1, h-1, c-1) {cube} differs from PPU_RDMA's {rdma}")
    in_w, in_h, c = (v + 1 for v in cube)
    out_c = f("PPU_DATA_CUBE_OUT_CHANNEL", "CUBE_OUT_CHANNEL") + 1
    _require(out_c == c, f"{where}: PPU output channels {out_c} != input channels {c} (pooling keeps channels)")
    k = "PPU_POOLING_KERNEL_CFG"
    kw, kh = f(k, "KERNEL_WIDTH") + 1, f(k, "KERNEL_HEIGHT") + 1
    sx, sy = f(k, "KERNEL_STRIDE_WIDTH") + 1, f(k, "KERNEL_STRIDE_HEIGHT") + 1
    p = "PPU_POOLING_PADDING_CFG"
    pt, pl, pb, pr = f(p, "PAD_TOP"), f(p, "PAD_LEFT"), f(p, "PAD_BOTTOM"), f(p, "PAD_RIGHT")
    out_w = f("PPU_DATA_CUBE_OUT_WIDTH", "CUBE_OUT_WIDTH") + 1
    out_h = f("PPU_DATA_CUBE_OUT_HEIGHT", "CUBE_OUT_HEIGHT") + 1
    for axis, n, o, kk, s, a, b in (("width", in_w, out_w, kw, sx, pl, pr), ("height", in_h, out_h, kh, sy, pt, pb)):
        span = n + a + b
        _require(max(a, b) < kk, f"{where}: {axis} padding {a}/{b} >= kernel {kk}: a window has no input element")
        _require((o - 1) * s + kk <= span,
                 f"{where}: {o} output {axis} positions need {(o - 1) * s + kk} padded input positions, the cube has "
                 f"{span}: the last window is never complete and the PPU waits forever (hang)")
        _require(o == (span - kk) // s + 1,
                 f"{where}: output {axis} {o} != (in {n} + pads {a}+{b} - kernel {kk}) // stride {s} + 1 "
                 "(a partial output cube is not modelled)")
    _require(method != "avg" or not any((pt, pl, pb, pr)),
             f"{where}: average pooling with padding (PADDING_VALUE_1/2_CFG semantics) is not modelled")
    line = f("PPU_RDMA_RDMA_SRC_LINE_STRIDE", "SRC_LINE_STRIDE") * ATOM
    surf = f("PPU_RDMA_RDMA_SRC_SURF_STRIDE", "SRC_SURF_STRIDE") * ATOM
    _require(line >= in_w * ATOM, f"{where}: PPU_RDMA SRC_LINE_STRIDE {line} bytes is below one {in_w}-pixel line")
    groups = -(-c // ATOM)
    _require(groups == 1 or surf >= in_h * line,
             f"{where}: PPU_RDMA SRC_SURF_STRIDE {surf} bytes overlaps the {in_h} lines of a surface")
    dst_surf = f("PPU_DST_SURF_STRIDE", "DST_SURF_STRIDE") * ATOM
    _require(groups == 1 or dst_surf >= out_h * out_w * ATOM,
             f"{where}: PPU_DST_SURF_STRIDE {dst_surf} bytes is below one {out_h}x{out_w} output surface")
    recip_w = f("PPU_RECIP_KERNEL_WIDTH", "RECIP_KERNEL_WIDTH")
    recip_h = f("PPU_RECIP_KERNEL_HEIGHT", "RECIP_KERNEL_HEIGHT")
    return PoolJob(method, in_w, in_h, c, out_w, out_h, kw, kh, sx, sy, pt, pl, pb, pr, recip_w, recip_h,
                   f("PPU_RDMA_RDMA_SRC_BASE_ADDR", "SRC_BASE_ADDR"), line, surf,
                   f("PPU_DST_BASE_ADDR", "DST_BASE_ADDR") * ATOM, dst_surf)


def run_pool(regs: RegisterFile, mem: Memory, where: str = "PPU task") -> PoolJob:
    """Decode, read the input cube, pool, write the output cube. Returns the decoded job."""
    j = decode_pool(regs, where)
    groups = -(-j.c // ATOM)
    raw = mem.read_surfaces(j.src_addr, groups, j.in_h, j.src_line, j.in_w * ATOM, j.src_surf, "PPU_RDMA read")
    x = raw.view(np.int8).reshape(groups, j.in_h, j.in_w, ATOM).astype(np.int64)
    if j.method == "avg":
        fill = 0
    else:
        fill = np.iinfo(np.int64).min if j.method == "max" else np.iinfo(np.int64).max
    hp, wp = j.in_h + j.pad_top + j.pad_bottom, j.in_w + j.pad_left + j.pad_right
    xp = np.full((groups, hp, wp, ATOM), fill, np.int64)
    xp[:, j.pad_top:j.pad_top + j.in_h, j.pad_left:j.pad_left + j.in_w] = x
    acc = None
    ys, xs = (j.out_h - 1) * j.sy + 1, (j.out_w - 1) * j.sx + 1
    for dy in range(j.kh):  # one strided slice per kernel tap, reduced in place
        for dx in range(j.kw):
            tap = xp[:, dy:dy + ys:j.sy, dx:dx + xs:j.sx]
            if acc is None:
                acc = tap.copy()
            elif j.method == "avg":
                acc += tap
            elif j.method == "max":
                np.maximum(acc, tap, out=acc)
            else:
                np.minimum(acc, tap, out=acc)
    assert acc is not None
    y = nm.ppu_average(acc, j.recip_w, j.recip_h) if j.method == "avg" else acc
    out = y.astype(np.int8).reshape(groups, j.out_h, j.out_w * ATOM).view(np.uint8)
    mem.write_surfaces(j.dst_addr, out, j.out_w * ATOM, j.dst_surf, "PPU write")
    return j
