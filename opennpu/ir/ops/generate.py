"""Tensor creation and conversion: Cast, CastLike, Range, ConstantOfShape, EyeLike.

``Cast.to`` / ``EyeLike.dtype`` hold numpy dtype names (the ONNX importer translates the ONNX enum);
an ONNX enum int is accepted too.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, register

_ONNX_ENUM = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
              9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def dtype_name(v) -> str:
    if isinstance(v, (int, np.integer)):
        try:
            return _ONNX_ENUM[int(v)]
        except KeyError:
            raise UnsupportedOpError(f"ONNX data type {int(v)} is not supported") from None
    try:
        return np.dtype(v.decode() if isinstance(v, bytes) else v).name
    except TypeError:
        raise UnsupportedOpError(f"unknown dtype {v!r}") from None


def cast_array(x: np.ndarray, to: str) -> np.ndarray:
    x = np.asarray(x)
    dst = np.dtype(to)
    if x.dtype.kind == "f" and dst.kind in "iu":
        # C casts truncate toward zero; NaN/inf have no defined result, keep numpy's without warnings.
        with np.errstate(invalid="ignore", over="ignore"):
            return np.trunc(x).astype(dst)
    return x.astype(dst)


def _cast_infer(ins, attrs):
    return [Spec(ins[0].shape, dtype_name(attrs["to"]))]


@register("Cast", infer=_cast_infer)
def cast(ins, attrs):
    return [cast_array(ins[0], dtype_name(attrs["to"]))]


@register("CastLike", infer=lambda ins, a: [Spec(ins[0].shape, ins[1].dtype)])
def cast_like(ins, attrs):
    return [cast_array(ins[0], ins[1].dtype.name)]


def _scalar(v, what: str):
    arr = np.asarray(v.value if isinstance(v, Spec) else v)
    if isinstance(v, Spec) and v.value is None:
        raise ShapeError(f"Range: {what} must be constant (pin the input shapes so it can be folded)")
    if arr.size != 1:
        raise ShapeError(f"Range: {what} must be a scalar, got shape {arr.shape}")
    return arr.reshape(())


def range_count(start, limit, delta) -> int:
    if float(delta) == 0:
        raise ShapeError("Range: delta must not be 0")
    n = np.ceil((np.float64(limit) - np.float64(start)) / np.float64(delta))
    if not np.isfinite(n):
        raise ShapeError("Range: non-finite bounds")
    return max(int(n), 0)


def _range_infer(ins, attrs):
    start, limit, delta = (_scalar(s, w) for s, w in zip(ins, ("start", "limit", "delta"), strict=True))
    return [Spec((range_count(start, limit, delta),), ins[0].dtype)]


@register("Range", infer=_range_infer)
def range_(ins, attrs):
    start, limit, delta = (_scalar(s, w) for s, w in zip(ins, ("start", "limit", "delta"), strict=True))
    n = range_count(start, limit, delta)
    dtype = np.asarray(ins[0]).dtype
    return [(start + delta * np.arange(n, dtype=dtype)).astype(dtype)]


def _fill_value(attrs) -> np.ndarray:
    v = attrs.get("value")
    if v is None:
        return np.zeros((), np.float32)
    v = np.asarray(v)
    if v.size != 1:
        raise ShapeError(f"ConstantOfShape: value must hold one element, got shape {v.shape}")
    return v.reshape(())


def _shape_arg(v) -> tuple[int, ...]:
    arr = v.value if isinstance(v, Spec) else v
    if arr is None:
        raise ShapeError("ConstantOfShape: the shape must be constant (pin the input shapes to fold it)")
    dims = tuple(int(d) for d in np.asarray(arr).reshape(-1))
    if any(d < 0 for d in dims):
        raise ShapeError(f"ConstantOfShape: negative dimension in {dims}")
    return dims


@register("ConstantOfShape", infer=lambda ins, a: [Spec(_shape_arg(ins[0]), _fill_value(a).dtype.name)])
def constant_of_shape(ins, attrs):
    v = _fill_value(attrs)
    return [np.full(_shape_arg(ins[0]), v, dtype=v.dtype)]


def _eye_infer(ins, attrs):
    if len(ins[0].shape) != 2:
        raise ShapeError(f"EyeLike needs a 2-D input, got {ins[0].shape}")
    dt = dtype_name(attrs["dtype"]) if attrs.get("dtype") is not None else ins[0].dtype
    return [Spec(ins[0].shape, dt)]


@register("EyeLike", infer=_eye_infer)
def eye_like(ins, attrs):
    x = ins[0]
    dt = dtype_name(attrs["dtype"]) if attrs.get("dtype") is not None else x.dtype.name
    return [np.eye(x.shape[0], x.shape[1], k=int(attrs.get("k", 0)), dtype=dt)]
