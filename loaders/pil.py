"""Pillow backend: ImageFolder JPEGs decoded by Pillow in worker processes.

The main process plans the epoch (order, sizes, crop boxes, flips, colour jitter); each worker turns one
planned batch into a uint8 NHWC array. Workers are pure functions of their task, so they
persist across epochs and the result does not depend on how many there are. Normalisation
and the channels-last layout happen on the device, on a quarter of the bytes.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from loaders.base import LoaderConfig, to_model_input
from loaders.imagefile import ImageTooLarge, open_image
from loaders.imagefolder import ImageIndex
from loaders.plan import BatchTask, plan_epoch


DCT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg can apply while decoding (Image.draft)


def dct_scale(box_w: float, box_h: float, res: int) -> int:
    """The largest JPEG DCT reduction at which the box still spans at least `res` pixels on
    both sides, so the resize to res x res still only shrinks (1 when the crop is upsampled)."""
    side = min(box_w, box_h)
    return next((s for s in DCT_SCALES if side / s >= res), 1)


def decode_crop(path: str, box, res: int, reduce: bool = True) -> np.ndarray:
    """(res, res, 3) uint8: the box of the image resampled to res x res (bilinear, antialiased).

    Resizing with `box` resamples only the region and reads the pixels just outside it as
    filter support, as a full-image Resize followed by a crop would. With `reduce`, a JPEG is
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the box at res x res:
    the IDCT then does part of the downscaling for a fraction of the decoding work.
    """
    try:
        with open_image(path) as img:  # refuses a decompression bomb: the file may have changed since the scan
            x, y, w, h = (float(v) for v in box)
            scale = dct_scale(w, h, res) if reduce else 1
            full_width = img.width
            drafted = img.draft("RGB", (img.width // scale, img.height // scale)) if scale > 1 else None
            if drafted is not None:  # None: not a JPEG, decoded at full size
                f = drafted[1][2] / full_width  # draft gives the full image's extent in decoded pixels
                x, y, w, h = x * f, y * f, w * f, h * f
            if img.mode != "RGB":
                img = img.convert("RGB")
            out = img.resize((res, res), Image.BILINEAR, box=(x, y, x + w, y + h))
            return np.asarray(out)
    except ImageTooLarge:  # names the file already
        raise
    except OSError as e:
        raise OSError(f"cannot decode {path}: {e} (scan with --check full to find such files first)") from e


class PlannedBatches(Dataset):
    """Maps a BatchTask to (uint8 images (B, K, K, 3), int64 labels (B,), colour-jitter factors
    (B, 3) or None)."""

    def __init__(self, index: ImageIndex, reduce: bool = True):
        self.paths = index.paths
        self.labels = torch.from_numpy(index.labels)
        self.reduce = reduce

    def __getitem__(self, task: BatchTask):
        out = np.empty((len(task.indices), task.res, task.res, 3), dtype=np.uint8)
        for slot, (i, box, flip) in enumerate(zip(task.indices, task.boxes, task.flips)):
            img = decode_crop(self.paths[i], box, task.res, self.reduce)
            out[slot] = img[:, ::-1] if flip else img
        return torch.from_numpy(out), self.labels[torch.from_numpy(task.indices)], task.jitter


class EpochTasks(Sampler):
    """The current epoch's tasks; lives in the main process, so persistent workers see each
    new epoch's plan without being restarted."""

    def __init__(self):
        self.tasks: list[BatchTask] = []

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self):
        return len(self.tasks)


class PilLoader:
    def __init__(self, cfg: LoaderConfig, index: ImageIndex):
        self.cfg = cfg
        self.index = index
        self.classes = index.classes
        self.summary = f"pil: {index.report()}"
        self.skipped = index.skipped_counts()
        self.sampler = EpochTasks()
        self.loader = DataLoader(
            self.batch_maker(), sampler=self.sampler, batch_size=None,
            num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
            pin_memory=cfg.device.type == "cuda")
        self.set_epoch(0)

    def batch_maker(self) -> Dataset:
        """What the workers run on each planned batch (the nvjpeg backend swaps in its own)."""
        return PlannedBatches(self.index, self.cfg.reduced_decode)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.tasks = plan_epoch(self.cfg, self.index, epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for images, labels, jitter in self.loader:
            yield (to_model_input(images, self.cfg.device, self.cfg.dtype, jitter),
                   labels.to(self.cfg.device, non_blocking=True))
