"""Resize (ONNX opsets 11-19): nearest / linear / cubic, every coordinate_transformation_mode.

Resizing is separable, so each resized axis is processed on its own: a small (out_len, taps) table of
source indices and weights is built per axis and applied with ``np.take``. Source coordinates are
computed in float32 with the same operation order as ONNX Runtime, so nearest-mode tie breaks
(x.5 cases) pick the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, norm_axis, register

_F = np.float32


def _s(attrs: dict[str, Any], key: str, default: str) -> str:
    v = attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _opt(v: Any) -> np.ndarray | None:
    """Optional tensor input: absent, or present but empty, both mean 'not given'."""
    if v is None:
        return None
    v = v.value if isinstance(v, Spec) else v
    if v is None:
        raise ShapeError("Resize: scales/sizes/roi must be constant (pin the input shapes so they fold)")
    v = np.asarray(v)
    return None if v.size == 0 else v


def resize_plan(in_shape: tuple[int, ...], roi: np.ndarray | None, scales: np.ndarray | None,
                sizes: np.ndarray | None, attrs: dict[str, Any]):
    """Return (out_shape, per-axis float32 scale, per-axis (roi_start, roi_end))."""
    rank = len(in_shape)
    axes = attrs.get("axes")
    axes = list(range(rank)) if axes is None else [norm_axis(int(a), rank, "Resize axis") for a in axes]
    mode = _s(attrs, "coordinate_transformation_mode", "half_pixel")
    full_roi = [(0.0, 1.0)] * rank
    if roi is not None and mode == "tf_crop_and_resize":
        r = np.asarray(roi, dtype=np.float64).reshape(-1)
        if r.size != 2 * len(axes):
            raise ShapeError(f"Resize: roi has {r.size} values for {len(axes)} axes")
        for i, a in enumerate(axes):
            full_roi[a] = (float(r[i]), float(r[len(axes) + i]))
    out = list(in_shape)
    sc = [_F(1.0)] * rank
    if scales is not None:
        s = np.asarray(scales, dtype=_F).reshape(-1)
        if s.size != len(axes):
            raise ShapeError(f"Resize: {s.size} scales for {len(axes)} axes")
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise ShapeError(f"Resize: scales must be positive, got {s.tolist()}")
        for i, a in enumerate(axes):
            sc[a] = s[i]
            span = full_roi[a][1] - full_roi[a][0] if mode == "tf_crop_and_resize" else 1.0
            out[a] = int(np.floor(_F(in_shape[a]) * s[i] * _F(span)))
    elif sizes is not None:
        z = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(z) != len(axes) or any(v <= 0 for v in z):
            raise ShapeError(f"Resize: sizes {z} invalid for axes {axes}")
        policy = _s(attrs, "keep_aspect_ratio_policy", "stretch")
        if any(in_shape[a] == 0 for a in axes):
            raise ShapeError(f"Resize: cannot resize an empty input {in_shape}")
        if policy == "stretch":
            for i, a in enumerate(axes):
                out[a] = z[i]
                sc[a] = _F(z[i]) / _F(in_shape[a])
        elif policy in ("not_larger", "not_smaller"):
            ratios = [_F(z[i]) / _F(in_shape[a]) for i, a in enumerate(axes)]
            r = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                sc[a] = r
                out[a] = int(np.floor(float(r) * in_shape[a] + 0.5))
        else:
            raise UnsupportedOpError(f"Resize keep_aspect_ratio_policy={policy!r}")
    else:
        raise ShapeError("Resize needs either scales or sizes")
    if any(d <= 0 for d in out):
        raise ShapeError(f"Resize: output shape {tuple(out)} has an empty dimension")
    return tuple(out), sc, full_roi


def _source_coords(mode: str, n_out: int, n_in: int, scale: np.float32,
                   roi: tuple[float, float]) -> np.ndarray:
    x = np.arange(n_out, dtype=_F)
    half = _F(0.5)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = _F(n_out) / (scale * _F(n_in))
        center = _F(n_in) / _F(2)
        offset = center * (_F(1) - adjustment)
        return offset + (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros(n_out, _F)
    if mode == "align_corners":
        return np.zeros(n_out, _F) if n_out == 1 else x * _F(n_in - 1) / _F(n_out - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "tf_crop_and_resize":
        start, end = _F(roi[0]), _F(roi[1])
        if n_out > 1:
            return start * _F(n_in - 1) + x * (end - start) * _F(n_in - 1) / _F(n_out - 1)
        return np.full(n_out, _F(0.5) * (start + end) * _F(n_in - 1), _F)
    raise UnsupportedOpError(f"Resize coordinate_transformation_mode={mode!r}")


def _nearest(xo: np.ndarray, rule: str) -> np.ndarray:
    if rule == "round_prefer_floor":
        return np.ceil(xo - _F(0.5))
    if rule == "round_prefer_ceil":
        return np.floor(xo + _F(0.5))
    if rule == "floor":
        return np.floor(xo)
    if rule == "ceil":
        return np.ceil(xo)
    raise UnsupportedOpError(f"Resize nearest_mode={rule!r}")


def _cubic_weights(s: np.ndarray, a: float) -> np.ndarray:
    a = _F(a)
    s = s.astype(_F)
    t0, t1, t2, t3 = s + 1, s, 1 - s, 2 - s
    w0 = ((a * t0 - 5 * a) * t0 + 8 * a) * t0 - 4 * a
    w1 = ((a + 2) * t1 - (a + 3)) * t1 * t1 + 1
    w2 = ((a + 2) * t2 - (a + 3)) * t2 * t2 + 1
    w3 = ((a * t3 - 5 * a) * t3 + 8 * a) * t3 - 4 * a
    return np.stack([w0, w1, w2, w3], axis=1)


def axis_table(mode: str, coord_mode: str, rule: str, n_in: int, n_out: int, scale: np.float32,
               roi: tuple[float, float], cubic_a: float, exclude_outside: bool):
    """(indices (n_out, taps), weights (n_out, taps) or None, outside mask (n_out,) or None)."""
    xo = _source_coords(coord_mode, n_out, n_in, scale, roi)
    outside = None
    if coord_mode == "tf_crop_and_resize":
        outside = (xo < 0) | (xo > _F(n_in - 1))
        if not outside.any():
            outside = None
    if mode == "nearest":
        idx = np.clip(_nearest(xo, rule), 0, n_in - 1).astype(np.int64)
        return idx[:, None], None, outside
    if mode == "linear":
        xc = np.clip(xo, _F(0), _F(n_in - 1))
        i0 = np.minimum(np.floor(xc).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = np.abs(xc - i0.astype(_F))
        w0 = np.abs(xc - i1.astype(_F))
        same = i0 == i1
        w0[same], w1[same] = 0.5, 0.5
        return np.stack([i0, i1], 1), np.stack([w0, w1], 1), outside
    if mode == "cubic":
        base = np.floor(xo)
        w = _cubic_weights(xo - base, cubic_a)
        idx = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
        if exclude_outside:
            w = np.where((idx >= 0) & (idx < n_in), w, _F(0))
            w = w / w.sum(axis=1, keepdims=True)
        return np.clip(idx, 0, n_in - 1), w.astype(_F), outside
    raise UnsupportedOpError(f"Resize mode={mode!r}")


def _args(ins):
    roi = _opt(ins[1]) if len(ins) > 1 else None
    scales = _opt(ins[2]) if len(ins) > 2 else None
    sizes = _opt(ins[3]) if len(ins) > 3 else None
    return roi, scales, sizes


def _infer(ins, attrs):
    roi, scales, sizes = _args(ins)
    out, _, _ = resize_plan(ins[0].shape, roi, scales, sizes, attrs)
    return [Spec(out, ins[0].dtype)]


@register("Resize", infer=_infer)
def resize(ins, attrs):
    x = ins[0]
    roi, scales, sizes = _args(ins)
    out_shape, sc, rois = resize_plan(x.shape, roi, scales, sizes, attrs)
    mode = _s(attrs, "mode", "nearest")
    coord = _s(attrs, "coordinate_transformation_mode", "half_pixel")
    rule = _s(attrs, "nearest_mode", "round_prefer_floor")
    extrap = float(attrs.get("extrapolation_value", 0.0))
    integer = x.dtype.kind in "iub"
    work = x if mode == "nearest" or x.dtype == _F else x.astype(_F)
    for axis in range(x.ndim):
        n_in, n_out = x.shape[axis], out_shape[axis]
        if n_in == n_out and sc[axis] == 1 and coord not in ("tf_crop_and_resize", "tf_half_pixel_for_nn"):
            continue
        if attrs.get("antialias", 0) and mode != "nearest" and sc[axis] < 1:
            raise UnsupportedOpError("Resize with antialias=1 when downsampling is not supported")
        idx, w, outside = axis_table(mode, coord, rule, n_in, n_out, sc[axis], rois[axis],
                                     float(attrs.get("cubic_coeff_a", -0.75)),
                                     bool(attrs.get("exclude_outside", 0)))
        bshape = [1] * x.ndim
        bshape[axis] = n_out
        if w is None:
            y = np.take(work, idx[:, 0], axis=axis)
        else:
            y = np.take(work, idx[:, 0], axis=axis) * w[:, 0].reshape(bshape)
            for t in range(1, idx.shape[1]):
                y += np.take(work, idx[:, t], axis=axis) * w[:, t].reshape(bshape)
        if outside is not None:
            y = np.where(outside.reshape(bshape), np.asarray(extrap, dtype=y.dtype), y)
        work = y
    if work.dtype != x.dtype:
        if integer:
            info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
            work = np.rint(work)
            if info is not None:
                work = np.clip(work, info.min, info.max)
        work = work.astype(x.dtype)
    return [np.ascontiguousarray(work)]
