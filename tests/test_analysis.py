"""Per-layer accuracy analysis (opennpu.quant.analysis) on mnist-cnn quantized by ONNX Runtime (QDQ).

Oracles: identical graphs must compare perfectly; a layer whose weight scales we corrupt must be named
the worst; the report's task metric must equal accuracy computed directly from the two graphs' outputs.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from opennpu import load_model, run_graph
from opennpu.ir.graph import QuantInfo
from opennpu.quant.analysis import SQNR_CAP_DB, compare_layers
from opennpu.quant.qdq import simulate

quantization = pytest.importorskip("onnxruntime.quantization")


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from opennpu.data import mnist5k
    from opennpu.zoo import fetch
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    d = tmp_path_factory.mktemp("analysis")
    pre, qp = d / "pre.onnx", d / "qdq.onnx"
    quant_pre_process(str(fetch("mnist-cnn")), str(pre), skip_symbolic_shape=True)
    images, labels = mnist5k()
    calib = [{"input": preprocess_mnist(images[i:i + 1])} for i in range(0, 5000, 50)]
    quantization.quantize_static(str(pre), str(qp), _Reader(calib), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
    idx = list(range(3, 5000, 250))
    feeds = [{"input": preprocess_mnist(images[i:i + 1])} for i in idx]
    return load_model("mnist-cnn"), load_model(qp, {"input": (1, 1, 28, 28)}), feeds, labels[idx]


def runners():
    return [pytest.param(lambda g, f: simulate(g, f, keep=True), id="qdq-simulation"),
            pytest.param(None, id="integer-executor")]


def test_identical_graphs_compare_perfectly(mnist):
    fg, _, feeds, _ = mnist
    rep = compare_layers(fg, fg, feeds[:5])
    assert len(rep.layers) == len(fg.nodes)
    for s in rep.layers:
        assert s.cosine == pytest.approx(1.0, abs=1e-12) and s.sqnr_db == SQNR_CAP_DB and s.max_abs_err == 0
    assert rep.top1_agreement == 1.0 and rep.worst == []
    assert all(m["cosine"] == pytest.approx(1.0, abs=1e-12) for m in rep.outputs.values())


@pytest.mark.parametrize("runner", runners())
def test_report_on_quantized_mnist(mnist, tmp_path, runner):
    fg, qg, feeds, labels = mnist

    def accuracy(outputs, i):
        return float(np.argmax(next(iter(outputs.values()))) == labels[i])

    rep = compare_layers(fg, qg, feeds, runner=runner, task_metric=accuracy)
    assert rep.num_inputs == len(feeds)
    ops = {s.op_type for s in rep.layers}
    assert {"Conv", "MaxPool", "Gemm", "QuantizeLinear"} <= ops
    assert all(s.cosine > 0.99 for s in rep.layers), [(s.tensor, s.cosine) for s in rep.layers]
    assert all(10.0 < s.sqnr_db < 60.0 for s in rep.layers)
    assert rep.top1_agreement >= 0.95
    # The task metric is what the outputs say.
    f_acc = np.mean([accuracy(run_graph(fg, f), i) for i, f in enumerate(feeds)])
    assert rep.task_metric["float"] == pytest.approx(f_acc)
    assert abs(rep.task_metric["quant"] - rep.task_metric["float"]) <= 0.1
    d = rep.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["num_inputs"] == len(feeds)
    from rich.console import Console

    buf = io.StringIO()
    rep.print(Console(file=buf, width=140))
    assert "SQNR" in buf.getvalue() and "top-1 agreement" in buf.getvalue()
    png = rep.plot(tmp_path / "sqnr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("runner", runners())
def test_damaged_layer_is_named_worst(mnist, runner):
    """Scale half the output channels of the second conv's weights by 3 (bias scales along, so the model
    stays well formed): that conv must be the layer adding the most error."""
    fg, qg, feeds, _ = mnist
    bad = qg.copy()
    conv = [n for n in bad.nodes if n.op_type == "Conv"][1]
    for k in (1, 2):
        t = bad.tensor(conv.inputs[k])
        scale = np.asarray(t.quant.scale, np.float32).copy()
        scale[::2] *= 3.0
        t.quant = QuantInfo(scale, t.quant.zero_point, t.quant.axis)
    rep = compare_layers(fg, bad, feeds[:8], runner=runner)
    assert rep.worst[0] == conv.outputs[0], rep.worst
    good = compare_layers(fg, qg, feeds[:8], runner=runner)
    assert rep.layer(conv.outputs[0]).sqnr_db < good.layer(conv.outputs[0]).sqnr_db - 10
    assert rep.worst_layers(1)[0].tensor == conv.outputs[0]


@pytest.mark.slow  # ~2 s idle, 16 s on a loaded machine (calibration inside opennpu.quantize)
def test_report_on_opennpu_quantized_graph(mnist):
    """The quantizer keeps float tensor names, so every integer layer it makes is matched and measured."""
    import opennpu

    fg, _, feeds, _ = mnist
    qg = opennpu.quantize(fg, feeds[:5], method="minmax", progress=False)
    rep = compare_layers(fg, qg, feeds[10:])
    measured = {s.tensor for s in rep.layers}
    int_outputs = {o for n in qg.nodes for o in n.outputs
                   if qg.tensor(o).quant is not None and n.op_type != "QuantizeLinear"}
    assert int_outputs & set(fg.tensors) <= measured
    assert len(measured) >= 6 and rep.top1_agreement >= 0.9
    assert all(s.cosine > 0.99 for s in rep.layers)


def test_expected_agreement_matches_simulated_noise(tmp_path):
    """The margin model (quant/analysis.py) against a Monte Carlo oracle: add independent Gaussian errors at a
    given SQNR to logits with a spread of top-2 gaps and count the kept decisions; sqnr_needed inverts it."""
    from opennpu.quant.analysis import expected_agreement, margin_summary, sqnr_needed, top2_gaps

    rng = np.random.default_rng(7)
    logits = rng.standard_normal((400, 50)) * 2.0
    logits[np.arange(400), rng.integers(0, 50, 400)] += rng.exponential(1.5, 400)  # confident and near-tie rows
    rms = np.sqrt(np.mean(logits ** 2))
    for db in (15.0, 25.0, 35.0):
        sigma = rms * 10 ** (-db / 20)
        trials = [np.mean((logits + rng.standard_normal(logits.shape) * sigma).argmax(1) == logits.argmax(1))
                  for _ in range(200)]
        assert abs(expected_agreement(logits, db) - np.mean(trials)) < 0.006, db
    assert expected_agreement(logits, 20) < expected_agreement(logits, 30) < expected_agreement(logits, 40)
    need = sqnr_needed(logits, 0.98)
    assert abs(expected_agreement(logits, need) - 0.98) < 1e-3
    np.testing.assert_allclose(top2_gaps(np.array([[1.0, 3.0, 2.5]])), [0.5])
    from opennpu.quant.analysis import plot_agreement_vs_sqnr

    png = plot_agreement_vs_sqnr(logits, {"a": (20.0, 0.9), "b": (30.0, 0.97)}, tmp_path / "agr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    q = logits.copy()
    q[0] = -q[0]  # one flipped row
    m = margin_summary(logits, q, 30.0)
    assert len(m["flipped_relative_gaps"]) == 1 and m["sqnr_needed_db"]["0.98"] == need
