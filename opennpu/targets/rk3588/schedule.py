"""Scheduling NPU tasks on the RK3588's 3 cores as rocket jobs.

Kernel-side facts (linux ``drivers/accel/rocket/rocket_job.c`` and ``include/uapi/drm/rocket_accel.h``; Mesa
``rkt_ml.c rkt_ml_subgraph_invoke``; shared/reference/rk3588-npu.md §1.6, §2):

* A SUBMIT carries jobs; a job is a list of tasks (regcmd address + count) that run **sequentially on one core**
  (the threaded IRQ handler submits the next task of the same job), plus the BO handles it reads and writes.
* There is one drm_sched per core (credit_limit 1) and one scheduler entity per fd spanning all cores: **the
  kernel picks the core**, userspace cannot. The ``core`` of a :class:`Job` here is this model's prediction (and
  the emulator's/perf model's assignment), not an instruction to the kernel.
* Ordering comes only from **implicit dma-resv fences** on the declared BOs: a job waits for earlier writers of
  every BO it reads or writes, and a writer also waits for earlier readers. Two jobs that declare the same output
  BO are therefore serialised, whatever they actually write.
* Mesa puts all tasks of a weight-reuse op (``reuse_weights_cbuf``) in one job ("to benefit from memory residency
  in SRAM") and otherwise makes every task its own job, "spread among cores, for parallelism". Since those jobs
  all declare the op's one output BO, they serialise [I] -- consistent with widgetii's ftrace of MobileNetV1 on
  effectively one core.

How this schedule respects them:

* A chain of tasks linked by WEIGHT_REUSE (TileTask.weight_reuse) is never cut: a weight-resident op is one job
  on one core; a partial-weights op yields one chain per output-channel group.
* An op whose work splits into several independent chains (output-channel groups, or row/column tasks without
  weight reuse) is spread over up to ``n_cores`` jobs, and **each split job declares its own output BO**
  (``"<bo>#<k>"``, the part of the tensor it writes; :attr:`Schedule.bo_parts`). Consumers declare every part
  as an input, so the fences order them after all parts and the parts themselves run in parallel. (On rocket the
  parts are either separate BOs the consumer reads contiguously, or small fence-only BOs next to one shared
  tensor BO -- the kernel only tracks declared handles [I].)
* Jobs are emitted in a topological order of the op DAG; fence dependencies are recomputed from the declared BO
  sets exactly as the kernel would, optionally treating buffers that share memory in a MemoryPlan (lifetime
  reuse) as the same BO, so aliasing can never race.
* Cores are assigned by list scheduling (earliest start, ties to the core that ran the latest dependency, then the
  lowest id); the estimate uses per-task cycle costs passed in plus optional per-task/per-job overheads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opennpu.errors import CompileError

from .memory import MemoryPlan
from .tiling import TilePlan

N_CORES = 3


@dataclass(frozen=True)
class SchedOp:
    """One NPU op as the scheduler sees it: its tasks' cycle costs and how they are chained."""

    name: str
    task_cycles: tuple[int, ...]
    deps: tuple[str, ...] = ()  # ops whose outputs this op reads
    weights_resident: bool = False  # all tasks in one job on one core (Mesa reuse_weights_cbuf)
    task_reuse: tuple[bool, ...] | None = None  # per-task WEIGHT_REUSE: a True task stays with its predecessor
    output_bo: str | None = None  # BO written (default: the op name)
    input_bos: tuple[str, ...] = ()  # further BOs read (graph inputs, constants written by the host)
    scratch_bos: tuple[str, ...] = ()  # BOs written and read only inside the op (multi-stage pool maps)

    @property
    def bo(self) -> str:
        return self.output_bo or self.name

    @classmethod
    def from_tile_plan(cls, name: str, plan: TilePlan, task_cycles: list[int] | tuple[int, ...],
                       deps: tuple[str, ...] = (), **kw) -> SchedOp:
        if len(task_cycles) != len(plan.tasks):
            raise CompileError(f"op {name}: {len(task_cycles)} cycle costs for {len(plan.tasks)} tasks")
        return cls(name, tuple(int(c) for c in task_cycles), tuple(deps),
                   weights_resident=plan.weights_resident, task_reuse=tuple(t.weight_reuse for t in plan.tasks),
                   **kw)


@dataclass
class Job:
    id: int
    op: str
    tasks: tuple[int, ...]  # indices into the op's tasks, in execution order
    in_bos: tuple[str, ...]
    out_bos: tuple[str, ...]
    deps: tuple[int, ...] = ()  # job ids (implicit-fence dependencies)
    core: int = -1
    cycles: int = 0
    start: int = 0
    finish: int = 0


@dataclass
class Schedule:
    jobs: list[Job]
    n_cores: int
    makespan_cycles: int
    critical_path_cycles: int
    bo_parts: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def jobs_of(self, op: str) -> list[Job]:
        return [j for j in self.jobs if j.op == op]

    @property
    def cores_used(self) -> set[int]:
        return {j.core for j in self.jobs}


def _topo(ops: list[SchedOp]) -> list[SchedOp]:
    by_name: dict[str, SchedOp] = {}
    for op in ops:
        if op.name in by_name:
            raise CompileError(f"op {op.name!r} is scheduled twice")
        if not op.task_cycles:
            raise CompileError(f"op {op.name!r} has no tasks")
        if any(c < 0 for c in op.task_cycles):
            raise CompileError(f"op {op.name!r} has a negative task cost")
        if op.task_reuse is not None and len(op.task_reuse) != len(op.task_cycles):
            raise CompileError(f"op {op.name!r}: {len(op.task_reuse)} reuse flags for {len(op.task_cycles)} tasks")
        by_name[op.name] = op
    for op in ops:
        for d in op.deps:
            if d not in by_name:
                raise CompileError(f"op {op.name!r} depends on unknown op {d!r}")
    index = {op.name: i for i, op in enumerate(ops)}
    indeg = {op.name: len(set(op.deps)) for op in ops}
    users: dict[str, list[str]] = {op.name: [] for op in ops}
    for op in ops:
        for d in set(op.deps):
            users[d].append(op.name)
    ready = sorted((n for n, k in indeg.items() if k == 0), key=index.get)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(by_name[n])
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
        ready.sort(key=index.get)
    if len(order) != len(ops):
        raise CompileError("the op graph has a cycle")
    return order


def _chains(op: SchedOp) -> list[list[int]]:
    n = len(op.task_cycles)
    if op.weights_resident:
        return [list(range(n))]
    reuse = op.task_reuse or (False,) * n
    chains: list[list[int]] = []
    for i in range(n):
        if i and reuse[i]:
            chains[-1].append(i)
        else:
            chains.append([i])
    return chains


def _split(chains: list[list[int]], cost: list[int], k: int) -> list[list[int]]:
    """Contiguous partition of chains into k jobs of similar cost."""
    total = sum(cost)
    jobs: list[list[int]] = []
    cur: list[int] = []
    acc = 0
    for i, (ch, c) in enumerate(zip(chains, cost, strict=True)):
        cur += ch
        acc += c
        left_jobs = k - len(jobs) - 1
        left_chains = len(chains) - i - 1
        if left_jobs > 0 and (acc >= total * (len(jobs) + 1) / k or left_chains == left_jobs):
            jobs.append(cur)
            cur = []
    if cur:
        jobs.append(cur)
    return jobs


def build_schedule(ops: list[SchedOp], n_cores: int = N_CORES, split: str = "per_core",
                   task_overhead_cycles: int = 0, job_overhead_cycles: int = 0,
                   memory: MemoryPlan | None = None) -> Schedule:
    """Jobs for ``ops`` (a DAG), their fence dependencies, core assignment and cycle estimates.

    ``split``: "per_core" groups an op's independent chains into at most ``n_cores`` jobs; "per_chain" makes every
    chain its own job (Mesa's one job per task for ops without weight reuse). ``memory``: buffers that overlap in
    this plan count as the same BO for fencing.
    """
    if n_cores < 1:
        raise CompileError(f"need at least one core, got {n_cores}")
    if split not in ("per_core", "per_chain"):
        raise CompileError(f"unknown job split {split!r}")
    order = _topo(ops)
    jobs: list[Job] = []
    bo_parts: dict[str, list[str]] = {}
    for op in order:
        chains = _chains(op)
        cost = [sum(op.task_cycles[t] for t in ch) for ch in chains]
        k = min(n_cores, len(chains)) if split == "per_core" else len(chains)
        groups = [sum(chains, [])] if k == 1 else _split(chains, cost, k)
        reads: list[str] = []
        for d in dict.fromkeys(op.deps):
            dep_bo = next(o.bo for o in order if o.name == d)
            reads += bo_parts.get(dep_bo, [dep_bo])
        reads += list(op.input_bos)
        if len(groups) > 1:
            bo_parts[op.bo] = [f"{op.bo}#{i}" for i in range(len(groups))]
        for i, tasks in enumerate(groups):
            out = bo_parts[op.bo][i] if len(groups) > 1 else op.bo
            cyc = sum(op.task_cycles[t] for t in tasks) + task_overhead_cycles * len(tasks) + job_overhead_cycles
            jobs.append(Job(len(jobs), op.name, tuple(tasks), tuple(dict.fromkeys(reads)), (out, *op.scratch_bos),
                            cycles=cyc))
    _fences(jobs, memory)
    _assign(jobs, n_cores)
    crit: dict[int, int] = {}
    for j in jobs:
        crit[j.id] = j.cycles + max((crit[d] for d in j.deps), default=0)
    notes = [] if len(jobs) == len(order) else [f"{len(jobs) - len(order)} extra jobs from splits over cores"]
    return Schedule(jobs, n_cores, max((j.finish for j in jobs), default=0), max(crit.values(), default=0),
                    bo_parts, notes)


def _parent(bo: str) -> str:
    return bo.split("#", 1)[0]


def _fences(jobs: list[Job], memory: MemoryPlan | None) -> None:
    """Dependencies as dma-resv implicit fences give them: RAW, WAW and WAR on declared BOs (in submission order)."""
    def region(bo: str) -> tuple[int, int] | None:
        if memory is None:
            return None
        a = memory.allocations.get(_parent(bo))
        return None if a is None or not a.size else (a.address, a.end)

    def same(a: str, b: str) -> bool:
        if a == b:
            return True
        if _parent(a) == _parent(b):
            return False  # parts of one tensor: disjoint by construction of the split
        ra, rb = region(a), region(b)
        return ra is not None and rb is not None and ra[0] < rb[1] and rb[0] < ra[1]

    for j in jobs:
        deps = set()
        for p in jobs[:j.id]:
            raw = any(same(w, r) for w in p.out_bos for r in j.in_bos)
            waw = any(same(w, o) for w in p.out_bos for o in j.out_bos)
            war = any(same(r, o) for r in p.in_bos for o in j.out_bos)
            if raw or waw or war:
                deps.add(p.id)
        j.deps = tuple(sorted(deps))


def _assign(jobs: list[Job], n_cores: int) -> None:
    free = [0] * n_cores
    for j in jobs:
        ready = max((jobs[d].finish for d in j.deps), default=0)
        last_dep = max(j.deps, key=lambda d: jobs[d].finish, default=None)
        pref = jobs[last_dep].core if last_dep is not None else -1
        j.core = min(range(n_cores), key=lambda c: (max(free[c], ready), c != pref, c))
        j.start = max(free[j.core], ready)
        j.finish = j.start + j.cycles
        free[j.core] = j.finish
