"""ConvTranspose (ONNX semantics: NCHW input, weight (C_in, C_out/group, *kernel)), any spatial rank."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from .registry import Spec, register


def convtranspose_geometry(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict[str, Any]):
    """(kernel, strides, dilations, pads [b..., e...], output_padding, out_spatial)."""
    if len(x_shape) != len(w_shape) or len(x_shape) < 3:
        raise ShapeError(f"ConvTranspose input rank {len(x_shape)} and weight rank {len(w_shape)} differ")
    nsp = len(x_shape) - 2
    group = int(attrs.get("group", 1))
    if group <= 0 or x_shape[1] != w_shape[0] or w_shape[0] % group:
        raise ShapeError(f"ConvTranspose channels mismatch: input {x_shape}, weight {w_shape}, group {group}")
    kernel = [int(k) for k in (attrs.get("kernel_shape") or w_shape[2:])]
    strides = [int(s) for s in (attrs.get("strides") or [1] * nsp)]
    dilations = [int(d) for d in (attrs.get("dilations") or [1] * nsp)]
    out_pad = [int(p) for p in (attrs.get("output_padding") or [0] * nsp)]
    if any(len(v) != nsp for v in (kernel, strides, dilations, out_pad)):
        raise ShapeError(f"ConvTranspose attributes do not match {nsp} spatial dims")
    if list(kernel) != list(w_shape[2:]):
        raise ShapeError(f"ConvTranspose kernel_shape {kernel} differs from the weight's {list(w_shape[2:])}")
    if any(v <= 0 for v in kernel + strides + dilations) or any(p < 0 for p in out_pad):
        raise ShapeError(f"ConvTranspose kernel/stride/dilation invalid: {kernel} {strides} {dilations}")
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    full = [s * (x_shape[2 + i] - 1) + out_pad[i] + ext[i] for i, s in enumerate(strides)]
    out_shape = attrs.get("output_shape")
    if out_shape is not None:
        out_shape = [int(v) for v in out_shape][-nsp:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [x_shape[2 + i] * strides[i] for i in range(nsp)]
    if out_shape is not None:
        if len(out_shape) != nsp:
            raise ShapeError(f"ConvTranspose output_shape {out_shape} does not match {nsp} spatial dims")
        total = [f - o for f, o in zip(full, out_shape, strict=True)]
        if any(t < 0 for t in total):
            raise ShapeError(f"ConvTranspose output_shape {out_shape} is larger than the full output {full}")
        # The odd pixel is trimmed at the end for SAME_UPPER, at the start otherwise (ONNX spec and ORT).
        if auto == "SAME_UPPER":
            begins = [t // 2 for t in total]
        else:
            begins = [t - t // 2 for t in total]
        pads = begins + [t - b for t, b in zip(total, begins, strict=True)]
    elif auto in ("NOTSET", "", None):
        pads = [int(p) for p in (attrs.get("pads") or [0] * (2 * nsp))]
        if len(pads) != 2 * nsp or any(p < 0 for p in pads):
            raise ShapeError(f"ConvTranspose: invalid pads {pads}")
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    else:
        raise UnsupportedOpError(f"ConvTranspose auto_pad={auto!r}")
    out = [full[i] - pads[i] - pads[nsp + i] for i in range(nsp)]
    if any(o <= 0 for o in out):
        raise ShapeError(f"ConvTranspose output {out} is empty (pads {pads})")
    return kernel, strides, dilations, pads, out_pad, out


def _infer(ins, attrs):
    x, w = ins[0], ins[1]
    if len(ins) > 2 and ins[2] is not None and ins[2].shape != (w.shape[1] * int(attrs.get("group", 1)),):
        raise ShapeError(f"ConvTranspose bias shape {ins[2].shape} does not match the weight {w.shape}")
    *_, pads, _, out = convtranspose_geometry(x.shape, w.shape, attrs)
    cout = w.shape[1] * int(attrs.get("group", 1))
    return [Spec((x.shape[0], cout, *out), x.dtype)]


def _macs(ins, outs, attrs):
    x, w = ins[0], ins[1]
    # Every input pixel is multiplied by the whole (C_out/group x kernel) block of its group.
    return int(np.prod(x.shape, dtype=np.int64) * np.prod(w.shape[1:], dtype=np.int64))


def conv_transpose_float(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                         attrs: dict[str, Any]) -> np.ndarray:
    kernel, strides, dilations, pads, out_pad, out = convtranspose_geometry(x.shape, w.shape, attrs)
    group = int(attrs.get("group", 1))
    nsp = x.ndim - 2
    n, cin = x.shape[:2]
    cg, og = cin // group, w.shape[1]
    acc = np.result_type(x.dtype, w.dtype, np.float32)
    sp = x.shape[2:]
    npix = int(np.prod(sp, dtype=np.int64))
    ktaps = int(np.prod(kernel, dtype=np.int64))
    # cols[n, g, pixel, o, tap] = sum_c x[n, g, c, pixel] * w[g, c, o, tap]: one batched matmul.
    xg = x.astype(acc, copy=False).reshape(n, group, cg, npix).transpose(0, 1, 3, 2)
    wg = w.astype(acc, copy=False).reshape(group, cg, og * ktaps)
    cols = np.matmul(xg, wg).reshape(n, group, *sp, og, *kernel)
    # -> (n, group, og, *sp, *kernel) so a tap slice is (n, C_out, *sp)
    cols = np.moveaxis(cols, 2 + nsp, 2).reshape(n, group * og, *sp, *kernel)
    full = [s * (d - 1) + p + (k - 1) * dl + 1
            for s, d, p, k, dl in zip(strides, sp, out_pad, kernel, dilations, strict=True)]
    y = np.zeros((n, group * og, *full), dtype=acc)
    for tap in np.ndindex(*kernel):
        sl = tuple(slice(t * dl, t * dl + s * (d - 1) + 1, s)
                   for t, dl, s, d in zip(tap, dilations, strides, sp, strict=True))
        y[(slice(None), slice(None)) + sl] += cols[(Ellipsis,) + tap]
    crop = tuple(slice(pads[i], pads[i] + out[i]) for i in range(nsp))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.astype(acc).reshape((1, -1) + (1,) * nsp)
    return np.ascontiguousarray(y, dtype=x.dtype)


@register("ConvTranspose", infer=_infer, macs=_macs)
def conv_transpose(ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if x.dtype.kind != "f":
        raise UnsupportedOpError(f"float ConvTranspose kernel got {x.dtype} input")
    return [conv_transpose_float(x, w, b, attrs)]
