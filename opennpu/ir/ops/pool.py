"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (ONNX semantics)."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .conv import windows
from .registry import Spec, conv_out_dim, register, resolve_auto_pad


def pool_geometry(x_shape, attrs):
    nsp = len(x_shape) - 2
    if nsp < 1:
        raise ShapeError(f"pooling needs rank >= 3 input, got {x_shape}")
    kernel = list(attrs.get("kernel_shape") or [])
    if len(kernel) != nsp:
        raise ShapeError(f"kernel_shape {kernel} does not match input rank {len(x_shape)}")
    strides = list(attrs.get("strides") or [1] * nsp)
    dilations = list(attrs.get("dilations") or [1] * nsp)
    if any(int(v) <= 0 for v in kernel + strides + dilations):
        raise ShapeError(f"pooling kernel/stride/dilation must be positive: {kernel} {strides} {dilations}")
    pads = resolve_auto_pad(attrs, x_shape[2:], kernel, strides, dilations)
    ceil = bool(attrs.get("ceil_mode", 0))
    out = [conv_out_dim(x_shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i], ceil)
           for i in range(nsp)]
    return kernel, strides, dilations, pads, out


def _infer(ins, attrs):
    x = ins[0]
    _, _, _, pads, out = pool_geometry(x.shape, attrs)
    attrs["pads"] = pads
    attrs.pop("auto_pad", None)
    return [Spec((*x.shape[:2], *out), x.dtype)]


def _ceil_extra(x_shape, kernel, strides, dilations, pads, out):
    """Extra end padding so ceil_mode windows exist in the padded view."""
    nsp = len(kernel)
    extra = list(pads)
    for i in range(nsp):
        need = (out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        have = x_shape[2 + i] + pads[i] + pads[nsp + i]
        extra[nsp + i] += max(0, need - have)
    return extra


@register("MaxPool", infer=_infer)
def max_pool(ins, attrs):
    x = ins[0]
    kernel, strides, dilations, pads, out = pool_geometry(x.shape, attrs)
    pads = _ceil_extra(x.shape, kernel, strides, dilations, pads, out)
    win = windows(x, kernel, strides, dilations, pads, value=-np.inf)
    nsp = len(kernel)
    y = win.max(axis=tuple(range(2 + nsp, 2 + 2 * nsp)))
    return [np.ascontiguousarray(y[(slice(None), slice(None)) + tuple(slice(0, o) for o in out)])]


@register("AveragePool", infer=_infer)
def average_pool(ins, attrs):
    x = ins[0]
    kernel, strides, dilations, pads0, out = pool_geometry(x.shape, attrs)
    if any(d != 1 for d in dilations):
        raise UnsupportedOpError("AveragePool with dilation")
    pads = _ceil_extra(x.shape, kernel, strides, dilations, pads0, out)
    nsp = len(kernel)
    taps = tuple(range(2 + nsp, 2 + 2 * nsp))
    total = windows(x, kernel, strides, dilations, pads).sum(axis=taps)
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    if attrs.get("count_include_pad", 0):
        # Padding counts, but the ceil_mode overhang past the declared pads does not.
        ones = np.pad(ones, [(0, 0), (0, 0)] + [(pads0[i], pads0[nsp + i]) for i in range(nsp)],
                      constant_values=1)
        pads = [0] * nsp + [p - q for p, q in zip(pads[nsp:], pads0[nsp:], strict=True)]
    count = windows(ones, kernel, strides, dilations, pads).sum(axis=taps)
    sl = (slice(None), slice(None)) + tuple(slice(0, o) for o in out)
    return [np.ascontiguousarray((total[sl] / count[sl]).astype(x.dtype))]


def _global_infer(ins, attrs):
    x = ins[0]
    return [Spec((*x.shape[:2], *([1] * (len(x.shape) - 2))), x.dtype)]


@register("GlobalAveragePool", infer=_global_infer)
def global_average_pool(ins, attrs):
    x = ins[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(x.dtype)]


@register("GlobalMaxPool", infer=_global_infer)
def global_max_pool(ins, attrs):
    x = ins[0]
    return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
