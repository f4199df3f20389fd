"""BatchNormalization (inference form) and Softmax."""

from __future__ import annotations

import numpy as np

from .registry import norm_axis, register, same_as_input


@register("BatchNormalization", infer=same_as_input())
def batch_norm(ins, attrs):
    x, scale, bias, mean, var = ins[:5]
    eps = attrs.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    k = scale / np.sqrt(var + eps)
    return [(x * k.reshape(shape) + (bias - mean * k).reshape(shape)).astype(x.dtype)]


def softmax_float(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register("Softmax", infer=same_as_input())
def softmax(ins, attrs):
    x = ins[0]
    return [softmax_float(x, norm_axis(int(attrs.get("axis", -1)), x.ndim)).astype(x.dtype)]


@register("LogSoftmax", infer=same_as_input())
def log_softmax(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    m = x.max(axis=axis, keepdims=True)
    return [(x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).astype(x.dtype)]
