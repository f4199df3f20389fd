"""PPU pooling on the RK3588: register words, emulator, integer reference, lowering, end to end.

Oracles: the target's integer reference ``arith.pool_reference`` (NCHW, sliding windows over the IR-level tensor)
against the emulator executing the PPU register words over NC1HWC2 bytes in emulated DRAM (per-tap strided
reduction, geometry decoded from the registers only); max pooling additionally against TFLite's MAX_POOL_2D
(opennpu.quant.kernels.pool) and the integer executor; golden register words derived by hand from the documented
fields (registers.xml layout, NVDLA PDP "minus one" sizes).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

import opennpu
from opennpu.errors import CompileError, DeviceError
from opennpu.ir.graph import Graph, Tensor
from opennpu.quant.executor import run_quantized
from opennpu.quant.kernels.pool import max_pool2d
from opennpu.runtime.devices import open_device
from opennpu.runtime.emulator.program_runner import pack_nc1hwc2, unpack_nc1hwc2
from opennpu.targets.rk3588 import pool as P
from opennpu.targets.rk3588 import regcmd
from opennpu.targets.rk3588.arith import PoolGeometry, pool_reference, ppu_recip, tflite_average_pool
from opennpu.targets.rk3588.codegen import make_emulator
from opennpu.targets.rk3588.compiler import compile_lowered
from opennpu.targets.rk3588.reference import run_reference

MEM = 1 << 22
CMD, IN, OUT = 0x1000, 0x20000, 0x200000


def _low(in_surf: int, out_surf: int) -> SimpleNamespace:
    """The part of a Lowering the pool task builder reads: buffers, views and addresses (no concat offsets)."""
    bufs = {"x": SimpleNamespace(name="x", surf_stride=in_surf), "y": SimpleNamespace(name="y", surf_stride=out_surf)}
    views = {"x": "x", "y": "y"}
    return SimpleNamespace(buffers=bufs, views=views, address=lambda t, addr: addr[views[t]])


def _tasks(g: PoolGeometry, band_pixels: int = P.MAX_BAND_PIXELS, in_extra: int = 0, out_extra: int = 0):
    op = P.PoolOp("p", [0], "x", "y", g, P.plan_pool_tiles(g, band_pixels))
    in_surf, out_surf = g.in_h * g.in_w * 16 + in_extra, g.out_h * g.out_w * 16 + out_extra
    return op, P.build_pool_tasks(op, _low(in_surf, out_surf), {"x": IN, "y": OUT}), in_surf, out_surf


def _emulate(g: PoolGeometry, x: np.ndarray, **kw) -> tuple[np.ndarray, int]:
    """Run the PPU tasks of ``g`` over ``x`` (1, C, H, W) int8 on the emulator; (output, tasks run)."""
    op, tasks, in_surf, out_surf = _tasks(g, **kw)
    buf, places = P.link_pool_tasks(tasks, CMD)
    emu = make_emulator(MEM)
    emu.write(CMD, buf)
    emu.memory.write_surfaces(IN, pack_nc1hwc2(x[0], g.c, g.in_h, g.in_w, -77), g.in_w * 16, in_surf, "input")
    recs = emu.run(places[0].addr, places[0].count)
    assert all(r.kind == "pool" for r in recs)
    raw = emu.memory.read_surfaces(OUT, -(-g.c // 16), g.out_h, g.out_w * 16, g.out_w * 16, out_surf, "output")
    return unpack_nc1hwc2(raw, g.c, g.out_h, g.out_w)[None], len(recs)


def _x(g: PoolGeometry, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (1, g.c, g.in_h, g.in_w)).astype(np.int8)


# method, channels, H, W, kernel, stride, pads (t, l, b, r)
CASES = {
    "mnist max 2x2/2": ("max", 8, 28, 28, (2, 2), (2, 2), (0, 0, 0, 0)),
    "max 3x3/2 pad 1, 35 ch, odd map": ("max", 35, 17, 13, (3, 3), (2, 2), (1, 1, 1, 1)),
    "SPPF max 5x5/1 pad 2, 48 ch": ("max", 48, 20, 20, (5, 5), (1, 1), (2, 2, 2, 2)),
    "max 3x2 strides 1x2 asymmetric pads": ("max", 17, 9, 10, (3, 2), (1, 2), (0, 1, 2, 0)),
    "min 3x3/1 pad 1": ("min", 24, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1)),
    "avg 2x2/2 odd map, 20 ch": ("avg", 20, 9, 11, (2, 2), (2, 2), (0, 0, 0, 0)),
    "avg 3x3/1": ("avg", 16, 7, 7, (3, 3), (1, 1), (0, 0, 0, 0)),
    "GAP 7x7, 100 ch": ("avg", 100, 7, 7, (7, 7), (7, 7), (0, 0, 0, 0)),
    "global avg 6x5": ("avg", 33, 6, 5, (6, 5), (6, 5), (0, 0, 0, 0)),
    "global max 5x6": ("max", 17, 5, 6, (5, 6), (5, 6), (0, 0, 0, 0)),
    "avg 8x8/8 floor": ("avg", 40, 15, 15, (8, 8), (8, 8), (0, 0, 0, 0)),
}


def _geo(case) -> PoolGeometry:
    method, c, h, w, k, s, p = case
    return PoolGeometry(method, c, h, w, k[0], k[1], s, p)


@pytest.mark.parametrize("name", list(CASES))
def test_emulator_equals_reference(name):
    g = _geo(CASES[name])
    x = _x(g, hash(name) % 1000)
    ref = pool_reference(x, g)
    assert ref.shape == (1, g.c, g.out_h, g.out_w)
    out, n = _emulate(g, x, in_extra=48, out_extra=32)  # padded surfaces: strides come from the registers
    np.testing.assert_array_equal(out, ref)
    assert n == 1
    if g.method == "max":  # exact: equals TFLite's MAX_POOL_2D (padding takes no part)
        pt, pl, pb, pr = g.pads
        tfl = max_pool2d(x[0].transpose(1, 2, 0)[None], pool=(g.kh, g.kw), stride=g.stride, padding=(pt, pb, pl, pr))
        np.testing.assert_array_equal(ref, tfl[0].transpose(2, 0, 1)[None])


@pytest.mark.parametrize("name", ["max 3x3/2 pad 1, 35 ch, odd map", "SPPF max 5x5/1 pad 2, 48 ch", "avg 3x3/1"])
def test_row_band_tiling(name):
    g = _geo(CASES[name])
    x = _x(g, 7)
    out, n = _emulate(g, x, band_pixels=2 * g.out_w + 1)  # 2 output rows per task
    assert n == -(-g.out_h // 2) > 1
    np.testing.assert_array_equal(out, pool_reference(x, g))
    tiles = P.plan_pool_tiles(g, 2 * g.out_w)
    assert tiles[0].pad_top == g.pads[0] and tiles[-1].pad_bottom == g.pads[2]
    assert all(t.pad_top == 0 for t in tiles[1:]) and all(t.pad_bottom == 0 for t in tiles[:-1])


def test_average_saturation_and_extremes():
    for v in (127, -128):
        for k in (2, 3, 6, 7):
            g = PoolGeometry("avg", 16, k, k, k, k, (k, k))
            x = np.full((1, 16, k, k), v, np.int8)
            np.testing.assert_array_equal(_emulate(g, x)[0], np.full((1, 16, 1, 1), v, np.int8))
            np.testing.assert_array_equal(pool_reference(x, g), np.full((1, 16, 1, 1), v, np.int8))


def test_ppu_average_vs_tflite_measured():
    """The PPU's average (sum * recip_w, round; * recip_h, round; NVDLA cmod) vs TFLite's (sum / n, round once):
    hand example, then the measured distribution per kernel (docs/rk3588-arithmetic.md)."""
    g = PoolGeometry("avg", 1, 2, 2, 2, 2, (2, 2))
    x = np.array([1, 0, 0, 0], np.int8).reshape(1, 1, 2, 2)  # sum 1: PPU 1*0.5 -> 1 (half away), 1*0.5 -> 1
    assert pool_reference(x, g).item() == 1 and tflite_average_pool(x, g).item() == 0  # TFLite: 0.25 -> 0
    x = np.array([-1, -1, -1, 0], np.int8).reshape(1, 1, 2, 2)  # sum -3: -1.5 -> -2, -1 ; TFLite -0.75 -> -1
    assert pool_reference(x, g).item() == -1 == tflite_average_pool(x, g).item()
    rng = np.random.default_rng(0)
    stats = {}
    for k in range(1, 9):
        g = PoolGeometry("avg", 64, 8 * k, 8 * k, k, k, (k, k))
        x = rng.integers(-128, 128, (1, 64, 8 * k, 8 * k)).astype(np.int8)
        d = (pool_reference(x, g).astype(np.int64) - tflite_average_pool(x, g).astype(np.int64)).reshape(-1)
        stats[k] = (ppu_recip(k), dict(sorted(Counter(d.tolist()).items())))
        assert np.abs(d).max() <= 1
        if k in (1, 3, 5, 7):  # odd kernels: no sample differs (round(2^16/k) keeps sum*recip within the half)
            assert not d.any()
        else:  # even kernels: the first rounding (of sum/kw) moves a half-way value: double rounding
            assert 0.03 < np.mean(d != 0) < 0.3
    print("\nPPU avg - TFLite avg (LSB) per kernel k x k: " + "; ".join(f"{k}: recip {r} {h}" for k, (r, h) in
                                                                     stats.items()))


# ---- register words ----------------------------------------------------------------------------------------------

def test_golden_register_words():
    """One max 3x3 stride-2 pad-1 task over a 35 x 9 x 11 map, derived by hand from the field layout."""
    g = PoolGeometry("max", 35, 9, 11, 3, 3, (2, 2), (1, 1, 1, 1))  # out 5 x 6
    in_line, in_surf, out_surf = 11 * 16, 9 * 11 * 16 + 64, 5 * 6 * 16
    t = P.PoolTask(g, 0x12340, 0x56780, in_line, in_surf, out_surf, "golden")
    expected = [
        ("PPU_S_POINTER", 0x6004, 0b1110),  # POINTER_PP_MODE[3] EXECUTER_PP_EN[2] POINTER_PP_EN[1]
        ("PPU_RDMA_RDMA_S_POINTER", 0x7004, 0b1110),
        ("PPU_DATA_CUBE_IN_WIDTH", 0x600C, 10), ("PPU_DATA_CUBE_IN_HEIGHT", 0x6010, 8),
        ("PPU_DATA_CUBE_IN_CHANNEL", 0x6014, 34),
        ("PPU_DATA_CUBE_OUT_WIDTH", 0x6018, 5), ("PPU_DATA_CUBE_OUT_HEIGHT", 0x601C, 4),
        ("PPU_DATA_CUBE_OUT_CHANNEL", 0x6020, 34),
        ("PPU_OPERATION_MODE_CFG", 0x6024, 1 << 4 | 1),  # FLYING_MODE[4]=1 (off-flying), POOLING_METHOD=1 (max)
        ("PPU_POOLING_KERNEL_CFG", 0x6034, 1 << 20 | 1 << 16 | 2 << 8 | 2),  # stride-1 [23:20][19:16], k-1 [11:8][3:0]
        ("PPU_RECIP_KERNEL_WIDTH", 0x6038, 0), ("PPU_RECIP_KERNEL_HEIGHT", 0x603C, 0),
        ("PPU_POOLING_PADDING_CFG", 0x6040, 1 << 12 | 1 << 8 | 1 << 4 | 1),  # bottom, right, top, left
        ("PPU_PADDING_VALUE_1_CFG", 0x6044, 0), ("PPU_PADDING_VALUE_2_CFG", 0x6048, 0),
        ("PPU_DST_BASE_ADDR", 0x6070, 0x56780),  # DST_BASE_ADDR[31:4] = addr >> 4
        ("PPU_DST_SURF_STRIDE", 0x607C, 480),  # [31:4] = 480 / 16
        ("PPU_DATA_FORMAT", 0x6084, 0),  # int8
        ("PPU_MISC_CTRL", 0x60DC, 3),  # BURST_LEN
        ("PPU_RDMA_RDMA_CUBE_IN_WIDTH", 0x700C, 10), ("PPU_RDMA_RDMA_CUBE_IN_HEIGHT", 0x7010, 8),
        ("PPU_RDMA_RDMA_CUBE_IN_CHANNEL", 0x7014, 34),
        ("PPU_RDMA_RDMA_SRC_BASE_ADDR", 0x701C, 0x12340),
        ("PPU_RDMA_RDMA_SRC_LINE_STRIDE", 0x7024, 176), ("PPU_RDMA_RDMA_SRC_SURF_STRIDE", 0x7028, 1648),
        ("PPU_RDMA_RDMA_DATA_FORMAT", 0x7030, 0),
    ]
    assert P.emit_pool(t) == [(n, v) for n, _, v in expected]
    buf, places = P.link_pool_tasks([t], 0x40)
    words = regcmd.bytes_to_words(buf)[:places[0].count]
    target = {0x6: 0x4001, 0x7: 0x8001}
    assert words[:len(expected)] == [target[o >> 12] << 48 | v << 16 | o for _, o, v in expected]
    assert words[-1] == 0x0081_0000_0060_0008  # op-enable PPU (bit 5) | PPU_RDMA (bit 6)
    assert words[-2] == 0x0041_0000_0000_0000
    assert len(words) % 4 == 2
    avg = P.emit_pool(P.PoolTask(PoolGeometry("avg", 16, 7, 7, 7, 7, (7, 7)), 0, 0x100, 112, 784, 16))
    d = dict(avg)
    assert d["PPU_OPERATION_MODE_CFG"] == 0x10 and d["PPU_POOLING_KERNEL_CFG"] == 0x660606
    assert d["PPU_RECIP_KERNEL_WIDTH"] == d["PPU_RECIP_KERNEL_HEIGHT"] == 9362  # round(65536 / 7)
    assert ppu_recip(1) == 65536 and ppu_recip(2) == 32768 and ppu_recip(3) == 21845 and ppu_recip(6) == 10923


def test_pool_task_rejects_unencodable():
    g = PoolGeometry("max", 16, 4, 4, 2, 2, (2, 2))
    with pytest.raises(CompileError, match="16-byte aligned"):
        P.PoolTask(g, 0x12348, 0x100, 64, 256, 64)
    with pytest.raises(CompileError, match="surface stride"):
        P.PoolTask(g, 0x100, 0x100, 64, 128, 64)


# ---- malformed register streams ----------------------------------------------------------------------------------

def _good_words() -> tuple[list[int], PoolGeometry]:
    g = PoolGeometry("max", 20, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1))
    _, tasks, _, _ = _tasks(g)
    return P.pool_regcmd_task(tasks[0]).words(op_enable=P.PPU_OP_ENABLE), g


def _set(words: list[int], name: str, value: int) -> None:
    from opennpu.targets.rk3588.registers import register

    off = register(name).offset
    i = next(k for k, w in enumerate(words) if w & 0xFFFF == off and w >> 48 not in (0, 0x41, 0x81, 0x101))
    words[i] = (words[i] & ~(0xFFFFFFFF << 16)) | value << 16


def _mut(name: str, value: int):
    return lambda w: _set(w, name, value)


def _op_enable(value: int):
    return lambda w: w.__setitem__(len(w) - 1, 0x0081 << 48 | value << 16 | 8)


MALFORMED = {
    "PPU without PPU_RDMA": (_op_enable(0x20), "exactly PPU and PPU_RDMA"),
    "conv and PPU in one task": (_op_enable(0x7D), "flying mode"),
    "on-flying mode": (_mut("PPU_OPERATION_MODE_CFG", 1), "FLYING_MODE"),
    "pooling method 3": (_mut("PPU_OPERATION_MODE_CFG", 0x13), "POOLING_METHOD=3"),
    "index output": (_mut("PPU_OPERATION_MODE_CFG", 1 << 30 | 0x11), "INDEX_EN"),
    "fp16 precision": (_mut("PPU_DATA_FORMAT", 2), "PROC_PRECISION"),
    "RDMA cube differs": (_mut("PPU_RDMA_RDMA_CUBE_IN_WIDTH", 4), "differs from PPU_RDMA"),
    "channels change": (_mut("PPU_DATA_CUBE_OUT_CHANNEL", 3), "output channels"),
    "window past input + pad (hang)": (_mut("PPU_DATA_CUBE_OUT_WIDTH", 6), "waits forever"),
    "partial output cube": (_mut("PPU_DATA_CUBE_OUT_HEIGHT", 2), "partial output cube"),
    "padding reaches a whole window": (_mut("PPU_POOLING_PADDING_CFG", 3 << 12 | 1 << 8 | 1 << 4 | 1), "padding"),
    "avg with padding": (_mut("PPU_OPERATION_MODE_CFG", 0x10), "average pooling with padding"),
    "line stride below a line": (_mut("PPU_RDMA_RDMA_SRC_LINE_STRIDE", 32), "SRC_LINE_STRIDE"),
    "surfaces overlap": (_mut("PPU_RDMA_RDMA_SRC_SURF_STRIDE", 16), "SRC_SURF_STRIDE"),
    "input DMA out of range": (_mut("PPU_RDMA_RDMA_SRC_BASE_ADDR", MEM - 256), "PPU_RDMA read"),
    "output DMA out of range": (_mut("PPU_DST_BASE_ADDR", MEM - 64), "PPU write"),
    "PPU register offset in the PPU_RDMA block": (lambda w: w.__setitem__(2, 0x8001 << 48 | 5 << 16 | 0x600C),
                                                  "not a PPU_RDMA register"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_ppu_streams_raise_device_error(name):
    mutate, msg = MALFORMED[name]
    words, g = _good_words()
    emu = make_emulator(MEM)
    emu.write(IN, np.zeros(2 * g.in_h * g.in_w * 16, np.uint8))
    mutate(words)
    emu.write(CMD, regcmd.words_to_bytes(words))
    with pytest.raises(DeviceError, match=msg):
        emu.run(CMD, len(words))


def test_good_stream_runs():  # the unmutated stream of the malformed cases is valid
    words, g = _good_words()
    emu = make_emulator(MEM)
    emu.write(CMD, regcmd.words_to_bytes(words))
    assert [r.kind for r in emu.run(CMD, len(words))] == ["pool"]


# ---- compile-time limits -----------------------------------------------------------------------------------------

def test_geometry_rejects_windows_that_would_hang():
    with pytest.raises(CompileError, match="wait forever"):
        PoolGeometry("max", 16, 4, 4, 6, 6, (1, 1), (1, 1, 0, 0))
    with pytest.raises(CompileError, match="no input element"):
        PoolGeometry("max", 16, 4, 4, 2, 2, (1, 1), (2, 0, 0, 0))


def _pool_graph(op: str, shape, attrs: dict) -> Graph:
    """x -> 1x1 Conv (so the NPU island has MACs) -> pool -> y."""
    g = Graph("pool")
    g.tensors["x"] = Tensor("x", tuple(shape), "float32")
    g.inputs = ["x"]
    c = shape[1]
    w = np.random.default_rng(3).standard_normal((c, c, 1, 1)).astype(np.float32) / np.sqrt(c)
    g.add_node("Conv", ["x", g.add_const("w", w), g.add_const("b", np.zeros(c, np.float32))], ["h"],
               {"kernel_shape": [1, 1]}, name="conv")
    g.add_node(op, ["h"], ["y"], attrs, name="pool")
    g.outputs = ["y"]
    from opennpu.ir.passes import canonicalize

    return canonicalize(g)


def _quantized(g: Graph, seed: int = 0, n: int = 3) -> Graph:
    rng = np.random.default_rng(seed)
    shape = g.tensor(g.inputs[0]).shape
    cal = [{g.inputs[0]: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]
    return opennpu.quantize(g, cal, weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12, progress=False)


@pytest.mark.parametrize("op,shape,attrs,match", [
    ("GlobalAveragePool", (1, 16, 37, 37), {}, "window 37x37 exceeds the PPU"),
    ("MaxPool", (1, 16, 9, 9), {"kernel_shape": [9, 9]}, "kernel 9x9 > 8"),
    ("AveragePool", (1, 16, 24, 24), {"kernel_shape": [12, 12], "strides": [2, 2]},
     "not implemented yet (planned: depthwise conv with 1/(kh*kw) weights)"),
    ("AveragePool", (1, 16, 12, 12), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, "count_include_pad=0"),
])
def test_unsupported_pools_go_to_the_cpu_with_a_reason(op, shape, attrs, match):
    c = compile_lowered(_quantized(_pool_graph(op, shape, attrs)))
    d = next(d for d in c.lowering.decisions if d.op_type == op)
    assert d.device == "cpu" and match in d.reason, d.reason


@pytest.mark.parametrize("op,shape,attrs", [
    ("MaxPool", (1, 24, 13, 11), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 40, 10, 10), {"kernel_shape": [5, 5], "strides": [1, 1], "pads": [2, 2, 2, 2]}),
    ("AveragePool", (1, 17, 12, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("GlobalAveragePool", (1, 33, 7, 7), {}),
    ("ReduceMean", (1, 18, 5, 5), {"axes": [2, 3], "keepdims": 1}),
])
def test_compiled_pool_program(op, shape, attrs, monkeypatch):
    """Conv -> pool compiled to a program (the pool tiled into bands of 2 * W output pixels): emulator == integer
    reference; the max pools also equal TFLite's MAX_POOL_2D applied to the conv output."""
    monkeypatch.setattr(P, "MAX_BAND_PIXELS", 2 * shape[3])
    q = _quantized(_pool_graph(op, shape, attrs))
    c = compile_lowered(q)
    d = next(d for d in c.lowering.decisions if d.op_type == op)
    assert d.device == "npu" and d.lowering.startswith("PPU"), d.reason
    pop = c.lowering.ops[d.op]
    pg = pop.geometry
    assert isinstance(pop, P.PoolOp) and len(pop.tiles) == -(-pg.out_h // (2 * shape[3] // pg.out_w))
    assert len(pop.tiles) > 1 or pg.out_h == 1
    kinds = Counter((t["op"], t["kind"]) for t in c.program.manifest.tasks)
    assert kinds[(pop.name, "pool")] == len(pop.tiles) and kinds[("conv", "conv")] >= 1
    dev = open_device(c.program, "emulator")
    rng = np.random.default_rng(5)
    for _ in range(2):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        out = dev.run(feeds)[q.outputs[0]]
        env = run_reference(c.lowering, feeds, keep=True)
        np.testing.assert_array_equal(out, env[q.outputs[0]])
        if op == "MaxPool":
            g = pop.geometry
            pt, pl, pb, pr = g.pads
            tfl = max_pool2d(env[pop.input][0].transpose(1, 2, 0)[None], pool=(g.kh, g.kw), stride=g.stride,
                             padding=(pt, pb, pl, pr))
            np.testing.assert_array_equal(env[pop.output], tfl[0].transpose(2, 0, 1)[None])


@pytest.mark.parametrize("op,shape,attrs,chain", [
    ("GlobalAveragePool", (1, 20, 40, 40), {}, "8x8 then 5x5"),
    ("AveragePool", (1, 24, 16, 16), {"kernel_shape": [16, 16], "strides": [16, 16]}, "8x8 then 2x2"),
    ("ReduceMean", (1, 9, 12, 18), {"axes": [2, 3], "keepdims": 1}, "6x6 then 2x3"),
])
def test_multi_stage_global_average(op, shape, attrs, chain):
    """A global average beyond one PPU window: PPU stages of non-overlapping windows through a scratch buffer, all
    in one job in stage order; emulator == reference (which rounds after each stage, as the hardware does); the
    distance to a one-step mean (TFLite MEAN semantics on the same input) is at most 1 LSB."""
    q = _quantized(_pool_graph(op, shape, attrs))
    c = compile_lowered(q)
    d = next(d for d in c.lowering.decisions if d.op_type == op)
    assert d.device == "npu" and d.unit == "PPU" and f"stages of non-overlapping windows {chain}" in d.lowering
    pop = c.lowering.ops[d.op]
    assert len(pop.stages) == 2 and [t.stage for t in pop.tiles] == [0, 1]
    assert pop.stage_buffer(0) in c.lowering.buffers and f"act/{pop.stage_buffer(0)}" in c.memory.allocations
    jobs = [j for j in c.program.manifest.jobs if j["op"] == pop.name]
    assert len(jobs) == 1 and len(jobs[0]["tasks"]) == 2
    sj = [j for sch in c.schedules.values() for j in sch.jobs if j.op == pop.name]
    scratch = f"act/{pop.stage_buffer(0)}"
    assert sj[0].out_bos == (f"act/{c.lowering.views[pop.output]}", scratch)  # fenced like an output
    a = c.memory.allocations
    for other in (pop.input, pop.output):  # live at the same step: never aliased with the scratch map
        b = a[f"act/{c.lowering.views[other]}"]
        assert a[scratch].end <= b.address or b.end <= a[scratch].address
    dev = open_device(c.program, "emulator")
    rng = np.random.default_rng(11)
    diffs = []
    for _ in range(3):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        env = run_reference(c.lowering, feeds, keep=True)
        out = dev.run(feeds)[q.outputs[0]]
        np.testing.assert_array_equal(out, env[q.outputs[0]])
        x = env[pop.input].astype(np.int64)
        n = x.shape[2] * x.shape[3]
        s = x.sum(axis=(2, 3), keepdims=True)
        one_step = np.sign(s) * ((np.abs(s) + n // 2) // n)  # round half away, once
        diffs.append((env[pop.output].astype(np.int64) - one_step).reshape(-1))
    d = np.concatenate(diffs)
    print(f"\n{op} {shape}: stages - one-step mean (LSB): {dict(sorted(Counter(d.tolist()).items()))}")
    assert np.abs(d).max() <= 1


def test_pool_ops_are_costed():
    from opennpu.targets.rk3588.cost import estimate

    c = compile_lowered(_quantized(_pool_graph("MaxPool", (1, 32, 16, 16), {"kernel_shape": [2, 2],
                                                                             "strides": [2, 2]})))
    est = estimate(c)
    o = next(o for o in est.ops if o.op_type == "MaxPool")
    assert o.placement == "npu" and o.latency_us > 0 and o.tasks == 1
    assert o.bytes_moved == 32 * 16 * 16 + 32 * 8 * 8


# ---- real models ---------------------------------------------------------------------------------------------------

def _fast_quantize(g, cal):
    return opennpu.quantize(g, cal, weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12, progress=False)


def test_mnist_cnn_pools_on_the_npu_emulator_equals_reference():
    from opennpu.data import mnist5k
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    g = opennpu.load_model("mnist-cnn")
    x = preprocess_mnist(mnist5k()[0][:40])
    q = _fast_quantize(g, [{g.inputs[0]: x[i:i + 1]} for i in range(16)])
    c = compile_lowered(q)
    pools = [d for d in c.lowering.decisions if d.op_type == "MaxPool"]
    assert len(pools) == 2 and all(d.device == "npu" and d.unit == "PPU" for d in pools)
    assert c.npu_mac_fraction == 1.0
    dev = open_device(c.program, "emulator")
    k = g.outputs[0]
    scale = float(q.tensor(q.producers()[k].inputs[0]).quant.scale[0])
    for i in range(20, 30):
        feeds = {g.inputs[0]: x[i:i + 1]}
        out = dev.run(feeds)[k]
        np.testing.assert_array_equal(out, run_reference(c.lowering, feeds)[k])
        assert np.abs(np.round((out - run_quantized(q, feeds)[k]) / scale)).max() <= 3  # TFLite int8, in LSB
    assert dev.runner.tasks_run == 10 * c.n_tasks


def test_mobilenetv2_gap_on_the_npu_emulator_equals_reference():
    from opennpu.data.augment import imagenet_calibration_set, imagenet_eval_set

    g = opennpu.load_model("mobilenetv2")
    c = compile_lowered(_fast_quantize(g, [{g.inputs[0]: x} for x in imagenet_calibration_set(2)]))
    gap = [d for d in c.lowering.decisions if d.op_type == "GlobalAveragePool"]
    assert len(gap) == 1 and gap[0].device == "npu" and "PPU avg pool 7x7" in gap[0].lowering
    assert all(d.device == "npu" for d in c.lowering.decisions if d.op_type not in ("QuantizeLinear",
                                                                                     "DequantizeLinear"))
    dev = open_device(c.program, "emulator")
    k = g.outputs[0]
    for x in imagenet_eval_set(1):
        feeds = {g.inputs[0]: x}
        np.testing.assert_array_equal(dev.run(feeds)[k], run_reference(c.lowering, feeds)[k])


@pytest.mark.parametrize("model,op,n,lowering", [
    ("blazeface", "MaxPool", 3, "PPU max pool 2x2 stride 2x2"),
    ("selfie-segmentation", "AveragePool", 10, "PPU global avg pool"),
    pytest.param("yolov8n", "MaxPool", 3, "PPU max pool 5x5 stride 1x1 pads [2, 2, 2, 2]", marks=pytest.mark.slow),
])
def test_real_model_pools_on_the_ppu(model, op, n, lowering):
    """The other zoo users of pooling: every pool on the PPU (SPPF 5x5 with padding; selfie-segmentation's global
    averages 16x16..128x128 as PPU stages), emulator == integer reference on one random input."""
    g = opennpu.load_model(model)
    shape = g.tensor(g.inputs[0]).shape
    rng = np.random.default_rng(0)
    c = compile_lowered(_fast_quantize(g, [{g.inputs[0]: rng.uniform(-1, 1, shape).astype(np.float32)}
                                           for _ in range(2)]))
    pools = [d for d in c.lowering.decisions if d.op_type == op]
    assert len(pools) == n and all(d.device == "npu" and d.lowering.startswith(lowering) for d in pools), \
        [(d.device, d.reason, d.lowering) for d in pools]
    feeds = {g.inputs[0]: rng.uniform(-1, 1, shape).astype(np.float32)}
    out, ref = open_device(c.program, "emulator").run(feeds), run_reference(c.lowering, feeds)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
