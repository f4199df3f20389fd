"""MatMul (numpy broadcasting semantics) and Gemm."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from .registry import Spec, broadcast_shape, register


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a or not b:
        raise ShapeError("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"MatMul inner dimensions differ: {a} x {b}")
    out = (*broadcast_shape(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_infer(ins, attrs):
    return [Spec(_matmul_shape(ins[0].shape, ins[1].shape), ins[0].dtype)]


def _matmul_macs(ins, outs, attrs):
    return int(np.prod(outs[0].shape, dtype=np.int64) * ins[0].shape[-1])


@register("MatMul", infer=_matmul_infer, macs=_matmul_macs)
def matmul(ins, attrs):
    return [np.matmul(ins[0], ins[1])]


def _gemm_dims(ins, attrs):
    a, b = ins[0].shape, ins[1].shape
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"Gemm needs 2-D operands, got {a} and {b}")
    m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
    k2, n = (b[1], b[0]) if attrs.get("transB", 0) else b
    if k != k2:
        raise ShapeError(f"Gemm inner dimensions differ: {a} x {b}")
    return m, k, n


def _gemm_infer(ins, attrs):
    m, _, n = _gemm_dims(ins, attrs)
    if len(ins) > 2 and ins[2] is not None:
        broadcast_shape(ins[2].shape, (m, n))
    return [Spec((m, n), ins[0].dtype)]


def _gemm_macs(ins, outs, attrs):
    m, k, n = _gemm_dims(ins, attrs)
    return m * k * n


@register("Gemm", infer=_gemm_infer, macs=_gemm_macs)
def gemm(ins, attrs):
    a, b = ins[0], ins[1]
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + attrs.get("beta", 1.0) * ins[2]
    return [y.astype(ins[0].dtype, copy=False)]
