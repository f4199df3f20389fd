"""Split a graph into NPU and CPU segments for the RK3588, with explicit boundary conversions.

``partition(graph)`` is pure: it reads the graph (float or quantized, see briefs/quant.md) and returns a
``PartitionPlan``; the graph is never modified.

1. Every node is placed by ``capabilities.check_node`` (NPU, or CPU with a reason).
2. NPU islands that do no MACs and touch a CPU op (a lone layout op, a Relu between two CPU ops) move to
   the CPU: running them on the NPU would cost two boundary conversions for nothing.
3. Nodes are scheduled by a topological sort that keeps running on the current device while it has ready
   nodes (Kahn's algorithm with device affinity); maximal same-device runs of that order are the segments.
   Segment dependencies therefore always point backwards, and independent branches on the same device
   share a segment unless the other device's work must run between them.
4. Every tensor that crosses devices (graph inputs and outputs count as host/CPU memory) gets one
   ``Conversion``: NCHW <-> NC1HWC2 re-layout, plus quantize/dequantize when the CPU side is float and the
   NPU side is integer (float graphs, where the NPU side is assumed int8). In quantized graphs the Q/DQ
   ops are explicit nodes (on the CPU), so conversions there are layout-only.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ...errors import GraphError
from ...ir.graph import Graph
from ...ir.stats import node_macs
from .capabilities import GraphContext, Placement, check_node

NPU_LAYOUT = "NC1HWC2"


@dataclass(frozen=True)
class NodePlacement:
    index: int  # position in graph.nodes
    name: str
    op_type: str
    macs: int
    placement: Placement

    @property
    def device(self) -> str:
        return self.placement.device


@dataclass
class Segment:
    id: int
    device: str  # "npu" | "cpu"
    nodes: list[int]  # indices into graph.nodes, in execution order
    macs: int = 0
    inputs: list[str] = field(default_factory=list)  # activations read from outside the segment
    outputs: list[str] = field(default_factory=list)  # activations read by later segments or graph outputs
    depends_on: list[int] = field(default_factory=list)  # segment ids


@dataclass(frozen=True)
class Conversion:
    tensor: str
    src: int | None  # producing segment id; None = graph input (host memory)
    dst: tuple[int | None, ...]  # consuming segment ids; None = graph output (host memory)
    direction: str  # "to_npu" | "to_cpu"
    layout_from: str
    layout_to: str
    quant: str | None  # "quantize" | "dequantize" | None
    dtype_from: str
    dtype_to: str
    shape: tuple[int, ...] | None
    nbytes: int  # size on the NPU side (NC1HWC2 channel padding not included)


@dataclass
class PartitionPlan:
    graph_name: str
    quantized: bool
    assumed_dtype: str | None  # "int8" for float graphs checked as if quantized
    nodes: list[NodePlacement]
    segments: list[Segment]
    conversions: list[Conversion]
    total_macs: int
    npu_macs: int

    @property
    def npu_mac_fraction(self) -> float:
        return self.npu_macs / self.total_macs if self.total_macs else 0.0

    @property
    def placements(self) -> dict[str, Placement]:
        return {n.name: n.placement for n in self.nodes}

    def cpu_nodes(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.device == "cpu"]

    def npu_nodes(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.device == "npu"]

    def reason_counts(self) -> Counter[str]:
        """CPU reasons with the node-specific values stripped to the op type + limit, most common first."""
        return Counter(f"{n.op_type}: {n.placement.limit}" for n in self.cpu_nodes())

    def segment_of(self) -> dict[int, int]:
        return {i: s.id for s in self.segments for i in s.nodes}

    def summary(self) -> str:
        lines = [f"{self.graph_name}: {len(self.npu_nodes())} NPU / {len(self.cpu_nodes())} CPU nodes, "
                 f"{len(self.segments)} segments, {len(self.conversions)} boundary conversions, "
                 f"NPU MACs {self.npu_macs}/{self.total_macs} = {self.npu_mac_fraction:.4f}"
                 + (f" (float graph, assumed {self.assumed_dtype})" if self.assumed_dtype else "")]
        for n in self.cpu_nodes():
            lines.append(f"  cpu {n.op_type:<20} {n.name}: {n.placement.reason}")
        return "\n".join(lines)


def _demote_idle_islands(graph: Graph, places: list[Placement], macs: list[int]) -> list[Placement]:
    """Move NPU islands with no MACs that touch a CPU node to the CPU (saves two conversions each)."""
    producers = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    users: dict[str, list[int]] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t:
                users.setdefault(t, []).append(i)
    neighbours: list[set[int]] = [set() for _ in graph.nodes]
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t in producers:
                neighbours[i].add(producers[t])
                neighbours[producers[t]].add(i)
    out = list(places)
    seen: set[int] = set()
    for start, p in enumerate(places):
        if p.device != "npu" or start in seen:
            continue
        comp, stack = [], [start]
        seen.add(start)
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in neighbours[i]:
                if places[j].device == "npu" and j not in seen:
                    seen.add(j)
                    stack.append(j)
        touches_cpu = any(places[j].device == "cpu" for i in comp for j in neighbours[i])
        if touches_cpu and sum(macs[i] for i in comp) == 0:
            for i in comp:
                q = places[i]
                out[i] = Placement(
                    "cpu", f"{graph.nodes[i].op_type} could run on the NPU ({q.lowering}) but its NPU island of "
                    f"{len(comp)} node(s) has no MACs and borders CPU ops: kept on the CPU to avoid boundary "
                    "conversions", "island", assumed_dtype=q.assumed_dtype)
    return out


def _schedule(graph: Graph, devices: list[str]) -> list[list[int]]:
    """Topological order that stays on one device as long as it can; returns the same-device runs."""
    n = len(graph.nodes)
    producers = {o: i for i, node in enumerate(graph.nodes) for o in node.outputs if o}
    deps = [sorted({producers[t] for t in node.inputs if t in producers}) for node in graph.nodes]
    indeg = [len(d) for d in deps]
    users: list[list[int]] = [[] for _ in range(n)]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready: dict[str, list[int]] = {"npu": [], "cpu": []}
    for i in range(n):
        if indeg[i] == 0:
            heapq.heappush(ready[devices[i]], i)
    runs: list[list[int]] = []
    current: str | None = None
    done = 0
    while done < n:
        if current is None or not ready[current]:
            cands = [d for d in ("npu", "cpu") if ready[d]]
            if not cands:
                raise GraphError(f"graph {graph.name!r} has a cycle or a dangling dependency")
            current = min(cands, key=lambda d: ready[d][0])
            runs.append([])
        i = heapq.heappop(ready[current])
        runs[-1].append(i)
        done += 1
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready[devices[u]], u)
    return runs


def _nbytes(shape: tuple[int, ...] | None, dtype: str) -> int:
    if shape is None:
        return 0
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def partition(graph: Graph) -> PartitionPlan:
    """Place every node, group them into NPU/CPU segments and record the boundary conversions."""
    ctx = GraphContext(graph)
    macs = [node_macs(graph, n) for n in graph.nodes]
    places = [check_node(graph, n, ctx) for n in graph.nodes]
    places = _demote_idle_islands(graph, places, macs)
    devices = [p.device for p in places]
    runs = _schedule(graph, devices)

    seg_of: dict[int, int] = {}
    segments: list[Segment] = []
    for sid, run in enumerate(runs):
        segments.append(Segment(sid, devices[run[0]], run, sum(macs[i] for i in run)))
        for i in run:
            seg_of[i] = sid

    producer_seg = {o: seg_of[i] for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    producer_node = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t and not (graph.tensors.get(t) is not None and graph.tensors[t].is_const):
                consumers.setdefault(t, []).append(i)

    for seg in segments:
        members = set(seg.nodes)
        ins, outs, deps = [], [], set()
        for i in seg.nodes:
            for t in graph.nodes[i].inputs:
                if t in consumers and (t not in producer_node or producer_node[t] not in members):
                    if t not in ins:
                        ins.append(t)
                    if t in producer_seg:
                        deps.add(producer_seg[t])
            for t in graph.nodes[i].outputs:
                if t and (t in graph.outputs or any(seg_of[u] != seg.id for u in consumers.get(t, []))):
                    outs.append(t)
        seg.inputs, seg.outputs, seg.depends_on = ins, outs, sorted(deps)

    conversions = _conversions(graph, ctx.quantized, places, seg_of, segments, producer_node, consumers)
    nodes = [NodePlacement(i, n.name or n.outputs[0], n.op_type, macs[i], places[i]) for i, n in enumerate(graph.nodes)]
    total = sum(macs)
    npu = sum(m for m, d in zip(macs, devices, strict=True) if d == "npu")
    return PartitionPlan(graph.name, ctx.quantized, None if ctx.quantized else "int8", nodes, segments, conversions,
                         total, npu)


def _conversions(graph: Graph, quantized: bool, places: list[Placement], seg_of: dict[int, int],
                 segments: list[Segment], producer_node: dict[str, int],
                 consumers: dict[str, list[int]]) -> list[Conversion]:
    out: list[Conversion] = []
    dev = [p.device for p in places]
    tensors = list(dict.fromkeys(list(graph.inputs) + list(producer_node)))
    for t in tensors:
        rec = graph.tensors.get(t)
        if rec is None or rec.is_const:
            continue
        src_node = producer_node.get(t)
        src_dev = "cpu" if src_node is None else dev[src_node]  # graph inputs live in host memory
        src_seg = None if src_node is None else seg_of[src_node]
        dsts: list[int | None] = sorted({seg_of[u] for u in consumers.get(t, []) if dev[u] != src_dev})
        if t in graph.outputs and src_dev == "npu":
            dsts.append(None)  # back to host memory
        if not dsts:
            continue
        to_npu = src_dev == "cpu"
        # NHWC graph inputs/outputs whose transpose folds into the boundary conversion
        user_boundary = [u for u in consumers.get(t, []) if places[u].unit == "boundary"]
        if to_npu:
            host_layout = "NHWC" if user_boundary else "NCHW"
        else:
            host_layout = "NHWC" if src_node is not None and places[src_node].unit == "boundary" else "NCHW"
        dt = rec.dtype
        if quantized:
            npu_dt, cpu_dt, quant = dt, dt, None
        else:  # float graph: the NPU side is assumed int8, the CPU side runs float kernels
            npu_dt, cpu_dt = "int8", dt
            quant = "quantize" if to_npu else "dequantize"
        shape = rec.shape
        out.append(Conversion(
            t, src_seg, tuple(dsts), "to_npu" if to_npu else "to_cpu",
            host_layout if to_npu else "NC1HWC2", "NC1HWC2" if to_npu else host_layout, quant,
            cpu_dt if to_npu else npu_dt, npu_dt if to_npu else cpu_dt, shape, _nbytes(shape, npu_dt)))
    return out
