"""Every zoo model: our IR's float output equals the independent runtime's on real inputs.

ONNX models are checked against ONNX Runtime, .tflite models against LiteRT. The tolerance is relative
to the output's magnitude: 1e-4, or 1e-3 where fp16 weights are involved (the MediaPipe models).
"""

import time

import numpy as np
import onnxruntime as ort
import pytest

from opennpu import data, zoo
from opennpu.frontends import load_model
from opennpu.runtime.cpu import run_graph
from opennpu.zoo.inputs import example_inputs

FP16_WEIGHTS = {"blazeface", "selfie-segmentation"}


def reference_outputs(path, entry, feeds):
    if entry.fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], feeds[detail["name"]])
        interp.invoke()
        return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


@pytest.mark.parametrize("name", [e.name for e in zoo.entries()])
def test_zoo_model_matches_reference_runtime(name):
    entry = zoo.get(name)
    path = zoo.fetch(name)
    graph = load_model(name)
    feeds = example_inputs(name)
    t0 = time.perf_counter()
    ours = run_graph(graph, feeds)
    elapsed = time.perf_counter() - t0
    ref = reference_outputs(path, entry, feeds)
    assert set(ours) == set(ref), (sorted(ours), sorted(ref))
    rtol = 1e-3 if name in FP16_WEIGHTS else 1e-4
    for key, expected in ref.items():
        got = ours[key]
        assert got.shape == expected.shape, (key, got.shape, expected.shape)
        scale = max(float(np.abs(expected).max()), 1e-12)
        err = float(np.abs(got.astype(np.float64) - expected).max()) / scale
        assert err <= rtol, f"{name}:{key} relative error {err:.2e} > {rtol}"
    print(f"{name}: {len(graph.nodes)} ops, ours {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize("name, photo, expected", [
    ("efficientnet-lite0", "coffee", "espresso"),
    ("efficientnet-lite0", "grace_hopper", "military uniform"),
    ("mobilenetv2", "coffee", "espresso"),
    ("mobilenetv2", "china", "palace"),
])
def test_classifier_top1_on_real_photos(name, photo, expected):
    graph = load_model(name)
    logits = next(iter(run_graph(graph, example_inputs(name, photo=photo)).values()))
    assert data.imagenet_labels()[int(np.argmax(logits))] == expected


@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
def test_classifier_cat_is_a_cat(name):
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    graph = load_model(name)
    logits = next(iter(run_graph(graph, example_inputs(name, photo="chelsea")).values()))
    assert data.imagenet_labels()[int(np.argmax(logits))] in cats


def test_mnist_cnn_accuracy_on_mnist5k():
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    images, labels = data.mnist5k()
    batch = 500
    graph = load_model("mnist-cnn", {"input": (batch, 1, 28, 28)})
    correct = 0
    for start in range(0, len(images), batch):
        logits = next(iter(run_graph(graph, {"input": preprocess_mnist(images[start:start + batch])}).values()))
        correct += int((logits.argmax(axis=1) == labels[start:start + batch]).sum())
    accuracy = correct / len(images)
    print(f"mnist-cnn float accuracy on MNIST-5k: {accuracy:.4f}")
    assert accuracy >= 0.998
