"""Conv (ONNX semantics, NCHW / OIHW, groups, dilation, explicit or auto pads) in float."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, conv_out_dim, register, resolve_auto_pad


def conv_geometry(x_shape, w_shape, attrs):
    """Return (kernel, strides, dilations, pads, out_spatial) for a Conv with these shapes."""
    if len(x_shape) != len(w_shape) or len(x_shape) < 3:
        raise ShapeError(f"Conv input rank {len(x_shape)} and weight rank {len(w_shape)} do not match")
    nsp = len(x_shape) - 2
    kernel = list(attrs.get("kernel_shape") or w_shape[2:])
    strides = list(attrs.get("strides") or [1] * nsp)
    dilations = list(attrs.get("dilations") or [1] * nsp)
    if any(v <= 0 for v in kernel + strides + dilations):
        raise ShapeError(f"Conv kernel/stride/dilation must be positive: {kernel} {strides} {dilations}")
    pads = resolve_auto_pad(attrs, x_shape[2:], kernel, strides, dilations)
    out = [conv_out_dim(x_shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[nsp + i])
           for i in range(nsp)]
    return kernel, strides, dilations, pads, out


def _infer(ins, attrs):
    x, w = ins[0], ins[1]
    group = int(attrs.get("group", 1))
    if group <= 0 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ShapeError(f"Conv channels do not match: input {x.shape}, weight {w.shape}, group {group}")
    _, _, _, pads, out = conv_geometry(x.shape, w.shape, attrs)
    attrs["pads"] = pads  # auto_pad resolved once, so later stages see explicit pads
    attrs.pop("auto_pad", None)
    return [Spec((x.shape[0], w.shape[0], *out), x.dtype)]


def _macs(ins, outs, attrs):
    w = ins[1]
    return int(np.prod(outs[0].shape, dtype=np.int64) * np.prod(w.shape[1:], dtype=np.int64))


def _pad_spatial(x: np.ndarray, pads: list[int], value: float = 0.0) -> np.ndarray:
    nsp = x.ndim - 2
    if not any(pads):
        return x
    width = [(0, 0), (0, 0)] + [(pads[i], pads[nsp + i]) for i in range(nsp)]
    return np.pad(x, width, constant_values=value)


def windows(x: np.ndarray, kernel, strides, dilations, pads, value: float = 0.0) -> np.ndarray:
    """View of shape (N, C, *out_spatial, *kernel) over the padded input (no copy)."""
    xp = _pad_spatial(x, pads, value)
    nsp = x.ndim - 2
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    v = sliding_window_view(xp, extent, axis=tuple(range(2, 2 + nsp)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, d) for d in dilations)
    return v[sl]


DW_CHUNK_ELEMS = 1 << 20  # depthwise outputs per chunk of images (a few MB: fits a big L2 / the L3)


def conv2d_float(x, w, b, attrs):
    group = int(attrs.get("group", 1))
    kernel, strides, dilations, pads, out = conv_geometry(x.shape, w.shape, attrs)
    nsp = x.ndim - 2
    n, cin = x.shape[:2]
    cout = w.shape[0]
    acc_dtype = np.result_type(x.dtype, w.dtype, np.float32)
    if group == 1 and all(k == 1 for k in kernel) and not any(pads):
        # Pointwise conv: one matmul over channels (most MACs of mobile CNNs), no window copy.
        xs = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]
        y = np.matmul(w.reshape(cout, cin).astype(acc_dtype, copy=False), xs.reshape(n, cin, -1).astype(acc_dtype))
        y = y.reshape(n, cout, *out)
    elif group == 1:
        win = windows(x, kernel, strides, dilations, pads)  # N, C, *out, *k
        # Contract over C and the kernel taps with one BLAS call.
        axes_x = [1] + list(range(2 + nsp, 2 + 2 * nsp))
        y = np.tensordot(win, w.astype(acc_dtype, copy=False), axes=(axes_x, list(range(1, 2 + nsp))))
        y = np.moveaxis(y, -1, 1)
    elif group == cin and w.shape[1] == 1:
        # Depthwise (optionally with a channel multiplier): accumulate one kernel tap at a time.
        # Images go in chunks of about DW_CHUNK_ELEMS outputs so that the product and the sum stay in cache
        # (4x faster than whole-batch temporaries on MobileNet's 112x112 layers); same sums, same order.
        mult = cout // cin
        xs = np.repeat(x, mult, axis=1) if mult > 1 else x
        xp = _pad_spatial(xs.astype(acc_dtype, copy=False), pads)
        y = np.empty((n, cout, *out), dtype=acc_dtype)
        per_image = cout * int(np.prod(out))
        chunk = max(1, DW_CHUNK_ELEMS // max(per_image, 1))
        tmp = np.empty((min(chunk, n), cout, *out), dtype=acc_dtype)
        taps = [(tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                       for t, d, s, o in zip(tap, dilations, strides, out, strict=True)),
                 w[(slice(None), 0) + tap].astype(acc_dtype).reshape((1, cout) + (1,) * nsp))
                for tap in np.ndindex(*kernel)]
        for i in range(0, n, chunk):
            yi, xi = y[i:i + chunk], xp[i:i + chunk]
            t = tmp[: len(yi)]
            for k, (sl, wt) in enumerate(taps):
                np.multiply(xi[(slice(None), slice(None)) + sl], wt, out=yi if k == 0 else t)
                if k:
                    yi += t
    else:
        cg, og = cin // group, cout // group
        parts = []
        for g in range(group):
            sub = dict(attrs, group=1)
            parts.append(conv2d_float(x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og], None, sub))
        y = np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.astype(acc_dtype).reshape((1, cout) + (1,) * nsp)
    return np.ascontiguousarray(y, dtype=x.dtype if x.dtype.kind == "f" else acc_dtype)


@register("Conv", infer=_infer, macs=_macs)
def conv(ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if x.dtype.kind != "f":
        raise UnsupportedOpError(f"float Conv kernel got {x.dtype} input")
    return [conv2d_float(x, w, b, attrs)]
