"""Tiny writer of .tflite flatbuffers for one-op / few-op test models.

Uses the `tflite` package's generated builder functions (schema v3) on a `flatbuffers.Builder`.
Only what tests need: tensors (shape, dtype, per-tensor or per-channel quantization, constant data),
builtin operators with builtin options given as a dict of schema field names, one subgraph.

    b = ModelBuilder()
    x = b.tensor("x", (1, 8, 8, 3), "int8", scale=0.05, zero_point=-3)
    w = b.tensor("w", (4, 3, 3, 3), "int8", scale=[...], zero_point=[0]*4, axis=0, data=w_arr)
    ...
    b.op("CONV_2D", [x, w, bias], [y], Padding="SAME", StrideW=1, StrideH=1, FusedActivationFunction="RELU")
    data = b.finish(inputs=[x], outputs=[y])
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.Padding import Padding
from tflite.TensorType import TensorType

_DTYPES = {
    "float32": TensorType.FLOAT32,
    "int8": TensorType.INT8,
    "uint8": TensorType.UINT8,
    "int16": TensorType.INT16,
    "int32": TensorType.INT32,
    "int64": TensorType.INT64,
}

# op name -> name of its builtin options table (None: op has no options table we need)
_OPTIONS = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "ADD": "AddOptions",
    "MUL": "MulOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions",
    "SOFTMAX": "SoftmaxOptions",
    "LOGISTIC": None,
    "QUANTIZE": None,
    "DEQUANTIZE": None,
}

# Enum-valued option fields accept their names as strings.
_ENUMS = {"Padding": Padding, "FusedActivationFunction": ActivationFunctionType}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float] | None
    zero_point: list[int] | None
    axis: int
    data: np.ndarray | None


@dataclass
class _Op:
    opcode: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]
    version: int


@dataclass
class ModelBuilder:
    tensors: list[_Tensor] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)

    def tensor(self, name: str, shape, dtype: str, scale=None, zero_point=None, axis: int = 0,
               data: np.ndarray | None = None) -> int:
        """Add a tensor; returns its index. scale/zero_point: scalar (per-tensor) or sequence (per-axis)."""
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {dtype}")
        sc = None if scale is None else [float(s) for s in np.atleast_1d(scale)]
        zp = None
        if sc is not None:
            zp = [int(z) for z in np.atleast_1d(0 if zero_point is None else zero_point)]
            if len(zp) == 1 and len(sc) > 1:
                zp = zp * len(sc)
        if data is not None:
            data = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(shape))
        self.tensors.append(_Tensor(name, tuple(int(d) for d in shape), dtype, sc, zp, axis, data))
        return len(self.tensors) - 1

    def op(self, opcode: str, inputs: list[int], outputs: list[int], version: int = 1, **options) -> None:
        """Add a builtin operator; options are fields of its options table (e.g. StrideW=2)."""
        if opcode not in _OPTIONS:
            raise ValueError(f"unsupported op {opcode}")
        self.ops.append(_Op(opcode, list(inputs), list(outputs), options, version))

    # -- serialization -------------------------------------------------------------------------
    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)

        # buffers: 0 is the mandatory empty sentinel; one per constant tensor.
        buffer_data: list[bytes | None] = [None]
        tensor_buffer: list[int] = []
        for t in self.tensors:
            if t.data is None:
                tensor_buffer.append(0)
            else:
                tensor_buffer.append(len(buffer_data))
                buffer_data.append(t.data.tobytes())
        buf_offs = []
        for raw in buffer_data:
            data_off = None
            if raw is not None:
                b.StartVector(1, len(raw), 16)  # 16-byte alignment: kernels may read buffers in place
                b.head = b.head - len(raw)
                b.Bytes[b.head:b.head + len(raw)] = raw
                data_off = b.EndVector()
            _m("Buffer").BufferStart(b)
            if data_off is not None:
                _m("Buffer").BufferAddData(b, data_off)
            buf_offs.append(_m("Buffer").BufferEnd(b))

        tensor_offs = []
        for t, bi in zip(self.tensors, tensor_buffer, strict=True):
            name_off = b.CreateString(t.name)
            shape_off = _int_vector(b, t.shape)
            q_off = None
            if t.scale is not None:
                s_off = _float_vector(b, t.scale)
                z_off = _int64_vector(b, t.zero_point)
                _m("QuantizationParameters").QuantizationParametersStart(b)
                _m("QuantizationParameters").QuantizationParametersAddScale(b, s_off)
                _m("QuantizationParameters").QuantizationParametersAddZeroPoint(b, z_off)
                _m("QuantizationParameters").QuantizationParametersAddQuantizedDimension(b, t.axis)
                q_off = _m("QuantizationParameters").QuantizationParametersEnd(b)
            _m("Tensor").TensorStart(b)
            _m("Tensor").TensorAddShape(b, shape_off)
            _m("Tensor").TensorAddType(b, _DTYPES[t.dtype])
            _m("Tensor").TensorAddBuffer(b, bi)
            _m("Tensor").TensorAddName(b, name_off)
            if q_off is not None:
                _m("Tensor").TensorAddQuantization(b, q_off)
            tensor_offs.append(_m("Tensor").TensorEnd(b))

        opcodes: list[tuple[str, int]] = []
        op_offs = []
        for o in self.ops:
            key = (o.opcode, o.version)
            if key not in opcodes:
                opcodes.append(key)
            opt_name = _OPTIONS[o.opcode]
            opt_off = _options(b, opt_name, o.options) if opt_name else None
            in_off = _int_vector(b, o.inputs)
            out_off = _int_vector(b, o.outputs)
            _m("Operator").OperatorStart(b)
            _m("Operator").OperatorAddOpcodeIndex(b, opcodes.index(key))
            _m("Operator").OperatorAddInputs(b, in_off)
            _m("Operator").OperatorAddOutputs(b, out_off)
            if opt_off is not None:
                _m("Operator").OperatorAddBuiltinOptionsType(b, getattr(BuiltinOptions, opt_name))
                _m("Operator").OperatorAddBuiltinOptions(b, opt_off)
            op_offs.append(_m("Operator").OperatorEnd(b))

        sg_tensors = _offset_vector(b, tensor_offs)
        sg_ops = _offset_vector(b, op_offs)
        sg_in = _int_vector(b, inputs)
        sg_out = _int_vector(b, outputs)
        sg_name = b.CreateString("main")
        _m("SubGraph").SubGraphStart(b)
        _m("SubGraph").SubGraphAddTensors(b, sg_tensors)
        _m("SubGraph").SubGraphAddInputs(b, sg_in)
        _m("SubGraph").SubGraphAddOutputs(b, sg_out)
        _m("SubGraph").SubGraphAddOperators(b, sg_ops)
        _m("SubGraph").SubGraphAddName(b, sg_name)
        sg_off = _m("SubGraph").SubGraphEnd(b)

        oc_offs = []
        for name, version in opcodes:
            code = getattr(BuiltinOperator, name)
            _m("OperatorCode").OperatorCodeStart(b)
            # deprecated_builtin_code is an int8: codes >= 127 use the placeholder 127.
            _m("OperatorCode").OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            _m("OperatorCode").OperatorCodeAddBuiltinCode(b, code)
            _m("OperatorCode").OperatorCodeAddVersion(b, version)
            oc_offs.append(_m("OperatorCode").OperatorCodeEnd(b))

        m_opcodes = _offset_vector(b, oc_offs)
        m_subgraphs = _offset_vector(b, [sg_off])
        m_buffers = _offset_vector(b, buf_offs)
        desc = b.CreateString("opennpu test model")
        _m("Model").ModelStart(b)
        _m("Model").ModelAddVersion(b, 3)
        _m("Model").ModelAddOperatorCodes(b, m_opcodes)
        _m("Model").ModelAddSubgraphs(b, m_subgraphs)
        _m("Model").ModelAddDescription(b, desc)
        _m("Model").ModelAddBuffers(b, m_buffers)
        b.Finish(_m("Model").ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _m(name: str):
    """The tflite package re-exports classes under module names; fetch the generated module itself."""
    return importlib.import_module(f"tflite.{name}")


def _options(b: flatbuffers.Builder, opt_name: str, fields: dict[str, Any]) -> int:
    mod = _m(opt_name)
    values = {}
    for k, v in fields.items():
        if isinstance(v, str):
            v = getattr(_ENUMS[k], v)
        values[k] = v
    getattr(mod, f"{opt_name}Start")(b)
    for k, v in values.items():
        adder = getattr(mod, f"{opt_name}Add{k}", None)
        if adder is None:
            raise ValueError(f"{opt_name} has no field {k}")
        adder(b, v)
    return getattr(mod, f"{opt_name}End")(b)


def _vector(b: flatbuffers.Builder, values, size: int, prepend) -> int:
    values = list(values)
    b.StartVector(size, len(values), size)
    for v in reversed(values):
        prepend(v)
    return b.EndVector()


def _int_vector(b, values) -> int:
    return _vector(b, [int(v) for v in values], 4, b.PrependInt32)


def _int64_vector(b, values) -> int:
    return _vector(b, [int(v) for v in values], 8, b.PrependInt64)


def _float_vector(b, values) -> int:
    return _vector(b, [float(v) for v in values], 4, b.PrependFloat32)


def _offset_vector(b, offsets) -> int:
    return _vector(b, offsets, 4, b.PrependUOffsetTRelative)
