"""One self-contained HTML file for a report dict (plots embedded as base64 PNG)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from . import plots


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}">' if b64 else f"<p>{alt}: not available</p>"


def render(rep: dict[str, Any]) -> str:
    p, m, c, a = rep["perf"], rep["memory"], rep["coverage"], rep["accuracy"]
    fmt = lambda v: "null" if v is None else f"{v:.4f}"  # noqa: E731
    summary = _table(["", ""], [
        ["placements", f"{c['npu_ops']} NPU, {c['cpu_ops']} CPU ({100 * c['npu_mac_fraction']:.1f}% of MACs on NPU)"],
        ["latency", f"{p['latency_ms']:.3f} ms (NPU {p['npu_ms']:.3f}, CPU {p['cpu_ms']:.3f}; "
                    f"{p['cores']} core(s), {p['clock_mhz']:.0f} MHz, {p.get('driver', '')})"],
        ["memory", f"peak {m['peak_bytes']} B, weights {m['weights_bytes']} B, activations {m['activations_bytes']} B,"
                   f" regcmd {m['regcmd_bytes']} B, fits: {m['fits']}"],
        ["accuracy", f"output cosine {fmt(a['cosine'])}, top-1 agreement {fmt(a['top1_agreement'])}"]])
    variants = _table(["cores", "clock MHz", "driver", "latency ms"],
                      [[v["cores"], v["clock_mhz"], v["driver"], f"{v['latency_ms']:.3f}"]
                       for v in rep.get("perf_variants", [])])
    ops = _table(["name", "op", "placement", "MACs", "tasks", "latency us", "bound", "cosine", "reason"],
                 [[o["name"], o["op_type"], o["placement"], o["macs"], o["tasks"], f"{o['latency_us']:.2f}",
                   o.get("bound"), fmt(o["cosine"]), o["reason"]] for o in rep["ops"]])
    cpu = _table(["name", "op", "reason"], [[o["name"], o["op_type"], o["reason"]] for o in rep["ops"]
                                            if o["placement"] == "cpu"])
    consts = _table(["constant", "value", "unit", "tag", "source"],
                    [[k["name"], k["value"], k["unit"], k["tag"], k["source"]] for k in rep.get("constants", [])])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.get("notes", []))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>opennpu report: {html.escape(rep['model'])}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(rep['model'])} on {rep['target']} "
            f"({rep['dtype']})</h1>{summary}<h2>Per-op latency</h2>{_img(plots.latency_plot(rep), 'latency plot')}"
            f"<h2>Per-layer accuracy</h2>{_img(plots.accuracy_plot(rep), 'accuracy plot')}"
            f"<h2>Memory</h2>{_img(plots.memory_plot(rep), 'memory plot')}<h2>Latency variants</h2>{variants}"
            f"<h2>CPU fallbacks</h2>{cpu}<h2>Ops</h2>{ops}<h2>Cost constants</h2>{consts}"
            f"<h2>Notes</h2><ul>{notes}</ul></body></html>")


def write_html(rep: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render(rep), encoding="utf-8")
    return path
