"""Lowering of a partitioned quantized graph to RK3588 NPU ops, tasks and a memory plan.

``lower(graph, plan) -> Lowering`` takes a quantized graph (briefs/quant.md) and the partitioner's plan and
decides, node by node, what this slice of the backend really lowers:

* **conv** ops: Conv (dense, depthwise, grouped as block-diagonal dense, dilated as zero-inserted kernels),
  Gemm / MatMul with constant weights and one row as a 1x1 conv over a (K, 1, 1) map (a Flatten of a
  (1, C, H, W) map feeding a Gemm is absorbed: the Gemm becomes an HxW conv over the map), each with its
  fused clamp (ReLU/ReLU6 via the DPU ReLU/ReLUx) and, when an Add consumes its only output, that Add fused
  into the DPU EW stage;
* **LUT activations** (Sigmoid, Tanh, Silu, HardSwish, ...: lut.py): fused into the conv producing their input
  (BN MUL + DPU LUT, executed at the LUT's position), else on an identity 1x1 depthwise conv carrier;
* **Add / Mul** that cannot fuse: an identity 1x1 depthwise conv carrier (EW add or EW MUL of a second map, or
  a constant as bias / depthwise weights, lut.py);
* **alias** ops: Reshape/Flatten/Squeeze/Unsqueeze/Identity/Dropout whose NC1HWC2 bytes do not change (the
  output is a view of the input buffer);
* **concat** ops: a channel-axis Concat lowered to output addressing (no task): the output is one NC1HWC2
  buffer and every leg is a view of it at the leg's first channel group (``Lowering.offsets``); the conv op
  producing a leg writes it in place (DPU destination = buffer base + first group * surface stride, the
  buffer's line/surface strides), and a leg produced on the CPU is written into its slice by its to_npu
  conversion. See ``_decide_concats`` for when a Concat stays on the CPU instead (each with its reason).
* **pool** ops: MaxPool/AveragePool/GlobalAveragePool/GlobalMaxPool/ReduceMean(H, W) on the PPU (pool.py).

Every other node the partitioner put on the NPU is re-placed on the CPU with the reason
``rk3588 lowering of <op> not implemented yet (planned: <unit>)``, and any CompileError raised while
lowering a node (requantization, CBUF tiling) re-places it with that error as the reason: nothing falls back
silently. Segments are then rebuilt (partition's device-affine topological order) and every tensor crossing
devices gets an explicit conversion record: ``to_npu`` (NCHW int8 -> NC1HWC2 at a buffer address, padded
lanes = zero point) or ``to_cpu`` (NC1HWC2 -> NCHW).

Per conv op: requantization (arith.compute_requant_params; CLIP_TRUNCATE from the accumulator bound), the
CBUF tile plan (tiling.plan_conv_tiles: row slices, or column windows of one output row that read at the full
map's line stride), weights packed per
output-channel group (layout.pack_conv_weights after padding input channels to DATAIN_CHANNEL, as
task.ConvTask does), one BS stream for all channels (tasks address their channel range). ``build_tasks``
turns an op into ConvTasks once the memory plan gives addresses.

Feature buffers: NC1HWC2 int8, line stride W*16, surface stride ``W*16*max(H, 4)`` when the map has more than
one channel group (the CNA_DMA_CON2 encoding needs >= 4 lines, task.min_input_surface_stride) and ``H*W*16``
otherwise; a buffer shared by alias views takes the largest stride any view needs. A concat buffer lives from
its first leg's write to its last reader (any leg view or the whole output), so the lifetimes cover every leg.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from opennpu.errors import CompileError, OpenNPUError
from opennpu.ir.graph import Graph, Node
from opennpu.ir.ops.conv import conv_geometry
from opennpu.quant.fixedpoint import activation_range, round_half_away

from . import arith
from . import layout as L
from . import lut as LT
from .memory import Buffer, MemoryPlan, plan_memory
from .partition import PartitionPlan, _schedule
from .pool import POOL_OPS, PoolOp, lower_pool
from .task import ATOM, ConvTask, datain_channels
from .tiling import ConvGeometry as TileGeometry
from .tiling import TilePlan, plan_conv_tiles

ALIAS_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
CONV_OPS = ("Conv", "Gemm", "MatMul")
# what the partitioner's unit for a node means as the planned lowering, for "not implemented yet" reasons
PLANNED = {"PPU": "PPU pooling", "DPU-LUT": "DPU LUT", "DPU-EW": "DPU EW stage on an identity 1x1 conv carrier",
           "DPU-BS": "DPU BS stage", "DPU-OUT_CVT": "output saturation on an identity 1x1 conv carrier",
           "addressing": "output addressing (surface offsets)", "layout": "NC1HWC2 re-layout",
           "boundary": "boundary conversion", "CNA": "CNA padding on an identity conv",
           "CNA+CORE+DPU": "CNA+CORE+DPU"}
BS_RECORD = 8  # per-channel BS stream record [bias i32][ow i16][mul i16] (task.ConvTask.pack_bias)
MACS_PER_CYCLE = 1024  # int8 MAC array of one core (2 TOPS at 1 GHz), for the schedule's cost estimate only


# ---------------------------------------------------------------------------------------------- data types
@dataclass
class NodeDecision:
    index: int
    name: str
    op_type: str
    device: str  # "npu" | "cpu"
    reason: str | None  # why the CPU
    unit: str | None = None
    lowering: str | None = None
    op: str | None = None  # name of the lowered NPU op covering this node
    macs: int = 0


@dataclass
class FeatureBuffer:
    """One NC1HWC2 int8 buffer in NPU memory; alias views share it."""

    name: str
    c: int
    h: int
    w: int
    surf_stride: int
    zero_point: int  # value of the padded lanes written by a to_npu conversion
    producer: str | None = None  # lowered op writing it (None: written by a to_npu conversion)
    first_use: int = 0
    last_use: int = 0
    host: bool = False  # written or read by a boundary conversion

    @property
    def groups(self) -> int:
        return -(-self.c // ATOM)

    @property
    def size(self) -> int:
        return (self.groups - 1) * self.surf_stride + self.h * self.w * ATOM


@dataclass
class ConvOp:
    """One lowered conv-like NPU op (a Conv/Gemm/MatMul node, plus an absorbed Flatten and a fused Add)."""

    name: str
    nodes: list[int]  # graph node indices it covers, the slot (execution position) last
    input: str  # tensor read by the CNA (NCHW view)
    output: str  # tensor written by the DPU
    ew_input: str | None
    geometry: arith.ConvGeometry
    weights: np.ndarray  # (O, I, KH, KW) int8 (dense / dilated already), depthwise (C, 1, KH, KW)
    bias: np.ndarray  # int32 (O,)
    requant: arith.NpuRequant
    plan: TilePlan
    weight_blob: np.ndarray  # int8, groups concatenated
    group_offsets: list[int]
    bs_blob: np.ndarray  # uint8
    macs: int
    segment: int = -1
    step: int = -1
    kind: str = "conv"

    @property
    def bs_record(self) -> int:
        return BS_RECORD if self.requant.per_channel else 4

    @property
    def reads(self) -> tuple[str, ...]:
        """Tensors the op reads from memory: the CNA's feature input and the DPU's element-wise operand."""
        return (self.input,) if self.ew_input is None else (self.input, self.ew_input)


@dataclass
class AliasOp:
    name: str
    nodes: list[int]
    input: str
    output: str
    segment: int = -1
    step: int = -1
    kind: str = "alias"


@dataclass
class ConcatOp:
    """A channel-axis Concat lowered to output addressing: no task, its legs live at their channel groups of the
    output's buffer (written in place by their NPU producers, or by their to_npu conversion when ``copied``)."""

    name: str
    nodes: list[int]
    legs: list[str]
    output: str
    group_offsets: list[int]  # first channel group of each leg in the output buffer
    copied: list[str] = field(default_factory=list)  # legs produced on the CPU: written by their to_npu conversion
    segment: int = -1
    step: int = -1
    kind: str = "concat"

    @property
    def input(self) -> str:  # the first leg (the payload's "input"; all legs are in ``legs``)
        return self.legs[0]


@dataclass
class Conversion:
    tensor: str
    buffer: str
    direction: str  # "to_npu" | "to_cpu"
    shape: tuple[int, ...]  # the NCHW (or (1, C)) tensor shape on the CPU side
    dtype: str
    pad_value: int = 0  # padded channel lanes (to_npu)
    group_offset: int = 0  # first channel group of the tensor in its buffer (a concat leg)


@dataclass
class LoweredSegment:
    id: int
    device: str
    nodes: list[int]  # graph node indices in execution order
    ops: list[str] = field(default_factory=list)  # NPU ops executed here, in order
    inputs: list[str] = field(default_factory=list)  # CPU segments: tensors read from outside
    outputs: list[str] = field(default_factory=list)  # CPU segments: tensors needed later
    to_npu: list[Conversion] = field(default_factory=list)
    to_cpu: list[Conversion] = field(default_factory=list)
    step: int = 0


@dataclass
class Lowering:
    graph: Graph
    decisions: list[NodeDecision]
    ops: dict[str, ConvOp | AliasOp | ConcatOp | PoolOp]  # in execution order
    segments: list[LoweredSegment]
    buffers: dict[str, FeatureBuffer]
    views: dict[str, str]  # NPU tensor name -> buffer name
    total_macs: int
    npu_macs: int
    notes: list[str] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # tensor -> its first channel group in its buffer (legs)

    @property
    def npu_mac_fraction(self) -> float:
        return self.npu_macs / self.total_macs if self.total_macs else 0.0

    def address(self, tensor: str, addr: dict[str, int]) -> int:
        """Address of a tensor's first channel group (``addr``: buffer name -> address)."""
        buf = self.buffers[self.views[tensor]]
        return addr[buf.name] + self.offsets.get(tensor, 0) * buf.surf_stride

    def region(self, tensor: str) -> tuple[str, int, int]:
        """(buffer, first channel group, end channel group) a tensor occupies."""
        c = (_as_map(self.graph.tensor(tensor).shape) or (0, 0, 0))[0]
        g0 = self.offsets.get(tensor, 0)
        return self.views[tensor], g0, g0 + -(-c // ATOM)

    def concat_ops(self) -> list[ConcatOp]:
        return [o for o in self.ops.values() if isinstance(o, ConcatOp)]

    def conv_ops(self) -> list[ConvOp]:
        return [o for o in self.ops.values() if isinstance(o, ConvOp)]

    def cpu_reasons(self) -> list[tuple[str, str, str]]:
        return [(d.name, d.op_type, d.reason or "") for d in self.decisions if d.device == "cpu"]


# Op kinds that may write a concat leg in place: their task builder addresses the DPU destination through
# ``Lowering.address(op.output, ...)`` with the buffer's surface stride (build_tasks for ConvOp,
# pool.build_pool_tasks for PoolOp).
LEG_WRITERS: tuple[type, ...] = (ConvOp, PoolOp)


# ---------------------------------------------------------------------------------------------- helpers
def _as_map(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """(C, H, W) of an NPU-representable tensor: (1, C, H, W) maps and (1, C) vectors."""
    if shape is None:
        return None
    s = tuple(int(d) for d in shape)
    if len(s) == 4 and s[0] == 1 and min(s) >= 1:
        return s[1], s[2], s[3]
    if len(s) == 2 and s[0] == 1 and s[1] >= 1:
        return s[1], 1, 1
    return None


def _surf_stride(c: int, h: int, w: int) -> int:
    line = w * ATOM
    return line * (max(h, 4) if datain_channels(c) > ATOM else h)


def _act_q(graph: Graph, name: str) -> tuple[float, int]:
    return arith.activation_quant(graph.tensor(name))


def clip_range(clip, scale: float, zp: int) -> tuple[int, int]:
    """A fused clamp in real units -> int8 range, as TFLite's CalculateActivationRangeQuantized (and the quant
    executor) computes it."""
    if clip is None:
        return -128, 127
    lo, hi = float(clip[0]), float(clip[1])
    named = {(0.0, float("inf")): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi))
    if named is not None:
        return activation_range(named, scale, zp)

    def q(v: float) -> int:
        return zp + int(round_half_away(np.float32(v) / np.float32(scale)))

    return (max(-128, q(lo)) if np.isfinite(lo) else -128, min(127, q(hi)) if np.isfinite(hi) else 127)


def _not_yet(op: str, unit: str | None) -> str:
    return f"rk3588 lowering of {op} not implemented yet (planned: {PLANNED.get(unit or '', unit or 'NPU')})"


def _int8_act(graph: Graph, name: str, what: str, op: str) -> None:
    t = graph.tensor(name)
    if t.dtype != "int8":
        planned = {"float16": "fp16 CNA precision", "uint8": "uint8 data through the 0x80 offset"}
        raise CompileError(f"rk3588 lowering of {t.dtype} {op} not implemented yet (planned: "
                           f"{planned.get(t.dtype, 'int8 only')}); {what} {name!r} is {t.dtype}")
    if t.quant is None:
        raise CompileError(f"{op} {what} {name!r} has no quantization")


def _weights_q(graph: Graph, name: str, n_out: int, axis: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    t = graph.tensor(name)
    if t.data is None or t.dtype != "int8" or t.quant is None:
        raise CompileError(f"{op} weights {name!r} must be constant quantized int8 (got {t.dtype})")
    q = t.quant
    zp = np.asarray(q.zero_point).reshape(-1)
    if zp.size and np.any(zp != 0):
        raise CompileError(f"{op} weights {name!r} are asymmetric (the DPU weight offset is not lowered)")
    s = np.asarray(q.scale, dtype=np.float32).reshape(-1)
    if s.size == 1:
        s = np.full(n_out, s[0], np.float32)
    elif s.size != n_out or q.axis is None or q.axis % t.data.ndim != axis:
        raise CompileError(f"{op} weights {name!r} are not quantized along the output-channel axis {axis}")
    return t.data, s


def _bias_q(graph: Graph, node: Node, idx: int, n_out: int) -> np.ndarray:
    if len(node.inputs) <= idx or not node.inputs[idx]:
        return np.zeros(n_out, np.int32)
    t = graph.tensor(node.inputs[idx])
    if t.data is None or t.dtype != "int32":
        raise CompileError(f"{node.op_type} {node.name!r} bias must be a constant int32 (got {t.dtype})")
    b = np.asarray(t.data).reshape(-1)
    if b.size != n_out:
        raise CompileError(f"{node.op_type} {node.name!r} bias has {b.size} values for {n_out} outputs")
    return b.astype(np.int32)


@dataclass
class _ConvSpec:
    node: int
    input: str
    output: str
    weights: np.ndarray
    w_scales: np.ndarray
    bias: np.ndarray
    geometry: arith.ConvGeometry
    clip: tuple | None
    absorbed: list[int] = field(default_factory=list)  # Flatten nodes absorbed
    ew_input: str | None = None
    fused_add: int | None = None
    lut: LT.LutFusion | None = None  # LUT activation applied in the DPU (lut.py)
    kind: str = "conv"  # "conv", or a carrier for a non-conv node: "lut" | "add" | "mul"
    ew_op: str = "add"
    channel_mul: np.ndarray | None = None  # carrier BS MUL operands (Mul by a constant)
    ew_per_channel: bool = False  # EW operand of one value per channel (Mul by a (1, C, 1, 1) map)


def _carrier_spec(i: int, node: Node, c: LT.Carrier) -> _ConvSpec:
    return _ConvSpec(i, c.input, node.outputs[0], c.weights, c.w_scales, c.bias, c.geometry, node.attrs.get("clip"),
                     ew_input=c.ew_input, kind=c.kind, ew_op=c.ew_op, channel_mul=c.channel_mul,
                     ew_per_channel=c.ew_per_channel)


def _conv_spec(graph: Graph, i: int, node: Node) -> _ConvSpec:
    x, y = node.inputs[0], node.outputs[0]
    _int8_act(graph, x, "input", "Conv")
    _int8_act(graph, y, "output", "Conv")
    xs, ys = graph.tensor(x).shape, graph.tensor(y).shape
    if xs is None or len(xs) != 4 or xs[0] != 1:
        raise CompileError(f"rk3588 lowering of Conv on input shape {xs} not implemented yet (planned: 1-D as H=1)")
    w = graph.tensor(node.inputs[1]).data
    if w is None or w.ndim != 4:
        raise CompileError("Conv weights are not a constant OIHW array")
    w_q, s_w = _weights_q(graph, node.inputs[1], w.shape[0], 0, "Conv")
    kernel, strides, dil, pads, _ = conv_geometry(tuple(xs), tuple(w.shape), node.attrs)
    group = int(node.attrs.get("group", 1))
    cin, cout = int(xs[1]), int(w.shape[0])
    depthwise = group > 1 and group == cin == cout and w.shape[1] == 1
    w_dense = np.asarray(w_q, np.int8)
    if group > 1 and not depthwise:  # block-diagonal dense weights (exact; the NPU does group x the MACs)
        cg, og = cin // group, cout // group
        d = np.zeros((cout, cin) + w_dense.shape[2:], np.int8)
        for gi in range(group):
            d[gi * og:(gi + 1) * og, gi * cg:(gi + 1) * cg] = w_dense[gi * og:(gi + 1) * og]
        w_dense = d
    if any(int(v) != 1 for v in dil):  # zero-inserted kernel
        kh, kw = (kernel[0] - 1) * dil[0] + 1, (kernel[1] - 1) * dil[1] + 1
        d = np.zeros(w_dense.shape[:2] + (kh, kw), np.int8)
        d[:, :, ::dil[0], ::dil[1]] = w_dense
        w_dense = d
    geo = arith.ConvGeometry(cin, int(xs[2]), int(xs[3]), cout, w_dense.shape[2], w_dense.shape[3],
                             (int(strides[0]), int(strides[1])), (int(pads[0]), int(pads[1]), int(pads[2]),
                                                                   int(pads[3])), depthwise)
    if (1, geo.out_c, geo.out_h, geo.out_w) != tuple(ys):
        raise CompileError(f"Conv output shape {ys} != lowered geometry {geo.out_c}x{geo.out_h}x{geo.out_w}")
    return _ConvSpec(i, x, y, w_dense, s_w, _bias_q(graph, node, 2, cout), geo, node.attrs.get("clip"))


def _gemm_spec(graph: Graph, i: int, node: Node, producers: dict[str, Node], consumers: dict[str, list[Node]],
               index_of: dict[int, int]) -> _ConvSpec:
    op = node.op_type
    a, y = node.inputs[0], node.outputs[0]
    _int8_act(graph, a, "input", op)
    _int8_act(graph, y, "output", op)
    b = graph.tensor(node.inputs[1]).data
    if b is None or b.ndim != 2:
        raise CompileError(f"{op} B must be a constant 2-D weight matrix")
    if op == "Gemm":
        at = node.attrs
        if int(at.get("transA", 0)) or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
            raise CompileError("Gemm with transA/alpha/beta is not lowered")
        trans_b = int(at.get("transB", 0))
        n = b.shape[0] if trans_b else b.shape[1]
        w_q, s_w = _weights_q(graph, node.inputs[1], n, 0 if trans_b else 1, op)
        w2 = np.asarray(w_q if trans_b else w_q.T, np.int8)
        bias = _bias_q(graph, node, 2, n)
    else:
        n = b.shape[1]
        w_q, s_w = _weights_q(graph, node.inputs[1], n, 1, op)
        w2 = np.asarray(w_q.T, np.int8)
        bias = np.zeros(n, np.int32)
    a_shape = graph.tensor(a).shape
    if a_shape is None or int(np.prod(a_shape[:-1])) != 1:
        raise CompileError(f"rk3588 lowering of {op} with {int(np.prod(a_shape[:-1])) if a_shape else '?'} rows not "
                           "implemented yet (planned: 1x1 conv over an M-row map with a transposing boundary)")
    k = w2.shape[1]
    src, absorbed = a, []
    p = producers.get(a)
    if p is not None and p.op_type == "Flatten" and len(consumers.get(a, [])) == 1 and a not in graph.outputs:
        xs = graph.tensor(p.inputs[0]).shape
        if xs is not None and len(xs) == 4 and xs[0] == 1 and int(np.prod(xs[1:])) == k and xs[2] * xs[3] > 1:
            src, absorbed = p.inputs[0], [index_of[id(p)]]
    if absorbed:
        c, h, w = (int(v) for v in graph.tensor(src).shape[1:])
        wt = w2.reshape(n, c, h, w)  # Flatten is row-major over (C, H, W)
        geo = arith.ConvGeometry(c, h, w, n, h, w)
    else:
        if _as_map(graph.tensor(a).shape) is None:
            raise CompileError(f"rk3588 lowering of {op} on a rank-{len(a_shape)} input not implemented yet "
                               "(planned: NC1HWC2 re-layout)")
        wt = w2.reshape(n, k, 1, 1)
        geo = arith.ConvGeometry(k, 1, 1, n)
    return _ConvSpec(i, src, y, wt, s_w, bias, geo, node.attrs.get("clip"), absorbed)


def _acc_bound(w: np.ndarray) -> int:
    return int(np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1).max()) * 128


def _pack_group(w: np.ndarray, depthwise: bool) -> np.ndarray:
    """Weights of one output-channel group in the packed layout, input channels (depthwise: channels) padded to
    DATAIN_CHANNEL as task.ConvTask.pack_weights does; padded to 64 bytes."""
    axis = 0 if depthwise else 1
    ca = datain_channels(w.shape[axis])
    pad = [(0, 0)] * 4
    pad[axis] = (0, ca - w.shape[axis])
    packed = L.pack_conv_weights(np.pad(w, pad), pad_value=0, depthwise=depthwise)
    return np.pad(packed, (0, (-packed.size) % 64))


def _bs_stream(w: np.ndarray, bias: np.ndarray, requant: arith.NpuRequant, depthwise: bool) -> np.ndarray:
    b = arith.hw_bias(bias, w, requant, depthwise)
    if not requant.per_channel:
        return np.frombuffer(b.astype("<i4").tobytes(), np.uint8).copy()
    rec = np.zeros(b.size, dtype=[("bias", "<i4"), ("ow", "<i2"), ("mul", "<i2")])
    rec["bias"] = b
    rec["mul"] = np.asarray(requant.channel_mul, dtype=np.int64)
    return np.frombuffer(rec.tobytes(), np.uint8).copy()


def _finish_conv(graph: Graph, spec: _ConvSpec, name: str, macs: int) -> ConvOp:
    """Requantization, tiling and packing of one conv spec (CompileError when the slice cannot)."""
    s_in, zp_in = _act_q(graph, spec.input)
    s_out, zp_out = _act_q(graph, spec.lut.input if spec.lut is not None else spec.output)
    lo, hi = clip_range(spec.clip, s_out, zp_out)
    ew_scale = ew_zp = None
    if spec.ew_input is not None:
        ew_scale, ew_zp = _act_q(graph, spec.ew_input)
    g = spec.geometry
    t = arith.truncate_bits_for(_acc_bound(spec.weights))
    requant = arith.compute_requant_params(s_in, spec.w_scales, s_out, input_zp=zp_in, output_zp=zp_out,
                                           clip=(-128, 127) if spec.lut is not None else (lo, hi), truncate_bits=t,
                                           ew_scale=ew_scale if spec.ew_op == "add" else None,
                                           ew_zp=ew_zp if ew_zp is not None and spec.ew_op == "add" else 0)
    if spec.ew_op == "mul" and spec.ew_input is not None:
        requant = LT.mul_ew(requant, ew_zp or 0, spec.ew_per_channel)
    if spec.channel_mul is not None:
        requant = LT.mul_const(requant, spec.channel_mul)
    if spec.lut is not None:  # the producer's clamp folds into the table
        requant = LT.with_lut(requant, spec.lut.table, (lo, hi))
    tg = TileGeometry(g.in_c, g.in_h, g.in_w, g.out_c, (g.kh, g.kw), g.stride, g.pads, (1, 1), g.depthwise)
    plan = plan_conv_tiles(tg)
    parts, offsets, off = [], [], 0
    for a, b in plan.groups:
        blob = _pack_group(spec.weights[a:b], g.depthwise)
        parts.append(blob)
        offsets.append(off)
        off += blob.size
    nodes = sorted({*spec.absorbed, spec.node, *([spec.fused_add] if spec.fused_add is not None else []),
                    *([spec.lut.node] if spec.lut is not None else [])})
    return ConvOp(name, nodes, spec.input, spec.output, spec.ew_input, g, spec.weights, spec.bias, requant, plan,
                  np.concatenate(parts).astype(np.int8), offsets,
                  _bs_stream(spec.weights, spec.bias, requant, g.depthwise), macs, kind=spec.kind)


def _concat_plan(graph: Graph, i: int, node: Node, writer: dict[str, str], npu_made: dict[str, str],
                 claimed: dict[str, str], npu_users: bool) -> ConcatOp:
    """The addressing of one Concat the partitioner put on the NPU, or CompileError with the reason it stays on
    the CPU. ``writer``: tensor -> conv op writing it (its DPU output); ``npu_made``: tensors produced by NPU
    nodes (-> "<op type> '<node>'"); ``claimed``: legs already placed in another concat's buffer;
    ``npu_users``: whether any consumer of the output is (still) on the NPU.

    Rules (docs/rk3588-capabilities.md "Concat by output addressing"):
    * channel axis of a (1, C, H, W) / (1, C) map, int8, every leg but the last a multiple of the 16-channel atom
      (each leg must start on a channel group; a short last leg's padded lanes are the output's padded lanes);
    * every leg quantized exactly like the output: the bytes are not touched, so the scale/zero point must be one.
      (A producer's OUT_CVT could requantize straight into the output's scale, but that rounds once where the
      integer semantics -- TFLite CONCATENATION after the producer -- round twice, so the result would differ
      from the reference; the quantizer already shares one set of parameters between a Concat's legs and output,
      so this only rejects hand-made graphs);
    * no fused clamp narrower than int8 (nothing would apply it);
    * a leg produced on the NPU must be the output of a conv op (the only op whose DPU destination is addressed
      at an offset so far); views and other concats are not nested;
    * a tensor has one address: a leg listed twice, or already a leg of another concat, keeps this one on the CPU;
    * legs produced on the CPU (or graph inputs) are copied into their slice by their to_npu conversion -- only
      when at least one leg is written in place and the output has an NPU consumer; otherwise the CPU
      concatenates with fewer boundary conversions.
    """
    y = node.outputs[0]
    ymap = _as_map(graph.tensor(y).shape)
    rank = len(graph.tensor(y).shape or ())
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    if ymap is None or axis != 1:
        raise CompileError(f"Concat on axis {axis} of {graph.tensor(y).shape} is not a channel concat of a map")
    _int8_act(graph, y, "output", "Concat")
    s_out, z_out = _act_q(graph, y)
    if clip_range(node.attrs.get("clip"), s_out, z_out) != (-128, 127):
        raise CompileError("Concat with a fused clamp is not pure addressing (nothing would apply the clamp)")
    legs = [t for t in node.inputs if t]
    offsets, copied, start, in_place = [], [], 0, 0
    for k, leg in enumerate(legs):
        m = _as_map(graph.tensor(leg).shape)
        if m is None or m[1:] != ymap[1:]:
            raise CompileError(f"Concat leg {k} {leg!r} of shape {graph.tensor(leg).shape} is not a "
                               f"{ymap[1]}x{ymap[2]} map")
        if start % ATOM:
            raise CompileError(f"Concat leg {k} {leg!r} starts at channel {start}, not a multiple of {ATOM} (each "
                               "leg must start on an NC1HWC2 channel group)")
        _int8_act(graph, leg, "input", "Concat")
        s, z = _act_q(graph, leg)
        if (s, z) != (s_out, z_out):
            raise CompileError(f"Concat leg {k} {leg!r} is quantized (scale {s:.6g}, zero point {z}), the output "
                               f"(scale {s_out:.6g}, zero point {z_out}): addressing needs one quantization "
                               "(requantizing in the producer's OUT_CVT would round once where the integer "
                               "semantics round twice)")
        if legs.index(leg) != k:
            raise CompileError(f"Concat leg {leg!r} is listed twice (a tensor has one address)")
        if leg in claimed:
            raise CompileError(f"Concat leg {k} {leg!r} already lives in the buffer of concat {claimed[leg]!r} "
                               "(a tensor has one address; a copy is not lowered yet)")
        if leg in writer:
            in_place += 1
        elif leg in npu_made:
            raise CompileError(f"Concat leg {k} {leg!r} is produced on the NPU by {npu_made[leg]}, which is not a "
                               "conv op writing its own DPU output (only conv ops are addressed at a channel-group "
                               "offset so far; views and nested concats are not)")
        else:
            copied.append(leg)
        offsets.append(start // ATOM)
        start += m[0]
    if copied and (not in_place or not npu_users):
        why = "no leg is written by an NPU op" if not in_place else "every consumer of the output is on the CPU"
        raise CompileError(f"Concat legs {copied} come from the CPU and {why}: concatenating on the CPU "
                           "needs fewer boundary conversions")
    return ConcatOp(node.name or y, [i], legs, y, offsets, copied)


def _decide_concats(graph: Graph, dec: list[NodeDecision], ops_by_slot: dict[int, ConvOp | AliasOp | ConcatOp],
                    consumers: dict[str, list[Node]], index_of: dict[int, int],
                    to_cpu) -> None:
    """Lower every Concat still on the NPU to output addressing (``_concat_plan``), or re-place it with the
    reason. Decided after the conv ops (a leg's writer must be known), in node order."""
    writer = {op.output: op.name for op in ops_by_slot.values() if isinstance(op, LEG_WRITERS)}
    claimed: dict[str, str] = {}
    for i, n in enumerate(graph.nodes):
        if n.op_type != "Concat" or dec[i].device != "npu":
            continue
        npu_made = {o: f"{m.op_type} {dec[j].name!r}" for j, m in enumerate(graph.nodes) if dec[j].device == "npu"
                    for o in m.outputs if o}
        npu_users = any(dec[index_of[id(u)]].device == "npu" for u in consumers.get(n.outputs[0], []))
        try:
            op = _concat_plan(graph, i, n, writer, npu_made, claimed, npu_users)
        except OpenNPUError as e:
            to_cpu(i, str(e))
            continue
        for leg in op.legs:
            claimed[leg] = op.name
        dec[i].op = op.name
        where = ", ".join(f"{leg!r} at group {g}" for leg, g in zip(op.legs, op.group_offsets, strict=True))
        dec[i].lowering = ("output addressing, no task: legs written in place in one NC1HWC2 buffer (" + where + ")"
                           + (f"; {op.copied} written into their slices by their to_npu conversion"
                              if op.copied else ""))
        ops_by_slot[i] = op


def segment_io(graph: Graph, members_list: list[int], consumers: dict[str, list[Node]] | None = None,
               index_of: dict[int, int] | None = None) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a run of nodes: activations read from outside; tensors it produces that nodes
    outside it (or the graph outputs) read."""
    consumers = consumers if consumers is not None else graph.consumers()
    index_of = index_of if index_of is not None else {id(n): i for i, n in enumerate(graph.nodes)}
    members = set(members_list)
    made: list[str] = [o for i in members_list for o in graph.nodes[i].outputs if o]
    made_set = set(made)
    ins: list[str] = []
    for i in members_list:
        for t in graph.nodes[i].inputs:
            if t and not graph.tensor(t).is_const and t not in made_set and t not in ins:
                ins.append(t)
    outs = [t for t in made if t in graph.outputs
            or any(index_of[id(u)] not in members for u in consumers.get(t, []))]
    return ins, outs


def subgraph(graph: Graph, members: list[int], inputs: list[str], outputs: list[str], name: str) -> Graph:
    """The nodes ``members`` (in that order) as a standalone graph over copies of the tensors they use."""
    g = Graph(name)
    for i in members:
        n = graph.nodes[i]
        g.nodes.append(Node(n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs), n.name))
        for t in [*n.inputs, *n.outputs]:
            if t and t not in g.tensors:
                src = graph.tensor(t)
                g.tensors[t] = replace(src)
    g.inputs, g.outputs = list(inputs), list(outputs)
    return g


# ---------------------------------------------------------------------------------------------- lowering
def lower(graph: Graph, plan: PartitionPlan) -> Lowering:
    """Decide what the slice lowers, rebuild segments, record conversions and lifetimes (see module doc)."""
    nodes = graph.nodes
    producers, consumers = graph.producers(), graph.consumers()
    index_of = {id(n): i for i, n in enumerate(nodes)}
    dec = [NodeDecision(i, n.name or n.outputs[0], n.op_type, p.device, p.placement.reason, p.placement.unit,
                        p.placement.lowering, macs=p.macs)
           for i, (n, p) in enumerate(zip(nodes, plan.nodes, strict=True))]

    def to_cpu(i: int, reason: str) -> None:
        dec[i].device, dec[i].reason, dec[i].op = "cpu", reason, None

    # 1. classify NPU nodes
    specs: dict[int, _ConvSpec] = {}
    aliases: set[int] = set()
    pools: dict[int, PoolOp] = {}
    for i, n in enumerate(nodes):
        if dec[i].device != "npu":
            continue
        try:
            if n.op_type == "Conv":
                specs[i] = _conv_spec(graph, i, n)
            elif n.op_type in ("Gemm", "MatMul"):
                specs[i] = _gemm_spec(graph, i, n, producers, consumers, index_of)
            elif n.op_type in ALIAS_OPS:
                xi, yo = _as_map(graph.tensor(n.inputs[0]).shape), _as_map(graph.tensor(n.outputs[0]).shape)
                if xi is None or yo is None or xi[0] != yo[0] or xi[1] * xi[2] != yo[1] * yo[2]:
                    raise CompileError(_not_yet(f"{n.op_type} {graph.tensor(n.inputs[0]).shape} -> "
                                                f"{graph.tensor(n.outputs[0]).shape}", "layout"))
                aliases.add(i)
            elif n.op_type in POOL_OPS:
                pools[i] = lower_pool(graph, i, n, n.name or n.outputs[0])
            elif n.op_type in ("Add", "Mul", "Concat") or (dec[i].unit == "DPU-LUT" and LT.is_lut_op(n.op_type)):
                pass  # decided in steps 2 / 2b (Add, Mul, LUT activations) and 3b (Concat)
            else:
                raise CompileError(_not_yet(n.op_type, dec[i].unit))
        except OpenNPUError as e:
            to_cpu(i, str(e))
    # absorbed Flattens belong to their Gemm
    for s in specs.values():
        for j in s.absorbed:
            aliases.discard(j)
            dec[j].device, dec[j].reason = "npu", None

    # 2. fuse Adds into the conv producing one operand (executed at the Add's position); other Adds and Muls on
    # an identity 1x1 depthwise carrier (lut.py)
    for i, n in enumerate(nodes):
        if dec[i].device != "npu" or n.op_type not in ("Add", "Mul"):
            continue
        if n.op_type == "Mul":
            try:
                specs[i] = _carrier_spec(i, n, LT.eltwise_carrier(graph, n))
            except OpenNPUError as e:
                to_cpu(i, f"Mul on an identity 1x1 conv carrier: {e}")
            continue
        reason = "no conv to fuse into"
        shapes = [graph.tensor(t).shape for t in n.inputs[:2]]
        ok = len(n.inputs) == 2 and all(not graph.tensor(t).is_const for t in n.inputs) and \
            shapes[0] == shapes[1] == graph.tensor(n.outputs[0]).shape and _as_map(shapes[0]) is not None and \
            all(graph.tensor(t).dtype == "int8" for t in [*n.inputs, n.outputs[0]])
        if ok:
            for k in (0, 1):
                t, other = n.inputs[k], n.inputs[1 - k]
                p = producers.get(t)
                pi = index_of[id(p)] if p is not None else None
                if pi is None or pi not in specs or specs[pi].fused_add is not None or t in graph.outputs \
                        or len(consumers.get(t, [])) != 1 or specs[pi].clip is not None or other == t \
                        or specs[pi].kind != "conv" or specs[pi].lut is not None:
                    continue
                s = specs[pi]
                s.ew_input, s.fused_add, s.output, s.clip = other, i, n.outputs[0], n.attrs.get("clip")
                reason = None
                break
        if reason is not None:
            try:
                specs[i] = _carrier_spec(i, n, LT.eltwise_carrier(graph, n))
            except OpenNPUError as e:
                to_cpu(i, f"Add on an identity 1x1 conv carrier ({reason}): {e}")

    # 2b. LUT activations: fused into the conv (or constant Add/Mul carrier) producing their input, executed at the
    # LUT's position; else on a carrier of their own
    for i, n in enumerate(nodes):
        if dec[i].device != "npu" or dec[i].unit != "DPU-LUT" or not LT.is_lut_op(n.op_type):
            continue
        try:
            x = n.inputs[0]
            table = LT.activation_table(graph, n)
            p = producers.get(x)
            pi = index_of[id(p)] if p is not None else None
            s = specs.get(pi) if pi is not None else None
            # a conv, or a carrier whose EW stage is free (constant Add / Mul): BS -> BN MUL -> LUT
            bs_only = s is not None and (s.kind == "conv" or s.kind in ("add", "mul") and s.ew_input is None)
            if bs_only and s.lut is None and s.fused_add is None and s.output == x \
                    and x not in graph.outputs and len(consumers.get(x, [])) == 1:
                s.lut, s.output = LT.LutFusion(i, table, x), n.outputs[0]
            else:
                s = _carrier_spec(i, n, LT.lut_carrier(graph, n))
                s.lut = LT.LutFusion(i, table, x)
                specs[i] = s
        except OpenNPUError as e:
            to_cpu(i, f"{n.op_type} through the DPU LUT: {e}")

    # 3. requantize, tile and pack every conv op; failures go to the CPU with the error as the reason
    ops_by_slot: dict[int, ConvOp | AliasOp | ConcatOp | PoolOp] = {}
    for i, pop in pools.items():
        dec[i].op, dec[i].lowering, dec[i].unit = pop.name, pop.describe(), "PPU"  # also where a depthwise
        # carrier was planned for an average beyond one PPU window: PPU stages are what is lowered
        ops_by_slot[i] = pop
    for i, s in list(specs.items()):
        name = nodes[i].name or nodes[i].outputs[0]
        macs = sum(dec[j].macs for j in [i, *s.absorbed])
        try:
            op = _finish_conv(graph, s, name, macs)
        except OpenNPUError as e:
            if s.fused_add is None and (s.lut is None or s.lut.node == i):
                to_cpu(i, str(e))
                for j in s.absorbed:
                    to_cpu(j, f"absorbed by {name!r}, which runs on the CPU")
                continue
            if s.lut is not None:  # retry without the fused LUT
                to_cpu(s.lut.node, f"{nodes[s.lut.node].op_type} could not be fused into {name!r}: {e}")
                s.lut = None
            else:  # retry without the fused Add
                to_cpu(s.fused_add, f"Add could not be fused into {name!r}: {e}")
            s.ew_input, s.fused_add, s.output, s.clip = None, None, nodes[i].outputs[0], nodes[i].attrs.get("clip")
            try:
                op = _finish_conv(graph, s, name, macs)
            except OpenNPUError as e2:
                to_cpu(i, str(e2))
                continue
        for j in op.nodes:
            dec[j].op = name
            if s.kind != "conv" and j == i:
                what = {"lut": "LUT", "add": "EW add" if s.ew_input else "BS bias add",
                        "mul": ("EW MUL by a per-channel operand" if s.ew_per_channel else "EW MUL") if s.ew_input
                        else "BS per-channel MUL"}[s.kind]
                dec[j].lowering = f"{what} on an identity 1x1 depthwise conv carrier"
                if s.lut is not None and s.lut.node == i:
                    dec[j].lowering = f"{nodes[j].op_type} as a 256-entry DPU LUT (LO table) on an identity 1x1 " \
                                      "depthwise conv carrier"
            elif s.lut is not None and j == s.lut.node:
                dec[j].lowering = f"{nodes[j].op_type} as a 256-entry DPU LUT (LO table) after {name!r}"
            elif j == s.fused_add:
                dec[j].lowering = f"fused into the DPU EW stage of {name!r}"
            elif j in s.absorbed:
                dec[j].lowering = f"absorbed by {name!r} (a {op.geometry.kh}x{op.geometry.kw} conv over the map)"
        ops_by_slot[op.nodes[-1]] = op

    # 3b. concats: output addressing once the conv ops (the legs' writers) are known
    _decide_concats(graph, dec, ops_by_slot, consumers, index_of, to_cpu)

    # 4. aliases: no MACs, so they follow their input (a CPU-produced input keeps the view on the CPU)
    changed = True
    while changed:
        changed = False
        for i in sorted(aliases):
            if dec[i].device != "npu":
                continue
            src = nodes[i].inputs[0]
            p = producers.get(src)
            if p is None or dec[index_of[id(p)]].device != "npu":
                to_cpu(i, f"{nodes[i].op_type} needs no NPU work (same NC1HWC2 bytes) and its input is on the "
                          "CPU: kept there to avoid a boundary conversion")
                changed = True
    for i in sorted(aliases):
        if dec[i].device == "npu":
            name = nodes[i].name or nodes[i].outputs[0]
            dec[i].op, dec[i].lowering = name, "view of its input's NC1HWC2 buffer (no data movement)"
            ops_by_slot[i] = AliasOp(name, [i], nodes[i].inputs[0], nodes[i].outputs[0])
    for i, d in enumerate(dec):  # every NPU node must be covered by an op now
        if d.device == "npu" and d.op is None:
            to_cpu(i, _not_yet(d.op_type, d.unit))

    # 5. segments (device-affine topological order), slots, steps, conversions
    runs = _schedule(graph, [d.device for d in dec])
    segments: list[LoweredSegment] = []
    seg_of: dict[int, int] = {}
    for run in runs:
        sid = len(segments)
        segments.append(LoweredSegment(sid, dec[run[0]].device, list(run)))
        for i in run:
            seg_of[i] = sid
    ops: dict[str, ConvOp | AliasOp | ConcatOp | PoolOp] = {}
    for seg in segments:
        if seg.device == "npu":
            for i in seg.nodes:
                if i in ops_by_slot:
                    op = ops_by_slot[i]
                    op.segment = seg.id
                    seg.ops.append(op.name)
                    ops[op.name] = op

    # buffers and views
    views: dict[str, str] = {}
    offsets: dict[str, int] = {}
    buffers: dict[str, FeatureBuffer] = {}
    touched: set[str] = set()  # buffers written so far (their lifetime has started)
    leg_of = {leg: (op.output, g) for op in ops.values() if isinstance(op, ConcatOp)
              for leg, g in zip(op.legs, op.group_offsets, strict=True)}

    def new_buffer(tensor: str) -> FeatureBuffer:
        c, h, w = _as_map(graph.tensor(tensor).shape) or (0, 0, 0)
        if not c:
            raise CompileError(f"tensor {tensor!r} of shape {graph.tensor(tensor).shape} cannot live in NPU memory")
        zp = _act_q(graph, tensor)[1] if graph.tensor(tensor).quant is not None else 0
        buf = FeatureBuffer(tensor, c, h, w, _surf_stride(c, h, w), zp)
        buffers[tensor] = buf
        return buf

    def buffer_for(tensor: str) -> FeatureBuffer:
        if tensor in views:
            return buffers[views[tensor]]
        if tensor in leg_of:  # a concat leg: a view of the concat's buffer at its channel group
            root, g = leg_of[tensor]
            buf = buffers.get(root) or new_buffer(root)
            views[tensor], offsets[tensor] = root, g
            return buf
        buf = buffers.get(tensor) or new_buffer(tensor)
        views[tensor] = tensor
        return buf

    def touch(buf: FeatureBuffer, at: int) -> None:
        if buf.name not in touched:
            touched.add(buf.name)
            buf.first_use = buf.last_use = at
        buf.first_use, buf.last_use = min(buf.first_use, at), max(buf.last_use, at)

    step = 0
    for seg in segments:
        seg.step = step
        seg.inputs, seg.outputs = segment_io(graph, seg.nodes, consumers, index_of)
        if seg.device == "cpu":
            step += 1
            continue
        step += 1  # to_npu conversions happen at seg.step
        for name in seg.ops:
            op = ops[name]
            op.step = step
            if isinstance(op, ConcatOp):
                reads = list(op.legs)
            else:
                reads = [op.input] + ([op.ew_input] if isinstance(op, ConvOp) and op.ew_input else [])
            for t in reads:
                if t not in views:  # produced on the CPU (or a graph input): convert at the segment start
                    buf = buffer_for(t)
                    touch(buf, seg.step)
                    buf.host = True
                    seg.to_npu.append(Conversion(t, buf.name, "to_npu", tuple(graph.tensor(t).shape),
                                                 graph.tensor(t).dtype, buf.zero_point, offsets.get(t, 0)))
                touch(buffers[views[t]], step)
            if isinstance(op, AliasOp):
                src = buffers[views[op.input]]
                c, h, w = _as_map(graph.tensor(op.output).shape)
                src.surf_stride = max(src.surf_stride, _surf_stride(c, h, w))
                views[op.output] = src.name
                if op.input in offsets:
                    offsets[op.output] = offsets[op.input]
            else:
                buf = buffer_for(op.output)
                if buf.producer is None and isinstance(op, LEG_WRITERS):
                    buf.producer = name
                touch(buf, step)
                if isinstance(op, PoolOp):  # intermediate maps of a multi-stage pool live only in this step
                    for sname, (c, h, w) in op.scratch():
                        buffers[sname] = FeatureBuffer(sname, c, h, w, _surf_stride(c, h, w), buf.zero_point, name,
                                                       step, step)
            step += 1
        # NPU tensors (or views) read by later CPU nodes or graph outputs: convert back at the segment end
        for name in seg.ops:
            t = ops[name].output
            users = [index_of[id(u)] for u in consumers.get(t, [])]
            if t in graph.outputs or any(dec[u].device == "cpu" for u in users):
                buf = buffers[views[t]]
                touch(buf, step)
                buf.host = True
                seg.to_cpu.append(Conversion(t, buf.name, "to_cpu", tuple(graph.tensor(t).shape),
                                             graph.tensor(t).dtype, buf.zero_point, offsets.get(t, 0)))
        step += 1
    # a buffer aliased by views keeps its producer's lifetime start; views extend its end (done above)
    total = sum(d.macs for d in dec)
    npu = sum(d.macs for d in dec if d.device == "npu")
    return Lowering(graph, dec, ops, segments, buffers, views, total, npu, offsets=offsets)


# ---------------------------------------------------------------------------------------------- tasks
@dataclass
class OpAddresses:
    weights: int
    bs: int


def build_tasks(op: ConvOp, low: Lowering, addr: dict[str, int], wb: OpAddresses) -> list[ConvTask]:
    """The ConvTasks of one op, with addresses from the memory plan (``addr``: buffer name -> address)."""
    g = op.geometry
    bin_, bout = low.buffers[low.views[op.input]], low.buffers[low.views[op.output]]
    bew = low.buffers[low.views[op.ew_input]] if op.ew_input else None
    out_line = g.out_w * ATOM
    in_line = g.in_w * ATOM
    plan_columns = op.plan.column_split
    tasks = []
    for t in op.plan.tasks:
        ic0, ic1 = t.ic_range
        oc0, oc1 = t.oc_range
        geo = arith.ConvGeometry(ic1 - ic0, t.n_in_rows, t.n_in_cols, oc1 - oc0, g.kh, g.kw, g.stride, t.pads,
                                 g.depthwise)
        if (geo.out_h, geo.out_w) != (t.n_out_rows, t.n_out_cols):
            raise CompileError(f"{op.name}: task {t.index} geometry gives {geo.out_h}x{geo.out_w} outputs, the plan "
                               f"{t.n_out_rows}x{t.n_out_cols}")
        if t.n_out_rows > 1 and (t.out_cols[1] - t.out_cols[0]) != g.out_w:
            # the DPU writes output lines back to back (no DST line stride register): a narrower window than
            # the map must be one output row
            raise CompileError(f"{op.name}: task {t.index} is a {t.n_out_rows}-row column window; the DPU has no "
                               "output line stride")
        out_at = t.out_rows[0] * out_line + t.out_cols[0] * ATOM
        r = op.requant
        if r.per_channel:
            r = replace(r, channel_mul=r.channel_mul[oc0:oc1])
        ew_addr = None
        if bew is not None:
            ew_addr = low.address(op.ew_input, addr) + (oc0 // ATOM) * bew.surf_stride
            if not (op.requant.ew is not None and op.requant.ew.per_channel):  # a per-channel operand has no rows
                ew_addr += out_at
        tasks.append(ConvTask(
            geometry=geo, requant=r,
            input_addr=low.address(op.input, addr) + (ic0 // ATOM) * bin_.surf_stride + t.in_rows[0] * in_line
            + t.in_cols[0] * ATOM,
            weight_addr=wb.weights + op.group_offsets[t.group], bias_addr=wb.bs + oc0 * op.bs_record,
            output_addr=low.address(op.output, addr) + (oc0 // ATOM) * bout.surf_stride + out_at,
            input_surf_stride=bin_.surf_stride, output_surf_stride=bout.surf_stride,
            data_banks=t.data_banks, weight_banks=t.weight_banks, data_entries=t.data_entries,
            ew_addr=ew_addr, ew_surf_stride=bew.surf_stride if bew is not None else 0,
            weight_reuse=t.weight_reuse, name=f"{op.name}#{t.index}",
            in_line_stride=in_line if plan_columns else 0))
    return tasks


def task_cycles(op: ConvOp) -> list[int]:
    """Rough per-task cost for the core schedule: MACs / 1024 per cycle."""
    g = op.geometry
    per_out = g.kh * g.kw * (1 if g.depthwise else g.in_c)
    return [max(1, (t.oc_range[1] - t.oc_range[0]) * t.n_out_rows * t.n_out_cols * per_out // MACS_PER_CYCLE)
            for t in op.plan.tasks]


def memory_buffers(low: Lowering, regcmd_sizes: dict[str, int]) -> list[Buffer]:
    """Buffers for plan_memory: regcmd per job, weights + BS per op, boundary (io) and activation buffers."""
    bufs = [Buffer(name, size, 64, "regcmd", 0, 0) for name, size in regcmd_sizes.items()]
    for op in low.conv_ops():
        bufs.append(Buffer(f"w/{op.name}", int(op.weight_blob.size), 64, "weights"))
        bufs.append(Buffer(f"bs/{op.name}", int(op.bs_blob.size), 64, "weights"))
    for b in low.buffers.values():
        bufs.append(Buffer(f"act/{b.name}", b.size, 64, "io" if b.host else "activation", b.first_use,
                           max(b.first_use, b.last_use)))
    return bufs


def plan(low: Lowering, regcmd_sizes: dict[str, int]) -> MemoryPlan:
    return plan_memory(memory_buffers(low, regcmd_sizes))


__all__ = ["AliasOp", "ConcatOp", "Conversion", "ConvOp", "FeatureBuffer", "Lowering", "LoweredSegment", "NodeDecision",
           "OpAddresses", "build_tasks", "clip_range", "lower", "memory_buffers", "plan", "segment_io", "subgraph",
           "task_cycles"]
