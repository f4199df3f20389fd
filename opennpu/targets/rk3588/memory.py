"""Memory plan of a compiled RK3588 program: every buffer at an address in one 32-bit NPU address space.

Facts: NPU register address fields are 32 bits (``drm_rocket_task.regcmd`` is u32, FEATURE_DATA_ADDR,
DST_BASE_ADDR, PC_BASE_ADDRESS are 32-bit) and each IOMMU domain spans 4 GiB ("iommu domain id, each domain has 4GB
of space", rknn_matmul_api.h) -- shared/reference/rk3588-npu.md §2, §3. BOs are mapped at page granularity.

Layout (low to high): regcmd, weights, io (graph inputs/outputs, host-visible), activations. Regcmd, weights and
io buffers live for the whole program and are packed back to back (each at its own alignment); each region starts
on a page. Activations share memory by lifetime: buffers sorted by size (largest first) take the lowest aligned
offset that does not overlap any already placed buffer whose task interval ``[first_use, last_use]`` intersects
theirs (inclusive: a task reading A while writing B must not alias them). The base address defaults to 1 MiB so
that address 0 stays the PC's null chain pointer and an unmapped guard range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opennpu.errors import CompileError

KINDS = ("regcmd", "weights", "io", "activation")
ADDRESS_SPACE = 1 << 32  # 32-bit NPU IOVA
PAGE = 4096
DEFAULT_BASE = 1 << 20


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int
    alignment: int = 64  # regcmd tasks are 64-byte aligned (rkt_ml.c); 64 suits feature/weight DMA too [I]
    kind: str = "activation"  # regcmd | weights | activation | io
    first_use: int = 0  # task index of the first write/read
    last_use: int = 0  # task index of the last read


@dataclass(frozen=True)
class Allocation:
    name: str
    kind: str
    address: int
    size: int
    alignment: int
    first_use: int
    last_use: int

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass
class MemoryPlan:
    base: int
    allocations: dict[str, Allocation]
    regions: dict[str, tuple[int, int]]  # kind -> (start address, bytes reserved)
    bytes_by_kind: dict[str, int]  # bytes requested per kind (sum of sizes)
    activation_footprint: int  # bytes of the activation region after reuse
    activation_peak: int  # max bytes of activations live at one task (a lower bound for any reuse)
    total_bytes: int  # end of the last region - base
    notes: list[str] = field(default_factory=list)

    def address(self, name: str) -> int:
        if name not in self.allocations:
            raise CompileError(f"no buffer named {name!r} in the memory plan")
        return self.allocations[name].address

    @property
    def end(self) -> int:
        return self.base + self.total_bytes

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {self.bytes_by_kind.get(k, 0)} B" for k in KINDS)
        return (f"memory plan: {self.total_bytes} B at 0x{self.base:08x} ({kinds}; activations "
                f"{self.activation_footprint} B after reuse, peak live {self.activation_peak} B)")


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


def _validate(buffers: list[Buffer]) -> None:
    seen: set[str] = set()
    for b in buffers:
        if b.name in seen:
            raise CompileError(f"buffer {b.name!r} is listed twice in the memory plan")
        seen.add(b.name)
        if b.kind not in KINDS:
            raise CompileError(f"buffer {b.name!r} has unknown kind {b.kind!r} (one of {', '.join(KINDS)})")
        if int(b.size) != b.size or b.size < 0:
            raise CompileError(f"buffer {b.name!r} has invalid size {b.size}")
        if int(b.alignment) != b.alignment or b.alignment < 1:
            raise CompileError(f"buffer {b.name!r} has invalid alignment {b.alignment}")
        if b.first_use > b.last_use:
            raise CompileError(f"buffer {b.name!r} is last used (task {b.last_use}) before its first use "
                               f"(task {b.first_use})")
        if b.size >= ADDRESS_SPACE:
            raise CompileError(f"buffer {b.name!r} of {b.size} B exceeds the 4 GiB 32-bit NPU address space")


def _pack(bufs: list[Buffer], start: int) -> tuple[list[Allocation], int]:
    out = []
    cur = start
    for b in bufs:
        cur = _align(cur, b.alignment)
        out.append(Allocation(b.name, b.kind, cur, b.size, b.alignment, b.first_use, b.last_use))
        cur += b.size
    return out, cur


def _place_activations(bufs: list[Buffer], start: int) -> tuple[list[Allocation], int]:
    """Greedy by size with an interval-overlap check (offsets relative to ``start``, which is page aligned)."""
    placed: list[Allocation] = []
    for b in sorted(bufs, key=lambda b: (-b.size, b.first_use, b.name)):
        live = sorted((a for a in placed if a.first_use <= b.last_use and b.first_use <= a.last_use and a.size),
                      key=lambda a: a.address)
        off = _align(start, b.alignment)
        for a in live:
            if off + b.size <= a.address:
                break  # fits in the gap before a
            off = max(off, _align(a.end, b.alignment))
        placed.append(Allocation(b.name, b.kind, off, b.size, b.alignment, b.first_use, b.last_use))
    end = max((a.end for a in placed), default=start)
    return placed, end


def activation_peak(buffers: list[Buffer]) -> int:
    """Max over tasks of the bytes of activation buffers live at that task."""
    acts = [b for b in buffers if b.kind == "activation"]
    events: dict[int, int] = {}
    for b in acts:
        events[b.first_use] = events.get(b.first_use, 0) + b.size
        events[b.last_use + 1] = events.get(b.last_use + 1, 0) - b.size
    peak = cur = 0
    for t in sorted(events):
        cur += events[t]
        peak = max(peak, cur)
    return peak


def plan_memory(buffers: list[Buffer], base: int = DEFAULT_BASE, reuse: bool = True) -> MemoryPlan:
    """Place every buffer; ``reuse=False`` packs activations too (for debugging and comparison).

    Raises CompileError when the plan does not fit the 4 GiB 32-bit NPU address space, naming the total.
    """
    _validate(buffers)
    if base < 0 or base % PAGE:
        raise CompileError(f"memory plan base 0x{base:x} must be a non-negative multiple of {PAGE}")
    by_kind = {k: [b for b in buffers if b.kind == k] for k in KINDS}
    allocs: list[Allocation] = []
    regions: dict[str, tuple[int, int]] = {}
    cur = base
    for kind in KINDS:
        start = _align(cur, PAGE)
        if kind == "activation" and reuse:
            got, end = _place_activations(by_kind[kind], start)
        else:
            got, end = _pack(by_kind[kind], start)
        allocs += got
        regions[kind] = (start, end - start)
        cur = end
    total = _align(cur, PAGE) - base
    if base + total > ADDRESS_SPACE:
        raise CompileError(f"memory plan needs {total} bytes ({total / 2**30:.2f} GiB) from base 0x{base:x}, more "
                           "than the 4 GiB 32-bit NPU address space")
    return MemoryPlan(
        base=base, allocations={a.name: a for a in allocs}, regions=regions,
        bytes_by_kind={k: sum(b.size for b in by_kind[k]) for k in KINDS},
        activation_footprint=regions["activation"][1], activation_peak=activation_peak(buffers),
        total_bytes=total)


def check_plan(plan: MemoryPlan) -> None:
    """Raise CompileError if two buffers that are live at the same task overlap, or an alignment is broken."""
    allocs = sorted(plan.allocations.values(), key=lambda a: a.address)
    for a in allocs:
        if a.address % a.alignment:
            raise CompileError(f"buffer {a.name!r} at 0x{a.address:x} breaks its {a.alignment}-byte alignment")
        if a.address < plan.base or a.end > plan.end or a.end > ADDRESS_SPACE:
            raise CompileError(f"buffer {a.name!r} lies outside the plan")
    for i, a in enumerate(allocs):
        for b in allocs[i + 1:]:
            if b.address >= a.end:
                break
            if not a.size or not b.size:
                continue
            both_act = a.kind == b.kind == "activation"
            if not both_act or (a.first_use <= b.last_use and b.first_use <= a.last_use):
                raise CompileError(f"buffers {a.name!r} and {b.name!r} overlap while both are live")
