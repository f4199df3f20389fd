"""IR -> TFLite flatbuffer exporter: the inverse of ``frontends/tflite.py``.

Layout. The IR is NCHW with ONNX semantics; TFLite's spatial ops are NHWC. Every computed IR tensor is
written in a *layout*: a permutation P such that the TFLite tensor is ``np.transpose(ir_value, P)``
(identity = as in the IR; (0, 2, 3, 1) = the NHWC view of an NCHW tensor). Spatial ops (Conv, pools,
Resize) read and write NHWC; element-wise ops, Concat, Pad, Quantize/Dequantize, reductions and Softmax run
in whatever layout their inputs have (their constants, axes and pads are rewritten for it); an IR Transpose
costs nothing: its output is the same TFLite tensor seen in another layout. Layout-sensitive ops (Reshape,
Gemm, MatMul, ...) see the IR order. Layouts are chosen by a backward pass (which layout do a tensor's
consumers want) and a forward pass (which layouts do the producers give); a TRANSPOSE (or a RESHAPE, when
two layouts differ only in where size-1 axes sit) is emitted only where a consumer needs a layout its
producer did not give. Graph inputs and outputs keep the IR's declared shapes unless ``nhwc_io=True``, where
they take whatever layout the graph prefers (a 4-D NCHW image input becomes NHWC). Graphs imported from
TFLite (NHWC tensors wrapped in Transposes) therefore export without TRANSPOSE ops. A Flatten/Reshape of an
NHWC activation that only feeds Gemm/MatMul with constant weights is a plain RESHAPE of the NHWC tensor
with the weight columns permuted to match.

Quantized graphs (see the module docstring of frontends/tflite.py) export tensor by tensor: dtype and
QuantInfo become TFLite quantization parameters, with per-channel ``quantized_dimension`` remapped to the
layout the tensor is written in (OHWI conv filters: 0, 1HWO depthwise filters: 3, FC weights: 0). int4
weights (QuantInfo.bits == 4) are written as int8 tensors holding values in [-8, 7]: LiteRT's int8 kernels
compute exactly what the int4 graph means. QuantizeLinear/DequantizeLinear become QUANTIZE/DEQUANTIZE; an
IR requantization (DequantizeLinear -> QuantizeLinear) stays two ops, as the IR defines it. Fused clamps
become fused activations when they are exactly ReLU, ReLU6 or ReLU_N1_TO_1, else MAXIMUM/MINIMUM ops.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np

from ..errors import ModelFormatError, ShapeError, UnsupportedOpError
from ..ir.graph import Graph, Node, QuantInfo
from ..ir.ops import get_op
from ..ir.ops.registry import norm_axis, resolve_auto_pad
from ..ir.ops.slicing import slice_index, split_sizes
from ..quant.lut import LUT_OPS, lut_table

try:
    import tflite
except ImportError as e:  # pragma: no cover - tflite is a core dependency
    raise ImportError("the TFLite exporter needs the 'tflite' package (pip install tflite)") from e

Perm = tuple[int, ...]
NHWC: Perm = (0, 2, 3, 1)
MAX_FLATBUFFER_BYTES = (2 << 30) - (1 << 20)  # flatbuffers use 32-bit offsets

_TYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6, "int16": 7, "int8": 9,
          "float64": 10}
_ACT = tflite.ActivationFunctionType
_PADDING = tflite.Padding
_FUSED = {(0.0, float("inf")): _ACT.RELU, (0.0, 6.0): _ACT.RELU6, (-1.0, 1.0): _ACT.RELU_N1_TO_1}

SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize"}
UNARY = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH", "Exp": "EXP",
         "Log": "LOG", "Sqrt": "SQRT", "Neg": "NEG", "Abs": "ABS", "Floor": "FLOOR", "Ceil": "CEIL"}
# Ops computed element by element on their data inputs: any layout works, the output takes it.
ELEMENTWISE = set(UNARY) | {"Clip", "LeakyRelu", "Gelu", "Silu", "Reciprocal", "Cast", "Identity",
                            "QuantizeLinear", "DequantizeLinear", "Add", "Sub", "Mul", "Div", "Pow", "Max",
                            "Min", "Sum", "PRelu", "Concat", "Pad", "Slice", "Split", "HardSigmoid",
                            "BatchNormalization"} | set(LUT_OPS)
BINARY = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV", "Pow": "POW", "Max": "MAXIMUM",
          "Min": "MINIMUM", "Sum": "ADD"}
REDUCE = {"ReduceMean": "MEAN", "ReduceSum": "SUM", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN",
          "ReduceProd": "REDUCE_PROD"}
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
# TFLite op -> its builtin options table, for ops whose options we write.
_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
    "BATCH_MATMUL": "BatchMatMulOptions", "ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions",
    "DIV": "DivOptions", "MAX_POOL_2D": "Pool2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions", "SOFTMAX": "SoftmaxOptions", "RESHAPE": "ReshapeOptions",
    "RESIZE_BILINEAR": "ResizeBilinearOptions", "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "MEAN": "ReducerOptions", "SUM": "ReducerOptions", "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions", "REDUCE_PROD": "ReducerOptions", "LEAKY_RELU": "LeakyReluOptions",
    "MIRROR_PAD": "MirrorPadOptions", "GELU": "GeluOptions", "TRANSPOSE": "TransposeOptions",
    "PAD": "PadOptions", "PADV2": "PadV2Options", "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions", "QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions",
    "HARD_SWISH": "HardSwishOptions", "LOG_SOFTMAX": "LogSoftmaxOptions", "CAST": "CastOptions",
    "EXP": "ExpOptions", "GATHER": "GatherOptions", "STRIDED_SLICE": "StridedSliceOptions",
    "SPLIT_V": "SplitVOptions",
}
# Operator versions for integer variants (LiteRT accepts any version up to the newest it registers; these
# follow TFLite's op_version rules for int8 so delegates that look at versions see the usual values).
_INT_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "TRANSPOSE_CONV": 2}
_INT_V2 = {"ADD", "SUB", "MUL", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION", "SOFTMAX", "LOGISTIC",
           "TANH", "DEQUANTIZE", "QUANTIZE", "PAD", "PADV2", "TRANSPOSE", "MEAN", "RESIZE_BILINEAR",
           "RESIZE_NEAREST_NEIGHBOR", "RELU", "RELU6", "MAXIMUM", "MINIMUM", "LEAKY_RELU", "BATCH_MATMUL",
           "REDUCE_MAX", "REDUCE_MIN", "SUM", "MIRROR_PAD"}


def export_tflite(graph: Graph, nhwc_io: bool = False, description: str = "exported by opennpu") -> bytes:
    """Serialize an IR graph (float or quantized, shapes known) as a .tflite flatbuffer (subgraph 0).

    ``nhwc_io``: expose graph inputs/outputs in the layout the exported graph computes in (NHWC images)
    instead of the IR's declared shapes, saving the boundary TRANSPOSE ops. Raises UnsupportedOpError
    naming the first op without a TFLite mapping."""
    return _Exporter(graph, nhwc_io).run(description)


# ---- layout helpers ------------------------------------------------------------------------------------


def _ident(rank: int) -> Perm:
    return tuple(range(rank))


def _inverse(p: Perm) -> Perm:
    inv = [0] * len(p)
    for i, a in enumerate(p):
        inv[a] = i
    return tuple(inv)


def _same_memory(shape: tuple[int, ...], pa: Perm, pb: Perm) -> bool:
    """Do the two layouts of a tensor of this (IR) shape hold the elements in the same order?"""
    return [a for a in pa if shape[a] != 1] == [b for b in pb if shape[b] != 1]


def _tag(p: Perm) -> str:
    if p == NHWC:
        return "nhwc"
    if p == _ident(len(p)):
        return "nchw" if len(p) == 4 else "ir"
    return "p" + "".join(map(str, p))


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding (the odd pixel goes at the end)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size)
    return total // 2, total - total // 2


def _round_away(x: float) -> int:
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def _quantize_bound(value: float, dtype: str, scale: float, zp: int) -> int:
    """A real clamp bound as a code, like TFLite's CalculateActivationRangeQuantized (float32 division,
    rounded half away from zero, saturated)."""
    info = np.iinfo(dtype)
    if not np.isfinite(value):
        return int(info.max if value > 0 else info.min)
    return int(np.clip(zp + _round_away(float(np.float32(value) / np.float32(scale))), info.min, info.max))


# ---- flatbuffer model -----------------------------------------------------------------------------------


@dataclass
class _TfTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes | None = None
    quant: tuple[np.ndarray, np.ndarray, int] | None = None  # scales, zero points, quantized_dimension


@dataclass
class _TfOp:
    code: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]
    version: int


def _mod(name: str) -> Any:
    # The tflite package re-exports each class under its module's name; the builder functions live in the
    # module itself.
    return importlib.import_module(f"tflite.{name}")


class _Model:
    def __init__(self) -> None:
        self.tensors: list[_TfTensor] = []
        self.ops: list[_TfOp] = []
        self.names: set[str] = set()

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str, data: np.ndarray | None = None,
               quant: tuple[np.ndarray, np.ndarray, int] | None = None) -> int:
        if dtype not in _TYPES:
            raise UnsupportedOpError(f"tensor {name!r} has dtype {dtype}, which TFLite export does not support")
        raw = None
        if data is not None:
            raw = np.ascontiguousarray(data, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        self.tensors.append(_TfTensor(self.unique(name), tuple(int(d) for d in shape), dtype, raw, quant))
        return len(self.tensors) - 1

    def op(self, code: str, inputs: list[int], outputs: list[int], **options: Any) -> None:
        dtypes = {self.tensors[i].dtype for i in inputs + outputs if i >= 0}
        version = 1
        if dtypes & {"int8", "uint8", "int16"}:
            version = _INT_VERSIONS.get(code, 2 if code in _INT_V2 else 1)
            if code == "FULLY_CONNECTED" and self.tensors[inputs[1]].quant is not None \
                    and self.tensors[inputs[1]].quant[0].size > 1:
                version = 5  # per-channel weights
        if code.startswith("RESIZE") and (options.get("HalfPixelCenters") or options.get("AlignCorners")):
            version = max(version, 3)
        self.ops.append(_TfOp(code, list(inputs), list(outputs), options, version))

    # -- serialization ---------------------------------------------------------------------------------
    def build(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        data_bytes = sum(len(t.data) + 16 for t in self.tensors if t.data is not None)
        if data_bytes > MAX_FLATBUFFER_BYTES:
            raise ModelFormatError(f"the model's constants need {data_bytes} bytes, over the 2 GiB limit of a "
                                   "TFLite flatbuffer")
        b = flatbuffers.Builder(data_bytes + 256 * (len(self.tensors) + len(self.ops)) + 4096)
        buffers = [self._table(b, "Buffer", {})]  # buffer 0: the empty sentinel of computed tensors
        tensor_buffer: list[int] = []
        for t in self.tensors:
            if t.data is None:
                tensor_buffer.append(0)
                continue
            b.StartVector(1, len(t.data), 16)  # 16-byte aligned: kernels may read constants in place
            b.head -= len(t.data)
            b.Bytes[b.head:b.head + len(t.data)] = t.data
            buffers.append(self._table(b, "Buffer", {"Data": b.EndVector()}))
            tensor_buffer.append(len(buffers) - 1)
        tensors = []
        for t, buf in zip(self.tensors, tensor_buffer, strict=True):
            fields: dict[str, Any] = {"Name": b.CreateString(t.name),
                                      "Shape": b.CreateNumpyVector(np.asarray(t.shape, np.int32)),
                                      "Type": _TYPES[t.dtype], "Buffer": buf}
            if t.quant is not None:
                scale, zp, dim = t.quant
                fields["Quantization"] = self._table(b, "QuantizationParameters", {
                    "Scale": b.CreateNumpyVector(np.asarray(scale, np.float32)),
                    "ZeroPoint": b.CreateNumpyVector(np.asarray(zp, np.int64)),
                    "QuantizedDimension": int(dim)})
            tensors.append(self._table(b, "Tensor", fields))
        codes: list[tuple[str, int]] = []
        ops = []
        for op in self.ops:
            key = (op.code, op.version)
            if key not in codes:
                codes.append(key)
            fields = {"OpcodeIndex": codes.index(key),
                      "Inputs": b.CreateNumpyVector(np.asarray(op.inputs, np.int32)),
                      "Outputs": b.CreateNumpyVector(np.asarray(op.outputs, np.int32))}
            opt = _OPTIONS.get(op.code)
            if opt is not None:
                fields["BuiltinOptionsType"] = getattr(tflite.BuiltinOptions, opt)
                fields["BuiltinOptions"] = self._table(b, opt, op.options)
            elif op.options:
                raise AssertionError(f"{op.code} has options but no options table")
            ops.append(self._table(b, "Operator", fields))
        subgraph = self._table(b, "SubGraph", {
            "Tensors": self._offsets(b, tensors), "Inputs": b.CreateNumpyVector(np.asarray(inputs, np.int32)),
            "Outputs": b.CreateNumpyVector(np.asarray(outputs, np.int32)),
            "Operators": self._offsets(b, ops), "Name": b.CreateString("main")})
        opcodes = []
        for code, version in codes:
            num = getattr(tflite.BuiltinOperator, code)
            # deprecated_builtin_code is an int8: newer codes store the placeholder 127 there.
            opcodes.append(self._table(b, "OperatorCode", {"DeprecatedBuiltinCode": min(num, 127),
                                                           "BuiltinCode": num, "Version": version}))
        model = self._table(b, "Model", {
            "Version": 3, "OperatorCodes": self._offsets(b, opcodes), "Subgraphs": self._offsets(b, [subgraph]),
            "Description": b.CreateString(description), "Buffers": self._offsets(b, buffers)})
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _offsets(b: flatbuffers.Builder, offs: list[int]) -> int:
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    @staticmethod
    def _table(b: flatbuffers.Builder, name: str, fields: dict[str, Any]) -> int:
        """One table; list-valued fields become int32 vectors (created before the table starts)."""
        m = _mod(name)
        fields = {k: (b.CreateNumpyVector(np.asarray(v, np.int32)) if isinstance(v, list) else v)
                  for k, v in fields.items()}
        getattr(m, f"{name}Start")(b)
        for k, v in fields.items():
            getattr(m, f"{name}Add{k}")(b, v)
        return getattr(m, f"{name}End")(b)


# ---- the exporter ---------------------------------------------------------------------------------------


class _Exporter:
    def __init__(self, graph: Graph, nhwc_io: bool) -> None:
        self.g = graph.copy()
        self.nhwc_io = nhwc_io
        self.m = _Model()
        self.tfl: dict[tuple[str, Perm], int] = {}  # (IR tensor, layout) -> TFLite tensor
        self.const_cache: dict[tuple, int] = {}
        self.perm: dict[str, Perm] = {}
        self.primary: dict[str, Perm] = {}
        self.colperm: dict[str, np.ndarray] = {}  # Flatten outputs written in NHWC-flatten order
        self.requant: dict[str, str] = {}  # QuantizeLinear node -> integer input of its DequantizeLinear
        self.beta: dict[str, tuple[str, float]] = {}  # Softmax node -> (integer input of its Mul, beta)
        self.skip: set[str] = set()
        self._prepare()
        self._plan_pairs()

    # -- preparation ------------------------------------------------------------------------------------
    def T(self, name: str):
        return self.g.tensor(name)

    def is_const(self, name: str) -> bool:
        return bool(name) and self.T(name).is_const

    def rank(self, name: str) -> int:
        return len(self.T(name).shape)

    def _prepare(self) -> None:
        g = self.g
        names = set(g.inputs) | set(g.outputs) | {n for node in g.nodes for n in node.inputs + node.outputs if n}

        def unknown() -> list[str]:
            return [n for n in names if n in g.tensors and not g.tensors[n].is_const and
                    (g.tensors[n].shape is None or any(d < 0 for d in g.tensors[n].shape))]

        for name in g.inputs:
            shape = g.tensor(name).shape
            if shape is None or any(d < 0 for d in shape):
                raise ShapeError(f"input {name!r} has dynamic shape {shape}: pin the input shapes "
                                 "(load_model(..., input_shapes=...)) before exporting to TFLite")
        if unknown() or any(o not in g.tensors for node in g.nodes for o in node.outputs if o):
            from ..ir.passes import infer_shapes

            infer_shapes(g)
        bad = unknown()
        if bad:
            raise ShapeError(f"tensor {sorted(bad)[0]!r} has no static shape: pin the input shapes before "
                             "exporting to TFLite")
        # Integer tensors at Quantize/Dequantize boundaries carry their parameters (the contract says they
        # do; imported ONNX QDQ graphs may only have them on the ops).
        for node in g.nodes:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                q = node.outputs[0] if node.op_type == "QuantizeLinear" else node.inputs[0]
                t = g.tensor(q)
                if t.quant is None and not t.dtype.startswith("float"):
                    scale = g.const(node.inputs[1])
                    zp = g.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                    if scale is None:
                        raise UnsupportedOpError(f"{node.op_type} {node.name!r} has non-constant scales")
                    scale = np.asarray(scale, np.float32).reshape(-1)
                    zp = np.zeros(scale.size, np.int64) if zp is None else np.asarray(zp, np.int64).reshape(-1)
                    axis = None
                    if scale.size > 1:
                        axis = norm_axis(int(node.attrs.get("axis", 1)), len(t.shape))
                    t.quant = QuantInfo(scale, zp, axis)

    def _plan_pairs(self) -> None:
        """Two-node patterns the integer executor runs as one TFLite op (opennpu/quant/executor.py):
        DequantizeLinear -> QuantizeLinear (per tensor) is QUANTIZE int -> int (integer requantize), and
        Mul(integer x, scalar float) -> Softmax is SOFTMAX with that beta."""
        g = self.g
        consumers, producers = g.consumers(), g.producers()
        for n in g.nodes:
            src = n.inputs[0] if n.inputs else ""
            p = producers.get(src)
            if p is None or len(consumers.get(src, [])) != 1:
                continue
            if n.op_type == "QuantizeLinear" and p.op_type == "DequantizeLinear":
                scales = [g.const(n.inputs[1]), g.const(p.inputs[1])]
                if all(v is not None and np.size(v) == 1 for v in scales):
                    self.requant[n.name] = p.inputs[0]
                    if src not in g.outputs:
                        self.skip.add(p.name)
            elif n.op_type == "Softmax" and p.op_type == "Mul" and src not in g.outputs:
                xt = g.tensor(p.inputs[0])
                c = g.const(p.inputs[1])
                if xt.dtype in ("int8", "int16", "uint8") and xt.quant is not None and c is not None \
                        and c.dtype.kind == "f" and c.size == 1:
                    self.beta[n.name] = (p.inputs[0], float(c.reshape(-1)[0]))
                    self.skip.add(p.name)

    # -- layout planning --------------------------------------------------------------------------------
    def _data_inputs(self, node: Node) -> list[str]:
        """Inputs that must share the output's layout."""
        op = node.op_type
        if op in BINARY or op in ("Concat", "PRelu"):
            return [i for i in node.inputs if i]
        return node.inputs[:1]

    def _plan(self) -> None:
        g = self.g
        votes: dict[str, Counter] = {}

        def vote(name: str, p: Perm | None) -> None:
            if name and p is not None and not self.is_const(name):
                votes.setdefault(name, Counter())[p] += 1

        def demand(name: str) -> Perm | None:
            c = votes.get(name)
            return c.most_common(1)[0][0] if c else None

        if not self.nhwc_io:
            for o in g.outputs:
                vote(o, _ident(self.rank(o)))
        for node in reversed(g.nodes):
            op = node.op_type
            y = node.outputs[0] if node.outputs else ""
            d = demand(y) if y else None
            if op in SPATIAL and self.rank(node.inputs[0]) == 4:
                vote(node.inputs[0], NHWC)
            elif op in ELEMENTWISE or (op in REDUCE and node.attrs.get("keepdims", 1)):
                for i in self._data_inputs(node):
                    if i and self.rank(i) == self.rank(y):
                        vote(i, d)
            elif op == "Transpose":
                if d is not None:
                    q = self._tperm(node)
                    vote(node.inputs[0], tuple(q[d[i]] for i in range(len(d))))
            elif op in ("Softmax", "LogSoftmax"):
                axis = norm_axis(int(node.attrs.get("axis", -1)), self.rank(y))
                vote(node.inputs[0], d if d is not None and d[-1] == axis else None)
            else:
                for i in node.inputs:
                    if i and not self.is_const(i):
                        vote(i, _ident(self.rank(i)))
        for name in g.inputs:
            r = self.rank(name)
            d = demand(name) if self.nhwc_io else None
            self.perm[name] = d if d is not None else _ident(r)
        for node in g.nodes:
            self._plan_node(node, demand)
        for name, p in self.perm.items():
            self.primary[name] = p
        for o in g.outputs:
            if not self.is_const(o):
                self.primary[o] = self.perm[o] if self.nhwc_io else _ident(self.rank(o))
        self._plan_colperm()

    def _tperm(self, node: Node) -> Perm:
        perm = node.attrs.get("perm")
        r = self.rank(node.inputs[0])
        return tuple(int(p) % r for p in perm) if perm is not None else tuple(range(r))[::-1]

    def _perm_of(self, name: str) -> Perm:
        return self.perm[name] if name in self.perm else _ident(self.rank(name))

    def _plan_node(self, node: Node, demand: Callable[[str], Perm | None]) -> None:
        op = node.op_type
        outs = [o for o in node.outputs if o]
        if not outs:
            return
        y = outs[0]
        ry = self.rank(y)
        p: Perm = _ident(ry)
        if op in SPATIAL and self.rank(node.inputs[0]) == 4:
            p = NHWC
        elif op in ELEMENTWISE:
            cands = [self._perm_of(i) for i in self._data_inputs(node)
                     if i and not self.is_const(i) and self.rank(i) == ry]
            d = demand(y)
            if d is not None and d in cands:
                p = d
            elif cands:
                p = Counter(cands).most_common(1)[0][0]
        elif op == "Transpose" and not self.is_const(node.inputs[0]):
            inv = _inverse(self._tperm(node))
            px = self._perm_of(node.inputs[0])
            p = tuple(inv[px[i]] for i in range(ry))
        elif op in REDUCE and not self.is_const(node.inputs[0]):
            px = self._perm_of(node.inputs[0])
            axes = _reduce_axes(self, node)
            if node.attrs.get("keepdims", 1):
                p = px
            else:
                kept = [a for a in range(len(px)) if a not in axes]
                p = tuple(kept.index(a) for a in px if a not in axes)
        elif op in ("Softmax", "LogSoftmax") and not self.is_const(node.inputs[0]):
            axis = norm_axis(int(node.attrs.get("axis", -1)), ry)
            px = self._perm_of(node.inputs[0])
            if px[-1] == axis:
                p = px
            elif axis != ry - 1:
                p = tuple(a for a in range(ry) if a != axis) + (axis,)
        self.perm[y] = p
        for o in outs[1:]:
            self.perm[o] = p if op == "Split" else _ident(self.rank(o))

    def _plan_colperm(self) -> None:
        """Flatten/Reshape (N, C, H, W) -> (N, C*H*W) of an NHWC tensor feeding only FC-able consumers."""
        g = self.g
        consumers = g.consumers()
        for node in g.nodes:
            if node.op_type not in RESHAPES:
                continue
            x, y = node.inputs[0], node.outputs[0]
            if self.is_const(x) or y in g.outputs or self.rank(x) != 4 or self.rank(y) != 2:
                continue
            xs, px = self.T(x).shape, self._perm_of(x)
            if px[0] != 0 or self.T(y).shape[0] != xs[0] or _same_memory(xs, px, _ident(4)):
                continue
            users = consumers.get(y, [])
            if not users or not all(self._fc_consumer(u, y) for u in users):
                continue
            idx = np.arange(int(np.prod(xs[1:])), dtype=np.int64).reshape(xs[1:])
            self.colperm[y] = np.transpose(idx, [a - 1 for a in px[1:]]).reshape(-1)

    def _fc_consumer(self, node: Node, a: str) -> bool:
        if len(node.inputs) < 2 or node.inputs[0] != a or a in node.inputs[1:]:
            return False
        w = self.T(node.inputs[1])
        if not w.is_const or w.data.ndim != 2:
            return False
        if node.op_type == "Gemm":
            return not node.attrs.get("transA", 0)
        return node.op_type == "MatMul"

    # -- tensors ----------------------------------------------------------------------------------------
    def _quant(self, q: QuantInfo | None, p: Perm | None, shift: int = 0):
        """QuantInfo -> (scales, zero points, quantized_dimension) for a tensor written in layout p (the IR
        tensor padded with ``shift`` leading axes first)."""
        if q is None:
            return None
        scale = np.asarray(q.scale, np.float32).reshape(-1)
        zp = np.asarray(q.zero_point, np.int64).reshape(-1)
        if zp.size == 0:
            zp = np.zeros(scale.size, np.int64)
        if zp.size == 1 and scale.size > 1:
            zp = np.repeat(zp, scale.size)
        dim = 0
        if q.axis is not None and scale.size > 1:
            axis = q.axis + shift
            dim = p.index(axis) if p is not None else axis
        return scale, zp, dim

    def _tname(self, name: str, p: Perm) -> str:
        return name if self.primary.get(name) == p else f"{name}/{_tag(p)}"

    def new_act(self, name: str, p: Perm | None = None) -> int:
        """Create the TFLite tensor of computed IR tensor ``name`` in layout p (default: its planned one)."""
        p = self.perm[name] if p is None else p
        t = self.T(name)
        if t.dtype == "float16":
            raise UnsupportedOpError(f"tensor {name!r} is a float16 activation: TFLite computes float layers in "
                                     "float32 (export the float graph)")
        idx = self.m.tensor(self._tname(name, p), tuple(t.shape[a] for a in p), t.dtype,
                            quant=self._quant(t.quant, p))
        self.tfl[(name, p)] = idx
        return idx

    def out(self, node: Node, k: int = 0) -> int:
        return self.new_act(node.outputs[k])

    def tmp_like(self, name: str, p: Perm | None = None, suffix: str = "pre", dtype: str | None = None,
                 quant: bool = True) -> int:
        """An intermediate TFLite tensor shaped like IR tensor ``name`` (not tracked as its value)."""
        p = self.perm[name] if p is None else p
        t = self.T(name)
        return self.m.tensor(f"{name}/{suffix}", tuple(t.shape[a] for a in p), dtype or t.dtype,
                             quant=self._quant(t.quant, p) if quant else None)

    def act(self, name: str, p: Perm) -> int:
        """TFLite tensor holding IR tensor ``name`` in layout p, converting with TRANSPOSE/RESHAPE if needed."""
        key = (name, p)
        if key in self.tfl:
            return self.tfl[key]
        if self.is_const(name):
            return self.const(name, p)
        if name in self.colperm:
            raise AssertionError(f"{name!r} is written in flatten order")
        src_p = self.perm[name]
        src = self.tfl[(name, src_p)]
        shape = self.T(name).shape
        dst = self.new_act(name, p)
        if _same_memory(shape, src_p, p):
            self.reshape_op(src, dst)
        else:
            rel = tuple(src_p.index(a) for a in p)
            self.m.op("TRANSPOSE", [src, self.int_const(f"{name}/perm", rel)], [dst])
        return dst

    def act_mem(self, name: str) -> int:
        """TFLite tensor of ``name`` whose memory order is the IR's (for reshapes): avoids a conversion when
        the planned layout already has it."""
        if self.is_const(name):
            return self.const(name, None)
        p = self.perm[name]
        if _same_memory(self.T(name).shape, p, _ident(len(p))):
            return self.tfl[(name, p)]
        return self.act(name, _ident(len(p)))

    def operand(self, name: str, p: Perm) -> int:
        """Input of an element-wise op computed in layout p (rank len(p)): runtime tensors of lower rank are
        reshaped up first (numpy broadcasting aligns trailing axes), constants are padded and permuted."""
        r = len(p)
        if self.is_const(name):
            return self.const(name, p, rank=r)
        if self.rank(name) == r:
            return self.act(name, p)
        key = (name, ("rank", r, p))
        if key not in self.tfl:
            t = self.T(name)
            shift = r - len(t.shape)
            full = (1,) * shift + tuple(t.shape)
            ident = self.act_mem(name)
            shape = tuple(full[a] for a in p)
            dst = self.m.tensor(f"{name}/r{r}", shape, t.dtype, quant=self._quant(t.quant, p, shift))
            # Only size-1 axes move when a lower-rank tensor is padded and permuted: a reshape suffices
            # unless the original axes change order.
            if _same_memory(full, _ident(r), p):
                self.reshape_op(ident, dst)
            else:
                mid = self.m.tensor(f"{name}/r{r}_ir", full, t.dtype, quant=self._quant(t.quant, None, shift))
                self.reshape_op(ident, mid)
                self.m.op("TRANSPOSE", [mid, self.int_const(f"{name}/perm", p)], [dst])
            self.tfl[key] = dst
        return self.tfl[key]

    def reshape_op(self, src: int, dst: int) -> None:
        shape = list(self.m.tensors[dst].shape)
        self.m.op("RESHAPE", [src, self.int_const(self.m.tensors[dst].name + "/shape", shape)], [dst],
                  NewShape=shape)

    def const(self, name: str, p: Perm | None, rank: int | None = None) -> int:
        """IR constant, padded with leading axes to ``rank`` and transposed by p (quant axis follows)."""
        key = (name, p, rank)
        if key not in self.const_cache:
            t = self.T(name)
            v = np.asarray(t.data)
            shift = 0
            if rank is not None and v.ndim < rank:
                shift = rank - v.ndim
                v = v.reshape((1,) * shift + v.shape)
            if p is not None and len(p) == v.ndim:
                v = np.transpose(v, p)
            else:
                p = None
            suffix = "" if p in (None, _ident(v.ndim)) and not shift else f"/{_tag(p or _ident(v.ndim))}"
            self.const_cache[key] = self.const_value(name + suffix, v, self._quant(t.quant, p, shift))
        return self.const_cache[key]

    def const_value(self, name: str, value: np.ndarray, quant=None) -> int:
        v = np.asarray(value)
        if v.dtype == np.float64:
            v = v.astype(np.float32)
        return self.m.tensor(name, v.shape, v.dtype.name, data=v, quant=quant)

    def int_const(self, name: str, values) -> int:
        return self.const_value(name, np.asarray(values, dtype=np.int32))

    def scalar_like(self, name: str, value: float, dtype: str, quant) -> int:
        """A scalar constant in ``dtype``; for quantized tensors ``value`` is real and gets quantized."""
        if quant is not None and not dtype.startswith("float"):
            q = _quantize_bound(value, dtype, float(quant[0][0]), int(quant[1][0]))
            return self.const_value(name, np.array(q, dtype), quant)
        return self.const_value(name, np.array(value, dtype))

    # -- driver -----------------------------------------------------------------------------------------
    def run(self, description: str) -> bytes:
        g = self.g
        self._plan()
        for name in g.inputs:
            if self.is_const(name):
                raise ModelFormatError(f"graph input {name!r} is a constant")
            self.new_act(name)
        for node in g.nodes:
            if node.name in self.skip:
                continue
            handler = _HANDLERS.get(node.op_type)
            if node.op_type in LUT_OPS and self.lut_case(node):
                handler = _lut
            if handler is None:
                raise UnsupportedOpError(f"{node.op_type} (node {node.name!r}) has no TFLite export mapping")
            handler(self, node)
        inputs = [self.tfl[(n, self.perm[n])] for n in g.inputs]
        outputs: list[int] = []
        for o in g.outputs:
            if self.is_const(o):
                raise UnsupportedOpError(f"graph output {o!r} is a constant; TFLite outputs must be computed")
            idx = self.act(o, self.primary[o])
            if idx in inputs or idx in outputs:
                # TFLite needs distinct output tensors: copy through a reshape.
                t = self.m.tensors[idx]
                dst = self.m.tensor(o, t.shape, t.dtype, quant=t.quant)
                self.reshape_op(idx, dst)
                idx = dst
            t = self.m.tensors[idx]
            if t.name != o and o not in self.m.names:  # an aliased tensor: give it the output's name
                self.m.names.discard(t.name)
                t.name = o
                self.m.names.add(o)
            outputs.append(idx)
        return self.m.build(inputs, outputs, description)

    def quantized(self, name: str) -> bool:
        t = self.T(name)
        return t.dtype in ("int8", "int16", "uint8") and t.quant is not None

    def lut_case(self, node: Node) -> bool:
        """Integer activations the executor defines by a lookup table (opennpu/quant/lut.py); int8
        Sigmoid/Tanh are TFLite's own LOGISTIC/TANH tables instead."""
        x, y = node.inputs[0], node.outputs[0]
        if not (self.quantized(x) and self.quantized(y)):
            return False
        return not (node.op_type in ("Sigmoid", "Tanh") and self.T(x).dtype == self.T(y).dtype == "int8")

    def check_same_quant(self, node: Node, x: str, y: str) -> None:
        """TFLite's data-movement ops copy codes: the output must have the input's quantization."""
        a, b = self.T(x).quant, self.T(y).quant
        if a is None or b is None or not self.quantized(x):
            return
        if not (np.array_equal(np.float32(a.scale), np.float32(b.scale))
                and np.array_equal(np.asarray(a.zero_point), np.asarray(b.zero_point))):
            raise UnsupportedOpError(f"{node.op_type} {node.name!r} changes the quantization of {x!r}; TFLite "
                                     "needs equal input and output parameters for it")

    # -- shared op pieces -------------------------------------------------------------------------------
    def emit(self, node: Node, code: str, inputs: list[int], fusable: bool = True, **options: Any) -> None:
        """Emit ``code`` writing the node's output, honouring attrs["clip"]: a fused activation when TFLite
        has one (and the op can fuse), else MAXIMUM/MINIMUM after the op."""
        clip = node.attrs.get("clip")
        fused, rest = _ACT.NONE, None
        if clip is not None:
            key = (float(clip[0]), float(clip[1]))
            if fusable and key in _FUSED:
                fused = _FUSED[key]
            else:
                rest = key
        if fusable:
            options["FusedActivationFunction"] = fused
        y = node.outputs[0]
        if rest is None:
            self.m.op(code, inputs, [self.out(node)], **options)
            return
        tmp = self.tmp_like(y)
        self.m.op(code, inputs, [tmp], **options)
        self.clamp(tmp, y, *rest)

    def clamp(self, src: int, y: str, lo: float, hi: float) -> None:
        """y = min(max(src, lo), hi) in real units (quantized bounds round like TFLite's activation range)."""
        t = self.m.tensors[src]
        steps = [(code, v) for code, v in (("MAXIMUM", lo), ("MINIMUM", hi)) if np.isfinite(v)]
        if not steps:
            self.reshape_op(src, self.new_act(y))
            return
        cur = src
        for k, (code, v) in enumerate(steps):
            c = self.scalar_like(f"{y}/{code.lower()}", v, t.dtype, t.quant)
            dst = self.new_act(y) if k == len(steps) - 1 else self.tmp_like(y, suffix="max")
            self.m.op(code, [cur, c], [dst])
            cur = dst

    def padding(self, x: str, xi: int, pads: list[int], kernel, strides, dilations, fill: str) -> tuple[int, int]:
        """SAME / VALID padding for explicit IR pads [t, l, b, r]; other pads become a PAD op first.
        fill: "zero" (real zero, i.e. the zero point) or "lowest" (for max pooling)."""
        _, _, h, w = self.T(x).shape
        same = [_same_pads(s, k, st, d) for s, k, st, d in zip((h, w), kernel, strides, dilations, strict=True)]
        t, l, b, r = pads
        if [(t, b), (l, r)] == same:
            return xi, _PADDING.SAME
        if not any(pads):
            return xi, _PADDING.VALID
        return self.pad_nhwc(x, xi, [(t, b), (l, r)], fill), _PADDING.VALID

    def pad_nhwc(self, x: str, xi: int, hw: list[tuple[int, int]], fill: str) -> int:
        src = self.m.tensors[xi]
        n, h, w, c = src.shape
        shape = (n, h + hw[0][0] + hw[0][1], w + hw[1][0] + hw[1][1], c)
        dst = self.m.tensor(f"{x}/padded", shape, src.dtype, quant=src.quant)
        paddings = self.int_const(f"{x}/paddings", [[0, 0], list(hw[0]), list(hw[1]), [0, 0]])
        if fill == "zero":
            self.m.op("PAD", [xi, paddings], [dst])
        else:
            low = np.finfo(np.float32).min if src.dtype.startswith("float") else np.iinfo(src.dtype).min
            value = self.const_value(f"{x}/pad_value", np.array(low, src.dtype), src.quant)
            self.m.op("PADV2", [xi, paddings, value], [dst])
        return dst


# ---- op handlers ----------------------------------------------------------------------------------------


def _conv(ex: _Exporter, node: Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    xt, wt = ex.T(x), ex.T(w)
    if len(xt.shape) != 4:
        raise UnsupportedOpError(f"Conv {node.name!r}: only 2-D convolutions export to TFLite "
                                 f"(input shape {xt.shape})")
    if not wt.is_const or (b and not ex.is_const(b)):
        raise UnsupportedOpError(f"Conv {node.name!r} with non-constant weights or bias")
    _, cin, _, _ = xt.shape
    cout, cig, kh, kw = wt.shape
    group = int(node.attrs.get("group", 1))
    strides = [int(s) for s in node.attrs.get("strides") or (1, 1)]
    dil = [int(d) for d in node.attrs.get("dilations") or (1, 1)]
    pads = resolve_auto_pad(node.attrs, xt.shape[2:], (kh, kw), strides, dil)
    xi, padding = ex.padding(x, ex.act(x, NHWC), pads, (kh, kw), strides, dil, "zero")
    depthwise = group == cin and cig == 1 and group > 1
    wperm = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)
    wi = ex.const(w, wperm)
    if b:
        bi = ex.const(b, None)
    else:  # LiteRT's integer kernels want a bias tensor: an explicit zero one works everywhere
        bq = None
        if xt.quant is not None and wt.quant is not None:
            ws = np.broadcast_to(np.asarray(wt.quant.scale, np.float32).reshape(-1), (cout,))
            bq = (np.float32(np.asarray(xt.quant.scale).reshape(-1)[0]) * ws, np.zeros(cout, np.int64), 0)
        bdtype = "float32" if xt.dtype.startswith("float") else "int32"
        bi = ex.const_value(f"{node.outputs[0]}/bias", np.zeros(cout, bdtype), bq)
    opts: dict[str, Any] = {"Padding": padding, "StrideH": strides[0], "StrideW": strides[1],
                            "DilationHFactor": dil[0], "DilationWFactor": dil[1]}
    if depthwise:
        ex.emit(node, "DEPTHWISE_CONV_2D", [xi, wi, bi], DepthMultiplier=cout // cin, **opts)
    else:  # group > 1 that is not depthwise: TFLite's CONV_2D infers groups from the filter depth
        ex.emit(node, "CONV_2D", [xi, wi, bi], **opts)


def _conv_transpose(ex: _Exporter, node: Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    xt, wt, yt = ex.T(x), ex.T(w), ex.T(node.outputs[0])
    if len(xt.shape) != 4 or not wt.is_const or (b and not ex.is_const(b)):
        raise UnsupportedOpError(f"ConvTranspose {node.name!r}: only 2-D with constant weights exports")
    if int(node.attrs.get("group", 1)) != 1 or any(int(d) != 1 for d in node.attrs.get("dilations") or ()):
        raise UnsupportedOpError(f"ConvTranspose {node.name!r} with groups or dilation has no TFLite mapping")
    strides = [int(s) for s in node.attrs.get("strides") or (1, 1)]
    pads = [int(p) for p in node.attrs.get("pads") or (0, 0, 0, 0)]
    _, _, h, w_ = xt.shape
    n, cout, oh, ow = yt.shape
    kh, kw = wt.shape[2:]
    begins = (pads[0], pads[1])
    fulls = ((h - 1) * strides[0] + kh, (w_ - 1) * strides[1] + kw)
    crop = None
    if begins == (0, 0):
        padding = _PADDING.VALID
    elif all(bg == max(0, f - o) // 2 for bg, f, o in zip(begins, fulls, (oh, ow), strict=True)):
        padding = _PADDING.SAME
    else:  # e.g. PyTorch's k3 s2 p1 output_padding 1: compute the uncropped output, then SLICE it
        padding = _PADDING.VALID
        crop = (max(fulls[0], begins[0] + oh), max(fulls[1], begins[1] + ow))
    y = node.outputs[0]
    full_shape = [n, *(crop or (oh, ow)), cout]
    inputs = [ex.int_const(f"{y}/output_shape", full_shape), ex.const(w, (1, 2, 3, 0)), ex.act(x, NHWC)]
    if b:
        inputs.append(ex.const(b, None))
    opts = {"Padding": padding, "StrideH": strides[0], "StrideW": strides[1]}
    if crop is None:
        ex.emit(node, "TRANSPOSE_CONV", inputs, fusable=False, **opts)
        return
    full = ex.m.tensor(f"{y}/uncropped", tuple(full_shape), yt.dtype, quant=ex._quant(yt.quant, None))
    ex.m.op("TRANSPOSE_CONV", inputs, [full], **opts)
    ex.emit(node, "SLICE", [full, ex.int_const(f"{y}/begin", [0, begins[0], begins[1], 0]),
                            ex.int_const(f"{y}/size", [n, oh, ow, cout])], fusable=False)


def _pool(ex: _Exporter, node: Node) -> None:
    x = node.inputs[0]
    xt, yt = ex.T(x), ex.T(node.outputs[0])
    if len(xt.shape) != 4:
        raise UnsupportedOpError(f"{node.op_type} {node.name!r}: only 2-D pooling exports to TFLite")
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    strides = [int(s) for s in node.attrs.get("strides") or (1, 1)]
    if any(int(d) != 1 for d in node.attrs.get("dilations") or ()):
        raise UnsupportedOpError(f"{node.op_type} {node.name!r} with dilation has no TFLite mapping")
    pads = resolve_auto_pad(node.attrs, xt.shape[2:], kernel, strides, (1, 1))
    avg = node.op_type == "AveragePool"
    ex.check_same_quant(node, x, node.outputs[0])
    xi = ex.act(x, NHWC)
    out_hw = yt.shape[2:]
    h, w = xt.shape[2:]
    same = [_same_pads(s, k, st, 1) for s, k, st in zip((h, w), kernel, strides, strict=True)]
    t, l, b, r = pads
    count_pad = avg and node.attrs.get("count_include_pad", 0) and any(pads)
    if [(t, b), (l, r)] == same and not count_pad and list(out_hw) == [-(-h // strides[0]), -(-w // strides[1])]:
        padding = _PADDING.SAME
    elif not any(pads) and list(out_hw) == [(h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1]:
        padding = _PADDING.VALID
    else:
        # Explicit pads (or ceil_mode overhang) as a PAD op: -inf-like for max, zeros when the average
        # counts the padding; an average that excludes padding only matches TFLite's SAME.
        extra = [max(0, (o - 1) * s + k - (n + p0 + p1))
                 for o, s, k, n, p0, p1 in zip(out_hw, strides, kernel, (h, w), (t, l), (b, r), strict=True)]
        if avg and not count_pad and (any(pads) or any(extra)):
            raise UnsupportedOpError(f"AveragePool {node.name!r}: pads {pads} (ceil_mode "
                                     f"{node.attrs.get('ceil_mode', 0)}) exclude padding in a way TFLite's "
                                     "SAME padding does not")
        if avg and any(extra):
            raise UnsupportedOpError(f"AveragePool {node.name!r} with ceil_mode overhang has no TFLite mapping")
        xi = ex.pad_nhwc(x, xi, [(t, b + extra[0]), (l, r + extra[1])], "zero" if avg else "lowest")
        padding = _PADDING.VALID
    ex.emit(node, "AVERAGE_POOL_2D" if avg else "MAX_POOL_2D", [xi], Padding=padding, StrideH=strides[0],
            StrideW=strides[1], FilterHeight=kernel[0], FilterWidth=kernel[1])


def _global_pool(ex: _Exporter, node: Node) -> None:
    x = node.inputs[0]
    xt = ex.T(x)
    if len(xt.shape) != 4:
        raise UnsupportedOpError(f"{node.op_type} {node.name!r}: only 4-D inputs export to TFLite")
    _, _, h, w = xt.shape
    xi = ex.act(x, NHWC)
    avg = node.op_type == "GlobalAveragePool"
    yt = ex.T(node.outputs[0])
    same_q = xt.quant is not None and yt.quant is not None and \
        np.array_equal(np.float32(xt.quant.scale), np.float32(yt.quant.scale)) and \
        np.array_equal(np.asarray(xt.quant.zero_point), np.asarray(yt.quant.zero_point))
    if avg and ex.quantized(x) and not same_q:  # AVERAGE_POOL_2D cannot requantize, MEAN can
        ex.emit(node, "MEAN", [xi, ex.int_const(f"{node.outputs[0]}/axes", [1, 2])], fusable=False,
                KeepDims=True)
        return
    if not avg:
        ex.check_same_quant(node, x, node.outputs[0])
    ex.emit(node, "AVERAGE_POOL_2D" if avg else "MAX_POOL_2D", [xi], Padding=_PADDING.VALID, StrideH=1,
            StrideW=1, FilterHeight=h, FilterWidth=w)


def _tfl_resize_matrix(n_in: int, n_out: int, linear: bool, align: bool, half: bool) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of TFLite's RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR on one axis
    (float32 coordinate arithmetic, as in the TFLite kernels)."""
    f = np.float32
    scale = f(n_in - 1) / f(n_out - 1) if align and n_out > 1 else f(n_in) / f(n_out)
    o = np.arange(n_out, dtype=f)
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if linear:
        src = (o + f(0.5)) * scale - f(0.5) if half else o * scale
        fl = np.floor(src)
        lo = np.maximum(fl, 0).astype(np.int64)
        hi = np.minimum(np.ceil(src), n_in - 1).astype(np.int64)
        frac = (src - fl).astype(np.float64)
        np.add.at(m, (rows, lo), 1 - frac)
        np.add.at(m, (rows, hi), frac)
    else:
        src = (o + f(0.5 if half else 0.0)) * scale
        idx = np.floor(src + f(0.5)) if align else np.floor(src)  # TfLiteRound: half away from zero, src>=0
        idx = np.minimum(idx.astype(np.int64), n_in - 1)
        if half:
            idx = np.maximum(idx, 0)
        m[rows, idx] = 1.0
    return m


def _resize(ex: _Exporter, node: Node) -> None:
    x = node.inputs[0]
    xt, yt = ex.T(x), ex.T(node.outputs[0])
    mode = node.attrs.get("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if len(xt.shape) != 4 or mode not in ("nearest", "linear") or tuple(yt.shape[:2]) != tuple(xt.shape[:2]):
        raise UnsupportedOpError(f"Resize {node.name!r}: only nearest/linear resizing of H and W exports "
                                 f"(mode {mode!r}, {xt.shape} -> {yt.shape})")
    ex.check_same_quant(node, x, node.outputs[0])
    _, _, h, w = xt.shape
    oh, ow = yt.shape[2:]
    # Find the TFLite flags computing the same function: run our kernel on a probe image and compare it
    # with TFLite's interpolation for each flag combination (robust to every ONNX coordinate mode).
    probe = np.random.default_rng(0).standard_normal((1, 1, h, w)).astype(np.float32)
    args = [probe] + [ex.T(i).data if i else None for i in node.inputs[1:]]
    if any(a is None and i for a, i in zip(args[1:], node.inputs[1:], strict=True)):
        raise UnsupportedOpError(f"Resize {node.name!r} with non-constant scales/sizes")
    sizes_idx = 3
    if len(args) > sizes_idx and args[sizes_idx] is not None and np.size(args[sizes_idx]) == 4:
        args[sizes_idx] = np.array([1, 1, oh, ow], np.int64)
    elif len(args) > 2 and args[2] is not None and np.size(args[2]) == 4:
        args[2] = np.asarray(args[2], np.float32).copy()
        args[2][:2] = 1
    attrs = {k: v for k, v in node.attrs.items() if k != "clip"}
    want = get_op("Resize").kernel(args, attrs)[0][0, 0].astype(np.float64)
    linear = mode == "linear"
    flags = None
    for align, half in ((False, False), (False, True), (True, False)):
        got = _tfl_resize_matrix(h, oh, linear, align, half) @ probe[0, 0] @ \
            _tfl_resize_matrix(w, ow, linear, align, half).T
        if got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()):
            flags = (align, half)
            break
    if flags is None:
        raise UnsupportedOpError(f"Resize {node.name!r}: coordinate mode "
                                 f"{node.attrs.get('coordinate_transformation_mode')!r} / nearest mode "
                                 f"{node.attrs.get('nearest_mode')!r} matches no TFLite resize")
    size = ex.int_const(f"{node.outputs[0]}/size", [oh, ow])
    ex.emit(node, "RESIZE_BILINEAR" if linear else "RESIZE_NEAREST_NEIGHBOR", [ex.act(x, NHWC), size],
            fusable=False, AlignCorners=flags[0], HalfPixelCenters=flags[1])


def _fc_weights(ex: _Exporter, node: Node, b: str, trans: bool, a: str) -> int:
    """Constant B of A @ B (or A @ B.T when ``trans``) as FULLY_CONNECTED weights (N, K)."""
    bt = ex.T(b)
    alpha = float(node.attrs.get("alpha", 1.0)) if node.op_type == "Gemm" else 1.0
    colperm = ex.colperm.get(a)
    if trans and alpha == 1.0 and colperm is None:
        return ex.const(b, None)
    w = bt.data if trans else bt.data.T
    q = bt.quant
    if q is not None and q.axis is not None and not trans:
        q = QuantInfo(q.scale, q.zero_point, 1 - q.axis, q.bits)
    if alpha != 1.0:
        if q is not None:
            raise UnsupportedOpError(f"Gemm {node.name!r}: alpha={alpha} on quantized weights")
        w = w * np.asarray(alpha, w.dtype)
    if colperm is not None:
        w = w[:, colperm]
    return ex.const_value(f"{b}/fc", np.ascontiguousarray(w), ex._quant(q, None))


def _gemm(ex: _Exporter, node: Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    y = node.outputs[0]
    if node.attrs.get("transA", 0):
        raise UnsupportedOpError(f"Gemm {node.name!r} with transA=1 has no TFLite mapping")
    trans_b = bool(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    n = ex.T(y).shape[1]
    ai = ex.tfl[(a, ex.perm[a])] if a in ex.colperm else ex.act(a, _ident(2))
    bias, add_c = -1, ""
    if c:
        ct = ex.T(c)
        if ct.is_const and ct.data.size == n and (ct.data.ndim == 1 or ct.data.shape[-1] == n):
            v = ct.data.reshape(n)
            if beta != 1.0:
                if ct.quant is not None:
                    raise UnsupportedOpError(f"Gemm {node.name!r}: beta={beta} on a quantized bias")
                v = v * np.asarray(beta, v.dtype)
            bias = ex.const_value(c if beta == 1.0 and ct.data.ndim == 1 else f"{c}/bias", v,
                                  ex._quant(ct.quant, None))
        elif beta == 1.0:
            add_c = c
        else:
            raise UnsupportedOpError(f"Gemm {node.name!r}: beta={beta} with a non-constant C")
    if ex.is_const(b):
        inputs, code, opts = [ai, _fc_weights(ex, node, b, trans_b, a), bias], "FULLY_CONNECTED", {}
    else:
        if alpha != 1.0:
            raise UnsupportedOpError(f"Gemm {node.name!r}: alpha={alpha} with non-constant B")
        inputs, code, opts = [ai, ex.act(b, _ident(2))], "BATCH_MATMUL", {"AdjX": False, "AdjY": trans_b}
        if bias >= 0:
            add_c = c
    if not add_c:
        ex.emit(node, code, inputs, fusable=code == "FULLY_CONNECTED", **opts)
        return
    if ex.T(y).quant is not None:
        raise UnsupportedOpError(f"Gemm {node.name!r}: a quantized Gemm needs a constant bias of N values")
    tmp = ex.tmp_like(y, suffix="matmul")
    ex.m.op(code, inputs, [tmp], **opts)
    ex.emit(node, "ADD", [tmp, ex.operand(add_c, _ident(2))])


def _matmul(ex: _Exporter, node: Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    ra = ex.rank(a)
    if ex.is_const(b) and ex.T(b).data.ndim == 2 and ra >= 2:
        ai = ex.tfl[(a, ex.perm[a])] if a in ex.colperm else ex.act(a, _ident(ra))
        ex.emit(node, "FULLY_CONNECTED", [ai, _fc_weights(ex, node, b, False, a), -1], KeepNumDims=ra > 2)
        return
    rb = ex.rank(b)
    if ra < 2 or rb < 2:
        raise UnsupportedOpError(f"MatMul {node.name!r} with a 1-D operand has no TFLite mapping")
    bi = ex.const(b, None) if ex.is_const(b) else ex.act(b, _ident(rb))
    ex.emit(node, "BATCH_MATMUL", [ex.act(a, _ident(ra)), bi], fusable=False, AdjX=False, AdjY=False)


def _binary(ex: _Exporter, node: Node) -> None:
    code = BINARY[node.op_type]
    y = node.outputs[0]
    p = ex.perm[y]
    ins = [i for i in node.inputs if i]
    if not ins:
        raise UnsupportedOpError(f"{node.op_type} {node.name!r} has no inputs")
    opts: dict[str, Any] = {}
    if code in ("ADD", "SUB") and ex.T(y).dtype == "int16":
        opts["PotScaleInt16"] = False  # general int16 scales, not only powers of two
    fusable = code in ("ADD", "SUB", "MUL", "DIV")
    operands = [ex.operand(i, p) for i in ins]
    if len(operands) == 1:  # variadic Max/Min/Sum of one input
        ex.clamp(operands[0], y, *node.attrs.get("clip", (-np.inf, np.inf)))
        return
    cur = operands[0]
    for k, nxt in enumerate(operands[1:-1]):
        tmp = ex.tmp_like(y, suffix=f"partial{k}")
        ex.m.op(code, [cur, nxt], [tmp], **({"FusedActivationFunction": _ACT.NONE, **opts} if fusable else opts))
        cur = tmp
    ex.emit(node, code, [cur, operands[-1]], fusable=fusable, **opts)


def _prelu(ex: _Exporter, node: Node) -> None:
    p = ex.perm[node.outputs[0]]
    ex.m.op("PRELU", [ex.operand(node.inputs[0], p), ex.operand(node.inputs[1], p)], [ex.out(node)])


def _concat(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    p = ex.perm[y]
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(p))
    ins = [ex.operand(i, p) for i in node.inputs if i]
    ex.emit(node, "CONCATENATION", ins, Axis=p.index(axis))


def _unary(ex: _Exporter, node: Node) -> None:
    code = UNARY[node.op_type]
    y = node.outputs[0]
    xi = ex.act(node.inputs[0], ex.perm[y])
    if node.op_type == "Relu" or "clip" not in node.attrs:
        ex.m.op(code, [xi], [ex.out(node)])
        return
    tmp = ex.tmp_like(y)
    ex.m.op(code, [xi], [tmp])
    ex.clamp(tmp, y, *node.attrs["clip"])


def _clip(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    lo, hi = -np.inf, np.inf
    for k, default in ((1, -np.inf), (2, np.inf)):
        name = node.inputs[k] if len(node.inputs) > k else ""
        v = node.attrs.get("min" if k == 1 else "max", default) if not name else ex.T(name).data
        if v is None:
            raise UnsupportedOpError(f"Clip {node.name!r} with non-constant bounds")
        v = float(np.asarray(v).reshape(-1)[0])
        lo, hi = (v, hi) if k == 1 else (lo, v)
    if "clip" in node.attrs:
        lo, hi = max(lo, float(node.attrs["clip"][0])), min(hi, float(node.attrs["clip"][1]))
    xi = ex.act(node.inputs[0], ex.perm[y])
    code = {(0.0, float("inf")): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi))
    xt, yt = ex.T(node.inputs[0]), ex.T(y)
    if code is not None:
        ex.m.op(code, [xi], [ex.out(node)])
        return
    if xt.quant is not None and yt.quant is not None and not (
            np.array_equal(xt.quant.scale, yt.quant.scale) and np.array_equal(xt.quant.zero_point,
                                                                              yt.quant.zero_point)):
        tmp = ex.tmp_like(y, suffix="requant")  # MAXIMUM/MINIMUM compare raw integers: requantize first
        ex.m.op("QUANTIZE", [xi], [tmp])
        xi = tmp
    ex.clamp(xi, y, lo, hi)


def _leaky_relu(ex: _Exporter, node: Node) -> None:
    xi = ex.act(node.inputs[0], ex.perm[node.outputs[0]])
    ex.m.op("LEAKY_RELU", [xi], [ex.out(node)], Alpha=float(node.attrs.get("alpha", 0.01)))


def _gelu(ex: _Exporter, node: Node) -> None:
    approx = node.attrs.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    xi = ex.act(node.inputs[0], ex.perm[node.outputs[0]])
    ex.m.op("GELU", [xi], [ex.out(node)], Approximate=approx == "tanh")


def _float_only(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    if not ex.T(y).dtype.startswith("float"):
        raise UnsupportedOpError(f"{node.op_type} {node.name!r} on {ex.T(y).dtype} tensors has no TFLite mapping")
    x = node.inputs[0]
    p = ex.perm[y]
    xi = ex.act(x, p)
    if node.op_type == "Silu":  # x * sigmoid(x)
        tmp = ex.tmp_like(y, suffix="sigmoid")
        ex.m.op("LOGISTIC", [xi], [tmp])
        ex.m.op("MUL", [xi, tmp], [ex.out(node)], FusedActivationFunction=_ACT.NONE)
    else:  # Reciprocal
        one = ex.const_value(f"{y}/one", np.array(1.0, ex.T(y).dtype))
        ex.m.op("DIV", [one, xi], [ex.out(node)], FusedActivationFunction=_ACT.NONE)


def _identity(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    ex.check_same_quant(node, node.inputs[0], y)
    ex.tfl[(y, ex.perm[y])] = ex.act(node.inputs[0], ex.perm[y])


def _transpose(ex: _Exporter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ex.check_same_quant(node, x, y)
    if ex.is_const(x):  # not folded (e.g. a large constant): emit its transposed value
        ex.tfl[(y, ex.perm[y])] = ex.const_value(y, np.transpose(ex.T(x).data, ex._tperm(node)))
        return
    ex.tfl[(y, ex.perm[y])] = ex.tfl[(x, ex.perm[x])]  # same data, read in another layout: no op


def _reshape(ex: _Exporter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ex.check_same_quant(node, x, y)
    src = ex.tfl[(x, ex.perm[x])] if y in ex.colperm else ex.act_mem(x)
    ex.reshape_op(src, ex.out(node))


def _pad(ex: _Exporter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ex.check_same_quant(node, x, y)
    p = ex.perm[y]
    r = len(p)
    pads = ex.T(node.inputs[1]).data if len(node.inputs) > 1 and node.inputs[1] else node.attrs.get("pads")
    axes_in = node.inputs[3] if len(node.inputs) > 3 else ""
    if pads is None or (axes_in and not ex.is_const(axes_in)):
        raise UnsupportedOpError(f"Pad {node.name!r} with non-constant pads")
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    axes = [norm_axis(int(a), r) for a in ex.T(axes_in).data.reshape(-1)] if axes_in else list(range(r))
    width = [(0, 0)] * r
    for k, a in enumerate(axes):
        width[a] = (pads[k], pads[len(axes) + k])
    if any(v < 0 for wd in width for v in wd):
        raise UnsupportedOpError(f"Pad {node.name!r} with negative pads (cropping) has no TFLite mapping")
    paddings = ex.int_const(f"{y}/paddings", [list(width[a]) for a in p])
    xi = ex.act(x, p)
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "reflect":
        ex.m.op("MIRROR_PAD", [xi, paddings], [ex.out(node)], Mode=tflite.MirrorPadMode.REFLECT)
        return
    if mode != "constant":
        raise UnsupportedOpError(f"Pad {node.name!r} in mode {mode!r} has no TFLite mapping")
    value = node.inputs[2] if len(node.inputs) > 2 else ""
    xt = ex.T(x)
    q = ex._quant(xt.quant, p)
    if value:
        vt = ex.T(value)
        if vt.data is None or vt.data.size != 1:
            raise UnsupportedOpError(f"Pad {node.name!r} with a non-constant or non-scalar value")
        v = np.asarray(vt.data).reshape(-1)[0]
        if q is None or np.asarray(v).dtype.kind == "f" and vt.quant is None and xt.dtype.startswith("float"):
            vi = -1 if float(v) == 0.0 else ex.const_value(f"{y}/value", np.array(v, xt.dtype))
        elif np.asarray(v).dtype.kind == "f":  # real value for a quantized tensor
            raw = _quantize_bound(float(v), xt.dtype, float(q[0][0]), int(q[1][0]))
            vi = -1 if raw == int(q[1][0]) else ex.const_value(f"{y}/value", np.array(raw, xt.dtype), q)
        else:  # raw integer in the value tensor's (else the input's) quantization
            vq = ex._quant(vt.quant, None) or q
            same = vq[0][0] == q[0][0] and vq[1][0] == q[1][0]
            vi = -1 if same and int(v) == int(q[1][0]) else ex.const_value(f"{y}/value", np.array(v, xt.dtype), vq)
        if vi >= 0:
            ex.m.op("PADV2", [xi, paddings, vi], [ex.out(node)])
            return
    ex.m.op("PAD", [xi, paddings], [ex.out(node)])


def _softmax(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    x, beta = ex.beta.get(node.name, (node.inputs[0], 1.0))
    xi = ex.act(x, ex.perm[y])
    if node.op_type == "Softmax":
        ex.m.op("SOFTMAX", [xi], [ex.out(node)], Beta=beta)
    else:
        ex.m.op("LOG_SOFTMAX", [xi], [ex.out(node)])


def _reduce_axes(ex: _Exporter, node: Node) -> list[int]:
    r = ex.rank(node.inputs[0])
    raw = None
    if len(node.inputs) > 1 and node.inputs[1]:
        v = ex.T(node.inputs[1]).data
        if v is None:
            raise UnsupportedOpError(f"{node.op_type} {node.name!r} with non-constant axes")
        raw = [int(a) for a in np.asarray(v).reshape(-1)]
    elif node.attrs.get("axes") is not None:
        raw = [int(a) for a in node.attrs["axes"]]
    if not raw:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(r))
    return sorted({norm_axis(a, r) for a in raw})


def _reduce(ex: _Exporter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    axes = _reduce_axes(ex, node)
    px = ex.perm[x] if not ex.is_const(x) else _ident(ex.rank(x))
    if not axes:
        _identity(ex, node)
        return
    xi = ex.act(x, px)
    ax = ex.int_const(f"{y}/axes", sorted(px.index(a) for a in axes))
    ex.emit(node, REDUCE[node.op_type], [xi, ax], fusable=False, KeepDims=bool(node.attrs.get("keepdims", 1)))


def _quantize(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    xi = ex.act(ex.requant.get(node.name, node.inputs[0]), ex.perm[y])  # int -> int: one requantizing op
    ex.m.op("QUANTIZE" if node.op_type == "QuantizeLinear" else "DEQUANTIZE", [xi], [ex.out(node)])


def _slice(ex: _Exporter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ex.check_same_quant(node, x, y)
    params = [None] + [ex.T(i).data if i else None for i in node.inputs[1:]]
    if any(v is None and i for v, i in zip(params[1:], node.inputs[1:], strict=True)):
        raise UnsupportedOpError(f"Slice {node.name!r} with non-constant starts/ends/axes/steps")
    shape = ex.T(x).shape
    ranges = [sl.indices(d) for sl, d in zip(slice_index(shape, params), shape, strict=True)]
    if any(step < 0 for _, _, step in ranges):
        raise UnsupportedOpError(f"Slice {node.name!r} with a negative step has no TFLite export mapping")
    p = ex.perm[y]
    begin, end, strides = ([r[k] for r in (ranges[a] for a in p)] for k in range(3))
    ex.m.op("STRIDED_SLICE", [ex.act(x, p), ex.int_const(f"{y}/begin", begin), ex.int_const(f"{y}/end", end),
                              ex.int_const(f"{y}/strides", strides)], [ex.out(node)])


def _split(ex: _Exporter, node: Node) -> None:
    x = node.inputs[0]
    outs = node.outputs
    if any(not o for o in outs):
        raise UnsupportedOpError(f"Split {node.name!r} with an unused output")
    for o in outs:
        ex.check_same_quant(node, x, o)
    shape = ex.T(x).shape
    axis = norm_axis(int(node.attrs.get("axis", 0)), len(shape))
    sizes_in = ex.T(node.inputs[1]).data if len(node.inputs) > 1 and node.inputs[1] else None
    if len(node.inputs) > 1 and node.inputs[1] and sizes_in is None:
        raise UnsupportedOpError(f"Split {node.name!r} with non-constant sizes")
    sizes = split_sizes(shape[axis], [None, sizes_in], node.attrs) if sizes_in is not None or \
        "num_outputs" in node.attrs else [ex.T(o).shape[axis] for o in outs]
    p = ex.perm[outs[0]]
    ex.m.op("SPLIT_V", [ex.act(x, p), ex.int_const(f"{outs[0]}/sizes", sizes),
                        ex.int_const(f"{outs[0]}/axis", np.int32(p.index(axis)))],
            [ex.new_act(o) for o in outs], NumSplits=len(outs))


def _hard_sigmoid(ex: _Exporter, node: Node) -> None:
    """clip(alpha * x + beta, 0, 1) in float (integer HardSigmoid is a table, see _lut)."""
    x, y = node.inputs[0], node.outputs[0]
    dt = ex.T(y).dtype
    if not dt.startswith("float"):
        raise UnsupportedOpError(f"HardSigmoid {node.name!r} on {dt} tensors has no TFLite mapping")
    xi = ex.act(x, ex.perm[y])
    scaled, shifted = ex.tmp_like(y, suffix="scaled"), ex.tmp_like(y, suffix="shifted")
    alpha = ex.const_value(f"{y}/alpha", np.array(node.attrs.get("alpha", 0.2), dt))
    beta = ex.const_value(f"{y}/beta", np.array(node.attrs.get("beta", 0.5), dt))
    ex.m.op("MUL", [xi, alpha], [scaled], FusedActivationFunction=_ACT.NONE)
    ex.m.op("ADD", [scaled, beta], [shifted], FusedActivationFunction=_ACT.NONE)
    lo, hi = node.attrs.get("clip", (0.0, 1.0))
    ex.clamp(shifted, y, max(0.0, float(lo)), min(1.0, float(hi)))


def _batch_norm(ex: _Exporter, node: Node) -> None:
    """A BatchNormalization the canonicalizer could not fold into a Conv: x * k + (bias - mean * k)."""
    x, y = node.inputs[0], node.outputs[0]
    params = [ex.T(i).data for i in node.inputs[1:5]]
    dt = ex.T(y).dtype
    if any(v is None for v in params) or not dt.startswith("float"):
        raise UnsupportedOpError(f"BatchNormalization {node.name!r} with non-constant statistics or on {dt}")
    scale, bias, mean, var = (np.asarray(v, np.float64) for v in params)
    k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    r = ex.rank(x)
    shape = (1, -1) + (1,) * (r - 2)
    p = ex.perm[y]
    kk = ex.const_value(f"{y}/scale", np.transpose(k.astype(dt).reshape(shape), p))
    bb = ex.const_value(f"{y}/shift", np.transpose((bias - mean * k).astype(dt).reshape(shape), p))
    tmp = ex.tmp_like(y, suffix="scaled")
    ex.m.op("MUL", [ex.act(x, p), kk], [tmp], FusedActivationFunction=_ACT.NONE)
    ex.emit(node, "ADD", [tmp, bb])


def _lut(ex: _Exporter, node: Node) -> None:
    """Integer activation defined by a table (opennpu/quant/lut.py) as GATHER(table, CAST(x) - qmin): exact,
    and the only TFLite form of an arbitrary integer-to-integer function."""
    x, y = node.inputs[0], node.outputs[0]
    xt, yt = ex.T(x), ex.T(y)
    (si, zi), (so, zo) = ((float(np.asarray(t.quant.scale).reshape(-1)[0]),
                           int(np.asarray(t.quant.zero_point).reshape(-1)[0]) if np.size(t.quant.zero_point) else 0)
                          for t in (xt, yt))
    table = lut_table(node.op_type, node.attrs, si, zi, so, zo, xt.dtype, yt.dtype)
    if "clip" in node.attrs:
        lo, hi = (_quantize_bound(float(v), yt.dtype, so, zo) for v in node.attrs["clip"])
        table = np.clip(table, lo, hi).astype(yt.dtype)
    p = ex.perm[y]
    xi = ex.act(x, p)
    shape = ex.m.tensors[xi].shape
    idx32 = ex.m.tensor(f"{y}/codes", shape, "int32")
    ex.m.op("CAST", [xi], [idx32], InDataType=_TYPES[xt.dtype], OutDataType=_TYPES["int32"])
    idx = ex.m.tensor(f"{y}/index", shape, "int32")
    qmin = int(np.iinfo(xt.dtype).min)
    ex.m.op("ADD", [idx32, ex.int_const(f"{y}/offset", np.int32(-qmin))], [idx], FusedActivationFunction=_ACT.NONE)
    tab = ex.const_value(f"{y}/table", table, ex._quant(yt.quant, None))
    ex.m.op("GATHER", [tab, idx], [ex.out(node)], Axis=0, BatchDims=0)


def _cast(ex: _Exporter, node: Node) -> None:
    y = node.outputs[0]
    xi = ex.act(node.inputs[0], ex.perm[y])
    ex.m.op("CAST", [xi], [ex.out(node)], InDataType=_TYPES[ex.T(node.inputs[0]).dtype],
            OutDataType=_TYPES[ex.T(y).dtype])


_HANDLERS: dict[str, Callable[[_Exporter, Node], None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Resize": _resize,
    "Gemm": _gemm,
    "MatMul": _matmul,
    **{op: _binary for op in BINARY},
    "PRelu": _prelu,
    "Concat": _concat,
    **{op: _unary for op in UNARY},
    "Clip": _clip,
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Silu": _float_only,
    "Reciprocal": _float_only,
    "Identity": _identity,
    "Transpose": _transpose,
    **{op: _reshape for op in RESHAPES},
    "Pad": _pad,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    **{op: _reduce for op in REDUCE},
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _quantize,
    "Cast": _cast,
    "Slice": _slice,
    "Split": _split,
    "HardSigmoid": _hard_sigmoid,
    "BatchNormalization": _batch_norm,
}

SUPPORTED_OPS = frozenset(_HANDLERS)

__all__ = ["SUPPORTED_OPS", "export_tflite"]
