"""The one small IR every stage works on.

A Graph is a list of Nodes in topological order over named Tensors. Op semantics are ONNX's (NCHW
layout for spatial ops) for the op types registered in ``opennpu.ir.ops``; importers translate other
formats into them. Fused output clamps (ReLU, ReLU6, Clip) live in ``node.attrs["clip"] = (lo, hi)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GraphError


@dataclass(frozen=True)
class QuantInfo:
    """Affine quantization of a tensor: real = scale * (q - zero_point), per tensor or along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    bits: int | None = None  # narrower than the storage dtype, e.g. 4 for int4 weights kept in int8

    @property
    def per_channel(self) -> bool:
        return self.axis is not None and np.asarray(self.scale).size > 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...] | None = None  # None until shape inference (or a dynamic input)
    dtype: str = "float32"  # numpy dtype name
    data: np.ndarray | None = None  # constant value (initializer or folded)
    quant: QuantInfo | None = None
    dim_names: tuple[str | None, ...] | None = None  # symbolic dims of graph inputs, e.g. "batch"

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        if self.shape is None:
            raise GraphError(f"tensor {self.name!r} has no known shape")
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op_type: str
    inputs: list[str]  # "" marks an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op_type}, in={self.inputs}, out={self.outputs})"


@dataclass
class Graph:
    name: str = "graph"
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- construction helpers -------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"tensor {name!r} is used but never defined") from None

    def add_tensor(self, t: Tensor) -> Tensor:
        self.tensors[t.name] = t
        return t

    def add_const(self, name: str, value: np.ndarray, quant: QuantInfo | None = None) -> str:
        name = self.unique_name(name)
        arr = np.asarray(value)
        self.tensors[name] = Tensor(name, tuple(arr.shape), arr.dtype.name, arr, quant)
        return name

    def unique_name(self, base: str) -> str:
        if base not in self.tensors and not any(n.name == base for n in self.nodes):
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in self.tensors:
                return cand
        raise AssertionError("unreachable")

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str], attrs: dict | None = None,
                 name: str = "", index: int | None = None) -> Node:
        for o in outputs:
            self.tensors.setdefault(o, Tensor(o))
        node = Node(op_type, list(inputs), list(outputs), dict(attrs or {}), name or outputs[0])
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    # ---- queries ------------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        cons: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    cons.setdefault(i, []).append(n)
        return cons

    def const(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else t.data

    def iter_ops(self, op_type: str) -> Iterator[Node]:
        return (n for n in self.nodes if n.op_type == op_type)

    # ---- structure ------------------------------------------------------------------------------
    def toposort(self) -> None:
        """Order nodes so every input is produced before use; raise GraphError on cycles or dangling inputs."""
        produced_by: dict[str, int] = {}
        for idx, n in enumerate(self.nodes):
            for o in n.outputs:
                if not o:
                    continue
                if o in produced_by:
                    raise GraphError(f"tensor {o!r} is produced by more than one node")
                produced_by[o] = idx
        available = {name for name, t in self.tensors.items() if t.is_const} | set(self.inputs)
        for o in produced_by:
            if o in available and self.tensors[o].is_const:
                raise GraphError(f"tensor {o!r} is both a constant and a node output")
        deps: list[set[int]] = []
        for n in self.nodes:
            d = set()
            for i in n.inputs:
                if not i or i in available and i not in produced_by:
                    continue
                if i not in produced_by:
                    raise GraphError(f"node {n.name!r} ({n.op_type}) reads {i!r}, which is neither an input, "
                                     "an initializer nor produced by any node")
                d.add(produced_by[i])
            deps.append(d)
        order: list[int] = []
        state = [0] * len(self.nodes)  # 0 new, 1 visiting, 2 done
        for root in range(len(self.nodes)):
            if state[root]:
                continue
            stack = [(root, iter(sorted(deps[root])))]
            state[root] = 1
            while stack:
                idx, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    state[idx] = 2
                    order.append(idx)
                elif state[nxt] == 1:
                    raise GraphError(f"graph has a cycle through node {self.nodes[nxt].name!r}")
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(deps[nxt]))))
        self.nodes = [self.nodes[i] for i in order]
        for o in self.outputs:
            if o not in produced_by and o not in available:
                raise GraphError(f"graph output {o!r} is never produced")

    def remove_unused(self) -> None:
        """Drop nodes whose outputs nobody needs, then tensors nobody references."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs):
                kept.append(n)
                needed.update(i for i in n.inputs if i)
        self.nodes = kept[::-1]
        referenced = needed | set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        self.tensors = {k: v for k, v in self.tensors.items() if k in referenced}

    def replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def copy(self) -> Graph:
        """Structural copy: new nodes/tensor records, constant arrays shared (they are never mutated in place)."""
        tensors = {k: Tensor(t.name, t.shape, t.dtype, t.data, t.quant, t.dim_names) for k, t in self.tensors.items()}
        nodes = [Node(n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs), n.name) for n in self.nodes]
        return Graph(self.name, nodes, tensors, list(self.inputs), list(self.outputs), dict(self.metadata))

    def op_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return counts

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs})"


def const_inputs(graph: Graph, names: Iterable[str]) -> list[np.ndarray | None]:
    return [graph.const(n) if n else None for n in names]
