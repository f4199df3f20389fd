"""RK3588 DPU LUT activations and standalone element-wise Add / Mul (targets/rk3588/lut.py).

Oracles: the emulator (regcmd words and memory only, LUT RAM filled by LUT_ACCESS_DATA writes) must equal the
target's integer reference (targets/rk3588/reference.py -> arith.conv_reference) byte for byte; the distance of
the NPU arithmetic to TFLite's int8 semantics (the integer executor, opennpu.quant.executor.run_quantized) is
measured per op, each op fed the executor's own inputs, and bounded: a LUT on a carrier is exactly TFLite's table,
a LUT fused after a conv differs only where the conv's own requantization lands on a neighbouring code.
"""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import pytest

import opennpu
from opennpu.errors import DeviceError
from opennpu.ir.graph import Graph, Tensor
from opennpu.ir.passes import canonicalize
from opennpu.quant.executor import run_quantized
from opennpu.runtime.devices import run_program
from opennpu.runtime.emulator import npu_math as nm
from opennpu.runtime.program import load_program, program_to_bytes
from opennpu.targets.rk3588 import arith as A
from opennpu.targets.rk3588 import codegen as C
from opennpu.targets.rk3588 import lut as LT
from opennpu.targets.rk3588 import regcmd
from opennpu.targets.rk3588 import task as T
from opennpu.targets.rk3588.compiler import compile_lowered
from opennpu.targets.rk3588.reference import run_reference
from opennpu.targets.rk3588.registers import register, twos

SHAPE = (1, 8, 12, 10)


# ---------------------------------------------------------------------------------------------- graphs
def _graph(case: str) -> tuple[Graph, list[str]]:
    """A small float graph for one case, and the node names that must run on the NPU."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    g = Graph(case)
    g.add_tensor(Tensor("x", SHAPE, "float32"))
    g.inputs = ["x"]

    def conv(x, y, cout, cin, k=1, scale=1.0):
        w = (scale * rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        g.add_node("Conv", [x, g.add_const(y + ".w", w), g.add_const(y + ".b", (0.1 * rng.standard_normal(cout))
                                                                       .astype(np.float32))], [y],
                   {"kernel_shape": [k, k], "strides": [1, 1], "pads": [k // 2] * 4, "dilations": [1, 1],
                    "group": 1}, name=y)
        return y

    acts = {"silu": "Silu", "sigmoid": "Sigmoid", "hardswish": "HardSwish", "tanh": "Tanh",
            "hardsigmoid": "HardSigmoid"}
    if case in acts:
        a = conv("x", "conv", 24, 8, 3, scale=2.0)
        g.add_node(acts[case], [a], ["y"], name="act")
        g.outputs = ["y"]
        return canonicalize(g), ["conv", "act"]
    if case == "silu_clip":  # a fused clip on the activation (IR attribute "clip") folds into the table
        a = conv("x", "conv", 24, 8, 3, scale=2.0)
        g.add_node("Silu", [a], ["y"], {"clip": (-0.1, 0.8)}, name="act")
        g.outputs = ["y"]
        return canonicalize(g), ["conv", "act"]
    e, f = conv("x", "e", 16, 8, 3), conv("x", "f", 16, 8, 3, scale=4.0)  # different output scales
    if case in ("add", "mul"):  # e and f are graph outputs too: the op cannot fuse into their convs
        g.add_node(case.capitalize(), [e, f], ["y"], name="op")
        g.outputs = ["y", e, f]
        return canonicalize(g), ["op"]
    if case == "mul_const":
        k = rng.uniform(0.2, 3.0, (1, 16, 1, 1)).astype(np.float32)
        g.add_node("Mul", [e, g.add_const("k", k)], ["y"], name="op")
    elif case == "mul_channel":  # squeeze-and-excitation: a map scaled by a (1, C, 1, 1) map computed from it
        g.add_node("GlobalAveragePool", [e], ["gap"], name="gap")
        g.add_node("Sigmoid", [conv("gap", "se", 16, 16)], ["vec"], name="gate")
        g.add_node("Mul", [e, "vec"], ["y"], name="op")
    elif case == "add_const":
        g.add_node("Add", [g.add_const("k", np.float32(0.75)), e], ["y"], name="op")
    elif case == "lut_carrier":  # the producer's EW stage is busy (an add of two maps): the LUT gets a carrier
        g.add_node("Add", [e, f], ["ea"], name="op")
        g.add_node("Sigmoid", ["ea"], ["y"], name="act")
        g.outputs = ["y", e, f]
        return canonicalize(g), ["op", "act"]
    elif case == "add_const_lut":  # a constant Add carrier leaves its EW stage free: the LUT fuses into it
        g.add_node("Add", [e, g.add_const("k", np.float32(-0.5))], ["ea"], name="op")
        g.add_node("HardSwish", ["ea"], ["y"], name="act")
        g.outputs = ["y"]
        return canonicalize(g), ["op", "act"]
    g.outputs = ["y"]
    return canonicalize(g), ["op"]


CASES = ["silu", "sigmoid", "hardswish", "tanh", "hardsigmoid", "silu_clip", "add", "mul", "mul_const", "mul_channel",
         "add_const", "lut_carrier", "add_const_lut"]
LOWERING = {"silu": "DPU LUT (LO table) after 'conv'", "add": "EW add on an identity 1x1 depthwise conv carrier",
            "mul": "EW MUL on an identity", "mul_const": "BS per-channel MUL on an identity",
            "mul_channel": "EW MUL by a per-channel operand on an identity",
            "add_const": "BS bias add on an identity", "lut_carrier": "DPU LUT (LO table) on an identity",
            "add_const_lut": "DPU LUT (LO table) after 'op'"}


def _per_op_distance(c, feeds) -> dict[str, Counter]:
    """NPU arithmetic - TFLite int8 per lowered op, each op fed the executor's own inputs."""
    env = run_quantized(c.qgraph, feeds, keep=True)
    out = {}
    for op in c.lowering.conv_ops():
        g = op.geometry
        x = env[op.input].reshape(1, g.in_c, g.in_h, g.in_w)
        hw = (1, 1) if op.ew_input and op.requant.ew.per_channel else (g.out_h, g.out_w)
        ew = env[op.ew_input].reshape(1, g.out_c, *hw) if op.ew_input else None
        y = A.conv_reference(x, op.weights, op.bias, op.requant, g, ew).astype(np.int64).reshape(-1)
        out[op.name] = Counter((y - env[op.output].astype(np.int64).reshape(-1)).tolist())
    return out


def _max_step(table: np.ndarray) -> int:
    return int(np.abs(np.diff(np.asarray(table, np.int64))).max())


@pytest.mark.parametrize("case", CASES)
def test_emulator_equals_reference(case, capsys):
    g, names = _graph(case)
    rng = np.random.default_rng(7)
    cal = [{"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)} for _ in range(2)]
    c = compile_lowered(g, calibration=cal)
    dec = {d.name: d for d in c.lowering.decisions}
    for n in names:
        assert dec[n].device == "npu", (n, dec[n].reason)
    want = LOWERING.get(case, "DPU LUT (LO table) after 'conv'")
    assert any(want in (dec[n].lowering or "") for n in names), [dec[n].lowering for n in names]
    program = load_program(program_to_bytes(c.program))
    for _ in range(3):
        feeds = {"x": rng.uniform(-1.2, 1.2, SHAPE).astype(np.float32)}
        out, ref = run_program(program, feeds), run_reference(c.lowering, feeds)
        for k in g.outputs:
            np.testing.assert_array_equal(out[k], ref[k])
    dist = _per_op_distance(c, feeds)
    ops = {o.name: o for o in c.lowering.conv_ops()}
    with capsys.disabled():
        print(f"\n{case}: per-op NPU - TFLite int8 (LSB): " + "; ".join(f"{k}: {dict(sorted(v.items()))}"
                                                                        for k, v in dist.items()))
    for name, hist in dist.items():
        op, n = ops[name], sum(hist.values())
        differ = (n - hist[0]) / n
        if op.kind == "lut" or (op.kind == "conv" and op.requant.lut is None):
            bound = 0 if op.kind == "lut" else 1  # a carrier LUT is TFLite's table exactly
        elif op.requant.lut is not None:  # one conv code off moves to the neighbouring table entry
            bound = _max_step(op.requant.lut.lo_table)
        else:
            bound = 1  # Add / Mul: one rounding of the exact (or 1/64-LSB) sum / product
        assert max(abs(k) for k in hist) <= bound, (name, hist)
        assert differ < 0.05, (name, hist)
        if op.kind == "lut":
            assert differ == 0


def test_operands_the_carriers_cannot_take_fall_back_with_reasons():
    g = Graph("bcast")
    g.add_tensor(Tensor("x", SHAPE, "float32"))
    g.inputs = ["x"]
    rng = np.random.default_rng(2)
    for y, cout in (("e", 16), ("m", 1)):
        g.add_node("Conv", ["x", g.add_const(y + ".w", rng.standard_normal((cout, 8, 1, 1)).astype(np.float32))], [y],
                   {"kernel_shape": [1, 1]}, name=y)
    g.add_node("Mul", ["e", "m"], ["y"], name="op")  # broadcast over channels of a dynamic map
    g.outputs = ["y"]
    g = canonicalize(g)
    c = compile_lowered(g, calibration=[{"x": rng.uniform(-1, 1, SHAPE).astype(np.float32)} for _ in range(2)])
    d = {x.name: x for x in c.lowering.decisions}["op"]
    assert d.device == "cpu" and "broadcast" in d.reason


def test_lut_table_matches_executor_and_saturates():
    """with_lut: LO[i] = table[i - 128] for the 256 codes, LO[256..512] = table[127]; a producer clamp folds in."""
    table = np.arange(-128, 128, dtype=np.int64)[::-1].astype(np.int8)
    rq = A.compute_requant_params(0.02, 0.01, 0.05, input_zp=3, output_zp=-7, truncate_bits=0)
    lr = LT.with_lut(rq, table)
    assert (lr.out_scale, lr.out_shift, lr.out_offset) == (1, 0, 0)
    assert (lr.lut.bn_mul, lr.lut.bn_shift, lr.lut.lo_start) == (rq.out_scale, rq.out_shift, -128 + 7)
    lo = np.array(lr.lut.lo_table)
    assert lo.size == 513 and np.array_equal(lo[:256], table) and np.all(lo[256:] == table[-1])
    v = np.arange(-400, 400)
    y = nm.lut_lo_stage(v, lo, lr.lut.lo_start)  # int8 code = v + zp, saturated at both ends
    np.testing.assert_array_equal(y, table[np.clip(v - 7, -128, 127) + 128])
    clamped = np.array(LT.with_lut(rq, table, (-7, 100)).lut.lo_table)
    np.testing.assert_array_equal(clamped[:256], table[np.clip(np.arange(-128, 128), -7, 100) + 128])


# ---------------------------------------------------------------------------------------------- task level
MEM = 1 << 22
IN, WGT, BIAS, OUT, CMD = 0x1000, 0x100000, 0x180000, 0x200000, 0x300000


def _lut_task():
    rng = np.random.default_rng(3)
    geo = A.ConvGeometry(20, 6, 7, 24, 3, 3, (1, 1), (1, 1, 1, 1))
    x = rng.integers(-128, 128, (1, 20, 6, 7), dtype=np.int64).astype(np.int8)
    w = rng.integers(-127, 128, geo.weight_shape, dtype=np.int64).astype(np.int8)
    bias = rng.integers(-2000, 2000, 24).astype(np.int32)
    s_w = rng.uniform(0.002, 0.01, 24)
    rq = A.compute_requant_params(0.03, s_w, 0.6, input_zp=5, output_zp=-20)
    from opennpu.quant.lut import lut_table
    table = lut_table("Silu", {}, 0.6, -20, 0.3, -90)
    rq = LT.with_lut(rq, table)
    t = T.make_conv_task(geo, rq, input_addr=IN, weight_addr=WGT, bias_addr=BIAS, output_addr=OUT, name="lut")
    emu = C.make_emulator(MEM)
    emu.write(IN, t.pack_input(x))
    emu.write(WGT, t.pack_weights(w))
    emu.write(BIAS, t.pack_bias(bias, w))
    buf, places = C.link_conv_tasks([t], CMD)
    ref = A.conv_reference(x, w, bias, rq, geo)
    return emu, t, regcmd.bytes_to_words(buf)[: places[0].count], places[0], ref


def test_lut_task_on_emulator_and_golden_words():
    emu, t, words, place, ref = _lut_task()
    emu.write(CMD, regcmd.words_to_bytes(words))
    emu.run(place.addr, place.count)
    np.testing.assert_array_equal(t.unpack_output(emu.read(OUT, t.output_bytes)), ref)
    w = dict(C.emit_conv(t))
    lut = t.requant.lut
    # hand-derived from the field layouts (registers.xml) and the LUT programming of docs/rk3588-arithmetic.md
    assert w["DPU_LUT_ACCESS_CFG"] == 1 << 17 | 1 << 16  # write access, LO table, address 0
    assert w["DPU_LUT_CFG"] == 0x78  # hybrid/oflow/uflow priority (LO always) | LO_LE_MUX=2 (iav's 0x28 has bits 5, 3)
    assert w["DPU_LUT_INFO"] == 0 and w["DPU_LUT_LO_START"] == twos(lut.lo_start, 32)
    assert w["DPU_LUT_LO_END"] == twos(lut.lo_start + 512, 32)
    assert w["DPU_LUT_LE_START"] == 0x7FFFFFFF  # LE never hits
    assert w["DPU_BN_CFG"] == 1 << 6 | 1 << 1  # BN on: RELU and ALU bypassed, MUL on (register operand)
    assert w["DPU_BN_MUL_CFG"] == lut.bn_mul << 16 | lut.bn_shift << 8
    assert w["DPU_EW_CFG"] == 1 << 9 | 1 << 8 | 1 << 1  # EW on, operand/convert/ReLU bypassed, LUT on
    assert (w["DPU_OUT_CVT_SCALE"], w["DPU_OUT_CVT_SHIFT"], w["DPU_OUT_CVT_OFFSET"]) == (1, 0, 0)
    data = [v for r, v in C.emit_conv(t) if r == "DPU_LUT_ACCESS_DATA"]
    assert [twos(v, 16) for v in lut.lo_table] == data and len(data) == 513
    # the LUT RAM persists: a second run of the same words gives the same bytes
    emu.run(place.addr, place.count)
    np.testing.assert_array_equal(t.unpack_output(emu.read(OUT, t.output_bytes)), ref)


def _idx(words, reg, first=False):
    off = register(reg).offset
    hits = [i for i, w in enumerate(words) if w and (w & 0xFFFF) == off and w >> 48 not in (0x41, 0x81)]
    return hits[0] if first else hits[-1]


def _set(reg, value, first=False):
    def f(words):
        i = _idx(words, reg, first)
        words[i] = (words[i] & ~(0xFFFFFFFF << 16)) | value << 16
    return f


MALFORMED = {
    "LO address out of range": (_set("DPU_LUT_ACCESS_CFG", 1 << 17 | 1 << 16 | 513), "outside the LO table"),
    "LE address out of range": (_set("DPU_LUT_ACCESS_CFG", 1 << 17 | 700), "outside the LE table"),
    "write past the end of LO": (_set("DPU_LUT_ACCESS_CFG", 1 << 17 | 1 << 16 | 1), "past the end of the LO"),
    "table never written": (_set("DPU_LUT_ACCESS_CFG", 1 << 16), "never written"),
    "data before access cfg": (lambda w: w.__setitem__(_idx(w, "DPU_LUT_ACCESS_CFG"), 0), "before any"),
    "reserved data bits": (_set("DPU_LUT_ACCESS_DATA", 1 << 16), "reserved bits"),
    "reserved access cfg bits": (_set("DPU_LUT_ACCESS_CFG", 1 << 20 | 1 << 17 | 1 << 16), "reserved bits"),
    "interpolation": (_set("DPU_LUT_INFO", 3 << 16), "interpolation"),
    "LO range not 513 entries": (_set("DPU_LUT_LO_END", 256), "DPU_LUT_LO_END"),
    "extrapolation slope": (_set("DPU_LUT_LO_SLOPE_SCALE", 5), "SLOPE"),
    "LE table selection": (_set("DPU_LUT_CFG", 0x28), "DPU_LUT_CFG"),
    "LE table can hit": (_set("DPU_LUT_LE_START", 0), "DPU_LUT_LE_START"),
    "LUT with ReLU": (_set("DPU_EW_CFG", 1 << 8 | 1 << 1), "ReLU"),
    "BN ALU": (_set("DPU_BN_CFG", 1 << 6), "BN"),
    "BN bypassed, EW LUT only": (_set("DPU_EW_CFG", 1 << 9 | 1 << 8 | 1 << 7 | 1 << 1), "without operand"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_lut_streams(name):
    mutate, match = MALFORMED[name]
    emu, t, words, place, _ = _lut_task()
    mutate(words)
    emu.write(CMD, regcmd.words_to_bytes(words))
    with pytest.raises(DeviceError, match=match):
        emu.run(place.addr, place.count)


# ---------------------------------------------------------------------------------------------- yolov8n
@pytest.fixture(scope="module")
def yolo():
    g = opennpu.load_model("yolov8n")
    rng = np.random.default_rng(0)
    shape = tuple(g.tensor(g.inputs[0]).shape)
    assert shape == (1, 3, 320, 320)
    cal = [{g.inputs[0]: rng.uniform(0, 1, shape).astype(np.float32)} for _ in range(2)]
    q = opennpu.quantize(g, cal, weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12, progress=False)
    return g, compile_lowered(q), {g.inputs[0]: rng.uniform(0, 1, shape).astype(np.float32)}


def test_yolov8n_silu_and_adds_on_npu_emulator_equals_reference(yolo, capsys):
    g, c, feeds = yolo
    dec = c.lowering.decisions
    silu = [d for d in dec if d.op_type == "Silu"]
    adds = [d for d in dec if d.op_type == "Add" and d.device == "npu"]
    assert len(silu) == 57 and all(d.device == "npu" and "after" in d.lowering for d in silu), \
        [(d.name, d.reason) for d in silu if d.device != "npu"]
    assert len(adds) >= 6  # the residual Adds of the C2f bottlenecks (their operands come out of a conv + SiLU)
    out = run_program(c.program, feeds)
    ref = run_reference(c.lowering, feeds)
    for k in g.outputs:
        np.testing.assert_array_equal(out[k], ref[k])
    dist = _per_op_distance(c, feeds)
    lut_hist, add_hist = Counter(), Counter()
    for op in c.lowering.conv_ops():
        hist = dist[op.name]
        if op.requant.lut is not None:  # one conv code off moves to the neighbouring table entry
            lut_hist.update(hist)
            assert max(abs(k) for k in hist) <= _max_step(op.requant.lut.lo_table), (op.name, hist)
        elif op.kind == "add":
            add_hist.update(hist)
    n = sum(lut_hist.values())
    with capsys.disabled():
        print(f"\nyolov8n: {c.n_tasks} tasks, NPU MAC fraction {c.lowering.npu_mac_fraction:.4f}; conv+SiLU ops, "
              f"NPU - TFLite int8 (LSB): {dict(sorted(lut_hist.items()))} ({(n - lut_hist[0]) / n:.3%} differ); "
              f"residual Adds: {dict(sorted(add_hist.items()))}")
    assert (n - lut_hist[0]) / n < 0.01
    assert max(abs(k) for k in add_hist) <= 1


def test_ew_mul_task_on_emulator_and_words():
    """Mul of two maps: weight-1 carrier, EW MUL of (e - zp_e) (EW_OP_TYPE=1), product rounded by OUT_CVT."""
    rng = np.random.default_rng(5)
    geo = A.ConvGeometry(40, 5, 9, 40, depthwise=True)
    x = rng.integers(-128, 128, (1, 40, 5, 9), dtype=np.int64).astype(np.int8)
    e = rng.integers(-128, 128, (1, 40, 5, 9), dtype=np.int64).astype(np.int8)
    w = np.ones(geo.weight_shape, np.int8)
    rq = LT.mul_ew(A.compute_requant_params(0.04, 0.03, 0.5, input_zp=-9, output_zp=11, activation="RELU"), 17)
    t = T.make_conv_task(geo, rq, input_addr=IN, weight_addr=WGT, bias_addr=BIAS, output_addr=OUT,
                         ew_addr=0x280000, name="mul")
    emu = C.make_emulator(MEM)
    emu.write(IN, t.pack_input(x))
    emu.write(WGT, t.pack_weights(w))
    emu.write(BIAS, t.pack_bias(None, w))
    emu.write(t.ew_addr, t.pack_ew(e))
    buf, places = C.link_conv_tasks([t], CMD)
    emu.write(CMD, buf)
    emu.run(places[0].addr, places[0].count)
    y = t.unpack_output(emu.read(OUT, t.output_bytes))
    np.testing.assert_array_equal(y, A.conv_reference(x, w, None, rq, geo, e))
    exact = (x.astype(np.int64) + 9) * (e.astype(np.int64) - 17) * 0.04 * 0.03 / 0.5 + 11
    assert np.abs(y - np.clip(np.round(exact), 11, 127)).max() <= 1  # ReLU: the clamp at the zero point
    words = dict(C.emit_conv(t))
    assert words["DPU_EW_CFG"] & (1 << 2) and (words["DPU_EW_CFG"] >> 16) & 0xF == 0  # EW_OP_TYPE=1, ALU_ALGO=0
    assert words["DPU_EW_CVT_SCALE_VALUE"] == 1 and words["DPU_EW_CVT_OFFSET_VALUE"] == twos(-17, 32)
    # ERDMA and EW data modes must agree (per element vs per channel)
    ws = regcmd.bytes_to_words(buf)[: places[0].count]
    _set("DPU_RDMA_RDMA_ERDMA_CFG", 0 << 30 | 1 << 2)(ws)
    emu.write(CMD, regcmd.words_to_bytes(ws))
    with pytest.raises(DeviceError, match="EW_DATA_MODE"):
        emu.run(places[0].addr, places[0].count)
    # an add must not carry a MUL truncate
    i = max(k for k, wd in enumerate(regcmd.bytes_to_words(buf)) if wd & 0xFFFF == register("DPU_EW_CFG").offset
            and wd >> 48 == 0x1001)
    ws = regcmd.bytes_to_words(buf)[: places[0].count]
    ws[i] = (ws[i] & ~(0xFFFFFFFF << 16)) | ((words["DPU_EW_CFG"] & ~(1 << 2)) | 2 << 16) << 16
    j = _idx(ws, "DPU_EW_CVT_SCALE_VALUE")
    ws[j] |= (3 << 22) << 16
    emu.write(CMD, regcmd.words_to_bytes(ws))
    with pytest.raises(DeviceError, match="EW_TRUNCATE"):
        emu.run(places[0].addr, places[0].count)


def test_graph_cost_treats_fused_lut_as_part_of_its_conv():
    from opennpu.targets.rk3588.cost import estimate_graph

    g, _ = _graph("silu")
    est = {o.name: o for o in estimate_graph(g).ops}
    assert est["act"].fused_into and est["act"].latency_us == 0.0
    assert est["conv"].latency_us > 0
