"""What the RK3588 NPU runs, and under which limits: a declarative table with a source for every entry.

The table (``LIMITS``, ``CAPABILITIES``, ``CPU_ONLY``, ``DTYPES``) is data; ``check_node`` reads it to place
one IR node on the NPU or the CPU. Every CPU placement carries a one-line human reason that names the op
type, the limit and the offending value, e.g. ``Conv stride 8 > 7 (CNA_CONV_CON3.CONV_X_STRIDE is 3 bits)``.

Sources are cited as ``ref`` strings; ``tag`` grades them like shared/reference/rk3588-npu.md does:
"R" read in a primary source (Mesa rocket ``registers.xml`` / ``rkt_*.c``, rknpu2 docs), "3P" a third-party
reverse-engineering claim (iav/rk3568-npu, widgetii/orangepi5plus-npu, allbilly, jas-hacks), "I" our own
inference from those. Register field widths are from Mesa ``src/gallium/drivers/rocket/registers.xml``
(bminor/mesa-mesa @5b829658) with the raw/count-1 encodings from widgetii ``qemu/SPEC.md``.

Float graphs (before quantization) are checked as if every float activation were int8; the placement then
says ``assumed_dtype="int8"`` so the table is useful before calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.graph import Graph, Node

# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------

MESA = "mesa src/gallium/drivers/rocket"
REGS = f"{MESA}/registers.xml"
IAV = "iav/rk3568-npu README.md @13c943f6"
WIDGETII = "widgetii/orangepi5plus-npu"
REFDOC = "shared/reference/rk3588-npu.md"


@dataclass(frozen=True)
class FieldLimit:
    """One hardware limit: the largest value a register field (or a verified lowering) accepts."""

    name: str
    what: str  # the quantity, as it appears in reasons ("stride", "kernel", "input width")
    register: str  # the field(s) that bound it
    bits: int | None  # field width; None when the bound is not a field width (verified range, CBUF size)
    max_value: int
    on_exceed: str  # "cpu": the node falls back; "split": lowered as several tasks; "pad": padded
    ref: str
    tag: str
    note: str = ""

    def describe(self) -> str:
        if self.bits is not None:
            return f"{self.register} is {self.bits} bits"
        return self.note or self.register


def _fl(*args: Any, **kw: Any) -> tuple[str, FieldLimit]:
    lim = FieldLimit(*args, **kw)
    return lim.name, lim


LIMITS: dict[str, FieldLimit] = dict([
    _fl("conv.kernel", "kernel", "CNA_WEIGHT_SIZE2.WEIGHT_WIDTH/HEIGHT", 5, 31, "cpu",
        f"{REGS}; {WIDGETII} qemu/SPEC.md; {REFDOC} §3, §7A.5", "R",
        "dilated kernels are lowered with zeros inserted, so the bound applies to (k-1)*d+1"),
    _fl("conv.stride", "stride", "CNA_CONV_CON3.CONV_X_STRIDE", 3, 7, "cpu",
        f"{REGS}; {REFDOC} §3", "R"),
    _fl("conv.pad", "pad", "CNA_PAD_CON0.PAD_TOP/PAD_LEFT", 4, 15, "cpu",
        f"{REGS}; {REFDOC} §3", "R",
        "bottom/right pads are implied by the output size; the same bound is applied to them [I]"),
    _fl("conv.dilation", "dilation", "CNA_CONV_CON3.ATROUS_X/Y_DILATION", 5, 31, "cpu",
        f"{REGS}", "R",
        "Mesa refuses dilation != 1; we lower it as a zero-inserted kernel, so conv.kernel binds first"),
    _fl("spatial", "spatial size", "CNA_DATA_SIZE0.DATAIN_WIDTH/HEIGHT, CNA_DATA_SIZE2.DATAOUT_WIDTH", 11, 2047,
        "cpu", f"{REGS}; {IAV} ('maps wider or taller than 2047 stay on the CPU')", "R"),
    _fl("conv.in_channels", "input channels", "CNA_DATA_SIZE1.DATAIN_CHANNEL_REAL", 14, 16384, "cpu",
        f"{REGS}; {WIDGETII} qemu/SPEC.md (count-1 encoding)", "R"),
    _fl("conv.out_channels", "output channels per task", "CORE_DATAOUT_SIZE_1 / DPU_DATA_CUBE_CHANNEL", 13, 8192,
        "split", f"{REGS}; {WIDGETII} qemu/SPEC.md (CHANNEL[12:0]+1)", "R",
        "wider layers are split into output-channel tasks (each writes its own NC1HWC2 surfaces)"),
    _fl("conv.weight_bytes_per_kernel", "weight bytes per kernel", "CNA_WEIGHT_SIZE1.WEIGHT_BYTES_PER_KERNEL",
        19, (1 << 19) - 1, "cpu", f"{REGS}", "R"),
    _fl("cbuf.banks", "CBUF banks", "CNA_CBUF_CON0.DATA_BANK/WEIGHT_BANK", None, 12, "cpu",
        f"{MESA}/rkt_ml.h (CBUF_BANKS=12, CBUF_BANK_SIZE=32768); rkt_task.c; {REFDOC} §1.4", "R",
        "12 banks x 256 entries x 128 B; the tiling planner must find a split: row slices (Mesa), output-channel "
        "weight groups, or column windows of one output row read at the full map's line stride (ours: "
        "CNA_DMA_CON1.LINE_STRIDE is independent of the task width; no open source uses it)"),
    _fl("ppu.kernel", "pool kernel", "PPU_POOLING_KERNEL_CFG.KERNEL_WIDTH/HEIGHT", None, 8, "cpu",
        f"{IAV} ('PPU pooling covers kernels <= 8, equal x/y strides <= 8'); {REGS}", "3P",
        "verified range on the PPU (the field is 4 bits)"),
    _fl("ppu.stride", "pool stride", "PPU_POOLING_KERNEL_CFG.KERNEL_STRIDE_WIDTH/HEIGHT", None, 8, "cpu",
        f"{IAV}; {REGS}", "3P", "verified range on the PPU, equal x/y strides"),
    _fl("ppu.pad", "pool pad", "PPU_POOLING_PADDING_CFG.PAD_*", 3, 7, "cpu", f"{REGS}; {IAV}", "R"),
    _fl("ppu.cube", "pool spatial size", "PPU_DATA_CUBE_IN_WIDTH/HEIGHT", 13, 8192, "cpu", f"{REGS}", "R"),
    _fl("align.c2_int8", "channel group (C2) for int8", "NC1HWC2 feature layout", None, 16, "pad",
        f"{MESA}/rkt_ml.h FEATURE_ATOMIC_SIZE=16; rknpu2 doc/RK3588_NPU_SRAM_usage.md; {REFDOC} §1.3", "R"),
    _fl("align.c2_fp16", "channel group (C2) for fp16", "NC1HWC2 feature layout", None, 8, "pad",
        f"rknn_matmul_api.h fp16 A layout (K/8, M, 8); {REFDOC} §4.2", "R"),
    _fl("matmul.k_align", "K alignment", "rknn_matmul_api.h (RK3588)", None, 32, "pad",
        f"rockchip-linux/rknpu2 rknn_matmul_api.h; {REFDOC} §4.2", "R",
        "K and N are zero-padded at compile time (weights are constants)"),
    _fl("matmul.n_align", "N alignment", "rknn_matmul_api.h (RK3588)", None, 32, "pad",
        f"rockchip-linux/rknpu2 rknn_matmul_api.h; {REFDOC} §4.2", "R", "int8: 32, fp16: 16"),
])

CBUF_BANKS = 12
CBUF_BANK_ENTRIES = 256
CBUF_ENTRY_BYTES = 128
CBUF_BANK_BYTES = CBUF_BANK_ENTRIES * CBUF_ENTRY_BYTES  # 32 KiB


@dataclass(frozen=True)
class DtypeRule:
    dtype: str
    npu: bool
    reason: str  # why (not) on the NPU
    ref: str
    tag: str


DTYPES: dict[str, DtypeRule] = {r.dtype: r for r in (
    DtypeRule("int8", True, "int8 runs as uint8 with a 0x80 offset (input x-0x80, weights w-0x80, out +0x80)",
              f"{MESA}/rkt_ml.c, rkt_coefs.c; {REFDOC} §1.2", "R"),
    DtypeRule("uint8", True, "uint8 is the native feature type of the rocket driver", f"{MESA}/rkt_ml.c", "R"),
    DtypeRule("float16", True, "CNA/CORE/DPU PROC_PRECISION fp16=2 (about 512 MAC/cycle/core); used by RKNN and "
              "the rknn matmul API, not yet by Mesa", f"mtx512/rk3588-npu include/npu_hw.h; {REFDOC} §3, §5", "R"),
    DtypeRule("int16", False, "no open source programs int16 features and OUT_PRECISION=1 (int16) times the NPU "
              "out", f"{WIDGETII} qemu/NPU_HW_QUIRKS.md; {REFDOC} §3", "3P"),
    DtypeRule("float32", False, "fp32 is a CNA precision enum value but no source runs fp32 convolutions; "
              "float tensors belong to CPU islands", "mtx512/rk3588-npu include/npu_hw.h", "I"),
    DtypeRule("int32", False, "int32 is an accumulator/bias type, never a feature type on the NPU path",
              f"{REFDOC} §1.2", "I"),
)}

C2 = {"int8": 16, "uint8": 16, "float16": 8}  # channels per NC1HWC2 group


@dataclass(frozen=True)
class OpCapability:
    """An op family the NPU runs: on which unit, how it is lowered, for which dtypes, under which limits."""

    op_types: tuple[str, ...]
    unit: str  # CNA+CORE+DPU, DPU-EW, DPU-BS, DPU-LUT, PPU, addressing, layout, boundary
    lowering: str
    dtypes: tuple[str, ...]
    limits: tuple[str, ...]  # keys of LIMITS
    conditions: tuple[str, ...]  # further conditions, as prose (checked in check_node)
    ref: str
    tag: str


_Q = ("int8", "uint8")
_QF = ("int8", "uint8", "float16")

CAPABILITIES: tuple[OpCapability, ...] = (
    OpCapability(
        ("Conv",), "CNA+CORE+DPU",
        "direct convolution; depthwise when group == Cin == Cout (CONV_MODE=3, DW_EN); other groupings as a dense "
        "conv with block-diagonal zero weights; dilation as a zero-inserted kernel; bias/requant on DPU BS+OUT_CVT",
        _QF, ("conv.kernel", "conv.stride", "conv.pad", "conv.dilation", "spatial", "conv.in_channels",
              "conv.out_channels", "conv.weight_bytes_per_kernel", "cbuf.banks"),
        ("2-D (or 1-D as H=1) convolution with constant weights", "batch 1"),
        f"{MESA}/rkt_ml.c rkt_ml_operation_supported(), rkt_task.c; {REFDOC} §1.1, §1.3-1.4", "R"),
    OpCapability(
        ("Gemm", "MatMul"), "CNA+CORE+DPU",
        "1x1 convolution over a map H=M, W=1, C=K with N kernels (K, N zero-padded to 32); constant bias on DPU BS",
        _QF, ("conv.in_channels", "conv.out_channels", "matmul.k_align", "matmul.n_align", "cbuf.banks"),
        ("B is a constant (weights)", "Gemm transA=0", "M = H*W with H, W <= 2047"),
        f"{IAV} (FC as 1x1 conv); jas-hacks 2024-02 and allbilly/rk3588 (matmul = 1x1 conv); {REFDOC} §4.2", "3P"),
    OpCapability(
        ("Add", "Mul"), "DPU-EW",
        "element-wise on the DPU EW stage, fused into the conv producing one operand (EW_RDMA reads the other); "
        "standalone on an identity 1x1 conv carrier; a constant operand is a BS-stage per-channel operand or a "
        "constant EW buffer",
        _QF, ("spatial",), ("same-shape dynamic operands, or one constant operand",
                             "Mul by a dynamic (1,C,1,1) vector: depthwise 1x1 conv whose weights are that vector"),
        f"{MESA}/rkt_ml.c (ADD fused via EW), rkt_regcmd.c; {IAV} (standalone ADD on identity copy)", "R"),
    OpCapability(
        ("Sub", "Div"), "DPU-BS",
        "Sub of a constant: BS-stage add of -c; Div by a constant: multiply by 1/c (BS MUL / OUT_CVT scale)",
        _QF, ("spatial",), ("second operand constant",), f"{REGS} (DPU BS ALU/MUL); NVDLA SDP ALU has no SUB", "I"),
    OpCapability(
        ("Relu", "Clip"), "DPU-OUT_CVT",
        "output saturation of the producing op (fused clip attr); standalone on an identity carrier",
        _QF, (), ("constant bounds",),
        f"{MESA}/rkt_ml.c (BS_RELU_BYPASS, fused_relu6_supported); {IAV} ('ReLU/ReLU6 via output saturation')", "R"),
    OpCapability(
        ("PRelu", "BatchNormalization"), "DPU-BS",
        "per-channel constants on the DPU BS stage (BS_MUL_PRELU; BS MUL+ALU) on the producer or an identity carrier",
        _QF, (), ("constant slope / statistics",), f"{REGS} (DPU_BS_CFG.BS_MUL_PRELU, BS_ALU/MUL)", "I"),
    OpCapability(
        ("Sigmoid", "Tanh", "Silu", "HardSwish", "HardSigmoid"), "DPU-LUT",
        "256-entry int8 -> int8 table loaded into the DPU LUT (LE/LO tables), applied after the producer's conv",
        _Q, (), ("int8 activations",),
        f"{IAV} (SiLU via the DPU LUT, 'the vendor's ConvExSwish path'); {REGS} (DPU_LUT_*); {REFDOC} §7A.3", "3P"),
    OpCapability(
        ("Gelu", "Erf", "LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish"), "DPU-LUT",
        "same LUT path as Sigmoid: any int8 -> int8 unary function is a 256-entry table", _Q, (),
        ("int8 activations",), f"{IAV}; {REGS}", "I"),
    OpCapability(
        ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean"), "PPU",
        "PPU pooling (max/avg); average pools beyond the PPU range as a depthwise conv with 1/(kh*kw) weights "
        "(kernel <= 31, no excluded padding); ReduceMean over H, W is a global average pool",
        _Q, ("ppu.kernel", "ppu.stride", "ppu.pad", "ppu.cube"),
        ("equal x/y strides", "no partial (ceil_mode) windows", "avg pools: padding counted (count_include_pad)"),
        f"{IAV} (max/avg/global-avg on the PPU, depthwise fallback); {REGS} (PPU block)", "3P"),
    OpCapability(
        ("Concat",), "addressing",
        "each input's producer writes its slice of the output buffer (surface offset); no data movement",
        _QF, ("align.c2_int8",), ("channel axis", "every leg but the last a multiple of C2 channels"),
        f"{IAV} ('channel CONCATENATION is delegated as pure addressing'); {REFDOC} §7B.2 (SURF_NOTCH)", "3P"),
    OpCapability(
        ("Split", "Slice"), "addressing",
        "consumers read a channel range of the producer's buffer at a surface offset (yolov8 C2f split)",
        _QF, ("align.c2_int8",), ("channel axis, step 1", "offsets multiples of C2 channels"),
        f"{IAV} ('C2f's channel SLICE ... handled as addressing')", "3P"),
    OpCapability(
        ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout"), "layout",
        "free when the NC1HWC2 byte order is unchanged: the channel count stays on axis 1 and spatial dims only "
        "merge/split, only size-1 axes move, or (N,C,1,1) <-> (N,C); Flatten of (1,C,H,W) into a constant-weight "
        "Gemm is free (the Gemm becomes an HxW conv); NHWC<->NCHW transposes at graph inputs/outputs fold into the "
        "boundary conversion",
        _QF, (), ("no channel/spatial interleaving",), f"{REFDOC} §1.3 (NC1HWC2, first layer (1,1,H,W,3))", "I"),
    OpCapability(
        ("Pad",), "CNA",
        "zero spatial pads fold into the consumer conv's pads (canonicalize); a standalone constant pad runs as an "
        "identity depthwise conv with CNA padding (PAD_CON1 pad value); a channel pad as an identity 1x1 conv "
        "with zero extra kernels",
        _QF, ("conv.pad",), ("constant mode", "non-negative pads"), f"{REGS} (CNA_PAD_CON0/1); {WIDGETII} qemu/SPEC.md",
        "I"),
)

CAPABILITY_BY_OP: dict[str, OpCapability] = {op: cap for cap in CAPABILITIES for op in cap.op_types}


@dataclass(frozen=True)
class CpuOnly:
    op_types: tuple[str, ...]
    reason: str
    ref: str
    tag: str


CPU_ONLY: tuple[CpuOnly, ...] = (
    CpuOnly(("Resize", "Upsample"), "no open source lowers Resize on RK3588 (iav keeps yolov8n's nearest "
            "upsamples on the CPU; a nearest x2 as a DECONV with 2x2 ones is unverified)",
            f"{IAV}; {WIDGETII} patches/mesa/0004 (resize as a CPU op)", "3P"),
    CpuOnly(("ConvTranspose",), "the CNA DECONV mode (CONV_CON1.DECONV, CONV_CON3.DECONV_*_STRIDE) is not "
            "exercised by any open source", f"{REGS}", "I"),
    CpuOnly(("Softmax", "LogSoftmax"), "no exp/normalize unit; iav keeps softmax on the CPU", f"{IAV}", "3P"),
    CpuOnly(("LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization"),
            "needs per-row statistics (mean/variance); the DPU only has per-channel constants", f"{REGS}", "I"),
    CpuOnly(("QuantizeLinear", "DequantizeLinear"), "float<->int boundary op, executed with the boundary "
            "conversion on the CPU", "briefs/quant.md", "I"),
    CpuOnly(("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"), "ONNX integer ops are not in the "
            "quantized-tensor IR the NPU path consumes", "briefs/quant.md", "I"),
)

CPU_ONLY_BY_OP: dict[str, CpuOnly] = {op: c for c in CPU_ONLY for op in c.op_types}

MATMUL_DYNAMIC_B = (
    "the CNA reads B as conv weights in the packed weight layout [oc/32][ic/32][kx][ky][oc%32][ic%32], which no "
    "NPU task writes (the DPU writes NC1HWC2 features), so B would need a CPU re-pack every inference "
    "(rknn_matmul_api's B 'native layout' is prepared on the host too)")


# ---------------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    device: str  # "npu" | "cpu"
    reason: str | None = None  # why the CPU (always set for "cpu"); None on the NPU
    limit: str | None = None  # key of LIMITS (or "dtype", "op", "operand", ...) that decided a CPU placement
    unit: str | None = None  # NPU unit (CNA+CORE+DPU, DPU-EW, PPU, addressing, ...)
    lowering: str | None = None  # how the node runs on the NPU
    assumed_dtype: str | None = None  # "int8" when checked on a float graph as if quantized
    notes: tuple[str, ...] = ()  # splits, padding, MAC inflation...
    free: bool = False  # NPU op with no data movement (layout/addressing) or fused into a boundary

    @property
    def on_npu(self) -> bool:
        return self.device == "npu"


def _cpu(reason: str, limit: str, assumed: str | None = None) -> Placement:
    return Placement("cpu", reason, limit, assumed_dtype=assumed)


def _exceeds(op: str, key: str, value: int | tuple[int, ...], label: str | None = None) -> Placement:
    lim = LIMITS[key]
    shown = "x".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
    return _cpu(f"{op} {label or lim.what} {shown} > {lim.max_value} ({lim.describe()})", key)


FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


class GraphContext:
    """Per-graph facts check_node needs (producers, consumers, whether the graph is quantized)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()
        self.quantized = is_quantized(graph)
        self.fallbacks = {f.get("node"): f for f in graph.metadata.get("quant_fallbacks", []) or []}


def is_quantized(graph: Graph) -> bool:
    """A graph in quantized-tensor form (briefs/quant.md): Q/DQ boundary ops or integer activations."""
    for n in graph.nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return True
    return any(t.quant is not None and not t.is_const and t.dtype in ("int8", "uint8", "int16")
               for t in graph.tensors.values())


def _shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    if not name:
        return None
    t = graph.tensors.get(name)
    return None if t is None or t.shape is None else tuple(int(d) for d in t.shape)


def _is_const(graph: Graph, name: str) -> bool:
    t = graph.tensors.get(name) if name else None
    return t is not None and t.is_const


def _activations(graph: Graph, node: Node) -> list[str]:
    return [i for i in node.inputs if i and not _is_const(graph, i)] + [o for o in node.outputs if o]


def _npu_dtype(ctx: GraphContext, node: Node, allowed: tuple[str, ...]) -> tuple[Placement | None, str | None, str]:
    """Check the dtypes of a node's activations. Returns (cpu placement or None, assumed dtype, compute dtype)."""
    g = ctx.graph
    assumed = None
    compute = "int8"
    for name in _activations(g, node):
        t = g.tensors.get(name)
        if t is None:
            continue
        dt = t.dtype
        if dt in FLOAT_DTYPES and not ctx.quantized:
            assumed = "int8"  # float graph: checked as if it were quantized to int8
            continue
        if dt in FLOAT_DTYPES and dt != "float16":
            fb = ctx.fallbacks.get(node.name)
            why = f" (kept float by the quantizer: {fb['reason']})" if fb and fb.get("reason") else \
                " (kept float by the quantizer)"
            return _cpu(f"{node.op_type} dtype {dt} not supported on the NPU path{why}", "dtype"), assumed, compute
        rule = DTYPES.get(dt)
        if rule is None or not rule.npu:
            extra = f": {rule.reason}" if rule is not None else ""
            return _cpu(f"{node.op_type} dtype {dt} not supported on the NPU path{extra}", "dtype"), assumed, compute
        if dt not in allowed:
            return _cpu(f"{node.op_type} dtype {dt} not supported by its NPU lowering (supports "
                        f"{', '.join(allowed)})", "dtype"), assumed, compute
        if dt == "float16":
            compute = "float16"
    return None, assumed, compute


def _with(p: Placement, **kw: Any) -> Placement:
    d = {f: getattr(p, f) for f in ("device", "reason", "limit", "unit", "lowering", "assumed_dtype", "notes",
                                     "free")}
    d.update(kw)
    return Placement(**d)


# ---- convolution geometry ------------------------------------------------------------------------

@dataclass
class ConvGeom:
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False
    notes: list[str] = field(default_factory=list)


def cbuf_fit(g: ConvGeom) -> tuple[bool, str]:
    """Can the CBUF tiling planner (tiling.plan_conv_tiles: row slices, output-channel groups and column
    windows) split this convolution into tasks that fit the 12 CBUF banks? (False, the planner's reason) if not."""
    from opennpu.errors import CompileError

    from .tiling import ConvGeometry, plan_conv_tiles  # tiling reads this module's LIMITS

    try:
        plan_conv_tiles(ConvGeometry(g.cin, g.h, g.w, g.cout, (g.kh, g.kw), g.stride, g.pads, (1, 1), g.depthwise))
    except CompileError as e:
        return False, f"cannot be tiled for the CBUF: {e}"
    return True, ""


def check_conv_geometry(op: str, g: ConvGeom) -> Placement | None:
    """Apply the CNA/CORE/DPU field limits to a convolution-shaped job; None when it fits."""
    keff = ((g.kh - 1) * g.dilation[0] + 1, (g.kw - 1) * g.dilation[1] + 1)
    if max(g.dilation) > LIMITS["conv.dilation"].max_value:
        return _exceeds(op, "conv.dilation", max(g.dilation))
    if max(keff) > LIMITS["conv.kernel"].max_value:
        label = "dilated kernel" if max(g.dilation) > 1 else "kernel"
        return _exceeds(op, "conv.kernel", keff, label)
    if max(g.stride) > LIMITS["conv.stride"].max_value:
        return _exceeds(op, "conv.stride", max(g.stride))
    if max(g.pads) > LIMITS["conv.pad"].max_value:
        return _exceeds(op, "conv.pad", max(g.pads))
    for label, v in (("input width", g.w), ("input height", g.h), ("output width", g.ow), ("output height", g.oh)):
        if v > LIMITS["spatial"].max_value:
            return _exceeds(op, "spatial", v, label)
    if g.cin > LIMITS["conv.in_channels"].max_value:
        return _exceeds(op, "conv.in_channels", g.cin)
    kbytes = g.kh * g.kw * (1 if g.depthwise else g.cin)
    if kbytes > LIMITS["conv.weight_bytes_per_kernel"].max_value:
        return _exceeds(op, "conv.weight_bytes_per_kernel", kbytes)
    ok, why = cbuf_fit(ConvGeom(g.cin, g.h, g.w, g.cout, keff[0], keff[1], g.oh, g.ow, g.stride, g.pads,
                                depthwise=g.depthwise))
    if not ok:
        return _cpu(f"{op} {why}", "cbuf.banks")
    lim = LIMITS["conv.out_channels"]
    if g.cout > lim.max_value:
        g.notes.append(f"split into {math.ceil(g.cout / lim.max_value)} output-channel tasks "
                       f"({g.cout} > {lim.max_value}, {lim.describe()})")
    if max(g.dilation) > 1:
        g.notes.append(f"dilation {g.dilation} lowered as a {keff[0]}x{keff[1]} zero-inserted kernel")
    return None


def _factor_rows(m: int) -> tuple[int, int] | None:
    """M rows of a matmul as an H x W map with both <= 2047 (a 1x1 conv does not care which)."""
    lim = LIMITS["spatial"].max_value
    if m <= lim:
        return m, 1
    for w in range(2, lim + 1):
        if m % w == 0 and m // w <= lim:
            return m // w, w
    return None


# ---- per-op checks -----------------------------------------------------------------------------------

def _check_conv(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    x, w = _shape(g, node.inputs[0]), _shape(g, node.inputs[1]) if len(node.inputs) > 1 else None
    y = _shape(g, node.outputs[0])
    if x is None or w is None or y is None:
        return _cpu("Conv has unknown shapes (run shape inference first)", "shape")
    if not _is_const(g, node.inputs[1]):
        return _cpu("Conv weights are not constant (the CNA reads weights pre-packed at compile time)", "operand")
    if len(x) not in (3, 4):
        return _cpu(f"Conv rank {len(x)} not supported (the NPU runs 1-D and 2-D convolutions)", "rank")
    if x[0] != 1:
        return _cpu(f"Conv batch {x[0]} > 1 (one NC1HWC2 cube per task; batched tensors are not lowered)", "batch")
    if len(x) == 3:  # 1-D conv as H=1
        x, w, y = (x[0], x[1], 1, x[2]), (w[0], w[1], 1, w[2]), (y[0], y[1], 1, y[2])
    a = node.attrs
    nsp = len(_shape(g, node.inputs[0]) or ()) - 2
    strides = list(a.get("strides") or [1] * nsp)
    dil = list(a.get("dilations") or [1] * nsp)
    pads = list(a.get("pads") or [0] * 2 * nsp)
    if nsp == 1:
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    group = int(a.get("group", 1))
    cin, cout = x[1], y[1]
    geom = ConvGeom(cin, x[2], x[3], cout, w[2], w[3], y[2], y[3], (strides[0], strides[1]),
                    (pads[0], pads[1], pads[2], pads[3]), (dil[0], dil[1]))
    notes: list[str] = []
    if group == cin == cout and cin > 1:
        geom.depthwise = True
        lowering = "depthwise convolution (CONV_MODE=3, DW_EN)"
    elif group == 1:
        lowering = "direct convolution"
    else:
        lowering = "dense convolution with block-diagonal zero weights"
        notes.append(f"group={group}: MACs on the NPU are {group}x the model's")
    bad = check_conv_geometry("Conv", geom)
    if bad is not None:
        return bad
    return Placement("npu", unit=cap.unit, lowering=lowering, notes=tuple(notes + geom.notes))


def _check_gemm(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    op = node.op_type
    a_shape, b_shape = _shape(g, node.inputs[0]), _shape(g, node.inputs[1])
    if a_shape is None or b_shape is None:
        return _cpu(f"{op} has unknown shapes (run shape inference first)", "shape")
    if not _is_const(g, node.inputs[1]):
        if _is_const(g, node.inputs[0]):
            return _cpu(f"{op} with a constant A and dynamic B: {MATMUL_DYNAMIC_B}", "operand")
        return _cpu(f"{op} of two activations (B is not constant): {MATMUL_DYNAMIC_B}", "operand")
    if op == "Gemm":
        if int(node.attrs.get("transA", 0)):
            return _cpu("Gemm transA=1 reads A transposed (a CPU re-layout of the activation)", "layout")
        m, k = a_shape
        n = b_shape[0] if int(node.attrs.get("transB", 0)) else b_shape[1]
        if len(node.inputs) > 2 and node.inputs[2] and not _is_const(g, node.inputs[2]):
            c = _shape(g, node.inputs[2])
            if c != (m, n):
                return _cpu(f"Gemm bias C of shape {c} is dynamic and broadcast (EW reads a full-size operand)",
                            "operand")
    else:
        if len(b_shape) < 2 or any(d != 1 for d in b_shape[:-2]):
            return _cpu(f"MatMul constant B of shape {b_shape} has batch dimensions (one weight set per task)",
                        "operand")
        if len(a_shape) < 2:
            return _cpu(f"MatMul A of rank {len(a_shape)} (vector) is not lowered", "rank")
        k, n = b_shape[-2], b_shape[-1]
        m = int(np.prod(a_shape[:-1]))
    hw = _factor_rows(m)
    if hw is None:
        return _cpu(f"{op} M={m} rows do not fit one H x W map with H, W <= 2047 ({LIMITS['spatial'].describe()})",
                    "spatial")
    geom = ConvGeom(k, hw[0], hw[1], n, 1, 1, hw[0], hw[1])
    bad = check_conv_geometry(op, geom)
    if bad is not None:
        return bad
    notes = list(geom.notes)
    kp, np_ = -(-k // 32) * 32, -(-n // 32) * 32
    if (kp, np_) != (k, n):
        notes.append(f"K x N {k}x{n} zero-padded to {kp}x{np_} (alignment 32)")
    return Placement("npu", unit=cap.unit, lowering=f"1x1 conv on a {hw[0]}x{hw[1]} map, C=K={k}, {n} kernels",
                     notes=tuple(notes))


def _conv_like_producer(ctx: GraphContext, name: str) -> Node | None:
    p = ctx.producers.get(name)
    if p is not None and p.op_type in ("Conv", "Gemm", "MatMul") and len(ctx.consumers.get(name, [])) == 1:
        return p
    return None


def _check_binary(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    op = node.op_type
    if len(node.inputs) != 2:
        return _cpu(f"{op} with {len(node.inputs)} inputs is not lowered", "operand")
    a, b = node.inputs
    sa, sb, so = _shape(g, a), _shape(g, b), _shape(g, node.outputs[0])
    if sa is None or sb is None or so is None:
        return _cpu(f"{op} has unknown shapes (run shape inference first)", "shape")
    ca, cb = _is_const(g, a), _is_const(g, b)
    if ca and cb:
        return _cpu(f"{op} of two constants is folded at compile time", "const")
    if len(so) >= 1 and so[0] != 1 and len(so) >= 3:
        return _cpu(f"{op} batch {so[0]} > 1 (one NC1HWC2 cube per task)", "batch")
    if op in ("Sub", "Div"):
        if not cb:
            what = "Sub of a dynamic operand: the EW ALU has add/max/min only (NVDLA SDP), no subtract" \
                if op == "Sub" else "Div by a dynamic operand: the DPU has no divider"
            return _cpu(what, "operand")
        lowering = "BS-stage add of the negated constant" if op == "Sub" else "multiply by the reciprocal constant"
        return Placement("npu", unit="DPU-BS", lowering=lowering)
    if ca or cb:
        const_shape = sa if ca else sb
        per_channel = len(so) == 4 and all(d == 1 for i, d in enumerate((1,) * (4 - len(const_shape)) + const_shape)
                                           if i != 1)
        where = "BS-stage per-channel constant" if per_channel else "EW operand from a constant buffer"
        return Placement("npu", unit="DPU-EW" if not per_channel else "DPU-BS",
                         lowering=f"{op} by a constant: {where}")
    if sa == sb == so:
        fused = _conv_like_producer(ctx, a) or _conv_like_producer(ctx, b)
        lowering = (f"EW stage fused into {fused.op_type} {fused.name!r}" if fused is not None
                    else "EW stage on an identity 1x1 conv carrier")
        return Placement("npu", unit="DPU-EW", lowering=lowering)
    if op == "Mul" and len(so) == 4:
        for vec, full in ((sa, sb), (sb, sa)):
            if full == so and vec == (1, so[1], 1, 1):
                return Placement("npu", unit="CNA+CORE+DPU",
                                 lowering="depthwise 1x1 conv whose weights are the (1,C,1,1) operand as its "
                                          "producer wrote it (depthwise weight layout = NC1HWC2 of a 1x1 map; "
                                          "operand zero point via DPU_BS_OW_OP)",
                                 notes=("[I] dynamic depthwise weights: not exercised by an open source",))
    return _cpu(f"{op} broadcasts dynamic operands {sa} and {sb} (the EW stage reads a same-shape operand)",
                "operand")


def _check_clamp(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    if node.op_type == "Clip" and any(i and not _is_const(g, i) for i in node.inputs[1:]):
        return _cpu("Clip with dynamic bounds (OUT_CVT saturation bounds are compile-time)", "operand")
    prod = ctx.producers.get(node.inputs[0])
    if prod is not None and len(ctx.consumers.get(node.inputs[0], [])) == 1 and \
            prod.op_type in ("Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "MaxPool", "Concat"):
        return Placement("npu", unit=cap.unit, lowering=f"output saturation of {prod.op_type} {prod.name!r}")
    return Placement("npu", unit=cap.unit, lowering="output saturation on an identity 1x1 conv carrier")


def _check_const_params(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    if any(i and not _is_const(g, i) for i in node.inputs[1:]):
        return _cpu(f"{node.op_type} with dynamic parameters (BS operands are compile-time constants)", "operand")
    s = _shape(g, node.inputs[0])
    if s is None or len(s) < 2:
        return _cpu(f"{node.op_type} on rank {None if s is None else len(s)} has no channel axis", "rank")
    return Placement("npu", unit=cap.unit, lowering=cap.lowering)


def _check_lut(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    prod = ctx.producers.get(node.inputs[0])
    if prod is not None and prod.op_type in ("Conv", "Gemm", "MatMul", "Add") and \
            len(ctx.consumers.get(node.inputs[0], [])) == 1:
        where = f"DPU LUT after {prod.op_type} {prod.name!r}"
    else:
        where = "DPU LUT on an identity 1x1 conv carrier"
    return Placement("npu", unit=cap.unit, lowering=f"{node.op_type} as a 256-entry int8 table: {where}")


def _pool_params(ctx: GraphContext, node: Node) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int],
                                                         tuple[int, int, int, int], tuple[int, int]] | str:
    """(input shape, kernel, stride, pads t/l/b/r, output hw), or a reason string."""
    g = ctx.graph
    x, y = _shape(g, node.inputs[0]), _shape(g, node.outputs[0])
    op = node.op_type
    if x is None or y is None:
        return f"{op} has unknown shapes (run shape inference first)"
    if len(x) != 4:
        return f"{op} on rank {len(x)} (the PPU pools 2-D maps)"
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        return x, (x[2], x[3]), (x[2], x[3]), (0, 0, 0, 0), (1, 1)
    if op == "ReduceMean":
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1]:
            axes = g.const(node.inputs[1])
        axes = sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) if axes is not None else None
        if axes != [2, 3]:
            return f"ReduceMean over axes {axes} (only the spatial axes 2, 3 map to a global average pool)"
        return x, (x[2], x[3]), (x[2], x[3]), (0, 0, 0, 0), (1, 1)
    a = node.attrs
    k = tuple(int(v) for v in a.get("kernel_shape", ()))
    if len(k) != 2:
        return f"{op} kernel {k} is not 2-D"
    s = tuple(int(v) for v in (a.get("strides") or (1, 1)))
    p = [int(v) for v in (a.get("pads") or (0, 0, 0, 0))]
    if any(int(d) != 1 for d in (a.get("dilations") or (1, 1))):
        return f"{op} dilations {list(a.get('dilations'))} (the PPU has no dilated windows)"
    if len(node.outputs) > 1 and node.outputs[1]:
        return f"{op} with an indices output (the PPU returns values only)"
    if int(a.get("ceil_mode", 0)):
        # a partial last window would read past input+padding, which "starves the PPU forever" (iav)
        for i in range(2):
            if (y[2 + i] - 1) * s[i] + k[i] > x[2 + i] + p[i] + p[i + 2]:
                return f"{op} ceil_mode=1 makes a partial window (the PPU stalls on windows not covered by input+pad)"
    return x, (k[0], k[1]), (s[0], s[1]), (p[0], p[1], p[2], p[3]), (y[2], y[3])


def _check_pool(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    op = node.op_type
    res = _pool_params(ctx, node)
    if isinstance(res, str):
        return _cpu(res, "op")
    x, k, s, p, (oh, ow) = res
    if x[0] != 1:
        return _cpu(f"{op} batch {x[0]} > 1 (one NC1HWC2 cube per task)", "batch")
    is_avg = op in ("AveragePool", "GlobalAveragePool", "ReduceMean")
    if (oh, ow) == (1, 1) and k == (x[2], x[3]) and s != (max(s), max(s)):
        s = (max(k), max(k))  # one window: the stride never applies
    excluded_pad = is_avg and any(p) and not int(node.attrs.get("count_include_pad", 0))
    for v, label in ((x[2], "input height"), (x[3], "input width")):
        if v > LIMITS["ppu.cube"].max_value:
            return _exceeds(op, "ppu.cube", v, label)
    ppu_ok = (max(k) <= LIMITS["ppu.kernel"].max_value and max(s) <= LIMITS["ppu.stride"].max_value
              and s[0] == s[1] and max(p) <= LIMITS["ppu.pad"].max_value and not excluded_pad)
    ppu_ok_quant = True
    if is_avg and ctx.quantized:
        qi, qo = ctx.graph.tensor(node.inputs[0]).quant, ctx.graph.tensor(node.outputs[0]).quant
        if qi is not None and qo is not None and not (np.allclose(qi.scale, qo.scale)
                                                      and np.array_equal(qi.zero_point, qo.zero_point)):
            ppu_ok_quant = False  # iav: the PPU average needs equal input/output quantization
    ppu_ok = ppu_ok and ppu_ok_quant
    if ppu_ok:
        kind = "max" if "Max" in op else "average"
        return Placement("npu", unit="PPU", lowering=f"PPU {kind} pool {k[0]}x{k[1]} stride {s[0]}")
    if not is_avg:
        if max(k) > LIMITS["ppu.kernel"].max_value:
            return _exceeds(op, "ppu.kernel", k)
        if max(s) > LIMITS["ppu.stride"].max_value:
            return _exceeds(op, "ppu.stride", max(s))
        if s[0] != s[1]:
            return _cpu(f"{op} strides {s[0]}x{s[1]} differ (the PPU needs equal x/y strides, "
                        f"{LIMITS['ppu.stride'].ref})", "ppu.stride")
        return _exceeds(op, "ppu.pad", max(p))
    # average pool beyond the PPU: depthwise conv with 1/(kh*kw) weights (iav's fallback)
    if excluded_pad:
        return _cpu(f"{op} pads {list(p)} with count_include_pad=0 (PPU and depthwise fallback both divide by "
                    "the full window)", "operand")
    single = (oh, ow) == (1, 1) and k == (x[2], x[3]) and not any(p)  # one window: the stride never applies
    geom = ConvGeom(x[1], x[2], x[3], x[1], k[0], k[1], oh, ow, (1, 1) if single else s, p, depthwise=True)
    bad = check_conv_geometry(op, geom)
    if bad is None:
        return Placement("npu", unit="CNA+CORE+DPU", lowering=f"depthwise {k[0]}x{k[1]} conv with 1/{k[0] * k[1]} "
                         "weights (beyond the PPU range)", notes=tuple(geom.notes))
    stages = ppu_stages(k) if single and ppu_ok_quant else None
    if stages is not None:
        return Placement("npu", unit="PPU", lowering="global average as PPU average pools of non-overlapping "
                         f"windows {' then '.join(f'{a}x{b}' for a, b in stages)}",
                         notes=("[I] each stage rounds to int8: differs from a one-step mean by rounding",))
    why = bad.reason.split(" ", 1)[1] if bad.reason else ""
    return _cpu(f"{op} window {k[0]}x{k[1]} exceeds the PPU (kernel <= {LIMITS['ppu.kernel'].max_value}, "
                f"{LIMITS['ppu.kernel'].ref.split(' (')[0]}), its depthwise-conv fallback ({why}) and a "
                "multi-stage PPU split (a side has a prime factor > 8)", bad.limit or "ppu.kernel")


def ppu_stages(k: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Factor a global window into PPU stages of non-overlapping windows (kernel = stride <= 8 per axis)."""
    kmax = LIMITS["ppu.kernel"].max_value
    per_axis = []
    for n in k:
        fs = []
        while n > 1:
            d = next((d for d in range(kmax, 1, -1) if n % d == 0), None)
            if d is None:
                return None
            fs.append(d)
            n //= d
        per_axis.append(fs)
    depth = max(len(f) for f in per_axis)
    a, b = (f + [1] * (depth - len(f)) for f in per_axis)
    return list(zip(a, b, strict=True))


def _c2(compute: str) -> int:
    return C2.get(compute, 16)


def _check_concat(ctx: GraphContext, node: Node, cap: OpCapability, compute: str) -> Placement:
    g = ctx.graph
    y = _shape(g, node.outputs[0])
    if y is None:
        return _cpu("Concat has unknown shapes (run shape inference first)", "shape")
    axis = int(node.attrs.get("axis", 0)) % max(len(y), 1)
    if len(y) not in (2, 4) or axis != 1:
        return _cpu(f"Concat on axis {axis} of a rank-{len(y)} tensor (only channel-axis concat of NCHW maps is "
                    "pure NC1HWC2 addressing)", "layout")
    if y[0] != 1:
        return _cpu(f"Concat batch {y[0]} > 1 (one NC1HWC2 cube per task)", "batch")
    c2 = _c2(compute)
    legs = [i for i in node.inputs if i]
    for idx, leg in enumerate(legs[:-1]):
        s = _shape(g, leg)
        if s is None or s[1] % c2:
            return _cpu(f"Concat leg {idx} has {None if s is None else s[1]} channels, not a multiple of {c2} "
                        f"(each leg must start on an NC1HWC2 channel group; {LIMITS['align.c2_int8'].register})",
                        "align.c2_int8")
    return Placement("npu", unit="addressing", lowering="producers write their channel slice of the output buffer",
                     free=True)


def _check_split(ctx: GraphContext, node: Node, cap: OpCapability, compute: str) -> Placement:
    g = ctx.graph
    op = node.op_type
    x = _shape(g, node.inputs[0])
    if x is None:
        return _cpu(f"{op} has unknown shapes (run shape inference first)", "shape")
    c2 = _c2(compute)
    if op == "Split":
        axis = int(node.attrs.get("axis", 0)) % max(len(x), 1)
        sizes = [(_shape(g, o) or (0, 0))[axis] if len(_shape(g, o) or ()) > axis else 0 for o in node.outputs]
        offsets = list(np.cumsum([0] + sizes[:-1]))
    else:
        starts = g.const(node.inputs[1]) if len(node.inputs) > 1 else None
        axes = g.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        steps = g.const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
        if starts is None:
            return _cpu("Slice with dynamic starts (addressing is fixed at compile time)", "operand")
        axes_l = [int(a) % len(x) for a in (axes if axes is not None else range(len(starts)))]
        y = _shape(g, node.outputs[0]) or ()
        moved = [a for a in range(len(x)) if len(y) == len(x) and y[a] != x[a]]
        if steps is not None and any(int(s) != 1 for s in np.asarray(steps).reshape(-1)):
            return _cpu(f"Slice steps {list(np.asarray(steps).reshape(-1))} != 1 (strided reads need a re-layout)",
                        "layout")
        if len(moved) != 1 and not (len(moved) == 0):
            return _cpu(f"Slice along axes {moved} (only one channel range is addressing)", "layout")
        axis = moved[0] if moved else 1
        st = dict(zip(axes_l, [int(v) for v in np.asarray(starts).reshape(-1)], strict=False)).get(axis, 0)
        offsets = [st % x[axis] if st < 0 else min(st, x[axis])]
    if len(x) not in (2, 4) or axis != 1:
        return _cpu(f"{op} on axis {axis} of a rank-{len(x)} tensor (only channel ranges of NCHW maps are "
                    "NC1HWC2 addressing)", "layout")
    if x[0] != 1:
        return _cpu(f"{op} batch {x[0]} > 1 (one NC1HWC2 cube per task)", "batch")
    for off in offsets:
        if int(off) % c2:
            return _cpu(f"{op} channel offset {int(off)} is not a multiple of {c2} (NC1HWC2 channel groups)",
                        "align.c2_int8")
    return Placement("npu", unit="addressing", lowering="consumers read a channel range at a surface offset",
                     free=True)


def _order_preserving(x: tuple[int, ...], y: tuple[int, ...]) -> bool:
    """Is a row-major reshape x -> y also a no-op in NC1HWC2? Only for NCHW maps (rank 4) and (N, C) vectors
    (rank 2), whose channel axis is 1: the channel count must stay and the spatial dims only merge or split
    ((1,C,1,1) <-> (1,C) included). Rank-3 tensors are ambiguous (Conv1d reads (N,C,L), MatMul reads (N,M,K)
    with channels last), so reshapes touching them are never assumed free."""
    if x == y:
        return True
    if int(np.prod(x)) != int(np.prod(y)) or len(x) not in (2, 4) or len(y) not in (2, 4):
        return False
    return x[0] == y[0] == 1 and x[1] == y[1]


def _check_layout(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    op = node.op_type
    if op in ("Identity", "Dropout"):
        return Placement("npu", unit="layout", lowering="no-op (aliases its input)", free=True)
    x, y = _shape(g, node.inputs[0]), _shape(g, node.outputs[0])
    if x is None or y is None:
        return _cpu(f"{op} has unknown shapes (run shape inference first)", "shape")
    if op == "Transpose":
        perm = [int(p) for p in (node.attrs.get("perm") or list(range(len(x)))[::-1])]
        if node.inputs[0] in g.inputs and perm == [0, 3, 1, 2] and x[0] == 1:
            return Placement("npu", unit="boundary", lowering="NHWC graph input converted straight into NC1HWC2 "
                             "(for C <= 16 NC1HWC2 is NHWC with C padded)", free=True)
        if node.outputs[0] in g.outputs and perm == [0, 2, 3, 1] and x[0] == 1:
            return Placement("npu", unit="boundary", lowering="NC1HWC2 converted straight into the NHWC graph output",
                             free=True)
        moved = [p for p in perm if x[p] != 1]
        if moved == sorted(moved) and _order_preserving(x, y):
            return Placement("npu", unit="layout", lowering="moves size-1 axes only (no data movement)", free=True)
        return _cpu(f"Transpose perm {perm} of {x} moves data across the channel axis (NC1HWC2 has no transpose "
                    "engine; CPU re-layout)", "layout")
    if _order_preserving(x, y):
        return Placement("npu", unit="layout", lowering="same NC1HWC2 bytes (channels kept on axis 1)", free=True)
    if op == "Flatten" and len(x) == 4 and x[0] == 1 and len(y) == 2:
        users = ctx.consumers.get(node.outputs[0], [])
        fc = [u for u in users if u.op_type in ("Gemm", "MatMul") and u.inputs[0] == node.outputs[0]
              and _is_const(g, u.inputs[1]) and not int(u.attrs.get("transA", 0))]
        if users and len(fc) == len(users) and node.outputs[0] not in g.outputs and \
                max(x[2], x[3]) <= LIMITS["conv.kernel"].max_value:
            return Placement("npu", unit="layout", lowering=f"absorbed by the consumer Gemm, lowered as a "
                             f"{x[2]}x{x[3]} conv over the unflattened map (weights permuted at compile time)",
                             free=True)
    return _cpu(f"{op} {x} -> {y} interleaves channels and spatial positions (NC1HWC2 stores 16-channel groups; "
                "CPU re-layout)", "layout")


def _check_pad(ctx: GraphContext, node: Node, cap: OpCapability) -> Placement:
    g = ctx.graph
    x = _shape(g, node.inputs[0])
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        return _cpu(f"Pad mode {mode!r} (the CNA pads with one constant value, PAD_CON1)", "operand")
    pads = g.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attrs.get("pads")
    if pads is None or x is None:
        return _cpu("Pad with dynamic pads or unknown shape", "operand")
    if len(node.inputs) > 2 and node.inputs[2] and not _is_const(g, node.inputs[2]):
        return _cpu("Pad with a dynamic value", "operand")
    if len(node.inputs) > 3 and node.inputs[3]:
        return _cpu("Pad with an axes input is not lowered", "operand")
    p = [int(v) for v in np.asarray(pads).reshape(-1)]
    r = len(x)
    if len(p) != 2 * r or any(v < 0 for v in p):
        return _cpu(f"Pad pads {p} are negative (crop) or malformed", "operand")
    if r != 4 or x[0] != 1:
        return _cpu(f"Pad on a rank-{r} tensor with batch {x[0] if x else '?'} (only NCHW maps)", "rank")
    if p[0] or p[4]:
        return _cpu("Pad on the batch axis", "operand")
    spatial = p[2:4] + p[6:8]
    if p[1] or p[5]:
        if any(spatial):
            return _cpu("Pad on both channel and spatial axes (two identity carriers; not lowered)", "operand")
        return Placement("npu", unit="CNA+CORE+DPU",
                         lowering=f"identity 1x1 conv with {p[1]}+{p[5]} zero extra kernels (channel pad)")
    if max(spatial) > LIMITS["conv.pad"].max_value:
        return _exceeds("Pad", "conv.pad", max(spatial))
    return Placement("npu", unit="CNA+CORE+DPU", lowering="identity depthwise 1x1 conv with CNA padding (PAD_CON0/1)")


_CHECKERS = {
    "Conv": _check_conv, "Gemm": _check_gemm, "MatMul": _check_gemm,
    "Add": _check_binary, "Mul": _check_binary, "Sub": _check_binary, "Div": _check_binary,
    "Relu": _check_clamp, "Clip": _check_clamp,
    "PRelu": _check_const_params, "BatchNormalization": _check_const_params,
    "MaxPool": _check_pool, "AveragePool": _check_pool, "GlobalAveragePool": _check_pool,
    "GlobalMaxPool": _check_pool, "ReduceMean": _check_pool,
    "Pad": _check_pad,
}
_LAYOUT_CHECKERS = {"Concat": _check_concat, "Split": _check_split, "Slice": _check_split}


def check_node(graph: Graph, node: Node, ctx: GraphContext | None = None) -> Placement:
    """Place one node on the NPU or the CPU (with a reason naming the op, the limit and the value)."""
    ctx = ctx or GraphContext(graph)
    op = node.op_type
    if node.inputs and all(not i or _is_const(graph, i) for i in node.inputs) and op not in ("Constant",):
        return _cpu(f"{op} has only constant inputs: folded at compile time", "const")
    cpu_only = CPU_ONLY_BY_OP.get(op)
    if cpu_only is not None:
        return _cpu(f"op {op} has no NPU lowering: {cpu_only.reason}", "op")
    cap = CAPABILITY_BY_OP.get(op)
    if cap is None:
        return _cpu(f"op {op} has no NPU lowering", "op")
    bad, assumed, compute = _npu_dtype(ctx, node, cap.dtypes)
    if bad is not None:
        return bad
    if cap.unit == "DPU-LUT":
        p = _check_lut(ctx, node, cap)
    elif op in _LAYOUT_CHECKERS:
        p = _LAYOUT_CHECKERS[op](ctx, node, cap, compute)
    elif cap.unit == "layout":
        p = _check_layout(ctx, node, cap)
    else:
        p = _CHECKERS[op](ctx, node, cap)
    if p.device == "npu" and p.unit is None:
        p = _with(p, unit=cap.unit)
    return _with(p, assumed_dtype=assumed)


def capability_table_markdown() -> str:
    """The capability table rendered for docs/rk3588-capabilities.md."""
    rows = ["| ops | unit | dtypes | limits | lowering | source [tag] |", "|---|---|---|---|---|---|"]
    for c in CAPABILITIES:
        rows.append(f"| {', '.join(c.op_types)} | {c.unit} | {', '.join(c.dtypes)} | {', '.join(c.limits) or '-'} | "
                    f"{c.lowering}; conditions: {'; '.join(c.conditions) or '-'} | {c.ref} [{c.tag}] |")
    rows += ["", "| limit | bound | field | on exceed | source [tag] |", "|---|---|---|---|---|"]
    for lim in LIMITS.values():
        bits = f" ({lim.bits} bits)" if lim.bits else ""
        note = f": {lim.note}" if lim.note else ""
        rows.append(f"| {lim.name} ({lim.what}) | <= {lim.max_value} | {lim.register}{bits} | {lim.on_exceed}{note}"
                    f" | {lim.ref} [{lim.tag}] |")
    rows += ["", "| CPU-only ops | reason | source [tag] |", "|---|---|---|"]
    for c in CPU_ONLY:
        rows.append(f"| {', '.join(c.op_types)} | {c.reason} | {c.ref} [{c.tag}] |")
    rows += ["", "| dtype | NPU | why | source [tag] |", "|---|---|---|---|"]
    for d in DTYPES.values():
        rows.append(f"| {d.dtype} | {'yes' if d.npu else 'no (CPU)'} | {d.reason} | {d.ref} [{d.tag}] |")
    return "\n".join(rows)
