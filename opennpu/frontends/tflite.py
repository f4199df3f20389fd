"""TFLite flatbuffer -> IR importer (no TensorFlow needed; parses with the ``tflite`` schema package).

Layout: TFLite is NHWC, the IR is NCHW with ONNX op semantics. Every spatial op (convolutions, pools,
resizes) is imported as ``Transpose(NHWC->NCHW) -> op -> Transpose(NCHW->NHWC)`` so that every TFLite
tensor keeps its name, shape and layout in the IR. Weights are re-laid out as constants (OIHW for Conv,
IOHW for ConvTranspose) and keep their TFLite names; per-channel quantization axes are remapped with them.
Element-wise and data-movement ops stay in NHWC. The ``cancel_transposes`` pass (ir/passes/layout.py) later
sinks and cancels the transposes so that conv chains run in NCHW.

Quantized models (int8/uint8/int16): the representation is "quantized tensors", not QDQ pairs. A tensor
keeps its TFLite storage dtype (``int8``...) and carries ``Tensor.quant = QuantInfo(scale, zero_point,
axis)``, meaning ``real = scale * (q - zero_point)`` (``axis`` None = per tensor). Ops keep their float
(ONNX) meaning on the *real* values: an int8 Conv reads int8 x / int8 weights / int32 bias (bias scale =
x_scale * w_scale, as TFLite requires) and writes its output quantized with the output tensor's QuantInfo.
Fused clamps (``attrs["clip"]``) are in real units. TFLite ``QUANTIZE`` becomes ``QuantizeLinear``
(float -> int) or ``DequantizeLinear`` + ``QuantizeLinear`` (int -> int requantization), ``DEQUANTIZE``
of an integer tensor becomes ``DequantizeLinear``; both carry scale/zero point as constant inputs and
``axis`` as an attribute. fp16 weights (``DEQUANTIZE`` of a FLOAT16 constant) become ``Cast`` to float32,
which shape inference folds into float32 constants.

Robustness: the flatbuffer is untrusted. Every vector length is bounded by the file size, every buffer
index/offset/size is checked against the file, and constant byte sizes are checked against shapes before
any array is built; anything the generated accessors raise on garbage becomes ModelFormatError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import GraphError, ModelFormatError, OpenNPUError, UnsupportedOpError
from ..ir.graph import Graph, QuantInfo, Tensor

try:
    import tflite
except ImportError as e:  # pragma: no cover - tflite is a core dependency
    raise ImportError("the TFLite frontend needs the 'tflite' package (pip install tflite)") from e

MAX_RANK = 8
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

_DTYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
}
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_OPT = tflite.BuiltinOptions
_ACT = tflite.ActivationFunctionType
_CUSTOM = tflite.BuiltinOperator.CUSTOM
# Custom ops we know the semantics of (MediaPipe's transposed conv with bias).
_KNOWN_CUSTOM = {"Convolution2DTransposeBias"}


def import_tflite(data: bytes, name: str = "model") -> Graph:
    """Parse a .tflite flatbuffer (subgraph 0) into a raw IR graph (see the module docstring)."""
    data = bytes(data)
    if len(data) < 8:
        raise ModelFormatError(f"TFLite file is too short ({len(data)} bytes)")
    if data[4:8] != b"TFL3":
        raise ModelFormatError(f"not a TFLite flatbuffer: file identifier is {data[4:8]!r}, expected b'TFL3'")
    try:
        return _Importer(data, name).run()
    except OpenNPUError:
        raise
    except (
        struct.error,
        IndexError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        OverflowError,
        UnicodeDecodeError,
        RecursionError,
        MemoryError,
        AssertionError,
    ) as e:
        raise ModelFormatError(f"corrupt TFLite flatbuffer: {type(e).__name__}: {e}") from None


# ---- small helpers -----------------------------------------------------------------------------------


def _nperm(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding (extra pixel at the end), as explicit (begin, end)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size)
    return total // 2, total - total // 2


class _Importer:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.g = Graph(name=name)
        self.model = tflite.Model.GetRootAs(data, 0)
        self.tensor_names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.nchw_cache: dict[str, str] = {}
        self.weight_cache: dict[tuple[int, tuple[int, ...]], str] = {}
        self.op_index = 0

    # ---- bounded access ----------------------------------------------------------------------------
    def _len(self, n: int, what: str, elem: int = 4) -> int:
        if n < 0 or n * elem > len(self.data):
            raise ModelFormatError(
                f"{what} claims {n} entries, more than the {len(self.data)}-byte file holds"
            )
        return n

    @staticmethod
    def _str(b: bytes | None) -> str:
        return b.decode("utf-8", errors="replace") if b else ""

    # ---- top level ---------------------------------------------------------------------------------
    def run(self) -> Graph:
        m = self.model
        nsub = self._len(m.SubgraphsLength(), "subgraph list")
        if nsub < 1:
            raise ModelFormatError("TFLite model has no subgraphs")
        self.nbuffers = self._len(m.BuffersLength(), "buffer list")
        self.ncodes = self._len(m.OperatorCodesLength(), "operator code list")
        self._verify_tables()
        sg = m.Subgraphs(0)
        if sg is None:
            raise ModelFormatError("TFLite subgraph 0 is missing")
        self.sg = sg
        self.ntensors = self._len(sg.TensorsLength(), "tensor list")
        self._read_tensors()
        g = self.g
        g.inputs = [self._tref(int(i), "subgraph input") for i in self._ivec(sg, "Inputs", "subgraph inputs")]
        g.outputs = [
            self._tref(int(i), "subgraph output") for i in self._ivec(sg, "Outputs", "subgraph outputs")
        ]
        for name in g.inputs:
            if g.tensors[name].is_const:
                raise ModelFormatError(f"graph input {name!r} is a constant")
        nops = self._len(sg.OperatorsLength(), "operator list")
        ops = []
        self.uses: dict[int, int] = {}
        for i in range(nops):
            op = sg.Operators(i)
            if op is None:
                raise ModelFormatError(f"operator {i} is missing")
            ops.append(op)
            for t in self._ivec(op, "Inputs", f"operator {i} inputs"):
                self.uses[int(t)] = self.uses.get(int(t), 0) + 1
        for i, op in enumerate(ops):
            self.op_index = i
            self._import_op(op)
        for name in g.inputs:  # graph inputs carry declared shapes; dynamic dims are -1
            t = g.tensors[name]
            if t.shape is not None and any(d < 0 for d in t.shape):
                t.dim_names = tuple(
                    ("batch" if k == 0 else f"{name}_d{k}") if d < 0 else None for k, d in enumerate(t.shape)
                )
        try:
            g.toposort()
        except GraphError as e:
            raise ModelFormatError(f"TFLite graph is malformed: {e}") from None
        version = int(m.Version())
        g.metadata.update(
            {
                "format": "tflite",
                "version": version,
                "description": self._str(m.Description()),
                "layout": "NHWC",
            }
        )
        return g

    def _verify_tables(self) -> None:
        """Touch every buffer and operator-code table once, so damage in unused ones is caught too
        (the flatbuffer carries no length or checksum; this is what LiteRT's verifier also rejects)."""
        m = self.model
        for i in range(self.nbuffers):
            buf = m.Buffers(i)
            if buf is None:
                raise ModelFormatError(f"buffer {i} is missing")
            n = self._len(buf.DataLength(), f"buffer {i}", 1)
            if n:
                start = buf._tab.Vector(buf._tab.Offset(4))
                if start < 0 or start + n > len(self.data):
                    raise ModelFormatError(f"buffer {i} ({n} bytes) lies outside the file")
            buf.Offset(), buf.Size()
        for i in range(self.ncodes):
            oc = m.OperatorCodes(i)
            if oc is None:
                raise ModelFormatError(f"operator code {i} is missing")
            oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.CustomCode(), oc.Version()
        for i in range(self._len(m.MetadataLength(), "metadata list")):
            md = m.Metadata(i)
            if md is None:
                raise ModelFormatError(f"metadata entry {i} is missing")
            md.Name(), md.Buffer()

    def _ivec(self, obj: Any, field: str, what: str) -> np.ndarray:
        n = self._len(getattr(obj, field + "Length")(), what)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        arr = getattr(obj, field + "AsNumpy")()
        if not isinstance(arr, np.ndarray) or arr.size != n:
            raise ModelFormatError(f"{what}: malformed vector")
        return arr.astype(np.int64)

    # ---- tensors -----------------------------------------------------------------------------------
    def _read_tensors(self) -> None:
        used: set[str] = set()
        for i in range(self.ntensors):
            t = self.sg.Tensors(i)
            if t is None:
                raise ModelFormatError(f"tensor {i} is missing")
            name = self._str(t.Name()) or f"t{i}"
            if name in used:
                name = f"{name}_{i}"
            used.add(name)
            self.tensor_names.append(name)
            self.name_index[name] = i
            ttype = int(t.Type())
            if ttype not in _DTYPES:
                raise UnsupportedOpError(
                    f"tensor {name!r} has unsupported type {_TYPE_NAMES.get(ttype, ttype)}"
                )
            dtype = _DTYPES[ttype]
            shape = tuple(int(d) for d in self._ivec(t, "Shape", f"shape of tensor {name!r}"))
            if len(shape) > MAX_RANK:
                raise ModelFormatError(f"tensor {name!r} has rank {len(shape)} (max {MAX_RANK})")
            if any(d < 0 for d in shape):
                raise ModelFormatError(f"tensor {name!r} has negative dimension in shape {shape}")
            sig = self._ivec(t, "ShapeSignature", f"shape signature of tensor {name!r}")
            if sig.size:
                if sig.size != len(shape) or any(s != d and s != -1 for s, d in zip(sig, shape, strict=True)):
                    raise ModelFormatError(
                        f"tensor {name!r}: shape_signature {sig.tolist()} contradicts {shape}"
                    )
                shape = tuple(int(s) for s in sig)
            if t.Sparsity() is not None:
                raise UnsupportedOpError(
                    f"tensor {name!r} is sparse (DENSIFY): sparse TFLite tensors are not supported yet"
                )
            quant = self._quant(t, name, shape)
            value = self._buffer(int(t.Buffer()), name, shape, dtype)
            if (
                value is not None
                and quant is not None
                and quant.axis is not None
                and value.ndim <= quant.axis
            ):
                raise ModelFormatError(f"tensor {name!r}: quantized_dimension {quant.axis} out of range")
            self.g.add_tensor(Tensor(name, shape, dtype, value, quant))

    def _quant(self, t: Any, name: str, shape: tuple[int, ...]) -> QuantInfo | None:
        q = t.Quantization()
        if q is None:
            return None
        if int(q.DetailsType()) != 0:
            raise UnsupportedOpError(f"tensor {name!r} uses custom quantization details")
        ns = self._len(q.ScaleLength(), f"scales of {name!r}")
        if ns == 0:
            return None
        scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32).reshape(-1)
        nz = self._len(q.ZeroPointLength(), f"zero points of {name!r}", 8)
        zp = np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64).reshape(-1) if nz else np.zeros(ns, np.int64)
        if scale.size != ns or zp.size != ns:
            raise ModelFormatError(f"tensor {name!r}: {ns} scales but {zp.size} zero points")
        if not np.all(np.isfinite(scale)):
            raise ModelFormatError(f"tensor {name!r} has non-finite quantization scales")
        axis: int | None = None
        if ns > 1:
            axis = int(q.QuantizedDimension())
            if not 0 <= axis < len(shape) or shape[axis] != ns:
                raise ModelFormatError(
                    f"tensor {name!r}: {ns} per-channel scales do not match dimension {axis} of shape {shape}"
                )
        return QuantInfo(scale, zp, axis)

    def _buffer(self, idx: int, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
        if idx == 0:
            return None  # buffer 0 is the empty sentinel: a computed tensor
        if not 0 <= idx < self.nbuffers:
            raise ModelFormatError(
                f"tensor {name!r} refers to buffer {idx}, but the file has {self.nbuffers}"
            )
        buf = self.model.Buffers(idx)
        if buf is None:
            raise ModelFormatError(f"buffer {idx} is missing")
        off, size = int(buf.Offset()), int(buf.Size())
        if off > 1:  # large-model layout: data lives after the flatbuffer
            if off + size > len(self.data):
                raise ModelFormatError(
                    f"buffer {idx} ({size} bytes at offset {off}) lies outside the {len(self.data)}-byte file"
                )
            raw = self.data[off : off + size]
        else:
            n = self._len(buf.DataLength(), f"buffer {idx}", 1)
            if n == 0:
                return None
            o = buf._tab.Offset(4)
            start = buf._tab.Vector(o)
            if start < 0 or start + n > len(self.data):
                raise ModelFormatError(f"buffer {idx} ({n} bytes) lies outside the file")
            raw = self.data[start : start + n]
        if not raw:
            return None
        if any(d < 0 for d in shape):
            raise ModelFormatError(f"constant tensor {name!r} has dynamic shape {shape}")
        count = 1
        for d in shape:
            count *= d
        itemsize = np.dtype(dtype).itemsize
        if count * itemsize != len(raw):
            raise ModelFormatError(
                f"constant tensor {name!r} of shape {shape} {dtype} needs "
                f"{count * itemsize} bytes, its buffer has {len(raw)}"
            )
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)

    def _tref(self, idx: int, what: str) -> str:
        if not 0 <= idx < self.ntensors:
            raise ModelFormatError(f"{what} refers to tensor {idx}, but the subgraph has {self.ntensors}")
        return self.tensor_names[idx]

    # ---- graph building helpers --------------------------------------------------------------------
    def T(self, name: str) -> Tensor:
        return self.g.tensors[name]

    def new(self, base: str, like: str | None = None, shape: tuple[int, ...] | None = None) -> str:
        name = self.g.unique_name(base)
        src = self.T(like) if like else None
        self.g.add_tensor(
            Tensor(name, shape, src.dtype if src else "float32", None, src.quant if src else None)
        )
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], attrs: dict | None = None) -> None:
        self.g.add_node(op_type, inputs, outputs, attrs, name=self.g.unique_name(f"{outputs[0]}/{op_type}"))

    def const(self, base: str, value: np.ndarray) -> str:
        return self.g.add_const(base, np.asarray(value))

    def rank(self, name: str, need: int | None = None) -> int:
        shape = self.T(name).shape
        if shape is None:
            raise ModelFormatError(f"tensor {name!r} has no shape")
        if need is not None and len(shape) != need:
            raise ModelFormatError(f"{self.opname}: tensor {name!r} has shape {shape}, expected rank {need}")
        return len(shape)

    def to_nchw(self, x: str) -> str:
        """NCHW view of an NHWC activation (one shared Transpose per tensor)."""
        self.rank(x, 4)
        if x in self.nchw_cache:
            return self.nchw_cache[x]
        if self.T(x).is_const:
            out = self.const(f"{x}.nchw", np.transpose(self.T(x).data, NHWC_TO_NCHW))
        else:
            s = self.T(x).shape
            out = self.new(f"{x}.nchw", x, tuple(s[p] for p in NHWC_TO_NCHW))
            self.node("Transpose", [x], [out], {"perm": list(NHWC_TO_NCHW)})
        self.nchw_cache[x] = out
        return out

    def nchw_out(self, y: str) -> str:
        """Name for an op's NCHW result (back_to_nhwc() then writes the TFLite NHWC tensor)."""
        self.rank(y, 4)
        s = self.T(y).shape
        return self.new(f"{y}.nchw", y, tuple(s[p] for p in NHWC_TO_NCHW))

    def back_to_nhwc(self, tmp: str, y: str) -> None:
        self.node("Transpose", [tmp], [y], {"perm": list(NCHW_TO_NHWC)})
        self.nchw_cache[y] = tmp

    def weight(self, idx_name: str, perm: tuple[int, ...], rank: int) -> str:
        """Weight re-laid out by ``perm``: a permuted constant (quant axis remapped) or a Transpose node."""
        self.rank(idx_name, rank)
        key = (idx_name, perm)
        if key in self.weight_cache:
            return self.weight_cache[key]
        t = self.T(idx_name)
        if t.is_const:
            q = t.quant
            if q is not None and q.axis is not None:
                q = QuantInfo(q.scale, q.zero_point, _nperm(perm)[q.axis])
            value = np.ascontiguousarray(np.transpose(t.data, perm))
            if self.uses.get(self.name_index[idx_name], 0) == 1 and idx_name not in self.g.outputs:
                # The NHWC original is never used: the relaid constant keeps the TFLite name.
                t.data, t.shape, t.quant = value, tuple(value.shape), q
                out = idx_name
            else:
                out = self.g.add_const(f"{idx_name}.relaid", value, q)
        else:
            out = self.new(f"{idx_name}.relaid", idx_name, tuple(t.shape[p] for p in perm))
            self.node("Transpose", [idx_name], [out], {"perm": list(perm)})
        self.weight_cache[key] = out
        return out

    def activation(self, fused: int, out: str, attrs: dict) -> str | None:
        """Fold a fused activation into attrs["clip"]; for TANH return the pre-activation tensor name."""
        if fused == _ACT.NONE:
            return None
        if fused == _ACT.RELU:
            attrs["clip"] = (0.0, float("inf"))
        elif fused == _ACT.RELU6:
            attrs["clip"] = (0.0, 6.0)
        elif fused == _ACT.RELU_N1_TO_1:
            attrs["clip"] = (-1.0, 1.0)
        elif fused == _ACT.TANH:
            return self.new(f"{out}.pre_tanh", out)
        else:
            raise UnsupportedOpError(f"{self.opname}: fused activation {fused} (SIGN_BIT) is not supported")
        return None

    def emit(self, op_type: str, inputs: list[str], out: str, attrs: dict, fused: int = _ACT.NONE) -> None:
        """Emit op -> out, honouring a fused activation (TANH becomes a following node)."""
        pre = self.activation(fused, out, attrs)
        if pre is None:
            self.node(op_type, inputs, [out], attrs)
        else:
            if self.T(out).shape is not None:
                self.T(pre).shape = self.T(out).shape
            self.node(op_type, inputs, [pre], attrs)
            self.node("Tanh", [pre], [out])

    def spatial(self, op_type: str, inputs: list[str], y: str, attrs: dict, fused: int = _ACT.NONE) -> None:
        """NHWC -> op in NCHW -> NHWC."""
        tmp = self.nchw_out(y)
        self.emit(op_type, inputs, tmp, attrs, fused)
        self.back_to_nhwc(tmp, y)

    def shape4(self, name: str) -> tuple[int, ...]:
        self.rank(name, 4)
        return self.T(name).shape  # type: ignore[return-value]

    def const_value(self, name: str, what: str) -> np.ndarray:
        v = self.T(name).data
        if v is None:
            raise UnsupportedOpError(f"{self.opname}: {what} must be a constant tensor")
        return v

    def quant_inputs(self, q: QuantInfo, base: str, dtype: str) -> list[str]:
        zp = q.zero_point.astype(dtype) if q.zero_point.size else np.zeros(1, dtype)
        scale, zp = (q.scale, zp) if q.axis is not None else (q.scale.reshape(()), zp.reshape(()))
        return [self.const(f"{base}.scale", scale.astype(np.float32)), self.const(f"{base}.zero_point", zp)]

    # ---- operators ---------------------------------------------------------------------------------
    def _import_op(self, op: Any) -> None:
        oi = int(op.OpcodeIndex())
        if not 0 <= oi < self.ncodes:
            raise ModelFormatError(
                f"operator {self.op_index} uses opcode {oi}, but the file has {self.ncodes}"
            )
        oc = self.model.OperatorCodes(oi)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        custom = self._str(oc.CustomCode()) if code == _CUSTOM else ""
        if code == _CUSTOM and custom not in _KNOWN_CUSTOM:
            raise UnsupportedOpError(f"custom TFLite operator {custom or '<unnamed>'!r} is not supported")
        self.opname = custom or _OP_NAMES.get(code, f"builtin #{code}")
        ins = [int(i) for i in self._ivec(op, "Inputs", f"{self.opname} inputs")]
        outs = [int(i) for i in self._ivec(op, "Outputs", f"{self.opname} outputs")]
        self.ins = [self._tref(i, f"{self.opname} input") if i >= 0 else "" for i in ins]
        self.outs = [self._tref(i, f"{self.opname} output") if i >= 0 else "" for i in outs]
        for o in self.outs:
            if o and self.T(o).is_const:
                raise ModelFormatError(f"{self.opname} writes constant tensor {o!r}")
            if o in self.g.inputs:
                raise ModelFormatError(f"{self.opname} writes graph input {o!r}")
        handler = _HANDLERS.get(custom or self.opname)
        if handler is None:
            raise UnsupportedOpError(f"TFLite operator {self.opname} is not supported")
        self.op = op
        handler(self)

    def need(self, n_in: int, n_out: int = 1) -> None:
        if (
            len(self.ins) < n_in
            or len(self.outs) < n_out
            or any(not i for i in self.ins[:n_in])
            or any(not o for o in self.outs[:n_out])
        ):
            raise ModelFormatError(
                f"{self.opname} needs {n_in} inputs and {n_out} outputs, "
                f"got {len(self.ins)} and {len(self.outs)}"
            )

    def options(self, expect: int, cls: type) -> Any:
        if int(self.op.BuiltinOptionsType()) != expect:
            return None
        table = self.op.BuiltinOptions()
        if table is None:
            return None
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def opt_or_fail(self, expect: int, cls: type) -> Any:
        o = self.options(expect, cls)
        if o is None:
            raise ModelFormatError(f"{self.opname} has no {cls.__name__}")
        return o

    def bias(self) -> list[str]:
        return [self.ins[2]] if len(self.ins) > 2 and self.ins[2] else []

    def _pads(
        self,
        x_nhwc: str,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        dilations: tuple[int, int],
        padding: int,
    ) -> dict:
        if padding == tflite.Padding.VALID:
            return {"pads": [0, 0, 0, 0]}
        if padding != tflite.Padding.SAME:
            raise ModelFormatError(f"{self.opname}: unknown padding {padding}")
        _, h, w, _ = self.shape4(x_nhwc)
        if h < 0 or w < 0:
            return {"auto_pad": "SAME_UPPER"}  # TFLite SAME puts the odd pixel at the end, like SAME_UPPER
        (t, b), (l, r) = (
            _same_pads(h, kernel[0], strides[0], dilations[0]),
            _same_pads(w, kernel[1], strides[1], dilations[1]),
        )
        return {"pads": [t, l, b, r]}

    def conv_2d(self) -> None:
        self.need(2)
        o = self.opt_or_fail(_OPT.Conv2DOptions, tflite.Conv2DOptions)
        x, y = self.ins[0], self.outs[0]
        w = self.weight(self.ins[1], NHWC_TO_NCHW, 4)  # OHWI -> OIHW
        cin = self.shape4(x)[3]
        wi = self.T(w).shape[1]
        if wi <= 0 or cin % wi:
            raise ModelFormatError(f"CONV_2D: input has {cin} channels, filter expects multiples of {wi}")
        self._emit_conv(o, x, w, y, group=cin // wi)

    def depthwise_conv_2d(self) -> None:
        self.need(2)
        o = self.opt_or_fail(_OPT.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptions)
        x, y = self.ins[0], self.outs[0]
        w = self.weight(self.ins[1], (3, 0, 1, 2), 4)  # 1HW(C*M) -> (C*M)1HW
        cin = self.shape4(x)[3]
        cout = self.T(w).shape[0]
        if cin <= 0 or cout % cin:
            raise ModelFormatError(f"DEPTHWISE_CONV_2D: {cout} filters for {cin} input channels")
        self._emit_conv(o, x, w, y, group=cin)

    def _emit_conv(self, o: Any, x: str, w: str, y: str, group: int) -> None:
        """Conv / depthwise conv share options (strides, dilations, padding, fused activation)."""
        strides = (int(o.StrideH()), int(o.StrideW()))
        dil = (int(o.DilationHFactor()), int(o.DilationWFactor()))
        kernel = tuple(self.T(w).shape[2:])
        attrs = {"strides": list(strides), "dilations": list(dil), "group": group,
                 **self._pads(x, kernel, strides, dil, int(o.Padding()))}
        self.spatial("Conv", [self.to_nchw(x), w, *self.bias()], y, attrs, int(o.FusedActivationFunction()))

    def _transpose_conv(
        self, x: str, w_nhwc: str, bias: list[str], y: str, stride: tuple[int, int], padding: int, fused: int
    ) -> None:
        w = self.weight(w_nhwc, (3, 0, 1, 2), 4)  # OHWI -> IOHW (ONNX ConvTranspose weight layout)
        _, ih, iw, cin = self.shape4(x)
        _, oh, ow, cout = self.shape4(y)
        wi, wo, kh, kw = self.T(w).shape
        if wi != cin or wo != cout:
            raise ModelFormatError(
                f"{self.opname}: filter {self.T(w_nhwc).shape} does not map {cin} -> {cout} channels"
            )
        if min(ih, iw, oh, ow) < 0:
            raise UnsupportedOpError(f"{self.opname} with dynamic spatial shape")
        pads, out_pad = [], []
        for size_in, size_out, k, s in ((ih, oh, kh, stride[0]), (iw, ow, kw, stride[1])):
            if padding == tflite.Padding.SAME:
                total = max(0, (size_in - 1) * s + k - size_out)
                begin = total // 2
            elif padding == tflite.Padding.VALID:
                begin = 0
            else:
                raise ModelFormatError(f"{self.opname}: unknown padding {padding}")
            full = (size_in - 1) * s + k  # output size before cropping
            end = full - begin - size_out
            pads.append((begin, max(end, 0)))
            out_pad.append(max(-end, 0))
        attrs = {
            "strides": list(stride),
            "pads": [pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
            "output_padding": out_pad,
            "group": 1,
        }
        self.spatial("ConvTranspose", [self.to_nchw(x), w, *bias], y, attrs, fused)

    def transpose_conv(self) -> None:
        self.need(3)
        o = self.opt_or_fail(_OPT.TransposeConvOptions, tflite.TransposeConvOptions)
        bias = [self.ins[3]] if len(self.ins) > 3 and self.ins[3] else []
        self._transpose_conv(
            self.ins[2],
            self.ins[1],
            bias,
            self.outs[0],
            (int(o.StrideH()), int(o.StrideW())),
            int(o.Padding()),
            int(o.FusedActivationFunction()),
        )

    def conv2d_transpose_bias(self) -> None:
        # MediaPipe custom op; options: raw C struct {int32 padding (1 SAME, 2 VALID), stride_w, stride_h}.
        self.need(3)
        n = self._len(self.op.CustomOptionsLength(), "custom options", 1)
        if n < 12:
            raise ModelFormatError("Convolution2DTransposeBias: custom options shorter than 12 bytes")
        raw = bytes(self.op.CustomOptionsAsNumpy()[:12])
        pad, sw, sh = struct.unpack("<3i", raw)
        padding = {1: tflite.Padding.SAME, 2: tflite.Padding.VALID}.get(pad)
        if padding is None or sw <= 0 or sh <= 0:
            raise ModelFormatError(f"Convolution2DTransposeBias: bad options padding={pad} stride={sw}x{sh}")
        self._transpose_conv(
            self.ins[0], self.ins[1], [self.ins[2]], self.outs[0], (sh, sw), padding, _ACT.NONE
        )

    def pool(self, op_type: str) -> None:
        self.need(1)
        o = self.opt_or_fail(_OPT.Pool2DOptions, tflite.Pool2DOptions)
        x, y = self.ins[0], self.outs[0]
        kernel, strides = (int(o.FilterHeight()), int(o.FilterWidth())), (int(o.StrideH()), int(o.StrideW()))
        if min(kernel + strides) <= 0:
            raise ModelFormatError(f"{self.opname}: kernel {kernel} / strides {strides} must be positive")
        attrs = {
            "kernel_shape": list(kernel),
            "strides": list(strides),
            **self._pads(x, kernel, strides, (1, 1), int(o.Padding())),
        }
        if op_type == "AveragePool":
            attrs["count_include_pad"] = 0  # TFLite averages over the valid pixels only
        self.spatial(op_type, [self.to_nchw(x)], y, attrs, int(o.FusedActivationFunction()))

    def resize(self, mode: str) -> None:
        self.need(2)
        if mode == "linear":
            o = self.options(_OPT.ResizeBilinearOptions, tflite.ResizeBilinearOptions)
        else:
            o = self.options(_OPT.ResizeNearestNeighborOptions, tflite.ResizeNearestNeighborOptions)
        align, half = (
            (bool(o.AlignCorners()), bool(o.HalfPixelCenters())) if o is not None else (False, False)
        )
        x, y = self.ins[0], self.outs[0]
        n, _, _, c = self.shape4(x)
        size = self.const_value(self.ins[1], "the output size").reshape(-1)
        if size.size != 2:
            raise ModelFormatError(f"{self.opname}: size has {size.size} values, expected 2")
        attrs: dict[str, Any] = {"mode": mode}
        if align:
            attrs["coordinate_transformation_mode"] = "align_corners"
            if mode == "nearest":
                attrs["nearest_mode"] = "round_prefer_ceil"
        elif half:
            attrs["coordinate_transformation_mode"] = (
                "half_pixel" if mode == "linear" else "tf_half_pixel_for_nn"
            )
            if mode == "nearest":
                attrs["nearest_mode"] = "floor"
        else:
            attrs["coordinate_transformation_mode"] = "asymmetric"
            if mode == "nearest":
                attrs["nearest_mode"] = "floor"
        sizes = self.const(f"{y}.sizes", np.array([n, c, int(size[0]), int(size[1])], dtype=np.int64))
        self.spatial("Resize", [self.to_nchw(x), "", "", sizes], y, attrs)

    def binary(self, op_type: str, opt: int, cls: type | None) -> None:
        self.need(2)
        o = self.options(opt, cls) if cls is not None else None
        fused = int(o.FusedActivationFunction()) if o is not None else _ACT.NONE
        self.emit(op_type, self.ins[:2], self.outs[0], {}, fused)

    def unary(self, op_type: str, attrs: dict | None = None) -> None:
        self.need(1)
        self.node(op_type, [self.ins[0]], [self.outs[0]], dict(attrs or {}))

    def clip(self, lo: float, hi: float) -> None:
        self.need(1)
        x = self.ins[0]
        dt = self.T(x).dtype if self.T(x).dtype.startswith("float") else "float32"
        self.node(
            "Clip",
            [
                x,
                self.const(f"{self.outs[0]}.min", np.array(lo, dt)),
                self.const(f"{self.outs[0]}.max", np.array(hi, dt)),
            ],
            [self.outs[0]],
        )

    def leaky_relu(self) -> None:
        o = self.options(_OPT.LeakyReluOptions, tflite.LeakyReluOptions)
        self.unary("LeakyRelu", {"alpha": float(o.Alpha()) if o is not None else 0.2})

    def prelu(self) -> None:
        self.need(2)
        self.node("PRelu", self.ins[:2], [self.outs[0]])

    def reshape(self) -> None:
        self.need(1)
        x, y = self.ins[0], self.outs[0]
        if len(self.ins) > 1 and self.ins[1]:
            shape_t = self.T(self.ins[1])
            if shape_t.is_const:
                shape = self.const(f"{y}.shape", shape_t.data.astype(np.int64).reshape(-1))
            else:
                shape = self.ins[1]
        else:
            o = self.opt_or_fail(_OPT.ReshapeOptions, tflite.ReshapeOptions)
            dims = self._ivec(o, "NewShape", "RESHAPE new_shape")
            shape = self.const(f"{y}.shape", dims.astype(np.int64))
        self.node("Reshape", [x, shape], [y], {"allowzero": 1})  # TFLite has no "copy this dim" zeros

    def concatenation(self) -> None:
        o = self.opt_or_fail(_OPT.ConcatenationOptions, tflite.ConcatenationOptions)
        if not self.ins or any(not i for i in self.ins):
            raise ModelFormatError("CONCATENATION needs at least one input")
        self.need(len(self.ins))
        rank = self.rank(self.ins[0])
        axis = int(o.Axis())
        if not -rank <= axis < max(rank, 1):
            raise ModelFormatError(f"CONCATENATION axis {axis} out of range for rank {rank}")
        self.emit(
            "Concat",
            list(self.ins),
            self.outs[0],
            {"axis": axis % max(rank, 1)},
            int(o.FusedActivationFunction()),
        )

    def pad(self, mirror: bool = False) -> None:
        self.need(2)
        x, y = self.ins[0], self.outs[0]
        p = self.const_value(self.ins[1], "paddings").astype(np.int64)
        rank = self.rank(x)
        if p.shape != (rank, 2):
            raise ModelFormatError(f"{self.opname}: paddings shape {p.shape} does not match rank {rank}")
        pads = self.const(f"{y}.pads", np.concatenate([p[:, 0], p[:, 1]]))
        inputs = [x, pads]
        attrs: dict[str, Any] = {"mode": "constant"}
        if mirror:
            o = self.options(_OPT.MirrorPadOptions, tflite.MirrorPadOptions)
            if o is not None and int(o.Mode()) != 0:
                raise UnsupportedOpError("MIRROR_PAD in SYMMETRIC mode is not supported")
            attrs["mode"] = "reflect"
        elif len(self.ins) > 2 and self.ins[2]:
            inputs.append(self.ins[2])
        self.node("Pad", inputs, [y], attrs)

    def reduce(self, op_type: str) -> None:
        self.need(2)
        o = self.options(_OPT.ReducerOptions, tflite.ReducerOptions)
        keep = bool(o.KeepDims()) if o is not None else False
        x, y = self.ins[0], self.outs[0]
        rank = self.rank(x)
        axes = sorted({int(a) % max(rank, 1) for a in self.const_value(self.ins[1], "axes").reshape(-1)})
        if op_type == "ReduceMean" and rank == 4 and axes == [1, 2] and keep:
            # Spatial mean in NHWC = global average pool in NCHW.
            self.spatial("GlobalAveragePool", [self.to_nchw(x)], y, {})
            return
        axes_c = self.const(f"{y}.axes", np.array(axes, dtype=np.int64))
        self.node(op_type, [x, axes_c], [y], {"keepdims": int(keep)})

    def softmax(self) -> None:
        self.need(1)
        o = self.options(_OPT.SoftmaxOptions, tflite.SoftmaxOptions)
        beta = float(o.Beta()) if o is not None else 1.0
        x, y = self.ins[0], self.outs[0]
        if beta != 1.0:
            scaled = self.new(f"{y}.scaled", x, self.T(x).shape)
            self.node("Mul", [x, self.const(f"{y}.beta", np.array(beta, np.float32))], [scaled])
            x = scaled
        self.node("Softmax", [x], [y], {"axis": -1})

    def log_softmax(self) -> None:
        self.unary("LogSoftmax", {"axis": -1})

    def fully_connected(self) -> None:
        self.need(2)
        o = self.options(_OPT.FullyConnectedOptions, tflite.FullyConnectedOptions)
        fused = int(o.FusedActivationFunction()) if o is not None else _ACT.NONE
        keep = bool(o.KeepNumDims()) if o is not None else False
        if o is not None and int(o.WeightsFormat()) != 0:
            raise UnsupportedOpError("FULLY_CONNECTED with shuffled weights format")
        x, w, y = self.ins[0], self.ins[1], self.outs[0]
        self.rank(w, 2)
        n_out, k = self.T(w).shape
        xs = self.T(x).shape
        bias = self.bias()
        if xs is None or not xs or k <= 0:
            raise ModelFormatError(f"FULLY_CONNECTED: bad input shape {xs} / weights {self.T(w).shape}")
        x2 = x
        if len(xs) != 2 or xs[1] != k:
            x2 = self.new(f"{y}.flat", x)
            self.node("Reshape", [x, self.const(f"{y}.flat_shape", np.array([-1, k], np.int64))], [x2])
        ys = self.T(y).shape
        if keep and len(xs) != 2:
            tmp = self.new(f"{y}.2d", y)
            self.emit("Gemm", [x2, w, *bias], tmp, {"transB": 1}, fused)
            self.node("Reshape", [tmp, self.const(f"{y}.shape", np.array([*xs[:-1], n_out], np.int64))], [y])
        elif ys is not None and len(ys) != 2:
            tmp = self.new(f"{y}.2d", y)
            self.emit("Gemm", [x2, w, *bias], tmp, {"transB": 1}, fused)
            self.node("Reshape", [tmp, self.const(f"{y}.shape", np.array(ys, np.int64))], [y])
        else:
            self.emit("Gemm", [x2, w, *bias], y, {"transB": 1}, fused)

    def batch_matmul(self) -> None:
        self.need(2)
        o = self.options(_OPT.BatchMatMulOptions, tflite.BatchMatMulOptions)
        a, b = self.ins[0], self.ins[1]
        for flag, name in ((o is not None and o.AdjX(), "a"), (o is not None and o.AdjY(), "b")):
            if flag:
                src = a if name == "a" else b
                r = self.rank(src)
                perm = list(range(r - 2)) + [r - 1, r - 2]
                t = self.new(f"{self.outs[0]}.{name}T", src)
                self.node("Transpose", [src], [t], {"perm": perm})
                a, b = (t, b) if name == "a" else (a, t)
        self.node("MatMul", [a, b], [self.outs[0]])

    def transpose(self) -> None:
        self.need(2)
        perm = self.const_value(self.ins[1], "perm").reshape(-1)
        self.node("Transpose", [self.ins[0]], [self.outs[0]], {"perm": [int(p) for p in perm]})

    def squeeze(self) -> None:
        self.need(1)
        o = self.options(_OPT.SqueezeOptions, tflite.SqueezeOptions)
        dims = self._ivec(o, "SqueezeDims", "SQUEEZE dims") if o is not None else np.zeros(0, np.int64)
        inputs = [self.ins[0]]
        if dims.size:
            inputs.append(self.const(f"{self.outs[0]}.axes", dims.astype(np.int64)))
        self.node("Squeeze", inputs, [self.outs[0]])

    def expand_dims(self) -> None:
        self.need(2)
        axis = self.const_value(self.ins[1], "axis").astype(np.int64).reshape(-1)
        self.node("Unsqueeze", [self.ins[0], self.const(f"{self.outs[0]}.axes", axis)], [self.outs[0]])

    def cast(self) -> None:
        self.need(1)
        self.node("Cast", [self.ins[0]], [self.outs[0]], {"to": self.T(self.outs[0]).dtype})

    def dequantize(self) -> None:
        self.need(1)
        x, y = self.ins[0], self.outs[0]
        xt = self.T(x)
        if xt.dtype == "float16":
            self.node("Cast", [x], [y], {"to": "float32"})
            return
        if xt.quant is None:
            raise ModelFormatError(f"DEQUANTIZE input {x!r} ({xt.dtype}) has no quantization parameters")
        attrs = {"axis": xt.quant.axis} if xt.quant.axis is not None else {}
        self.node("DequantizeLinear", [x, *self.quant_inputs(xt.quant, x, xt.dtype)], [y], attrs)

    def quantize(self) -> None:
        self.need(1)
        x, y = self.ins[0], self.outs[0]
        yt = self.T(y)
        if yt.quant is None:
            raise ModelFormatError(f"QUANTIZE output {y!r} has no quantization parameters")
        xt = self.T(x)
        if not xt.dtype.startswith("float"):  # requantization int -> int
            if xt.quant is None:
                raise ModelFormatError(f"QUANTIZE input {x!r} ({xt.dtype}) has no quantization parameters")
            real = self.new(f"{y}.real", y, xt.shape)
            self.T(real).dtype, self.T(real).quant = "float32", None
            attrs = {"axis": xt.quant.axis} if xt.quant.axis is not None else {}
            self.node("DequantizeLinear", [x, *self.quant_inputs(xt.quant, x, xt.dtype)], [real], attrs)
            x = real
        attrs = {"axis": yt.quant.axis} if yt.quant.axis is not None else {}
        self.node("QuantizeLinear", [x, *self.quant_inputs(yt.quant, y, yt.dtype)], [y], attrs)

    def rsqrt(self) -> None:
        self.need(1)
        tmp = self.new(f"{self.outs[0]}.sqrt", self.ins[0])
        self.node("Sqrt", [self.ins[0]], [tmp])
        self.node("Reciprocal", [tmp], [self.outs[0]])

    def square(self) -> None:
        self.need(1)
        self.node("Mul", [self.ins[0], self.ins[0]], [self.outs[0]])

    def squared_difference(self) -> None:
        self.need(2)
        tmp = self.new(f"{self.outs[0]}.diff", self.ins[0])
        self.node("Sub", self.ins[:2], [tmp])
        self.node("Mul", [tmp, tmp], [self.outs[0]])

    def shape(self) -> None:
        self.need(1)
        tmp = self.new(f"{self.outs[0]}.i64", self.outs[0])
        self.T(tmp).dtype = "int64"
        self.node("Shape", [self.ins[0]], [tmp])
        self.node("Cast", [tmp], [self.outs[0]], {"to": self.T(self.outs[0]).dtype})


def _binary(op_type: str, opt: int = 0, cls: type | None = None) -> Callable[[_Importer], None]:
    return lambda self: self.binary(op_type, opt, cls)


def _unary(op_type: str) -> Callable[[_Importer], None]:
    return lambda self: self.unary(op_type)


_HANDLERS: dict[str, Callable[[_Importer], None]] = {
    "CONV_2D": _Importer.conv_2d,
    "DEPTHWISE_CONV_2D": _Importer.depthwise_conv_2d,
    "TRANSPOSE_CONV": _Importer.transpose_conv,
    "Convolution2DTransposeBias": _Importer.conv2d_transpose_bias,
    "MAX_POOL_2D": lambda self: self.pool("MaxPool"),
    "AVERAGE_POOL_2D": lambda self: self.pool("AveragePool"),
    "RESIZE_BILINEAR": lambda self: self.resize("linear"),
    "RESIZE_NEAREST_NEIGHBOR": lambda self: self.resize("nearest"),
    "ADD": _binary("Add", _OPT.AddOptions, tflite.AddOptions),
    "SUB": _binary("Sub", _OPT.SubOptions, tflite.SubOptions),
    "MUL": _binary("Mul", _OPT.MulOptions, tflite.MulOptions),
    "DIV": _binary("Div", _OPT.DivOptions, tflite.DivOptions),
    "POW": _binary("Pow"),
    "MAXIMUM": _binary("Max"),
    "MINIMUM": _binary("Min"),
    "EQUAL": _binary("Equal"),
    "LESS": _binary("Less"),
    "GREATER": _binary("Greater"),
    "SQUARED_DIFFERENCE": _Importer.squared_difference,
    "RELU": _unary("Relu"),
    "RELU6": lambda self: self.clip(0.0, 6.0),
    "RELU_N1_TO_1": lambda self: self.clip(-1.0, 1.0),
    "RELU_0_TO_1": lambda self: self.clip(0.0, 1.0),
    "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"),
    "HARD_SWISH": _unary("HardSwish"),
    "EXP": _unary("Exp"),
    "LOG": _unary("Log"),
    "SQRT": _unary("Sqrt"),
    "RSQRT": _Importer.rsqrt,
    "SQUARE": _Importer.square,
    "NEG": _unary("Neg"),
    "ABS": _unary("Abs"),
    "FLOOR": _unary("Floor"),
    "CEIL": _unary("Ceil"),
    "PRELU": _Importer.prelu,
    "LEAKY_RELU": _Importer.leaky_relu,
    "RESHAPE": _Importer.reshape,
    "CONCATENATION": _Importer.concatenation,
    "PAD": _Importer.pad,
    "PADV2": _Importer.pad,
    "MIRROR_PAD": lambda self: self.pad(mirror=True),
    "MEAN": lambda self: self.reduce("ReduceMean"),
    "SUM": lambda self: self.reduce("ReduceSum"),
    "REDUCE_MAX": lambda self: self.reduce("ReduceMax"),
    "REDUCE_MIN": lambda self: self.reduce("ReduceMin"),
    "SOFTMAX": _Importer.softmax,
    "LOG_SOFTMAX": _Importer.log_softmax,
    "FULLY_CONNECTED": _Importer.fully_connected,
    "BATCH_MATMUL": _Importer.batch_matmul,
    "TRANSPOSE": _Importer.transpose,
    "SQUEEZE": _Importer.squeeze,
    "EXPAND_DIMS": _Importer.expand_dims,
    "CAST": _Importer.cast,
    "SHAPE": _Importer.shape,
    "DEQUANTIZE": _Importer.dequantize,
    "QUANTIZE": _Importer.quantize,
}

__all__ = ["import_tflite"]
