"""RK3588 CBUF tiling (tiling.py) and core scheduling (schedule.py).

Oracle for tiling: the unsplit convolution (opennpu conv2d_float, and an exact int64 integer conv with an input
zero point); the tiled run must equal it. Bank/entry/field limits are checked per task.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from opennpu.errors import CompileError
from opennpu.ir.ops.conv import conv2d_float
from opennpu.targets.rk3588 import layout
from opennpu.targets.rk3588.schedule import SchedOp, build_schedule
from opennpu.targets.rk3588.tiling import (
    CbufParams,
    ConvGeometry,
    aligned_out_channels,
    pack_group_weights,
    packed_weight_bytes,
    plan_conv_tiles,
    simulate_tiled_conv,
)

CBUF_BYTES = 12 * 32768

G = ConvGeometry
CASES = {
    "weights_over_cbuf": G(256, 10, 10, 512, (3, 3), (1, 1), (1, 1, 1, 1)),
    "input_over_cbuf": G(64, 112, 112, 64, (3, 3), (1, 1), (1, 1, 1, 1)),
    "both_over_cbuf": G(192, 40, 40, 256, (3, 3), (1, 1), (1, 1, 1, 1)),
    "width_2047": G(16, 6, 2047, 16, (5, 5), (2, 2), (2, 2, 2, 2)),
    "width_4096": G(16, 5, 4096, 24, (3, 3), (1, 1), (1, 1, 1, 1)),
    "height_2500": G(8, 2500, 20, 8, (3, 3), (1, 1), (1, 1, 1, 1)),
    "stride2_k7": G(32, 200, 200, 32, (7, 7), (2, 2), (3, 3, 3, 3)),
    "k5_tiled": G(48, 150, 150, 40, (5, 5), (1, 1), (2, 2, 2, 2)),
    "stride2_odd_pads": G(24, 97, 83, 16, (3, 3), (2, 2), (0, 1, 2, 0)),
    "dilation2": G(64, 90, 90, 32, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    "depthwise_rows": G(128, 120, 120, 128, (3, 3), (1, 1), (1, 1, 1, 1), depthwise=True),
    "depthwise_2047_s2": G(96, 9, 2047, 96, (3, 3), (2, 2), (1, 1, 1, 1), depthwise=True),
    "depthwise_k5_s2": G(40, 150, 150, 40, (5, 5), (2, 2), (2, 2, 2, 2), depthwise=True),
    "fc_4096": G.fc(4096, 1000),
    "fc_4096_rows": G.fc(4096, 96, rows=8),
}


def _attrs(g: ConvGeometry) -> dict:
    return {"kernel_shape": list(g.kernel), "strides": list(g.strides), "dilations": list(g.dilation),
            "pads": list(g.pads), "group": g.in_channels if g.depthwise else 1}


def _int_conv(zp: int):
    """Exact integer conv: sum((x - zp) * w) + b in float64 (exact below 2**53), returned as int64."""
    def fn(x, w, b, attrs):
        y = conv2d_float(x.astype(np.float64) - zp, w.astype(np.float64), None, attrs)
        y = np.rint(y).astype(np.int64)
        return y if b is None else y + b.astype(np.int64).reshape(1, -1, 1, 1)
    return fn


def _check_limits(plan) -> None:
    p = plan.params
    for t in plan.tasks:
        assert t.data_banks + t.weight_banks <= 12
        assert t.cbuf_entries <= t.data_banks * p.entries_per_bank
        assert t.weight_bytes <= (t.weight_banks - p.weight_guard_banks) * p.bank_bytes
        assert max(t.n_in_rows, t.n_in_cols, t.n_out_rows, t.n_out_cols) <= 2047
        assert t.data_entries <= (1 << 14) - 1
    # WEIGHT_REUSE only continues the previous task's group.
    for a, b in itertools.pairwise(plan.tasks):
        if b.weight_reuse:
            assert a.group == b.group and a.data_banks == b.data_banks
    assert not plan.tasks[0].weight_reuse


@pytest.mark.parametrize("name", list(CASES))
def test_tiled_float_conv_equals_unsplit(name):
    g = CASES[name]
    plan = plan_conv_tiles(g)
    _check_limits(plan)
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((1, g.in_channels, g.in_h, g.in_w)).astype(np.float32)
    w = rng.standard_normal(g.weight_shape).astype(np.float32)
    b = rng.standard_normal(g.out_channels).astype(np.float32)
    ref = conv2d_float(x, w, b, _attrs(g))
    got = simulate_tiled_conv(x, w, b, plan, conv2d_float)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["weights_over_cbuf", "input_over_cbuf", "width_4096", "stride2_k7",
                                  "depthwise_2047_s2", "depthwise_k5_s2", "fc_4096", "stride2_odd_pads"])
def test_tiled_int8_conv_is_exact(name):
    g = CASES[name]
    plan = plan_conv_tiles(g)
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (1, g.in_channels, g.in_h, g.in_w), dtype=np.int8)
    w = rng.integers(-128, 128, g.weight_shape, dtype=np.int8)
    b = rng.integers(-(2**20), 2**20, g.out_channels).astype(np.int32)
    fn = _int_conv(zp=-5)
    np.testing.assert_array_equal(simulate_tiled_conv(x, w, b, plan, fn), fn(x, w, b, _attrs(g)))


def test_cases_exercise_the_splits():
    assert packed_weight_bytes(512, 256, 3, 3) > CBUF_BYTES
    wplan = plan_conv_tiles(CASES["weights_over_cbuf"])
    assert wplan.mode == "partial_weights" and len(wplan.groups) > 1
    assert all((b - a) % 32 == 0 for a, b in wplan.groups[:-1])
    assert layout.feature_bytes(64, 112, 112) > CBUF_BYTES
    iplan = plan_conv_tiles(CASES["input_over_cbuf"])
    assert iplan.mode == "weights_resident" and len(iplan.tasks) > 1 and iplan.weight_reloads == 0
    assert all(t.weight_reuse for t in iplan.tasks[1:])
    assert plan_conv_tiles(CASES["width_4096"]).column_split
    assert not plan_conv_tiles(CASES["width_2047"]).column_split
    assert len(plan_conv_tiles(CASES["height_2500"]).tasks) >= 2
    fc = plan_conv_tiles(CASES["fc_4096"])
    assert fc.mode == "partial_weights" and fc.weight_bytes == 1000 * 4096
    assert sum(b - a for a, b in fc.groups) == 1000


def test_row_slices_follow_mesa_rules():
    g = CASES["input_over_cbuf"]
    plan = plan_conv_tiles(g)
    kh, s = g.keff[0], g.strides[0]
    ts = plan.tasks
    assert ts[0].pads[0] == 1 and ts[-1].pads[2] == 1
    assert all(t.pads[0] == 0 for t in ts[1:]) and all(t.pads[2] == 0 for t in ts[:-1])
    for a, b in itertools.pairwise(ts):
        assert a.in_rows[1] - b.in_rows[0] == kh - s  # overlap of kh - stride rows
        assert b.out_rows[0] == a.out_rows[1]
    for t in ts:
        assert t.in_offset == t.in_rows[0] * g.in_w * 16  # line stride W*16 bytes
        assert t.out_offset == t.out_rows[0] * g.out_w * 16
    # One task, all banks assigned (Mesa: weights get 12 - input banks), no reuse.
    small = plan_conv_tiles(G(16, 8, 8, 16, (3, 3), (1, 1), (1, 1, 1, 1)))
    assert len(small.tasks) == 1
    t = small.tasks[0]
    assert t.data_banks + t.weight_banks == 12 and not t.weight_reuse and t.pads == (1, 1, 1, 1)


def test_group_offsets_and_packing():
    g = CASES["weights_over_cbuf"]
    plan = plan_conv_tiles(g)
    w = np.random.default_rng(0).integers(-128, 128, g.weight_shape, dtype=np.int8)
    blob = pack_group_weights(w, plan, pad_value=0)
    assert blob.size == plan.weight_bytes
    # Groups of multiples of 32 kernels: the per-group blob is the whole-tensor pack.
    np.testing.assert_array_equal(blob, layout.pack_conv_weights(w, 0))
    for t in plan.tasks:
        a, b = t.oc_range
        np.testing.assert_array_equal(blob[t.weight_offset:t.weight_offset + t.weight_bytes],
                                      layout.pack_conv_weights(w[a:b], 0))


@pytest.mark.parametrize("cout,cin,k,dw", [(c, i, k, d) for c in (1, 2, 3, 31, 33, 100) for i in (1, 3, 16, 17, 20,
                                           33, 48, 56) for k in (1, 3) for d in (False, True)])
def test_packed_weight_bytes_matches_layout(cout, cin, k, dw):
    cin = cout if dw else cin
    assert packed_weight_bytes(cout, cin, k, k, dw) == layout.weight_bytes(cout, cin, k, k, dw)


def test_output_alloc_covers_aligned_writes():
    plan = plan_conv_tiles(G(16, 8, 8, 16, (3, 3), (1, 1), (1, 1, 1, 1), depthwise=True))
    assert plan.tasks[0].out_channels_written == aligned_out_channels(16, True) == 64
    assert plan.output_alloc_bytes == 4 * 8 * 8 * 16
    assert aligned_out_channels(40, False) == 64 and aligned_out_channels(96, True) == 128


def test_parameters_are_honoured():
    g = CASES["input_over_cbuf"]
    nvdla = plan_conv_tiles(g, params=CbufParams(row_entry_rule="nvdla"))
    assert len(nvdla.tasks) < len(plan_conv_tiles(g).tasks)
    assert plan_conv_tiles(g).tasks[0].feature_grains == 50 + 1 + 1
    iav = plan_conv_tiles(g, params=CbufParams(feature_grains_rule="iav")).tasks[0]
    assert iav.feature_grains == 1 + 3  # Wout = 112 >= 28
    no_guard = plan_conv_tiles(CASES["weights_over_cbuf"], params=CbufParams(weight_guard_banks=0))
    assert len(no_guard.groups) <= len(plan_conv_tiles(CASES["weights_over_cbuf"]).groups)


def test_spatial_outer_order_is_exact():
    g = CASES["both_over_cbuf"]
    plan = plan_conv_tiles(g, params=CbufParams(order="spatial_outer"))
    assert plan.order == "spatial_outer" and not any(t.weight_reuse for t in plan.tasks)
    assert plan.weight_reloads == len(plan.tasks) - len(plan.groups) > 0
    _check_limits(plan)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, g.in_channels, g.in_h, g.in_w), dtype=np.int8)
    w = rng.integers(-128, 128, g.weight_shape, dtype=np.int8)
    fn = _int_conv(zp=11)
    np.testing.assert_array_equal(simulate_tiled_conv(x, w, None, plan, fn), fn(x, w, None, _attrs(g)))


def test_limits_rejected_with_reasons():
    with pytest.raises(CompileError, match="input width 4096 > 2047"):
        plan_conv_tiles(CASES["width_4096"], allow_split=False)
    with pytest.raises(CompileError, match="input height 2500 > 2047"):
        plan_conv_tiles(CASES["height_2500"], allow_split=False)
    with pytest.raises(CompileError, match="weights of one 32-kernel group"):
        plan_conv_tiles(G(16384, 4, 4, 64, (3, 3)))
    with pytest.raises(CompileError, match="kernel 33x33 > 31"):
        G(16, 40, 40, 16, (33, 33))
    with pytest.raises(CompileError, match="stride 8 > 7"):
        G(16, 40, 40, 16, (3, 3), (8, 8))
    with pytest.raises(CompileError, match="pad 16 > 15"):
        G(16, 40, 40, 16, (3, 3), (1, 1), (16, 0, 0, 0))
    with pytest.raises(CompileError, match="depthwise"):
        G(16, 4, 4, 32, (3, 3), depthwise=True)
    with pytest.raises(CompileError, match="dtype"):
        plan_conv_tiles(G(16, 4, 4, 16), dtype="float32")


def test_from_conv_and_fp16():
    g = ConvGeometry.from_conv((1, 32, 20, 20), (32, 1, 3, 3), {"group": 32, "pads": [1, 1, 1, 1]})
    assert g.depthwise and g.out_h == 20
    p16 = plan_conv_tiles(CASES["input_over_cbuf"], dtype="float16")
    assert len(p16.tasks) > len(plan_conv_tiles(CASES["input_over_cbuf"]).tasks)  # twice the bytes per row


# ---------------------------------------------------------------------------------------------- schedule

def _check_deps(s):
    byop = {}
    for j in s.jobs:
        byop.setdefault(j.op, []).append(j)
    for j in s.jobs:
        for d in j.deps:
            assert s.jobs[d].finish <= j.start
    return byop


def test_schedule_respects_dependencies_and_reuse():
    conv = plan_conv_tiles(CASES["input_over_cbuf"])  # weight-resident, several tasks
    wide = plan_conv_tiles(CASES["weights_over_cbuf"])  # output-channel groups
    ops = [
        SchedOp.from_tile_plan("a", conv, [100] * len(conv.tasks)),
        SchedOp.from_tile_plan("b", wide, [50] * len(wide.tasks), deps=("a",)),
        SchedOp("c", (10, 10), deps=("b",)),
    ]
    s = build_schedule(ops)
    byop = _check_deps(s)
    assert len(byop["a"]) == 1 and byop["a"][0].tasks == tuple(range(len(conv.tasks)))
    assert len(byop["b"]) == 3 and len({j.core for j in byop["b"]}) == 3  # groups spread over the cores
    assert sorted(t for j in byop["b"] for t in j.tasks) == list(range(len(wide.tasks)))
    a_end = max(j.finish for j in byop["a"])
    assert all(j.start >= a_end for j in byop["b"])
    assert all(j.start >= max(k.finish for k in byop["b"]) for j in byop["c"])
    # Split jobs write their own part BOs (separate fences); the consumer reads all parts.
    outs = [j.out_bos[0] for j in byop["b"]]
    assert len(set(outs)) == 3 and s.bo_parts["b"] == outs
    assert set(outs) <= set(byop["c"][0].in_bos)
    assert s.critical_path_cycles <= s.makespan_cycles


def test_schedule_three_branches_use_three_cores():
    ops = [SchedOp("root", (10,)),
           *[SchedOp(f"br{i}_{k}", (100, 100), deps=(f"br{i}_{k - 1}",) if k else ("root",), weights_resident=True)
             for i in range(3) for k in range(2)],
           SchedOp("join", (10,), deps=("br0_1", "br1_1", "br2_1"))]
    s = build_schedule(ops)
    byop = _check_deps(s)
    assert {byop[f"br{i}_0"][0].core for i in range(3)} == {0, 1, 2}
    assert all(len(byop[f"br{i}_{k}"]) == 1 for i in range(3) for k in range(2))
    assert s.makespan_cycles == 10 + 400 + 10 == s.critical_path_cycles
    one = build_schedule(ops, n_cores=1)
    assert one.makespan_cycles == 10 + 1200 + 10 and one.cores_used == {0}


def test_schedule_fences_shared_bo_and_aliases():
    # Two ops writing the same BO are serialised by the implicit fence (write-after-write).
    s = build_schedule([SchedOp("p", (100,), output_bo="t"), SchedOp("q", (100,), output_bo="t")])
    assert s.jobs[1].deps == (0,) and s.makespan_cycles == 200
    # Memory-plan aliasing: q's output reuses p's memory, so q waits for r (a reader of p) -- WAR.
    from opennpu.targets.rk3588.memory import Buffer, plan_memory
    mem = plan_memory([Buffer("p", 1000, first_use=0, last_use=1), Buffer("q", 1000, first_use=2, last_use=3)])
    assert mem.address("p") == mem.address("q")
    ops = [SchedOp("p", (10,)), SchedOp("r", (100,), deps=("p",)), SchedOp("q", (10,))]
    assert build_schedule(ops).jobs[2].deps == ()
    s2 = build_schedule(ops, memory=mem)
    assert 1 in s2.jobs[2].deps and s2.jobs[2].start >= s2.jobs[1].finish


def test_schedule_rejects_bad_graphs():
    with pytest.raises(CompileError, match="cycle"):
        build_schedule([SchedOp("a", (1,), deps=("b",)), SchedOp("b", (1,), deps=("a",))])
    with pytest.raises(CompileError, match="unknown op"):
        build_schedule([SchedOp("a", (1,), deps=("zz",))])
    with pytest.raises(CompileError, match="twice"):
        build_schedule([SchedOp("a", (1,)), SchedOp("a", (1,))])
    # Mesa-style one job per task: still parallel thanks to per-job part BOs.
    s = build_schedule([SchedOp("x", (5,) * 6)], split="per_chain")
    assert len(s.jobs) == 6 and s.makespan_cycles == 10 and len(s.cores_used) == 3
