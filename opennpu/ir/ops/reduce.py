"""Reductions (ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp), ArgMax/ArgMin, TopK.

Axes come from the second input (the ONNX importer moves the attribute of older opsets there); the
attribute form is accepted as well. Empty axes reduce everything unless noop_with_empty_axes is set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...errors import ShapeError
from .registry import Spec, norm_axis, register


def reduce_axes(ins, attrs, rank: int, op: str) -> tuple[int, ...] | None:
    """Normalized axes, or None for 'no reduction' (noop_with_empty_axes with empty axes)."""
    raw = None
    if len(ins) > 1 and ins[1] is not None:
        v = ins[1].value if isinstance(ins[1], Spec) else ins[1]
        if v is None:
            raise ShapeError(f"{op}: axes must be constant")
        raw = [int(a) for a in np.asarray(v).reshape(-1)]
    elif attrs.get("axes") is not None:
        raw = [int(a) for a in attrs["axes"]]
    if not raw:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        return tuple(range(rank))
    axes = tuple(sorted({norm_axis(a, rank, f"{op} axis") for a in raw}))
    return axes


def _reduced_shape(shape, axes, keepdims):
    if axes is None:
        return tuple(shape)
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce(name: str, fn: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]):
    def infer(ins, attrs):
        x = ins[0]
        axes = reduce_axes(ins, attrs, len(x.shape), name)
        if axes and name in ("ReduceMax", "ReduceMin") and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{name} over an empty axis")
        return [Spec(_reduced_shape(x.shape, axes, bool(attrs.get("keepdims", 1))), x.dtype)]

    @register(name, infer=infer)
    def kernel(ins, attrs):
        x = ins[0]
        axes = reduce_axes(ins, attrs, x.ndim, name)
        if axes is None:
            return [x]
        keep = bool(attrs.get("keepdims", 1))
        return [np.asarray(fn(x, axes, keep)).astype(x.dtype, copy=False)]

    return kernel


def _acc(x: np.ndarray):
    # float16 sums overflow/lose precision quickly: accumulate in float32 like ONNX Runtime.
    return np.float32 if x.dtype == np.float16 else None


_reduce("ReduceSum", lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=_acc(x)))
_reduce("ReduceMean", lambda x, a, k: np.mean(x, axis=a, keepdims=k, dtype=_acc(x)))
_reduce("ReduceMax", lambda x, a, k: np.max(x, axis=a, keepdims=k))
_reduce("ReduceMin", lambda x, a, k: np.min(x, axis=a, keepdims=k))
_reduce("ReduceProd", lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=_acc(x)))
_reduce("ReduceL1", lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=_acc(x)))
_reduce("ReduceL2", lambda x, a, k: np.sqrt(np.sum(np.square(x, dtype=_acc(x)), axis=a, keepdims=k)))
_reduce("ReduceSumSquare", lambda x, a, k: np.sum(np.square(x, dtype=_acc(x)), axis=a, keepdims=k))
_reduce("ReduceLogSum", lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k, dtype=_acc(x))))


def _logsumexp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return s if keep else np.squeeze(s, axis=axes)


_reduce("ReduceLogSumExp", _logsumexp)


# ---- ArgMax / ArgMin -----------------------------------------------------------------------------------

def _arg_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", 0)), len(x.shape))
    if x.shape[axis] == 0:
        raise ShapeError("ArgMax/ArgMin over an empty axis")
    return [Spec(_reduced_shape(x.shape, (axis,), bool(attrs.get("keepdims", 1))), "int64")]


def _arg(fn):
    def kernel(ins, attrs):
        x = ins[0]
        axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
        if attrs.get("select_last_index", 0):
            flipped = np.flip(x, axis=axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = idx.astype(np.int64)
        return [np.expand_dims(idx, axis) if attrs.get("keepdims", 1) else idx]

    return kernel


register("ArgMax", infer=_arg_infer)(_arg(np.argmax))
register("ArgMin", infer=_arg_infer)(_arg(np.argmin))


# ---- TopK --------------------------------------------------------------------------------------------------

def _topk_k(v) -> int:
    arr = v.value if isinstance(v, Spec) else v
    if arr is None:
        raise ShapeError("TopK: k must be constant")
    arr = np.asarray(arr).reshape(-1)
    if arr.size != 1 or int(arr[0]) < 0:
        raise ShapeError(f"TopK: invalid k {arr.tolist()}")
    return int(arr[0])


def _topk_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), len(x.shape))
    k = _topk_k(ins[1])
    if k > x.shape[axis]:
        raise ShapeError(f"TopK: k={k} exceeds the axis length {x.shape[axis]}")
    shape = list(x.shape)
    shape[axis] = k
    return [Spec(tuple(shape), x.dtype), Spec(tuple(shape), "int64")]


@register("TopK", infer=_topk_infer, num_outputs=2)
def topk(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    k = _topk_k(ins[1])
    # Stable sort keeps the lower index first among equal values, as ONNX requires.
    key = -x if attrs.get("largest", 1) else x
    if x.dtype.kind == "u" and attrs.get("largest", 1):
        key = x.max() - x if x.size else x
    idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]
