"""Calibration: activation statistics of the float graph over real inputs, and range-choosing observers.

``collect_ranges`` runs the float graph (``opennpu.runtime.cpu.run_graph``, observing every node's outputs
through its ``on_node`` hook instead of keeping all tensors, to bound memory) over the calibration feeds:
pass 1 records min / max (and per-channel means, for bias correction) of every float activation; for the
histogram methods pass 2 fills a 2048-bin histogram per tensor over the pass-1 range. Methods:

- ``minmax``: the observed range.
- ``percentile``: the ``percentile`` (default 99.99) / 100 - percentile quantiles of the histogram.
- ``kl``: TensorRT-style entropy calibration: the clipping threshold whose quantized distribution has the
  smallest KL divergence to the reference distribution (128 target bins over |x|, or 256 over [0, T] for
  non-negative tensors, which use all 256 asymmetric int8 codes).
- ``mse``: the threshold minimizing the expected quantize-dequantize squared error over the histogram.

Inputs: a list or iterator of feed dicts, one ndarray (split into graph-sized batches), a folder of
images (decoded, resized, normalised for the graph; ``preprocess=`` overrides), a .npy file or a folder /
list of .npy files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OpenNPUError, ShapeError
from ..ir.graph import Graph, Node
from ..runtime.cpu import run_graph

METHODS = ("minmax", "percentile", "kl", "mse")
BINS = 2048
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Feeds = dict[str, np.ndarray]


class CalibrationError(OpenNPUError):
    """Calibration data is missing or does not fit the graph."""


@dataclass
class TensorStats:
    lo: float = float("inf")
    hi: float = float("-inf")
    hist: np.ndarray | None = None  # over [hist_lo, hist_hi]
    hist_lo: float = 0.0
    hist_hi: float = 0.0
    count: int = 0
    ch_sum: np.ndarray | None = None  # per-channel sums (axis 1 of 2-D / 4-D tensors, last axis of 3-D)
    ch_n: int = 0

    @property
    def channel_mean(self) -> np.ndarray | None:
        return None if self.ch_sum is None or self.ch_n == 0 else self.ch_sum / self.ch_n

    def update_channels(self, x: np.ndarray) -> None:
        if x.ndim not in (2, 3, 4):
            return
        axis = x.ndim - 1 if x.ndim == 3 else 1
        red = tuple(i for i in range(x.ndim) if i != axis)
        s = x.sum(axis=red, dtype=np.float64)
        if self.ch_sum is None or self.ch_sum.shape != s.shape:
            self.ch_sum, self.ch_n = np.zeros_like(s), 0
        self.ch_sum += s
        self.ch_n += x.size // max(x.shape[axis], 1)

    def update_range(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)] if not np.all(np.isfinite(x)) else x
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
        self.count += int(x.size)

    def update_hist(self, x: np.ndarray) -> None:
        if self.hist is None:
            self.hist_lo, self.hist_hi = min(self.lo, 0.0), max(self.hi, 0.0)
            if self.hist_hi <= self.hist_lo:
                self.hist_hi = self.hist_lo + 1e-8
            self.hist = np.zeros(BINS, dtype=np.int64)
        h, _ = np.histogram(x, bins=BINS, range=(self.hist_lo, self.hist_hi))
        self.hist += h


@dataclass
class Calibration:
    """Per-tensor statistics of a float graph; ``range(name, method)`` chooses a quantization range."""

    stats: dict[str, TensorStats] = field(default_factory=dict)
    batches: int = 0
    percentile: float = 99.99
    # second moments H = E[x x^T] of weighted nodes' input patches, by node name (for GPTQ rounding)
    hessians: dict[str, np.ndarray] = field(default_factory=dict)

    def range(self, name: str, method: str = "minmax") -> tuple[float, float]:
        st = self.stats.get(name)
        if st is None or not np.isfinite(st.lo):
            raise CalibrationError(f"no calibration statistics for tensor {name!r}")
        lo, hi = min(st.lo, 0.0), max(st.hi, 0.0)
        if method == "minmax" or st.hist is None:
            return lo, hi
        if method == "percentile":
            return _percentile_range(st, self.percentile)
        if method == "kl":
            return _threshold_range(st, _kl_threshold)
        if method == "mse":
            return _mse_range(st, symmetric=False)
        raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")


def _centers(st: TensorStats) -> np.ndarray:
    edges = np.linspace(st.hist_lo, st.hist_hi, BINS + 1)
    return (edges[:-1] + edges[1:]) / 2


def _percentile_range(st: TensorStats, p: float) -> tuple[float, float]:
    cdf = np.cumsum(st.hist) / max(int(st.hist.sum()), 1)
    edges = np.linspace(st.hist_lo, st.hist_hi, BINS + 1)
    lo_i = int(np.searchsorted(cdf, (100.0 - p) / 100.0, side="left"))
    hi_i = int(np.searchsorted(cdf, p / 100.0, side="left"))
    lo = float(edges[min(lo_i, BINS)]) if st.lo < 0 else 0.0
    hi = float(edges[min(hi_i + 1, BINS)]) if st.hi > 0 else 0.0
    return min(lo, 0.0), max(hi, 0.0)


def _abs_hist(st: TensorStats) -> tuple[np.ndarray, float, bool]:
    """Histogram of |x| over [0, amax] with BINS bins (re-binned from the signed histogram) and whether the
    tensor is non-negative."""
    c = _centers(st)
    nonneg = st.lo >= 0
    amax = max(abs(st.hist_lo), abs(st.hist_hi))
    h, _ = np.histogram(np.abs(c), bins=BINS, range=(0.0, amax), weights=st.hist.astype(np.float64))
    return h, amax, nonneg


def _threshold_range(st: TensorStats, fn: Callable[[np.ndarray, float, int], float]) -> tuple[float, float]:
    h, amax, nonneg = _abs_hist(st)
    if amax <= 0 or h.sum() == 0:
        return min(st.lo, 0.0), max(st.hi, 0.0)
    levels = 255 if nonneg else 128  # codes available on one side of zero
    t = fn(h, amax, levels)
    return (0.0 if nonneg else float(max(st.lo, -t)), float(min(st.hi, t)) if st.hi > 0 else 0.0)


def _kl_threshold(h: np.ndarray, amax: float, levels: int) -> float:
    """TensorRT entropy calibration over a |x| histogram: for each candidate bin count i >= levels, the
    reference P = h[:i] with the outliers folded into the last bin, Q = P merged into ``levels`` bins and
    expanded back over its non-empty bins; the threshold minimizing KL(P || Q). The first bin (|x| ~ 0: the
    zeros of a ReLU output, exact at any threshold) is left out: its spike would otherwise dominate P and
    drag the threshold down to a fraction of the range."""
    h = h.astype(np.float64).copy()
    h[0] = 0.0
    n = h.size
    if h.sum() <= 0:
        return amax
    best_i, best_kl = n, np.inf
    width = amax / n
    for i in range(levels, n + 1, 16 if n > 512 else 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        nz = p > 0
        idx = (np.arange(i) * levels) // i  # merge into `levels` chunks
        # Q quantizes the clipped histogram *without* the folded outliers (so clipping costs KL)
        hi_ = h[:i]
        nzh = hi_ > 0
        sums = np.bincount(idx, weights=hi_, minlength=levels)
        cnt = np.bincount(idx, weights=nzh.astype(np.float64), minlength=levels)
        q = np.where(nzh, sums[idx] / np.maximum(cnt[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        pn, qn = p[nz] / ps, np.maximum(q[nz] / qs, 1e-4 / max(int(nz.sum()), 1))  # smoothed where Q = 0
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return min(best_i * width, amax)


def _mse_threshold(h: np.ndarray, amax: float, levels: int) -> float:
    """Threshold T (candidates at bin edges) minimizing sum h * (x - qdq_T(x))^2 with ``levels`` steps
    over [0, T]."""
    n = h.size
    width = amax / n
    c = (np.arange(n) + 0.5) * width
    w = h.astype(np.float64)
    cands = np.unique(np.linspace(max(1, n // 64), n, 128).astype(int))
    best_t, best_err = amax, np.inf
    for i in cands:
        t = i * width
        step = t / (levels - 1) if levels == 256 else t / 127.0
        qd = np.minimum(np.round(c / step), levels - 1 if levels == 256 else 127) * step
        err = float(np.sum(w * (c - qd) ** 2))
        if err < best_err:
            best_err, best_t = err, t
    return best_t


def _mse_range(st: TensorStats, symmetric: bool = False, levels: int = 255) -> tuple[float, float]:
    """Range [lo, hi] (candidates at the histogram's bin edges, zero inside) minimizing the expected squared
    error of quantize-dequantize with ``levels`` steps over the signed histogram: clipped values cost their
    distance to the bound, values inside cost step^2 / 12 (uniform rounding error, which does not depend on
    where inside a bin they lie). ``symmetric``: lo = -hi."""
    h = st.hist.astype(np.float64)
    edges = np.linspace(st.hist_lo, st.hist_hi, BINS + 1)
    c = (edges[:-1] + edges[1:]) / 2
    total = h.sum()
    if total <= 0:
        return min(st.lo, 0.0), max(st.hi, 0.0)
    # upper tails: for bound e_k = edges[k], values in bins >= k are clipped to e_k (cost h (c - e)^2)
    m0, m1, m2 = (np.concatenate([np.cumsum((h * c ** p)[::-1])[::-1], [0.0]]) for p in (0, 1, 2))
    tail_hi = m2 - 2 * edges * m1 + edges ** 2 * m0  # cost of clipping above edges[k], k = 0..BINS
    n_hi = m0
    l0, l1, l2 = (np.concatenate([[0.0], np.cumsum(h * c ** p)]) for p in (0, 1, 2))
    tail_lo = l2 - 2 * edges * l1 + edges ** 2 * l0  # bins < k clipped up to edges[k]
    n_lo = l0
    zero = int(np.clip(np.searchsorted(edges, 0.0), 0, BINS))
    stride = 4
    hi_idx = np.unique(np.r_[np.arange(zero, BINS + 1, stride), BINS])
    lo_idx = np.unique(np.r_[np.arange(0, zero + 1, stride), zero]) if st.lo < 0 else np.array([zero])
    if st.hi <= 0:
        hi_idx = np.array([zero])
    if symmetric:
        hi_v = np.maximum(np.abs(edges[hi_idx]), 1e-12)
        lo_k = np.clip(np.searchsorted(edges, -hi_v), 0, BINS)
        step = 2 * hi_v / levels
        err = tail_hi[hi_idx] + tail_lo[lo_k] + step ** 2 / 12 * (total - n_hi[hi_idx] - n_lo[lo_k])
        k = int(np.argmin(err))
        return -float(hi_v[k]) if st.lo < 0 else 0.0, float(hi_v[k]) if st.hi > 0 else 0.0
    lo_v, hi_v = edges[lo_idx][:, None], edges[hi_idx][None, :]
    step = np.maximum(hi_v - lo_v, 1e-12) / levels
    inside = total - n_lo[lo_idx][:, None] - n_hi[hi_idx][None, :]
    err = tail_lo[lo_idx][:, None] + tail_hi[hi_idx][None, :] + step ** 2 / 12 * np.maximum(inside, 0.0)
    j, k = np.unravel_index(int(np.argmin(err)), err.shape)
    return min(float(lo_v[j, 0]), 0.0), max(float(hi_v[0, k]), 0.0)


# ---- calibration data ---------------------------------------------------------------------------------------

def _graph_input_shape(graph: Graph) -> tuple[int, ...]:
    if len(graph.inputs) != 1:
        raise CalibrationError("images / arrays as calibration data need a single-input graph; pass feed dicts")
    shape = graph.tensor(graph.inputs[0]).shape
    if shape is None or any(d <= 0 for d in shape):
        raise CalibrationError(f"graph input {graph.inputs[0]!r} needs a static shape, got {shape}")
    return tuple(shape)


def _default_image_preprocess(graph: Graph) -> Callable[[np.ndarray], np.ndarray]:
    from .. import data

    shape = _graph_input_shape(graph)
    zoo = graph.metadata.get("zoo")
    scheme = {"efficientnet-lite0": "tf-lite", "mobilenetv2": "torchvision"}.get(zoo or "")
    if len(shape) != 4:
        raise CalibrationError(f"image calibration needs a 4-D graph input, got {shape}")
    nchw = shape[1] in (1, 3)
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    ch = shape[1] if nchw else shape[3]

    def prep(img: np.ndarray) -> np.ndarray:
        if scheme is not None and h == w:
            x = data.preprocess(img, h, scheme)[0]
        else:
            x = data.resize(np.asarray(img), w, h).astype(np.float32) / 255.0
            x = np.ascontiguousarray(x.transpose(2, 0, 1))
        if ch == 1:
            x = x.mean(axis=0, keepdims=True)
        return x if nchw else np.ascontiguousarray(x.transpose(1, 2, 0))

    return prep


def _batches_from_samples(graph: Graph, samples: Iterable[np.ndarray]) -> Iterator[Feeds]:
    """Stack single samples (no batch dim) into graph-sized batches (a last partial batch is dropped,
    unless it is the only one, then it is padded by repetition)."""
    shape = _graph_input_shape(graph)
    n = shape[0]
    buf: list[np.ndarray] = []
    produced = False
    for s in samples:
        s = np.asarray(s, dtype=np.float32)
        if s.shape == shape:  # already a full batch
            yield {graph.inputs[0]: s}
            produced = True
            continue
        if s.shape != shape[1:]:
            raise ShapeError(f"calibration sample has shape {s.shape}, the graph input is {shape}")
        buf.append(s)
        if len(buf) == n:
            yield {graph.inputs[0]: np.stack(buf)}
            produced = True
            buf = []
    if buf and not produced:
        while len(buf) < n:
            buf.extend(buf[: n - len(buf)])
        yield {graph.inputs[0]: np.stack(buf)}


def iter_feeds(graph: Graph, calibration: Any, preprocess: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> Iterator[Feeds]:
    """Normalise any supported calibration source into feed dicts for ``graph``."""
    if isinstance(calibration, Mapping):
        yield dict(calibration)
        return
    if isinstance(calibration, np.ndarray):
        shape = _graph_input_shape(graph)
        arr = calibration.astype(np.float32)
        if arr.shape == shape:
            yield {graph.inputs[0]: arr}
            return
        yield from _batches_from_samples(graph, (a for a in arr.reshape(-1, *shape[1:])))
        return
    if isinstance(calibration, (str, Path)):
        p = Path(calibration)
        if p.is_file() and p.suffix == ".npy":
            yield from iter_feeds(graph, np.load(p, allow_pickle=False), preprocess)
            return
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            npys = [f for f in files if f.suffix == ".npy"]
            imgs = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            if npys:
                yield from iter_feeds(graph, npys, preprocess)
                return
            if imgs:
                from ..data import load_image

                prep = preprocess or _default_image_preprocess(graph)
                yield from _batches_from_samples(graph, (prep(load_image(f)) for f in imgs))
                return
        raise CalibrationError(f"calibration source {str(p)!r} is not a .npy file or a folder of images/.npy")
    if isinstance(calibration, (list, tuple)) and calibration and isinstance(calibration[0], (str, Path)):
        def arrays() -> Iterator[np.ndarray]:
            for f in calibration:
                a = np.load(f, allow_pickle=False).astype(np.float32)
                yield from (a if a.shape != _graph_input_shape(graph)[1:] else [a])
        yield from _batches_from_samples(graph, arrays())
        return
    for item in calibration:
        if isinstance(item, Mapping):
            yield dict(item)
        else:
            yield from iter_feeds(graph, np.asarray(item), preprocess)


# ---- collection -----------------------------------------------------------------------------------------------

def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=not enabled, transient=True)


def collect(graph: Graph, calibration: Any, histograms: bool = False, progress: bool = True,
            percentile: float = 99.99, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
            hessians: bool = False) -> Calibration:
    """Run the float graph over the calibration data and gather per-tensor statistics (see module doc);
    with ``hessians`` also the input second moments of Conv / Gemm / MatMul nodes (``gptq.HessianCollector``)."""
    feeds = list(iter_feeds(graph, calibration, preprocess))
    if not feeds:
        raise CalibrationError("the calibration data is empty")
    cal = Calibration(percentile=percentile)
    float_names = {n for n, t in graph.tensors.items()
                   if not t.is_const and t.dtype in ("float32", "float16", "float64")}

    def observe(name: str, value: np.ndarray, second: bool) -> None:
        if name not in float_names or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            return
        st = cal.stats.setdefault(name, TensorStats())
        v = value.astype(np.float32, copy=False)
        if second:
            st.update_hist(v)
        else:
            st.update_range(v)
            st.update_channels(v)

    passes = [False, True] if histograms else [False]
    hc = None
    if hessians:
        from .gptq import HessianCollector

        hc = HessianCollector(graph)
    wanted = hc.wanted_inputs if hc is not None else set()
    stash: dict[str, np.ndarray] = {}
    with _progress(progress) as bar:
        for second in passes:
            task = bar.add_task("calibrating: histograms" if second else "calibrating: ranges", total=len(feeds),
                                info="")
            for i, f in enumerate(feeds):
                uses = {x: sum(1 for n in hc.nodes.values() if n.inputs[0] == x) for x in wanted} if hc else {}
                for k, v in f.items():
                    observe(k, np.asarray(v), second)
                    if hc is not None and not second and k in wanted:
                        stash[k] = np.asarray(v)

                def on_node(node: Node, outs: list[np.ndarray], second: bool = second, uses: dict = uses) -> None:
                    if hc is not None and not second and node.name in hc.nodes and node.inputs[0] in stash:
                        x = node.inputs[0]
                        hc.observe(node, stash[x])
                        uses[x] -= 1
                        if uses[x] <= 0:  # bound memory: drop a stashed input after its last weighted use
                            del stash[x]
                    for name, v in zip(node.outputs, outs, strict=False):
                        if name:
                            observe(name, v, second)
                            if hc is not None and not second and name in wanted:
                                stash[name] = v

                run_graph(graph, f, on_node=on_node)
                stash.clear()
                bar.update(task, advance=1, info=f"batch {i + 1}, {len(cal.stats)} tensors")
    cal.batches = len(feeds)
    if hc is not None:
        cal.hessians = hc.result()
    return cal


__all__ = ["METHODS", "Calibration", "CalibrationError", "TensorStats", "collect", "iter_feeds"]
