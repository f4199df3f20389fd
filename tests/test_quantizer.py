"""Post-training quantization: accuracy on real data against the float model, modes, pinning, calibration
methods and inputs, float islands.

Oracles: the float graph (itself checked against ONNX Runtime in test_zoo_float.py) on the same inputs, and
the real MNIST labels.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import opennpu
from opennpu.data import mnist5k
from opennpu.ir.graph import Graph, Tensor
from opennpu.quant.calibration import METHODS, collect
from opennpu.quant.executor import is_quantized, run_quantized
from opennpu.runtime.cpu import run_graph
from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

B = 500


@pytest.fixture(scope="module")
def mnist():
    g = opennpu.load_model("mnist-cnn", input_shapes={"input": (B, 1, 28, 28)})
    images, labels = mnist5k()
    x = preprocess_mnist(images)
    batches = [x[i:i + B] for i in range(0, len(x), B)]
    # calibration: 2 x 500 digits spread over the set
    cal = [{"input": x[i::10][:B]} for i in (3, 7)]
    return g, batches, np.asarray(labels), cal


@pytest.fixture(scope="module")
def mnist_float_logits(mnist):
    g, batches, _, _ = mnist
    return [run_graph(g, {"input": xb})["logits"] for xb in batches[:2]]


def _logits(q, batches):
    return [run_quantized(q, {"input": xb})["logits"] for xb in batches]


@pytest.mark.slow
def test_mnist_int8_accuracy_all_5000(mnist):
    g, batches, labels, cal = mnist
    t0 = time.perf_counter()
    q = opennpu.quantize(g, cal, method="minmax", dtype="int8", per_channel=True, progress=False)
    t1 = time.perf_counter()
    pf = np.concatenate([run_graph(g, {"input": xb})["logits"].argmax(1) for xb in batches])
    t2 = time.perf_counter()
    pq = np.concatenate([o.argmax(1) for o in _logits(q, batches)])
    t3 = time.perf_counter()
    acc_f, acc_q = 100 * np.mean(pf == labels), 100 * np.mean(pq == labels)
    print(f"\nmnist-cnn 5000 digits: float {acc_f:.2f}%  int8 {acc_q:.2f}%  (quantize {t1 - t0:.1f}s, "
          f"float {t2 - t1:.1f}s, int8 {t3 - t2:.1f}s)")
    assert abs(acc_f - acc_q) <= 0.2
    assert q.metadata["quant_fallbacks"] == []
    convs = [n for n in q.nodes if n.op_type in ("Conv", "Gemm")]
    assert all(q.tensor(n.inputs[1]).quant.per_channel for n in convs)


def test_modes_int16_fp16_closer_than_int8(mnist, mnist_float_logits):
    g, batches, _, cal = mnist
    c = collect(g, cal, progress=False)
    err = {}
    for dtype in ("int8", "int16", "fp16"):
        q = opennpu.quantize(g, c, dtype=dtype, progress=False)
        outs = _logits(q, batches[:2])
        err[dtype] = float(np.mean([np.abs(o - f).mean() for o, f in zip(outs, mnist_float_logits, strict=True)]))
        kinds = {q.tensor(n.outputs[0]).dtype for n in q.nodes if n.op_type == "Conv"}
        assert kinds == {"int8" if dtype == "int8" else "int16" if dtype == "int16" else "float16"}
    print(f"\nmean |logit - float|: {err}")
    assert err["int16"] < err["int8"] and err["fp16"] < err["int8"]


def test_int4_weights_fc(mnist, mnist_float_logits):
    g, batches, labels, cal = mnist
    q = opennpu.quantize(g, cal, weight_dtype="int4", progress=False)
    for n in q.iter_ops("Gemm"):
        w = q.tensor(n.inputs[1])
        assert w.quant.bits == 4 and w.data.dtype == np.int8 and w.data.min() >= -8 and w.data.max() <= 7
    for n in q.iter_ops("Conv"):
        assert q.tensor(n.inputs[1]).quant.bits is None  # convolutions keep int8 weights
    outs = _logits(q, batches[:2])
    agree = np.mean([np.mean(o.argmax(1) == f.argmax(1)) for o, f in zip(outs, mnist_float_logits, strict=True)])
    assert agree > 0.98


def test_pin_mixed_precision(mnist, mnist_float_logits):
    g, batches, _, cal = mnist
    q = opennpu.quantize(g, cal, pin={"features.3": "int16", "classifier.2": "float", "classifier.0": "fp16"},
                         progress=False)
    node = {n.name: n for n in q.nodes}
    assert q.tensor(node["features.3"].outputs[0]).dtype == "int16"
    assert q.tensor(node["features.3"].inputs[0]).dtype == "int16"  # int8 -> int16 requantization before it
    assert q.tensor(node["classifier.0"].outputs[0]).dtype == "float16"
    assert q.tensor(node["classifier.2"].outputs[0]).dtype == "float32"
    assert {"node": "classifier.2", "op_type": "Gemm", "reason": "pinned to float"} in q.metadata["quant_fallbacks"]
    outs = _logits(q, batches[:1])
    assert np.mean(outs[0].argmax(1) == mnist_float_logits[0].argmax(1)) > 0.99


def test_calibration_methods_give_different_sane_ranges(mnist):
    g, _, _, cal = mnist
    c = collect(g, cal, histograms=True, progress=False)
    for name in ("input", "features.0.relu", "features.3.relu", "logits"):
        ranges = {m: c.range(name, m) for m in METHODS}
        mm = ranges["minmax"]
        for m, (lo, hi) in ranges.items():
            assert mm[0] - 1e-6 <= lo <= 0 <= hi <= mm[1] + 1e-6, (name, m, lo, hi)
            assert hi - lo > 0.05 * (mm[1] - mm[0]), (name, m)
        if name.endswith("relu"):
            assert all(r[0] == 0 for r in ranges.values())
        if name != "input":  # MNIST pixels saturate at the top value: every method keeps the full range there
            assert len({(round(r[0], 6), round(r[1], 6)) for r in ranges.values()}) >= 3, (name, ranges)


def test_quantize_is_deterministic_and_leaves_input_alone(mnist):
    g, _, _, cal = mnist
    before = {k: (t.dtype, t.quant, None if t.data is None else t.data.copy()) for k, t in g.tensors.items()}
    ops = [(n.op_type, list(n.inputs), list(n.outputs)) for n in g.nodes]
    q1 = opennpu.quantize(g, cal[:1], method="mse", progress=False)
    q2 = opennpu.quantize(g, cal[:1], method="mse", progress=False)
    assert [(n.op_type, n.inputs, n.outputs) for n in q1.nodes] == [(n.op_type, n.inputs, n.outputs) for n in q2.nodes]
    for k, t in q1.tensors.items():
        t2 = q2.tensors[k]
        assert t.dtype == t2.dtype
        if t.data is not None:
            np.testing.assert_array_equal(t.data, t2.data)
        if t.quant is not None:
            np.testing.assert_array_equal(t.quant.scale, t2.quant.scale)
    assert [(n.op_type, list(n.inputs), list(n.outputs)) for n in g.nodes] == ops
    for k, (dt, qi, data) in before.items():
        assert g.tensors[k].dtype == dt and g.tensors[k].quant is qi
        if data is not None:
            np.testing.assert_array_equal(g.tensors[k].data, data)
    # names preserved: every float activation of g exists in q1
    acts = [o for n in g.nodes for o in n.outputs]
    assert all(a in q1.tensors for a in acts)
    assert is_quantized(q1.tensor("features.0.relu"))


def test_calibration_inputs_images_and_npy(tmp_path, mnist):
    from PIL import Image

    g, batches, _, _ = mnist
    g1 = opennpu.load_model("mnist-cnn")  # batch 1
    images, _ = mnist5k()
    for i in range(3):
        Image.fromarray(np.asarray(images[i])).convert("RGB").save(tmp_path / f"d{i}.png")
    c = collect(g1, tmp_path, progress=False)
    assert c.batches == 3 and "logits" in c.stats
    np.save(tmp_path / "cal.npy", batches[0][:4])
    c2 = collect(g1, tmp_path / "cal.npy", progress=False)
    assert c2.batches == 4
    c3 = collect(g1, iter([{"input": batches[0][:1]}, {"input": batches[0][1:2]}]), progress=False)
    assert c3.batches == 2


def _island_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("island")
    g.add_tensor(Tensor("x", (4, 3, 8, 8), "float32"))
    g.inputs, g.outputs = ["x"], ["y"]
    w1 = g.add_const("w1", (rng.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float32))
    b1 = g.add_const("b1", rng.standard_normal(6).astype(np.float32) * 0.1)
    w2 = g.add_const("w2", (rng.standard_normal((4, 6, 1, 1)) * 0.3).astype(np.float32))
    g.add_node("Conv", ["x", w1, b1], ["c1"], {"pads": [1, 1, 1, 1]}, name="conv1")
    g.add_node("Floor", ["c1"], ["fl"], name="floor")  # no integer kernel
    g.add_node("Conv", ["fl", w2], ["y"], name="conv2")
    for name, shape in (("c1", (4, 6, 8, 8)), ("fl", (4, 6, 8, 8)), ("y", (4, 4, 8, 8))):
        g.tensors[name].shape, g.tensors[name].dtype = shape, "float32"
    return g


def test_float_island_is_explicit():
    g = _island_graph()
    rng = np.random.default_rng(1)
    cal = [{"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    q = opennpu.quantize(g, cal, progress=False)
    assert q.metadata["quant_fallbacks"] == [
        {"node": "floor", "op_type": "Floor", "reason": "no integer kernel for Floor"}]
    node = {n.name: n for n in q.nodes}
    prod = q.producers()
    assert prod[node["floor"].inputs[0]].op_type == "DequantizeLinear"
    assert prod[node["conv2"].inputs[0]].op_type == "QuantizeLinear"
    assert q.tensor("fl").dtype == "float32" and q.tensor("c1").dtype == "int8"
    x = cal[0]
    got = run_quantized(q, x)["y"]
    want = run_graph(g, x)["y"]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max() + 0.5


ACCURACY_GAPS = {  # model -> measured shortfall; docs/quantization-accuracy.md says why 98% is out of reach here
    "efficientnet-lite0": "out of reach on these views: 95.5% top-1 agreement, logits 25.8 dB (GPTQ + percentile + "
                          "refine; rknn-toolkit2 mmse 96.5%, 25.4 dB); the float margins need >= 27.2 dB for 98% "
                          "and even int16 activations (29.4 dB, int8 weights) give 96.0%",
    "mobilenetv2": "out of reach on these views: 87.5% top-1 agreement, logits 21.8 dB (equalize + refine; "
                   "rknn-toolkit2 mmse 87.0%, 19.8 dB); the float margins need >= 35.8 dB for 98% and even int16 "
                   "activations (35.3 dB, int8 weights) give 96.0%",
}


@pytest.mark.accuracy
@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.xfail(reason=ACCURACY_GAPS[m], strict=False))
                                  for m in ("efficientnet-lite0", "mobilenetv2")])
def test_imagenet_int8_top1_agreement(name):
    """int8 top-1 agreement with the float model >= 98% on 200 augmented crops / flips / scales of the real
    photos (calibration: 100 other crops, data/augment.py keeps the two sets disjoint), run on the integer
    executor; prints the logits SQNR and the layers that add the most error (quant/analysis.py)."""
    from opennpu.data.augment import batched, imagenet_calibration_set, imagenet_eval_set
    from opennpu.quant.analysis import compare_layers

    scheme = "tf-lite" if name == "efficientnet-lite0" else "torchvision"
    bs = 50
    g = opennpu.load_model(name, input_shapes={"input": (bs, 3, 224, 224)})
    cal = [{"input": c} for c in batched(imagenet_calibration_set(100, scheme=scheme), bs)]
    ev = batched(imagenet_eval_set(200, scheme=scheme), bs)
    t0 = time.perf_counter()
    # GPTQ weights (the default), percentile ranges. Choices measured on another held-out photo set
    # (data.augment seed 2000), never on this one: MobileNetV2's activation channels (depthwise outputs,
    # residual streams) differ 10-100x in range and cross-layer equalization evens them (logits 18.4 -> 21.0
    # dB; EfficientNet-Lite0 25.2 -> 25.1 dB, so not for it); output-error range search + empirical bias
    # correction (refine) lifts EfficientNet-Lite0 25.2 -> 26.2 dB and equalized MobileNetV2 21.0 -> 21.6 dB
    effnet = name == "efficientnet-lite0"
    q = opennpu.quantize(g, cal, method="percentile", equalize=not effnet, refine=True, progress=False)
    t1 = time.perf_counter()
    # float graph and integer executor on the same preprocessed inputs; argmax of the float logits vs the
    # argmax of the dequantized int8 logits
    rep = compare_layers(g, q, [{"input": xb} for xb in ev])
    t2 = time.perf_counter()
    rate = rep.top1_agreement
    out = next(iter(rep.outputs.values()))
    print(f"\n{name}: int8 top-1 agreement with float {100 * rate:.1f}% on {rep.num_inputs * bs} augmented photos, "
          f"logits SQNR {out['sqnr_db']:.1f} dB (quantize {t1 - t0:.1f}s, float + int8 with per-layer stats "
          f"{t2 - t1:.1f}s; {q.metadata['quantization']})")
    m = rep.margins
    print(f"float decision margins: {100 * m['near_ties']:.1f}% of views have a top-1/top-2 gap under 2% of the logit "
          f"rms; iid-error model expects {100 * m['expected_agreement']:.1f}% at this SQNR and needs "
          f"{m['sqnr_needed_db']['0.98']:.1f} dB for 98%; flipped views' relative gaps: "
          + ", ".join(f"{g:.3f}" for g in m["flipped_relative_gaps"]))
    print("layers adding the most error (SQNR drop):")
    for s in rep.worst_layers(5):
        print(f"  {s.tensor:28s} {s.op_type:8s} SQNR {s.sqnr_db:5.1f} dB  drop {s.drop_db:+.1f} dB")
    assert rep.num_inputs * bs == 200 and len(rep.worst) > 0
    assert q.metadata["quant_fallbacks"] == []
    assert rate >= 0.98


def _smooth_images(rng: np.random.Generator, n: int, c: int, size: int) -> np.ndarray:
    """Spatially correlated inputs (cumulative sums of noise), like natural-image features."""
    x = rng.standard_normal((n, c, size, size)).cumsum(axis=2).cumsum(axis=3)
    return (x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("depthwise", [False, True])
def test_gptq_rounding_beats_nearest_on_output_error(depthwise):
    """GPTQ minimizes the conv's output error over the calibration inputs; held-out inputs from the same
    distribution must see a smaller error than with round-to-nearest (oracle: the float conv)."""
    from opennpu.ir.ops.conv import conv2d_float
    from opennpu.quant.gptq import HessianCollector
    from opennpu.quant.quantizer import _quantize_weight

    rng = np.random.default_rng(3)
    c = 8
    w = rng.standard_normal((c, 1 if depthwise else c, 3, 3)).astype(np.float32)
    w[:, :, 1, 1] *= 20  # a dominant centre tap leaves the others few levels (BN-folded depthwise kernels)
    attrs = {"pads": [1, 1, 1, 1], "group": c if depthwise else 1}
    g = Graph("one")
    g.add_tensor(Tensor("x", (4, c, 16, 16), "float32"))
    g.add_const("w", w)
    g.add_node("Conv", ["x", "w"], ["y"], attrs, name="conv")
    hc = HessianCollector(g)
    for _ in range(4):
        hc.observe(g.nodes[0], _smooth_images(rng, 4, c, 16))
    h = hc.result()["conv"]
    assert h.shape == ((c, 9, 9) if depthwise else (9 * c, 9 * c))
    x = _smooth_images(rng, 8, c, 16)
    ref = conv2d_float(x, w, None, attrs)
    err = {}
    for kind, hh in (("nearest", None), ("gptq", h)):
        q, info = _quantize_weight(w, 0, 8, hh, 0)
        assert q.dtype == np.int8 and np.abs(q).max() <= 127
        wd = q.astype(np.float32) * np.asarray(info.scale, np.float32).reshape(-1, 1, 1, 1)
        err[kind] = float(np.mean((conv2d_float(x, wd, None, attrs) - ref) ** 2))
    assert err["gptq"] < 0.9 * err["nearest"], err


def _conv_chain(rng: np.random.Generator, c: int = 8, n: int = 4) -> Graph:
    """stem conv (ReLU6) -> depthwise 3x3 (ReLU6) -> 1x1 projection: channel ranges 100x apart."""
    g = Graph("chain")
    g.add_tensor(Tensor("x", (n, 3, 12, 12), "float32"))
    gain = np.logspace(-2, 0, c).astype(np.float32)  # output channel gains 0.01 .. 1
    g.add_const("w0", (rng.standard_normal((c, 3, 3, 3)) * gain[:, None, None, None]).astype(np.float32))
    g.add_const("b0", (np.abs(rng.standard_normal(c)) * gain * 0.5).astype(np.float32))
    g.add_const("w1", (rng.standard_normal((c, 1, 3, 3)) / np.sqrt(gain)[:, None, None, None]).astype(np.float32))
    g.add_const("w2", rng.standard_normal((4, c, 1, 1)).astype(np.float32))
    g.add_node("Conv", ["x", "w0", "b0"], ["a"], {"pads": [1, 1, 1, 1], "clip": (0.0, 6.0)}, name="stem")
    g.add_node("Conv", ["a", "w1"], ["d"], {"pads": [1, 1, 1, 1], "group": c, "clip": (0.0, 6.0)}, name="dw")
    g.add_node("Conv", ["d", "w2"], ["y"], {}, name="project")
    g.add_tensor(Tensor("a", (n, c, 12, 12), "float32"))
    g.add_tensor(Tensor("d", (n, c, 12, 12), "float32"))
    g.add_tensor(Tensor("y", (n, 4, 12, 12), "float32"))
    g.outputs = ["y"]
    g.inputs = ["x"]
    return g


def test_equalize_keeps_the_function_and_helps_int8():
    """Cross-layer equalization (quant/equalize.py) rescales activation channels between convs: the float
    function is unchanged on the calibration data (oracle: the original graph), the channel ranges get
    closer, and the int8 graph built from it is closer to the float one on held-out inputs."""
    from opennpu.quant.equalize import channel_ranges, equalize

    rng = np.random.default_rng(11)
    g = _conv_chain(rng)
    cal = [{"x": _smooth_images(rng, 4, 3, 12) * 3} for _ in range(4)]
    ge, scales = equalize(g, cal[0])
    assert set(scales) == {"a", "d"} and all(np.all(s >= 1) for s in scales.values())
    np.testing.assert_allclose(run_graph(ge, cal[0])["y"], run_graph(g, cal[0])["y"], rtol=1e-4, atol=1e-4)
    assert g.tensor(g.nodes[0].inputs[1]).data is not ge.tensor(ge.nodes[0].inputs[1]).data  # g untouched
    spread = {k: (lambda lo_hi: float(lo_hi[1].max() / lo_hi[1][lo_hi[1] > 0].min()))(v)
              for k, v in channel_ranges(g, cal[0], {"a", "d"}).items()}
    spread_eq = {k: (lambda lo_hi: float(lo_hi[1].max() / lo_hi[1][lo_hi[1] > 0].min()))(v)
                 for k, v in channel_ranges(ge, cal[0], {"a", "d"}).items()}
    assert all(spread_eq[k] < spread[k] / 3 for k in spread), (spread, spread_eq)
    held = {"x": _smooth_images(rng, 4, 3, 12) * 3}
    ref = run_graph(g, held)["y"]
    err = {}
    for eq in (False, True):
        q = opennpu.quantize(g, cal, method="minmax", weight_rounding="nearest", equalize=eq, progress=False)
        err[eq] = float(np.mean((run_quantized(q, held)["y"] - ref) ** 2))
        assert q.metadata["quantization"]["equalize"] == ("2 tensors" if eq else "off")
    assert err[True] < 0.8 * err[False], err
    # the per-layer analysis compares the rescaled tensors in the float graph's units
    from opennpu.quant.analysis import compare_layers

    rep = compare_layers(g, q, [held])
    assert sorted(q.metadata["equalized_channels"]) == ["a", "d"]
    assert min(rep.layer(t).sqnr_db for t in ("a", "d")) > 25, [(s.tensor, s.sqnr_db) for s in rep.layers]


def test_refine_bias_correction_removes_the_output_shift():
    """refine="bias" (quant/refine.py) corrects each conv's bias by the mean difference between the simulated
    quantized and the float pre-activations on a calibration batch; on held-out inputs the per-channel mean
    error of the int8 output shrinks (oracle: the float graph). refine=True also searches the activation
    ranges (opt-in: measured +0.2 dB on MobileNetV2, and it can pick ranges that a later layer pays for, as
    here); what was done is recorded, and statistics-only calibration cannot be refined."""
    rng = np.random.default_rng(5)
    g = _conv_chain(rng, n=16)

    def images() -> np.ndarray:  # heavy-tailed pixels
        x = _smooth_images(rng, 16, 3, 12)
        return (np.sign(x) * np.abs(x) ** 2 * 6).astype(np.float32)

    cal = [{"x": images()} for _ in range(2)]
    held = [{"x": images()} for _ in range(2)]
    shift = {}
    for refine in (False, "bias", True):
        q = opennpu.quantize(g, cal, method="minmax", weight_rounding="nearest", refine=refine, progress=False)
        assert q.metadata["quantization"]["refine"] == {False: "off", "bias": "bias", True: "on"}[refine]
        shift[refine] = float(np.mean([np.abs((run_quantized(q, h)["y"] - run_graph(g, h)["y"]).mean(axis=(0, 2, 3)))
                                       for h in held]))
    assert shift["bias"] < 0.9 * shift[False], shift
    c = collect(g, cal, progress=False)
    q = opennpu.quantize(g, c, refine=True, progress=False)
    assert q.metadata["quantization"]["refine"].startswith("skipped")
    with pytest.raises(ValueError):
        opennpu.quantize(g, c, refine="ranges", progress=False)


def test_calibration_and_eval_photo_sets_are_disjoint_and_deterministic():
    """The accuracy study calibrates on imagenet_calibration_set and measures on imagenet_eval_set: no input
    may appear in both (no tuning on the eval set), and both are reproducible."""
    from opennpu.data.augment import imagenet_calibration_set, imagenet_eval_set

    cal = imagenet_calibration_set(24, size=32)
    ev = imagenet_eval_set(48, size=32)
    assert {c.tobytes() for c in cal}.isdisjoint(e.tobytes() for e in ev)
    assert len({e.tobytes() for e in ev}) == len(ev)
    assert all(np.array_equal(a, b) for a, b in zip(ev, imagenet_eval_set(48, size=32), strict=True))


def test_equalize_rescales_a_residual_stream_as_one():
    """Tensors joined by an Add (a linear-bottleneck residual stream) share one set of channel scales: every
    conv writing the stream scales its rows, every conv reading it its columns; the function is unchanged."""
    from opennpu.quant.equalize import equalize, groups

    rng = np.random.default_rng(2)
    c = 6
    g = Graph("stream")
    g.add_tensor(Tensor("x", (2, 3, 8, 8), "float32"))
    gain = np.logspace(-1.5, 0, c).astype(np.float32)[:, None, None, None]
    g.add_const("w0", (rng.standard_normal((c, 3, 1, 1)) * gain).astype(np.float32))
    g.add_const("w1", (rng.standard_normal((c, c, 1, 1)) * gain * 0.3).astype(np.float32))
    g.add_const("w2", rng.standard_normal((4, c, 1, 1)).astype(np.float32))
    g.add_node("Conv", ["x", "w0"], ["t0"], {}, name="c0")
    g.add_node("Conv", ["t0", "w1"], ["b1"], {}, name="c1")
    g.add_node("Add", ["t0", "b1"], ["s1"], {}, name="add")
    g.add_node("Conv", ["s1", "w2"], ["y"], {}, name="c2")
    for name, ch in (("t0", c), ("b1", c), ("s1", c), ("y", 4)):
        g.add_tensor(Tensor(name, (2, ch, 8, 8), "float32"))
    g.outputs = ["y"]
    g.inputs = ["x"]
    found = groups(g)
    stream = next(f for f in found if len(f[0]) > 1)
    assert sorted(stream[0]) == ["b1", "s1", "t0"]
    assert sorted(n.name for n in stream[1]) == ["c0", "c1"] and sorted(n.name for n in stream[2]) == ["c1", "c2"]
    feeds = {"x": _smooth_images(rng, 2, 3, 8)}
    ge, scales = equalize(g, feeds)
    assert np.array_equal(scales["t0"], scales["s1"]) and scales["t0"].max() > 4
    np.testing.assert_allclose(run_graph(ge, feeds)["y"], run_graph(g, feeds)["y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dist", ["laplace", "relu-gauss", "skewed"])
def test_mse_range_matches_brute_force_search(dist):
    """calibration's ``mse`` range (histogram moments, step^2/12 inside) against a brute-force oracle: the
    asymmetric int8 quantize-dequantize error of the raw samples over a dense grid of (lo, hi); the chosen
    range's real error is within 5% of the grid's best (the histogram model charges step^2 / 12 to every value,
    the exact zeros of a ReLU output too) and below min/max's."""
    from opennpu.quant.calibration import TensorStats, _mse_range

    rng = np.random.default_rng({"laplace": 1, "relu-gauss": 2, "skewed": 3}[dist])
    x = {"laplace": rng.laplace(0.2, 1.0, 50_000),
         "relu-gauss": np.maximum(rng.standard_normal(50_000), 0) * 3,
         "skewed": np.concatenate([rng.standard_normal(47_500), rng.exponential(6.0, 2_500)])}[dist]
    st = TensorStats()
    st.update_range(x)
    st.update_hist(x)

    def qdq_err(lo: float, hi: float) -> float:
        step = (hi - lo) / 255
        zp = np.round(-lo / step) - 128
        q = np.clip(np.round(x / step) + zp, -128, 127)
        return float(np.mean(((q - zp) * step - x) ** 2))

    lo, hi = _mse_range(st)
    los = np.linspace(min(x.min(), 0), 0, 31) if x.min() < 0 else np.array([0.0])
    his = np.linspace(0, x.max(), 121)[1:]
    best = min(qdq_err(a, b) for a in los for b in his)
    assert qdq_err(lo, hi) <= 1.05 * best, (lo, hi, qdq_err(lo, hi), best)
    assert qdq_err(lo, hi) < qdq_err(min(x.min(), 0), x.max())


def test_near_dead_channel_keeps_its_bias():
    """A BN-folded filter that never fires (weights ~1e-6, bias -6; EfficientNet-Lite0's stem has two): its
    per-channel weight scale must not shrink with its weights, or the int32 bias saturates and the
    accumulator wraps to a large positive output. Oracle: the float graph, whose ReLU6 output is 0 there."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1] *= 1e-6
    b = np.array([0.5, -5.9, 0.1, -0.2], np.float32)
    g = Graph("stem")
    g.add_tensor(Tensor("x", (2, 3, 16, 16), "float32"))
    g.add_const("w", w)
    g.add_const("b", b)
    g.add_node("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1], "clip": (0.0, 6.0)}, name="conv")
    g.add_tensor(Tensor("y", (2, 4, 16, 16), "float32"))
    g.inputs, g.outputs = ["x"], ["y"]
    cal = [{"x": rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    x = {"x": rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)}
    for rounding in ("nearest", "gptq"):
        q = opennpu.quantize(g, cal, method="minmax", weight_rounding=rounding, progress=False)
        bias = next(t for t in q.tensors.values() if t.name.startswith("b.") and t.dtype == "int32")
        assert np.abs(bias.data.astype(np.int64)).max() < 2 ** 30
        got, want = run_quantized(q, x)["y"], run_graph(g, x)["y"]
        assert np.all(want[:, 1] == 0) and np.all(got[:, 1] == 0), rounding
        assert np.abs(got - want).max() < 0.1, rounding  # input + output steps (~4 LSB of 6/255)
