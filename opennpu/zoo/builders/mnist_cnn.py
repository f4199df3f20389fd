"""ccexam 1.0.0's MNIST classifier (``ccexam.models.MNISTNet``, the DigitCNN backbone) -> ONNX, no torch.

From ccexam/models.py: features = Conv(1->32, 3x3, pad 1), ReLU, MaxPool 2, Conv(32->64, 3x3, pad 1), ReLU,
MaxPool 2; flatten (64*7*7); classifier = Linear(3136->128), ReLU, Linear(128->10).
Preprocessing from ccexam/inference.py ``build_transform`` with ccexam/constants.py
``DATASET_STATS["mnist"]``: grayscale, resize 28x28, ToTensor (x/255), Normalize(mean 0.1307, std 0.3081).
Digits are white on black (MNIST convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..checkpoint import load_torch_checkpoint
from ._onnx import BATCH, OnnxWriter, Weights, info_metadata

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

INFO = {
    "name": "mnist-cnn",
    "task": "MNIST digit classification",
    "package": "ccexam",
    "version": "1.0.0",
    "license": "MIT",
    "member": "weights/mnist.pth",
    "checkpoint_format": "zip (torch >= 1.6) state_dict",
    "architecture": "ccexam.models.MNISTNet: 2x (Conv3x3-ReLU-MaxPool2), Linear 3136-128-10, 0.42M params",
    "inputs": {"input": ((1, 1, 28, 28), "float32")},
    "outputs": {"logits": ((1, 10), "float32")},
    "preprocessing": "grayscale 28x28 (white digit on black, MNIST convention), x/255, "
                     f"then (x - {MNIST_MEAN}) / {MNIST_STD} (ccexam DATASET_STATS['mnist']), NCHW "
                     "(opennpu.zoo.builders.mnist_cnn.preprocess_mnist)",
    "output_meaning": "logits of the digits 0-9 (argmax = predicted digit)",
}


def preprocess_mnist(images: np.ndarray) -> np.ndarray:
    """MNIST digits (N, 28, 28) or (28, 28), uint8 0-255, white on black -> (N, 1, 28, 28) float32, the
    normalisation ccexam applies (ToTensor then Normalize(0.1307, 0.3081))."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    return np.ascontiguousarray(((x / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None], dtype=np.float32)


def build_mnist_cnn(checkpoint_path: Path, batch: int | str = BATCH) -> onnx.ModelProto:
    W = Weights(load_torch_checkpoint(checkpoint_path), "mnist-cnn")
    g = OnnxWriter("mnist_cnn")
    x = g.input("input", "float32", (batch, 1, 28, 28))
    for conv, cin, cout in (("features.0", 1, 32), ("features.3", 32, 64)):
        x = g.conv(x, W.get(conv + ".weight", (cout, cin, 3, 3)), W.get(conv + ".bias", (cout,)), conv,
                   pads=(1, 1, 1, 1))
        x = g.node("Relu", [x], name=conv + ".relu")
        x = g.node("MaxPool", [x], name=conv + ".pool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [x], name="flatten", axis=1)
    x = g.linear(x, W, "classifier.0", 64 * 7 * 7, 128)
    x = g.node("Relu", [x], name="classifier.1")
    g.linear(x, W, "classifier.2", 128, 10, out="logits")
    W.check_all_used()
    g.output("logits", "float32", (batch, 10))
    return g.model(f"ccexam MNISTNet converted from {Path(checkpoint_path).name} by opennpu (torch-free)",
                   info_metadata(INFO))
