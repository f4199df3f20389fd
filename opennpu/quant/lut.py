"""Table-defined integer activations.

Activations without a TFLite int8 kernel we reproduce (SiLU, GELU, HardSwish, Erf, LeakyRelu, ...) are
*defined* by a lookup table over every input code (256 entries for int8, 65536 for int16): entry q is
f(in_scale * (q - in_zp)) evaluated in float64, divided by out_scale, rounded half away from zero, plus
out_zp, saturated to the output type. This is the definition the executor runs and the one a target must
implement (NPUs implement such activations with LUTs as well).

TFLite's own int8 TANH is also a table (LUTPopulate with the C library's tanhf in float32); ``tanh_table``
reproduces that one bit for bit, like ``kernels.logistic_table`` does for LOGISTIC.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .fixedpoint import round_half_away
from .kernels._common import DTYPE_RANGE

Fn = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _gelu(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    approx = a.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


# float64 definitions (ONNX semantics and default attributes)
LUT_FUNCTIONS: dict[str, Fn] = {
    "HardSwish": lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "HardSigmoid": lambda x, a: np.clip(float(a.get("alpha", 0.2)) * x + float(a.get("beta", 0.5)), 0.0, 1.0),
    "Silu": lambda x, a: x / (1.0 + np.exp(-x)),
    "Gelu": _gelu,
    "Erf": lambda x, a: _erf(x),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, float(a.get("alpha", 0.01)) * x),
    "Elu": lambda x, a: np.where(x >= 0, x, float(a.get("alpha", 1.0)) * np.expm1(x)),
    "Selu": lambda x, a: float(a.get("gamma", 1.0507009873554805)) * np.where(
        x > 0, x, float(a.get("alpha", 1.6732632423543772)) * np.expm1(x)),
    "Celu": lambda x, a: np.maximum(x, 0) + np.minimum(0, float(a.get("alpha", 1.0)) * np.expm1(
        x / float(a.get("alpha", 1.0)))),
    "Softplus": lambda x, a: _softplus(x),
    "Softsign": lambda x, a: x / (1.0 + np.abs(x)),
    "Mish": lambda x, a: x * np.tanh(_softplus(x)),
    "Exp": lambda x, a: np.exp(x),
    "Log": lambda x, a: np.log(x),
    "Sqrt": lambda x, a: np.sqrt(x),
    "Reciprocal": lambda x, a: 1.0 / x,
    "Abs": lambda x, a: np.abs(x),
    "Neg": lambda x, a: -x,
    "Sin": lambda x, a: np.sin(x),
    "Cos": lambda x, a: np.cos(x),
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
}

LUT_OPS = frozenset(LUT_FUNCTIONS)


def lut_table(op_type: str, attrs: dict[str, Any], in_scale: float, in_zp: int, out_scale: float, out_zp: int,
              in_dtype: str = "int8", out_dtype: str = "int8") -> np.ndarray:
    """The table defining ``op_type`` on quantized values: entry i is the output for input code qmin + i."""
    fn = LUT_FUNCTIONS[op_type]
    qmin, qmax = DTYPE_RANGE[in_dtype]
    q = np.arange(qmin, qmax + 1, dtype=np.float64)
    real = np.float64(np.float32(in_scale)) * (q - in_zp)
    with np.errstate(all="ignore"):
        y = np.asarray(fn(real, attrs), dtype=np.float64) / np.float64(np.float32(out_scale))
    lo, hi = DTYPE_RANGE[out_dtype]
    y = np.nan_to_num(y, nan=0.0, posinf=float(hi) + 1e6, neginf=float(lo) - 1e6)
    y = np.clip(y, lo - 1e6, hi + 1e6)
    v = round_half_away(y) + out_zp
    return np.clip(v, lo, hi).astype(out_dtype)


def apply_table(x: np.ndarray, table: np.ndarray, in_dtype: str = "int8") -> np.ndarray:
    qmin = DTYPE_RANGE[in_dtype][0]
    return table[np.asarray(x).astype(np.int64) - qmin]


@functools.cache
def _libm_tanhf():
    name = ctypes.util.find_library("m")
    if not name:
        return None
    try:
        f = ctypes.CDLL(name).tanhf
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float]
    return f


def tanh_table(input_scale: float, input_zp: int, output_scale: float = 1 / 128, output_zp: int = 0) -> np.ndarray:
    """TFLite LUTPopulate<int8> for TANH: float32 dequantize, tanhf, round(v / out_scale) + out_zp, clamp.
    Entry i is for int8 input i - 128."""
    q = np.arange(-128, 128, dtype=np.int64)
    deq = np.float32(input_scale) * (q - input_zp).astype(np.float32)
    f = _libm_tanhf()
    if f is None:
        t = np.tanh(deq.astype(np.float64)).astype(np.float32)
    else:
        t = np.asarray([f(float(v)) for v in deq], dtype=np.float32)
    inv = np.float32(1) / np.float32(output_scale)
    r = round_half_away(t * inv).astype(np.float32)
    out = (r + np.float32(output_zp)).astype(np.int64)
    return np.clip(out, -128, 127).astype(np.int8)


__all__ = ["LUT_FUNCTIONS", "LUT_OPS", "apply_table", "lut_table", "tanh_table"]
