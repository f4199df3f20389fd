"""Cross-layer range equalization of activation channels (a float-graph rewrite before quantization).

Per-tensor int8 activations give every channel of a tensor the same step; in MobileNet-style networks the
channels of a conv's output have ranges that differ by 10-100x (depthwise outputs especially), so the small
channels are quantized with a handful of levels and the next layer amplifies that noise. A Conv ``P`` whose
output ``T`` feeds only Conv layers can have channel ``i`` of ``T`` multiplied by ``s_i > 0`` (P's output
row ``i`` and bias ``i`` times ``s_i``) and undone in every consumer (the weights reading input channel
``i`` divided by ``s_i``): the graph computes the same function, as conv is linear and a fused clamp
``clip(x, lo, hi)`` is positively homogeneous as long as the clamp bounds are not reached (``s_i`` is capped
so that ``s_i * max_i * CLAMP_MARGIN <= hi`` and likewise for ``lo`` on the calibration data: the ReLU6
ceiling still applies, at ``6 / s_i`` in the original units, never below 1.5x what calibration saw; Nagel et
al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019, replace ReLU6 by
ReLU instead). Residual streams (tensors joined by Adds, every one made by a conv or such an Add and read by
convs or such Adds) are rescaled as one: all their producing convs' rows, all their consumers' columns.

With per-output-channel weight scales, P's rescaled rows cost nothing, and neither do depthwise consumers
(one input channel per filter): only a dense consumer's weights lose relative precision on the columns
divided by ``s_i``. So channels are scaled towards the tensor's largest channel range ``R``:
``s_i = (R / range_i) ** beta`` (``beta = 1`` when every consumer is depthwise, ``DENSE_BETA`` otherwise,
the geometric compromise between activation and weight precision), clipped to [1, ``S_MAX``].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..ir.graph import Graph, Node
from ..runtime.cpu import run_graph

S_MAX = 16.0
DENSE_BETA = 0.5
CLAMP_MARGIN = 1.5  # a rescaled channel's clamp stays this far above the largest value calibration saw


def _conv_weights(g: Graph, n: Node) -> np.ndarray | None:
    if n.op_type != "Conv" or len(n.inputs) < 2 or not n.inputs[1]:
        return None
    w = g.tensors.get(n.inputs[1])
    return w.data if w is not None and w.data is not None and w.data.ndim == 4 else None


def _is_act_add(g: Graph, n: Node) -> bool:
    return (n.op_type == "Add" and len(n.inputs) == 2 and all(i and g.tensors[i].data is None for i in n.inputs)
            and "clip" not in n.attrs and g.tensors[n.inputs[0]].shape == g.tensors[n.inputs[1]].shape
            == g.tensors[n.outputs[0]].shape)


def groups(g: Graph) -> list[tuple[list[str], list[Node], list[Node]]]:
    """(tensors, conv producers, conv consumers) whose channels can be rescaled together (module doc): a
    conv output read only by convs, or a residual stream (tensors joined by Adds of two activations, e.g.
    MobileNetV2's linear bottlenecks) whose every tensor is made by a conv or one of its Adds and read only
    by convs or its Adds."""
    consumers, producers = g.consumers(), g.producers()
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    for n in g.nodes:
        if _is_act_add(g, n):
            for i in n.inputs:
                ra, rb = find(i), find(n.outputs[0])
                if ra != rb:
                    parent[ra] = rb
    members: dict[str, list[str]] = {}
    for n in g.nodes:
        if n.op_type == "Conv" or _is_act_add(g, n):
            members.setdefault(find(n.outputs[0]), []).append(n.outputs[0])
    out = []
    for names in members.values():
        inside = set(names)
        prods, cons, ok = [], [], True
        for t in names:
            p = producers.get(t)
            if t in g.outputs or p is None:
                ok = False
                break
            if p.op_type == "Conv":
                w = _conv_weights(g, p)
                clip = p.attrs.get("clip")
                if w is None or len(p.outputs) != 1 or (len(p.inputs) > 2 and p.inputs[2]
                                                        and g.tensors[p.inputs[2]].data is None):
                    ok = False
                elif clip is not None and not (float(clip[0]) <= 0.0 <= float(clip[1])):
                    ok = False
                prods.append(p)
            elif not (_is_act_add(g, p) and all(i in inside for i in p.inputs)):
                ok = False
            for c in consumers.get(t, []):
                if _is_act_add(g, c) and c.outputs[0] in inside:
                    continue
                w = _conv_weights(g, c)
                if w is None or c.inputs[0] != t or t in c.inputs[1:]:
                    ok = False
                elif c not in cons:
                    cons.append(c)
            if not ok:
                break
        if not ok or not prods or not cons:
            continue
        n_ch = _conv_weights(g, prods[0]).shape[0]
        if any(_conv_weights(g, p).shape[0] != n_ch for p in prods) or \
                any(_conv_weights(g, c).shape[1] * int(c.attrs.get("group", 1)) != n_ch for c in cons):
            continue
        out.append((names, prods, cons))
    return out


def channel_ranges(g: Graph, feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
                   names: set[str]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per-channel (min, max) of the tensors ``names`` (NCHW, axis 1) over one feed dict or all of a list."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def on_node(node: Node, outs: list[np.ndarray]) -> None:
        for name, v in zip(node.outputs, outs, strict=False):
            if name in names and isinstance(v, np.ndarray) and v.ndim == 4:
                lo, hi = v.min(axis=(0, 2, 3)).astype(np.float64), v.max(axis=(0, 2, 3)).astype(np.float64)
                if name in out:
                    lo, hi = np.minimum(out[name][0], lo), np.maximum(out[name][1], hi)
                out[name] = (lo, hi)

    for f in ([feeds] if isinstance(feeds, Mapping) else feeds):
        run_graph(g, f, on_node=on_node)
    return out


def equalize(graph: Graph, feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
             s_max: float = S_MAX, dense_beta: float = DENSE_BETA) -> tuple[Graph, dict[str, np.ndarray]]:
    """A copy of ``graph`` with the activation channels between conv pairs equalized on ``feeds`` (calibration
    feed dicts, or one); returns it and the scales by tensor. The input graph is not modified."""
    g = graph.copy()
    found = groups(g)
    ranges = channel_ranges(g, feeds, {t for names, _, _ in found for t in names})
    scales: dict[str, np.ndarray] = {}
    for names, prods, cs in found:
        if any(t not in ranges for t in names):
            continue
        lo = np.min([ranges[t][0] for t in names], axis=0)
        hi = np.max([ranges[t][1] for t in names], axis=0)
        r = np.maximum(np.abs(lo), np.abs(hi))
        if r.max() <= 0:
            continue
        depthwise_only = all(_conv_weights(g, c).shape[1] == 1 for c in cs)
        beta = 1.0 if depthwise_only else dense_beta
        s = np.where(r > 0, (r.max() / np.maximum(r, 1e-30)) ** beta, 1.0)
        for p in prods:
            clip = p.attrs.get("clip")
            if clip is None:
                continue
            # the clamp must not bite on what calibration saw
            p_lo, p_hi = ranges[p.outputs[0]]
            c_lo, c_hi = float(clip[0]), float(clip[1])
            if np.isfinite(c_hi):
                s = np.where(p_hi > 0, np.minimum(s, c_hi / np.maximum(CLAMP_MARGIN * p_hi, 1e-30)), s)
            if np.isfinite(c_lo) and c_lo < 0:
                s = np.where(p_lo < 0, np.minimum(s, c_lo / np.minimum(CLAMP_MARGIN * p_lo, -1e-30)), s)
        s = np.clip(s, 1.0, s_max)
        if np.all(s == 1.0):
            continue
        for p in prods:
            _scale_rows(g, p, s)
        for c in cs:
            _scale_input_channels(g, c, 1.0 / s)
        for t in names:
            scales[t] = s
    g.remove_unused()
    return g, scales


def _set_const(g: Graph, name: str, value: np.ndarray) -> str:
    """Replace a constant by a new one (constants may be shared; the original stays for other users)."""
    new = g.unique_name(f"{name}.eq")
    return g.add_const(new, value.astype(g.tensors[name].data.dtype))


def _scale_rows(g: Graph, p: Node, s: np.ndarray) -> None:
    w = g.tensors[p.inputs[1]].data
    p.inputs[1] = _set_const(g, p.inputs[1], w * s.reshape(-1, 1, 1, 1).astype(np.float64))
    if len(p.inputs) > 2 and p.inputs[2]:
        b = g.tensors[p.inputs[2]].data
        p.inputs[2] = _set_const(g, p.inputs[2], b * s.reshape(b.shape).astype(np.float64))


def _scale_input_channels(g: Graph, c: Node, f: np.ndarray) -> None:
    w = g.tensors[c.inputs[1]].data.astype(np.float64)
    groups = int(c.attrs.get("group", 1))
    o, cin_g = w.shape[:2]
    per_out = o // groups
    # input channel i = group gi, in-group column j; output rows of group gi read it
    fac = np.ones((o, cin_g))
    for i, v in enumerate(f):
        gi, j = divmod(i, cin_g)
        fac[gi * per_out:(gi + 1) * per_out, j] = v
    c.inputs[1] = _set_const(g, c.inputs[1], w * fac[:, :, None, None])


__all__ = ["equalize", "groups"]
