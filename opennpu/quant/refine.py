"""Output-error-driven activation ranges and empirical bias correction (a sequential pass on calibration data).

A tensor's own quantization error is the wrong thing to minimize when choosing its clipping range: what
matters is the error it causes downstream, and the error already carried by its (quantized) inputs. So the
float graph is walked once over calibration inputs twice over: a float copy and a simulated quantized copy
(quantized weights, each int8 activation quantize-dequantized as soon as it is produced, with every range
chosen so far). At each node:

- Conv / Gemm with quantized weights (empirical bias correction): the mean per output channel of the
  simulated pre-activation minus the float one, over the positions where the float pre-activation is not
  clamped by the fused activation, is removed from the bias. It corrects the systematic shifts that
  weight rounding *and* the upstream activation quantization cause (the analytic ``bias_correction`` of
  quantizer.py only sees the weights), and it is what keeps depthwise layers with few taps unbiased;
- every searchable int8 output tensor gets the clipping range, among ``ALPHAS`` x its observed [min, max]
  and the calibration method's own range, that minimizes the relative squared error at its consumers'
  outputs (a Conv / Gemm consumer is run with its quantized weights on the candidate-quantized input and
  compared with the float consumer output; other consumers see the tensor's own error), measured on the
  simulated quantized values, which carry every error made upstream.

The simulation rounds like the integer kernels up to requantization ties (float weights x integer codes,
no int32 rounding of the bias), which is enough to rank candidate ranges. The result is data only:
ranges by tensor and float biases by node, used by ``quantize`` when it builds the integer graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node
from ..runtime.cpu import run_node
from .fixedpoint import round_half_away

# candidate clipping ranges: fractions of the observed [min, max]
ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25)
SEARCH_IMAGES = 16  # leading samples of the batch the range search measures on (bias correction uses all)


def int8_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) of the range [lo, hi] (zero exactly representable), as TFLite."""
    scale = max(hi - lo, 1e-8) / 255.0
    zp = int(np.clip(round_half_away(-128.0 - lo / np.float32(scale)), -128, 127))
    return scale, zp


def fake_quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    s = np.float32(scale)
    return ((np.clip(round_half_away(x / s) + zp, -128, 127) - zp) * s).astype(np.float32)


@dataclass
class Refinement:
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    bias: dict[str, np.ndarray] = field(default_factory=dict)  # node name -> corrected float bias
    chosen: dict[str, float] = field(default_factory=dict)  # tensor -> alpha (0: the method's range)


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((a.astype(np.float64) - ref) ** 2) / max(float(np.sum(ref.astype(np.float64) ** 2)), 1e-30))


def refine(graph: Graph, feeds: Mapping[str, np.ndarray], weights: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
           base_range: Callable[[str], tuple[float, float]], observed: Callable[[str], tuple[float, float]],
           int8: set[str], searchable: set[str], fixed: Mapping[str, tuple[float, int]],
           correct_bias: bool = True, search: bool = True) -> Refinement:
    """One sequential pass (see the module docstring). ``weights``: node -> (dequantized quantized weights,
    float bias or None) of the Conv / Gemm nodes that run in integers; ``int8``: activation tensors stored as
    int8 (simulated), of which ``searchable`` may get a searched range; ``fixed``: tensors with imposed
    (scale, zero point); ``base_range`` / ``observed``: the calibration method's range and the min / max."""
    res = Refinement()
    consumers = graph.consumers()
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for x in n.inputs:
            last_use[x] = i
    env_f: dict[str, np.ndarray] = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
    env_q: dict[str, np.ndarray] = {}

    def params_of(name: str, lo_hi: tuple[float, float]) -> tuple[float, int]:
        return fixed[name] if name in fixed else int8_params(*lo_hi)

    def run_weighted(node: Node, x: np.ndarray, bias: np.ndarray | None, clip: bool) -> np.ndarray:
        w, _ = weights[node.name]
        args: list = [x, w] + ([bias.astype(np.float32)] if bias is not None else [])
        attrs = node.attrs if clip else {k: v for k, v in node.attrs.items() if k != "clip"}
        return run_node(Node(node.op_type, node.inputs[:len(args)], node.outputs, attrs, node.name), args)[0]

    def consumer_error(name: str, cand: np.ndarray, ref_cache: dict[str, np.ndarray]) -> float:
        total = 0.0
        for c in consumers.get(name, []):
            if c.name in weights and c.inputs[0] == name:
                if c.name not in ref_cache:
                    args = [env_f[name][:SEARCH_IMAGES] if x == name else
                            (env_f[x][:SEARCH_IMAGES] if x in env_f else graph.tensor(x).data) if x else None
                            for x in c.inputs]
                    ref_cache[c.name] = run_node(c, args)[0]
                bias = res.bias.get(c.name, weights[c.name][1])
                total += _rel_err(run_weighted(c, cand, bias, True), ref_cache[c.name])
            else:
                total += _rel_err(cand, env_f[name][:SEARCH_IMAGES])
        return total

    def settle(name: str, xq: np.ndarray) -> np.ndarray:
        """Choose ``name``'s range (searchable tensors) and return its simulated quantized value."""
        if name not in int8:
            return xq
        if name in fixed:
            return fake_quant(xq, *fixed[name])
        base = base_range(name)
        best = base
        if search and name in searchable and consumers.get(name):
            lo, hi = observed(name)
            cands = [(0.0, base)] + [(a, (lo * a, hi * a)) for a in ALPHAS]
            sub = xq[:SEARCH_IMAGES]
            cache: dict[str, np.ndarray] = {}
            errs = [consumer_error(name, fake_quant(sub, *int8_params(*r)), cache) for _, r in cands]
            k = int(np.argmin(errs))
            best = cands[k][1]
            res.chosen[name] = cands[k][0]
        res.ranges[name] = best
        return fake_quant(xq, *params_of(name, best))

    for name in list(env_f):
        env_q[name] = settle(name, env_f[name])

    for idx, node in enumerate(graph.nodes):
        args_f = [env_f[x] if x in env_f else (graph.tensor(x).data if x else None) for x in node.inputs]
        args_q = [env_q[x] if x in env_q else (graph.tensor(x).data if x else None) for x in node.inputs]
        if node.name in weights:
            bias = weights[node.name][1]
            pre_f = run_node(Node(node.op_type, node.inputs, node.outputs,
                                  {k: v for k, v in node.attrs.items() if k != "clip"}, node.name), args_f)[0]
            pre_q = run_weighted(node, args_q[0], bias, False)
            if correct_bias:
                axis = 1 if pre_f.ndim in (2, 4) else pre_f.ndim - 1
                red = tuple(i for i in range(pre_f.ndim) if i != axis)
                clip = node.attrs.get("clip")
                lin = np.ones(pre_f.shape, bool) if clip is None else (pre_f > clip[0]) & (pre_f < clip[1])
                diff = np.where(lin, pre_q.astype(np.float64) - pre_f, 0.0).sum(axis=red)
                delta = diff / np.maximum(lin.sum(axis=red), 1)
                shape = [1] * pre_f.ndim
                shape[axis] = -1
                pre_q = (pre_q - delta.reshape(shape)).astype(np.float32)
                base_b = np.zeros(delta.shape, np.float64) if bias is None else bias.astype(np.float64).reshape(-1)
                res.bias[node.name] = base_b - delta
            clip = node.attrs.get("clip")
            outs_f = [np.clip(pre_f, clip[0], clip[1]) if clip is not None else pre_f]
            outs_q = [np.clip(pre_q, clip[0], clip[1]) if clip is not None else pre_q]
        else:
            outs_f = run_node(node, args_f)
            outs_q = run_node(node, args_q)
        for name, vf, vq in zip(node.outputs, outs_f, outs_q, strict=False):
            if name:
                env_f[name] = vf
                env_q[name] = settle(name, vq) if isinstance(vq, np.ndarray) and vq.dtype.kind == "f" else vq
        for x in node.inputs:
            if x and last_use.get(x) == idx and x not in graph.outputs:
                env_f.pop(x, None)
                env_q.pop(x, None)
    return res


__all__ = ["ALPHAS", "Refinement", "fake_quant", "int8_params", "refine"]
