"""int8 SOFTMAX and LOGISTIC as LiteRT's builtin (optimized) kernels compute them on x86.

Both are float32 computations around a libm expf; expf is called through ctypes when the C library
is reachable so table entries match LiteRT bit for bit (numpy's float32 exp is a different
approximation); otherwise exp is evaluated in float64 and rounded to float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from opennpu.quant.fixedpoint import round_half_away


@functools.cache
def _libm_expf():
    name = ctypes.util.find_library("m")
    if not name:
        return None
    try:
        f = ctypes.CDLL(name).expf
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float]
    return f


def expf(v: np.ndarray) -> np.ndarray:
    """float32 exp matching the C library's expf where available."""
    v = np.asarray(v, dtype=np.float32)
    f = _libm_expf()
    if f is None:
        return np.exp(v.astype(np.float64)).astype(np.float32)
    flat = [f(float(t)) for t in v.ravel()]
    return np.asarray(flat, dtype=np.float32).reshape(v.shape)


def softmax(x: np.ndarray, *, input_scale: float, beta: float = 1.0, output_scale: float = 1 / 256,
            output_zp: int = -128) -> np.ndarray:
    """Softmax over the last axis. A 256-entry float table holds expf(-input_scale * beta * d) for
    d = max - x; the row sum is accumulated left to right in float32; each probability is
    table * (1 / (sum * output_scale)), rounded half away from zero, + output_zp, clamped."""
    x = np.asarray(x).astype(np.int64)
    neg = np.float32(-np.float32(input_scale) * np.float32(beta))
    table = expf(neg * np.arange(256, dtype=np.float32))  # table[d] = exp(-scale*beta*d)
    d = x.max(axis=-1, keepdims=True) - x
    e = table[d]
    total = np.add.accumulate(e, axis=-1, dtype=np.float32)[..., -1:]  # sequential, like the C loop
    inv = np.float32(1) / (total * np.float32(output_scale))
    p = e * inv
    q = round_half_away(p).astype(np.int64) + output_zp
    return np.clip(q, -128, 127).astype(np.int8)


def logistic_table(input_scale: float, input_zp: int, output_scale: float = 1 / 256,
                   output_zp: int = -128) -> np.ndarray:
    """TFLite LUTPopulate<int8> for sigmoid: entry i (i = q + 128) for int8 input q."""
    q = np.arange(-128, 128, dtype=np.int64)
    deq = np.float32(input_scale) * (q - input_zp).astype(np.float32)
    sig = np.float32(1) / (np.float32(1) + expf(-deq))
    inv = np.float32(1) / np.float32(output_scale)
    r = round_half_away(sig * inv).astype(np.float32)
    out = (r + np.float32(output_zp)).astype(np.int64)
    return np.clip(out, -128, 127).astype(np.int8)


def logistic(x: np.ndarray, *, input_scale: float, input_zp: int, output_scale: float = 1 / 256,
             output_zp: int = -128) -> np.ndarray:
    table = logistic_table(input_scale, input_zp, output_scale, output_zp)
    return table[np.asarray(x).astype(np.int64) + 128]
