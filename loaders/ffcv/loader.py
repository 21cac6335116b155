"""The ffcv backend: a .beton read by FFCV's compiled pipeline, behind the loader interface.

Images: the seeded crop decoder (decoders.py; train "rrc": RandomResizedCrop + flip, eval
"center": a centre square of crop_ratio x the shorter side, FFCV's crop; "center_shift": that
square shifted horizontally + flip), then ToTensor and ToTorchImage(channels_last=True), with
a copy to the device (non-blocking, on FFCV's own CUDA streams) in between on a GPU; the uint8
batch is colour-jittered (factors planned as for every backend) and normalised to the loader's
dtype on the device.

Order and plan are the interface's: `epoch_order` (seeded from (seed, epoch), trimmed to
equal shards, each rank its own) split by the size policy's plan into batches, which FFCV
serves one by one, each at its own side and size (MixSize). FFCV's RANDOM order seeds with
seed + epoch (seed 0 epoch 1 equals seed 1 epoch 0), its distributed mode pads shards with
repeated samples (counted twice in evaluation) and QUASI_RANDOM does not shard at all; one
planned order avoids all three and gives every backend the same sequence of images.

Per-batch sides and sizes (chosen over one FFCV loader per side, which would compile and
prefetch once per side and need one thread pool each): one pipeline whose buffers are
allocated each epoch for the plan's largest batch at its largest side; every batch is
decoded at its own side into the front of its buffer (decoders.py). A constant plan
allocates exactly what it uses. Compilation (numba, seconds) happens once, in the
constructor, on one batch: no epoch's throughput is charged for it, whatever its sides.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.compiler import Compiler
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage
from numba.core.errors import NumbaWarning

from loaders.base import LoaderConfig, epoch_plan, jitter_plan, normalised
from loaders.ffcv import torch_threads_kept
from loaders.ffcv.beton import Beton, Layout
from loaders.ffcv.decoders import BATCH, OBJECT_MODE_WARNING, SEED, SIDE, CompactToDevice, PlannedCrop
from loaders.imagefolder import BadDataError
from pipeline.sizes import Step

BATCHES_AHEAD = 3  # batches FFCV prepares ahead of the consumer


class PlannedLoader(Loader):
    """FFCV's Loader serving the batches we plan for the epoch: `batches` holds each batch's
    sample ids (repeated ids for augmented copies) and `sides` its side. `batch_size` is the
    largest batch and the decoder's output size the largest side, which is what FFCV
    allocates its buffers for: exact for a constant plan, about (S_max/S_min)^2 times a
    batch's bytes for a B+ or D+ plan (pinned host memory, and device memory on a GPU).
    Memory is read through the OS page cache (os_cache=True), which needs no schedule."""

    def __init__(self, decoder: PlannedCrop, **kwargs):
        self.decoder = decoder
        self.batches, self.sides = [], []
        super().__init__(**kwargs)

    def plan(self, batches: list[np.ndarray], sides: list[int]) -> None:
        self.batches, self.sides = batches, sides
        self.batch_size = max((len(b) for b in batches), default=1)
        self.decoder.output_size = (max(sides, default=1),) * 2

    def __iter__(self):
        Compiler.set_num_threads(self.num_workers)
        return PlannedEpoch(self)

    def __len__(self) -> int:
        return len(self.batches)


class PlannedEpoch(EpochIterator):
    """FFCV's epoch iterator over the loader's planned batches instead of equal chunks of its
    order. EpochIterator cuts its order by batch_size (and hands those chunks to the memory
    manager, which the OS cache ignores) and starts its thread at the end of __init__:
    `start` is where the planned batches replace the chunks."""

    def __init__(self, loader: PlannedLoader):
        self.planned, self.sides = loader.batches, loader.sides
        super().__init__(loader, np.concatenate([np.zeros(0, np.int64), *self.planned]))

    def start(self):
        self.iter_ixes = iter(self.planned)
        super().start()

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        # batches run one at a time on this thread, in order: the decoder reads side and number here
        self.loader.decoder.cell[SIDE] = self.sides[b_ix]
        self.loader.decoder.cell[BATCH] = b_ix
        return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)


class FfcvLoader:
    def __init__(self, cfg: LoaderConfig, beton: Beton):
        self.cfg = cfg
        self.classes = cfg.classes or beton.classes
        self.label_map = label_map(beton, self.classes, cfg.device)
        self.num_samples = len(beton)
        self.skipped = beton.skipped
        self.image_first = beton.layout.image_first
        self.summary = f"ffcv: {beton.report()}"
        steps, batches = self.plan(0)
        side = max((s.res for s in steps), default=1)
        self.decoder = PlannedCrop.for_config(cfg, side)
        gpu = cfg.device.type == "cuda"
        images = [
            self.decoder,
            ToTensor(),
            *([CompactToDevice(cfg.device)] if gpu else []),
            ToTorchImage(channels_last=True),
        ]
        labels = [IntDecoder(), ToTensor(), *([ToDevice(cfg.device)] if gpu else [])]
        with torch_threads_kept():
            self.loader = PlannedLoader(
                self.decoder,
                fname=str(beton.path),
                batch_size=1,
                num_workers=max(cfg.workers, 1),
                os_cache=True,
                order=OrderOption.SEQUENTIAL,
                drop_last=False,
                batches_ahead=BATCHES_AHEAD,
                pipelines=pipelines(beton.layout, images, labels),
            )
            self.compile_seconds = self.compile(batches[:1], [s.res for s in steps[:1]])
        self.set_epoch(0)

    def plan(self, epoch: int) -> tuple[list[Step], list[np.ndarray]]:
        """The epoch's steps and the sample ids of each."""
        steps, ids = epoch_plan(self.cfg, self.num_samples, epoch)
        return steps, [i.astype(np.int64) for i in ids]

    def compile(self, batches: list[np.ndarray], sides: list[int]) -> float:
        """Run one batch so that numba compiles now (once: sides and batch sizes are not
        types); returns the seconds it took."""
        start = time.perf_counter()
        self.loader.plan(batches, sides)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=OBJECT_MODE_WARNING, category=NumbaWarning)
            for _ in self.loader:
                pass
        return time.perf_counter() - start

    def set_epoch(self, epoch: int) -> None:
        self.steps, batches = self.plan(epoch)
        self.loader.plan(batches, [s.res for s in self.steps])
        self.jitter = jitter_plan(self.cfg, epoch, [len(b) for b in batches])
        cfg = self.cfg
        self.decoder.cell[SEED] = int(np.random.SeedSequence([cfg.seed, epoch, cfg.rank]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        with torch_threads_kept():
            batches = iter(self.loader)
        ordered = (out if self.image_first else out[::-1] for out in batches)
        for (images, labels), jitter in zip(ordered, self.jitter):
            labels = labels.view(-1)
            # FFCV reuses its buffers a few batches later: the labels must be copied out.
            labels = self.label_map[labels] if self.label_map is not None else labels.clone()
            yield normalised(images, self.cfg.dtype, jitter), labels.to(self.cfg.device, non_blocking=True)


def pipelines(layout: Layout, images: list, labels: list) -> dict:
    """FFCV's pipelines by field name: the image and label ones, None (not read) for the others."""
    return {**dict.fromkeys(layout.fields), layout.image: images, layout.label: labels}


def label_map(beton: Beton, classes: list[str], device: torch.device) -> torch.Tensor | None:
    """Stored label -> index into `classes` (the training classes, for evaluation), or None
    when they are the same list."""
    if classes == beton.classes:
        return None
    unknown = sorted(set(beton.classes) - set(classes))
    if unknown:
        raise BadDataError(f"{beton.path} has classes that the class list lacks: {unknown[:10]}")
    return torch.tensor([classes.index(c) for c in beton.classes], dtype=torch.int64, device=device)
