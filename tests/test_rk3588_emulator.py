"""RK3588 conv task: arithmetic model, task descriptor, register codegen and the regcmd emulator.

Oracles: the emulator (which sees only regcmd words and memory) must equal the target's integer reference
(arith.conv_reference) bit for bit; the reference must stay within 1 LSB of TFLite's int8 kernels
(opennpu.quant.kernels.conv, byte-exact against LiteRT in test_int8_kernels.py); register words are checked
against hand-derived values from the documented field layouts.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from opennpu.errors import CompileError, DeviceError, ProgramFormatError
from opennpu.quant.kernels.elementwise import add as tflite_add
from opennpu.runtime.emulator import RoundingModel
from opennpu.runtime.emulator import npu_math as nm
from opennpu.targets.rk3588 import arith as A
from opennpu.targets.rk3588 import codegen as C
from opennpu.targets.rk3588 import regcmd
from opennpu.targets.rk3588 import task as T
from opennpu.targets.rk3588.registers import register

MEM = 1 << 22
IN, WGT, BIAS, OUT, EW, CMD = 0x1000, 0x100000, 0x180000, 0x200000, 0x280000, 0x300000
KINDS = ("conv", "dw", "1x1", "fc")
ACTS = (None, "RELU", "RELU6")


# ---------------------------------------------------------------------------------------------- cases
def make_case(i: int) -> dict:
    """Deterministic coverage: kind cycles conv/dw/1x1/fc, per-channel alternates every 4, activation every 1."""
    rng = np.random.default_rng(1000 + i)
    kind, per_channel, act = KINDS[i % 4], (i // 4) % 2 == 0, ACTS[i % 3]
    if kind == "conv":
        kh = int(rng.choice([2, 3, 5]))
        kw = int(rng.choice([kh, 1, 3]))
        cin, cout = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        h, w = int(rng.integers(kh, 18)), int(rng.integers(kw, 18))
    elif kind == "dw":
        kh = kw = int(rng.choice([3, 5]))
        cin = cout = int(rng.integers(2, 100))
        h, w = int(rng.integers(kh, 18)), int(rng.integers(kw, 18))
    elif kind == "1x1":
        kh = kw = 1
        cin, cout = int(rng.integers(1, 130)), int(rng.integers(1, 130))
        h, w = int(rng.integers(4, 16)), int(rng.integers(1, 16))
    else:  # FC as a 1x1 conv on a 1x1 map (iav)
        kh = kw = 1
        cin, cout = int(rng.integers(8, 600)), int(rng.integers(1, 200))
        h = w = 1
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if kind != "fc" else (1, 1)
    pads = tuple(int(rng.integers(0, k)) for k in (kh, kw, kh, kw))
    g = A.ConvGeometry(cin, h, w, cout, kh, kw, stride, pads, depthwise=kind == "dw")  # type: ignore[arg-type]
    s_in = float(rng.uniform(0.005, 0.1))
    base = float(rng.uniform(0.001, 0.02))
    s_w = base * rng.uniform(0.05, 1.0, cout) if per_channel and cout > 1 else np.array([base])
    k = g.macs_per_output()
    izp = int(rng.integers(-128, 128))
    # output spread of ~40 LSB: accumulator std ~ sqrt(K) * rms(x - izp) * rms(w)
    s_out = float(s_in * base * np.sqrt(k) * np.hypot(74, izp) * 74 / 40 * rng.uniform(0.5, 2.0))
    return dict(
        g=g, kind=kind, act=act, per_channel=per_channel and cout > 1, s_in=s_in, s_w=s_w, s_out=s_out,
        izp=izp, ozp=int(rng.integers(-100, 100)),
        x=rng.integers(-128, 128, (1, cin, h, w), dtype=np.int8),
        w=rng.integers(-127, 128, g.weight_shape, dtype=np.int8),
        bias=rng.integers(-2000 * k ** 0.5, 2000 * k ** 0.5, cout).astype(np.int32))


CASES = [make_case(i) for i in range(40)]


def requant_of(c: dict, **kw) -> A.NpuRequant:
    return A.compute_requant_params(c["s_in"], c["s_w"], c["s_out"], input_zp=c["izp"], output_zp=c["ozp"],
                                    activation=c["act"], **kw)


def tflite_of(c: dict) -> np.ndarray:
    s_w = c["s_w"] if c["per_channel"] else float(c["s_w"][0])
    return A.tflite_conv(c["x"], c["w"], c["bias"], c["g"], s_in=c["s_in"], s_w=s_w, s_out=c["s_out"],
                         input_zp=c["izp"], output_zp=c["ozp"], activation=c["act"])


def build(c: dict, rq: A.NpuRequant, **kw) -> T.ConvTask:
    return T.make_conv_task(c["g"], rq, input_addr=IN, weight_addr=WGT, bias_addr=BIAS, output_addr=OUT, **kw)


def load(emu, t: T.ConvTask, c: dict, ew=None) -> None:
    emu.write(t.input_addr, t.pack_input(c["x"]))
    emu.write(t.weight_addr, t.pack_weights(c["w"]))
    emu.write(t.bias_addr, t.pack_bias(c["bias"], c["w"]))
    if ew is not None:
        emu.write(t.ew_addr, t.pack_ew(ew))


def run_tasks(emu, tasks: list[T.ConvTask], base: int = CMD) -> tuple[bytes, list[regcmd.Placement]]:
    buf, places = C.link_conv_tasks(tasks, base)
    emu.write(base, buf)
    emu.run(places[0].addr, places[0].count)
    return buf, places


# ---------------------------------------------------------------------------------------------- bit-exactness
@pytest.mark.parametrize("i", range(len(CASES)))
def test_emulator_equals_reference(i):
    c = CASES[i]
    rq = requant_of(c)
    t = build(c, rq)
    emu = C.make_emulator(MEM)
    load(emu, t, c)
    buf, places = run_tasks(emu, [t])
    y = t.unpack_output(emu.read(t.output_addr, t.output_bytes))
    ref = A.conv_reference(c["x"], c["w"], c["bias"], rq, c["g"])
    np.testing.assert_array_equal(y, ref)
    assert len(emu.trace) == 1 and emu.irq_raw & (1 << 8)
    # the NPU result stays within 1 LSB of TFLite's int8 kernel
    assert np.abs(ref.astype(int) - tflite_of(c)).max() <= 1
    # decode(encode) round trip of the emitted task, and re-linking reproduces the bytes
    dec = regcmd.decode_chain(buf, CMD, places[0].addr, places[0].amount)
    assert len(dec) == 1
    assert [(r.full_name, v) for r, v in dec[0].writes] == C.emit_conv(t)
    assert regcmd.link([dec[0].as_task()], CMD)[0] == buf


def test_case_coverage():
    kinds = {(c["kind"], c["per_channel"], c["act"]) for c in CASES}
    assert {k for k, _, _ in kinds} == set(KINDS)
    assert {p for _, p, _ in kinds} == {True, False} and {a for _, _, a in kinds} == set(ACTS)
    assert any(c["g"].in_c % 2 and c["g"].out_c % 2 for c in CASES)  # odd channel counts
    assert any(c["g"].stride != (1, 1) for c in CASES) and any(sum(c["g"].pads) for c in CASES)
    assert any(c["g"].in_c == 1 or c["g"].in_c > 256 for c in CASES)


def test_lsb_distribution_vs_tflite(capsys):
    """Distribution of (NPU integer reference - TFLite int8 conv) over all cases, both OUT_CVT derivations."""
    for method in ("round", "mesa"):
        hist: dict[int, int] = {}
        total = 0
        for c in CASES:
            d = A.conv_reference(c["x"], c["w"], c["bias"], requant_of(c, method=method), c["g"]).astype(int) - \
                tflite_of(c)
            for v, n in zip(*np.unique(d, return_counts=True), strict=True):
                hist[int(v)] = hist.get(int(v), 0) + int(n)
            total += d.size
        with capsys.disabled():
            frac = 1 - hist.get(0, 0) / total
            print(f"\nNPU vs TFLite ({method} OUT_CVT): {total} outputs, {frac:.4%} differ, "
                  f"histogram {sorted(hist.items())}")
        assert max(abs(k) for k in hist) <= 1
        assert frac < 0.01


# ---------------------------------------------------------------------------------------------- arithmetic
def test_out_cvt_derivations():
    # 0.125 = 0.5 * 2^-2: 15-bit mantissa 2^14, shift 15 - (-2) = 17
    assert A.out_cvt_params(0.125) == (16384, 17)
    # Mesa: float32 bits 0x3E000000, exponent 124 -> shift 142 - 124 = 18, register 17; scale (0 + 1) | 2^14
    assert A.mesa_out_cvt(0.125) == (16385, 17)
    assert A.mesa_out_cvt(0.125, truncate_bits=1) == (16385, 16)
    assert A.out_cvt_params(0.125, truncate_bits=2) == (16384, 15)
    rng = np.random.default_rng(5)
    for real in 10.0 ** rng.uniform(-6, 2, 300):
        s, sh = A.out_cvt_params(real)
        assert 1 << 14 <= s < 1 << 15 and abs(s / 2.0 ** sh / real - 1) <= 2.0 ** -15
        ms, msh = A.mesa_out_cvt(real)
        assert abs(ms / 2.0 ** msh / np.float32(real) - 1) <= 2.0 ** -13 or (ms >> 14) == 1
    # Mesa loses the "+1" carry when the exponent is even and the top 14 mantissa bits are all ones
    real = float(np.float32((2 - 2.0 ** -16) * 2.0 ** -3))
    ms, msh = A.mesa_out_cvt(real)
    assert ms / 2.0 ** msh == pytest.approx(real / 2, rel=1e-3)
    s, sh = A.out_cvt_params(real)
    assert s / 2.0 ** sh == pytest.approx(real, rel=2.0 ** -15)
    with pytest.raises(CompileError):
        A.out_cvt_params(2.0 ** 20)  # would need a left shift
    with pytest.raises(CompileError):
        A.out_cvt_params(-1.0)


def test_round_shift_modes():
    x = np.array([-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7])
    assert nm.round_shift(x, 1, "half_up").tolist() == [-3, -3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 3, 3, 4]
    assert nm.round_shift(x, 1, "half_away").tolist() == [-4, -3, -3, -2, -2, -1, -1, 0, 1, 1, 2, 3, 3, 4]
    assert nm.round_shift(x, 1, "half_even").tolist() == [-4, -3, -2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 3, 4]
    assert nm.round_shift(x, 1, "floor").tolist() == (x // 2).tolist()
    assert nm.round_shift(x, 1, "trunc").tolist() == [int(v / 2) for v in x]
    assert nm.round_shift(x, 0, "half_up").tolist() == x.tolist()
    assert nm.round_shift(np.array([2**40, -(2**40)]), 63, "floor").tolist() == [0, -1]


def test_relux_threshold_equals_clamp_after_out_cvt():
    rq = A.compute_requant_params(0.02, 0.004, 0.05, output_zp=-100, activation="RELU6")
    lo, hi = rq.clamp
    assert rq.relu and rq.relux is not None and lo == -100 and hi == -100 + 120
    v = np.arange(-5000, 5000)
    direct = np.clip(nm.out_cvt(v, rq.out_scale, rq.out_shift, rq.out_offset), lo, hi)
    staged = nm.out_cvt(nm.relu_stage(v, rq.relu, rq.relux), rq.out_scale, rq.out_shift, rq.out_offset)
    np.testing.assert_array_equal(direct, staged)
    # zero point -128 with RELU: saturation alone implements the clamp, no DPU ReLU needed
    assert not A.compute_requant_params(0.02, 0.004, 0.05, output_zp=-128, activation="RELU").relu
    with pytest.raises(CompileError):
        A.compute_requant_params(0.02, 0.004, 0.05, output_zp=0, activation="RELU_N1_TO_1")


def test_per_channel_mul_and_truncate_on_emulator():
    c = dict(CASES[0])
    rq = requant_of(c, truncate_bits=3)
    assert rq.per_channel and rq.truncate_bits == 3 and max(rq.channel_mul) == 1 << 14
    t = build(c, rq)
    emu = C.make_emulator(MEM)
    load(emu, t, c)
    run_tasks(emu, [t])
    y = t.unpack_output(emu.read(OUT, t.output_bytes))
    np.testing.assert_array_equal(y, A.conv_reference(c["x"], c["w"], c["bias"], rq, c["g"]))
    # truncating 3 accumulator bits costs up to 2^2 accumulator units of rounding before requantization
    lost = 2 ** 2 * c["s_in"] * float(np.max(c["s_w"])) / c["s_out"]
    assert np.abs(y.astype(int) - tflite_of(c)).max() <= 1 + int(np.ceil(lost))


@pytest.mark.parametrize("rounding", [RoundingModel("half_up", "floor", "floor", "floor"),
                                      RoundingModel("trunc", "half_away", "half_away", "half_away")])
def test_rounding_model_is_a_device_parameter(rounding):
    c = CASES[5]
    rq = requant_of(c, rounding=rounding, truncate_bits=1)
    t = build(c, rq)
    emu = C.make_emulator(MEM, rounding=rounding)
    load(emu, t, c)
    run_tasks(emu, [t])
    np.testing.assert_array_equal(t.unpack_output(emu.read(OUT, t.output_bytes)),
                                  A.conv_reference(c["x"], c["w"], c["bias"], rq, c["g"]))


def test_fused_add_ew_stage(capsys):
    rng = np.random.default_rng(7)
    g = A.ConvGeometry(24, 9, 7, 40, 3, 3, (1, 1), (1, 1, 1, 1))
    s_in, s_w, s_c, s_e, s_out = 0.04, rng.uniform(0.002, 0.006, 40), 0.6, 0.3, 0.8
    c = dict(g=g, x=rng.integers(-128, 128, (1, 24, 9, 7), dtype=np.int8),
             w=rng.integers(-127, 128, g.weight_shape, dtype=np.int8),
             bias=rng.integers(-3000, 3000, 40).astype(np.int32))
    e = rng.integers(-128, 128, (1, 40, 9, 7), dtype=np.int8)
    rq = A.compute_requant_params(s_in, s_w, s_out, input_zp=5, output_zp=-7, activation="RELU", ew_scale=s_e,
                                  ew_zp=11)
    assert rq.ew is not None and rq.relu
    t = build(c, rq, ew_addr=EW)
    emu = C.make_emulator(MEM)
    load(emu, t, c, ew=e)
    run_tasks(emu, [t])
    y = t.unpack_output(emu.read(OUT, t.output_bytes))
    ref = A.conv_reference(c["x"], c["w"], c["bias"], rq, g, ew_q=e)
    np.testing.assert_array_equal(y, ref)
    # vs TFLite conv (to an int8 tensor of scale s_c) followed by ADD: the fused path skips one rounding
    conv = A.tflite_conv(c["x"], c["w"], c["bias"], g, s_in=s_in, s_w=s_w, s_out=s_c, input_zp=5, output_zp=0)
    tfl = tflite_add(conv, e, a_scale=s_c, a_zp=0, b_scale=s_e, b_zp=11, output_scale=s_out, output_zp=-7,
                     activation="RELU", kernel="reference")
    d = ref.astype(int) - tfl
    with capsys.disabled():
        print(f"\nfused conv+add vs TFLite conv->add: max |d| {np.abs(d).max()}, {np.mean(d != 0):.2%} differ")
    assert np.abs(d).max() <= 1


def test_two_chained_tasks():
    """conv -> depthwise through one PC chain; the second task reads the first one's output."""
    rng = np.random.default_rng(3)
    g1 = A.ConvGeometry(5, 8, 6, 20, 3, 3, (1, 1), (1, 1, 1, 1))
    g2 = A.ConvGeometry(20, 8, 6, 20, 3, 3, (2, 2), (1, 1, 1, 1), depthwise=True)
    c1 = dict(g=g1, x=rng.integers(-128, 128, (1, 5, 8, 6), dtype=np.int8),
              w=rng.integers(-127, 128, g1.weight_shape, dtype=np.int8), bias=rng.integers(-99, 99, 20))
    w2, b2 = rng.integers(-127, 128, g2.weight_shape, dtype=np.int8), rng.integers(-99, 99, 20)
    rq1 = A.compute_requant_params(0.05, 0.01, 0.2, input_zp=1, output_zp=-3, activation="RELU")
    rq2 = A.compute_requant_params(0.2, rng.uniform(0.005, 0.02, 20), 0.3, input_zp=-3, output_zp=4)
    t1 = T.make_conv_task(g1, rq1, input_addr=IN, weight_addr=WGT, bias_addr=BIAS, output_addr=OUT)
    t2 = T.make_conv_task(g2, rq2, input_addr=OUT, weight_addr=WGT + 0x10000, bias_addr=BIAS + 0x1000,
                          output_addr=OUT + 0x10000, input_surf_stride=t1.output_surf_stride)
    emu = C.make_emulator(MEM)
    load(emu, t1, c1)
    emu.write(t2.weight_addr, t2.pack_weights(w2))
    emu.write(t2.bias_addr, t2.pack_bias(b2, w2))
    run_tasks(emu, [t1, t2])
    assert len(emu.trace) == 2
    y1 = A.conv_reference(c1["x"], c1["w"], c1["bias"], rq1, g1)
    np.testing.assert_array_equal(t1.unpack_output(emu.read(OUT, t1.output_bytes)), y1)
    y2 = A.conv_reference(y1, w2, b2, rq2, g2)
    np.testing.assert_array_equal(t2.unpack_output(emu.read(t2.output_addr, t2.output_bytes)), y2)


# ---------------------------------------------------------------------------------------------- golden words
def test_golden_words_small_conv():
    """3x3 conv, 8 -> 4 channels, 6x5 input (H x W), pad 1, stride 1, s_in 0.5, s_w 0.25, s_out 1."""
    g = A.ConvGeometry(8, 6, 5, 4, 3, 3, (1, 1), (1, 1, 1, 1))
    rq = A.compute_requant_params(0.5, 0.25, 1.0, input_zp=3, output_zp=-5)
    t = T.make_conv_task(g, rq, input_addr=0x1000, weight_addr=0x2000, bias_addr=0x3000, output_addr=0x4000)
    regs = dict(C.emit_conv(t))
    golden = {
        # DATAIN_WIDTH[26:16] = 5, DATAIN_HEIGHT[10:0] = 6
        "CNA_DATA_SIZE0": 5 << 16 | 6,
        # DATAIN_CHANNEL_REAL[29:16] = 8 - 1, DATAIN_CHANNEL = align16(max(8, 16)) = 16
        "CNA_DATA_SIZE1": 7 << 16 | 16,
        "CNA_DATA_SIZE2": 5,  # output width (pad 1 each side keeps 5)
        "CNA_DATA_SIZE3": 30,  # 5 x 6 output atoms
        # kernels align2(4) = 4; bytes per kernel 3*3*16 = 144 = 0x90; total 576 = 0x240
        "CNA_WEIGHT_SIZE0": 0x240, "CNA_WEIGHT_SIZE1": 0x90,
        "CNA_WEIGHT_SIZE2": 3 << 24 | 3 << 16 | 4,
        # 1 data bank (6 rows x 1 entry), 11 weight banks: WEIGHT_BANK[7:4] = 11, DATA_BANK[3:0] = 1
        "CNA_CBUF_CON0": 0xB1,
        "CNA_CBUF_CON1": 2,  # Mesa: ceil(W * 2 * ceil(C/16) / 8) = ceil(10 / 8)
        "CNA_CONV_CON2": (50 + 1 + 1) << 4,  # FEATURE_GRAINS[13:4] = Mesa's 50 + stride + 1
        "CNA_CONV_CON3": 1 << 3 | 1,  # CONV_Y_STRIDE[5:3], CONV_X_STRIDE[2:0]
        "CNA_PAD_CON0": 1 << 4 | 1,  # PAD_LEFT[7:4], PAD_TOP[3:0]
        "CNA_PAD_CON1": 3,  # pad with the input zero point
        # line stride 5 * 16 bytes / 4 = 20; surface 6 * 5 * 16 / 16 - 20 = 10 (= Mesa 20 * (6/4 - 1))
        "CNA_DMA_CON1": 20, "CNA_DMA_CON2": 10,
        "CNA_FEATURE_DATA_ADDR": 0x1000, "CNA_DCOMP_ADDR0": 0x2000,
        "CORE_DATAOUT_SIZE_0": (6 - 1) << 16 | (5 - 1),
        "CORE_DATAOUT_SIZE_1": 32 - 1,  # Mesa aligns output channels to 32
        "DPU_DST_BASE_ADDR": 0x4000,
        "DPU_DST_SURF_STRIDE": 30 << 4,  # field [31:4] = W * H = 30 atoms
        "DPU_DATA_CUBE_CHANNEL": (4 - 1) << 16 | (32 - 1),  # ORIG_CHANNEL[28:16], CHANNEL[12:0]
        # BS_ALU_ALGO[19:16] = 2 (add), BS_ALU_SRC[8] = 1, BS_RELU_BYPASS[6] = 1, BS_MUL_BYPASS[4] = 1
        "DPU_BS_CFG": 2 << 16 | 1 << 8 | 1 << 6 | 1 << 4,
        # conv_scale = 0.5 * 0.25 / 1 = 0.125 = 2^14 / 2^17
        "DPU_OUT_CVT_SCALE": 0x4000, "DPU_OUT_CVT_SHIFT": 17,
        "DPU_OUT_CVT_OFFSET": 0xFFFFFFFB,  # output zero point -5, two's complement
        "DPU_RDMA_RDMA_BRDMA_CFG": 1 << 1,  # BRDMA_DATA_USE[4:1] = 1 (bias only)
        "DPU_RDMA_RDMA_BS_BASE_ADDR": 0x3000,
    }
    for name, value in golden.items():
        assert regs[name] == value, f"{name}: 0x{regs[name]:x} != 0x{value:x}"
    buf, places = C.link_conv_tasks([t], 0x8000)
    words = regcmd.bytes_to_words(buf)
    # target << 48 | value << 16 | offset
    assert 0x0201_0005_0006_1020 in words  # CNA_DATA_SIZE0
    assert 0x1001_0000_0011_4088 in words  # DPU_OUT_CVT_SHIFT = 17
    assert 0x1001_FFFF_FFFB_4080 in words  # DPU_OUT_CVT_OFFSET = -5
    assert words[places[0].count - 2:places[0].count] == [0x0041 << 48, 0x0081_0000_001D_0008]
    assert places[0].count % 4 == 2 and places[0].count == regcmd.padded_count(len(C.emit_conv(t)))


def test_compile_errors():
    rq = A.compute_requant_params(0.1, 0.01, 0.1)
    kw = dict(input_addr=IN, weight_addr=WGT, bias_addr=BIAS, output_addr=OUT)
    with pytest.raises(CompileError, match="WEIGHT_WIDTH"):  # 5-bit kernel field
        C.emit_conv(T.make_conv_task(A.ConvGeometry(16, 40, 40, 2, 1, 32), rq, **kw))
    with pytest.raises(CompileError, match="CONV_X_STRIDE"):  # 3-bit stride field
        C.emit_conv(T.make_conv_task(A.ConvGeometry(16, 20, 20, 2, 1, 1, (1, 8)), rq, **kw))
    with pytest.raises(CompileError, match="PAD_TOP"):  # 4-bit pad field
        C.emit_conv(T.make_conv_task(A.ConvGeometry(16, 20, 20, 2, 17, 1, (1, 1), (16, 0, 16, 0)), rq, **kw))
    with pytest.raises(CompileError, match="tiled"):  # input over the CBUF
        T.make_conv_task(A.ConvGeometry(64, 120, 120, 64, 3, 3), rq, **kw)
    with pytest.raises(CompileError, match="tiled"):  # weights over the CBUF
        T.make_conv_task(A.ConvGeometry(512, 4, 4, 512, 3, 3), rq, **kw)
    with pytest.raises(CompileError, match="outside the 32-bit"):
        T.make_conv_task(A.ConvGeometry(16, 4, 4, 2), rq, **{**kw, "output_addr": 1 << 32})
    with pytest.raises(CompileError, match="surface stride"):
        T.make_conv_task(A.ConvGeometry(32, 2, 4, 2), rq, **kw, input_surf_stride=2 * 4 * 16)
    with pytest.raises(CompileError):
        A.compute_requant_params(0.1, [0.01, 1e-7], 0.1)  # per-channel ratio underflows the 14-bit MUL
    with pytest.raises(CompileError):
        A.ConvGeometry(3, 4, 4, 5, depthwise=True)


def test_emulator_does_not_import_targets():
    code = ("import sys, opennpu.runtime.emulator; "
            "bad = [m for m in sys.modules if m.startswith('opennpu.targets')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- malformed
def _program():
    c = CASES[2]
    t = build(c, requant_of(c))
    emu = C.make_emulator(MEM)
    load(emu, t, c)
    buf, places = C.link_conv_tasks([t], CMD)
    return emu, t, regcmd.bytes_to_words(buf)[: places[0].count], places[0]


def _index(words: list[int], reg: str) -> int:
    off = register(reg).offset
    return max(i for i, w in enumerate(words) if w and (w & 0xFFFF) == off and w >> 48 not in (0x41, 0x81))


def _set(words, reg, value):
    i = _index(words, reg)
    words[i] = (words[i] & ~(0xFFFFFFFF << 16)) | value << 16


def _mut_field(reg, value):
    return lambda emu, w: _set(w, reg, value)


MALFORMED = {
    "input DMA out of range": (_mut_field("CNA_FEATURE_DATA_ADDR", MEM - 64), DeviceError, "CNA feature read"),
    "weight DMA out of range": (_mut_field("CNA_DCOMP_ADDR0", MEM - 16), DeviceError, "CNA weight read"),
    "output DMA out of range": (_mut_field("DPU_DST_BASE_ADDR", MEM - 16), DeviceError, "DPU output write"),
    "bias DMA out of range": (_mut_field("DPU_RDMA_RDMA_BS_BASE_ADDR", 0xFFFFFFF0), DeviceError, "BS stream"),
    "unknown register": (lambda emu, w: w.__setitem__(3, 0x0201 << 48 | 0x1FFC), DeviceError, "not a CNA register"),
    "unknown target": (lambda emu, w: w.__setitem__(3, 0x0301 << 48 | 0x1040), DeviceError, "unknown regcmd target"),
    "PC register in body": (lambda emu, w: w.__setitem__(3, 0x0101 << 48 | 0x0020), DeviceError, "PC register"),
    "missing op-enable": (lambda emu, w: w.__setitem__(len(w) - 1, 0), DeviceError, "without an op-enable"),
    "op-enable without 0x0041": (lambda emu, w: w.__setitem__(len(w) - 2, 0), DeviceError, "0x0041"),
    "op-enable lacks DPU": (lambda emu, w: w.__setitem__(len(w) - 1, 0x0081 << 48 | 0x05 << 16 | 8), DeviceError,
                            "does not enable DPU"),
    "word after op-enable": (lambda emu, w: w.__setitem__(slice(len(w) - 3, len(w)), [w[-2], w[-1], w[0]]),
                             DeviceError, "after the op-enable"),
    "looping chain": (lambda emu, w: (_set(w, "PC_BASE_ADDRESS", CMD), _set(w, "PC_REGISTER_AMOUNTS",
                                                                              regcmd.kernel_amount(len(w)))),
                      DeviceError, "loops back"),
    "misaligned chain": (lambda emu, w: (_set(w, "PC_BASE_ADDRESS", CMD + 8), _set(w, "PC_REGISTER_AMOUNTS", 5)),
                         DeviceError, "64-byte aligned"),
    "chain out of memory": (lambda emu, w: (_set(w, "PC_BASE_ADDRESS", MEM), _set(w, "PC_REGISTER_AMOUNTS", 5)),
                            DeviceError, "regcmd fetch"),
    "depthwise mode without DW_EN": (_mut_field("CNA_CONV_CON1", 3), DeviceError, "DW_EN"),
    "CBUF overflow": (_mut_field("CNA_CBUF_CON0", 1 << 4 | 0), DeviceError, "CBUF"),
    "dilation": (_mut_field("CNA_CONV_CON3", 1 << 16 | 0x9), DeviceError, "dilation"),
    "fp16 output format": (_mut_field("DPU_DATA_FORMAT", 2 << 29), DeviceError, "DPU_DATA_FORMAT"),
    "BS stream disabled but used": (_mut_field("DPU_RDMA_RDMA_BRDMA_CFG", 0), DeviceError, "BRDMA_DATA_USE"),
    "pad value not int8": (_mut_field("CNA_PAD_CON1", 0xFFFF8080), DeviceError, "PAD_VALUE"),
    "cube sizes disagree": (_mut_field("DPU_DATA_CUBE_WIDTH", 0), DeviceError, "DPU_DATA_CUBE_WIDTH"),
    "weight size mismatch": (_mut_field("CNA_WEIGHT_SIZE0", 16), DeviceError, "CNA_WEIGHT_SIZE0"),
    "1-channel ARGB mode": (_mut_field("CNA_CONV_CON1", 8 << 12), DeviceError, "ARGB_IN"),
    "LUT enabled": (_mut_field("DPU_LUT_CFG", 1), DeviceError, "LUT"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_programs(name):
    mutate, err, match = MALFORMED[name]
    emu, t, words, place = _program()
    mutate(emu, words)
    emu.write(CMD, regcmd.words_to_bytes(words))
    with pytest.raises(err, match=match):
        emu.run(place.addr, place.count)


def test_malformed_entry_points():
    emu, t, words, place = _program()
    emu.write(CMD, regcmd.words_to_bytes(words))
    with pytest.raises(ProgramFormatError):
        emu.run(place.addr, 0)
    with pytest.raises(DeviceError, match="regcmd fetch"):
        emu.run(MEM - 64, place.count)
    with pytest.raises(DeviceError, match="aligned"):
        emu.run(place.addr + 8, place.count)
    with pytest.raises(DeviceError, match="without an op-enable"):  # amount too small: the tail is not fetched
        emu.run(place.addr, place.count - 8)
    with pytest.raises(DeviceError):
        C.make_emulator(0)
    with pytest.raises(DeviceError, match="host write"):
        emu.write(MEM - 2, b"\0" * 4)
    emu.run(place.addr, place.count)  # the intact program still runs
