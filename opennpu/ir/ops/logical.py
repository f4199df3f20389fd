"""Boolean logic, the comparisons elementwise.py lacks, and Where (ONNX broadcasting semantics)."""

from __future__ import annotations

import numpy as np

from .registry import Spec, broadcast_shape, register


def _bool_binary_infer(ins, attrs):
    return [Spec(broadcast_shape(ins[0].shape, ins[1].shape), "bool")]


def _bool_unary_infer(ins, attrs):
    return [Spec(ins[0].shape, "bool")]


def _binary(name: str, fn):
    register(name, infer=_bool_binary_infer)(lambda ins, attrs: [np.asarray(fn(ins[0], ins[1]))])


_binary("And", np.logical_and)
_binary("Or", np.logical_or)
_binary("Xor", np.logical_xor)
_binary("GreaterOrEqual", np.greater_equal)
_binary("LessOrEqual", np.less_equal)


@register("Not", infer=_bool_unary_infer)
def not_(ins, attrs):
    return [np.logical_not(ins[0])]


@register("IsNaN", infer=_bool_unary_infer)
def isnan(ins, attrs):
    return [np.isnan(ins[0])]


@register("IsInf", infer=_bool_unary_infer)
def isinf(ins, attrs):
    x = ins[0]
    pos, neg = bool(attrs.get("detect_positive", 1)), bool(attrs.get("detect_negative", 1))
    return [np.isinf(x) & ((x > 0) & pos | (x < 0) & neg)]


def _where_infer(ins, attrs):
    return [Spec(broadcast_shape(ins[0].shape, ins[1].shape, ins[2].shape), ins[1].dtype)]


@register("Where", infer=_where_infer)
def where(ins, attrs):
    c, x, y = ins
    return [np.where(np.asarray(c, dtype=bool), x, y).astype(np.asarray(x).dtype, copy=False)]
