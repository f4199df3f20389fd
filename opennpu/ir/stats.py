"""Per-node statistics of a shaped graph: MACs and parameter counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph, Node
from .ops import Spec, get_op


@dataclass
class NodeStats:
    name: str
    op_type: str
    input_shapes: list[tuple[int, ...] | None]
    output_shapes: list[tuple[int, ...] | None]
    params: int  # elements of constant inputs (weights, biases)
    macs: int


def _spec(graph: Graph, name: str) -> Spec | None:
    if not name:
        return None
    t = graph.tensor(name)
    return Spec(t.shape or (), t.dtype, t.data)


def node_macs(graph: Graph, node: Node) -> int:
    opdef = get_op(node.op_type)
    if opdef.macs is None:
        return 0
    ins = [_spec(graph, i) for i in node.inputs]
    outs = [_spec(graph, o) for o in node.outputs]
    return int(opdef.macs(ins, outs, node.attrs))


def node_stats(graph: Graph, node: Node) -> NodeStats:
    params = sum(int(np.prod(graph.tensor(i).shape or ())) for i in node.inputs if i and graph.tensor(i).is_const)
    return NodeStats(node.name, node.op_type,
                     [graph.tensor(i).shape if i else None for i in node.inputs],
                     [graph.tensor(o).shape for o in node.outputs if o], params, node_macs(graph, node))


def graph_stats(graph: Graph) -> list[NodeStats]:
    return [node_stats(graph, n) for n in graph.nodes]
