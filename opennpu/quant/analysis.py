"""Accuracy analysis of a quantized graph against its float original: per-layer and output-level metrics.

``compare_layers`` runs the float graph (``run_graph(keep=True)``) and the quantized graph (the integer
executor, ``run_quantized(keep=True)``) on the same inputs, matches tensors by name (the quantizer and the QDQ
importer keep the float graph's names), dequantizes the integer ones with their QuantInfo and accumulates,
over all inputs, the sums that give each layer's

- cosine similarity  = <f, q> / (|f| |q|),
- SQNR (dB)          = 10 log10(sum f^2 / sum (f - q)^2),
- drop (dB)          = SQNR of the layer's (nearest matched) inputs minus its own SQNR: the error this
  layer *adds*. Errors propagate, so every layer after a bad one has a low SQNR too; the drop is what
  points at the culprit, and the worst layers are named by it.

Output level: cosine / SQNR of every output, top-1 agreement of classifier outputs (2-D logits), and an
optional task metric callback evaluated on both graphs' outputs.

How hard the inputs are (``AccuracyReport.margins``): top-1 agreement depends as much on the float model's own
decision margins as on the quantizer. An input whose float top-1 / top-2 logit gap ``g`` is small flips under
any output error of that size. With independent Gaussian logit errors of rms ``sigma`` (SQNR = 20 log10(logit
rms / sigma)) the difference of two logits has rms ``sigma * sqrt(2)``, so the expected agreement is
about ``1 - mean_i Phi(-g_i / (sigma * sqrt(2)))`` (``expected_agreement`` integrates the top-1's error over
the nearest competitors), and ``sqnr_needed`` inverts it. The model is
optimistic (measured quantization errors concentrate on the large logits) and says what SQNR a target
agreement needs on these inputs, whatever the quantizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphError
from ..ir.graph import Graph, Node
from ..runtime.cpu import run_graph
from .qdq import dequantize

SQNR_CAP_DB = 200.0  # an exact match has infinite SQNR; capped so reports stay plain JSON

Runner = Callable[[Graph, Mapping[str, np.ndarray]], dict[str, np.ndarray]]
TaskMetric = Callable[[dict[str, np.ndarray], int], float]


@dataclass
class LayerStat:
    tensor: str
    node: str
    op_type: str
    dtype: str  # storage dtype in the quantized graph
    cosine: float
    sqnr_db: float
    drop_db: float
    max_abs_err: float
    float_absmax: float
    numel: int


@dataclass
class AccuracyReport:
    num_inputs: int
    layers: list[LayerStat]
    outputs: dict[str, dict[str, float]]
    top1_agreement: float | None = None
    task_metric: dict[str, float] | None = None
    worst: list[str] = field(default_factory=list)  # tensors adding the most error, worst first
    meta: dict[str, Any] = field(default_factory=dict)
    # classifiers: float decision margins vs the measured error (module doc); None otherwise
    margins: dict[str, Any] | None = None

    def layer(self, tensor: str) -> LayerStat:
        for s in self.layers:
            if s.tensor == tensor:
                return s
        raise KeyError(tensor)

    def worst_layers(self, k: int = 5, by: str = "drop") -> list[LayerStat]:
        """The k layers adding the most error (``by="drop"``) or with the lowest SQNR (``by="sqnr"``)."""
        key = (lambda s: -s.drop_db) if by == "drop" else (lambda s: s.sqnr_db)
        return sorted(self.layers, key=key)[:k]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return _jsonable(d)

    def print(self, console: Any = None, max_rows: int = 40) -> None:
        """Rich table of the layers (the worst ones highlighted, long graphs abbreviated) and output metrics."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        worst = set(self.worst[:5])
        table = Table(title=f"per-layer accuracy over {self.num_inputs} input(s)", show_lines=False)
        for col, just in (("#", "right"), ("tensor", "left"), ("op", "left"), ("dtype", "left"),
                          ("cosine", "right"), ("SQNR dB", "right"), ("drop dB", "right")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        rows = list(enumerate(self.layers))
        if len(rows) > max_rows:  # keep the worst ones, the first and the last few
            keep = {i for i, s in rows if s.tensor in worst} | set(range(5)) | set(range(len(rows) - 5, len(rows)))
            rows = [r for r in rows if r[0] in keep]
        prev = -1
        for i, s in rows:
            if i != prev + 1:
                table.add_row("…", "", "", "", "", "", "")
            prev = i
            style = "bold red" if s.tensor in worst else None
            table.add_row(str(i), s.tensor, s.op_type, s.dtype, f"{s.cosine:.5f}", f"{s.sqnr_db:.1f}",
                          f"{s.drop_db:+.1f}", style=style)
        console.print(table)
        for name, m in self.outputs.items():
            console.print(f"output {name!r}: cosine {m['cosine']:.5f}, SQNR {m['sqnr_db']:.1f} dB")
        if self.top1_agreement is not None:
            console.print(f"top-1 agreement with float: {100 * self.top1_agreement:.2f}%")
        if self.margins is not None:
            m = self.margins
            console.print(f"float decision margins: {100 * m['near_ties']:.1f}% of inputs have a top-1/top-2 gap below "
                          f"2% of the logit rms; iid-error model: {100 * m['expected_agreement']:.1f}% expected at "
                          f"the measured SQNR, 98% needs {m['sqnr_needed_db']['0.98']:.1f} dB")
        if self.task_metric is not None:
            console.print(f"task metric: float {self.task_metric['float']:.4f}, "
                          f"quantized {self.task_metric['quant']:.4f}")
        if self.worst:
            console.print("worst layers (most SQNR lost): " + ", ".join(self.worst[:5]))

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Bar chart of per-layer SQNR (worst layers in red) saved as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        worst = set(self.worst[:5])
        vals = [min(s.sqnr_db, 80.0) for s in self.layers]
        colors = ["tab:red" if s.tensor in worst else "tab:blue" for s in self.layers]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(vals) + 2), 3.5))
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xlabel("layer (graph order)")
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(title or f"per-layer SQNR vs float ({self.num_inputs} inputs)")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


class _Acc:
    """Running sums for one tensor pair."""

    __slots__ = ("ff", "qq", "fq", "ee", "maxerr", "fmax", "n")

    def __init__(self) -> None:
        self.ff = self.qq = self.fq = self.ee = self.maxerr = self.fmax = 0.0
        self.n = 0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = f.astype(np.float64, copy=False).reshape(-1)
        q = q.astype(np.float64, copy=False).reshape(-1)
        e = f - q
        self.ff += float(f @ f)
        self.qq += float(q @ q)
        self.fq += float(f @ q)
        self.ee += float(e @ e)
        if e.size:
            self.maxerr = max(self.maxerr, float(np.abs(e).max()))
            self.fmax = max(self.fmax, float(np.abs(f).max()))
        self.n += f.size

    @property
    def cosine(self) -> float:
        if self.ff == 0.0 and self.qq == 0.0:
            return 1.0
        if self.ff == 0.0 or self.qq == 0.0:
            return 0.0
        return self.fq / math.sqrt(self.ff * self.qq)

    @property
    def sqnr(self) -> float:
        if self.ee == 0.0:
            return SQNR_CAP_DB
        if self.ff == 0.0:
            return -SQNR_CAP_DB
        return min(SQNR_CAP_DB, 10.0 * math.log10(self.ff / self.ee))


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorized (numpy has no erf): Abramowitz & Stegun 7.1.26, |error| < 1.5e-7."""
    x = np.asarray(x, np.float64)
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    half_tail = 0.5 * poly * np.exp(-z * z)  # P(N(0,1) > |x|)
    return np.where(x >= 0, 1.0 - half_tail, half_tail)


def top2_gaps(logits: np.ndarray) -> np.ndarray:
    """Per input (rows), the float top-1 minus top-2 logit."""
    part = np.partition(np.asarray(logits, np.float64), -2, axis=-1)
    return part[..., -1] - part[..., -2]


def expected_agreement(logits: np.ndarray, sqnr_db: float, competitors: int = 10) -> float:
    """Expected top-1 agreement when independent Gaussian errors at ``sqnr_db`` are added to ``logits``
    (N x classes; module doc). Given the top-1's own error ``e``, competitor ``j`` (gap ``g_j``) stays below
    it with probability ``Phi((g_j + e) / sigma)``; the mean over ``e`` (Gauss-Hermite) of the product over
    the ``competitors`` nearest ones is exact for that noise model."""
    logits = np.asarray(logits, np.float64)
    sigma = math.sqrt(float(np.mean(logits ** 2))) * 10 ** (-sqnr_db / 20)
    if sigma == 0:
        return 1.0
    k = min(competitors, logits.shape[-1] - 1)
    top = -np.sort(-logits, axis=-1)[..., : k + 1]
    gaps = (top[..., :1] - top[..., 1:]) / sigma  # (N, k) in units of sigma
    nodes, weights = np.polynomial.hermite.hermgauss(32)
    e = math.sqrt(2.0) * nodes  # top-1 error / sigma at the quadrature nodes
    keep = np.prod(_phi(gaps[..., None] + e), axis=-2) @ (weights / math.sqrt(math.pi))
    return float(np.mean(keep))


def sqnr_needed(logits: np.ndarray, target: float, hi_db: float = 120.0) -> float:
    """The smallest logits SQNR (dB) at which ``expected_agreement`` reaches ``target`` (bisection)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target agreement must be in (0, 1), got {target}")
    lo, hi = 0.0, hi_db
    if expected_agreement(logits, hi) < target:
        return math.inf  # exact ties in the float logits
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected_agreement(logits, mid) < target else (lo, mid)
    return hi


def margin_summary(float_logits: np.ndarray, quant_logits: np.ndarray, sqnr_db: float) -> dict[str, Any]:
    """The ``AccuracyReport.margins`` record: how close the float decisions are (gaps relative to the logit
    rms), what the iid-error model expects at the measured SQNR and needs for 98% / 99%, and the relative
    gaps of the inputs that flipped (near-ties vs real errors)."""
    f = np.asarray(float_logits, np.float64)
    rel = top2_gaps(f) / max(math.sqrt(float(np.mean(f ** 2))), 1e-30)
    flipped = np.argmax(f, -1) != np.argmax(quant_logits, -1)
    return {"num_inputs": int(len(f)), "near_ties": float(np.mean(rel < 0.02)),
            "relative_gap_quantiles": {str(q): float(np.quantile(rel, q)) for q in (0.02, 0.05, 0.1, 0.5)},
            "expected_agreement": expected_agreement(f, sqnr_db),
            "sqnr_needed_db": {str(t): sqnr_needed(f, t) for t in (0.98, 0.99)},
            "flipped_relative_gaps": sorted(float(v) for v in rel[flipped])}


def plot_agreement_vs_sqnr(float_logits: np.ndarray, measured: Mapping[str, tuple[float, float]],
                           path: str | Path, title: str = "") -> Path:
    """PNG: the top-1 agreement that independent logit errors would leave at each SQNR on these inputs (the
    margin model, ``expected_agreement``), with the measured (SQNR dB, agreement) of each quantizer in
    ``measured`` and the SQNR that 98% needs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db = np.linspace(10.0, 50.0, 41)
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    ax.plot(db, [100 * expected_agreement(float_logits, d) for d in db], color="tab:gray",
            label="independent logit errors (model)")
    need = sqnr_needed(float_logits, 0.98)
    ax.axhline(98.0, color="tab:red", lw=0.8, ls="--")
    if math.isfinite(need):
        ax.axvline(need, color="tab:red", lw=0.8, ls=":", label=f"98% needs {need:.1f} dB")
    for label, (s, a) in measured.items():
        ax.scatter([s], [100 * a], zorder=3)
        ax.annotate(label, (s, 100 * a), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("logits SQNR vs float (dB)")
    ax.set_ylabel("top-1 agreement with float (%)")
    ax.set_title(title or f"top-1 agreement vs output error ({len(float_logits)} inputs)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ideal_sqnr(dtype: str) -> float:
    """SQNR of a full-scale sine quantized with the format's mantissa/integer bits: 6.02 b + 1.76 dB."""
    bits = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "float16": 11}.get(dtype)
    return SQNR_CAP_DB if bits is None else 6.02 * bits + 1.76


def is_quantized(graph: Graph) -> bool:
    return any(t.quant is not None or t.dtype == "float16" for t in graph.tensors.values())


def real_value(graph: Graph, name: str, value: np.ndarray) -> np.ndarray | None:
    """Real (float) value of a tensor of ``graph``; None for integer tensors without quantization."""
    t = graph.tensors.get(name)
    if value.dtype.kind == "f":
        return value.astype(np.float32, copy=False)
    if value.dtype.kind in "iu" and t is not None and t.quant is not None:
        return dequantize(value, t.quant)
    return None


def default_runner(graph: Graph, kernels: str = "optimized") -> Runner:
    if not is_quantized(graph):
        return lambda g, feeds: run_graph(g, feeds, keep=True)
    from .executor import run_quantized

    return lambda g, feeds: run_quantized(g, feeds, kernels=kernels, keep=True)


def _compared(qgraph: Graph, fenv: Mapping[str, np.ndarray]) -> list[tuple[str, str, Node]]:
    """(quantized tensor, float tensor, producing node) pairs: node outputs present in both graphs, and
    boundary QuantizeLinear outputs against the float tensor they quantize."""
    pairs = []
    for n in qgraph.nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in fenv:
                pairs.append((o, o, n))
            elif n.op_type == "QuantizeLinear" and n.inputs[0] in fenv:
                pairs.append((o, n.inputs[0], n))
    return pairs


def compare_layers(float_graph: Graph, qgraph: Graph, feeds_list: Iterable[Mapping[str, np.ndarray]],
                   kernels: str = "optimized", runner: Runner | None = None,
                   task_metric: TaskMetric | None = None, classifier: bool | None = None,
                   worst_k: int = 5) -> AccuracyReport:
    """Per-layer and output accuracy of ``qgraph`` against ``float_graph`` (module docstring).

    ``runner(graph, feeds) -> every tensor`` overrides how ``qgraph`` is run (default: the integer executor
    with ``kernels``, or ``run_graph`` when it has no quantized tensor). ``task_metric(outputs, index)`` is
    averaged over the inputs for both graphs. ``classifier`` (default: 2-D outputs with >= 2 columns) turns
    on top-1 agreement of the first output.
    """
    run_q = runner or default_runner(qgraph, kernels)
    accs: dict[str, _Acc] = {}
    out_accs: dict[str, _Acc] = {}
    pairs: list[tuple[str, str, Node]] | None = None
    agree = total = 0
    logits_f: list[np.ndarray] = []
    logits_q: list[np.ndarray] = []
    tm_f = tm_q = 0.0
    count = 0
    shared_outputs = [o for o in qgraph.outputs if o in float_graph.outputs]
    equalized = qgraph.metadata.get("equalized_channels", {})
    if not shared_outputs and len(qgraph.outputs) == len(float_graph.outputs):
        shared_outputs = list(qgraph.outputs)  # same order, other names
    for idx, feeds in enumerate(feeds_list):
        fenv = run_graph(float_graph, feeds, keep=True)
        qenv = run_q(qgraph, feeds)
        if pairs is None:
            pairs = _compared(qgraph, fenv)
        for qname, fname, _ in pairs:
            if qname not in qenv:
                continue
            fv, qv = fenv[fname], real_value(qgraph, qname, np.asarray(qenv[qname]))
            if qv is None or fv.dtype.kind != "f" or fv.shape != qv.shape:
                continue
            if fname in equalized and qv.ndim >= 2 and qv.shape[1] == len(equalized[fname]):
                # channels rescaled by cross-layer equalization (quant/equalize.py): back to float units
                qv = qv / np.asarray(equalized[fname], np.float32).reshape(1, -1, *([1] * (qv.ndim - 2)))
            accs.setdefault(qname, _Acc()).add(fv, qv)
        for k, qo in enumerate(shared_outputs):
            fo = qo if qo in fenv else float_graph.outputs[k]
            fv, qv = fenv[fo], real_value(qgraph, qo, np.asarray(qenv[qo]))
            if qv is None or fv.shape != qv.shape:
                raise GraphError(f"output {qo!r}: quantized shape {None if qv is None else qv.shape} vs float "
                                 f"{fv.shape}")
            out_accs.setdefault(qo, _Acc()).add(fv, qv)
            if k == 0 and (classifier or classifier is None and fv.ndim == 2 and fv.shape[-1] >= 2):
                agree += int(np.sum(fv.argmax(-1) == qv.argmax(-1)))
                total += fv.shape[0]
                logits_f.append(np.asarray(fv, np.float32))
                logits_q.append(np.asarray(qv, np.float32))
        if task_metric is not None:
            tm_f += float(task_metric({o: fenv[o] for o in float_graph.outputs}, idx))
            tm_q += float(task_metric({o: real_value(qgraph, o, np.asarray(qenv[o])) for o in qgraph.outputs},
                                      idx))
        count += 1
    if count == 0:
        raise GraphError("compare_layers needs at least one input")

    # Drop: SQNR of the nearest compared ancestors minus the layer's own. A layer whose inputs are exact
    # (graph inputs, constants) is measured against the ideal SQNR of its own number format instead, which
    # also caps the reference (an input quantized without error has "infinite" SQNR).
    producers = qgraph.producers()
    sqnr = {k: a.sqnr for k, a in accs.items()}
    memo: dict[str, float | None] = {}

    def in_sqnr(name: str, depth: int = 0) -> float | None:
        if name in sqnr:
            return sqnr[name]
        if name in memo:
            return memo[name]
        prod = producers.get(name)
        v = None
        if prod is not None and depth < 500:
            vals = [x for x in (in_sqnr(i, depth + 1) for i in prod.inputs if i) if x is not None]
            v = min(vals) if vals else None
        memo[name] = v
        return v

    layers = []
    for qname, _, node in pairs or []:
        a = accs.get(qname)
        if a is None:
            continue
        dtype = qgraph.tensor(qname).dtype
        vals = [x for x in (in_sqnr(i) for i in node.inputs if i and i != qname) if x is not None]
        base = min([*vals, ideal_sqnr(dtype)])  # an exactly quantized input does not make a layer look bad
        layers.append(LayerStat(qname, node.name, node.op_type, dtype, a.cosine, a.sqnr, base - a.sqnr,
                                a.maxerr, a.fmax, a.n // count))
    worst = [s.tensor for s in sorted(layers, key=lambda s: -s.drop_db)[:worst_k] if s.drop_db > 0]
    outputs = {k: {"cosine": a.cosine, "sqnr_db": a.sqnr, "max_abs_err": a.maxerr} for k, a in out_accs.items()}
    margins = None
    if logits_f:
        margins = margin_summary(np.concatenate(logits_f), np.concatenate(logits_q), out_accs[shared_outputs[0]].sqnr)
    return AccuracyReport(
        num_inputs=count, layers=layers, outputs=outputs,
        top1_agreement=agree / total if total else None,
        task_metric={"float": tm_f / count, "quant": tm_q / count} if task_metric is not None else None,
        worst=worst, meta={"float_graph": float_graph.name, "quantized_graph": qgraph.name, "kernels": kernels},
        margins=margins)


__all__ = ["AccuracyReport", "LayerStat", "compare_layers", "dequantize", "expected_agreement", "is_quantized",
           "margin_summary", "plot_agreement_vs_sqnr", "real_value", "sqnr_needed", "top2_gaps"]
