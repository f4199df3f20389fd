"""Predicted vs published RK3588 figures, side by side (the table of docs/performance-model.md).

    python bench/perf_vs_published.py            # markdown table on stdout
    python bench/perf_vs_published.py --json out.json

Each row rebuilds the published setting: the architecture (opennpu.zoo.timing, random weights: timing does not
depend on values), dtype, cores, NPU clock and driver (rknn = vendor runtime, tasks chained by the PC;
rocket = Linux accel/rocket + Mesa, one hardware submit per task), and runs the graph-level cost model
(opennpu.targets.rk3588.cost.estimate_graph). Matmul peaks compare the NPU time of one MatMul with the measured
TOPS. No board, no timing of this machine: the figures are the model's.
"""

from __future__ import annotations

import argparse
import json
import sys

from opennpu.ir.stats import graph_stats
from opennpu.targets.rk3588.cost import CostParams, estimate_graph
from opennpu.zoo.timing import PUBLISHED, Published, load_timing_model


def predict(row: Published, graphs: dict) -> dict:
    if row.model not in graphs:
        graphs[row.model] = load_timing_model(row.model)
    g = graphs[row.model]
    est = estimate_graph(g, row.dtype, CostParams(clock_mhz=row.clock_mhz, cores=row.cores, driver=row.driver))
    out = {"name": row.name, "published_ms": row.ms, "published_tops": row.tops, "source": row.source,
           "setting": f"{row.dtype}, {row.cores} core(s), {row.clock_mhz:g} MHz, {row.driver}",
           "predicted_ms": est.latency_ms, "npu_ms": est.npu_ms, "cpu_ms": est.cpu_ms,
           "cpu_ops": sum(o.placement == "cpu" for o in est.ops)}
    if row.tops is not None:
        macs = sum(s.macs for s in graph_stats(g))
        out["predicted_tops"] = 2 * macs / (est.npu_ms * 1e-3) / 1e12
        out["error"] = out["predicted_tops"] / row.tops - 1
    else:
        out["error"] = est.latency_ms / row.ms - 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    graphs: dict = {}
    rows = [predict(r, graphs) for r in PUBLISHED]
    print("| figure | setting | published | predicted | error | source |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["published_tops"] is not None:
            pub, pred = f"{r['published_tops']:.2f} TOPS", f"{r['predicted_tops']:.2f} TOPS"
        else:
            pub, pred = f"{r['published_ms']:.2f} ms", f"{r['predicted_ms']:.2f} ms"
            if r["cpu_ops"]:
                pred += f" (CPU {r['cpu_ms']:.2f} ms, {r['cpu_ops']} ops)"
        print(f"| {r['name']} | {r['setting']} | {pub} | {pred} | {r['error'] * 100:+.0f}% | {r['source']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
