"""Float execution of the IR with the numpy kernels of ``opennpu.ir.ops`` (also the CPU fallback device)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..errors import OpenNPUError, ShapeError
from ..ir.graph import Graph, Node
from ..ir.ops import get_op


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise ShapeError(f"missing inputs {missing}; the model takes {graph.inputs}")
    extra = [n for n in feeds if n not in graph.inputs]
    if extra:
        raise ShapeError(f"unknown inputs {extra}; the model takes {graph.inputs}")
    out = {}
    for name in graph.inputs:
        t = graph.tensor(name)
        arr = np.asarray(feeds[name])
        if t.shape is not None and tuple(arr.shape) != tuple(t.shape):
            raise ShapeError(f"input {name!r} has shape {arr.shape}, the model expects {t.shape}")
        out[name] = arr.astype(t.dtype, copy=False)
    return out


def run_node(node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    outs = list(get_op(node.op_type).kernel(args, node.attrs))
    clip = node.attrs.get("clip")
    if clip is not None:
        outs[0] = np.clip(outs[0], clip[0], clip[1]).astype(outs[0].dtype, copy=False)
    return outs


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], keep: bool = False,
              on_node: Callable[[Node, list[np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
    """Run the graph; returns its outputs (and every intermediate when ``keep``)."""
    return execute(graph, feeds, lambda node, args, env: run_node(node, args), keep, on_node)


NodeRunner = Callable[[Node, list, dict[str, np.ndarray]], list[np.ndarray]]


def execute(graph: Graph, feeds: Mapping[str, np.ndarray], run_one: NodeRunner, keep: bool = False,
            on_node: Callable[[Node, list[np.ndarray]], None] | None = None,
            skip: frozenset[str] | set[str] = frozenset(),
            extra_reads: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, np.ndarray]:
    """The walk every executor shares: feed checks, argument gathering, typed errors, freeing tensors after
    their last use. ``run_one(node, args, env)`` computes one node; nodes named in ``skip`` are not run;
    ``extra_reads[node name]``: tensors that node reads from ``env`` besides its inputs (kept alive for it)."""
    env: dict[str, np.ndarray] = check_feeds(graph, feeds)
    extra_reads = extra_reads or {}
    last_use: dict[str, int] = {}
    for idx, node in enumerate(graph.nodes):
        for i in (*node.inputs, *extra_reads.get(node.name, ())):
            last_use[i] = idx
    for idx, node in enumerate(graph.nodes):
        if node.name in skip:
            continue
        args = []
        for i in node.inputs:
            if not i:
                args.append(None)
            elif i in env:
                args.append(env[i])
            else:
                args.append(graph.tensor(i).data)
        try:
            with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
                outs = run_one(node, args, env)
        except OpenNPUError:
            raise
        except (ValueError, IndexError, TypeError) as e:
            raise ShapeError(f"node {node.name!r} ({node.op_type}) failed: {e}") from None
        for name, value in zip(node.outputs, outs, strict=False):
            if name:
                env[name] = value
        if on_node is not None:
            on_node(node, outs)
        if not keep:
            for i in (*node.inputs, *extra_reads.get(node.name, ())):
                if i and last_use.get(i) == idx and i not in graph.outputs and i in env and i not in graph.inputs:
                    del env[i]
    result = {o: env[o] if o in env else graph.tensor(o).data for o in graph.outputs}
    if keep:
        env.update(result)
        return env
    return result
