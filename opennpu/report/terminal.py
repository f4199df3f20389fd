"""Rich terminal summary of a report dict."""

from __future__ import annotations

from typing import Any


def print_summary(rep: dict[str, Any], console: Any = None, top: int = 8) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    c, p, m, a = rep["coverage"], rep["perf"], rep["memory"], rep["accuracy"]
    con.print(f"[bold]{rep['model']}[/] on {rep['target']} ({rep['dtype']}): {c['npu_ops']} ops on the NPU, "
              f"{c['cpu_ops']} on the CPU, {100 * c['npu_mac_fraction']:.1f}% of MACs on the NPU")
    slow = Table(title=f"slowest {top} ops")
    for col in ("op", "type", "placement", "latency us", "bound"):
        slow.add_column(col)
    for o in sorted(rep["ops"], key=lambda o: -o["latency_us"])[:top]:
        slow.add_row(o["name"], o["op_type"], o["placement"], f"{o['latency_us']:.1f}", str(o.get("bound", "")))
    con.print(slow)
    cpu = [o for o in rep["ops"] if o["placement"] == "cpu"]
    if cpu:
        t = Table(title=f"CPU fallbacks ({len(cpu)})")
        t.add_column("op")
        t.add_column("type")
        t.add_column("reason")
        for o in cpu:
            t.add_row(o["name"], o["op_type"], o["reason"] or "")
        con.print(t)
    con.print(f"latency {p['latency_ms']:.3f} ms (NPU {p['npu_ms']:.3f} + CPU {p['cpu_ms']:.3f}) at {p['cores']} "
              f"core(s), {p['clock_mhz']:.0f} MHz, {p.get('driver', '')}")
    for v in rep.get("perf_variants", []):
        con.print(f"  {v['cores']} core(s) {v['clock_mhz']:.0f} MHz {v['driver']}: {v['latency_ms']:.3f} ms")
    con.print(f"memory: peak {m['peak_bytes'] / 1024:.0f} KiB (weights {m['weights_bytes'] / 1024:.0f}, "
              f"activations {m['activations_bytes'] / 1024:.0f}, regcmd {m['regcmd_bytes'] / 1024:.0f} KiB), "
              f"fits: {m['fits']}")
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    con.print(f"accuracy: output cosine {fmt(a['cosine'])}, top-1 agreement {fmt(a['top1_agreement'])}")
    for n in rep.get("notes", []):
        con.print(f"[dim]note: {n}[/]")
