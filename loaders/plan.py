"""The epoch plan of the ImageFolder backends: which images each batch holds, at what size,
cropped where and flipped or not.

Planning in the main process from (seed, epoch) alone makes the augmentation independent of
worker counts and decoder threads, lets a decoder read only the region it needs, and gives
every backend over the same data (pil, dali) the same crops for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loaders.base import LoaderConfig, epoch_plan
from loaders.imagefolder import ImageIndex
from loaders.orientation import codes, own_flips, shown_sizes, stored_boxes
from pipeline.transforms import center_crop_boxes, flips, random_resized_crop_boxes, shifted_center_crop_boxes


@dataclass(frozen=True)
class BatchTask:
    """Everything a decoder needs to produce one batch."""

    res: int
    indices: np.ndarray  # (B,) sample ids into the index
    boxes: np.ndarray  # (B, 4) source regions (x, y, w, h)
    flips: np.ndarray  # (B,) bool
    # (B,) uint8 EXIF codes that turn each crop (before its flip), or None where all are 1: the boxes
    # are then in the stored frame, and the crop resampled from one is turned (loaders/orientation.py)
    orientations: np.ndarray | None = None

    def own_flips(self) -> np.ndarray:
        return own_flips(self.flips, self.orientations)


def plan_epoch(cfg: LoaderConfig, index: ImageIndex, epoch: int) -> list[BatchTask]:
    """This rank's batches of `epoch`: order and sizes from the policy, crop boxes of the
    augmentation (pipeline/transforms.py) and flips. The colour-jitter factors (`jitter_plan`)
    stay with the loader, on the device: the workers never need them."""
    steps, ids = epoch_plan(cfg, len(index), epoch)
    rng = np.random.default_rng([cfg.seed, epoch, cfg.rank, 1])
    tags = codes(cfg.orientation, index.orientations, len(index))
    tasks = []
    for step, idx in zip(steps, ids):
        turns = tags[idx]
        w, h = shown_sizes(index.sizes[idx], turns).T
        if cfg.augment == "rrc":
            boxes, flipped = random_resized_crop_boxes(rng, w, h, cfg.rrc), flips(rng, len(idx))
        elif cfg.augment == "center_shift":
            boxes, flipped = shifted_center_crop_boxes(rng, w, h, step.res, cfg.center), flips(rng, len(idx))
        else:
            boxes, flipped = center_crop_boxes(w, h, step.res, cfg.center), np.zeros(len(idx), bool)
        if (turns != 1).any():
            tasks.append(BatchTask(step.res, idx, stored_boxes(boxes, turns, index.sizes[idx]), flipped, turns))
        else:
            tasks.append(BatchTask(step.res, idx, boxes, flipped))
    return tasks


def decode_regions(boxes: np.ndarray, sizes: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) int regions (x, y, w, h) to decode for (N, 4) crop boxes resampled to res: the box
    widened by the linear filter's reach (one output pixel, at least one source pixel) and
    clipped to the image."""
    start, extent = boxes[:, :2], boxes[:, 2:]
    reach = np.ceil(np.maximum(extent / res, 1.0)) + 1
    lo = np.maximum(np.floor(start - reach), 0)
    hi = np.minimum(np.ceil(start + extent + reach), sizes)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.int32)
