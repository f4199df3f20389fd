"""Real example inputs for each zoo model, preprocessed the way the model expects.

Used by tests (float vs ONNX Runtime / LiteRT on real data), the demo and, later, calibration.
"""

from __future__ import annotations

import numpy as np

from .. import data
from ..errors import ZooError
from . import get

SENTENCES = (
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply on Tuesday.",
)

# First text line of skimage's page.png (rows found from the row-mean profile of the scan).
PAGE_LINE_ROWS = (12, 40)


def _nchw(img: np.ndarray, mean, std) -> np.ndarray:
    x = (img.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def _shape(name: str, key: str | None = None) -> tuple[int, ...]:
    entry = get(name)
    shapes = entry.input_shapes
    return shapes[key] if key else next(iter(shapes.values()))


def example_inputs(name: str, photo: str | None = None, index: int = 0) -> dict[str, np.ndarray]:
    """One real input set (batch 1) for zoo model ``name``; ``photo``/``index`` select the sample."""
    entry = get(name)
    key = next(iter(entry.input_shapes))
    if name in ("efficientnet-lite0", "mobilenetv2"):
        scheme = "tf-lite" if name == "efficientnet-lite0" else "torchvision"
        return {key: data.preprocess(data.photo(photo or "chelsea"), 224, scheme)}
    if name == "mnist-cnn":
        from .builders.mnist_cnn import preprocess_mnist

        images, _ = data.mnist5k()
        return {key: preprocess_mnist(images[index:index + 1])}
    if name == "minilm-l6":
        from ..data.tokenizer import encode

        ids, mask, types = encode(SENTENCES[index % len(SENTENCES)], max_len=128)
        return {"input_ids": ids[None], "attention_mask": mask[None], "token_type_ids": types[None]}
    if name.endswith("-det"):
        _, _, h, w = _shape(name)
        img = data.resize(data.photo(photo or "page"), w, h)
        return {key: _nchw(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}
    if name.endswith("-rec"):
        _, _, h, w = _shape(name)
        top, bottom = PAGE_LINE_ROWS
        img = data.resize(data.photo("page")[top:bottom], w, h)
        return {key: _nchw(img, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}
    if name in ("blazeface", "selfie-segmentation"):
        _, h, w, _ = _shape(name)
        img = data.resize(data.center_crop(data.photo(photo or "astronaut")), w, h).astype(np.float32)
        x = img / 127.5 - 1.0 if name == "blazeface" else img / 255.0
        return {key: x[None].astype(np.float32)}
    if name == "yolov8n":
        _, _, h, w = _shape(name)
        img = data.resize(data.center_crop(data.photo(photo or "astronaut")), w, h)
        return {key: _nchw(img, [0, 0, 0], [1, 1, 1])}
    raise ZooError(f"no example inputs defined for {name!r}")
