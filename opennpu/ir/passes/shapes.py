"""Shape inference with constant folding, and input-shape pinning.

Walks the graph once in topological order. Each op's ``infer`` gives output shapes (and values, for
shape arithmetic); a node whose inputs are all constant is evaluated with its float kernel and becomes
a constant. Every inferred tensor is checked against ``limits.max_tensor_bytes`` *before* anything is
allocated, so absurd or malicious shapes are refused instead of exhausting memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import OpenNPUError, ShapeError, TensorTooLargeError, UnsupportedOpError
from ..graph import Graph, Node
from ..ops import Spec, get_op

DEFAULT_MAX_TENSOR_BYTES = 1 << 31  # 2 GiB: far above any edge model, far below a memory blow-up
MAX_RANK = 8
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}


@dataclass
class Limits:
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    fold_max_elements: int = 1 << 24  # constants larger than this stay computed at run time


def check_shape(name: str, shape: tuple[int, ...], dtype: str, limits: Limits) -> None:
    if len(shape) > MAX_RANK:
        raise ShapeError(f"tensor {name!r} has rank {len(shape)} (max {MAX_RANK})")
    for d in shape:
        if not isinstance(d, (int, np.integer)) or d < 0:
            raise ShapeError(f"tensor {name!r} has invalid dimension {d!r} in shape {shape}")
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        raise ShapeError(f"tensor {name!r} has unknown dtype {dtype!r}") from None
    nbytes = int(np.prod([int(d) for d in shape], dtype=object)) * itemsize if shape else itemsize
    if nbytes > limits.max_tensor_bytes:
        raise TensorTooLargeError(f"tensor {name!r} of shape {shape} needs {nbytes} bytes, over the limit of "
                                  f"{limits.max_tensor_bytes} (raise it with max_tensor_bytes)")


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse CLI ``name=1x3x224x224`` strings."""
    out: dict[str, tuple[int, ...]] = {}
    for s in specs or []:
        name, sep, dims = s.rpartition("=")
        if not sep or not name:
            raise ShapeError(f"--input-shape {s!r}: expected NAME=D1xD2x...")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
        except ValueError:
            raise ShapeError(f"--input-shape {s!r}: dimensions must be integers") from None
        if any(d <= 0 for d in shape):
            raise ShapeError(f"--input-shape {s!r}: dimensions must be positive")
        out[name] = shape
    return out


def pin_input_shapes(graph: Graph, shapes: dict[str, tuple[int, ...]] | None, limits: Limits | None = None) -> None:
    limits = limits or Limits()
    shapes = dict(shapes or {})
    for name in list(shapes):
        if name not in graph.inputs:
            raise ShapeError(f"--input-shape names {name!r}, but the model's inputs are {graph.inputs}")
    for name in graph.inputs:
        t = graph.tensor(name)
        if name in shapes:
            new = shapes[name]
            if t.shape is not None:
                if len(new) != len(t.shape):
                    raise ShapeError(f"input {name!r}: rank {len(new)} given, model declares {t.shape}")
                for d_old, d_new, dn in zip(t.shape, new, t.dim_names or [None] * len(new), strict=True):
                    if d_old not in (-1, d_new) and dn is None and d_old > 0:
                        raise ShapeError(f"input {name!r}: shape {new} conflicts with the declared {t.shape}")
            t.shape = new
        elif t.shape is None or any(d < 0 for d in t.shape):
            raise ShapeError(f"input {name!r} has dynamic shape {t.shape}; pin it with --input-shape "
                             f"{name}=...")
        check_shape(name, t.shape, t.dtype, limits)


def _spec(graph: Graph, name: str) -> Spec | None:
    if not name:
        return None
    t = graph.tensor(name)
    if t.shape is None:
        raise ShapeError(f"tensor {name!r} has no known shape")
    return Spec(t.shape, t.dtype, t.data)


def _zeros(spec: Spec | None) -> np.ndarray | None:
    if spec is None:
        return None
    return spec.value if spec.value is not None else np.zeros(spec.shape, dtype=spec.dtype)


def infer_node(graph: Graph, node: Node, limits: Limits, fold: bool = True) -> None:
    opdef = get_op(node.op_type)
    ins = [_spec(graph, i) for i in node.inputs]
    all_const = all(s is None or s.value is not None for s in ins)
    try:
        if opdef.infer is not None:
            outs = opdef.infer(ins, node.attrs)
        elif all_const:
            outs = None
        else:
            # Ops without a shape function are cheap ones: run them on zeros of the right shape.
            if sum(int(np.prod(s.shape)) for s in ins if s is not None) > 1 << 22:
                raise ShapeError(f"{node.op_type} has no shape function and its inputs are too large to probe")
            outs = [Spec(a.shape, a.dtype.name) for a in opdef.kernel([_zeros(s) for s in ins], node.attrs)]
        for k, s in enumerate(outs or []):
            check_shape(node.outputs[k] if k < len(node.outputs) else node.name, s.shape, s.dtype, limits)
        if fold and all_const and node.op_type not in NONDETERMINISTIC and (
                outs is None or all(int(np.prod(s.shape)) <= limits.fold_max_elements for s in outs)):
            with np.errstate(all="ignore"):
                values = opdef.kernel([None if s is None else s.value for s in ins], node.attrs)
            outs = [Spec.of(np.asarray(v)) for v in values]
    except OpenNPUError as e:
        if isinstance(e, (ShapeError, UnsupportedOpError)) and node.name not in str(e):
            raise type(e)(f"node {node.name!r} ({node.op_type}): {e}") from None
        raise
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError, MemoryError) as e:
        raise ShapeError(f"node {node.name!r} ({node.op_type}): cannot infer shapes: {e}") from None
    for k, out in enumerate(node.outputs):
        if not out:
            continue
        if k >= len(outs):
            raise ShapeError(f"node {node.name!r} ({node.op_type}) declares {len(node.outputs)} outputs, "
                             f"produces {len(outs)}")
        s = outs[k]
        check_shape(out, s.shape, s.dtype, limits)
        t = graph.tensors[out]
        t.shape, t.dtype = tuple(int(d) for d in s.shape), s.dtype
        t.data = s.value if s.value is not None and fold else None


def infer_shapes(graph: Graph, limits: Limits | None = None, fold: bool = True) -> None:
    """Infer every tensor's shape; fold all-constant nodes into constants (then drop them)."""
    limits = limits or Limits()
    graph.toposort()
    for name in graph.inputs:
        t = graph.tensor(name)
        if t.shape is None or any(d < 0 for d in t.shape):
            raise ShapeError(f"input {name!r} has dynamic shape {t.shape}; pin it with --input-shape")
    for t in graph.tensors.values():
        if t.data is not None:
            check_shape(t.name, tuple(t.data.shape), t.data.dtype.name, limits)
    for node in graph.nodes:
        infer_node(graph, node, limits, fold)
    if fold:
        graph.nodes = [n for n in graph.nodes if not all(graph.tensors[o].is_const for o in n.outputs if o)]
        graph.remove_unused()
