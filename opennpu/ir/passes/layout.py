"""Layout clean-up: cancel inverse Transpose pairs and sink Transposes through layout-agnostic ops.

Importers of NHWC formats (TFLite) wrap every spatial op in Transpose(NHWC->NCHW) ... Transpose(NCHW->NHWC).
Pushing each Transpose *down* through element-wise ops, Concat and Pad (rewriting their constants, axes
and pads) brings it next to the inverse Transpose of the following spatial op, where the pair cancels.
What remains are transposes at graph inputs/outputs and around ops that really see the layout (Reshape,
Softmax over the last axis, ...). Every rewrite moves a Transpose strictly later in the graph, so the
pass terminates.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, QuantInfo, Tensor

UNARY = {
    "Relu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "LeakyRelu",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Silu",
    "Softplus",
    "Identity",
    "Cast",
    "Clip",
    "Erf",
    "Gelu",
    "Sign",
    "Elu",
    "Selu",
    "Not",
    "Round",
    "Sin",
    "Cos",
}
BINARY = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "PRelu",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Where",
    "Mod",
}
QDQ = {"QuantizeLinear", "DequantizeLinear"}
MAX_SWEEPS = 1000


def _compose(p1: list[int], p2: list[int]) -> list[int]:
    """Perm of transpose(transpose(x, p1), p2)."""
    return [p1[i] for i in p2]


def _inverse(p: list[int]) -> list[int]:
    inv = [0] * len(p)
    for i, a in enumerate(p):
        inv[a] = i
    return inv


def _perm(node: Node, graph: Graph) -> list[int] | None:
    perm = node.attrs.get("perm")
    if perm is None:
        shape = graph.tensor(node.inputs[0]).shape
        return None if shape is None else list(range(len(shape)))[::-1]
    return [int(p) for p in perm]


def _is_one_elem(t: Tensor) -> bool:
    shape = t.data.shape if t.data is not None else t.shape
    return shape is not None and all(d == 1 for d in shape)


def _cancel_pairs(graph: Graph) -> int:
    count = 0
    producers = graph.producers()
    for t2 in list(graph.iter_ops("Transpose")):
        src = t2.inputs[0]
        p2 = _perm(t2, graph)
        if p2 is None:
            continue
        if p2 == list(range(len(p2))) and t2.outputs[0] not in graph.outputs:
            graph.nodes.remove(t2)
            graph.replace_uses(t2.outputs[0], src)
            count += 1
            continue
        t1 = producers.get(src)
        if t1 is None or t1.op_type != "Transpose":
            continue
        p1 = _perm(t1, graph)
        if p1 is None or len(p1) != len(p2):
            continue
        q = _compose(p1, p2)
        if q == list(range(len(q))):
            if t2.outputs[0] in graph.outputs:
                continue  # keep the output's name; rare enough not to rename producers here
            graph.nodes.remove(t2)
            graph.replace_uses(t2.outputs[0], t1.inputs[0])
        else:
            t2.inputs = [t1.inputs[0]]
            t2.attrs["perm"] = q
        count += 1
        producers = graph.producers()
    return count


def _sink_one(graph: Graph, node: Node, producers: dict[str, Node]) -> bool:
    """Rewrite op(Transpose(x), ...) as Transpose(op(x, ...)) when the op does not care about layout."""
    op = node.op_type
    if op not in UNARY | BINARY | QDQ | {"Concat", "Pad"} or len(node.outputs) != 1:
        return False
    perm: list[int] | None = None
    sources: list[Node | None] = []
    for i, name in enumerate(node.inputs):
        prod = producers.get(name) if name else None
        is_data = i == 0 or op in BINARY or op == "Concat"
        if prod is not None and prod.op_type == "Transpose" and is_data:
            p = _perm(prod, graph)
            if p is None or (perm is not None and p != perm):
                return False
            perm = p
            sources.append(prod)
        else:
            sources.append(None)
    if perm is None:
        return False
    rank = len(perm)
    inv = _inverse(perm)
    new_inputs = list(node.inputs)
    attrs = dict(node.attrs)
    for i, (name, src) in enumerate(zip(node.inputs, sources, strict=True)):
        if not name:
            continue
        if src is not None:
            new_inputs[i] = src.inputs[0]
            continue
        t = graph.tensor(name)
        if op == "Pad" and i == 1:
            if t.data is None or t.data.size != 2 * rank or (len(node.inputs) > 3 and node.inputs[3]):
                return False
            pads = t.data.reshape(-1)
            new = np.empty_like(pads)
            for a in range(rank):  # output axis a of the old Pad is axis perm[a] of x
                new[perm[a]], new[rank + perm[a]] = pads[a], pads[rank + a]
            new_inputs[i] = graph.add_const(name + ".perm", new)
            continue
        if op == "Pad" or (op in QDQ and i > 0) or (op == "Clip" and i > 0):
            if op in QDQ and i > 0 and t.data is not None and t.data.size > 1:
                continue  # per-axis parameters: the axis attribute is remapped below
            if not _is_one_elem(t):
                return False
            continue
        if op == "Concat" and t.data is None:
            return False
        if _is_one_elem(t):
            continue
        if t.data is None or t.data.ndim > rank:
            return False
        lead = rank - t.data.ndim
        c = t.data.reshape((1,) * lead + t.data.shape)
        q = t.quant
        if q is not None and q.axis is not None:
            q = QuantInfo(q.scale, q.zero_point, perm[q.axis + lead])
        new_inputs[i] = graph.add_const(name + ".perm", np.ascontiguousarray(np.transpose(c, inv)), q)
    if op == "Concat":
        attrs["axis"] = perm[int(attrs["axis"]) % rank]
    if op in QDQ and "axis" in attrs:
        attrs["axis"] = perm[int(attrs["axis"]) % rank]
    out = node.outputs[0]
    ot = graph.tensor(out)
    shape = None
    if ot.shape is not None and len(ot.shape) == rank:
        shape = tuple(ot.shape[inv[a]] for a in range(rank))
    new_out = graph.unique_name(out + ".t")
    graph.add_tensor(Tensor(new_out, shape, ot.dtype, None, ot.quant))
    node.inputs, node.attrs, node.outputs = new_inputs, attrs, [new_out]
    idx = graph.nodes.index(node)
    graph.add_node(
        "Transpose",
        [new_out],
        [out],
        {"perm": list(perm)},
        name=graph.unique_name(out + ".transpose"),
        index=idx + 1,
    )
    return True


def _drop_dead_transposes(graph: Graph) -> None:
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.outputs)
    graph.nodes = [n for n in graph.nodes if n.op_type != "Transpose" or n.outputs[0] in used]


def cancel_transposes(graph: Graph) -> int:
    """Sink Transposes through layout-agnostic ops and cancel inverse pairs; returns the rewrite count."""
    total = 0
    for _ in range(MAX_SWEEPS):
        changed = _cancel_pairs(graph)
        _drop_dead_transposes(graph)
        producers = graph.producers()
        for node in list(graph.nodes):
            if _sink_one(graph, node, producers):
                changed += 1
                _drop_dead_transposes(graph)
                producers = graph.producers()
        total += changed
        if not changed:
            break
    if total:
        graph.remove_unused()
    return total
