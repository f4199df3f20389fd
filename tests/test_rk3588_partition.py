"""RK3588 capability table and NPU/CPU partitioner: crafted limit violations and real zoo graphs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from opennpu.frontends import load_model
from opennpu.ir.graph import Graph, QuantInfo, Tensor
from opennpu.ir.passes import Limits, infer_shapes
from opennpu.targets.rk3588.capabilities import CAPABILITIES, LIMITS, capability_table_markdown, check_node, ppu_stages
from opennpu.targets.rk3588.partition import PartitionPlan, partition

ZOO = ["efficientnet-lite0", "mobilenetv2", "mnist-cnn", "blazeface", "selfie-segmentation", "yolov8n",
       "ppocrv5-det", "ppocrv5-rec", "minilm-l6"]


# ---- helpers -------------------------------------------------------------------------------------------

def _graph(x_shape: tuple[int, ...], dtype: str = "float32") -> Graph:
    g = Graph("t")
    g.add_tensor(Tensor("x", x_shape, dtype))
    g.inputs = ["x"]
    return g


def _finish(g: Graph, out: str) -> Graph:
    g.outputs = [out]
    infer_shapes(g, Limits())
    return g


def _conv_graph(x_shape, cout, k, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1) -> Graph:
    g = _graph(x_shape)
    w = np.zeros((cout, x_shape[1] // group, k, k), np.float32)
    g.add_node("Conv", ["x", g.add_const("w", w)], ["y"],
               {"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group})
    return _finish(g, "y")


def _place(g: Graph, idx: int = -1):
    return check_node(g, g.nodes[idx])


def _cpu_reason(g: Graph, idx: int = -1) -> str:
    p = _place(g, idx)
    assert p.device == "cpu", p
    assert p.reason
    return p.reason


def _fingerprint(g: Graph) -> object:
    return (
        [(n.op_type, tuple(n.inputs), tuple(n.outputs), repr(sorted(n.attrs.items())), n.name) for n in g.nodes],
        {k: (t.shape, t.dtype, None if t.data is None else t.data.tobytes()) for k, t in g.tensors.items()},
        list(g.inputs), list(g.outputs), repr(g.metadata))


def _check_plan_structure(g: Graph, plan: PartitionPlan) -> None:
    covered = [i for s in plan.segments for i in s.nodes]
    assert sorted(covered) == list(range(len(g.nodes))), "segments must cover every node exactly once"
    order = {i: pos for pos, i in enumerate(covered)}
    producer = {o: i for i, n in enumerate(g.nodes) for o in n.outputs if o}
    seg_of = plan.segment_of()
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            if t in producer:
                assert order[producer[t]] < order[i], f"{n.name} runs before the producer of {t}"
                assert seg_of[producer[t]] <= seg_of[i]
    for s in plan.segments:
        assert len({plan.nodes[i].device for i in s.nodes}) == 1
        assert all(d < s.id for d in s.depends_on)
        assert s.macs == sum(plan.nodes[i].macs for i in s.nodes)
    for a, b in zip(plan.segments, plan.segments[1:], strict=False):
        assert a.device != b.device, "consecutive segments on one device should have been merged"
    # every cross-device tensor has a conversion
    dev = [n.device for n in plan.nodes]
    conv = {(c.tensor, d) for c in plan.conversions for d in c.dst}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            if not t or g.tensors[t].is_const:
                continue
            src = dev[producer[t]] if t in producer else "cpu"
            if src != dev[i]:
                assert (t, seg_of[i]) in conv, f"no conversion for {t} into segment {seg_of[i]}"
    for c in plan.conversions:
        assert {c.layout_from, c.layout_to} & {"NC1HWC2"}
    for n in plan.nodes:
        if n.device == "cpu":
            assert n.placement.reason and n.op_type in n.placement.reason.split(" ")[0] + n.placement.reason
    npu = sum(n.macs for n in plan.nodes if n.device == "npu")
    assert plan.npu_macs == npu and plan.total_macs == sum(n.macs for n in plan.nodes)


# ---- crafted limit violations -----------------------------------------------------------------------

def test_conv_within_limits_goes_to_npu():
    p = _place(_conv_graph((1, 16, 32, 32), 32, 3, pads=(1, 1, 1, 1)))
    assert p.device == "npu" and p.assumed_dtype == "int8" and p.reason is None
    dw = _place(_conv_graph((1, 32, 16, 16), 32, 3, pads=(1, 1, 1, 1), group=32))
    assert dw.device == "npu" and "depthwise" in dw.lowering


def test_conv_stride_limit():
    r = _cpu_reason(_conv_graph((1, 8, 64, 64), 8, 8, strides=(8, 8)))
    assert "Conv stride 8 > 7" in r and "CONV_CON3" in r and "3 bits" in r
    assert _place(_conv_graph((1, 8, 64, 64), 8, 7, strides=(7, 7))).device == "npu"


def test_conv_pad_limit():
    r = _cpu_reason(_conv_graph((1, 8, 16, 16), 8, 3, pads=(16, 0, 0, 0)))
    assert "Conv pad 16 > 15" in r and "PAD_CON0" in r and "4 bits" in r


def test_conv_kernel_and_dilation_limits():
    r = _cpu_reason(_conv_graph((1, 1, 40, 40), 1, 32))
    assert "Conv kernel 32x32 > 31" in r and "WEIGHT_SIZE2" in r
    r = _cpu_reason(_conv_graph((1, 1, 40, 40), 1, 3, dil=(16, 16)))
    assert "dilated kernel 33x33 > 31" in r
    p = _place(_conv_graph((1, 4, 40, 40), 4, 3, dil=(2, 2)))
    assert p.device == "npu" and any("zero-inserted" in n for n in p.notes)


def test_spatial_limit():
    r = _cpu_reason(_conv_graph((1, 1, 1, 2048), 1, 1))
    assert "Conv input width 2048 > 2047" in r and "11 bits" in r


def test_channel_limits():
    r = _cpu_reason(_conv_graph((1, 16385, 1, 1), 1, 1))
    assert "input channels 16385 > 16384" in r and "14 bits" in r
    p = _place(_conv_graph((1, 8, 1, 1), 9000, 1))
    assert p.device == "npu" and any("split into 2 output-channel tasks" in n for n in p.notes)


def test_cbuf_limit():
    # a 3-row band of a 2000-wide, 512-channel map overflows the CBUF: the planner splits it into column windows
    p = _place(_conv_graph((1, 512, 4, 2000), 1, 3))
    assert p.device == "npu"
    # one kernel of 7x7x8192 int8 weights (401 KB) fits the 19-bit kernel-size field but no CBUF weight split
    r = _cpu_reason(_conv_graph((1, 8192, 8, 8), 1, 7))
    assert "cannot be tiled for the CBUF" in r and "CBUF weight banks" in r


def test_grouped_conv_is_block_diagonal():
    p = _place(_conv_graph((1, 32, 8, 8), 32, 3, pads=(1, 1, 1, 1), group=4))
    assert p.device == "npu" and "block-diagonal" in p.lowering and any("4x" in n for n in p.notes)


def test_int16_dtype_goes_to_cpu():
    g = _graph((1, 8, 8, 8), "int16")
    g.tensors["x"].quant = QuantInfo(np.array(0.01), np.array(0))
    w = g.add_const("w", np.zeros((8, 8, 1, 1), np.int8), QuantInfo(np.array(0.01), np.array(0)))
    g.add_node("Conv", ["x", w], ["y"], {})
    g.tensors["y"] = Tensor("y", (1, 8, 8, 8), "int16", quant=QuantInfo(np.array(0.01), np.array(0)))
    g.outputs = ["y"]
    r = _cpu_reason(g)
    assert "dtype int16 not supported on the NPU path" in r
    assert _place(g).assumed_dtype is None


def test_ops_without_lowering():
    g = _graph((1, 10))
    g.add_node("Softmax", ["x"], ["y"], {"axis": -1})
    assert _cpu_reason(_finish(g, "y")).startswith("op Softmax has no NPU lowering")
    g = _graph((1, 4, 8, 8))
    g.add_node("Resize", ["x", "", g.add_const("s", np.array([1, 1, 2, 2], np.float32))], ["y"], {"mode": "nearest"})
    assert "op Resize has no NPU lowering" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 4))
    g.add_node("Cos", ["x"], ["y"])
    assert _cpu_reason(_finish(g, "y")) == "op Cos has no NPU lowering"


def test_matmul_constant_vs_dynamic_b():
    g = _graph((1, 128, 384))
    g.add_node("MatMul", ["x", g.add_const("w", np.zeros((384, 1000), np.float32))], ["y"])
    p = _place(_finish(g, "y"))
    assert p.device == "npu" and "1x1 conv" in p.lowering and any("1024" in n for n in p.notes)
    g = _graph((1, 12, 128, 32))
    g.add_tensor(Tensor("k", (1, 12, 32, 128), "float32"))
    g.inputs.append("k")
    g.add_node("MatMul", ["x", "k"], ["y"])
    r = _cpu_reason(_finish(g, "y"))
    assert "MatMul of two activations" in r and "weight layout" in r


def test_pooling_limits():
    g = _graph((1, 8, 32, 32))
    g.add_node("MaxPool", ["x"], ["y"], {"kernel_shape": [9, 9], "strides": [1, 1]})
    assert "MaxPool pool kernel 9x9 > 8" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 8, 32, 32))
    g.add_node("MaxPool", ["x"], ["y"], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    assert _place(_finish(g, "y")).unit == "PPU"
    g = _graph((1, 8, 32, 32))
    g.add_node("AveragePool", ["x"], ["y"], {"kernel_shape": [9, 9], "strides": [1, 1]})
    p = _place(_finish(g, "y"))
    assert p.device == "npu" and "depthwise 9x9" in p.lowering
    g = _graph((1, 8, 80, 80))
    g.add_node("GlobalAveragePool", ["x"], ["y"])
    p = _place(_finish(g, "y"))
    assert p.device == "npu" and p.unit == "PPU" and "8x8 then 5x5 then 2x2" in p.lowering
    g = _graph((1, 8, 37, 37))
    g.add_node("GlobalAveragePool", ["x"], ["y"])
    assert "window 37x37 exceeds the PPU" in _cpu_reason(_finish(g, "y"))
    assert ppu_stages((64, 64)) == [(8, 8), (8, 8)] and ppu_stages((11, 1)) is None


def test_concat_split_and_layout():
    g = _graph((1, 24, 8, 8))
    g.add_tensor(Tensor("x2", (1, 24, 8, 8), "float32"))
    g.inputs.append("x2")
    g.add_node("Concat", ["x", "x2"], ["y"], {"axis": 1})
    r = _cpu_reason(_finish(g, "y"))
    assert "Concat leg 0 has 24 channels, not a multiple of 16" in r
    g = _graph((1, 32, 8, 8))
    g.add_node("Split", ["x", g.add_const("s", np.array([16, 16]))], ["a", "b"], {"axis": 1})
    g.add_node("Concat", ["a", "b"], ["y"], {"axis": 1})
    g = _finish(g, "y")
    assert _place(g, 0).free and _place(g, 1).free
    g = _graph((1, 32, 8, 8))
    g.add_node("Transpose", ["x"], ["y"], {"perm": [0, 2, 1, 3]})
    assert "moves data across the channel axis" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 64, 7, 7))
    g.add_node("Flatten", ["x"], ["f"], {"axis": 1})
    g.add_node("Gemm", ["f", g.add_const("w", np.zeros((10, 3136), np.float32))], ["y"], {"transB": 1})
    g = _finish(g, "y")
    assert _place(g, 0).device == "npu" and "7x7 conv" in _place(g, 0).lowering


def test_pad_limits():
    g = _graph((1, 8, 8, 8))
    g.add_node("Pad", ["x", g.add_const("p", np.array([0, 0, 20, 0, 0, 0, 0, 0]))], ["y"], {"mode": "constant"})
    assert "Pad pad 20 > 15" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 8, 8, 8))
    g.add_node("Pad", ["x", g.add_const("p", np.array([0, 0, 1, 1, 0, 0, 1, 1]))], ["y"], {"mode": "reflect"})
    assert "Pad mode 'reflect'" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 24, 8, 8))
    g.add_node("Pad", ["x", g.add_const("p", np.array([0, 0, 0, 0, 0, 4, 0, 0]))], ["y"], {"mode": "constant"})
    assert _place(_finish(g, "y")).device == "npu"


def test_elementwise_rules():
    g = _graph((1, 16, 8, 8))
    g.add_tensor(Tensor("v", (1, 16, 1, 1), "float32"))
    g.inputs.append("v")
    g.add_node("Mul", ["x", "v"], ["y"])
    assert "depthwise 1x1 conv" in _place(_finish(g, "y")).lowering
    g = _graph((1, 16, 8, 8))
    g.add_tensor(Tensor("v", (1, 16, 1, 1), "float32"))
    g.inputs.append("v")
    g.add_node("Add", ["x", "v"], ["y"])
    assert "Add broadcasts dynamic operands" in _cpu_reason(_finish(g, "y"))
    g = _graph((1, 16, 8, 8))
    g.add_tensor(Tensor("v", (1, 16, 8, 8), "float32"))
    g.inputs.append("v")
    g.add_node("Sub", ["x", "v"], ["y"])
    assert "Sub of a dynamic operand" in _cpu_reason(_finish(g, "y"))


def test_table_is_documented():
    md = capability_table_markdown()
    for cap in CAPABILITIES:
        assert cap.ref and cap.tag in ("R", "3P", "I")
        assert cap.op_types[0] in md
    for lim in LIMITS.values():
        assert lim.ref and lim.name in md
    doc = Path(__file__).resolve().parents[1] / "docs" / "rk3588-capabilities.md"
    assert md in doc.read_text(), "docs/rk3588-capabilities.md is out of date: paste capability_table_markdown()"


# ---- partitioning ---------------------------------------------------------------------------------

def test_partition_float_island_gets_quant_conversions():
    g = _graph((1, 16, 8, 8))
    w = np.zeros((16, 16, 1, 1), np.float32)
    g.add_node("Conv", ["x", g.add_const("w1", w)], ["a"])
    g.add_node("Softmax", ["a"], ["b"], {"axis": 1})
    g.add_node("Conv", ["b", g.add_const("w2", w)], ["y"])
    g = _finish(g, "y")
    before = _fingerprint(g)
    plan = partition(g)
    assert _fingerprint(g) == before, "partition must not mutate its input"
    assert [s.device for s in plan.segments] == ["npu", "cpu", "npu"]
    _check_plan_structure(g, plan)
    kinds = {(c.tensor, c.quant, c.layout_from, c.layout_to) for c in plan.conversions}
    assert ("x", "quantize", "NCHW", "NC1HWC2") in kinds
    assert ("a", "dequantize", "NC1HWC2", "NCHW") in kinds
    assert ("b", "quantize", "NCHW", "NC1HWC2") in kinds
    assert ("y", "dequantize", "NC1HWC2", "NCHW") in kinds
    assert plan.npu_mac_fraction == 1.0 and plan.assumed_dtype == "int8"


def test_partition_groups_independent_branches():
    g = _graph((1, 16, 8, 8))
    w = np.zeros((16, 16, 1, 1), np.float32)
    g.add_node("Softmax", ["x"], ["s1"], {"axis": 1})  # cpu branch
    g.add_node("Conv", ["x", g.add_const("w1", w)], ["c1"])  # npu branch
    g.add_node("Softmax", ["c1"], ["s2"], {"axis": 1})
    g.add_node("Conv", ["x", g.add_const("w2", w)], ["c2"])
    g.add_node("Add", ["s1", "s2"], ["y1"])
    g.outputs = ["y1", "c2"]
    infer_shapes(g, Limits())
    plan = partition(g)
    _check_plan_structure(g, plan)
    # both convs share one NPU segment although a CPU node sits between them in the file order
    assert len([s for s in plan.segments if s.device == "npu"]) == 1


def test_idle_npu_island_is_demoted():
    g = _graph((1, 16, 8, 8))
    g.add_node("Softmax", ["x"], ["a"], {"axis": 1})
    g.add_node("Relu", ["a"], ["b"])
    g.add_node("Softmax", ["b"], ["y"], {"axis": 1})
    plan = partition(_finish(g, "y"))
    assert [n.device for n in plan.nodes] == ["cpu", "cpu", "cpu"]
    assert "island" in plan.nodes[1].placement.reason and len(plan.segments) == 1


@pytest.fixture(scope="module")
def zoo_plans() -> dict[str, tuple[Graph, PartitionPlan]]:
    out = {}
    for name in ZOO:
        g = load_model(name)
        before = _fingerprint(g)
        plan = partition(g)
        assert _fingerprint(g) == before
        out[name] = (g, plan)
    return out


def test_zoo_partitions(zoo_plans):
    print()
    print(f"{'model':<20} {'npu':>4} {'cpu':>4} {'segs':>4} {'conv':>4} {'NPU MAC fraction':>17}")
    for name, (g, plan) in zoo_plans.items():
        _check_plan_structure(g, plan)
        print(f"{name:<20} {len(plan.npu_nodes()):>4} {len(plan.cpu_nodes()):>4} {len(plan.segments):>4} "
              f"{len(plan.conversions):>4} {plan.npu_mac_fraction:>17.4f}")
        for n in plan.cpu_nodes():
            print(f"    cpu {n.op_type:<18} {n.name}: {n.placement.reason}")
    for name in ("efficientnet-lite0", "mobilenetv2"):
        assert zoo_plans[name][1].npu_mac_fraction >= 0.99, name
    for name in ("mnist-cnn", "yolov8n", "blazeface", "selfie-segmentation"):
        assert zoo_plans[name][1].npu_mac_fraction >= 0.95, name


def test_quantized_mobilenetv2_partition(zoo_plans):
    import opennpu

    quantize = opennpu.quantize
    g = copy.deepcopy(zoo_plans["mobilenetv2"][0])
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(2)]
    q = quantize(g, calib, progress=False)
    plan = partition(q)
    _check_plan_structure(q, plan)
    assert plan.quantized and plan.assumed_dtype is None
    assert plan.npu_mac_fraction >= 0.99
    assert all(c.quant is None for c in plan.conversions)  # Q/DQ are explicit nodes in quantized graphs
    print()
    print(plan.summary())


def test_partition_quantized_graph_layout_only_conversions():
    q = QuantInfo(np.array(0.05, np.float32), np.array(3, np.int8))
    g = _graph((1, 16, 8, 8))
    g.add_node("QuantizeLinear", ["x", g.add_const("s", np.float32(0.05)), g.add_const("z", np.int8(3))], ["xq"])
    w = g.add_const("w", np.ones((16, 16, 1, 1), np.int8), QuantInfo(np.array(0.01, np.float32), np.array(0)))
    g.add_node("Conv", ["xq", w], ["yq"])
    g.add_node("DequantizeLinear", ["yq", "s", "z"], ["y"])
    g.outputs = ["y"]
    for name in ("xq", "yq"):
        g.tensors[name] = Tensor(name, (1, 16, 8, 8), "int8", quant=q)
    g.tensors["y"] = Tensor("y", (1, 16, 8, 8), "float32")
    plan = partition(g)
    _check_plan_structure(g, plan)
    assert plan.quantized and [n.device for n in plan.nodes] == ["cpu", "npu", "cpu"]
    assert "QuantizeLinear" in plan.nodes[0].placement.reason
    assert plan.nodes[1].placement.assumed_dtype is None
    assert {(c.tensor, c.quant, c.dtype_from, c.dtype_to) for c in plan.conversions} == \
        {("xq", None, "int8", "int8"), ("yq", None, "int8", "int8")}
