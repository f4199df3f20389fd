"""Performance model of the RK3588 NPU (and of the CPU fallback), per task, per op and per model.

Two entry points share one mechanism:

* ``estimate(compiled, params)``: a compiled program (``compiler.compile_lowered``): the real tile plans, the
  real placements after lowering (CPU fallbacks with their reasons) and the real boundary conversions;
* ``estimate_graph(graph, dtype, params)``: any shaped graph (float or quantized, weights may be random) with the
  partitioner's placements and the CBUF tiling planner (``tiling.plan_conv_tiles``) run for ``dtype`` ("int8" or
  "float16") -- for architectures that are not compiled (fp16 transformers, hand-built timing models).

The mechanism (every constant is a row of :data:`CONSTANTS` with its source; docs/performance-model.md):

* **MAC array**: one cycle processes one output pixel x one *atomic* of input channels x one atomic of kernels.
  The atomics are those of the matmul API's native B layout: int8 (N/32, K/32, 32, 32) and fp16
  (N/16, K/32, 16, 32) -- 32 input channels x 32 int8 (16 fp16) kernels = the 1024 int8 / 512 fp16 MACs per
  cycle per core. Channel counts are rounded up to the atomics (first layers with 3 channels waste 29/32 of the
  array). Depthwise: each kernel sees only its own channel, so a cycle does one 16-channel feature atom
  (16 int8 MACs) per kernel tap.
* **DPU**: outputs leave the accumulator through the DPU (NVDLA SDP): 16 elements per cycle through BS/BN, 4 per
  cycle when the EW stage is used (fused Add, LUT activations) -- NVDLA nv_full throughputs. PPU pooling (NVDLA
  PDP) reads 8 elements per cycle.
* **DMA**: every task streams its input rows, its weights (unless WEIGHT_REUSE keeps them in the CBUF), its EW
  operand and its output through the core's memory port: 64 bytes per NPU cycle (NVDLA nv_full 512-bit primary
  memory interface), capped by the shared DDR (25.6 GB/s LPDDR4X). At 200 MHz the port, not the DDR, limits.
* **Overlap**: inside a task the CNA fetch, the MACs and the DPU are pipelined, so a task costs the slowest of
  the three plus a fixed start-up of one memory round trip (NVDLA primary memory latency, 1200 cycles) and
  the regcmd fetch (its words over the port).
* **Driver**: "rknn" (vendor runtime: the tasks of a graph chained by the PC, one submit per NPU segment) or
  "rocket" (Linux accel/rocket + Mesa: every task its own hardware submit, IRQ and threaded resubmit, ~22.5 us).
* **Cores**: with the vendor runtime's core mask 0_1_2, a conv's work is split over the cores when that is faster;
  MACs and DPU scale, the shared DDR does not. The rocket driver picks cores itself and fences serialize the jobs
  of one graph (schedule.py), so it is modelled on one core.
* **CPU**: Cortex-A76 at 2.4 GHz (RK3588's big cores; ``cpu_core="a55"``: the 1.8 GHz little cores): GEMM-like
  ops at the NEON rate (A76: int8 SDOT 32 MAC/cycle, fp32 8 MAC/cycle) times an attained fraction, element-wise
  and data movement at a memory rate, plus a per-op dispatch cost; NPU<->CPU boundary conversions are CPU data
  movement plus a cache sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from opennpu.errors import CompileError
from opennpu.ir.graph import Graph, Node
from opennpu.ir.stats import node_macs

from .tiling import ConvGeometry as TileGeometry
from .tiling import TilePlan, plan_conv_tiles

# ---------------------------------------------------------------------------------------------- constants


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str
    tag: str  # "R" read in the source, "3P" third-party claim, "I" inference


REF = "shared/reference/rk3588-npu.md"
NVDLA = "nvdla/hw spec/defs/nv_full.spec (NVDLA_* configuration of the full NVDLA)"
CONSTANTS: dict[str, Constant] = {
    "int8_macs_per_cycle": Constant(1024, "MAC/cycle/core", f"TRM via jas-hacks 2023 ({REF} §3)", "3P"),
    "fp16_macs_per_cycle": Constant(512, "MAC/cycle/core", f"measured 2:1 int8/fp16 matmul peaks ({REF} §3)", "I"),
    "atomic_c": Constant(32, "input channels/cycle", f"rknn_matmul_api native B layout (N/32, K/32, 32, 32), "
                         f"(N/16, K/32, 16, 32) ({REF} §4.2)", "R"),
    "atomic_k_int8": Constant(32, "kernels/cycle", f"rknn_matmul_api int8 B layout ({REF} §4.2)", "R"),
    "atomic_k_fp16": Constant(16, "kernels/cycle", f"rknn_matmul_api fp16 B layout ({REF} §4.2)", "R"),
    "dw_lanes_int8": Constant(16, "channels/cycle", "depthwise: one 16-channel feature atom per kernel tap and cycle "
                              "(rkt_ml.h FEATURE_ATOMIC_SIZE 16, NC1HWC2 C2=16; each kernel sees only its channel)",
                              "I"),
    "dw_lanes_fp16": Constant(8, "channels/cycle", "depthwise fp16: one 16-byte atom = 8 fp16 channels", "I"),
    "dpu_bs_throughput": Constant(16, "elements/cycle", f"{NVDLA}: NVDLA_SDP_BS_THROUGHPUT 16", "R"),
    "dpu_ew_throughput": Constant(4, "elements/cycle", f"{NVDLA}: NVDLA_SDP_EW_THROUGHPUT 4 (EW ALU, LUT)", "R"),
    "ppu_throughput": Constant(8, "elements/cycle", f"{NVDLA}: NVDLA_PDP_THROUGHPUT 8", "R"),
    "port_bytes_per_cycle": Constant(64, "bytes/cycle/core", f"{NVDLA}: NVDLA_PRIMARY_MEMIF_WIDTH 512 bits", "R"),
    "mem_latency_cycles": Constant(1200, "cycles/task", f"{NVDLA}: NVDLA_PRIMARY_MEMIF_LATENCY 1200", "R"),
    "ddr_gbps": Constant(25.6, "GB/s shared", f"LPDDR4X, widgetii kernel_feature_comparison.md ({REF} §3)", "3P"),
    "regcmd_bytes_per_word": Constant(8, "bytes", f"64-bit regcmd words ({REF} §1.5)", "R"),
    "rocket_task_us": Constant(22.5, "us/task", f"hw_submit 2.5 + IRQ 2 + threaded handler 18 us, widgetii "
                               f"ftrace of Mesa+rocket ({REF} §1.6)", "3P"),
    "submit_us": Constant(22.5, "us/submit", "one job submit + completion IRQ + handler (same ftrace figures)",
                          "3P"),
    "clock_vendor_mhz": Constant(1000, "MHz", f"RKNN clock 1 GHz, jas-hacks ({REF} §3)", "3P"),
    "clock_mainline_mhz": Constant(200, "MHz", f"rk3588-base.dtsi assigned-clock-rates ({REF} §1.8)", "R"),
    "cpu_clock_mhz": Constant(2400, "MHz", "RK3588 Cortex-A76 cores at up to 2.4 GHz (Rockchip RK3588 datasheet)",
                              "3P"),
    "cpu_int8_macs_per_cycle": Constant(32, "MAC/cycle", "A76: 2 x 128-bit NEON pipes, SDOT = 16 int8 MACs each "
                                        "(Arm Cortex-A76 Software Optimization Guide)", "R"),
    "cpu_fp32_macs_per_cycle": Constant(8, "MAC/cycle", "A76: 2 x 128-bit FMA pipes x 4 fp32 lanes (same guide)",
                                        "R"),
    "a55_clock_mhz": Constant(1800, "MHz", "RK3588 Cortex-A55 cores at up to 1.8 GHz (Rockchip RK3588 datasheet)",
                              "3P"),
    "a55_int8_macs_per_cycle": Constant(16, "MAC/cycle", "A55: NEON datapath 2 x 64 bits, SDOT = 8 int8 MACs per "
                                        "pipe (Arm Cortex-A55 Software Optimization Guide)", "R"),
    "a55_fp32_macs_per_cycle": Constant(4, "MAC/cycle", "A55: 2 x 64-bit FMA pipes x 2 fp32 lanes (same guide)", "R"),
    "cpu_gemm_efficiency": Constant(0.5, "fraction", "attained/peak of a tuned NEON GEMM at batch 1 [I]", "I"),
    "cpu_mem_gbps": Constant(8.0, "GB/s", "one A76 core streaming (load+store) from DDR [I]", "I"),
    "cpu_elementwise_cycles": Constant(1.0, "cycles/element", "transcendental/requant per element, NEON [I]", "I"),
    "cpu_op_us": Constant(5.0, "us/op", "framework dispatch per op (TFLite/ORT-like interpreter) [I]", "I"),
    "cache_sync_gbps": Constant(20.0, "GB/s", "cache clean/invalidate of a boundary buffer (PREP/FINI_BO) [I]", "I"),
}


def _c(name: str) -> float:
    return CONSTANTS[name].value


@dataclass(frozen=True)
class CostParams:
    """What the user chooses: clock, cores, driver, DDR. Reported with every estimate."""

    clock_mhz: float = _c("clock_vendor_mhz")
    cores: int = 1
    driver: str = "rknn"  # "rknn" | "rocket"
    ddr_gbps: float = _c("ddr_gbps")
    cpu_threads: int = 1
    cpu_core: str = "a76"  # the fallback runs on a big (Cortex-A76) or a little (Cortex-A55) core

    def __post_init__(self) -> None:
        if self.driver not in ("rknn", "rocket"):
            raise CompileError(f"unknown driver {self.driver!r} (rknn or rocket)")
        if not 1 <= self.cores <= 3:
            raise CompileError(f"the RK3588 NPU has 3 cores, asked for {self.cores}")
        if self.cpu_core not in ("a76", "a55"):
            raise CompileError(f"unknown CPU core {self.cpu_core!r} (a76 or a55)")
        if not (self.clock_mhz > 0 and self.ddr_gbps > 0 and self.cpu_threads >= 1):
            raise CompileError("clock, DDR bandwidth and CPU threads must be positive")

    @property
    def clock_note(self) -> str:
        if self.clock_mhz == _c("clock_vendor_mhz"):
            return "1000 MHz (vendor clock)"
        if self.clock_mhz == _c("clock_mainline_mhz"):
            return "200 MHz (mainline device-tree default)"
        return f"{self.clock_mhz:g} MHz (user)"


# ---------------------------------------------------------------------------------------------- task work


@dataclass(frozen=True)
class TaskWork:
    """What one NPU task does, in hardware units (independent of clock and cores)."""

    mac_cycles: int
    dpu_cycles: int
    bytes_moved: int  # input + weights (if loaded) + EW operand + output
    regcmd_words: int = 130  # ~130 words per conv task (widgetii, reference §1.5)


@dataclass
class OpCost:
    """One graph node's predicted cost; nodes fused into another (free) have 0 and ``fused_into``."""

    name: str
    op_type: str
    placement: str  # "npu" | "cpu"
    reason: str | None
    macs: int
    tasks: int
    latency_us: float
    breakdown: dict[str, float] = field(default_factory=dict)  # us by component: mac, dma, dpu, overhead, cpu
    bound: str = ""  # what limits it: mac | dma | dpu | overhead | cpu | free
    fused_into: str | None = None
    bytes_moved: int = 0


@dataclass
class PerfEstimate:
    ops: list[OpCost]
    params: CostParams
    dtype: str
    conversions_us: float
    driver_us: float  # per-segment submits (rknn) -- rocket's per-task cost sits in the ops
    notes: list[str] = field(default_factory=list)

    @property
    def npu_ms(self) -> float:
        return sum(o.latency_us for o in self.ops if o.placement == "npu") / 1000 + self.driver_us / 1000

    @property
    def cpu_ms(self) -> float:
        return sum(o.latency_us for o in self.ops if o.placement == "cpu") / 1000 + self.conversions_us / 1000

    @property
    def latency_ms(self) -> float:
        return self.npu_ms + self.cpu_ms

    @property
    def cores(self) -> int:
        return self.params.cores

    @property
    def clock_mhz(self) -> float:
        return self.params.clock_mhz

    def perf_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "npu_ms": self.npu_ms, "cpu_ms": self.cpu_ms, "cores": self.cores,
                "clock_mhz": self.clock_mhz, "driver": self.params.driver, "clock": self.params.clock_note,
                "conversions_ms": self.conversions_us / 1000, "driver_ms": self.driver_us / 1000}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _c2(dtype: str) -> int:
    return 16 if dtype in ("int8", "uint8") else 8  # NC1HWC2: 16 bytes per atom


def conv_task_work(plan: TilePlan, dtype: str, ew_stage: bool = False, fused_ew_operand: bool = False
                   ) -> list[TaskWork]:
    """The work of every task of a conv tile plan (dense, depthwise, FC as 1x1)."""
    g = plan.geometry
    kh, kw = g.keff  # dilated kernels are lowered zero-inserted: their zero taps cost MAC cycles too
    fp16 = dtype == "float16"
    c2 = _c2(dtype)
    k_atom = int(_c("atomic_k_fp16" if fp16 else "atomic_k_int8"))
    c_atom = int(_c("atomic_c"))
    dw_lanes = int(_c("dw_lanes_fp16" if fp16 else "dw_lanes_int8"))
    dpu_rate = _c("dpu_ew_throughput" if ew_stage else "dpu_bs_throughput")
    out = []
    for t in plan.tasks:
        px = t.n_out_rows * t.n_out_cols
        n_oc = t.oc_range[1] - t.oc_range[0]
        if g.depthwise:
            mac = px * kh * kw * _ceil(n_oc, dw_lanes)
        else:
            mac = px * kh * kw * _ceil(g.in_channels, c_atom) * _ceil(n_oc, k_atom)
        in_bytes = t.n_in_rows * t.n_in_cols * _ceil(t.ic_range[1] - t.ic_range[0], c2) * 16
        w_bytes = 0 if t.weight_reuse else t.weight_bytes
        out_bytes = px * _ceil(n_oc, c2) * 16
        ew_bytes = out_bytes if fused_ew_operand else 0
        out.append(TaskWork(int(mac), int(math.ceil(px * n_oc / dpu_rate)), in_bytes + w_bytes + out_bytes + ew_bytes))
    return out


def elementwise_task_work(in_elems: int, out_elems: int, dtype: str, unit: str) -> TaskWork:
    """A standalone DPU (identity carrier: EW add/mul, LUT, BS) or PPU pass over a whole tensor."""
    item = 2 if dtype == "float16" else 1
    if unit == "PPU":
        cycles = math.ceil(in_elems / _c("ppu_throughput"))
        return TaskWork(0, cycles, (in_elems + out_elems) * item, 40)
    rate = _c("dpu_bs_throughput") if unit in ("DPU-BS", "DPU-OUT_CVT") else _c("dpu_ew_throughput")
    return TaskWork(0, math.ceil(out_elems / rate), (in_elems + out_elems) * item)


def _task_seconds(w: TaskWork, p: CostParams, cores: int) -> dict[str, float]:
    """Components of one task's time in us when its work is split over ``cores`` cores."""
    hz = p.clock_mhz * 1e6
    port = _c("port_bytes_per_cycle") * hz * cores
    bw = min(port, p.ddr_gbps * 1e9)
    return {"mac": w.mac_cycles / cores / hz * 1e6, "dpu": w.dpu_cycles / cores / hz * 1e6,
            "dma": w.bytes_moved / bw * 1e6,
            "overhead": (_c("mem_latency_cycles") / hz + w.regcmd_words * _c("regcmd_bytes_per_word") / port) * 1e6}


def _op_on_cores(works: list[TaskWork], p: CostParams, cores: int) -> tuple[float, dict[str, float]]:
    total = 0.0
    agg = {"mac": 0.0, "dpu": 0.0, "dma": 0.0, "overhead": 0.0}
    per_task = _c("rocket_task_us") if p.driver == "rocket" else 0.0
    for w in works:
        s = _task_seconds(w, p, cores)
        total += max(s["mac"], s["dpu"], s["dma"]) + s["overhead"] + per_task
        for k in ("mac", "dpu", "dma"):
            agg[k] += s[k]
        agg["overhead"] += s["overhead"] + per_task
    if cores > 1:  # cross-core synchronisation of a split op [I]: a quarter of a submit round trip
        agg["overhead"] += _c("submit_us") / 4
        total += _c("submit_us") / 4
    return total, agg


def npu_op_cost(works: list[TaskWork], p: CostParams, splittable: bool = True) -> tuple[float, dict[str, float], str]:
    """Latency (us), breakdown and bound of an NPU op made of ``works`` tasks. With the vendor runtime and several
    cores an op is split over them only when that is faster (a tiny op is not worth the cross-core sync)."""
    if not works:
        return 0.0, {}, "free"
    best = _op_on_cores(works, p, 1)
    if splittable and p.driver == "rknn" and p.cores > 1:
        split = _op_on_cores(works, p, p.cores)
        if split[0] < best[0]:
            best = split
    total, agg = best
    return total, agg, max(agg, key=agg.get)


# ---------------------------------------------------------------------------------------------- CPU model

GEMM_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
            "MatMulInteger", "LSTM", "GRU", "RNN", "Einsum", "Attention"}
TRANSCENDENTAL = {"Sigmoid", "Tanh", "Exp", "Log", "Softmax", "LogSoftmax", "Erf", "Gelu", "Silu", "HardSwish",
                  "HardSigmoid", "Pow", "Sqrt", "Reciprocal", "Div", "LayerNormalization", "Softplus", "Mish",
                  "Elu", "Selu", "Celu", "Resize", "GridSample"}


def _elems(graph: Graph, names: list[str], const: bool = False) -> int:
    n = 0
    for t in names:
        if not t:
            continue
        ten = graph.tensor(t)
        if ten.is_const and not const:
            continue
        if ten.shape is not None:
            n += int(np.prod(ten.shape))
    return n


def cpu_node_cost(graph: Graph, node: Node, dtype: str, p: CostParams) -> tuple[float, dict[str, float]]:
    """Cortex-A76 time (us) of one node: GEMM rate for MAC ops, memory + per-element rate for the rest."""
    little = p.cpu_core == "a55"
    hz = _c("a55_clock_mhz" if little else "cpu_clock_mhz") * 1e6
    threads = p.cpu_threads
    macs = node_macs(graph, node)
    ins, outs = _elems(graph, node.inputs), _elems(graph, node.outputs)
    item = 1 if dtype in ("int8", "uint8") else 4  # the float fallback runs fp32 kernels
    mem_us = (ins + outs) * item / (_c("cpu_mem_gbps") * 1e9) * 1e6
    if node.op_type in GEMM_OPS or macs > 0:
        rate = _c(("a55" if little else "cpu") + ("_int8_macs_per_cycle" if item == 1 else "_fp32_macs_per_cycle"))
        comp_us = macs / (rate * _c("cpu_gemm_efficiency") * hz * threads) * 1e6
    else:
        per = _c("cpu_elementwise_cycles") * (4 if node.op_type in TRANSCENDENTAL else 1)
        lanes = (4 if item == 4 else 16) // (2 if little else 1)  # 128-bit NEON (A55: 64-bit datapath)
        comp_us = max(ins, outs) * per / (hz * threads * lanes) * 1e6
    disp = _c("cpu_op_us")
    return max(comp_us, mem_us) + disp, {"cpu": max(comp_us, mem_us), "overhead": disp}


def conversion_us(n_bytes: int) -> float:
    """A boundary conversion (NCHW <-> NC1HWC2 repack on the CPU) plus the cache sync of its buffer."""
    return n_bytes * 2 / (_c("cpu_mem_gbps") * 1e9) * 1e6 + n_bytes / (_c("cache_sync_gbps") * 1e9) * 1e6


# ---------------------------------------------------------------------------------------------- graph level

FREE_UNITS = ("addressing", "layout", "boundary")


def _is_fused(lowering: str | None) -> bool:
    s = (lowering or "").lower()
    return s.startswith(("ew stage fused", "output saturation of", "absorbed", "no-op")) or "after the producer" in s \
        or _lut_after_conv(s)


def _lut_after_conv(lowering: str | None) -> bool:
    """A LUT activation the lowering fuses into its producing conv (lower.py / lut.py): no task of its own."""
    s = (lowering or "").lower()
    return any(f"dpu lut after {p} " in s for p in ("conv", "gemm", "matmul"))


def _conv_geometry(graph: Graph, node: Node) -> TileGeometry:
    x = graph.tensor(node.inputs[0]).shape
    w = graph.tensor(node.inputs[1]).shape
    if node.op_type == "Conv":
        group = int(node.attrs.get("group", 1))
        if group > 1 and not (group == x[1] == w[0] and w[1] == 1):
            # grouped conv lowered as a block-diagonal dense conv (capabilities.py): dense over all channels
            attrs = dict(node.attrs, group=1)
            return TileGeometry.from_conv(x, (w[0], x[1], *w[2:]), attrs)
        return TileGeometry.from_conv(x, w, node.attrs)
    # Gemm / MatMul: rows M, K, N (transB)
    k = int(x[-1])
    rows = int(np.prod(x[:-1])) if len(x) > 1 else 1
    n = int(w[0] if node.attrs.get("transB", 0) else w[-1])
    return TileGeometry.fc(k, n, rows)


def _placements(graph: Graph):
    from .partition import partition

    return partition(graph)


def estimate_graph(graph: Graph, dtype: str = "int8", params: CostParams | None = None) -> PerfEstimate:
    """Estimate a shaped graph with the partitioner's placements and fresh tile plans for ``dtype``."""
    p = params or CostParams()
    if dtype not in ("int8", "float16"):
        raise CompileError(f"the RK3588 cost model knows int8 and float16, not {dtype!r}")
    plan = _placements(graph)
    producers = graph.producers()
    ops: list[OpCost] = []
    notes: list[str] = []
    fused_ew: dict[str, str] = {}  # conv node name -> add node fused into it
    fused_lut: set[str] = set()  # conv node names whose EW stage runs a fused LUT activation
    for npl in plan.nodes:
        pl = npl.placement
        if pl.device == "npu" and pl.unit == "DPU-LUT" and _lut_after_conv(pl.lowering):
            prod = producers.get(graph.nodes[npl.index].inputs[0])
            if prod is not None:
                fused_lut.add(prod.name or prod.outputs[0])
            continue
        if pl.device == "npu" and pl.unit in ("DPU-EW", "DPU-LUT") and _is_fused(pl.lowering):
            node = graph.nodes[npl.index]
            for t in node.inputs:
                prod = producers.get(t)
                if prod is not None and prod.op_type in ("Conv", "Gemm", "MatMul"):
                    fused_ew[prod.name or prod.outputs[0]] = npl.name
                    break
    for npl in plan.nodes:
        node, pl = graph.nodes[npl.index], npl.placement
        if pl.device == "cpu":
            lat, bd = cpu_node_cost(graph, node, "fp32" if not plan.quantized and dtype != "int8" else dtype, p)
            ops.append(OpCost(npl.name, npl.op_type, "cpu", pl.reason, npl.macs, 0, lat, bd, "cpu"))
            continue
        if pl.free or pl.unit in FREE_UNITS:
            ops.append(OpCost(npl.name, npl.op_type, "npu", None, npl.macs, 0, 0.0, {}, "free"))
            continue
        if pl.unit == "CNA+CORE+DPU" and node.op_type in ("Conv", "Gemm", "MatMul"):
            try:
                tplan = plan_conv_tiles(_conv_geometry(graph, node), dtype)
            except (CompileError, IndexError, TypeError) as e:
                lat, bd = cpu_node_cost(graph, node, dtype, p)
                ops.append(OpCost(npl.name, npl.op_type, "cpu", f"tiling: {e}", npl.macs, 0, lat, bd, "cpu"))
                continue
            ew = npl.name in fused_ew
            works = conv_task_work(tplan, dtype, ew_stage=ew or npl.name in fused_lut, fused_ew_operand=ew)
            lat, bd, bound = npu_op_cost(works, p)
            ops.append(OpCost(npl.name, npl.op_type, "npu", None, npl.macs, len(works), lat, bd, bound,
                              bytes_moved=sum(w.bytes_moved for w in works)))
            continue
        if _is_fused(pl.lowering):
            ops.append(OpCost(npl.name, npl.op_type, "npu", None, npl.macs, 0, 0.0, {}, "free",
                              fused_into=pl.lowering))
            continue
        ins, outs = _elems(graph, node.inputs), _elems(graph, node.outputs)
        unit = pl.unit or "DPU-EW"
        if unit == "CNA+CORE+DPU":  # identity / depthwise carriers of pads, avg pools...
            unit = "DPU-BS"
        w = elementwise_task_work(ins, outs, dtype, unit)
        lat, bd, bound = npu_op_cost([w], p)
        ops.append(OpCost(npl.name, npl.op_type, "npu", None, npl.macs, 1, lat, bd, bound, bytes_moved=w.bytes_moved))
    item = 2 if dtype == "float16" else 1
    conv_us = sum(conversion_us(_elems(graph, [c.tensor]) * item) for c in plan.conversions)
    n_npu_segments = sum(s.device == "npu" for s in plan.segments)
    driver_us = _c("submit_us") * n_npu_segments if p.driver == "rknn" else 0.0
    return PerfEstimate(ops, p, dtype, conv_us, driver_us, notes)


# ---------------------------------------------------------------------------------------------- compiled


def estimate(compiled: Any, params: CostParams | None = None) -> PerfEstimate:
    """Estimate a compiled program (``compiler.Compiled``) from its real lowering and tile plans."""
    from . import lower as LW

    p = params or CostParams()
    low = compiled.lowering
    g = low.graph
    ops: list[OpCost] = []
    covered: dict[int, tuple[str, int]] = {}  # node index -> (lowered op, slot node index)
    for op in low.ops.values():
        for i in op.nodes:
            covered[i] = (op.name, op.nodes[-1])
    cost_of: dict[str, tuple[float, dict[str, float], str, int, int]] = {}
    for op in low.ops.values():
        if isinstance(op, LW.ConvOp):
            ew = op.ew_input is not None
            lut = op.requant.lut is not None  # a LUT activation also runs the EW stage (4 elements/cycle)
            works = conv_task_work(op.plan, "int8", ew_stage=ew or lut, fused_ew_operand=ew)
            lat, bd, bound = npu_op_cost(works, p)
            cost_of[op.name] = (lat, bd, bound, len(works), sum(w.bytes_moved for w in works))
        elif isinstance(op, (LW.AliasOp, LW.ConcatOp)):  # views / output addressing: no task
            cost_of[op.name] = (0.0, {}, "free", 0, 0)
        else:  # other lowered kinds (pooling, element-wise carriers...): one DPU/PPU pass over their tensors
            node = g.nodes[op.nodes[-1]]
            unit = "PPU" if getattr(op, "kind", "") == "pool" else "DPU-EW"
            w = elementwise_task_work(_elems(g, node.inputs), _elems(g, node.outputs), "int8", unit)
            n_tasks = len(getattr(op, "tiles", None) or getattr(getattr(op, "plan", None), "tasks", [])) or 1
            lat, bd, bound = npu_op_cost([w], p)
            cost_of[op.name] = (lat, bd, bound, n_tasks, w.bytes_moved)
    for d in low.decisions:
        node = g.nodes[d.index]
        if d.device == "cpu":
            lat, bd = cpu_node_cost(g, node, "int8", p)
            ops.append(OpCost(d.name, d.op_type, "cpu", d.reason, d.macs, 0, lat, bd, "cpu"))
            continue
        if d.index in covered:
            opname, slot = covered[d.index]
            lat, bd, bound, n_tasks, nbytes = cost_of[opname]
            owner = _owner_index(low, opname)
            if d.index == owner:
                ops.append(OpCost(d.name, d.op_type, "npu", None, d.macs, n_tasks, lat, bd, bound,
                                  bytes_moved=nbytes))
            else:
                ops.append(OpCost(d.name, d.op_type, "npu", None, d.macs, 0, 0.0, {}, "free", fused_into=opname))
            continue
        ops.append(OpCost(d.name, d.op_type, "npu", None, d.macs, 0, 0.0, {}, "free",
                          fused_into="layout/addressing (no data movement)"))
    conv_us = sum(conversion_us(int(np.prod(c.shape))) for s in low.segments for c in s.to_npu + s.to_cpu)
    n_npu_segments = sum(1 for s in low.segments if s.device == "npu" and s.ops)
    driver_us = _c("submit_us") * n_npu_segments if p.driver == "rknn" else 0.0
    return PerfEstimate(ops, p, "int8", conv_us, driver_us)


def _owner_index(low: Any, opname: str) -> int:
    """The node an op's cost is reported on: the one with the most MACs (the conv), else its slot."""
    op = low.ops[opname]
    by = {d.index: d.macs for d in low.decisions}
    best = max(op.nodes, key=lambda i: (by.get(i, 0), i == op.nodes[-1]))
    return best


def with_params(params: CostParams, **kw) -> CostParams:
    return replace(params, **kw)


__all__ = ["CONSTANTS", "Constant", "CostParams", "OpCost", "PerfEstimate", "TaskWork", "conv_task_work",
           "conversion_us", "cpu_node_cost", "elementwise_task_work", "estimate", "estimate_graph", "npu_op_cost"]
