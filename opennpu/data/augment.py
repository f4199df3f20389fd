"""Deterministic augmented image sets made from the real photos of ``opennpu.data.PHOTOS``.

``imagenet_eval_set`` gives accuracy studies a few hundred distinct inputs (random crops, scales, flips of
the bundled photos, preprocessed for an ImageNet classifier); ``imagenet_calibration_set`` draws from a
different random stream and a different crop-scale range, so calibration and evaluation inputs never
coincide.
"""

from __future__ import annotations

import numpy as np

from . import PHOTOS, photo, preprocess

# the grey scanned page is not a natural image; classifiers see only the colour photos
NATURAL_PHOTOS = tuple(n for n in PHOTOS if n != "page")


def _augmented(n: int, size: int, scheme: str, seed: int, scale_range: tuple[float, float]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        name = NATURAL_PHOTOS[i % len(NATURAL_PHOTOS)]
        img = photo(name)
        h, w = img.shape[:2]
        frac = rng.uniform(*scale_range)  # crop side as a fraction of the short side
        side = max(16, int(round(min(h, w) * frac)))
        aspect = rng.uniform(0.8, 1.25)
        ch, cw = min(h, int(round(side * np.sqrt(aspect)))), min(w, int(round(side / np.sqrt(aspect))))
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        crop = img[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)
        # preprocess() centre-crops a square and resizes; the random crop above supplies the variety
        out.append(preprocess(crop, size, scheme))
    return out


def imagenet_eval_set(n: int = 200, size: int = 224, scheme: str = "torchvision", seed: int = 0) -> list[np.ndarray]:
    """``n`` inputs (each 1x3xSxS float32) from random crops (35-100% of the short side, aspect 0.8-1.25),
    horizontal flips and rescaling of the bundled photos; deterministic for a given seed."""
    return _augmented(n, size, scheme, seed, (0.35, 1.0))


def imagenet_calibration_set(n: int = 64, size: int = 224, scheme: str = "torchvision",
                             seed: int = 1000) -> list[np.ndarray]:
    """Calibration inputs disjoint from the eval set: another random stream (seed) and crop scales
    (25-90%) the eval set's draws do not share."""
    return _augmented(n, size, scheme, seed, (0.25, 0.9))


def batched(samples: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Stack 1xCxHxW samples into batches of ``batch`` (the last one may be smaller)."""
    return [np.concatenate(samples[i:i + batch]) for i in range(0, len(samples), batch)]


__all__ = ["NATURAL_PHOTOS", "batched", "imagenet_calibration_set", "imagenet_eval_set"]
