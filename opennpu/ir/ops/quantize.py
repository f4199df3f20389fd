"""QuantizeLinear, DequantizeLinear (ONNX: per tensor or per axis, round half to even, saturate)."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from .registry import Spec, norm_axis, register


def _param_shape(x_ndim: int, param: np.ndarray | Spec | None, attrs: dict) -> tuple[int, ...] | None:
    """Shape that broadcasts a per-axis scale/zero point against x (None for per-tensor)."""
    if param is None:
        return None
    shape = param.shape
    if len(shape) == 0 or int(np.prod(shape)) == 1 and "axis" not in attrs:
        return None
    if len(shape) != 1:
        raise ShapeError(f"quantization parameters must be scalars or 1-D, got shape {tuple(shape)}")
    axis = norm_axis(int(attrs.get("axis", 1)), x_ndim)
    return tuple(int(shape[0]) if i == axis else 1 for i in range(x_ndim))


def _b(v: np.ndarray | None, shape: tuple[int, ...] | None) -> np.ndarray | None:
    if v is None:
        return None
    return np.asarray(v).reshape(shape) if shape is not None else np.asarray(v).reshape(())


def _q_infer(ins, attrs):
    x, zp = ins[0], ins[2] if len(ins) > 2 else None
    dtype = zp.dtype if zp is not None else "uint8"
    _param_shape(len(x.shape), ins[1], attrs)
    return [Spec(x.shape, dtype)]


def _dq_infer(ins, attrs):
    x, scale = ins[0], ins[1]
    _param_shape(len(x.shape), scale, attrs)
    return [Spec(x.shape, scale.dtype)]


@register("QuantizeLinear", infer=_q_infer)
def quantize_linear(ins, attrs):
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    dtype = np.dtype(zp.dtype) if zp is not None else np.dtype(np.uint8)
    shape = _param_shape(x.ndim, scale, attrs)
    q = np.rint(x.astype(np.float32) / _b(scale, shape).astype(np.float32))
    if zp is not None:
        q = q + _b(zp, shape).astype(np.float32)
    info = np.iinfo(dtype)
    return [np.clip(q, info.min, info.max).astype(dtype)]


@register("DequantizeLinear", infer=_dq_infer)
def dequantize_linear(ins, attrs):
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    shape = _param_shape(x.ndim, scale, attrs)
    v = x.astype(np.int64 if x.dtype.kind in "iu" else np.float32)
    if zp is not None:
        v = v - _b(zp, shape).astype(v.dtype)
    return [(v.astype(np.float32) * _b(scale, shape).astype(np.float32)).astype(scale.dtype)]
