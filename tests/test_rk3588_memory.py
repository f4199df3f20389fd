"""RK3588 memory plan (memory.py): lifetime reuse without live overlaps, alignment, 4 GiB refusal."""

from __future__ import annotations

import numpy as np
import pytest

from opennpu.errors import CompileError
from opennpu.targets.rk3588.memory import KINDS, Buffer, check_plan, plan_memory


def _brute_force_overlaps(plan) -> list[tuple[str, str]]:
    bad = []
    allocs = list(plan.allocations.values())
    for i, a in enumerate(allocs):
        for b in allocs[i + 1:]:
            if not a.size or not b.size:
                continue
            mem = a.address < b.end and b.address < a.end
            both_act = a.kind == b.kind == "activation"
            live = (not both_act) or (a.first_use <= b.last_use and b.first_use <= a.last_use)
            if mem and live:
                bad.append((a.name, b.name))
    return bad


@pytest.mark.parametrize("seed", range(25))
def test_random_lifetimes_never_overlap_and_stay_aligned(seed):
    rng = np.random.default_rng(seed)
    bufs = []
    for i in range(int(rng.integers(5, 60))):
        kind = KINDS[int(rng.integers(0, 4))] if i % 3 == 0 else "activation"
        first = int(rng.integers(0, 40))
        bufs.append(Buffer(f"b{i}", int(rng.integers(0, 200_000)), int(rng.choice([1, 16, 64, 128, 4096])), kind,
                           first, first + int(rng.integers(0, 10))))
    plan = plan_memory(bufs)
    assert _brute_force_overlaps(plan) == []
    check_plan(plan)
    for b in bufs:
        a = plan.allocations[b.name]
        assert a.address % b.alignment == 0 and a.size == b.size
        assert plan.base <= a.address and a.end <= plan.end
    # Peak live bytes: brute force over tasks.
    acts = [b for b in bufs if b.kind == "activation"]
    peak = max((sum(b.size for b in acts if b.first_use <= t <= b.last_use) for t in range(60)), default=0)
    assert plan.activation_peak == peak <= plan.activation_footprint
    assert plan.bytes_by_kind == {k: sum(b.size for b in bufs if b.kind == k) for k in KINDS}


def test_static_kinds_packed_contiguously():
    bufs = [Buffer("r0", 1000, 64, "regcmd"), Buffer("r1", 520, 64, "regcmd"), Buffer("w0", 4096, 64, "weights"),
            Buffer("w1", 100, 64, "weights"), Buffer("in", 3 * 224 * 224, 64, "io")]
    plan = plan_memory(bufs)
    a = plan.allocations
    assert a["r1"].address == a["r0"].address + 1024  # next 64-byte boundary
    assert a["w1"].address == a["w0"].end and a["w0"].address % 4096 == 0
    assert plan.regions["regcmd"][0] < plan.regions["weights"][0] < plan.regions["io"][0]
    # Static buffers never share memory even with disjoint "lifetimes".
    assert _brute_force_overlaps(plan) == []


def test_reuse_shrinks_a_chain():
    sizes = [802816, 401408, 401408, 200704, 200704, 100352, 100352, 50176]
    bufs = [Buffer(f"a{i}", s, 64, "activation", i, i + 1) for i, s in enumerate(sizes)]
    plan = plan_memory(bufs)
    naive = plan_memory(bufs, reuse=False)
    assert naive.activation_footprint >= sum(sizes)
    assert plan.activation_footprint < naive.activation_footprint
    assert plan.activation_footprint <= 2 * max(sizes)
    assert plan.activation_peak == max(a + b for a, b in zip(sizes, sizes[1:], strict=False))
    check_plan(plan)


def test_over_4gib_refused_with_total():
    bufs = [Buffer("w", 3 << 30, 64, "weights"), Buffer("act", 1536 << 20, 64, "activation")]
    with pytest.raises(CompileError, match=r"needs \d+ bytes \(4\.\d\d GiB\).*4 GiB"):
        plan_memory(bufs)
    with pytest.raises(CompileError, match="4 GiB"):
        plan_memory([Buffer("huge", 1 << 32, 64, "io")])
    # Activations that reuse memory fit where packing them would not.
    chain = [Buffer(f"a{i}", 1 << 30, 64, "activation", i, i + 1) for i in range(6)]
    assert plan_memory(chain).total_bytes < 4 << 30
    with pytest.raises(CompileError):
        plan_memory(chain, reuse=False)


def test_bad_buffers_rejected():
    with pytest.raises(CompileError, match="twice"):
        plan_memory([Buffer("a", 1), Buffer("a", 2)])
    with pytest.raises(CompileError, match="kind"):
        plan_memory([Buffer("a", 1, kind="scratch")])
    with pytest.raises(CompileError, match="before its first use"):
        plan_memory([Buffer("a", 1, first_use=3, last_use=1)])
    with pytest.raises(CompileError, match="alignment"):
        plan_memory([Buffer("a", 1, alignment=0)])
    with pytest.raises(CompileError, match="size"):
        plan_memory([Buffer("a", -1)])
    with pytest.raises(CompileError, match="base"):
        plan_memory([Buffer("a", 1)], base=100)
    plan = plan_memory([Buffer("a", 1)])
    with pytest.raises(CompileError, match="no buffer"):
        plan.address("b")
    assert "memory plan" in plan.summary()
