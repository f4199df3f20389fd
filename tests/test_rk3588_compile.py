"""End-to-end RK3588 compile-and-run: quantize -> partition -> lower -> regcmd -> .npu -> emulator.

Oracle: the whole-model integer reference of the rk3588 path (targets/rk3588/reference.py: the quantized graph
at IR level, NPU ops through arith.conv_reference with the compiled requantization parameters, CPU segments
through the integer executor). It shares no tiling, packing, addressing, register or emulator code with the
program path, so byte equality checks all of those. The distance of the NPU arithmetic to TFLite's int8
semantics (opennpu.quant.executor.run_quantized) is printed and bounded per op.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np
import pytest

import opennpu
from opennpu.errors import CompileError, DeviceError, ProgramFormatError
from opennpu.ir.graph import Graph, Tensor
from opennpu.ir.passes import canonicalize
from opennpu.quant.executor import run_quantized
from opennpu.runtime.devices import open_device, run_program
from opennpu.runtime.program import load_program, program_to_bytes, save_program
from opennpu.targets.rk3588 import arith
from opennpu.targets.rk3588.compiler import compile_lowered, compile_model
from opennpu.targets.rk3588.reference import run_reference

# ---- helpers ---------------------------------------------------------------------------------------------------

def _roundtrip(compiled, tmp_path_factory, name):
    path = tmp_path_factory.mktemp("npu") / f"{name}.npu"
    save_program(compiled.program, path)
    return load_program(path), path


def _report(name, c, emu_seconds, n):
    st = c.program.manifest.target_payload["stats"]
    cpu = [(d.op_type, d.reason) for d in c.lowering.decisions if d.device == "cpu"]
    print(f"\n{name}: NPU MAC fraction {st['npu_mac_fraction']:.4f}, {st['npu_ops']} NPU ops, {st['tasks']} tasks, "
          f"{st['jobs']} jobs on cores {st['cores_used']}, {st['segments']} segments; compile "
          f"{c.timings['total']:.2f}s (quantize {c.timings['quantize']:.2f}s, lower {c.timings['lower']:.2f}s, "
          f"codegen {c.timings['codegen']:.2f}s); emulator {emu_seconds / n * 1000:.0f} ms/inference")
    print(f"  {c.memory.summary()}")
    for op, why in cpu:
        print(f"  cpu {op}: {why}")


def _per_op_deviation(c, feeds) -> Counter:
    """NPU arithmetic vs TFLite int8 per op, each op fed the executor's own inputs (no accumulation).

    A fused conv + Add computes the sum from the conv's unrounded result, while TFLite first stores the conv
    output as int8: where that intermediate saturates (its calibrated range clipped it: percentile ranges), the
    two differ by what was clipped, and the NPU is the one closer to float. Those positions are left out of
    the histogram (it measures rounding) and counted under the key "saturated"."""
    env = run_quantized(c.qgraph, feeds, keep=True)
    hist: Counter = Counter()
    for op in c.lowering.conv_ops():
        g = op.geometry
        x = env[op.input].reshape(1, g.in_c, g.in_h, g.in_w)
        ew = env[op.ew_input].reshape(1, g.out_c, g.out_h, g.out_w) if op.ew_input else None
        y = arith.conv_reference(x, op.weights, op.bias, op.requant, g, ew).astype(np.int64).reshape(-1)
        d = y - env[op.output].astype(np.int64).reshape(-1)
        if ew is not None:
            conv_out = next(c.qgraph.nodes[i].outputs[0] for i in op.nodes
                            if c.qgraph.nodes[i].op_type in ("Conv", "Gemm", "MatMul"))
            inter = env[conv_out].reshape(-1)
            saturated = (inter == -128) | (inter == 127)
            hist["saturated"] += int(saturated.sum())
            d = d[~saturated]
        hist.update(d.tolist())
    return hist


def _lsb(out, ref, scale) -> np.ndarray:
    return np.round((out - ref) / scale).astype(np.int64)


# ---- mnist-cnn ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    from opennpu.data import mnist5k
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    g = opennpu.load_model("mnist-cnn")
    images, labels = mnist5k()
    x = preprocess_mnist(images)
    c = compile_lowered(g, calibration=[{g.inputs[0]: x[i:i + 1]} for i in range(64)])
    program, path = _roundtrip(c, tmp_path_factory, "mnist")
    return g, c, program, path, x, labels  # all 5000 digits (MNIST-5k); the first 64 also calibrated


def test_mnist_emulator_equals_reference(mnist):
    g, c, program, _, x, _ = mnist
    dev = open_device(program, "emulator")
    k = g.outputs[0]
    scale = float(c.qgraph.tensor(c.qgraph.producers()[k].inputs[0]).quant.scale[0])
    lsb = []
    for i in range(40):
        feeds = {g.inputs[0]: x[i:i + 1]}
        out = dev.run(feeds)
        np.testing.assert_array_equal(out[k], run_reference(c.lowering, feeds)[k])
        lsb.append(_lsb(out[k], run_quantized(c.qgraph, feeds)[k], scale))
    _report("mnist-cnn", c, dev.runner.npu_seconds, 40)
    d = np.concatenate(lsb).reshape(-1)
    print(f"  logits NPU - TFLite int8 (LSB): {dict(sorted(Counter(d.tolist()).items()))}")
    assert np.abs(d).max() <= 3
    assert c.npu_mac_fraction > 0.99
    assert dev.runner.tasks_run == 40 * c.n_tasks


@pytest.mark.slow
def test_mnist5k_accuracy_emulator_equals_reference(mnist):
    """Issue "Spine 3/4": mnist-cnn accuracy on MNIST-5k through the emulator equals the integer reference's
    (and every logit agrees byte for byte on the way)."""
    g, c, program, _, x, labels = mnist
    dev = open_device(program, "emulator")
    k = g.outputs[0]
    pred_npu, pred_ref = [], []
    t0 = time.perf_counter()
    for i in range(len(x)):
        feeds = {g.inputs[0]: x[i:i + 1]}
        out = dev.run(feeds)[k]
        ref = run_reference(c.lowering, feeds)[k]
        np.testing.assert_array_equal(out, ref)
        pred_npu.append(int(out.argmax()))
        pred_ref.append(int(ref.argmax()))
    acc = [float(np.mean(np.array(p) == labels)) for p in (pred_npu, pred_ref)]
    print(f"\nmnist-cnn {len(x)} digits: accuracy emulator {acc[0]:.4f}, reference {acc[1]:.4f} "
          f"({time.perf_counter() - t0:.1f}s)")
    assert acc[0] == acc[1]
    assert acc[0] > 0.97


def test_mnist_program_file_and_manifest(mnist):
    g, c, program, path, x, _ = mnist
    m = program.manifest
    payload = m.target_payload
    # every CPU placement carries a reason; the slice's gaps are named as such
    for p in payload["placements"]:
        assert (p["device"] == "cpu") == bool(p["reason"]), p
    pools = [p for p in payload["placements"] if p["op_type"] == "MaxPool"]
    assert len(pools) == 2 and all(p["device"] == "npu" and p["lowering"].startswith("PPU max pool 2x2") for p in pools)
    pool_tasks = [t for t in m.tasks if t["kind"] == "pool"]
    assert len(pool_tasks) == 2 and all(t["weight_addr"] is None for t in pool_tasks)
    # explicit boundary conversions at every NPU/CPU boundary
    npu_segs = [s for s in payload["segments"] if s["device"] == "npu"]
    assert all(s["to_npu"] and s["to_cpu"] for s in npu_segs)
    assert all(s["to_npu"][0]["chw"] and s["to_npu"][0]["surf_stride"] % 16 == 0 for s in npu_segs)
    # jobs/tasks carry addresses and cores; blobs sit at their planned addresses
    assert len(m.tasks) == c.n_tasks and all(0 <= j["core"] < 3 for j in m.jobs)
    assert all(t["regcmd_addr"] % 64 == 0 for t in m.tasks)
    bufs = {b["name"]: b for b in m.memory_plan["buffers"]}
    assert all(bufs[j["regcmd_blob"]]["kind"] == "regcmd" for j in m.jobs)
    # runs from the file alone (path), and the "cpu" device reproduces the TFLite-semantics executor
    feeds = {g.inputs[0]: x[:1]}
    out = run_program(path, feeds)
    np.testing.assert_array_equal(out[g.outputs[0]], run_reference(c.lowering, feeds)[g.outputs[0]])
    cpu = run_program(program, feeds, device="cpu")
    np.testing.assert_array_equal(cpu[g.outputs[0]], run_quantized(c.qgraph, feeds)[g.outputs[0]])


def _corrupt(program, edit) -> bytes:
    p = load_program(program_to_bytes(program))
    edit(p.manifest)
    return program_to_bytes(p)


def test_malformed_rk3588_payloads_rejected(mnist):
    program = mnist[2]

    def job_unaligned(m):
        m.jobs[0]["regcmd_addr"] += 8

    def buffer_outside(m):
        m.memory_plan["buffers"][-1]["address"] = m.memory_plan["memory_size"]

    def wrong_target(m):
        m.target = "rk3568"

    def bad_rounding(m):
        m.target_payload["rounding"]["out_cvt"] = "stochastic"

    def orphan_job(m):
        next(s for s in m.target_payload["segments"] if s["device"] == "npu")["jobs"].pop()

    def bad_conversion(m):
        next(s for s in m.target_payload["segments"] if s["device"] == "npu")["to_npu"][0]["chw"] = [1, 99, 99]

    def huge_count(m):
        m.jobs[0]["regcmd_count"] = 10 ** 6

    for edit in (job_unaligned, buffer_outside, wrong_target, bad_rounding, orphan_job, bad_conversion, huge_count):
        with pytest.raises(ProgramFormatError):
            open_device(_corrupt(program, edit))
    # a regcmd chain pointing outside memory is a device error at run time, not a crash
    p = load_program(program_to_bytes(program))
    words = p.blobs[p.manifest.jobs[0]["regcmd_blob"]].copy()
    words[p.manifest.jobs[0]["regcmd_count"] - 4] = (0x0101 << 48) | (0xFFFFFFC0 << 16) | 0x0010
    p.blobs[p.manifest.jobs[0]["regcmd_blob"]] = words
    with pytest.raises((DeviceError, ProgramFormatError)):
        run_program(load_program(program_to_bytes(p)), {mnist[0].inputs[0]: mnist[4][:1]})


def test_devices():
    with pytest.raises(DeviceError, match="unknown device"):
        open_device(b"", "tpu")
    if not os.path.exists("/dev/accel/accel0"):
        from opennpu.runtime.devices import RocketDevice

        with pytest.raises(DeviceError, match="no /dev/accel/accel0"):
            RocketDevice(None)


def test_float_model_needs_calibration():
    g = opennpu.load_model("mnist-cnn")
    with pytest.raises(CompileError, match="calibration"):
        compile_model(g)
    with pytest.raises(CompileError, match="target"):
        compile_model(g, target="ethos-u")


def test_cli_compile_passes_quantizer_options(tmp_path, capsys):
    """``opennpu compile --equalize --refine --pin NODE=int16``: the options reach opennpu.quantize (the pinned
    Gemm is int16 and placed on the CPU with its reason, the rest stays on the NPU); bad pins are one-line
    errors, not tracebacks."""
    from opennpu.cli import main
    from opennpu.runtime.program import load_program

    out = tmp_path / "m.npu"
    assert main(["compile", "mnist-cnn", "-o", str(out), "--method", "percentile", "--equalize", "--refine",
                 "--weight-rounding", "nearest", "--pin", "classifier.2=int16"]) == 0
    printed = capsys.readouterr().out
    assert "cpu Gemm" in printed and "classifier.2" in printed and "int16" in printed
    placements = {p["node"]: p for p in load_program(out).manifest.target_payload["placements"]}
    assert placements["classifier.2"]["device"] == "cpu" and placements["features.3"]["device"] == "npu"
    assert main(["compile", "mnist-cnn", "-o", str(out), "--pin", "classifier.2"]) == 2
    assert main(["compile", "mnist-cnn", "-o", str(out), "--pin", "nosuch=int16"]) == 2
    err = capsys.readouterr().err
    assert "NODE=MODE" in err and "nosuch" in err and "Traceback" not in err
    with pytest.raises(CompileError, match="unknown quantization options"):
        compile_model(opennpu.load_model("mnist-cnn"), calibration="zoo", quant_options={"equalise": True})


# ---- a synthetic model exercising the lowering paths ---------------------------------------------------------------

def _synthetic() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("synthetic")
    g.add_tensor(Tensor("x", (1, 8, 160, 160), "float32"))
    g.inputs = ["x"]

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    def conv(x, y, cout, cin, k, group=1, stride=1, pad=0, dil=1, clip=None):
        attrs = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pad] * 4, "dilations": [dil] * 2,
                 "group": group}
        g.add_node("Conv", [x, g.add_const(y + ".w", w(cout, cin // group, k, k)),
                            g.add_const(y + ".b", (rng.standard_normal(cout) * 0.1).astype(np.float32))], [y], attrs,
                   name=y)
        if clip is not None:
            g.add_node("Clip", [y, g.add_const(y + ".lo", np.float32(clip[0])),
                                g.add_const(y + ".hi", np.float32(clip[1]))], [y + ".c"], name=y + ".clip")
            return y + ".c"
        return y

    a = conv("x", "a", 32, 8, 3, pad=1, clip=(0, 6))  # row-tiled: 160 rows of 32 channels exceed the CBUF
    b = conv(a, "b", 32, 32, 3, group=32, stride=2, pad=1, clip=(0, 6))  # depthwise stride 2
    c = conv(b, "c", 64, 32, 3, group=4, pad=2, dil=2)  # grouped + dilated
    d = conv(b, "d", 64, 32, 1)
    g.add_node("Add", [c, d], ["e"], name="e")  # fused into d (or c) via the EW stage
    f = conv("e", "f", 640, 64, 3, stride=2, pad=1)  # 640 kernels x 576 bytes: output-channel groups
    g.add_node("GlobalAveragePool", [f], ["gap"], name="gap")
    g.add_node("Flatten", ["gap"], ["flat"], {"axis": 1}, name="flat")
    fc_w = g.add_const("fc.w", w(10, 640).T.copy())  # (K, N): transB=0
    g.add_node("Gemm", ["flat", fc_w, g.add_const("fc.b", np.zeros(10, np.float32))], ["y"], {"transB": 0}, name="fc")
    g.outputs = ["y"]
    return canonicalize(g)


def test_synthetic_lowering_paths():
    g = _synthetic()
    rng = np.random.default_rng(1)
    cal = [{"x": rng.standard_normal((1, 8, 160, 160)).astype(np.float32)} for _ in range(3)]
    c = compile_lowered(g, calibration=cal)
    ops = {o.name: o for o in c.lowering.conv_ops()}
    assert len(ops["a"].plan.tasks) > 1, "input rows should not fit the CBUF in one task"
    assert len(ops["f"].plan.groups) > 1, "weights should be split into output-channel groups"
    assert any(o.ew_input is not None for o in ops.values()), "the Add should be fused"
    assert ops["b"].geometry.depthwise
    dec = {d.name: d for d in c.lowering.decisions}
    assert dec["gap"].device == "npu" and dec["gap"].unit == "PPU"  # 40x40: beyond one PPU window
    assert "as 2 stages of non-overlapping windows 8x8 then 5x5" in dec["gap"].lowering
    assert dec["fc"].device == "npu"
    program = load_program(program_to_bytes(c.program))
    feeds = {"x": rng.standard_normal((1, 8, 160, 160)).astype(np.float32)}
    out = run_program(program, feeds)
    ref = run_reference(c.lowering, feeds)
    np.testing.assert_array_equal(out["y"], ref["y"])
    hist = _per_op_deviation(c, feeds)
    sat = hist.pop("saturated")
    n = sum(hist.values())
    print(f"\nsynthetic: per-op NPU - TFLite int8 (LSB): {dict(sorted(hist.items()))}; {c.n_tasks} tasks; "
          f"{sat} fused-Add positions where TFLite's int8 conv intermediate saturated")
    assert max(abs(k) for k in hist) <= 4 and (n - hist[0]) / n < 0.05 and sat / n < 0.01


# ---- mobilenetv2 -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    from opennpu.data.augment import imagenet_calibration_set, imagenet_eval_set

    g = opennpu.load_model("mobilenetv2")
    c = compile_lowered(g, calibration=[{g.inputs[0]: x} for x in imagenet_calibration_set(4)])
    program, _ = _roundtrip(c, tmp_path_factory, "mobilenetv2")
    return g, c, program, imagenet_eval_set(2)


def test_mobilenetv2_emulator_equals_reference(mobilenet):
    g, c, program, images = mobilenet
    dev = open_device(program)
    k = g.outputs[0]
    scale = float(c.qgraph.tensor(c.qgraph.producers()[k].inputs[0]).quant.scale[0])
    lsb, top = [], []
    for x in images:
        feeds = {g.inputs[0]: x}
        out = dev.run(feeds)[k]
        np.testing.assert_array_equal(out, run_reference(c.lowering, feeds)[k])
        tfl = run_quantized(c.qgraph, feeds)[k]
        lsb.append(_lsb(out, tfl, scale))
        top.append(int(tfl.argmax()) in np.argsort(out.reshape(-1))[-5:])
    _report("mobilenetv2", c, dev.runner.npu_seconds, len(images))
    hist = _per_op_deviation(c, {g.inputs[0]: images[0]})
    sat = hist.pop("saturated")
    n = sum(hist.values())
    d = np.concatenate(lsb).reshape(-1)
    print(f"  per op (each fed TFLite's inputs), NPU - TFLite int8 (LSB): {dict(sorted(hist.items()))} "
          f"({(n - hist[0]) / n:.2%} differ; {sat} fused-Add positions with a saturated int8 intermediate left out)")
    print(f"  end to end, logits NPU - TFLite int8 (LSB): p50 |d| {np.median(np.abs(d)):.0f}, p99 "
          f"{np.percentile(np.abs(d), 99):.0f}, max {np.abs(d).max()}")
    assert c.npu_mac_fraction >= 0.99
    assert max(abs(v) for v in hist) <= 4 and (n - hist[0]) / n < 0.05 and sat / n < 0.01
    assert all(top)
