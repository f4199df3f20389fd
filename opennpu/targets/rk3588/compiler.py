"""Compile a model for the RK3588 NPU into a self-contained ``.npu`` Program.

``compile_model(graph_or_qgraph, target="rk3588", calibration=...) -> Program``:

1. quantize if needed (``opennpu.quantize``; a float model needs calibration data);
2. partition (capabilities + partition.py), then lower (lower.py: what this slice really lowers, the rest on
   the CPU with a reason, segments, boundary conversions, buffer lifetimes);
3. schedule every NPU segment's conv ops as jobs on the 3 cores (schedule.py: weight-reuse chains never cut);
4. size the regcmd buffers (word counts do not depend on addresses), plan memory (memory.py: regcmd, weights,
   host-visible io buffers, activations with lifetime reuse, one 32-bit space), build every ConvTask with its
   addresses, emit and chain its register words per job (codegen.py + regcmd.link);
5. write the Program (runtime/program.py): blobs = packed weights ``w/<op>``, BS streams ``bs/<op>``, regcmd
   buffers ``regcmd/job<j>`` (u64 words); manifest = inputs/outputs with quant, memory plan (every buffer
   with address/size/blob), tasks and jobs (addresses, word counts, predicted cores, fence deps), and in
   ``target_payload`` the segments (CPU segments as embedded serialized graphs; NPU segments as job lists and
   their NCHW <-> NC1HWC2 conversions), every node's placement with its reason, and statistics.

Each NPU segment also embeds its source subgraph (``src<k>``) so the "cpu" device can run the program with
TFLite integer semantics without the source model. ``compile_lowered`` returns everything (program, quantized
graph, lowering, memory plan, schedules, timings) for tests and reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opennpu.errors import CompileError
from opennpu.ir.graph import Graph
from opennpu.runtime.emulator.npu_math import DEFAULT_ROUNDING
from opennpu.runtime.program import Manifest, Program, TensorSpec

from . import lower as LW
from .capabilities import is_quantized
from .codegen import link_conv_tasks
from .memory import MemoryPlan, check_plan
from .partition import partition
from .pool import PoolOp, build_pool_tasks, link_pool_tasks, pool_task_cycles
from .schedule import SchedOp, Schedule, build_schedule

TARGET = "rk3588"
PAYLOAD_SCHEMA = 1


@dataclass
class Compiled:
    program: Program
    qgraph: Graph
    lowering: LW.Lowering
    memory: MemoryPlan
    schedules: dict[int, Schedule]  # NPU segment id -> schedule
    n_tasks: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def npu_mac_fraction(self) -> float:
        return self.lowering.npu_mac_fraction


def resolve_calibration(graph: Graph, spec: Any) -> Any:
    """Calibration data for ``opennpu.quantize``: ``"zoo"`` picks real data for a zoo model (64 MNIST digits for
    mnist-cnn, 16 augmented photos for image classifiers), a str/Path is a folder of images/.npy or one .npy, a
    list of .npy paths, or anything ``opennpu.quant.calibration.iter_feeds`` accepts."""
    if isinstance(spec, (list, tuple)) and len(spec) == 1 and isinstance(spec[0], (str, Path)):
        spec = spec[0]  # the CLI's nargs="+" list
    if isinstance(spec, str) and spec == "zoo":
        zoo = graph.metadata.get("zoo")
        shape = graph.tensor(graph.inputs[0]).shape if len(graph.inputs) == 1 else None
        if zoo == "mnist-cnn":
            from opennpu.data import mnist5k
            from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

            x = preprocess_mnist(mnist5k()[0][:64])
            b = shape[0] if shape else 1
            return [{graph.inputs[0]: x[i:i + b]} for i in range(0, 64 - b + 1, b)]
        if shape is not None and len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
            from opennpu.data.augment import imagenet_calibration_set

            scheme = {"efficientnet-lite0": "tf-lite"}.get(zoo or "", "torchvision")
            return [{graph.inputs[0]: x} for x in imagenet_calibration_set(16, shape[2], scheme)]
        raise CompileError(f"no zoo calibration set for model {zoo or graph.name!r}: pass a folder or .npy files")
    return spec


QUANT_OPTIONS = ("equalize", "refine", "pin", "weight_rounding", "percentile")  # passed on to opennpu.quantize


def _quantized(model: Any, calibration: Any, dtype: str, method: str, progress: bool,
               quant_options: Mapping[str, Any] | None = None) -> Graph:
    from opennpu.frontends import load_model

    g = load_model(model) if isinstance(model, (str, Path)) else model
    if not isinstance(g, Graph):
        raise CompileError(f"compile_model takes a Graph or a model path, got {type(model).__name__}")
    if is_quantized(g):
        return g
    if calibration is None:
        raise CompileError(f"model {g.name!r} is float: compiling for {TARGET} needs calibration data "
                           "(calibration='zoo', a folder of images/.npy, or feed dicts)")
    import opennpu

    # Per-channel scales go through the 14-bit BS multiplier (docs/rk3588-arithmetic.md): keep every channel's
    # scale within 2^-12 of the layer's largest so near-dead channels round to zero instead of underflowing it.
    options = dict(quant_options or {})
    unknown = sorted(set(options) - set(QUANT_OPTIONS))
    if unknown:
        raise CompileError(f"unknown quantization options {unknown}; choose from {list(QUANT_OPTIONS)}")
    return opennpu.quantize(g, resolve_calibration(g, calibration), dtype=dtype, method=method, progress=progress,
                            min_channel_scale_ratio=2.0 ** -12, **options)


def _sched_ops(low: LW.Lowering, seg: LW.LoweredSegment) -> list[SchedOp]:
    """The segment's conv and pool ops for the scheduler. Dependencies follow the channel groups each op reads and
    writes, so the writers of a concat's legs (disjoint groups of one buffer) declare one BO part each
    (``act/<buffer>#g<first group>``) and run unordered; a reader depends on the writers of what it reads."""
    ops = [low.ops[n] for n in seg.ops if isinstance(low.ops[n], (LW.ConvOp, PoolOp))]
    writes = {o.name: low.region(o.output) for o in ops}

    def bo(region: tuple[str, int, int]) -> str:
        whole = region[1] == 0 and region[2] >= low.buffers[region[0]].groups
        return f"act/{region[0]}" if whole else f"act/{region[0]}#g{region[1]}"

    out = []
    for op in ops:
        deps: list[str] = []
        ext: list[str] = []
        for t in op.reads:
            b, g0, g1 = low.region(t)
            hit = [w for w, (wb, w0, w1) in writes.items() if wb == b and w0 < g1 and g0 < w1 and w != op.name]
            deps += hit
            covered = sum(min(g1, writes[w][2]) - max(g0, writes[w][1]) for w in hit)
            if covered < g1 - g0:  # (part of) it was written before this segment
                ext.append(f"act/{b}")
        deps_t, ext_t = tuple(dict.fromkeys(deps)), tuple(dict.fromkeys(ext))
        if isinstance(op, PoolOp):  # row bands are independent; stages are not: one job, in order
            out.append(SchedOp(op.name, tuple(pool_task_cycles(op)), deps_t, weights_resident=len(op.stages) > 1,
                               output_bo=bo(writes[op.name]), input_bos=ext_t,
                               scratch_bos=tuple(f"act/{b}" for b, _ in op.scratch())))
            continue
        out.append(SchedOp.from_tile_plan(op.name, op.plan, LW.task_cycles(op), deps_t,
                                          output_bo=bo(writes[op.name]), input_bos=ext_t))
    return out


def _build_tasks(op, low: LW.Lowering, addr: dict[str, int], wb: LW.OpAddresses) -> list:
    if isinstance(op, PoolOp):
        return build_pool_tasks(op, low, addr)
    return LW.build_tasks(op, low, addr, wb)


def _link(op, tasks: list, base: int):
    return (link_pool_tasks if isinstance(op, PoolOp) else link_conv_tasks)(tasks, base)


def _task_json(op, i: int, t) -> dict[str, Any]:
    """The per-task manifest fields of task ``i`` of ``op`` (same keys for conv and pool tasks)."""
    if isinstance(op, PoolOp):
        tile = op.tiles[i]
        return {"kind": "pool", "input_addr": t.input_addr, "weight_addr": None, "bias_addr": None,
                "output_addr": t.output_addr, "ew_addr": None, "in_rows": list(tile.in_rows),
                "out_rows": list(tile.out_rows), "oc_range": [0, op.geometry.c], "weight_reuse": False}
    tt = op.plan.tasks[i]
    return {"kind": "conv", "input_addr": t.input_addr, "weight_addr": t.weight_addr, "bias_addr": t.bias_addr,
            "output_addr": t.output_addr, "ew_addr": t.ew_addr, "in_rows": list(tt.in_rows),
            "out_rows": list(tt.out_rows), "oc_range": list(tt.oc_range), "weight_reuse": tt.weight_reuse}


def _spec_json(c: LW.Conversion, low: LW.Lowering, addr: int) -> dict[str, Any]:
    buf = low.buffers[c.buffer]
    chw = LW._as_map(c.shape)
    return {"tensor": c.tensor, "buffer": f"act/{buf.name}", "address": addr + c.group_offset * buf.surf_stride,
            "shape": list(c.shape),
            "dtype": c.dtype, "chw": list(chw), "surf_stride": buf.surf_stride, "pad_value": c.pad_value}


def compile_lowered(model: Any, target: str = TARGET, calibration: Any = None, *, dtype: str = "int8",
                    method: str = "percentile", progress: bool = False,
                    quant_options: Mapping[str, Any] | None = None) -> Compiled:
    """Everything compile_model does, returning the intermediate results too. ``quant_options``: more
    ``opennpu.quantize`` arguments for a float model (``QUANT_OPTIONS``: equalize, refine, pin, ...)."""
    if target != TARGET:
        raise CompileError(f"unknown target {target!r} (this compiler targets {TARGET!r})")
    if dtype != "int8":
        raise CompileError(f"rk3588 compilation for dtype {dtype} not implemented yet (planned: fp16); use int8")
    t0 = time.perf_counter()
    q = _quantized(model, calibration, dtype, method, progress, quant_options)
    t1 = time.perf_counter()
    for name in q.inputs:
        shape = q.tensor(name).shape
        if shape is None or any(int(d) < 1 for d in shape):
            raise CompileError(f"input {name!r} has a dynamic shape {shape}: pin input shapes before compiling")
    low = LW.lower(q, partition(q))
    t2 = time.perf_counter()

    # schedule per NPU segment; jobs numbered globally
    schedules: dict[int, Schedule] = {}
    job_tasks: list[tuple[int, str, tuple[int, ...], int]] = []  # (segment, op, task indices, schedule job id)
    for seg in low.segments:
        if seg.device != "npu":
            continue
        ops = _sched_ops(low, seg)
        if not ops:
            continue
        schedules[seg.id] = build_schedule(ops)
        for j in schedules[seg.id].jobs:
            job_tasks.append((seg.id, j.op, j.tasks, j.id))

    # 1st pass: regcmd sizes with placeholder addresses (word counts do not depend on them)
    zero = {f: 0 for f in low.buffers}
    tasks_of: dict[str, list] = {}
    regcmd_sizes: dict[str, int] = {}
    for k, (_, opname, idx, _) in enumerate(job_tasks):
        op = low.ops[opname]
        if opname not in tasks_of:
            tasks_of[opname] = _build_tasks(op, low, zero, LW.OpAddresses(0, 0))
        buf, _ = _link(op, [tasks_of[opname][i] for i in idx], 0)
        regcmd_sizes[f"regcmd/job{k}"] = len(buf)
    mem = LW.plan(low, regcmd_sizes)
    check_plan(mem)
    addr = {b: mem.address(f"act/{b}") for b in low.buffers}

    # 2nd pass: real addresses, regcmd words per job
    blobs: dict[str, np.ndarray] = {}
    for op in low.conv_ops():
        blobs[f"w/{op.name}"] = op.weight_blob
        blobs[f"bs/{op.name}"] = op.bs_blob
        tasks_of[op.name] = LW.build_tasks(op, low, addr, LW.OpAddresses(mem.address(f"w/{op.name}"),
                                                                         mem.address(f"bs/{op.name}")))
    for op in low.ops.values():
        if isinstance(op, PoolOp):
            tasks_of[op.name] = build_pool_tasks(op, low, addr)
    jobs_json, tasks_json = [], []
    job_ids: dict[tuple[int, int], int] = {}
    for k, (sid, _, _, sj) in enumerate(job_tasks):
        job_ids[(sid, sj)] = k
    for k, (sid, opname, idx, sj) in enumerate(job_tasks):
        name = f"regcmd/job{k}"
        base = mem.address(name)
        buf, places = _link(low.ops[opname], [tasks_of[opname][i] for i in idx], base)
        if len(buf) != regcmd_sizes[name]:
            raise CompileError(f"job {k}: regcmd size changed between passes ({regcmd_sizes[name]} -> {len(buf)})")
        blobs[name] = np.frombuffer(buf, dtype="<u8").copy()
        sjob = schedules[sid].jobs[sj]
        ids = []
        for i, p in zip(idx, places, strict=True):
            ids.append(len(tasks_json))
            tasks_json.append({"id": len(tasks_json), "op": opname, "job": k, "index": i, "core": sjob.core,
                               "regcmd_addr": p.addr, "regcmd_count": p.count,
                               **_task_json(low.ops[opname], i, tasks_of[opname][i])})
        jobs_json.append({"id": k, "segment": sid, "op": opname, "core": sjob.core, "regcmd_blob": name,
                          "regcmd_addr": places[0].addr, "regcmd_count": places[0].count, "tasks": ids,
                          "deps": [job_ids[(sid, d)] for d in sjob.deps], "cycles": sjob.cycles})
    # fences with the memory plan's aliasing (buffers reused by lifetime count as one BO)
    for sid in list(schedules):
        fenced = build_schedule(_sched_ops(low, next(s for s in low.segments if s.id == sid)), memory=mem)
        for j in fenced.jobs:
            jobs_json[job_ids[(sid, j.id)]]["deps"] = [job_ids[(sid, d)] for d in j.deps]
    t3 = time.perf_counter()

    # program
    model_name = q.name or "model"
    manifest = Manifest(TARGET, model_name,
                        inputs=[TensorSpec.from_tensor(q.tensor(n)) for n in q.inputs],
                        outputs=[TensorSpec.from_tensor(q.tensor(n)) for n in q.outputs])
    program = Program(manifest)
    segs_json = []
    for seg in low.segments:
        sj: dict[str, Any] = {"id": seg.id, "device": seg.device, "inputs": seg.inputs, "outputs": seg.outputs}
        key = f"seg{seg.id}" if seg.device == "cpu" else f"src{seg.id}"
        program.add_graph(key, LW.subgraph(q, seg.nodes, seg.inputs, seg.outputs, f"{model_name}/{key}"))
        if seg.device == "cpu":
            sj["graph"] = key
        else:
            sj["source_graph"] = key
            sj["jobs"] = [j["id"] for j in jobs_json if j["segment"] == seg.id]
            sj["to_npu"] = [_spec_json(c, low, addr[c.buffer]) for c in seg.to_npu]
            sj["to_cpu"] = [_spec_json(c, low, addr[c.buffer]) for c in seg.to_cpu]
        segs_json.append(sj)
    buffers_json = []
    for a in sorted(mem.allocations.values(), key=lambda a: a.address):
        buffers_json.append({"name": a.name, "kind": a.kind, "address": a.address, "size": a.size,
                             "first_use": a.first_use, "last_use": a.last_use,
                             "blob": a.name if a.name in blobs else None})
    manifest.memory_plan = {"base": mem.base, "total_bytes": mem.total_bytes, "memory_size": mem.end,
                            "regions": {k: list(v) for k, v in mem.regions.items()},
                            "bytes_by_kind": mem.bytes_by_kind, "activation_footprint": mem.activation_footprint,
                            "activation_peak": mem.activation_peak, "buffers": buffers_json}
    manifest.tasks, manifest.jobs = tasks_json, jobs_json
    r = DEFAULT_ROUNDING
    conv = low.conv_ops()
    n_pool = sum(isinstance(o, PoolOp) for o in low.ops.values())
    stats = {"total_macs": low.total_macs, "npu_macs": low.npu_macs, "npu_mac_fraction": low.npu_mac_fraction,
             "npu_ops": len(conv) + n_pool, "tasks": len(tasks_json), "jobs": len(jobs_json),
             "segments": len(low.segments), "cpu_nodes": sum(d.device == "cpu" for d in low.decisions),
             "npu_nodes": sum(d.device == "npu" for d in low.decisions),
             "cores_used": sorted({j["core"] for j in jobs_json}),
             "makespan_cycles": sum(s.makespan_cycles for s in schedules.values())}
    manifest.target_payload = {
        "schema": PAYLOAD_SCHEMA,
        "rounding": {"truncate": r.truncate, "bs_mul": r.bs_mul, "ew_cvt": r.ew_cvt, "out_cvt": r.out_cvt},
        "segments": segs_json,
        "placements": [{"node": d.name, "op_type": d.op_type, "device": d.device, "reason": d.reason,
                        "unit": d.unit, "lowering": d.lowering, "npu_op": d.op, "macs": d.macs}
                       for d in low.decisions],
        "ops": [{"name": o.name, "kind": o.kind, "segment": o.segment, "input": o.input, "output": o.output,
                 **({"ew_input": o.ew_input, "macs": o.macs, "tasks": len(o.plan.tasks), "tiling": o.plan.mode,
                     "weight_groups": [list(g) for g in o.plan.groups], "truncate_bits": o.requant.truncate_bits,
                     "per_channel": o.requant.per_channel,
                     "fused_add": o.ew_input is not None and o.kind == "conv"}
                    if isinstance(o, LW.ConvOp) else
                    {"tasks": len(o.tiles), "method": o.geometry.method, "kernel": [o.geometry.kh, o.geometry.kw],
                     "stride": list(o.geometry.stride), "pads": list(o.geometry.pads)}
                    if isinstance(o, PoolOp) else {}),
                 **({"legs": o.legs, "group_offsets": o.group_offsets, "copied": o.copied}
                    if isinstance(o, LW.ConcatOp) else {})} for o in low.ops.values()],
        "stats": stats,
    }
    for k, v in blobs.items():
        program.blobs[k] = v
    t4 = time.perf_counter()
    timings = {"quantize": t1 - t0, "lower": t2 - t1, "codegen": t3 - t2, "program": t4 - t3, "total": t4 - t0}
    return Compiled(program, q, low, mem, schedules, len(tasks_json), timings)


def compile_model(model: Any, target: str = TARGET, calibration: Any = None, *, dtype: str = "int8",
                  method: str = "percentile", progress: bool = False,
                  quant_options: Mapping[str, Any] | None = None) -> Program:
    """Quantize (if needed), partition, lower, codegen and package ``model`` (a Graph or a model path/zoo name)
    as a Program that runs without the source model (``opennpu.runtime.devices.run_program``)."""
    return compile_lowered(model, target, calibration, dtype=dtype, method=method, progress=progress,
                           quant_options=quant_options).program


__all__ = ["QUANT_OPTIONS", "Compiled", "compile_lowered", "compile_model", "resolve_calibration"]
