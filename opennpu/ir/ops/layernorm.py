"""Normalizations over feature axes: LayerNormalization, InstanceNormalization, GroupNormalization,
LpNormalization. Statistics are computed in float64 and the result cast back (ONNX Runtime also
accumulates in higher precision than the float32 tensors)."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from .registry import Spec, norm_axis, register, same_as_input


def _layer_norm_infer(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), len(x.shape))
    stat = tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)
    return [Spec(x.shape, x.dtype), Spec(stat, "float32"), Spec(stat, "float32")]


@register("LayerNormalization", infer=_layer_norm_infer, num_outputs=3)
def layer_norm(ins, attrs):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    var = np.square(xf - mean).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    y = (xf - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype), mean.astype(np.float32), inv.astype(np.float32)]


@register("InstanceNormalization", infer=same_as_input())
def instance_norm(ins, attrs):
    x, scale, bias = ins[:3]
    if x.ndim < 3:
        raise ShapeError(f"InstanceNormalization needs rank >= 3, got {x.shape}")
    axes = tuple(range(2, x.ndim))
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    var = np.square(xf - mean).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (xf - mean) / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]


@register("GroupNormalization", infer=same_as_input())
def group_norm(ins, attrs):
    x, scale, bias = ins[:3]
    groups = int(attrs["num_groups"])
    n, c = x.shape[:2]
    if groups <= 0 or c % groups:
        raise ShapeError(f"GroupNormalization: {c} channels do not split into {groups} groups")
    xf = x.astype(np.float64).reshape(n, groups, -1)
    mean = xf.mean(axis=2, keepdims=True)
    var = np.square(xf - mean).mean(axis=2, keepdims=True)
    y = ((xf - mean) / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if scale.size == groups and groups != c:  # opset 18 form: one scale/bias per group
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]


@register("LpNormalization", infer=same_as_input())
def lp_norm(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    p = int(attrs.get("p", 2))
    xf = x.astype(np.float64)
    if p == 1:
        norm = np.abs(xf).sum(axis=axis, keepdims=True)
    elif p == 2:
        norm = np.sqrt(np.square(xf).sum(axis=axis, keepdims=True))
    else:
        raise ShapeError(f"LpNormalization p={p} (only 1 and 2 exist)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return [(xf / norm).astype(x.dtype)]
