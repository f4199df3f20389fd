"""Element-wise ops with numpy broadcasting (ONNX semantics)."""

from __future__ import annotations

import numpy as np

from .registry import Spec, broadcast_shape, register, same_as_input


def _binary_infer(ins: list[Spec | None], attrs: dict) -> list[Spec]:
    a, b = ins[0], ins[1]
    assert a is not None and b is not None
    return [Spec(broadcast_shape(a.shape, b.shape), a.dtype)]


def _cmp_infer(ins: list[Spec | None], attrs: dict) -> list[Spec]:
    return [Spec(_binary_infer(ins, attrs)[0].shape, "bool")]


def _variadic_infer(ins: list[Spec | None], attrs: dict) -> list[Spec]:
    specs = [s for s in ins if s is not None]
    return [Spec(broadcast_shape(*(s.shape for s in specs)), specs[0].dtype)]


def _keep_dtype(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    return result.astype(like.dtype, copy=False)


@register("Add", infer=_binary_infer)
def add(ins, attrs):
    return [_keep_dtype(ins[0] + ins[1], ins[0])]


@register("Sub", infer=_binary_infer)
def sub(ins, attrs):
    return [_keep_dtype(ins[0] - ins[1], ins[0])]


@register("Mul", infer=_binary_infer)
def mul(ins, attrs):
    return [_keep_dtype(ins[0] * ins[1], ins[0])]


@register("Div", infer=_binary_infer)
def div(ins, attrs):
    a, b = ins
    if np.issubdtype(a.dtype, np.integer):
        return [np.trunc(a / b).astype(a.dtype)]  # ONNX integer Div truncates
    return [_keep_dtype(a / b, a)]


@register("Pow", infer=_binary_infer)
def pow_(ins, attrs):
    return [_keep_dtype(np.power(ins[0], ins[1]), ins[0])]


@register("Max", infer=_variadic_infer)
def max_(ins, attrs):
    out = ins[0]
    for x in ins[1:]:
        out = np.maximum(out, x)
    return [out]


@register("Min", infer=_variadic_infer)
def min_(ins, attrs):
    out = ins[0]
    for x in ins[1:]:
        out = np.minimum(out, x)
    return [out]


@register("Sum", infer=_variadic_infer)
def sum_(ins, attrs):
    out = ins[0]
    for x in ins[1:]:
        out = out + x
    return [out]


@register("Equal", infer=_cmp_infer)
def equal(ins, attrs):
    return [np.equal(ins[0], ins[1])]


@register("Less", infer=_cmp_infer)
def less(ins, attrs):
    return [np.less(ins[0], ins[1])]


@register("Greater", infer=_cmp_infer)
def greater(ins, attrs):
    return [np.greater(ins[0], ins[1])]


# ---- unary -------------------------------------------------------------------------------------------

def _unary(name: str, fn):
    @register(name, infer=same_as_input())
    def kernel(ins, attrs):
        x = ins[0]
        return [_keep_dtype(fn(x, attrs), x)]

    return kernel


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


_unary("Relu", lambda x, a: np.maximum(x, 0))
_unary("Sigmoid", lambda x, a: _sigmoid(x))
_unary("Tanh", lambda x, a: np.tanh(x))
_unary("Exp", lambda x, a: np.exp(x))
_unary("Log", lambda x, a: np.log(x))
_unary("Sqrt", lambda x, a: np.sqrt(x))
_unary("Reciprocal", lambda x, a: 1.0 / x)
_unary("Neg", lambda x, a: -x)
_unary("Abs", lambda x, a: np.abs(x))
_unary("Floor", lambda x, a: np.floor(x))
_unary("Ceil", lambda x, a: np.ceil(x))
_unary("LeakyRelu", lambda x, a: np.where(x >= 0, x, x * a.get("alpha", 0.01)))
_unary("HardSigmoid", lambda x, a: np.clip(x * a.get("alpha", 0.2) + a.get("beta", 0.5), 0, 1))
_unary("HardSwish", lambda x, a: x * np.clip(x / 6.0 + 0.5, 0, 1))
_unary("Silu", lambda x, a: x * _sigmoid(x))
_unary("Softplus", lambda x, a: np.logaddexp(0, x))
_unary("Identity", lambda x, a: x)


@register("Clip", infer=same_as_input())
def clip(ins, attrs):
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("max")
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, dtype=x.dtype))
    return [out]


@register("PRelu", infer=_binary_infer)
def prelu(ins, attrs):
    x, slope = ins
    return [np.where(x >= 0, x, x * slope).astype(x.dtype)]
