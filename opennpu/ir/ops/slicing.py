"""Indexing ops: Slice, Split, Gather, GatherElements, GatherND, ScatterND, ScatterElements, Tile, Expand."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, broadcast_shape, norm_axis, register


def _val(v, op: str, what: str) -> np.ndarray:
    if isinstance(v, Spec):
        if v.value is None:
            raise ShapeError(f"{op}: {what} must be constant (pin the input shapes so it can be folded)")
        return np.asarray(v.value)
    return np.asarray(v)


def _ints(v, op: str, what: str) -> list[int]:
    return [int(a) for a in _val(v, op, what).reshape(-1)]


# ---- Slice ------------------------------------------------------------------------------------------

def slice_index(shape: tuple[int, ...], ins: list, op: str = "Slice") -> tuple[slice, ...]:
    """ONNX Slice clamping rules coincide with Python's slice semantics (incl. INT64_MIN/MAX sentinels)."""
    rank = len(shape)
    starts = _ints(ins[1], op, "starts")
    ends = _ints(ins[2], op, "ends")
    axes = _ints(ins[3], op, "axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4], op, "steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError(f"Slice: starts/ends/axes/steps lengths differ ({len(starts)}, {len(ends)}, "
                         f"{len(axes)}, {len(steps)})")
    index = [slice(None)] * rank
    seen = set()
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = norm_axis(a, rank, "Slice axis")
        if a in seen:
            raise ShapeError(f"Slice: axis {a} repeated")
        if st == 0:
            raise ShapeError("Slice: step must not be 0")
        seen.add(a)
        index[a] = slice(s, e, st)
    return tuple(index)


def _slice_infer(ins, attrs):
    x = ins[0]
    index = slice_index(x.shape, ins)
    shape = tuple(len(range(*sl.indices(d))) for sl, d in zip(index, x.shape, strict=True))
    return [Spec(shape, x.dtype)]


@register("Slice", infer=_slice_infer)
def slice_(ins, attrs):
    return [np.ascontiguousarray(ins[0][slice_index(ins[0].shape, ins)])]


# ---- Split ------------------------------------------------------------------------------------------

def split_sizes(dim: int, ins: list, attrs: dict) -> list[int]:
    if len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ins[1], "Split", "split")
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            raise ShapeError(f"Split: sizes {sizes} do not add up to {dim}")
        return sizes
    n = attrs.get("num_outputs")
    if n is None or int(n) <= 0:
        raise ShapeError("Split needs the split sizes or num_outputs")
    n = int(n)
    if n > max(dim, 1):
        raise ShapeError(f"Split: cannot split {dim} elements into {n} outputs")
    chunk = -(-dim // n)  # opset 18: the last chunk may be smaller
    sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
    if sum(sizes) != dim:
        raise ShapeError(f"Split: cannot split {dim} into {n} parts")
    return sizes


def _split_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", 0)), len(x.shape))
    outs = []
    for s in split_sizes(x.shape[axis], ins, attrs):
        shape = list(x.shape)
        shape[axis] = s
        outs.append(Spec(tuple(shape), x.dtype))
    return outs


@register("Split", infer=_split_infer)
def split(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    bounds = np.cumsum(split_sizes(x.shape[axis], ins, attrs))[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


# ---- Gather family ------------------------------------------------------------------------------------

def _fix_indices(idx: np.ndarray, dim: int, op: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64, copy=False)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise ShapeError(f"{op}: index out of range for a dimension of size {dim}")
    return np.where(idx < 0, idx + dim, idx)


def _gather_infer(ins, attrs):
    x, idx = ins[0], ins[1]
    axis = norm_axis(int(attrs.get("axis", 0)), len(x.shape))
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return [Spec(tuple(shape), x.dtype)]


@register("Gather", infer=_gather_infer)
def gather(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    return [np.take(x, _fix_indices(ins[1], x.shape[axis], "Gather"), axis=axis)]


def _gather_elements_infer(ins, attrs):
    x, idx = ins[0], ins[1]
    if len(x.shape) != len(idx.shape):
        raise ShapeError(f"GatherElements: ranks of {x.shape} and {idx.shape} differ")
    return [Spec(idx.shape, x.dtype)]


@register("GatherElements", infer=_gather_elements_infer)
def gather_elements(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    return [np.take_along_axis(x, _fix_indices(ins[1], x.shape[axis], "GatherElements"), axis=axis)]


def _gather_nd_shape(x_shape, idx_shape, b: int):
    k = idx_shape[-1]
    if b + k > len(x_shape):
        raise ShapeError(f"GatherND: index depth {k} + batch_dims {b} exceeds rank {len(x_shape)}")
    return tuple(idx_shape[:-1]) + tuple(x_shape[b + k:])


def _gather_nd_infer(ins, attrs):
    return [Spec(_gather_nd_shape(ins[0].shape, ins[1].shape, int(attrs.get("batch_dims", 0))), ins[0].dtype)]


@register("GatherND", infer=_gather_nd_infer)
def gather_nd(ins, attrs):
    x, idx = ins[0], np.asarray(ins[1]).astype(np.int64)
    b = int(attrs.get("batch_dims", 0))
    out_shape = _gather_nd_shape(x.shape, idx.shape, b)
    k = idx.shape[-1]
    bshape = x.shape[:b]
    nb = int(np.prod(bshape, dtype=np.int64))
    xb = x.reshape((nb,) + x.shape[b:])
    ib = idx.reshape(nb, -1, k)
    dims = np.array(x.shape[b:b + k], dtype=np.int64)
    ib = np.where(ib < 0, ib + dims, ib)
    if ib.size and (ib.min() < 0 or np.any(ib >= dims)):
        raise ShapeError("GatherND: index out of range")
    batch = np.arange(nb)[:, None]
    res = xb[(batch,) + tuple(ib[..., j] for j in range(k))]
    return [res.reshape(out_shape)]


def _reduce_into(reduction: str):
    ufunc = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}.get(reduction)
    if reduction != "none" and ufunc is None:
        raise UnsupportedOpError(f"scatter reduction {reduction!r}")
    return ufunc


@register("ScatterND", infer=lambda ins, a: [Spec(ins[0].shape, ins[0].dtype)])
def scatter_nd(ins, attrs):
    x, idx, upd = ins[0], np.asarray(ins[1]).astype(np.int64), ins[2]
    out = np.array(x, copy=True)
    k = idx.shape[-1]
    dims = np.array(x.shape[:k], dtype=np.int64)
    flat = idx.reshape(-1, k)
    flat = np.where(flat < 0, flat + dims, flat)
    if flat.size and (flat.min() < 0 or np.any(flat >= dims)):
        raise ShapeError("ScatterND: index out of range")
    where = tuple(flat[:, j] for j in range(k))
    vals = np.asarray(upd).reshape((flat.shape[0],) + x.shape[k:])
    ufunc = _reduce_into(attrs.get("reduction", "none"))
    if ufunc is None:
        out[where] = vals
    else:
        ufunc.at(out, where, vals)
    return [out]


@register("ScatterElements", infer=lambda ins, a: [Spec(ins[0].shape, ins[0].dtype)])
def scatter_elements(ins, attrs):
    x, upd = ins[0], np.asarray(ins[2])
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    idx = _fix_indices(ins[1], x.shape[axis], "ScatterElements")
    out = np.array(x, copy=True)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    ufunc = _reduce_into(attrs.get("reduction", "none"))
    if ufunc is None:
        out[tuple(grid)] = upd
    else:
        ufunc.at(out, tuple(grid), upd)
    return [out]


# ---- Tile / Expand ------------------------------------------------------------------------------------

def _tile_shape(shape, reps):
    if len(reps) != len(shape) or any(r < 0 for r in reps):
        raise ShapeError(f"Tile: repeats {reps} invalid for shape {shape}")
    return tuple(d * r for d, r in zip(shape, reps, strict=True))


@register("Tile", infer=lambda ins, a: [Spec(_tile_shape(ins[0].shape, _ints(ins[1], "Tile", "repeats")),
                                             ins[0].dtype)])
def tile(ins, attrs):
    reps = _ints(ins[1], "Tile", "repeats")
    _tile_shape(ins[0].shape, reps)
    return [np.tile(ins[0], reps)]


def _expand_shape(shape, target):
    return broadcast_shape(tuple(shape), tuple(int(d) for d in target))


def _expand_infer(ins, attrs):
    x = ins[0]
    shape = _expand_shape(x.shape, _ints(ins[1], "Expand", "shape"))
    return [Spec(shape, x.dtype)]


@register("Expand", infer=_expand_infer)
def expand(ins, attrs):
    shape = _expand_shape(ins[0].shape, _ints(ins[1], "Expand", "shape"))
    return [np.ascontiguousarray(np.broadcast_to(ins[0], shape))]
