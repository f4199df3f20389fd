"""Build the report dict: placements, per-op cost (targets/rk3588/cost.py), memory, per-layer accuracy.

Three entry points by what is at hand: a compiled model (``report_from_compiled``: the real lowering, tile plans
and memory plan), a float graph only (``report_from_graph``: cost.estimate_graph, no memory plan), or a ``.npu``
program (``report_from_program``: placements, tasks and memory from the manifest; no float graph, so accuracy is
null; per-op latency from cost.estimate_graph over the program's embedded quantized source subgraphs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opennpu.errors import OpenNPUError
from opennpu.targets.rk3588 import cost

TARGET = "rk3588"
CBUF_BYTES = 12 * 256 * 128  # 384 KiB per core: 12 banks x 256 entries x 128 B (tiling.CbufParams, Mesa rkt_ml.h)
BANK_BYTES = 256 * 128
SRAM_BYTES = 956 * 1024  # not used by our programs (all buffers in DDR); reported as 0 use of it
ADDRESS_SPACE = 1 << 32

# The contract other tools read: key -> type (a tuple means "one of"; None allows null).
OP_SCHEMA = {"name": str, "op_type": str, "placement": str, "reason": (str, None), "macs": int, "tasks": int,
             "latency_us": float, "cosine": (float, None)}
SCHEMA: dict[str, Any] = {
    "model": str, "target": str, "dtype": str, "ops": [OP_SCHEMA],
    "coverage": {"npu_ops": int, "cpu_ops": int, "npu_mac_fraction": float},
    "perf": {"latency_ms": float, "npu_ms": float, "cpu_ms": float, "cores": int, "clock_mhz": float},
    "memory": {"weights_bytes": int, "activations_bytes": int, "regcmd_bytes": int, "peak_bytes": int, "fits": bool},
    "accuracy": {"cosine": (float, None), "top1_agreement": (float, None)},
}

VARIANTS = [(c, mhz, d) for d in ("rknn", "rocket") for mhz in (1000.0, 200.0) for c in (1, 3)]


class ReportError(OpenNPUError):
    pass


def _type_ok(v: Any, t: Any) -> bool:
    ts = t if isinstance(t, tuple) else (t,)
    for one in ts:
        if one is None and v is None:
            return True
        if one is float and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            return True
        if one is int and isinstance(v, int) and not isinstance(v, bool):
            return True
        if one in (str, bool) and type(v) is one:
            return True
    return False


def validate(obj: Any, schema: Any = None, where: str = "report") -> list[str]:
    """Problems of ``obj`` against :data:`SCHEMA` (missing keys, wrong types), empty when it conforms."""
    schema = SCHEMA if schema is None else schema
    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            return [f"{where}: expected an object, got {type(obj).__name__}"]
        out = []
        for k, sub in schema.items():
            if k not in obj:
                out.append(f"{where}.{k}: missing")
            else:
                out += validate(obj[k], sub, f"{where}.{k}")
        return out
    if isinstance(schema, list):
        if not isinstance(obj, list):
            return [f"{where}: expected a list, got {type(obj).__name__}"]
        return [p for i, o in enumerate(obj) for p in validate(o, schema[0], f"{where}[{i}]")]
    return [] if _type_ok(obj, schema) else [f"{where}: {obj!r} is not {schema}"]


def _params(cores: int, clock_mhz: float, driver: str) -> cost.CostParams:
    return cost.CostParams(clock_mhz=float(clock_mhz), cores=int(cores), driver=driver)


def _ops_json(est: cost.PerfEstimate, cosines: dict[str, float]) -> list[dict[str, Any]]:
    return [{"name": o.name, "op_type": o.op_type, "placement": o.placement, "reason": o.reason,
             "macs": int(o.macs), "tasks": int(o.tasks), "latency_us": float(o.latency_us),
             "cosine": cosines.get(o.name), "bound": o.bound, "fused_into": o.fused_into,
             "breakdown_us": {k: float(v) for k, v in o.breakdown.items()}} for o in est.ops]


def _coverage(ops: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(o["macs"] for o in ops)
    npu = sum(o["macs"] for o in ops if o["placement"] == "npu")
    return {"npu_ops": sum(o["placement"] == "npu" for o in ops), "cpu_ops": sum(o["placement"] == "cpu" for o in ops),
            "npu_mac_fraction": float(npu / total) if total else 0.0}


def _perf(est: cost.PerfEstimate) -> dict[str, Any]:
    p = est.perf_json()
    p["cores"], p["clock_mhz"] = int(p["cores"]), float(p["clock_mhz"])
    return p


def _variants(estimator) -> list[dict[str, Any]]:
    return [{"cores": c, "clock_mhz": mhz, "driver": d, "latency_ms": float(estimator(_params(c, mhz, d)).latency_ms)}
            for c, mhz, d in VARIANTS]


def _cbuf_json(plans: list[Any]) -> dict[str, Any]:
    """Per-task CBUF use (data + weight banks of 32 KiB) against the per-core 384 KiB."""
    worst, n_over = 0, 0
    for plan in plans:
        for t in plan.tasks:
            used = (t.data_banks + t.weight_banks) * BANK_BYTES
            worst = max(worst, used)
            n_over += used > CBUF_BYTES
    return {"cbuf_bytes_per_core": CBUF_BYTES, "cbuf_peak_task_bytes": worst, "cbuf_tasks_over": n_over,
            "sram_bytes_per_core": SRAM_BYTES, "sram_used_bytes": 0}


def _memory_json(by_kind: dict[str, int], act_footprint: int, act_peak: int, total: int,
                 cbuf: dict[str, Any]) -> dict[str, Any]:
    weights = int(by_kind.get("weights", 0))
    regcmd = int(by_kind.get("regcmd", 0))
    io = int(by_kind.get("io", 0))
    peak = weights + regcmd + io + int(act_footprint)
    return {"weights_bytes": weights, "activations_bytes": int(act_footprint),
            "activation_peak_live_bytes": int(act_peak),
            "regcmd_bytes": regcmd, "io_bytes": io, "peak_bytes": peak, "address_space_bytes": int(total),
            "fits": bool(total <= ADDRESS_SPACE and cbuf.get("cbuf_tasks_over", 0) == 0), **cbuf}


# ---------------------------------------------------------------------------------------------- accuracy


def accuracy(float_graph: Any, qgraph: Any, feeds_list: list[dict[str, np.ndarray]],
             classifier_feeds: list[dict[str, np.ndarray]] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-node cosine (keyed by the producing node) and the output cosine / top-1 agreement."""
    from opennpu.quant.analysis import compare_layers

    rep = compare_layers(float_graph, qgraph, feeds_list)
    per_node: dict[str, float] = {}
    for s in rep.layers:
        per_node.setdefault(s.node, float(s.cosine))
    outs = [v.get("cosine") for v in rep.outputs.values() if v.get("cosine") is not None]
    out_cos = float(min(outs)) if outs else None
    top1 = rep.top1_agreement
    if classifier_feeds and top1 is not None:
        top1 = compare_layers(float_graph, qgraph, classifier_feeds).top1_agreement
    return per_node, {"cosine": out_cos, "top1_agreement": None if top1 is None else float(top1),
                      "inputs": len(feeds_list), "top1_inputs": len(classifier_feeds or feeds_list) if top1 is not None
                      else 0, "worst_layers": list(rep.worst)}


# ---------------------------------------------------------------------------------------------- entry points


def report_from_compiled(compiled: Any, model: str, float_graph: Any = None, feeds_list: list | None = None,
                         classifier_feeds: list | None = None, cores: int = 1, clock_mhz: float = 1000.0,
                         driver: str = "rknn") -> dict[str, Any]:
    est = cost.estimate(compiled, _params(cores, clock_mhz, driver))
    cos: dict[str, float] = {}
    acc: dict[str, Any] = {"cosine": None, "top1_agreement": None}
    notes = list(est.notes)
    if float_graph is not None and feeds_list:
        cos, acc = accuracy(float_graph, compiled.qgraph, feeds_list, classifier_feeds)
    else:
        notes.append("no float graph or inputs: accuracy is null")
    ops = _ops_json(est, cos)
    mem = compiled.memory
    plans = [op.plan for op in compiled.lowering.ops.values() if getattr(op, "plan", None) is not None]
    return {"model": model, "target": TARGET, "dtype": est.dtype, "source": "compiled", "ops": ops,
            "coverage": _coverage(ops), "perf": _perf(est),
            "perf_variants": _variants(lambda p: cost.estimate(compiled, p)),
            "memory": _memory_json(mem.bytes_by_kind, mem.activation_footprint, mem.activation_peak, mem.total_bytes,
                                   _cbuf_json(plans)),
            "accuracy": acc, "tasks": int(compiled.n_tasks), "timings_s": dict(compiled.timings),
            "constants": constants_json(), "notes": notes}


def report_from_graph(graph: Any, model: str, dtype: str = "int8", cores: int = 1, clock_mhz: float = 1000.0,
                      driver: str = "rknn") -> dict[str, Any]:
    """Graph-level estimate (no compile): no memory plan, so memory fields are weight bytes of the graph and an
    activation upper bound; accuracy null (nothing quantized)."""
    est = cost.estimate_graph(graph, dtype, _params(cores, clock_mhz, driver))
    ops = _ops_json(est, {})
    itemsize = 1 if dtype == "int8" else 2
    weights = sum(int(np.prod(t.shape)) * itemsize for t in graph.tensors.values() if t.is_const and t.shape)
    acts = sum(int(np.prod(t.shape)) * itemsize for t in graph.tensors.values()
               if not t.is_const and t.shape and all(isinstance(d, int) and d > 0 for d in t.shape))
    mem = {"weights_bytes": weights, "activations_bytes": acts, "regcmd_bytes": 0, "peak_bytes": weights + acts,
           "fits": bool(weights + acts <= ADDRESS_SPACE)}
    notes = list(est.notes) + ["graph-level estimate (cost.estimate_graph, not compiled): memory is the sum of "
                               "weights and of all activations without lifetime reuse, regcmd 0 and CBUF not "
                               "checked; accuracy null (no quantized graph)"]
    return {"model": model, "target": TARGET, "dtype": dtype, "source": "graph", "ops": ops,
            "coverage": _coverage(ops), "perf": _perf(est),
            "perf_variants": _variants(lambda p: cost.estimate_graph(graph, dtype, p)),
            "memory": mem, "accuracy": {"cosine": None, "top1_agreement": None},
            "constants": constants_json(), "notes": notes}


def report_from_program(program: Any, model: str, cores: int = 1, clock_mhz: float = 1000.0,
                        driver: str = "rknn") -> dict[str, Any]:
    """A ``.npu`` program: placements, reasons, MACs and tasks from the manifest; latency from
    cost.estimate_graph over the embedded quantized subgraphs (no tile plans: an approximation of
    cost.estimate); memory from the manifest's memory plan; accuracy null (no float graph in a program)."""
    m = program.manifest
    pay = m.target_payload or {}
    if "placements" not in pay:
        raise ReportError(f"program {model!r} has no rk3588 placements in its target payload")
    tasks_of = {o["name"]: int(o.get("tasks", 0)) for o in pay.get("ops", [])}

    def est_all(p: cost.CostParams) -> tuple[dict[str, cost.OpCost], float, float]:
        by: dict[str, cost.OpCost] = {}
        extra_npu = extra_cpu = 0.0
        for g in program.graphs.values():
            e = cost.estimate_graph(g, "int8", p)
            by.update({o.name: o for o in e.ops})
            extra_npu += e.driver_us / 1000
            extra_cpu += e.conversions_us / 1000
        return by, extra_npu, extra_cpu

    def perf(p: cost.CostParams) -> dict[str, Any]:
        by, xn, xc = est_all(p)
        npu = xn + sum(by[pl["node"]].latency_us for pl in pay["placements"]
                       if pl["device"] == "npu" and pl["node"] in by) / 1000
        cpu = xc + sum(by[pl["node"]].latency_us for pl in pay["placements"]
                       if pl["device"] == "cpu" and pl["node"] in by) / 1000
        return {"latency_ms": npu + cpu, "npu_ms": npu, "cpu_ms": cpu, "cores": p.cores, "clock_mhz": p.clock_mhz,
                "driver": p.driver, "conversions_ms": xc, "driver_ms": xn}

    p0 = _params(cores, clock_mhz, driver)
    by, _, _ = est_all(p0)
    ops = []
    for pl in pay["placements"]:
        o = by.get(pl["node"])
        ops.append({"name": pl["node"], "op_type": pl["op_type"], "placement": pl["device"], "reason": pl["reason"],
                    "macs": int(pl.get("macs") or 0),
                    "tasks": tasks_of.get(pl.get("npu_op") or "", 0) if o is None or o.tasks else 0,
                    "latency_us": float(o.latency_us) if o else 0.0, "cosine": None,
                    "bound": o.bound if o else "free", "fused_into": pl.get("npu_op") if o is None else o.fused_into})
    mp = m.memory_plan or {}
    nbytes_task = [int(t.get("cbuf_bytes", 0)) for t in (m.tasks or [])]
    cbuf = {"cbuf_bytes_per_core": CBUF_BYTES, "cbuf_peak_task_bytes": max(nbytes_task, default=0),
            "cbuf_tasks_over": sum(b > CBUF_BYTES for b in nbytes_task)}
    notes = ["from a .npu program: accuracy null (no float graph in a program); per-op latency from "
             "cost.estimate_graph over the embedded quantized subgraphs (the program keeps no tile plans); CBUF use "
             "per task is not stored in the manifest (tiling checked it at compile time)"]
    return {"model": model, "target": TARGET, "dtype": "int8", "source": "program", "ops": ops,
            "coverage": _coverage(ops), "perf": perf(p0),
            "perf_variants": [{"cores": c, "clock_mhz": mhz, "driver": d,
                               "latency_ms": perf(_params(c, mhz, d))["latency_ms"]} for c, mhz, d in VARIANTS],
            "memory": _memory_json(mp.get("bytes_by_kind", {}), mp.get("activation_footprint", 0),
                                   mp.get("activation_peak", 0), mp.get("total_bytes", 0), cbuf),
            "accuracy": {"cosine": None, "top1_agreement": None}, "tasks": len(m.tasks or []),
            "constants": constants_json(), "notes": notes}


def constants_json() -> list[dict[str, Any]]:
    return [{"name": k, "value": c.value, "unit": c.unit, "source": c.source, "tag": c.tag}
            for k, c in cost.CONSTANTS.items()]


def zoo_feeds(graph: Any, n: int) -> list[dict[str, np.ndarray]] | None:
    """A few real inputs for a zoo model (its calibration set), or None."""
    from opennpu.targets.rk3588.compiler import resolve_calibration

    try:
        feeds = resolve_calibration(graph, "zoo")
    except OpenNPUError:
        return None
    return list(feeds)[:n]


def build_report(model: str, cores: int = 1, clock_mhz: float = 1000.0, driver: str = "rknn",
                 calibration: Any = "zoo", method: str = "percentile", n_accuracy: int = 4,
                 progress: bool = False, compiled: Any = None, n_calibration: int | None = None,
                 n_top1: int = 16, quant_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report for a zoo name, a model file, or a ``.npu`` program path. ``n_calibration`` keeps only the
    first calibration inputs (fast reports); ``n_top1`` augmented photos measure classifiers' top-1 agreement."""
    from opennpu.frontends import load_model
    from opennpu.targets.rk3588.compiler import compile_lowered

    if str(model).endswith(".npu") and Path(model).is_file():
        from opennpu.runtime.program import load_program

        return report_from_program(load_program(model), Path(model).stem, cores, clock_mhz, driver)
    graph = load_model(model)
    if compiled is None:
        cal = calibration
        if n_calibration is not None:
            from opennpu.targets.rk3588.compiler import resolve_calibration

            cal = list(resolve_calibration(graph, calibration))[:n_calibration]
        compiled = compile_lowered(graph, calibration=cal, method=method, progress=progress,
                                   quant_options=quant_options)
    feeds = zoo_feeds(graph, n_accuracy) if calibration == "zoo" else None
    if feeds is None and calibration != "zoo":
        from opennpu.targets.rk3588.compiler import resolve_calibration

        feeds = list(resolve_calibration(graph, calibration))[:n_accuracy]
    cls_feeds = None
    if graph.metadata.get("zoo") in ("efficientnet-lite0", "mobilenetv2"):
        from opennpu.data.augment import imagenet_eval_set

        scheme = "tf-lite" if graph.metadata.get("zoo") == "efficientnet-lite0" else "torchvision"
        cls_feeds = [{graph.inputs[0]: x} for x in imagenet_eval_set(n_top1, 224, scheme)]
    return report_from_compiled(compiled, Path(str(model)).stem if Path(str(model)).is_file() else str(model),
                                graph, feeds, cls_feeds, cores, clock_mhz, driver)
