"""Post-training quantization of a float graph into the quantized-IR form (see opennpu/frontends/tflite.py).

``quantize(graph, calibration, ...)`` calibrates activation ranges on real inputs (calibration.py), then
rewrites a copy of the graph:

- every node gets a mode: the requested ``dtype`` ("int8", "int16" or "fp16"), or the one ``pin`` gives
  it ("int8" | "int16" | "fp16" | "float"). A node the integer executor cannot run in its mode becomes an
  explicit float island, recorded with the reason in ``graph.metadata["quant_fallbacks"]``;
- weights: symmetric int8 (or int4 in [-7, 7] with ``QuantInfo.bits = 4`` for Gemm / MatMul weights when
  ``weight_dtype="int4"``), per output channel unless ``per_channel=False``. The spatial taps of each
  (output, input) channel pair are rounded so that their sum stays within half a step of the real one
  (natural images are smooth, so a conv's error is dominated by its DC gain error), and with
  ``bias_correction`` the expected output shift (W_q - W) . E[x] (calibration means) is removed from the
  bias. Biases are int32 with scale input_scale * weight_scale (int64 for 16x8 layers, as LiteRT's 16x8
  conv requires);
- optionally first (``equalize``) a function-preserving rescaling of activation channels
  between convs (equalize.py), and (``refine``) a sequential pass choosing activation ranges by their
  consumers' output error with empirical bias correction (refine.py);
- activations: int8 asymmetric over the calibrated range (zero exactly representable), int16 symmetric;
  TFLite's constraints hold so the graph exports to .tflite: pools, data movement, Pad, Resize,
  GlobalAveragePool and Concat share one set of parameters between their inputs and outputs; Softmax and
  Sigmoid outputs are (1/256, -128), Tanh (1/128, 0);
- representation changes are explicit nodes: QuantizeLinear after float inputs, DequantizeLinear before
  float consumers and outputs, DequantizeLinear -> QuantizeLinear between int8 and int16 layers, Cast
  around fp16 layers. Activation tensors keep their float-graph names (a graph output that is computed in
  integers is renamed ``<name>.<dtype>`` and a DequantizeLinear writes ``<name>``).

The result is deterministic for the same inputs; the input graph is not modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import GraphError
from ..ir.graph import Graph, Node, QuantInfo, Tensor
from ..ir.ops.pool import pool_geometry
from .calibration import METHODS, Calibration, collect, iter_feeds
from .equalize import equalize as equalize_channels
from .executor import INT_OPS
from .fixedpoint import round_half_away
from .gptq import gptq_round, gptq_round_batched
from .lut import LUT_OPS
from .refine import int8_params
from .refine import refine as run_refinement

DTYPES = ("int8", "int16", "fp16")
MODES = ("int8", "int16", "fp16", "float")
FLOAT_DTYPES = ("float32", "float16", "float64")
# ops whose integer output must reuse the input's quantization (TFLite: same scale / zero point)
SHARED = {"MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Reshape", "Flatten", "Squeeze",
          "Unsqueeze", "Transpose", "Pad", "Resize", "Identity", "Concat"}
FIXED = {"Softmax": (1 / 256, -128), "Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0)}
# inputs that are activations (others are parameters: shapes, axes, pads, weights)
DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0,), "Gemm": (0,), "Add": None, "Sub": None, "Mul": None, "Concat": None, "MatMul": None,
}
WEIGHT_ROUNDING = ("nearest", "gptq")
RANGE_OF = {"int8": (-128, 127), "int16": (-32768, 32767)}


def _data_inputs(node: Node, g: Graph) -> list[int]:
    spec = DATA_INPUTS.get(node.op_type, (0,))
    idx = range(len(node.inputs)) if spec is None else spec
    return [i for i in idx if i < len(node.inputs) and node.inputs[i] and not g.tensor(node.inputs[i]).is_const]


def _is_float_act(g: Graph, name: str) -> bool:
    t = g.tensors.get(name)
    return t is not None and not t.is_const and t.dtype in FLOAT_DTYPES


def _unsupported_reason(g: Graph, node: Node, mode: str) -> str | None:
    """Why ``node`` cannot run with integer kernels in ``mode`` (None: it can)."""
    op = node.op_type
    if op not in INT_OPS:
        return f"no integer kernel for {op}"
    if any(not _is_float_act(g, o) for o in node.outputs if o):
        return "output is not a float activation"
    for i in _data_inputs(node, g):
        t = g.tensor(node.inputs[i])
        if t.dtype not in FLOAT_DTYPES or t.shape is None:
            return f"input {t.name!r} is not a float activation with a known shape"

    def const(i: int) -> np.ndarray | None:
        return g.const(node.inputs[i]) if i < len(node.inputs) and node.inputs[i] else None

    a = node.attrs
    if op == "Conv":
        w = const(1)
        if w is None or w.ndim != 4:
            return "Conv needs constant 2-D (OIHW) weights"
        if len(node.inputs) > 2 and node.inputs[2] and const(2) is None:
            return "Conv bias is not constant"
    elif op == "Gemm":
        w = const(1)
        if w is None or a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
            return "Gemm needs constant B, transA=0 and alpha=beta=1"
        if len(node.inputs) > 2 and node.inputs[2]:
            c = const(2)
            n_out = w.shape[0] if a.get("transB", 0) else w.shape[1]
            if c is None or c.size != n_out:
                return "Gemm bias must be a constant vector over the outputs"
    elif op == "MatMul":
        b = const(1)
        if const(0) is not None:
            return "MatMul with a constant first operand"
        if b is None and mode != "int8":
            return "MatMul of two activations has an int8 kernel only (TFLite BATCH_MATMUL)"
        if b is not None and b.ndim != 2:
            return "MatMul weights must be 2-D"
    elif op in ("Softmax", "Sigmoid", "Tanh") and mode != "int8":
        return f"{op} has an int8 kernel only"
    elif op == "Softmax":
        pass
    elif op in ("MaxPool", "AveragePool"):
        shape = g.tensor(node.inputs[0]).shape
        if len(shape) != 4 or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            return f"{op} needs a 4-D input without ceil_mode or dilation"
        if op == "AveragePool" and a.get("count_include_pad", 0):
            _, _, _, pads, _ = pool_geometry(shape, a)
            if any(pads):
                return "AveragePool with count_include_pad=1 and padding (TFLite averages valid pixels only)"
    elif op == "GlobalAveragePool":
        if len(g.tensor(node.inputs[0]).shape) != 4:
            return "GlobalAveragePool needs a 4-D input"
    elif op == "ReduceMean":
        shape = g.tensor(node.inputs[0]).shape
        axes = const(1) if len(node.inputs) > 1 else a.get("axes")
        ax = sorted(int(x) % len(shape) for x in np.asarray(axes).reshape(-1)) if axes is not None else None
        if len(shape) != 4 or ax != [2, 3] or not a.get("keepdims", 1):
            return "ReduceMean is integer only over the spatial axes of a 4-D tensor (TFLite MEAN)"
    elif op == "Resize":
        mode_r = a.get("mode", "nearest")
        if (mode_r.decode() if isinstance(mode_r, bytes) else mode_r) != "nearest":
            return "Resize is integer only in nearest mode"
    elif op == "Pad":
        m = a.get("mode", "constant")
        if (m.decode() if isinstance(m, bytes) else m) != "constant":
            return "Pad is integer only in constant mode"
    elif op == "Clip":
        if any(i < len(node.inputs) and node.inputs[i] and const(i) is None for i in (1, 2)):
            return "Clip bounds are not constant"
    elif op in ("Add", "Sub", "Mul"):
        if not _data_inputs(node, g):
            return "no activation input"
        for i in range(2):
            c = const(i)
            if c is not None and c.dtype.kind != "f":
                return "non-float constant operand"
    elif op in LUT_OPS:
        pass
    return None


class _Params:
    """Activation quantization parameters with TFLite's sharing constraints (union-find over tensors)."""

    def __init__(self, g: Graph, cal: Calibration, method: str) -> None:
        self.g, self.cal, self.method = g, cal, method
        self.parent: dict[str, str] = {}
        self.fixed: dict[str, tuple[float, int]] = {}
        self._cache: dict[tuple[str, str], QuantInfo] = {}
        self.override: dict[str, tuple[float, float]] = {}  # ranges chosen by refine.py (singleton groups)

    def find(self, a: str) -> str:
        while self.parent.get(a, a) != a:
            self.parent[a] = self.parent.get(self.parent[a], self.parent[a])
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # deterministic representative

    def members(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for name in set(self.parent) | set(self.fixed):
            groups.setdefault(self.find(name), []).append(name)
        return groups

    def finalize(self) -> None:
        self.group = self.members()

    def range(self, name: str) -> tuple[float, float]:
        if name in self.override:
            return self.override[name]
        names = self.group.get(self.find(name), [name]) if hasattr(self, "group") else [name]
        if name not in names:
            names = names + [name]
        lo, hi = 0.0, 0.0
        for n in names:
            if n in self.cal.stats:
                a, b = self.cal.range(n, self.method)
                lo, hi = min(lo, a), max(hi, b)
        return lo, hi

    def fixed_of(self, name: str) -> tuple[float, int] | None:
        root = self.find(name)
        for n in sorted(self.group.get(root, [name]) if hasattr(self, "group") else [name]):
            if n in self.fixed:
                return self.fixed[n]
        return None

    def quant(self, name: str, dtype: str) -> QuantInfo:
        key = (self.find(name), dtype)
        if key in self._cache:
            return self._cache[key]
        fixed = self.fixed_of(name) if dtype == "int8" else None
        if fixed is not None:
            scale, zp = fixed
        else:
            lo, hi = self.range(name)
            if dtype == "int16":
                scale, zp = max(abs(lo), abs(hi), 1e-8) / 32767.0, 0
            else:
                scale, zp = int8_params(lo, hi)
        q = QuantInfo(np.array([scale], np.float32), np.array([zp], np.int64))
        self._cache[key] = q
        return q


def _quantize_weight(w: np.ndarray, axis: int | None, bits: int, h: np.ndarray | None = None,
                     out_axis: int = 0, min_ratio: float | None = None,
                     min_scale: np.ndarray | None = None) -> tuple[np.ndarray, QuantInfo]:
    """Symmetric quantization (zero point 0) to [-(2^(bits-1) - 1), 2^(bits-1) - 1], per channel along
    ``axis`` (None: per tensor). With ``h`` (the input second moments of the layer, see gptq.py) the
    rounding is GPTQ's error-compensating one; otherwise round-to-nearest with the conv taps' sums kept.
    ``min_scale``: per-channel floor of the scale (``_bias_scale_floor``)."""
    qmax = (1 << (bits - 1)) - 1
    w64 = w.astype(np.float64)
    if axis is None:
        amax = np.array([np.abs(w64).max() if w64.size else 0.0])
        shape = (1,) * w.ndim
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w64).max(axis=red) if red else np.abs(w64)
        shape = tuple(-1 if i == axis else 1 for i in range(w.ndim))
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    if min_ratio is not None and amax.max() > 0:
        floor = np.float32(amax.max() / qmax * min_ratio)
        # dead channels (all-zero weights) take the largest live scale instead of 1.0
        scale = np.where(amax > 0, np.maximum(scale, floor), np.float32(amax.max() / qmax)).astype(np.float32)
    if min_scale is not None:
        ms = np.asarray(min_scale, np.float64)
        scale = np.maximum(scale, np.float32(ms.max()) if axis is None else ms.astype(np.float32)).astype(np.float32)
    v = w64 / scale.astype(np.float64).reshape(shape)
    q = None
    if h is not None:
        q = _gptq(w64, scale, out_axis, qmax, h)
    if q is None:
        q = np.clip(round_half_away(v), -qmax, qmax)
        if w.ndim == 4 and w.shape[2] * w.shape[3] > 1:
            q = _sum_preserving(v, q, qmax)
    q = q.astype(np.int8)
    info = QuantInfo(scale, np.zeros(scale.shape, np.int64), axis if axis is not None else None,
                     bits if bits != 8 else None)
    return q, info


def _gptq(w: np.ndarray, scale: np.ndarray, out_axis: int, qmax: int, h: np.ndarray) -> np.ndarray | None:
    """GPTQ rounding of Conv (OIHW, one group or depthwise) / 2-D weights; None when ``h`` does not fit."""
    s = scale.astype(np.float64)
    if w.ndim == 4:
        o, k = w.shape[0], int(np.prod(w.shape[1:]))
        s = np.broadcast_to(s, (o,))
        w2 = w.reshape(o, k)
        if h.shape == (k, k):
            return gptq_round(w2, s, h, qmax).reshape(w.shape)
        if w.shape[1] == 1 and h.shape == (o, k, k):
            return gptq_round_batched(w2, s, h, qmax).reshape(w.shape)
        return None
    if w.ndim == 2:
        wt = w if out_axis == 0 else w.T  # rows = output channels
        if h.shape != (wt.shape[1], wt.shape[1]):
            return None
        q = gptq_round(wt, np.broadcast_to(s, (wt.shape[0],)), h, qmax)
        return q if wt is w else q.T
    return None


def _sum_preserving(v: np.ndarray, q: np.ndarray, qmax: int) -> np.ndarray:
    """Round the spatial taps of each (output, input) channel pair so that their sum stays within half a
    step of the real sum: neighbouring pixels are strongly correlated, so a conv's error on natural images is
    dominated by the error of its taps' sum (its DC gain). Round-to-nearest leaves that error up to
    taps / 2 steps; flipping the rounding of the taps closest to a tie (each weight stays within one step
    of its real value) removes it. Deterministic."""
    o, i = v.shape[:2]
    vv, qq = v.reshape(o, i, -1), q.reshape(o, i, -1).copy()
    resid = (vv - qq).sum(axis=2)  # real sum - quantized sum, in steps
    direction = np.sign(resid)[..., None]
    k = np.minimum(np.floor(np.abs(resid) + 0.5), vv.shape[2]).astype(np.int64)[..., None]
    # candidates: taps whose rounding error points the same way (moving them by one step costs least)
    gain = (vv - qq) * direction
    room = np.abs(qq + direction) <= qmax
    gain = np.where(room, gain, -np.inf)
    order = np.argsort(-gain, axis=2, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(vv.shape[2])[None, None, :].repeat(o, 0).repeat(i, 1), axis=2)
    flip = (rank < k) & np.isfinite(gain) & (gain > 0)
    qq = qq + np.where(flip, direction, 0)
    return qq.reshape(q.shape)


def _quantize_bias(b: np.ndarray, in_scale: float, w_scale: np.ndarray, wide: bool) -> tuple[np.ndarray, QuantInfo]:
    bs = np.float64(np.float32(in_scale)) * w_scale.astype(np.float64)
    bs = np.broadcast_to(bs, b.reshape(-1).shape)
    info_t = np.iinfo(np.int64 if wide else np.int32)
    q = np.clip(round_half_away(b.reshape(-1).astype(np.float64) / bs), info_t.min, info_t.max)
    q = q.astype(np.int64 if wide else np.int32)
    return q, QuantInfo(bs.astype(np.float32), np.zeros(bs.shape, np.int64), 0 if bs.size > 1 else None)


class _Builder:
    def __init__(self, src: Graph, params: _Params) -> None:
        self.src = src
        self.g = Graph(src.name, [], {}, list(src.inputs), list(src.outputs), dict(src.metadata))
        for name in src.inputs:
            t = src.tensor(name)
            self.g.add_tensor(Tensor(t.name, t.shape, t.dtype, None, None, t.dim_names))
        self.p = params
        self.native: dict[str, str] = {n: "float32" for n in src.inputs}
        self.conv: dict[tuple[str, str], str] = {}
        # graph outputs computed in integers / fp16 are written under another name; a conversion writes
        # the original (float32) name at the end
        self.rename = set(src.outputs)
        self.alias: dict[str, str] = {}
        self.wcache: dict[str, tuple] = {}  # node -> _quantized_weights result
        self.bias_override: dict[str, np.ndarray] = {}  # node -> float bias chosen by refine.py

    def _new(self, base: str, like: Tensor, dtype: str, quant: QuantInfo | None) -> str:
        name = self.g.unique_name(base)
        while name in self.src.tensors:
            name = self.g.unique_name(name + "_")
        self.g.add_tensor(Tensor(name, like.shape, dtype, None, quant))
        return name

    def const(self, base: str, value: np.ndarray, quant: QuantInfo | None = None) -> str:
        name = self.g.unique_name(base)
        while name in self.src.tensors and name not in self.g.tensors:
            name = self.g.unique_name(name + "_")
        return self.g.add_const(name, value, quant)

    def copy_const(self, name: str) -> str:
        if name not in self.g.tensors:
            t = self.src.tensor(name)
            self.g.add_tensor(Tensor(t.name, t.shape, t.dtype, t.data, t.quant))
        return name

    def _qparams_consts(self, base: str, q: QuantInfo, dtype: str) -> list[str]:
        return [self.const(f"{base}.scale", np.asarray(q.scale, np.float32).reshape(())),
                self.const(f"{base}.zero_point", np.asarray(q.zero_point).astype(dtype).reshape(()))]

    def get(self, name: str, want: str) -> str:
        """Name of tensor ``name`` in representation ``want`` (int8 | int16 | fp16 | float32)."""
        have = self.native[name]
        cur = self.alias.get(name, name)
        if have == want or have not in ("int8", "int16", "fp16", "float32"):
            return cur
        key = (name, want)
        if key in self.conv:
            return self.conv[key]
        t = self.g.tensor(cur)
        if have in ("int8", "int16"):
            src = cur
            f = self.conv.get((name, "float32"))
            if f is None:
                f = self._new(f"{name}.float32", t, "float32", None)
                self.g.add_node("DequantizeLinear", [src, *self._qparams_consts(f, t.quant, have)], [f],
                                name=self.g.unique_name(f"{f}/DequantizeLinear"))
                self.conv[(name, "float32")] = f
            if want == "float32":
                return f
            return self._from_float(name, f, want)
        if have == "fp16":
            if want == "float32":
                out = self._new(f"{name}.float32", t, "float32", None)
                self.g.add_node("Cast", [cur], [out], {"to": "float32"},
                                name=self.g.unique_name(f"{out}/Cast"))
                self.conv[key] = out
                return out
            return self._from_float(name, cur, want)
        return self._from_float(name, cur, want)

    def _from_float(self, name: str, f: str, want: str) -> str:
        t = self.g.tensor(f)
        if want == "fp16":
            out = self._new(f"{name}.fp16", t, "float16", None)
            self.g.add_node("Cast", [f], [out], {"to": "float16"}, name=self.g.unique_name(f"{out}/Cast"))
        elif want == "float32":
            out = self._new(f"{name}.float32", t, "float32", None)
            self.g.add_node("Cast", [f], [out], {"to": "float32"}, name=self.g.unique_name(f"{out}/Cast"))
        else:
            q = self.p.quant(name, want)
            out = self._new(f"{name}.{want}", t, want, q)
            self.g.add_node("QuantizeLinear", [f, *self._qparams_consts(out, q, want)], [out],
                            name=self.g.unique_name(f"{out}/QuantizeLinear"))
        self.conv[(name, want)] = out
        return out

    def emit(self, node: Node, inputs: list[str], out_dtype: str | None, out_quant: list[QuantInfo | None],
             mode: str) -> None:
        outs = []
        for o, q in zip(node.outputs, out_quant, strict=True):
            if not o:
                outs.append(o)
                continue
            st = self.src.tensor(o)
            dtype = out_dtype if out_dtype is not None and st.dtype in FLOAT_DTYPES else st.dtype
            name = o
            if o in self.rename and dtype != st.dtype:
                name = self.g.unique_name(f"{o}.{'fp16' if dtype == 'float16' else dtype}")
            self.g.add_tensor(Tensor(name, st.shape, dtype, None, q if dtype in RANGE_OF else None))
            if dtype in RANGE_OF:
                native = dtype
            elif dtype == "float16":
                native = "fp16"
            elif dtype in FLOAT_DTYPES:
                native = "float32"
            else:
                native = dtype
            self.native[o] = native
            if name != o:
                self.alias[o] = name
            outs.append(name)
        self.g.nodes.append(Node(node.op_type, inputs, outs, dict(node.attrs), node.name))


def quantize(graph: Graph, calibration: Any, method: str = "percentile", dtype: str = "int8", per_channel: bool = True,
             weight_dtype: str | None = None, pin: dict[str, str] | None = None, progress: bool = True,
             percentile: float = 99.99, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
             bias_correction: bool = True, weight_rounding: str = "gptq",
             min_channel_scale_ratio: float | None = None, refine: bool | str = False,
             equalize: bool = False) -> Graph:
    """Quantize a float graph (see the module docstring). ``calibration``: feed dicts (list / iterator), an
    ndarray batch, a folder of images, .npy file(s), or a ``Calibration`` collected earlier.
    ``method`` (activation ranges; calibration.py) defaults to ``percentile``: on held-out augmented photos
    (logits SQNR) MobileNetV2 gets 18.6 dB with it, 14.0 dB with ``minmax`` and 16.4 dB with ``mse``;
    EfficientNet-Lite0 24.9, 25.4 and 25.9 dB (min/max lets a few outliers set the step of heavy-tailed
    tensors; mnist-cnn is equal either way).
    ``min_channel_scale_ratio``: floor every per-channel weight scale at this fraction of the layer's largest
    one (a target constraint, e.g. the RK3588's 14-bit per-channel multiplier); near-dead channels then round
    to zero instead of needing a multiplier the hardware cannot hold.
    ``equalize``: before calibrating, rescale the activation channels between convs so that a per-tensor
    int8 range serves them all (equalize.py; measured on held-out augmented photos: MobileNetV2 logits
    18.4 -> 21.0 dB, EfficientNet-Lite0 25.2 -> 25.1 dB, hence off by default). The scales are kept in
    ``metadata["equalized_channels"]`` (analysis.py compares those tensors in float units). ``refine`` (off:
    it costs several forward passes): choose each int8 activation range by the error at its consumers'
    outputs and correct biases empirically (refine.py); ``refine="bias"``: the bias correction only.
    Measured on held-out augmented photos (logits SQNR): EfficientNet-Lite0 25.2 -> 26.2 dB with
    ``refine=True``; MobileNetV2 with equalization 21.0 -> 21.6 dB with ``refine=True`` but 15.9 dB with
    ``refine="bias"`` (the bias correction alone over-corrects there: experimental).
    Both need calibration inputs (not a ``Calibration``); what was done is in ``metadata["quantization"]``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if weight_rounding not in WEIGHT_ROUNDING:
        raise ValueError(f"weight_rounding must be one of {WEIGHT_ROUNDING}, got {weight_rounding!r}")
    if refine not in (False, True, "bias"):
        raise ValueError(f"refine must be False, True or 'bias', got {refine!r}")
    if weight_dtype not in (None, "int8", "int4"):
        raise ValueError(f"weight_dtype must be None, 'int8' or 'int4', got {weight_dtype!r}")
    pin = dict(pin or {})
    names = {n.name for n in graph.nodes}
    unknown = sorted(set(pin) - names)
    if unknown:
        raise GraphError(f"pin names unknown nodes {unknown}")
    bad = {k: v for k, v in pin.items() if v not in MODES}
    if bad:
        raise ValueError(f"pin modes must be in {MODES}, got {bad}")

    feeds: list[dict[str, np.ndarray]] = []
    equalized = "off"
    eq_scales: dict[str, np.ndarray] = {}
    if isinstance(calibration, Calibration):
        cal = calibration
        if equalize:
            equalized = "skipped: the calibration was given as statistics (a Calibration), not inputs"
    else:
        feeds = list(iter_feeds(graph, calibration, preprocess))
        if equalize:
            graph, eq_scales = equalize_channels(graph, feeds)  # channel ranges over every calibration batch
            equalized = f"{len(eq_scales)} tensors"
        cal = collect(graph, feeds, histograms=method != "minmax", progress=progress, percentile=percentile,
                      hessians=weight_rounding == "gptq")

    # 1. node modes and fallbacks
    modes: dict[str, str] = {}
    fallbacks: list[dict[str, str]] = []
    for node in graph.nodes:
        float_out = any(_is_float_act(graph, o) for o in node.outputs if o)
        mode = pin.get(node.name, dtype)
        if not float_out:
            modes[node.name] = "keep"
            continue
        if mode in ("int8", "int16"):
            reason = _unsupported_reason(graph, node, mode)
            if reason is not None:
                fallbacks.append({"node": node.name, "op_type": node.op_type, "reason": reason})
                mode = "float"
        elif mode == "float":
            fallbacks.append({"node": node.name, "op_type": node.op_type, "reason": "pinned to float"})
        modes[node.name] = mode

    # 2. activation parameter sharing
    params = _Params(graph, cal, method)
    for node in graph.nodes:
        mode = modes[node.name]
        if mode not in ("int8", "int16"):
            continue
        if node.op_type in SHARED:
            for i in _data_inputs(node, graph):
                params.union(node.outputs[0], node.inputs[i])
        if node.op_type in FIXED:
            params.fixed[node.outputs[0]] = FIXED[node.op_type]
            params.parent.setdefault(node.outputs[0], node.outputs[0])
    params.finalize()

    # 3. rewrite
    b = _Builder(graph, params)
    b.min_channel_scale_ratio = min_channel_scale_ratio
    refined = "off"
    if refine:
        if not feeds:
            refined = "skipped: the calibration was given as statistics (a Calibration), not inputs"
        elif dtype != "int8":
            refined = "skipped: refinement searches int8 activation ranges only"
        else:
            _refine(b, graph, modes, feeds[0], per_channel, weight_dtype, weight_rounding, bias_correction,
                    search=refine != "bias")
            refined = "bias" if refine == "bias" else "on"
    for node in graph.nodes:
        mode = modes[node.name]
        if mode in ("int8", "int16"):
            _emit_integer(b, node, mode, per_channel, weight_dtype, bias_correction, weight_rounding)
        elif mode == "fp16":
            ins = []
            for name in node.inputs:
                if not name:
                    ins.append(name)
                elif name in b.native:
                    ins.append(b.get(name, "fp16" if _is_float_act(graph, name) else b.native[name]))
                else:
                    t = graph.tensor(name)
                    keep = node.op_type in ("Resize", "Clip", "Pad") or t.data is None or t.data.dtype.kind != "f"
                    ins.append(b.copy_const(name) if keep else b.const(f"{name}.fp16", t.data.astype(np.float16)))
            b.emit(node, ins, "float16", [None] * len(node.outputs), "fp16")
        else:
            ins = [(b.get(n, "float32") if n in b.native and _is_float_act(graph, n)
                    else (b.alias.get(n, n) if n in b.native or not n else b.copy_const(n))) for n in node.inputs]
            b.emit(node, ins, None, [None] * len(node.outputs), "float32")

    # 4. outputs stay float32 under their names
    g = b.g
    for o in g.outputs:
        cur = b.alias.get(o)
        if cur is None:
            continue
        t = g.tensor(cur)
        g.add_tensor(Tensor(o, t.shape, graph.tensor(o).dtype, None, None))
        if b.native[o] == "fp16":
            g.add_node("Cast", [cur], [o], {"to": graph.tensor(o).dtype}, name=g.unique_name(f"{o}/Cast"))
        else:
            g.add_node("DequantizeLinear", [cur, *b._qparams_consts(o, t.quant, t.dtype)], [o],
                       name=g.unique_name(f"{o}/DequantizeLinear"))
    g.metadata["quantization"] = {"method": method, "dtype": dtype, "per_channel": per_channel,
                                  "bias_correction": bias_correction, "weight_rounding": weight_rounding,
                                  "weight_dtype": weight_dtype or "int8", "pin": pin, "refine": refined,
                                  "equalize": equalized,
                                  "calibration_batches": cal.batches}
    g.metadata["quant_fallbacks"] = fallbacks
    if eq_scales:  # tensor -> per-channel factor its values carry against the float graph (analysis.py)
        g.metadata["equalized_channels"] = {t: [float(v) for v in s] for t, s in eq_scales.items()}
    g.toposort()
    g.remove_unused()
    return g


def _bias_shift(b: _Builder, node: Node, w: np.ndarray, wq: np.ndarray, winfo: QuantInfo,
                axis: int) -> np.ndarray | None:
    """Bias correction: the expected output shift E[(W_q - W) x] = (W_q - W) . E[x] per output channel,
    from the per-channel input means seen in calibration (subtracted from the bias)."""
    st = b.p.cal.stats.get(node.inputs[0])
    mu = None if st is None else st.channel_mean
    if mu is None:
        return None
    shape = [1] * w.ndim
    shape[axis] = -1
    dw = wq.astype(np.float64) * np.asarray(winfo.scale, np.float64).reshape(shape) - w.astype(np.float64)
    if node.op_type == "Conv":
        group = int(node.attrs.get("group", 1))
        per_in = dw.reshape(dw.shape[0], dw.shape[1], -1).sum(axis=2)  # (O, I/group)
        if group == 1 and mu.size == dw.shape[1]:
            return per_in @ mu
        if group == mu.size and dw.shape[1] == 1:
            return per_in[:, 0] * mu[np.arange(dw.shape[0]) // (dw.shape[0] // group)]
        return None
    if node.op_type == "Gemm":
        k = w.shape[1] if node.attrs.get("transB", 0) else w.shape[0]
        if mu.size != k:
            return None
        return dw @ mu if node.attrs.get("transB", 0) else mu @ dw
    return None


def _refine(b: _Builder, graph: Graph, modes: dict[str, str], feeds: dict[str, np.ndarray], per_channel: bool,
            weight_dtype: str | None, weight_rounding: str, bias_correction: bool, search: bool = True) -> None:
    """Sequential output-error-driven activation ranges and empirical bias correction (refine.py) on one
    calibration batch; the results go into the params' range overrides and the builder's bias overrides."""
    params, cal = b.p, b.p.cal
    int8: set[str] = set()
    weights: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for node in graph.nodes:
        if modes[node.name] != "int8":
            continue
        int8.update(o for o in node.outputs if o)
        int8.update(node.inputs[i] for i in _data_inputs(node, graph))
        if node.op_type in ("Conv", "Gemm"):
            w, wq, winfo, axis, _, bias = _quantized_weights(b, node, per_channel, weight_dtype, weight_rounding,
                                                             bias_correction)
            shape = [1] * w.ndim
            shape[axis] = -1
            scale = np.asarray(winfo.scale, np.float64).reshape(shape if np.size(winfo.scale) > 1 else [1] * w.ndim)
            weights[node.name] = ((wq.astype(np.float64) * scale).astype(np.float32), bias)
    int8 = {t for t in int8 if t in cal.stats and np.isfinite(cal.stats[t].lo)}
    fixed = {t: f for t in int8 if (f := params.fixed_of(t)) is not None}
    searchable = {t for t in int8 if t not in fixed and len(params.group.get(params.find(t), [t])) <= 1}
    res = run_refinement(graph, feeds, weights, params.range, lambda t: cal.range(t, "minmax"), int8, searchable,
                         fixed, search=search)
    params.override.update({t: r for t, r in res.ranges.items() if t in searchable})
    params._cache.clear()
    b.bias_override.update(res.bias)


def _has_const_weights(src: Graph, node: Node) -> bool:
    return node.op_type in ("Conv", "Gemm") or (node.op_type == "MatMul" and src.tensor(node.inputs[1]).is_const)


BIAS_INT_LIMIT = float(1 << 28)  # |int32 bias| bound: 8x below int32 for the accumulation and refined ranges


def _bias_scale_floor(b: _Builder, node: Node, bias: np.ndarray | None) -> np.ndarray | None:
    """Per-output-channel weight-scale floor that keeps the int32 bias (scale = input scale x weight scale)
    within BIAS_INT_LIMIT. A near-dead channel (weights ~1e-6, bias -6: BN folded onto a filter that never
    fires) would otherwise get a weight scale so small that its bias saturates int32, and the saturated bias
    plus the accumulator wraps around to a large positive output; with the floor its weights round to zero
    and its bias is exact."""
    if bias is None or node.inputs[0] not in b.p.cal.stats:
        return None
    lo, hi = b.p.range(node.inputs[0])
    s_in = max(hi - lo, 1e-8) / 255.0
    return np.abs(bias.astype(np.float64).reshape(-1)) / (s_in * BIAS_INT_LIMIT)


def _quantized_weights(b: _Builder, node: Node, per_channel: bool, weight_dtype: str | None, weight_rounding: str,
                       bias_correction: bool) -> tuple[np.ndarray, np.ndarray, QuantInfo, int, int, np.ndarray | None]:
    """(float weights, integer weights, their QuantInfo, output axis, bits, float bias with the analytic
    correction) of a Conv / Gemm / MatMul with constant weights; computed once per node (GPTQ is not free)."""
    if node.name in b.wcache:
        return b.wcache[node.name]
    src, op = b.src, node.op_type
    w = src.const(node.inputs[1])
    if op == "Conv":
        axis = 0
    elif op == "Gemm":
        axis = 0 if node.attrs.get("transB", 0) else 1
    else:
        axis = 1
    bits = 4 if weight_dtype == "int4" and op in ("Gemm", "MatMul") else 8
    h = b.p.cal.hessians.get(node.name) if weight_rounding == "gptq" else None
    bias = src.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    wq, winfo = _quantize_weight(w, axis if per_channel else None, bits, h, axis,
                                 getattr(b, "min_channel_scale_ratio", None), _bias_scale_floor(b, node, bias))
    shift = _bias_shift(b, node, w, wq, winfo, axis) if bias_correction and op != "MatMul" else None
    if shift is not None:
        bias = (np.zeros(w.shape[axis], np.float64) if bias is None else bias.reshape(-1)) - shift
    b.wcache[node.name] = (w, wq, winfo, axis, bits, bias)
    return b.wcache[node.name]


def _emit_integer(b: _Builder, node: Node, mode: str, per_channel: bool, weight_dtype: str | None,
                  bias_correction: bool = True, weight_rounding: str = "nearest") -> None:
    src = b.src
    op = node.op_type
    wide = mode == "int16"
    data_idx = set(_data_inputs(node, src))
    ins: list[str] = []
    for i, name in enumerate(node.inputs):
        if not name:
            ins.append(name)
        elif i in data_idx:
            ins.append(b.get(name, mode))
        else:
            ins.append(name)
    in_q = b.g.tensor(ins[0]).quant if ins and ins[0] and 0 in data_idx else None
    if _has_const_weights(src, node):
        w, wq, winfo, axis, bits, bias = _quantized_weights(b, node, per_channel, weight_dtype, weight_rounding,
                                                            bias_correction)
        ins[1] = b.const(f"{node.inputs[1]}.int{bits}", wq, winfo)
        if node.name in b.bias_override:  # empirical correction (refine.py) on top of the analytic one
            bias = b.bias_override[node.name]
        if bias is not None:
            while len(ins) < 3:
                ins.append("")
            n_out = w.shape[axis]
            ws = np.broadcast_to(np.asarray(winfo.scale, np.float32), (n_out,))
            bq, binfo = _quantize_bias(bias, float(in_q.scale[0]), ws, wide)
            base = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else f"{node.name}.bias"
            ins[2] = b.const(f"{base}.int{64 if wide else 32}", bq, binfo)
    elif op in ("Add", "Sub", "Mul"):
        for i in range(2):
            if i not in data_idx:
                c = src.const(node.inputs[i]).astype(np.float32)
                lo, hi = min(float(c.min()), 0.0), max(float(c.max()), 0.0)
                if wide:
                    scale, zp = max(abs(lo), abs(hi), 1e-8) / 32767.0, 0
                else:
                    scale = max(hi - lo, 1e-8) / 255.0
                    zp = int(np.clip(round_half_away(-128.0 - lo / np.float32(scale)), -128, 127))
                lo_q, hi_q = RANGE_OF[mode]
                q = np.clip(round_half_away(c / np.float32(scale)) + zp, lo_q, hi_q).astype(mode)
                ins[i] = b.const(f"{node.inputs[i]}.{mode}", q,
                                 QuantInfo(np.array([scale], np.float32), np.array([zp], np.int64)))
    else:
        for i, name in enumerate(node.inputs):
            if name and i not in data_idx:
                b.copy_const(name)
    for name in ins:
        if name and name not in b.g.tensors:
            b.copy_const(name)
    out_q = [b.p.quant(o, mode) if o else None for o in node.outputs]
    b.emit(node, ins, mode, out_q, mode)


__all__ = ["quantize"]
