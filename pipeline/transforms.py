"""Crop geometry of the augmentations, as data: one vectorised call per epoch.

Train: RandomResizedCrop with torchvision's semantics (area share ~ U(scale), log aspect
~ U(log ratio), 10 tries, then a central fall-back crop). Eval ("test DA"): resize the
shorter side to round(K / crop_ratio), then a centre crop of K. FixRes's "test DA2" for
fine-tuning: the same centre crop moved horizontally by a random shift.

Boxes are sampled for a whole epoch at once in the main process, from (seed, epoch), so
that the augmentation does not depend on the number of workers or on which worker decodes
which image, and so that a decoder knows the region it needs before it decodes (FFCV and
DALI decode only what the crop covers; Pillow can decode at a reduced DCT scale).
A box is (x, y, w, h) in source pixels, floats for eval (the resize is fractional).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TRIES = 10  # torchvision's RandomResizedCrop.get_params


@dataclass(frozen=True)
class RandomResizedCropSpec:
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandomResizedCrop scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop ratio must satisfy 0 < lo <= hi, got {self.ratio}")


@dataclass(frozen=True)
class CenterCropSpec:
    """K_image / K_test: 0.875 gives the 256 -> 224 of the ImageNet protocol."""

    crop_ratio: float = 0.875

    def __post_init__(self):
        if not 0 < self.crop_ratio <= 1:
            raise ValueError(f"crop ratio must be in (0, 1], got {self.crop_ratio}")

    def resize_side(self, res: int) -> int:
        return int(round(res / self.crop_ratio))


def random_resized_crop_boxes(
    rng: np.random.Generator,
    widths: np.ndarray,
    heights: np.ndarray,
    spec: RandomResizedCropSpec = RandomResizedCropSpec(),
) -> np.ndarray:
    """(N, 4) int64 boxes (x, y, w, h), one per image, distributed as torchvision samples them."""
    n = len(widths)
    W = np.asarray(widths, dtype=np.float64)[:, None]
    H = np.asarray(heights, dtype=np.float64)[:, None]
    area = W * H * rng.uniform(spec.scale[0], spec.scale[1], size=(n, TRIES))
    aspect = np.exp(rng.uniform(math.log(spec.ratio[0]), math.log(spec.ratio[1]), size=(n, TRIES)))
    # np.round is half-to-even like Python's round(), which torchvision uses.
    w = np.round(np.sqrt(area * aspect))
    h = np.round(np.sqrt(area / aspect))
    ok = (w > 0) & (h > 0) & (w <= W) & (h <= H)
    first = ok.argmax(axis=1)
    found = ok[np.arange(n), first]
    w = w[np.arange(n), first]
    h = h[np.arange(n), first]
    u = rng.random(size=(n, 2))  # offsets drawn for every image keep the stream aligned
    x = np.floor(u[:, 0] * (W[:, 0] - w + 1))
    y = np.floor(u[:, 1] * (H[:, 0] - h + 1))
    boxes = np.stack([x, y, w, h], axis=1)
    if not found.all():
        boxes[~found] = fallback_boxes(W[~found, 0], H[~found, 0], spec.ratio)
    return boxes.astype(np.int64)


def fallback_boxes(W: np.ndarray, H: np.ndarray, ratio: tuple[float, float]) -> np.ndarray:
    """torchvision's fall-back: the whole image, clipped to the aspect range, centred."""
    in_ratio = W / H
    w = W.copy()
    h = H.copy()
    narrow = in_ratio < ratio[0]
    wide = in_ratio > ratio[1]
    h[narrow] = np.round(W[narrow] / ratio[0])
    w[wide] = np.round(H[wide] * ratio[1])
    x = np.floor((W - w) / 2)  # torchvision: (width - w) // 2
    y = np.floor((H - h) / 2)
    return np.stack([x, y, w, h], axis=1)


def resized_extent(
    widths: np.ndarray, heights: np.ndarray, res: int, spec: CenterCropSpec = CenterCropSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) after torchvision's Resize(S): the shorter side scaled to S, the longer
    one to int(S * long / short)."""
    W = np.asarray(widths, dtype=np.float64)
    H = np.asarray(heights, dtype=np.float64)
    side = spec.resize_side(res)
    short = np.minimum(W, H)
    return np.where(W <= H, side, np.floor(side * W / short)), np.where(W <= H, np.floor(side * H / short), side)


def center_crop_boxes(
    widths: np.ndarray, heights: np.ndarray, res: int, spec: CenterCropSpec = CenterCropSpec()
) -> np.ndarray:
    """(N, 4) float boxes in source pixels equal to torchvision's Resize(S) + CenterCrop(K).

    The centre crop starts at round((resized - K) / 2). Mapping the K x K window back through
    the (per-axis) scale gives the source region, so a decoder can resample only that region.
    """
    rw, rh = resized_extent(widths, heights, res, spec)
    return source_boxes(widths, heights, rw, rh, np.round((rw - res) / 2.0), np.round((rh - res) / 2.0), res)


def shifted_center_crop_boxes(
    rng: np.random.Generator, widths: np.ndarray, heights: np.ndarray, res: int, spec: CenterCropSpec = CenterCropSpec()
) -> np.ndarray:
    """(N, 4) float boxes of test DA2 (FixRes): the centre crop of `center_crop_boxes` moved
    horizontally. As in FixRes's code, a shift of up to the centre offset x0 (uniform integer
    in [0, x0]) in a random direction, kept inside the resized image; the vertical position
    and the size are the centre crop's."""
    rw, rh = resized_extent(widths, heights, res, spec)
    x0 = np.round((rw - res) / 2.0)
    shift = np.floor(rng.random(len(x0)) * (x0 + 1)) * np.where(rng.random(len(x0)) < 0.5, -1, 1)
    x = np.clip(x0 + shift, 0, rw - res)
    return source_boxes(widths, heights, rw, rh, x, np.round((rh - res) / 2.0), res)


def source_boxes(widths, heights, rw: np.ndarray, rh: np.ndarray, x: np.ndarray, y: np.ndarray, res: int) -> np.ndarray:
    """The K x K windows at (x, y) of the resized images, in source pixels."""
    sx = np.asarray(widths, dtype=np.float64) / rw
    sy = np.asarray(heights, dtype=np.float64) / rh
    return np.stack([x * sx, y * sy, res * sx, res * sy], axis=1)


def flips(rng: np.random.Generator, n: int, p: float = 0.5) -> np.ndarray:
    return rng.random(n) < p
