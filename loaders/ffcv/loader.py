"""The ffcv backend: a .beton read by FFCV's compiled pipeline, behind the loader interface.

Train ("rrc"): the seeded RandomResizedCrop + flip decoder (decoders.py). Eval ("center"):
FFCV's CenterCropRGBImageDecoder (a centre square of crop_ratio x the shorter side, resized
to K). Both then ToTensor and ToTorchImage(channels_last=True), with ToDevice (non-blocking,
on FFCV's own CUDA streams) in between on a GPU; the uint8 batch is normalised to the
loader's dtype on the device.

Order and plan are the interface's: `epoch_order` (seeded from (seed, epoch), trimmed to
equal shards, each rank its own) split by the size policy's plan, handed to FFCV as the
epoch's traversal order. FFCV's RANDOM order seeds with seed + epoch (seed 0 epoch 1 equals
seed 1 epoch 0), its distributed mode pads shards with repeated samples (counted twice in
evaluation) and QUASI_RANDOM does not shard at all; one planned order avoids all three and
gives every backend the same sequence of images.

The decoder's output size is read when each epoch's buffers are allocated, so set_epoch
changes the resolution without recompiling. Compilation (numba, seconds) happens once, in
the constructor, on one batch: the first epoch's throughput is not charged for it.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage
from numba.core.errors import NumbaWarning

from loaders.base import LoaderConfig, epoch_order, normalised, split_by_plan
from loaders.ffcv import torch_threads_kept
from loaders.ffcv.beton import Beton
from loaders.ffcv.decoders import OBJECT_MODE_WARNING, SeededRandomResizedCrop
from loaders.imagefolder import BadDataError
from pipeline.sizes import Step

BATCHES_AHEAD = 3  # batches FFCV prepares ahead of the consumer


class PlannedLoader(Loader):
    """FFCV's Loader traversing the order we plan for the epoch (`planned`, sample ids in
    batch order, repeated ids for augmented copies), in chunks of `batch_size`."""

    def __init__(self, planned: np.ndarray, **kwargs):
        self.planned = planned
        super().__init__(**kwargs)

    def next_traversal_order(self):
        return self.planned

    def __len__(self) -> int:
        return -(-len(self.planned) // self.batch_size)


def epoch_shape(steps: list[Step]) -> tuple[int, int]:
    """(resolution, batch size) of a plan that FFCV can serve: one size and one batch size,
    only the last batch smaller."""
    if len({s.res for s in steps}) > 1 or len({s.batch_size for s in steps[:-1]}) > 1 \
            or steps[-1].batch_size > steps[0].batch_size:
        sizes = sorted({(s.res, s.batch_size) for s in steps})
        raise NotImplementedError(f"the ffcv backend serves one size and batch size per epoch; this plan has "
                                  f"(resolution, batch size) {sizes[:6]}")
    return steps[0].res, steps[0].batch_size


class FfcvLoader:
    def __init__(self, cfg: LoaderConfig, beton: Beton):
        self.cfg = cfg
        self.classes = cfg.classes or beton.classes
        self.label_map = label_map(beton, self.classes, cfg.device)
        self.num_samples = len(beton)
        self.skipped = beton.skipped
        self.summary = f"ffcv: {beton.report()}"
        first = self.plan(0)
        res, batch_size = epoch_shape(first[0]) if first[0] else (32, 1)
        if cfg.augment == "rrc":
            self.decoder = SeededRandomResizedCrop((res, res), cfg.rrc.scale, cfg.rrc.ratio)
        else:
            self.decoder = CenterCropRGBImageDecoder((res, res), cfg.center.crop_ratio)
        on_gpu = [ToDevice(cfg.device, non_blocking=True)] if cfg.device.type == "cuda" else []
        with torch_threads_kept():
            self.loader = PlannedLoader(
                first[1], fname=str(beton.path), batch_size=batch_size, num_workers=max(cfg.workers, 1),
                os_cache=True, order=OrderOption.SEQUENTIAL, drop_last=False, batches_ahead=BATCHES_AHEAD,
                pipelines={"image": [self.decoder, ToTensor(), *on_gpu, ToTorchImage(channels_last=True)],
                           "label": [IntDecoder(), ToTensor(), *on_gpu]})
            self.compile_seconds = self.compile(first[1][:batch_size])
        self.set_epoch(0)

    def plan(self, epoch: int) -> tuple[list[Step], np.ndarray]:
        """The epoch's steps and its sample ids in batch order."""
        cfg = self.cfg
        order = epoch_order(self.num_samples, cfg.seed, epoch, cfg.rank, cfg.world_size, cfg.shuffle)
        steps = cfg.policy.plan(epoch, len(order), drop_last=cfg.shuffle)
        ids = np.concatenate([np.zeros(0, np.int64), *split_by_plan(order, steps)]).astype(np.int64)
        return steps, ids

    def compile(self, ids: np.ndarray) -> float:
        """Run one batch so that numba compiles now; returns the seconds it took."""
        start = time.perf_counter()
        self.loader.planned = ids
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=OBJECT_MODE_WARNING, category=NumbaWarning)
            for _ in self.loader:
                pass
        return time.perf_counter() - start

    def set_epoch(self, epoch: int) -> None:
        self.steps, ids = self.plan(epoch)
        if self.steps:
            res, self.loader.batch_size = epoch_shape(self.steps)
            self.decoder.output_size = (res, res)
        self.loader.planned = ids
        if isinstance(self.decoder, SeededRandomResizedCrop):
            cfg = self.cfg
            self.decoder.set_seed(int(np.random.SeedSequence([cfg.seed, epoch, cfg.rank]).generate_state(1)[0]))

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        with torch_threads_kept():
            batches = iter(self.loader)
        for images, labels in batches:
            labels = labels.view(-1)
            # FFCV reuses its buffers a few batches later: the labels must be copied out.
            labels = self.label_map[labels] if self.label_map is not None else labels.clone()
            yield normalised(images, self.cfg.dtype), labels.to(self.cfg.device, non_blocking=True)


def label_map(beton: Beton, classes: list[str], device: torch.device) -> torch.Tensor | None:
    """Stored label -> index into `classes` (the training classes, for evaluation), or None
    when they are the same list."""
    if classes == beton.classes:
        return None
    unknown = sorted(set(beton.classes) - set(classes))
    if unknown:
        raise BadDataError(f"{beton.path} has classes that the class list lacks: {unknown[:10]}")
    return torch.tensor([classes.index(c) for c in beton.classes], dtype=torch.int64, device=device)
