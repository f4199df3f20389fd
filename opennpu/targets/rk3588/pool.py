"""PPU pooling on the RK3588: lowering of a pool node into a :class:`PoolOp`, its row-band tiles, the
:class:`PoolTask` of each tile once addresses are known, and the task's register words.

Ops: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean over (H, W) with keepdims. The PPU
(NVDLA PDP, "off-flying": it reads the map from DRAM through PPU_RDMA) reads one NC1HWC2 int8 cube and writes
one; a task is enabled with PPU|PPU_RDMA (op-enable 0x60, allbilly/rk3588 ``experimental/pool.py``
``POOL_ENABLE_MASK = 0x60`` run on RK3588 hardware [3P]).

What is lowered, and why not the rest (every refusal is a CompileError, so the node runs on the CPU with it as
the reason):

* int8 input and output with the same quantization (the PPU has no requantization stage; our quantizer shares
  the parameters of pools, quantizer.SHARED) and no fused clamp other than one the int8 range already implies;
* kernel <= 8 and stride <= 8 per axis (iav/rk3568-npu README.md, "PPU pooling covers kernels <= 8, equal x/y
  strides <= 8" [3P]; the fields are 4 bits), pads <= 7 (3-bit fields) and smaller than the kernel;
* no window outside input + padding (ceil_mode partial windows "starve the PPU forever", iav [3P]);
* average pools without padding (NVDLA sums PAD_VALUE_Nx for padded elements and divides by the whole
  window; TFLite/ONNX count_include_pad=0 divide by the valid count, and the RK3588 keeps only two pad-value
  registers whose meaning is not documented [I]);
* global pools whose window fits one kernel (<= 8x8, e.g. the 7x7 of MobileNetV2/EfficientNet-Lite0); larger
  global averages (GlobalAveragePool, ReduceMean, or an AveragePool whose one window is the map) run as several
  PPU stages of non-overlapping windows (kernel = stride, capabilities.ppu_stages: 40x40 = 8x8 then 5x5), each
  stage rounding to int8 (so they differ from a one-step mean by rounding) through scratch buffers
  ``<op>#stage<k>`` in NPU memory, all tasks in one job in stage order.

Tiling: a task covers full-width row bands; ``plan_pool_tiles`` splits the output rows so a band has at most
``MAX_BAND_PIXELS`` output pixels (allbilly/rk3588 splits its hardware pool runs at ``8191 // in_w`` output
rows per task [3P]) and at most 8192 input rows (13-bit cube fields). A band's input rows are the rows its
windows read; top/bottom padding belongs to the first/last band.

Register fields (docs/rk3588-hardware.md "PPU task register sequence"): sizes are programmed minus one,
kernel/stride minus one (NVDLA PDP; allbilly programs a 2x2 stride-1 pool as KERNEL_*=1, STRIDE_*=0 [3P]), byte
addresses and strides in fields at bits [31:4] (value = bytes, multiples of 16). The PPU has no destination line
stride: output lines are packed, ``out_w * 16`` bytes [I].

Where the partitioner planned a depthwise-conv carrier for an average beyond one PPU window (not lowered yet),
a global one is lowered here as PPU stages; other such averages stay on the CPU naming the planned carrier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from opennpu.errors import CompileError
from opennpu.ir.graph import Graph, Node

from . import regcmd
from .arith import PoolGeometry, activation_quant, ppu_recip
from .codegen import regcmd_task
from .registers import pack

POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
ATOM = 16
PPU_OP_ENABLE = 0x60  # PC_OPERATION_ENABLE value: PPU (bit 5) | PPU_RDMA (bit 6)
MAX_KERNEL = 8  # iav [3P]
MAX_STRIDE = 8  # iav [3P]
MAX_PAD = 7  # PPU_POOLING_PADDING_CFG.PAD_* are 3 bits
MAX_CUBE = 1 << 13  # DATA_CUBE_* fields are 13 bits (size - 1)
MAX_BAND_PIXELS = 8191  # allbilly: out rows per task <= 8191 // in_w [3P]
PPU_BURST_LEN = 3  # PPU_MISC_CTRL.BURST_LEN as allbilly programs it [3P]
PPU_PIXELS_PER_CYCLE = 8  # NVDLA_PDP_THROUGHPUT (cost.py ppu_throughput), for the schedule's estimate only
_METHOD_FIELD = {"avg": 0, "max": 1, "min": 2}


def _not_yet(what: str, planned: str = "PPU pooling") -> CompileError:
    return CompileError(f"rk3588 lowering of {what} not implemented yet (planned: {planned})")


# ---------------------------------------------------------------------------------------------- lowering
@dataclass(frozen=True)
class PoolTile:
    """One task of a pool op: output rows [o0, o1), input rows [i0, i1), the band's top/bottom padding."""

    index: int
    out_rows: tuple[int, int]
    in_rows: tuple[int, int]
    pad_top: int
    pad_bottom: int
    stage: int = 0

    @property
    def n_out_rows(self) -> int:
        return self.out_rows[1] - self.out_rows[0]

    @property
    def n_in_rows(self) -> int:
        return self.in_rows[1] - self.in_rows[0]


@dataclass
class PoolOp:
    """One lowered PPU pool (a single graph node): the node's geometry and the PPU stages computing it (one,
    or several for a global average beyond one window), each stage's tiles in ``tiles`` (in stage order)."""

    name: str
    nodes: list[int]
    input: str
    output: str
    geometry: PoolGeometry
    tiles: list[PoolTile]
    stages: list[PoolGeometry] = field(default_factory=list)
    segment: int = -1
    step: int = -1
    kind: str = "pool"

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = [self.geometry]

    @property
    def reads(self) -> tuple[str, ...]:
        """Tensors the op reads from memory (as ConvOp.reads)."""
        return (self.input,)

    def stage_buffer(self, k: int) -> str:
        """Name of the scratch buffer stage ``k`` writes (k < last stage)."""
        return f"{self.name}#stage{k}"

    def scratch(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(buffer name, (C, H, W)) of the intermediate maps between stages."""
        return [(self.stage_buffer(k), (g.c, g.out_h, g.out_w)) for k, g in enumerate(self.stages[:-1])]

    def describe(self) -> str:
        g = self.geometry
        if len(self.stages) > 1:
            chain = " then ".join(f"{s.kh}x{s.kw}" for s in self.stages)
            return (f"PPU global {g.method} pool {g.kh}x{g.kw} as {len(self.stages)} stages of non-overlapping "
                    f"windows {chain}, {len(self.tiles)} task(s)")
        return (f"PPU {g.method} pool {g.kh}x{g.kw} stride {g.stride[0]}x{g.stride[1]} pads {list(g.pads)}, "
                f"{len(self.tiles)} task(s)")


def plan_pool_tiles(g: PoolGeometry, max_band_pixels: int = MAX_BAND_PIXELS, stage: int = 0) -> list[PoolTile]:
    """Full-width row bands of at most ``max_band_pixels`` output pixels and MAX_CUBE input rows."""
    if g.out_w > max_band_pixels or g.in_w > MAX_CUBE or g.c > MAX_CUBE:
        raise _not_yet(f"a pool over a {g.c}x{g.in_h}x{g.in_w} map (rows wider than one PPU task)",
                       "PPU column tiling")
    sy = g.stride[0]
    pt = g.pads[0]
    per_band = max(1, min(max_band_pixels // g.out_w, (MAX_CUBE - g.kh) // sy + 1))
    tiles = []
    for o0 in range(0, g.out_h, per_band):
        o1 = min(g.out_h, o0 + per_band)
        top, bottom = o0 * sy - pt, (o1 - 1) * sy - pt + g.kh  # window rows in input coordinates
        i0, i1 = max(0, top), min(g.in_h, bottom)
        tiles.append(PoolTile(len(tiles), (o0, o1), (i0, i1), i0 - top, bottom - i1, stage))
    return tiles


def _act_quant(graph: Graph, name: str) -> tuple[float, int]:
    t = graph.tensor(name)
    if t.dtype != "int8":
        raise _not_yet(f"a {t.dtype} pool (int8 only)")
    return activation_quant(t, "pool tensor")


def pool_geometry_of(graph: Graph, node: Node) -> PoolGeometry:
    """The PoolGeometry of a pool node, or CompileError naming why the PPU cannot run it."""
    op = node.op_type
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = graph.tensor(x).shape, graph.tensor(y).shape
    if xs is None or ys is None or len(xs) != 4 or xs[0] != 1 or len(ys) != 4:
        raise _not_yet(f"{op} on shape {xs} -> {ys} (one (1, C, H, W) map)")
    qx, qy = _act_quant(graph, x), _act_quant(graph, y)
    if not (np.isclose(qx[0], qy[0], rtol=1e-6, atol=0) and qx[1] == qy[1]):
        raise _not_yet(f"{op} with different input and output quantization ({qx} vs {qy}; the PPU has no "
                       "requantization stage)", "depthwise conv carrier with OUT_CVT requantization")
    clip = node.attrs.get("clip")
    if clip is not None:
        from .lower import clip_range  # local import: lower imports this module

        if clip_range(clip, qy[0], qy[1]) != (-128, 127):
            raise CompileError(f"{op} with a fused clamp {tuple(clip)} (the PPU has no clamp stage)")
    c, h, w = (int(v) for v in xs[1:])
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
        if op == "ReduceMean":
            axes = node.attrs.get("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1]:
                axes = graph.const(node.inputs[1])
            axes = sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) if axes is not None else None
            if axes != [2, 3] or not int(node.attrs.get("keepdims", 1)):
                raise _not_yet(f"ReduceMean over axes {axes} (only H, W with keepdims is a global average)")
        if max(h, w) > MAX_KERNEL and op == "GlobalMaxPool":
            raise _not_yet(f"a global {h}x{w} {op} (window > {MAX_KERNEL} per side)", "several PPU stages")
        method = "max" if op == "GlobalMaxPool" else "avg"
        geo = PoolGeometry(method, c, h, w, h, w, (h, w))
    else:
        a = node.attrs
        k = [int(v) for v in a.get("kernel_shape", ())]
        s = [int(v) for v in (a.get("strides") or (1, 1))]
        p = [int(v) for v in (a.get("pads") or (0, 0, 0, 0))]
        if len(k) != 2 or len(s) != 2 or len(p) != 4:
            raise _not_yet(f"{op} kernel {k} strides {s} pads {p} (2-D only)")
        if any(int(d) != 1 for d in (a.get("dilations") or (1, 1))):
            raise _not_yet(f"{op} with dilations {list(a.get('dilations'))} (the PPU has no dilated windows)")
        if len(node.outputs) > 1 and node.outputs[1]:
            raise _not_yet(f"{op} with an indices output")
        if op == "AveragePool" and max(k) > MAX_KERNEL and (k[0], k[1]) == (h, w) and not any(p):
            return PoolGeometry("avg", c, h, w, h, w, (h, w))  # a global average spelled as one window
        if op == "AveragePool" and (max(k) > MAX_KERNEL or max(s) > MAX_STRIDE or max(p) > MAX_PAD):
            raise _not_yet(f"AveragePool kernel {k}, strides {s}, pads {p} (beyond the PPU: kernel and stride <= "
                           f"{MAX_KERNEL}, pad <= {MAX_PAD})", "depthwise conv with 1/(kh*kw) weights")
        if max(k) > MAX_KERNEL or max(s) > MAX_STRIDE or max(p) > MAX_PAD:
            raise CompileError(f"{op} kernel {k}, strides {s}, pads {p} exceed the PPU (kernel <= {MAX_KERNEL}, "
                               f"stride <= {MAX_STRIDE}: iav/rk3568-npu; pad <= {MAX_PAD}: 3-bit fields)")
        if op == "AveragePool" and any(p):
            raise _not_yet("AveragePool with padding (the PPU divides by the whole window; TFLite/ONNX "
                           "count_include_pad=0 by the valid pixels)")
        geo = PoolGeometry("avg" if op == "AveragePool" else "max", c, h, w, k[0], k[1], (s[0], s[1]),
                           (p[0], p[1], p[2], p[3]))
    if (1, c, geo.out_h, geo.out_w) != tuple(int(v) for v in ys):
        raise CompileError(f"{op} output shape {ys} != the PPU's floor-mode {c}x{geo.out_h}x{geo.out_w} (ceil_mode "
                           "partial windows would starve the PPU, iav)")
    return geo


def pool_stages(g: PoolGeometry) -> list[PoolGeometry]:
    """The PPU stages computing ``g``: itself when its window fits, else (a global average) the factorisation of
    capabilities.ppu_stages into non-overlapping windows, or CompileError."""
    if max(g.kh, g.kw) <= MAX_KERNEL:
        return [g]
    from .capabilities import ppu_stages  # the partitioner's plan, so placement and lowering agree

    factors = ppu_stages((g.kh, g.kw)) if (g.out_h, g.out_w) == (1, 1) and not any(g.pads) else None
    if g.method != "avg" or factors is None:
        raise _not_yet(f"a {g.kh}x{g.kw} {g.method} pool window (PPU kernel <= {MAX_KERNEL}; a side with a prime "
                       f"factor > {MAX_KERNEL} cannot be split into stages)", "depthwise conv with 1/(kh*kw) weights")
    stages, h, w = [], g.in_h, g.in_w
    for a, b in factors:
        stages.append(replace(g, in_h=h, in_w=w, kh=a, kw=b, stride=(a, b)))
        h, w = h // a, w // b
    return stages


def lower_pool(graph: Graph, index: int, node: Node, name: str) -> PoolOp:
    """A PoolOp for node ``index`` (CompileError when the PPU cannot run it)."""
    geo = pool_geometry_of(graph, node)
    stages = pool_stages(geo)
    tiles = [t for k, sg in enumerate(stages) for t in plan_pool_tiles(sg, MAX_BAND_PIXELS, k)]
    tiles = [replace(t, index=i) for i, t in enumerate(tiles)]
    return PoolOp(name, [index], node.inputs[0], node.outputs[0], geo, tiles, stages)


# ---------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class PoolTask:
    """One PPU task: the band geometry (its pads), addresses and byte strides."""

    geometry: PoolGeometry
    input_addr: int
    output_addr: int
    input_line_stride: int
    input_surf_stride: int
    output_surf_stride: int
    name: str = ""

    def __post_init__(self) -> None:
        g = self.geometry
        for what in ("input_addr", "output_addr"):
            a = getattr(self, what)
            if not 0 <= a <= 0xFFFFFFFF or a % ATOM:
                raise CompileError(f"pool task {self.name!r}: {what} 0x{a:x} is not a 16-byte aligned 32-bit address")
        if self.input_line_stride < g.in_w * ATOM or self.input_line_stride % ATOM:
            raise CompileError(f"pool task {self.name!r}: input line stride {self.input_line_stride} below one line")
        if self.input_surf_stride < g.in_h * self.input_line_stride or self.input_surf_stride % ATOM:
            raise CompileError(f"pool task {self.name!r}: input surface stride {self.input_surf_stride} too small")
        if self.output_surf_stride < g.out_h * g.out_w * ATOM or self.output_surf_stride % ATOM:
            raise CompileError(f"pool task {self.name!r}: output surface stride {self.output_surf_stride} too small")
        if max(g.in_h, g.in_w, g.c, g.out_h, g.out_w) > MAX_CUBE:
            raise CompileError(f"pool task {self.name!r}: a cube dimension exceeds {MAX_CUBE}")
        if max(g.kh, g.kw) > 16 or max(g.stride) > 16 or max(g.pads) > MAX_PAD:
            raise CompileError(f"pool task {self.name!r}: kernel/stride/pad do not fit their register fields")


def build_pool_tasks(op: PoolOp, low, addr: dict[str, int]) -> list[PoolTask]:
    """The tasks of one pool op; ``low`` is the Lowering (buffers, views), ``addr`` buffer name -> address."""
    names = [low.views[op.input]] + [b for b, _ in op.scratch()] + [low.views[op.output]]
    # the first stage reads, the last writes through Lowering.address: either may be a concat leg (a channel-group
    # offset inside a shared buffer); scratch maps between stages are buffers of their own
    bases = [low.address(op.input, addr)] + [addr[b] for b, _ in op.scratch()] + [low.address(op.output, addr)]
    tasks = []
    for t in op.tiles:
        g = op.stages[t.stage]
        bin_, bout = low.buffers[names[t.stage]], low.buffers[names[t.stage + 1]]
        in_line, out_line = g.in_w * ATOM, g.out_w * ATOM
        tg = PoolGeometry(g.method, g.c, t.n_in_rows, g.in_w, g.kh, g.kw, g.stride,
                          (t.pad_top, g.pads[1], t.pad_bottom, g.pads[3]))
        if tg.out_h != t.n_out_rows:
            raise CompileError(f"{op.name}: tile {t.index} gives {tg.out_h} output rows, the plan {t.n_out_rows}")
        src, dst = bases[t.stage] + t.in_rows[0] * in_line, bases[t.stage + 1] + t.out_rows[0] * out_line
        tasks.append(PoolTask(tg, src, dst, in_line, bin_.surf_stride, bout.surf_stride, f"{op.name}#{t.index}"))
    return tasks


def pool_task_cycles(op: PoolOp) -> list[int]:
    """Rough per-task cost for the core schedule: input elements / 8 per cycle (NVDLA_PDP_THROUGHPUT)."""
    c = -(-op.geometry.c // ATOM) * ATOM
    return [max(1, c * t.n_in_rows * op.stages[t.stage].in_w // PPU_PIXELS_PER_CYCLE) for t in op.tiles]


# ---------------------------------------------------------------------------------------------- registers
def emit_pool(task: PoolTask) -> list[tuple[str, int]]:
    """The register writes of one PPU task (the PC tail is added by regcmd.link with PPU_OP_ENABLE)."""
    g = task.geometry
    sy, sx = g.stride
    pt, pl, pb, pr = g.pads
    avg = g.method == "avg"
    out: list[tuple[str, int]] = []

    def w(name: str, **fields: int) -> None:
        out.append((name, pack(name, **fields)))

    pp = dict(POINTER_PP_MODE=1, EXECUTER_PP_EN=1, POINTER_PP_EN=1)  # as for DPU/DPU_RDMA (Mesa) and allbilly
    w("PPU_S_POINTER", **pp)
    w("PPU_RDMA_RDMA_S_POINTER", **pp)
    w("PPU_DATA_CUBE_IN_WIDTH", CUBE_IN_WIDTH=g.in_w - 1)
    w("PPU_DATA_CUBE_IN_HEIGHT", CUBE_IN_HEIGHT=g.in_h - 1)
    w("PPU_DATA_CUBE_IN_CHANNEL", CUBE_IN_CHANNEL=g.c - 1)
    w("PPU_DATA_CUBE_OUT_WIDTH", CUBE_OUT_WIDTH=g.out_w - 1)
    w("PPU_DATA_CUBE_OUT_HEIGHT", CUBE_OUT_HEIGHT=g.out_h - 1)
    w("PPU_DATA_CUBE_OUT_CHANNEL", CUBE_OUT_CHANNEL=g.c - 1)
    # FLYING_MODE=1: off-flying, the input comes from DRAM via PPU_RDMA (NVDLA PDP; allbilly sets it)
    w("PPU_OPERATION_MODE_CFG", FLYING_MODE=1, POOLING_METHOD=_METHOD_FIELD[g.method])
    w("PPU_POOLING_KERNEL_CFG", KERNEL_STRIDE_HEIGHT=sy - 1, KERNEL_STRIDE_WIDTH=sx - 1, KERNEL_HEIGHT=g.kh - 1,
      KERNEL_WIDTH=g.kw - 1)
    w("PPU_RECIP_KERNEL_WIDTH", RECIP_KERNEL_WIDTH=ppu_recip(g.kw) if avg else 0)
    w("PPU_RECIP_KERNEL_HEIGHT", RECIP_KERNEL_HEIGHT=ppu_recip(g.kh) if avg else 0)
    w("PPU_POOLING_PADDING_CFG", PAD_BOTTOM=pb, PAD_RIGHT=pr, PAD_TOP=pt, PAD_LEFT=pl)
    w("PPU_PADDING_VALUE_1_CFG", PAD_VALUE_0=0)  # max/min ignore padded positions; avg pools are unpadded
    w("PPU_PADDING_VALUE_2_CFG", PAD_VALUE_1=0)
    w("PPU_DST_BASE_ADDR", DST_BASE_ADDR=task.output_addr >> 4)
    w("PPU_DST_SURF_STRIDE", DST_SURF_STRIDE=task.output_surf_stride // ATOM)
    w("PPU_DATA_FORMAT", PROC_PRECISION=0)  # int8 (NVDLA 0 int8 / 1 int16 / 2 fp16; allbilly fp16 = 2)
    w("PPU_MISC_CTRL", BURST_LEN=PPU_BURST_LEN)
    w("PPU_RDMA_RDMA_CUBE_IN_WIDTH", CUBE_IN_WIDTH=g.in_w - 1)
    w("PPU_RDMA_RDMA_CUBE_IN_HEIGHT", CUBE_IN_HEIGHT=g.in_h - 1)
    w("PPU_RDMA_RDMA_CUBE_IN_CHANNEL", CUBE_IN_CHANNEL=g.c - 1)
    w("PPU_RDMA_RDMA_SRC_BASE_ADDR", SRC_BASE_ADDR=task.input_addr)
    w("PPU_RDMA_RDMA_SRC_LINE_STRIDE", SRC_LINE_STRIDE=task.input_line_stride // ATOM)
    w("PPU_RDMA_RDMA_SRC_SURF_STRIDE", SRC_SURF_STRIDE=task.input_surf_stride // ATOM)
    w("PPU_RDMA_RDMA_DATA_FORMAT", IN_PRECISION=0)
    return out


def pool_regcmd_task(task: PoolTask) -> regcmd.Task:
    return regcmd_task(task.name, emit_pool(task))


def link_pool_tasks(tasks: Sequence[PoolTask], base_addr: int) -> tuple[bytes, list[regcmd.Placement]]:
    """Emit and chain PPU tasks into one regcmd buffer at ``base_addr`` (op-enable PPU|PPU_RDMA)."""
    return regcmd.link([pool_regcmd_task(t) for t in tasks], base_addr, op_enable=PPU_OP_ENABLE)


__all__ = ["MAX_BAND_PIXELS", "POOL_OPS", "PPU_OP_ENABLE", "PoolOp", "PoolTask", "PoolTile", "build_pool_tasks",
           "emit_pool", "link_pool_tasks", "lower_pool", "plan_pool_tiles", "pool_geometry_of",
           "pool_regcmd_task", "pool_stages", "pool_task_cycles"]
