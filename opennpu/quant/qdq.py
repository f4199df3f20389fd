"""ONNX QDQ graphs -> the quantized-tensor IR (see /work/briefs/quant.md and opennpu/frontends/tflite.py).

A QDQ model (what ``onnxruntime.quantization.quantize_static(quant_format=QDQ)`` writes) describes integer
computation as float ops wrapped in ``DequantizeLinear`` (int -> float) and ``QuantizeLinear`` (float -> int)
pairs::

    x -> Q -> DQ -> Conv(., DQ(W_int8), DQ(B_int32)) -> y -> Q -> DQ -> MaxPool -> ...

``fold_qdq`` rewrites that into the representation the TFLite importer produces and the integer executor
runs: every tensor computed in integers keeps its storage dtype and carries ``QuantInfo``, ops read and write
those integer tensors directly (their meaning stays the float op on the real values), and only the graph's
float boundaries remain explicit ``QuantizeLinear`` / ``DequantizeLinear`` nodes::

    x -> QuantizeLinear -> x_q(int8) -> Conv(x_q, W(int8 const), B(int32 const)) -> y(int8) -> MaxPool -> ...

Rules (all decided per node, so partially quantized models fold as far as they can):
- ``DequantizeLinear`` of an integer constant becomes that constant with ``QuantInfo`` (scale and zero point
  copied bit for bit from the file; per-channel ``axis`` normalized to a non-negative axis).
- A node whose every activation input comes from a ``DequantizeLinear`` and whose every output is read only
  by ``QuantizeLinear`` nodes (one parameter set per output) becomes an integer node: it reads the integer
  tensors and writes its output, under the op's original output name, in the Q's dtype with the Q's
  parameters; those Q and DQ nodes disappear.
- Anything else stays float: Q after a float producer (or a graph input) stays as an explicit boundary, DQ
  before a float consumer or a graph output stays too. A DQ -> Q pair with identical parameters is a no-op
  and is removed; with different parameters it is kept (int -> float -> int requantization, as the TFLite
  importer writes it).

The pass runs on the raw imported graph, before ``canonicalize``: shape inference would otherwise fold
``DequantizeLinear(int8 constant)`` into float weights and lose the integers.

The QOperator format (``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QLinearAdd``...) is not folded;
``check_qoperator`` turns it into a clear UnsupportedOpError (re-quantize the float model with QDQ).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from ..ir.graph import Graph, Node, QuantInfo

Q_OP, DQ_OP = "QuantizeLinear", "DequantizeLinear"
INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                 "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere")

# Inputs that carry no quantized data (shapes, axes, sizes, thresholds): float or int64 constants there do
# not make a node "mixed". Data inputs of every other op must come from a DequantizeLinear.
_PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Resize": (1, 2, 3), "Upsample": (1,), "Split": (1,),
    "Gather": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceSum": (1,),
    "Clip": (1, 2), "TopK": (1,),
}


def has_qdq(graph: Graph) -> bool:
    return any(n.op_type in (Q_OP, DQ_OP) for n in graph.nodes)


def check_qoperator(graph_or_ops: Graph | Iterable[str]) -> None:
    """Raise UnsupportedOpError naming the QOperator-format ops, if any."""
    ops = graph_or_ops.op_types() if isinstance(graph_or_ops, Graph) else graph_or_ops
    found = sorted({o for o in ops if o in QOPERATOR_OPS})
    if found:
        raise UnsupportedOpError(f"QOperator-format quantized ONNX ({', '.join(found)}) is not supported; "
                                 "quantize the float model with quant_format=QuantFormat.QDQ instead")


def _params(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray, int | None, str] | None:
    """(scale float32 1-D, zero point int64 1-D, axis or None, integer dtype) of a Q/DQ node with constant
    parameters; None when they are computed at run time."""
    scale = graph.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    if scale is None:
        return None
    zp_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    zp = graph.const(zp_name) if zp_name else None
    if zp_name and zp is None:
        return None
    src = graph.tensor(node.inputs[0])
    if zp is not None:
        dtype = zp.dtype.name
    elif node.op_type == DQ_OP and (src.is_const or src.dtype in INT_DTYPES):
        dtype = src.dtype
    else:
        dtype = "uint8"  # ONNX: no zero point means uint8
    if dtype not in INT_DTYPES:
        return None
    if node.attrs.get("block_size"):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}) uses blocked quantization")
    if np.ndim(scale) > 1 or (zp is not None and np.ndim(zp) > 1):
        raise GraphError(f"node {node.name!r} ({node.op_type}): scale and zero point must be scalars or 1-D")
    s = np.asarray(scale, dtype=np.float32).reshape(-1)
    z = np.zeros(s.shape, np.int64) if zp is None else np.asarray(zp).astype(np.int64).reshape(-1)
    if z.size != s.size:
        raise GraphError(f"node {node.name!r} ({node.op_type}): {s.size} scales but {z.size} zero points")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise GraphError(f"node {node.name!r} ({node.op_type}) has non-finite or non-positive scales")
    axis: int | None = None
    if s.size > 1:
        axis = int(node.attrs.get("axis", 1))
        shape = src.shape
        if shape is not None and len(shape) > 0 and all(d >= 0 for d in shape):
            rank = len(shape)
            if not -rank <= axis < rank or shape[axis] != s.size:
                raise GraphError(f"node {node.name!r} ({node.op_type}): {s.size} scales do not match axis "
                                 f"{axis} of shape {shape}")
            axis %= rank
    return s, z, axis, dtype


def _quant(p: tuple[np.ndarray, np.ndarray, int | None, str]) -> QuantInfo:
    return QuantInfo(p[0], p[1], p[2])


def _same(a: QuantInfo | None, b: QuantInfo | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.axis == b.axis and np.array_equal(np.asarray(a.scale, np.float32), np.asarray(b.scale, np.float32))
            and np.array_equal(np.asarray(a.zero_point, np.int64), np.asarray(b.zero_point, np.int64)))


def fold_qdq(graph: Graph) -> int:
    """Rewrite QuantizeLinear/DequantizeLinear pairs into quantized tensors (module docstring). Mutates the
    graph; returns the number of Q/DQ nodes removed."""
    check_qoperator(graph)
    if not has_qdq(graph):
        return 0
    try:
        return _fold(graph)
    except (TypeError, ValueError, IndexError, OverflowError) as e:  # malformed attributes / parameters
        raise GraphError(f"cannot fold QuantizeLinear/DequantizeLinear pairs: {e}") from None


def _fold(graph: Graph) -> int:
    before = len(graph.nodes)
    params: dict[int, tuple[np.ndarray, np.ndarray, int | None, str]] = {}
    for n in graph.nodes:
        if n.op_type in (Q_OP, DQ_OP) and n.inputs and n.inputs[0]:
            p = _params(graph, n)
            if p is not None:
                params[id(n)] = p

    # 1. Constant DQs: the integer constant itself, annotated. A constant read through DQs with different
    #    parameters gets one annotated copy per parameter set.
    producers = graph.producers()
    dq_src: dict[str, str] = {}  # DQ output -> integer tensor it reads (activations and constants)
    annotated: dict[str, list[tuple[QuantInfo, str]]] = {}
    for n in graph.nodes:
        if n.op_type != DQ_OP or id(n) not in params:
            continue
        q = _quant(params[id(n)])
        src = graph.tensor(n.inputs[0])
        if src.is_const:
            if src.data.dtype.name not in INT_DTYPES:
                continue
            versions = annotated.setdefault(src.name, [])
            name = next((nm for qi, nm in versions if _same(qi, q)), None)
            if name is None:
                if src.quant is None or _same(src.quant, q):
                    src.quant, name = q, src.name
                else:
                    name = graph.add_const(src.name + ".q", src.data, q)
                versions.append((q, name))
            dq_src[n.outputs[0]] = name
        else:
            if src.quant is None:
                prod = producers.get(src.name)
                if prod is not None and prod.op_type == Q_OP and id(prod) in params:
                    src.quant, src.dtype = _quant(params[id(prod)]), params[id(prod)][3]
                elif prod is None and src.name in graph.inputs:
                    src.quant = q  # integer graph input: the DQ tells its parameters
            if _same(src.quant, q):
                dq_src[n.outputs[0]] = src.name

    # 2. Integer nodes: activations all from folded DQs, outputs all read by Q nodes only.
    consumers = graph.consumers()
    int_nodes: dict[int, list[Node]] = {}  # node id -> the Q node of each output
    for n in graph.nodes:
        if n.op_type in (Q_OP, DQ_OP) or not n.outputs:
            continue
        ok = False
        for k, i in enumerate(n.inputs):
            if not i:
                continue
            if i in dq_src:
                ok = True
                continue
            t = graph.tensor(i)
            if not (t.is_const and k in _PARAM_INPUTS.get(n.op_type, ())):
                ok = False
                break
        if not ok:
            continue
        qs: list[Node] = []
        for o in n.outputs:
            users = consumers.get(o, [])
            if not o or o in graph.outputs or not users or any(
                    u.op_type != Q_OP or id(u) not in params or u.inputs[0] != o or u.outputs[0] in graph.outputs
                    for u in users):
                qs = []
                break
            if any(not _same(_quant(params[id(u)]), _quant(params[id(users[0])])) for u in users[1:]):
                qs = []
                break
            qs.append(users[0])
        if len(qs) == len(n.outputs):
            int_nodes[id(n)] = qs

    # 3. Rewire.
    rename: dict[str, str] = {}  # Q output of an integer node -> the node's own (original) output name
    drop: set[int] = set()
    for n in graph.nodes:
        qs = int_nodes.get(id(n))
        if qs is None:
            continue
        n.inputs = [dq_src.get(i, i) for i in n.inputs]
        for o, qn in zip(n.outputs, qs, strict=True):
            p = params[id(qn)]
            t = graph.tensor(o)
            t.dtype, t.quant = p[3], _quant(p)
            for u in consumers.get(o, []):
                drop.add(id(u))
                rename[u.outputs[0]] = o
    for n in graph.nodes:
        if id(n) in drop:
            continue
        n.inputs = [rename.get(i, i) for i in n.inputs]
        if n.op_type == Q_OP and id(n) in params:  # boundary Q: annotate its integer output
            p = params[id(n)]
            t = graph.tensor(n.outputs[0])
            t.dtype, t.quant = p[3], _quant(p)
    dq_src = {k: rename.get(v, v) for k, v in dq_src.items()}

    # A DQ whose output only integer nodes read is gone; one feeding a float op or a graph output stays.
    # DQ -> Q with identical parameters is an identity on the integers.
    producers = graph.producers()
    consumers = graph.consumers()
    for n in graph.nodes:
        if n.op_type != DQ_OP or n.outputs[0] not in dq_src or n.outputs[0] in graph.outputs:
            continue
        src = dq_src[n.outputs[0]]
        users = consumers.get(n.outputs[0], [])
        for u in users:
            if u.op_type == Q_OP and id(u) in params and u.outputs[0] not in graph.outputs and \
                    _same(_quant(params[id(u)]), graph.tensor(src).quant) and \
                    params[id(u)][3] == graph.tensor(src).dtype:
                drop.add(id(u))
                graph.replace_uses(u.outputs[0], src)
        if all(id(u) in drop or id(u) in int_nodes for u in users):
            drop.add(id(n))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    graph.remove_unused()
    graph.metadata["qdq_folded"] = True
    return before - len(graph.nodes)


def fold_if_qdq(graph: Graph) -> Graph:
    """``fold_qdq`` when an ONNX graph has Q/DQ nodes (the hook ``load_model`` calls before canonicalize).
    TFLite imports are already in quantized-tensor form: their DEQUANTIZE -> op -> QUANTIZE islands mean
    float computation and must stay as they are."""
    if graph.metadata.get("format") != "onnx":
        return graph
    check_qoperator(graph)
    if has_qdq(graph):
        fold_qdq(graph)
    return graph




def dequantize(value: np.ndarray, q: QuantInfo) -> np.ndarray:
    """Real values of an integer array: scale * (q - zero_point), per tensor or along ``q.axis``."""
    scale = np.asarray(q.scale, np.float32).reshape(-1)
    zp = np.asarray(q.zero_point, np.int64).reshape(-1)
    if q.axis is not None and scale.size > 1:
        shape = [1] * value.ndim
        shape[q.axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return ((value.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def _quantize(x: np.ndarray, q: QuantInfo, dtype: str) -> np.ndarray:
    scale = np.asarray(q.scale, np.float32).reshape(-1)
    zp = np.asarray(q.zero_point, np.int64).reshape(-1)
    if q.axis is not None and scale.size > 1:
        shape = [1] * x.ndim
        shape[q.axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    info = np.iinfo(dtype)
    v = np.rint(x.astype(np.float32) / scale) + zp
    return np.clip(v, info.min, info.max).astype(dtype)


def simulate(graph: Graph, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    """Float simulation of a quantized-tensor graph with ONNX QDQ semantics: every node reads the real values
    of its integer inputs, runs its float kernel, and writes integer outputs with QuantizeLinear's rounding
    (half to even) and saturation. This is what ONNX Runtime's QDQ graph means (ORT's fused integer kernels
    round differently: within one step); it is *not* the TFLite-exact integer executor."""
    from ..runtime.cpu import check_feeds, run_node

    env = check_feeds(graph, feeds)
    for node in graph.nodes:
        if node.op_type in (Q_OP, DQ_OP):
            args = [env.get(i, graph.const(i)) if i else None for i in node.inputs]
            outs = run_node(node, args)
        else:
            args = []
            for i in node.inputs:
                v = env.get(i) if i in env else (graph.const(i) if i else None)
                t = graph.tensors.get(i) if i else None
                if v is not None and t is not None and t.quant is not None and v.dtype.kind in "iu":
                    v = dequantize(v, t.quant)
                args.append(v)
            with np.errstate(all="ignore"):
                outs = run_node(node, args)
            outs = [_quantize(v, graph.tensor(o).quant, graph.tensor(o).dtype)
                    if o and graph.tensor(o).quant is not None else v for o, v in zip(node.outputs, outs, strict=False)]
        for o, v in zip(node.outputs, outs, strict=False):
            if o:
                env[o] = v
    if keep:
        return env
    return {o: env[o] if o in env else graph.tensor(o).data for o in graph.outputs}


__all__ = ["check_qoperator", "dequantize", "fold_if_qdq", "fold_qdq", "has_qdq", "simulate"]
