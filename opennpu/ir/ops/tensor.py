"""Data movement ops: Reshape, Transpose, Concat, Flatten, Squeeze, Unsqueeze, Shape, Constant, Pad."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, norm_axis, register


def _need_value(spec: Spec | None, op: str, what: str) -> np.ndarray:
    if spec is None or spec.value is None:
        raise ShapeError(f"{op}: {what} must be a constant (pin the input shapes so it can be folded)")
    return spec.value


def reshape_target(in_shape: tuple[int, ...], shape: np.ndarray, allowzero: bool = False) -> tuple[int, ...]:
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    out = []
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"Reshape: 0 at position {i} but input has rank {len(in_shape)}")
            d = in_shape[i]
        out.append(d)
    total = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ShapeError(f"Reshape: invalid target shape {dims}")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise ShapeError(f"Reshape: cannot reshape {in_shape} to {dims}")
        out[out.index(-1)] = total // known
    if int(np.prod(out, dtype=np.int64)) != total:
        raise ShapeError(f"Reshape: cannot reshape {in_shape} to {dims}")
    return tuple(out)


def _reshape_infer(ins, attrs):
    shape = _need_value(ins[1], "Reshape", "the target shape")
    return [Spec(reshape_target(ins[0].shape, shape, bool(attrs.get("allowzero", 0))), ins[0].dtype)]


@register("Reshape", infer=_reshape_infer)
def reshape(ins, attrs):
    return [ins[0].reshape(reshape_target(ins[0].shape, ins[1], bool(attrs.get("allowzero", 0))))]


def _perm(attrs, rank):
    perm = attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"Transpose: perm {perm} is not a permutation of rank {rank}")
    return perm


def _transpose_infer(ins, attrs):
    x = ins[0]
    perm = _perm(attrs, len(x.shape))
    return [Spec(tuple(x.shape[p] for p in perm), x.dtype)]


@register("Transpose", infer=_transpose_infer)
def transpose(ins, attrs):
    return [np.ascontiguousarray(np.transpose(ins[0], _perm(attrs, ins[0].ndim)))]


def _concat_infer(ins, attrs):
    specs = [s for s in ins if s is not None]
    rank = len(specs[0].shape)
    axis = norm_axis(int(attrs["axis"]), rank)
    out = list(specs[0].shape)
    for s in specs[1:]:
        if len(s.shape) != rank or any(a != b for i, (a, b) in enumerate(zip(s.shape, out, strict=True))
                                       if i != axis):
            raise ShapeError(f"Concat: shapes {[sp.shape for sp in specs]} differ off axis {axis}")
        out[axis] += s.shape[axis]
    value = None
    if all(s.value is not None for s in specs):
        value = np.concatenate([s.value for s in specs], axis=axis)
    return [Spec(tuple(out), specs[0].dtype, value)]


@register("Concat", infer=_concat_infer)
def concat(ins, attrs):
    arrs = [a for a in ins if a is not None]
    return [np.concatenate(arrs, axis=int(attrs["axis"]))]


def _flatten_shape(shape, axis):
    axis = norm_axis(axis, len(shape) + 1) if axis >= 0 else norm_axis(axis, len(shape))
    return (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))


@register("Flatten", infer=lambda ins, a: [Spec(_flatten_shape(ins[0].shape, int(a.get("axis", 1))), ins[0].dtype)])
def flatten(ins, attrs):
    return [ins[0].reshape(_flatten_shape(ins[0].shape, int(attrs.get("axis", 1))))]


def _axes(ins, attrs, op):
    if len(ins) > 1 and ins[1] is not None:
        v = ins[1].value if isinstance(ins[1], Spec) else ins[1]
        if v is None:
            raise ShapeError(f"{op}: axes must be constant")
        return [int(a) for a in np.asarray(v).reshape(-1)]
    a = attrs.get("axes")
    return None if a is None else [int(x) for x in a]


def _squeeze_shape(shape, axes):
    rank = len(shape)
    if axes is None:
        return tuple(d for d in shape if d != 1)
    axes = {norm_axis(a, rank) for a in axes}
    for a in axes:
        if shape[a] != 1:
            raise ShapeError(f"Squeeze: dimension {a} of {shape} is not 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _unsqueeze_shape(shape, axes):
    if axes is None:
        raise ShapeError("Unsqueeze needs axes")
    rank = len(shape) + len(axes)
    axes = sorted(norm_axis(a, rank) for a in axes)
    out = list(shape)
    for a in axes:
        out.insert(a, 1)
    return tuple(out)


def _value_passthrough(spec: Spec, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if spec.value is None else spec.value.reshape(shape)


def _squeeze_infer(ins, attrs):
    shape = _squeeze_shape(ins[0].shape, _axes(ins, attrs, "Squeeze"))
    return [Spec(shape, ins[0].dtype, _value_passthrough(ins[0], shape))]


def _unsqueeze_infer(ins, attrs):
    shape = _unsqueeze_shape(ins[0].shape, _axes(ins, attrs, "Unsqueeze"))
    return [Spec(shape, ins[0].dtype, _value_passthrough(ins[0], shape))]


@register("Squeeze", infer=_squeeze_infer)
def squeeze(ins, attrs):
    return [ins[0].reshape(_squeeze_shape(ins[0].shape, _axes(ins, attrs, "Squeeze")))]


@register("Unsqueeze", infer=_unsqueeze_infer)
def unsqueeze(ins, attrs):
    return [ins[0].reshape(_unsqueeze_shape(ins[0].shape, _axes(ins, attrs, "Unsqueeze")))]


def _shape_value(shape, attrs):
    rank = len(shape)
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    sl = slice(start, None if end is None else int(end))
    del rank
    return np.array(shape[sl], dtype=np.int64)


@register("Shape", infer=lambda ins, a: [Spec.of(_shape_value(ins[0].shape, a))])
def shape_(ins, attrs):
    return [_shape_value(ins[0].shape, attrs)]


@register("Size", infer=lambda ins, a: [Spec.of(np.array(int(np.prod(ins[0].shape)), dtype=np.int64))])
def size_(ins, attrs):
    return [np.array(ins[0].size, dtype=np.int64)]


@register("Constant", infer=lambda ins, a: [Spec.of(np.asarray(a["value"]))])
def constant(ins, attrs):
    return [np.asarray(attrs["value"])]


def _pad_widths(x_shape, pads, axes):
    rank = len(x_shape)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank)) if axes is None else [norm_axis(int(a), rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise ShapeError(f"Pad: {len(pads)} pad values for {len(axes)} axes")
    width = [(0, 0)] * rank
    for i, a in enumerate(axes):
        width[a] = (pads[i], pads[len(axes) + i])
    for (b, e), d in zip(width, x_shape, strict=True):
        if d + b + e < 0:
            raise ShapeError(f"Pad: negative output size for {x_shape} with pads {pads}")
    return width


def _pad_args(ins, attrs):
    pads = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("pads")
    axes = ins[3] if len(ins) > 3 and ins[3] is not None else None
    value = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("value", 0.0)
    return pads, axes, value


def _pad_infer(ins, attrs):
    pads, axes, _ = _pad_args(ins, attrs)
    pads = _need_value(pads, "Pad", "pads") if isinstance(pads, Spec) else pads
    if isinstance(axes, Spec):
        axes = _need_value(axes, "Pad", "axes")
    width = _pad_widths(ins[0].shape, pads, axes)
    return [Spec(tuple(d + b + e for d, (b, e) in zip(ins[0].shape, width, strict=True)), ins[0].dtype)]


@register("Pad", infer=_pad_infer)
def pad(ins, attrs):
    x = ins[0]
    pads, axes, value = _pad_args(ins, attrs)
    width = _pad_widths(x.shape, pads, axes)
    mode = attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    # Negative pads crop.
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for (b, e), d in zip(width, x.shape, strict=True))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode == "constant":
        return [np.pad(x, width, constant_values=np.asarray(value, dtype=x.dtype).reshape(-1)[0]
                       if np.size(value) else 0)]
    if mode in ("reflect", "edge"):
        return [np.pad(x, width, mode=mode)]
    raise UnsupportedOpError(f"Pad mode {mode!r}")
