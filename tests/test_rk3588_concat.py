"""RK3588 Concat by output addressing (lower.py ``ConcatOp``): a channel-axis Concat costs no task, the conv op
producing each leg writes it at the leg's channel groups of the concat's NC1HWC2 buffer.

Oracle: the whole-model integer reference (targets/rk3588/reference.py), which runs every Concat at IR level
through the integer executor on NCHW tensors and knows nothing of buffers, offsets or strides; the emulator runs
the program's register streams. Byte equality of the two therefore checks the addresses the DPU writes to, the
conversions at offsets and the memory plan's lifetimes. Where the arithmetic is the same (data movement of a
leg copied from the CPU) the result is also compared with the integer executor (TFLite int8 semantics).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import opennpu
from opennpu.ir.graph import Graph, Tensor
from opennpu.ir.passes import canonicalize
from opennpu.quant.executor import run_quantized
from opennpu.runtime.devices import run_program
from opennpu.runtime.program import load_program, program_to_bytes
from opennpu.targets.rk3588.compiler import compile_lowered
from opennpu.targets.rk3588.lower import ConcatOp, ConvOp
from opennpu.targets.rk3588.reference import run_reference

HW = 12


class _Net:
    """A small float graph built conv by conv (3x3, pad 1, random weights) over inputs (1, cin, hw, hw)."""

    def __init__(self, cin: int = 8, seed: int = 0, inputs: tuple[str, ...] = ("x",), hw: int = HW) -> None:
        self.rng = np.random.default_rng(seed)
        self.g = Graph("concat")
        self.cin, self.hw = cin, hw
        for name in inputs:
            self.g.add_tensor(Tensor(name, (1, cin, hw, hw), "float32"))
        self.g.inputs = list(inputs)

    def conv(self, x: str, name: str, cout: int, cin: int, k: int = 3) -> str:
        w = (self.rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        self.g.add_node("Conv", [x, self.g.add_const(name + ".w", w), self.g.add_const(name + ".b", b)], [name],
                        {"kernel_shape": [k, k], "pads": [k // 2] * 4}, name=name)
        return name

    def concat(self, legs: list[str], name: str) -> str:
        self.g.add_node("Concat", legs, [name], {"axis": 1}, name=name)
        return name

    def quantized(self, outputs: list[str]) -> Graph:
        self.g.outputs = outputs
        g = canonicalize(self.g)
        return opennpu.quantize(g, [self.feeds() for _ in range(2)], progress=False)

    def feeds(self) -> dict[str, np.ndarray]:
        return {x: self.rng.standard_normal((1, self.cin, self.hw, self.hw)).astype(np.float32) for x in self.g.inputs}


def _compile_and_check(q: Graph, feeds: dict[str, np.ndarray]):
    """Compile, run the .npu program on the emulator, assert byte equality with the integer reference."""
    c = compile_lowered(q)
    out = run_program(load_program(program_to_bytes(c.program)), feeds)
    ref = run_reference(c.lowering, feeds)
    assert out.keys() == ref.keys()
    for k in out:
        np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    return c, out


def _decision(c, name: str):
    return next(d for d in c.lowering.decisions if d.name == name)


def _check_addressing(c) -> None:
    """Every conv writing a leg targets base + first group * surface stride of the concat buffer, with the
    buffer's surface stride; the concat buffer lives from its first leg's write to its last reader."""
    low, mem = c.lowering, c.memory
    tasks = c.program.manifest.tasks
    for op in low.concat_ops():
        buf = low.buffers[low.views[op.output]]
        base = mem.address(f"act/{buf.name}")
        assert all(low.views[leg] == buf.name for leg in op.legs)
        writers = [o for o in low.conv_ops() if o.output in op.legs]
        for w in writers:
            g0 = op.group_offsets[op.legs.index(w.output)]
            for t in (t for t in tasks if t["op"] == w.name):
                oc0 = t["oc_range"][0]
                row0 = t["out_rows"][0]
                assert t["output_addr"] == base + (g0 + oc0 // 16) * buf.surf_stride + row0 * w.geometry.out_w * 16
            assert buf.first_use <= w.step
        readers = [o for o in low.ops.values() if isinstance(o, ConvOp)
                   and ({o.input, o.ew_input} & {op.output, *op.legs})]
        assert all(buf.last_use >= r.step for r in readers)
        assert buf.last_use >= op.step
        assert not any(t["op"] == op.name for t in tasks), "a concat must cost no task"


def test_two_convs_concatenated_as_graph_output():
    n = _Net()
    a, b = n.conv("x", "a", 16, 8), n.conv("x", "b", 16, 8)
    q = n.quantized([n.concat([a, b], "cat")])
    c, _ = _compile_and_check(q, n.feeds())
    d = _decision(c, "cat")
    assert d.device == "npu" and "output addressing" in d.lowering
    (op,) = c.lowering.concat_ops()
    assert op.group_offsets == [0, 1] and not op.copied
    _check_addressing(c)
    # the concat is read back whole by one to_cpu conversion at the buffer base
    (back,) = [x for s in c.lowering.segments for x in s.to_cpu if x.tensor == op.output]
    assert back.buffer == c.lowering.views[op.output] and back.group_offset == 0


def test_three_convs_16_32_48_feed_a_conv():
    n = _Net()
    legs = [n.conv("x", "a", 16, 8), n.conv("x", "b", 32, 8), n.conv("x", "c", 48, 8)]
    cat = n.concat(legs, "cat")
    q = n.quantized([n.conv(cat, "d", 16, 96)])
    c, _ = _compile_and_check(q, n.feeds())
    (op,) = c.lowering.concat_ops()
    assert op.group_offsets == [0, 1, 3]
    _check_addressing(c)
    # no boundary conversion around the concat: the legs never leave NPU memory
    crossing = {x.tensor for s in c.lowering.segments for x in s.to_cpu + s.to_npu}
    assert not crossing & {"a", "b", "c", "cat"}
    # the leg writers declare disjoint parts of the buffer (no fence between them); the reader waits for all
    jobs = c.program.manifest.jobs
    by_op = {j["op"]: j for j in jobs}
    legs_jobs = {by_op[x]["id"] for x in ("a", "b", "c")}
    assert all(not set(by_op[x]["deps"]) & legs_jobs for x in ("a", "b", "c"))
    assert legs_jobs <= set(by_op["d"]["deps"])


def test_leg_also_feeds_another_conv_and_a_graph_output():
    n = _Net()
    a, b = n.conv("x", "a", 16, 8), n.conv("x", "b", 32, 8)
    cat = n.concat([a, b], "cat")
    d = n.conv(cat, "d", 16, 48)
    e = n.conv(b, "e", 16, 32)  # reads leg b at its offset (group 1) of the concat buffer
    q = n.quantized([d, e, b])
    c, out = _compile_and_check(q, n.feeds())
    assert _decision(c, "cat").device == "npu"
    _check_addressing(c)
    low = c.lowering
    (op,) = low.concat_ops()
    bq = op.legs[1]  # "b.int8": b is also a graph output (computed in integers, then dequantized)
    assert low.views[bq] == low.views[op.output] and low.offsets[bq] == 1
    # e's CNA reads b at the concat buffer base + 1 surface
    buf = low.buffers[low.views[op.output]]
    e_tasks = [t for t in c.program.manifest.tasks if t["op"] == "e"]
    assert e_tasks[0]["input_addr"] == c.memory.address(f"act/{buf.name}") + buf.surf_stride
    # b leaves the NPU through a to_cpu conversion at its offset
    (bk,) = [x for s in low.segments for x in s.to_cpu if x.tensor == bq]
    assert bk.group_offset == 1
    seg = next(s for s in c.program.manifest.target_payload["segments"] if s["device"] == "npu")
    spec = next(x for x in seg["to_cpu"] if x["tensor"] == bk.tensor)
    assert spec["address"] == c.memory.address(f"act/{buf.name}") + buf.surf_stride


def test_fused_add_leg_reading_another_leg():
    """A leg written by a conv with a fused Add (DPU EW stage) whose second operand is another leg of the same
    concat, read at its channel-group offset (C2f-like: cat(a, b, conv(a) + b))."""
    n = _Net()
    a, b = n.conv("x", "a", 16, 8), n.conv("x", "b", 16, 8)
    n.g.add_node("Add", [n.conv(a, "m", 16, 16), b], ["r"], name="r")
    cat = n.concat([a, b, "r"], "cat")
    q = n.quantized([n.conv(cat, "d", 16, 48)])
    c, _ = _compile_and_check(q, n.feeds())
    low = c.lowering
    (op,) = low.concat_ops()
    assert op.group_offsets == [0, 1, 2]
    m = next(o for o in low.conv_ops() if o.name == "m")
    assert m.ew_input == b and m.output == "r", "the Add should be fused into m, writing leg r"
    buf = low.buffers[low.views[cat]]
    (t,) = [t for t in c.program.manifest.tasks if t["op"] == "m"]
    base = c.memory.address(f"act/{buf.name}")
    assert (t["input_addr"], t["ew_addr"], t["output_addr"]) == (base, base + buf.surf_stride,
                                                                 base + 2 * buf.surf_stride)
    _check_addressing(c)


def test_short_last_leg_is_addressed():
    """64 + 18 channels (yolov8's detection head): only the last leg may end inside a channel group."""
    n = _Net()
    a, b = n.conv("x", "a", 64, 8), n.conv("x", "b", 18, 8)
    cat = n.concat([a, b], "cat")
    q = n.quantized([n.conv(cat, "d", 16, 82), cat])
    c, _ = _compile_and_check(q, n.feeds())
    (op,) = c.lowering.concat_ops()
    assert op.group_offsets == [0, 4]
    _check_addressing(c)


def test_tiled_leg_writers_address_rows_and_channel_groups():
    """Legs whose conv is split into row tasks (input rows exceed the CBUF) and into output-channel groups
    (weights exceed it): every task writes at base + (leg group + task group) * surface + row * line."""
    n = _Net(cin=16, hw=112)
    a = n.conv("x", "a", 16, 16, k=1)
    q = n.quantized([n.concat([a, n.conv("x", "b", 32, 16, k=1)], "cat")])
    c, _ = _compile_and_check(q, n.feeds())
    assert len(next(o for o in c.lowering.conv_ops() if o.name == "a").plan.tasks) > 1, "a should be row-tiled"
    _check_addressing(c)
    n = _Net(cin=64, hw=6)
    q = n.quantized([n.concat([n.conv("x", "a", 48, 64), n.conv("x", "b", 640, 64, k=3)], "cat")])
    c, _ = _compile_and_check(q, n.feeds())
    assert len(next(o for o in c.lowering.conv_ops() if o.name == "b").plan.groups) > 1, "b should be split"
    _check_addressing(c)


def test_leg_not_a_multiple_of_16_falls_back_with_its_reason():
    n = _Net()
    a, b = n.conv("x", "a", 24, 8), n.conv("x", "b", 16, 8)
    cat = n.concat([a, b], "cat")
    q = n.quantized([n.conv(cat, "d", 16, 40)])
    c, _ = _compile_and_check(q, n.feeds())
    d = _decision(c, "cat")
    assert d.device == "cpu" and "Concat leg 0 has 24 channels, not a multiple of 16" in d.reason
    assert not c.lowering.concat_ops()


def test_graph_input_leg_is_copied_into_its_slice():
    """A leg produced on the CPU (here the quantized graph input) is written into its slice by its to_npu
    conversion; the conv reading the same tensor reads it there too."""
    n = _Net(cin=16)
    a = n.conv("x", "a", 16, 16)
    cat = n.concat([a, "x"], "cat")
    q = n.quantized([n.conv(cat, "d", 16, 32), cat])
    feeds = n.feeds()
    c, out = _compile_and_check(q, feeds)
    (op,) = c.lowering.concat_ops()
    xq = op.legs[1]
    assert op.copied == [xq] and op.group_offsets == [0, 1]
    (conv,) = [x for s in c.lowering.segments for x in s.to_npu]
    assert conv.tensor == xq and conv.group_offset == 1 and conv.buffer == c.lowering.views[op.output]
    assert "written into their slices by their to_npu conversion" in _decision(c, "cat").lowering
    _check_addressing(c)
    # the copied slice is pure data movement: equal to the integer executor (TFLite semantics) byte for byte
    tfl = run_quantized(q, feeds)
    cat_out = next(k for k in out if k.startswith("cat"))
    np.testing.assert_array_equal(out[cat_out][:, 16:], tfl[cat_out][:, 16:])


def test_cpu_legs_fall_back_when_addressing_saves_nothing():
    n = _Net(cin=16, inputs=("x", "x2"))
    a = n.conv("x", "a", 16, 16)
    twice = n.concat(["x", "x"], "twice")  # a tensor has one address
    only_cpu = n.concat(["x", "x2"], "only_cpu")  # no leg written by an NPU op
    to_cpu = n.concat([a, "x2"], "cat")  # a CPU leg, and only the graph output reads the concat
    q = n.quantized([n.conv(twice, "d1", 16, 32), n.conv(only_cpu, "d2", 16, 32), to_cpu])
    c, _ = _compile_and_check(q, n.feeds())
    reasons = {k: _decision(c, k).reason or "" for k in ("twice", "only_cpu", "cat")}
    assert all(_decision(c, k).device == "cpu" for k in reasons)
    assert "is listed twice (a tensor has one address)" in reasons["twice"]
    assert "no leg is written by an NPU op" in reasons["only_cpu"]
    assert "every consumer of the output is on the CPU" in reasons["cat"]
    assert not c.lowering.concat_ops()


def test_tensor_feeding_two_concats_falls_back_for_the_second():
    n = _Net()
    a, b, e = n.conv("x", "a", 16, 8), n.conv("x", "b", 16, 8), n.conv("x", "e", 16, 8)
    c1, c2 = n.concat([a, b], "cat1"), n.concat([a, e], "cat2")
    q = n.quantized([n.conv(c1, "d1", 16, 32), n.conv(c2, "d2", 16, 32)])
    c, _ = _compile_and_check(q, n.feeds())
    assert _decision(c, "cat1").device == "npu"
    d = _decision(c, "cat2")
    assert d.device == "cpu" and "already lives in the buffer of concat 'cat1'" in d.reason
    _check_addressing(c)


def test_leg_quantized_differently_falls_back():
    """The quantizer shares one scale between a Concat's legs and output; a graph that does not keeps the Concat
    on the CPU (addressing cannot requantize), with the reason, and still runs exactly."""
    n = _Net()
    a, b = n.conv("x", "a", 16, 8), n.conv("x", "b", 16, 8)
    cat = n.concat([a, b], "cat")
    q = n.quantized([n.conv(cat, "d", 16, 32)])
    t = q.tensor("a")
    q.tensors["a"] = replace(t, quant=replace(t.quant, scale=np.asarray(t.quant.scale) * 2))
    c, _ = _compile_and_check(q, n.feeds())
    d = _decision(c, "cat")
    assert d.device == "cpu" and "addressing needs one quantization" in d.reason


def _channel_concat_of_conv_legs(c) -> list[str]:
    """Concats the brief expects on the NPU, found from the graph and the conv ops alone: channel axis of 4-D
    maps, every leg the output of a lowered conv op, every leg but the last a multiple of 16 channels, each leg in
    one concat only."""
    q, low = c.qgraph, c.lowering
    conv_out = {o.output for o in low.conv_ops()}
    cats = [n for n in q.nodes if n.op_type == "Concat"]
    uses: dict[str, int] = {}
    for n in cats:
        for t in n.inputs:
            uses[t] = uses.get(t, 0) + 1
    out = []
    for n in cats:
        shapes = [q.tensor(t).shape for t in n.inputs]
        if len(q.tensor(n.outputs[0]).shape) != 4 or int(n.attrs.get("axis", 0)) % 4 != 1:
            continue
        if all(t in conv_out and uses[t] == 1 for t in n.inputs) and all(s[1] % 16 == 0 for s in shapes[:-1]):
            out.append(n.name)
    return out


def test_yolov8n_end_to_end():
    g = opennpu.load_model("yolov8n")
    name = g.inputs[0]
    assert tuple(g.tensor(name).shape) == (1, 3, 320, 320)
    rng = np.random.default_rng(0)
    cal = [{name: rng.uniform(0, 1, (1, 3, 320, 320)).astype(np.float32)} for _ in range(2)]
    q = opennpu.quantize(g, cal, weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12, progress=False)
    feeds = {name: rng.uniform(0, 1, (1, 3, 320, 320)).astype(np.float32)}
    c, _ = _compile_and_check(q, feeds)
    cats = [d for d in c.lowering.decisions if d.op_type == "Concat"]
    on_npu = [d.name for d in cats if d.device == "npu"]
    print(f"\nyolov8n: {len(on_npu)} of {len(cats)} Concats addressed on the NPU, {len(cats) - len(on_npu)} on the "
          f"CPU; {c.n_tasks} tasks")
    for d in cats:
        print(f"  {d.name}: {d.device} -- {d.lowering if d.device == 'npu' else d.reason}")
    expected = _channel_concat_of_conv_legs(c)
    assert expected, "yolov8n's detection head concatenates two conv outputs per scale"
    assert set(expected) <= set(on_npu)
    assert all(d.reason for d in cats if d.device == "cpu")
    _check_addressing(c)


@pytest.mark.parametrize("model", ["ppocrv5-det", "blazeface"])
def test_zoo_concats_lower_or_say_why(model):
    """Lowering only (no emulation): every Concat is addressed or carries a reason."""
    from opennpu.targets.rk3588.lower import lower
    from opennpu.targets.rk3588.partition import partition

    g = opennpu.load_model(model)
    name = g.inputs[0]
    shape = tuple(g.tensor(name).shape)
    rng = np.random.default_rng(0)
    q = opennpu.quantize(g, [{name: rng.uniform(0, 1, shape).astype(np.float32)}], weight_rounding="nearest",
                         min_channel_scale_ratio=2.0 ** -12, progress=False)
    low = lower(q, partition(q))
    cats = [d for d in low.decisions if d.op_type == "Concat"]
    print(f"\n{model}: {sum(d.device == 'npu' for d in cats)} of {len(cats)} Concats addressed")
    for d in cats:
        print(f"  {d.name}: {d.device} -- {d.lowering if d.device == 'npu' else d.reason}")
    assert all(d.reason for d in cats if d.device == "cpu")
    assert all(isinstance(low.ops[d.op], ConcatOp) for d in cats if d.device == "npu")


def test_cost_and_report_count_the_concat_as_free():
    from opennpu.report.collect import report_from_compiled, report_from_program, validate
    from opennpu.targets.rk3588 import cost

    n = _Net()
    legs = [n.conv("x", "a", 16, 8), n.conv("x", "b", 32, 8)]
    q = n.quantized([n.conv(n.concat(legs, "cat"), "d", 16, 48)])
    c = compile_lowered(q)
    est = {o.name: o for o in cost.estimate(c).ops}
    assert est["cat"].placement == "npu" and est["cat"].latency_us == 0.0 and est["cat"].tasks == 0
    for rep in (report_from_compiled(c, "concat"), report_from_program(load_program(program_to_bytes(c.program)),
                                                                         "concat")):
        assert validate(rep) == []
        (op,) = [o for o in rep["ops"] if o["name"] == "cat"]
        assert op["placement"] == "npu" and op["tasks"] == 0 and op["latency_us"] == 0.0
    ops = {o["name"]: o for o in c.program.manifest.target_payload["ops"]}
    assert ops["cat"]["kind"] == "concat" and ops["cat"]["group_offsets"] == [0, 1]
