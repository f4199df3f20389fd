"""Op registry: one file per op (or per small family) registers its float kernel and shape inference.

The float kernels define each op's semantics (ONNX's, NCHW) and double as the CPU fallback of every
target. Shape inference functions see ``Spec`` records (shape, dtype, and the value when constant) so
that shape arithmetic subgraphs (Shape -> Gather -> Concat -> Reshape) fold away once inputs are pinned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ShapeError, UnsupportedOpError

Array = np.ndarray


@dataclass
class Spec:
    """What shape inference knows of a tensor: its shape, dtype and, for constants, its value."""

    shape: tuple[int, ...]
    dtype: str
    value: np.ndarray | None = None

    @staticmethod
    def of(arr: np.ndarray) -> Spec:
        return Spec(tuple(int(d) for d in arr.shape), arr.dtype.name, arr)


Kernel = Callable[[list[Any], dict[str, Any]], Sequence[Array]]
Infer = Callable[[list[Spec | None], dict[str, Any]], list[Spec]]
Macs = Callable[[list[Spec | None], list[Spec], dict[str, Any]], int]


@dataclass(frozen=True)
class OpDef:
    name: str
    kernel: Kernel
    infer: Infer | None = None  # None: infer by running the kernel on zeros (only for cheap ops)
    macs: Macs | None = None
    num_outputs: int = 1


REGISTRY: dict[str, OpDef] = {}


def register(name: str | Sequence[str], *, infer: Infer | None = None, macs: Macs | None = None,
             num_outputs: int = 1) -> Callable[[Kernel], Kernel]:
    names = [name] if isinstance(name, str) else list(name)

    def deco(fn: Kernel) -> Kernel:
        for n in names:
            REGISTRY[n] = OpDef(n, fn, infer, macs, num_outputs)
        return fn

    return deco


def get_op(op_type: str) -> OpDef:
    try:
        return REGISTRY[op_type]
    except KeyError:
        raise UnsupportedOpError(f"operator {op_type!r} is not supported") from None


# ---- small helpers shared by op files ---------------------------------------------------------------

def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"shapes {list(shapes)} do not broadcast") from None


def same_as_input(index: int = 0) -> Infer:
    def infer(ins: list[Spec | None], attrs: dict[str, Any]) -> list[Spec]:
        s = ins[index]
        assert s is not None
        return [Spec(s.shape, s.dtype)]

    return infer


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{what} {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def conv_out_dim(size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
                 ceil_mode: bool = False) -> int:
    eff = (k - 1) * dilation + 1
    span = size + pad_begin + pad_end - eff
    if span < 0:
        raise ShapeError(f"kernel extent {eff} is larger than the padded input {size + pad_begin + pad_end}")
    if stride <= 0:
        raise ShapeError(f"stride must be positive, got {stride}")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:  # last window must start inside input or left pad
        out -= 1
    return out


def resolve_auto_pad(attrs: dict[str, Any], in_spatial: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] with auto_pad resolved (SAME_UPPER puts the extra at the end)."""
    n = len(in_spatial)
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("NOTSET", "", None):
        pads = list(attrs.get("pads") or [0] * (2 * n))
        if len(pads) != 2 * n or any(p < 0 for p in pads):
            raise ShapeError(f"invalid pads {pads} for {n} spatial dims")
        return [int(p) for p in pads]
    if auto == "VALID":
        return [0] * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(f"auto_pad={auto!r}")
    begins, ends = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins + ends
