"""Graph simplifications every importer's output goes through (after shape inference and folding).

Each pass is a small function ``pass(graph) -> int`` returning how many rewrites it made.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node

# Ops that may carry a fused output clamp in attrs["clip"] = (lo, hi).
CLAMP_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "AveragePool",
                   "MaxPool", "GlobalAveragePool", "Concat"}


def _single_consumer(graph: Graph, tensor: str, consumers: dict[str, list[Node]]) -> Node | None:
    users = consumers.get(tensor, [])
    if len(users) != 1 or tensor in graph.outputs:
        return None
    return users[0]


def _bypass(graph: Graph, node: Node) -> None:
    """Remove a one-in-one-out node, wiring its consumers to its input."""
    src, dst = node.inputs[0], node.outputs[0]
    graph.nodes.remove(node)
    if dst in graph.outputs:
        # Keep the graph's output name: rename the producer's output instead.
        prod = graph.producers().get(src)
        if prod is not None and src not in graph.outputs and src not in graph.inputs:
            prod.outputs = [dst if o == src else o for o in prod.outputs]
            graph.replace_uses(src, dst)
            return
        graph.add_node("Identity", [src], [dst], name=node.name)
        return
    graph.replace_uses(dst, src)


def remove_identities(graph: Graph) -> int:
    count = 0
    for node in list(graph.nodes):
        if node.op_type in ("Identity", "Dropout") and node.inputs and node.inputs[0]:
            producer = graph.producers().get(node.inputs[0])
            if node.outputs[0] in graph.outputs and producer is None:
                continue  # output directly copies an input or constant: keep it
            _bypass(graph, node)
            count += 1
    return count


def fold_batchnorm(graph: Graph) -> int:
    """Conv -> BatchNormalization with constant statistics becomes one Conv with scaled weights."""
    count = 0
    consumers = graph.consumers()
    for bn in list(graph.iter_ops("BatchNormalization")):
        prod = graph.producers().get(bn.inputs[0])
        params = [graph.const(n) for n in bn.inputs[1:5]]
        if prod is None or prod.op_type != "Conv" or any(p is None for p in params) or "clip" in prod.attrs:
            continue
        if _single_consumer(graph, prod.outputs[0], consumers) is not bn:
            continue
        w = graph.const(prod.inputs[1])
        b = graph.const(prod.inputs[2]) if len(prod.inputs) > 2 and prod.inputs[2] else None
        if w is None or (len(prod.inputs) > 2 and prod.inputs[2] and b is None):
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        k = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        w_new = (w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b_old = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        b_new = ((b_old - mean) * k + bias).astype(w.dtype)
        prod.inputs = [prod.inputs[0], graph.add_const(prod.name + ".weight_bn", w_new),
                       graph.add_const(prod.name + ".bias_bn", b_new)]
        prod.outputs = [bn.outputs[0]]
        graph.nodes.remove(bn)
        count += 1
    if count:
        graph.remove_unused()
    return count


def fold_pad_into_conv(graph: Graph) -> int:
    """Zero constant Pad on the spatial axes feeding a Conv becomes the Conv's own pads."""
    count = 0
    consumers = graph.consumers()
    for pad in list(graph.iter_ops("Pad")):
        conv = _single_consumer(graph, pad.outputs[0], consumers)
        if conv is None or conv.op_type != "Conv" or conv.inputs[0] != pad.outputs[0]:
            continue
        mode = pad.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = graph.const(pad.inputs[1]) if len(pad.inputs) > 1 and pad.inputs[1] else pad.attrs.get("pads")
        value = graph.const(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] else pad.attrs.get("value", 0)
        has_axes = len(pad.inputs) > 3 and pad.inputs[3]
        if mode != "constant" or pads is None or has_axes or (value is not None and np.any(np.asarray(value))):
            continue
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        rank = len(pads) // 2
        if rank < 3 or any(pads[i] or pads[rank + i] for i in range(2)) or any(p < 0 for p in pads):
            continue
        nsp = rank - 2
        old = list(conv.attrs.get("pads") or [0] * 2 * nsp)
        conv.attrs["pads"] = [old[i] + pads[2 + i] for i in range(nsp)] + \
                             [old[nsp + i] + pads[rank + 2 + i] for i in range(nsp)]
        conv.inputs[0] = pad.inputs[0]
        graph.nodes.remove(pad)
        count += 1
    if count:
        graph.remove_unused()
    return count


def _clamp_of(graph: Graph, node: Node) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return (0.0, float("inf"))
    if node.op_type == "Clip":
        lo = graph.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attrs.get("min")
        hi = graph.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else node.attrs.get("max")
        if (len(node.inputs) > 1 and node.inputs[1] and lo is None) or \
           (len(node.inputs) > 2 and node.inputs[2] and hi is None):
            return None  # dynamic bounds
        return (float(lo) if lo is not None else float("-inf"), float(hi) if hi is not None else float("inf"))
    return None


def fuse_activations(graph: Graph) -> int:
    """Producer -> Relu/Clip (single consumer) becomes the producer with attrs["clip"]."""
    count = 0
    # Producer/consumer maps are kept up to date incrementally: recomputing them per node is O(N^2).
    consumers = graph.consumers()
    producers = graph.producers()
    removed: set[int] = set()
    for act in list(graph.nodes):
        clamp = _clamp_of(graph, act)
        if clamp is None:
            continue
        prod = producers.get(act.inputs[0])
        if prod is None or prod.op_type not in CLAMP_PRODUCERS or len(prod.outputs) != 1:
            continue
        if _single_consumer(graph, prod.outputs[0], consumers) is not act:
            continue
        if graph.tensor(prod.outputs[0]).dtype not in ("float32", "float16", "float64"):
            continue
        lo, hi = prod.attrs.get("clip", (float("-inf"), float("inf")))
        prod.attrs["clip"] = (max(lo, clamp[0]), min(hi, clamp[1]))
        old = prod.outputs[0]
        prod.outputs = [act.outputs[0]]
        producers.pop(old, None)
        producers[act.outputs[0]] = prod
        consumers[old] = []
        removed.add(id(act))
        count += 1
    if count:
        graph.nodes = [n for n in graph.nodes if id(n) not in removed]
        graph.remove_unused()
    return count


def fuse_gated_activations(graph: Graph) -> int:
    """``x * Sigmoid(x)`` becomes ``Silu(x)``; ``x * HardSigmoid(x)`` with alpha 1/6, beta 1/2 becomes
    ``HardSwish(x)``. Exporters spell these activations out (YOLOv8, PP-OCR); as single ops they map to one
    NPU lookup table instead of two ops."""
    count = 0
    consumers = graph.consumers()
    producers = graph.producers()
    removed: set[int] = set()
    for mul in graph.nodes:
        if mul.op_type != "Mul" or len(mul.inputs) != 2:
            continue
        for gate_in, x in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
            gate = producers.get(gate_in)
            if gate is None or id(gate) in removed or gate.inputs[:1] != [x] or "clip" in gate.attrs:
                continue
            if gate.op_type == "Sigmoid":
                fused = "Silu"
            elif gate.op_type == "HardSigmoid" and np.isclose(gate.attrs.get("alpha", 0.2), 1 / 6) \
                    and np.isclose(gate.attrs.get("beta", 0.5), 0.5):
                fused = "HardSwish"
            else:
                continue
            if _single_consumer(graph, gate_in, consumers) is not mul:
                continue
            if graph.tensor(x).shape != graph.tensor(mul.outputs[0]).shape:
                continue
            mul.op_type, mul.inputs, mul.attrs = fused, [x], {}
            removed.add(id(gate))
            count += 1
            break
    if count:
        graph.nodes = [n for n in graph.nodes if id(n) not in removed]
        graph.remove_unused()
    return count
