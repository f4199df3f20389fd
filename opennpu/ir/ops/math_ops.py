"""More unary/binary math and activations: Erf, Gelu, Elu, Selu, Celu, Mish, Softsign, ThresholdedRelu,
Shrink, trigonometry, Sign, Round, Mod, Hardmax, Dropout (inference: identity)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedOpError
from .registry import Spec, broadcast_shape, norm_axis, register, same_as_input

# erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)); 36 terms reach double precision for |x| < 2.
_ERF_SERIES = np.array([(-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(36)][::-1])
_ERFC_CF_TERMS = 60
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorized erf in float64 (max abs error ~1e-15): Taylor series near 0, continued fraction for erfc
    beyond |x| = 2 (where the series would cancel badly)."""
    x = np.asarray(x)
    a = np.abs(x.astype(np.float64))
    out = np.empty_like(a)
    small = a < 2.0
    s = a[small]
    t = s * s
    acc = np.zeros_like(t)
    for c in _ERF_SERIES:
        acc = acc * t + c
    out[small] = _TWO_OVER_SQRT_PI * s * acc
    # erfc(b) = exp(-b^2) / sqrt(pi) / (b + (1/2)/(b + 1/(b + (3/2)/(b + ...)))), evaluated bottom-up.
    b = np.minimum(a[~small], 6.0)  # erfc(6) ~ 2e-17: erf is 1 in double beyond
    f = b.copy()
    for k in range(_ERFC_CF_TERMS, 0, -1):
        f = b + (k / 2.0) / f
    out[~small] = 1.0 - np.exp(-b * b) / (math.sqrt(math.pi) * f)
    out = np.where(np.isnan(a), np.nan, out)
    return np.copysign(out, x.astype(np.float64)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _unary(name: str, fn):
    @register(name, infer=same_as_input())
    def kernel(ins, attrs):
        x = ins[0]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return [np.asarray(fn(x, attrs)).astype(x.dtype, copy=False)]

    return kernel


def _gelu(x, a):
    approx = a.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    xf = x.astype(np.float64)
    if approx == "tanh":
        return 0.5 * xf * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xf + 0.044715 * xf ** 3)))
    if approx != "none":
        raise UnsupportedOpError(f"Gelu approximate={approx!r}")
    return 0.5 * xf * (1.0 + erf(xf / math.sqrt(2.0)))


def _celu(x, a):
    alpha = a.get("alpha", 1.0)
    return np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))


_unary("Erf", lambda x, a: erf(x))
_unary("Gelu", _gelu)
_unary("Elu", lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))))
_unary("Selu", lambda x, a: a.get("gamma", 1.05070102214813232421875) * np.where(
    x > 0, x, a.get("alpha", 1.67326319217681884765625) * np.expm1(np.minimum(x, 0))))
_unary("Celu", _celu)
_unary("Mish", lambda x, a: x * np.tanh(np.logaddexp(0, x)))
_unary("Softsign", lambda x, a: x / (1 + np.abs(x)))
_unary("ThresholdedRelu", lambda x, a: np.where(x > a.get("alpha", 1.0), x, 0))
_unary("Shrink", lambda x, a: np.where(x < -a.get("lambd", 0.5), x + a.get("bias", 0.0),
                                       np.where(x > a.get("lambd", 0.5), x - a.get("bias", 0.0), 0)))
_unary("Sin", lambda x, a: np.sin(x))
_unary("Cos", lambda x, a: np.cos(x))
_unary("Tan", lambda x, a: np.tan(x))
_unary("Asin", lambda x, a: np.arcsin(x))
_unary("Acos", lambda x, a: np.arccos(x))
_unary("Atan", lambda x, a: np.arctan(x))
_unary("Sinh", lambda x, a: np.sinh(x))
_unary("Cosh", lambda x, a: np.cosh(x))
_unary("Sign", lambda x, a: np.sign(x))
_unary("Round", lambda x, a: np.round(x))  # half to even, as ONNX specifies


@register("Mod", infer=lambda ins, a: [Spec(broadcast_shape(ins[0].shape, ins[1].shape), ins[0].dtype)])
def mod(ins, attrs):
    a, b = ins
    if attrs.get("fmod", 0):
        return [np.fmod(a, b).astype(a.dtype, copy=False)]
    if a.dtype.kind == "f":
        raise UnsupportedOpError("Mod with fmod=0 on floating-point inputs")
    return [np.mod(a, b).astype(a.dtype, copy=False)]


@register("Hardmax", infer=same_as_input())
def hardmax(ins, attrs):
    x = ins[0]
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    out = np.zeros_like(x)
    np.put_along_axis(out, idx, 1, axis=axis)
    return [out]


def _dropout_infer(ins, attrs):
    return [Spec(ins[0].shape, ins[0].dtype), Spec(ins[0].shape, "bool")]


@register("Dropout", infer=_dropout_infer, num_outputs=2)
def dropout(ins, attrs):
    x = ins[0]
    if len(ins) > 2 and ins[2] is not None and bool(np.asarray(ins[2]).reshape(-1)[0]):
        raise UnsupportedOpError("Dropout with training_mode=True")
    return [x, np.ones(x.shape, dtype=bool)]
