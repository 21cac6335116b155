"""The one loader interface every backend implements, and the pieces they share.

A loader is an iterable of batches `(images, labels)`:
  images: (N, 3, K, K) float, normalised, channels-last memory format, on the training device
          (fp16/bf16 on CUDA under AMP, fp32 on CPU);
  labels: (N,) int64 on the same device.
`len(loader)` is the number of batches this epoch; `set_epoch(e)` is the only mutator: it
reseeds order and augmentation from (seed, e) and asks the size policy for the epoch's plan.
The trainer never learns which backend produced a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from loaders.orientation import ORIENTATIONS
from pipeline.jitter import color_jittered, jitter_factors
from pipeline.sizes import SizePolicy, Step
from pipeline.transforms import CenterCropSpec, RandomResizedCropSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# rrc: RandomResizedCrop + flip (train DA); center: resize + centre crop (test DA);
# center_shift: resize + the centre crop shifted horizontally at random + flip (test DA2's geometry)
AUGMENTATIONS = ("rrc", "center", "center_shift")
# How pil resizes its crops (loaders/pil.py, decode_crop). auto: torch for random-resized crops
# (whole-pixel boxes: torchvision's crop-then-resize, in a third of Pillow's time), Pillow for
# centre crops (fractional boxes: torchvision's Resize + CenterCrop exactly, as evaluation needs).
RESAMPLERS = ("auto", "torch", "pillow")


class Loader(Protocol):
    classes: list[str]  # label i is classes[i]
    summary: str  # one line on the data behind it, for logs
    skipped: dict[str, int]  # files left out (--skip-bad), counted by reason

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class LoaderConfig:
    """What every backend needs. `root` is one split folder (root/<class>/<image>)."""

    backend: str
    root: str | None
    policy: SizePolicy
    augment: str  # one of AUGMENTATIONS
    shuffle: bool  # shuffle from (seed, epoch), drop the last partial batch, equal shards
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    seed: int = 0
    workers: int = 2
    worker_threads: bool = True  # pil, nvjpeg: workers are threads of this process (false: processes)
    rank: int = 0
    world_size: int = 1
    classes: list[str] | None = None  # map folders onto this list (eval uses train's classes)
    skip_bad: bool = False
    check: str = "header"  # "header": cheap checks; "full": decode every image while scanning
    rescan: bool = False  # scan the folder again instead of reusing its stored index (loaders/indexcache.py)
    rrc: RandomResizedCropSpec = RandomResizedCropSpec()
    center: CenterCropSpec = CenterCropSpec()
    synthetic_samples: int = 1024  # synthetic backend without a data folder
    reduced_decode: bool = True  # pil: decode JPEGs at the smallest DCT scale covering the crop
    repeats: int = 1  # repeated augmentation (shuffled epochs): each image this many times, in other crops
    color_jitter: float = 0.0  # brightness, contrast and saturation factors drawn from [1 - x, 1 + x]
    turbo_decode: bool = True  # pil: JPEGs decoded by libjpeg-turbo through simplejpeg (false: through Pillow)
    orientation: str = "stored"  # EXIF orientation: "stored" or "apply" (loaders/orientation.py), every backend
    resampler: str = "auto"  # pil: "torch" (uint8 kernel, box rounded to whole pixels), "pillow"; see RESAMPLERS

    def __post_init__(self):
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {self.resampler!r}")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {self.orientation!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeated augmentation count must be an integer >= 1, got {self.repeats!r}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"colour jitter strength must be in [0, 1), got {self.color_jitter}")


def epoch_order(
    num_samples: int, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool, repeats: int = 1
) -> np.ndarray:
    """This rank's sample indices for the epoch.

    Training shuffles from (seed, epoch). With repeated augmentation (`repeats` = k > 1, the
    sampler of FixRes and DeiT) the epoch takes the first m ~ N/k images of the permutation,
    each k times in a row, so that an epoch costs what a plain one does; taking the ranks'
    shards as every world_size-th entry spreads the copies of an image over ranks (where
    world_size >= k). m is rounded down so that the m k entries split evenly: every rank gets
    the same count, hence the same size plan, and every image of the epoch exactly k copies.
    Evaluation keeps every sample exactly once: rank r takes r, r + world, ... (shards differ
    by at most one).
    """
    if shuffle:
        chosen = np.random.default_rng([seed, epoch]).permutation(num_samples)
        step = world_size // math.gcd(repeats, world_size)  # m k is a multiple of world_size
        distinct = num_samples // repeats // step * step
        order = np.repeat(chosen[:distinct], repeats)
    else:
        order = np.arange(num_samples)
    return order[rank::world_size]


def epoch_plan(cfg: LoaderConfig, num_samples: int, epoch: int) -> tuple[list[Step], list[np.ndarray]]:
    """This rank's steps of `epoch` (from the size policy) and the sample ids of each."""
    order = epoch_order(num_samples, cfg.seed, epoch, cfg.rank, cfg.world_size, cfg.shuffle, cfg.repeats)
    steps = cfg.policy.plan(epoch, len(order), drop_last=cfg.shuffle)
    return steps, split_by_plan(order, steps)


def split_by_plan(order: np.ndarray, steps: list[Step]) -> list[np.ndarray]:
    """The sample ids of each step: consecutive chunks of `order`, each id repeated
    `copies` times in a row (every copy gets its own crop downstream)."""
    ends = np.cumsum([s.unique for s in steps])
    if len(ends) and ends[-1] > len(order):
        raise ValueError(f"size plan asks for {ends[-1]} images but the epoch has {len(order)}")
    chunks = np.split(order[: ends[-1] if len(ends) else 0], ends[:-1])
    return [np.repeat(chunk, step.copies) for chunk, step in zip(chunks, steps)]


def jitter_plan(cfg: LoaderConfig, epoch: int, batch_sizes: list[int]) -> list[torch.Tensor | None]:
    """Colour-jitter factors (B, 3) of each batch of the epoch on `cfg.device`, or None each
    without jitter. Drawn from (seed, epoch, rank) and the batch sizes alone, apart from crops
    and flips, so that every backend jitters the same image of the same plan the same way.
    The batches' factors are views of one tensor copied to the device once per epoch: a copy
    per batch from pageable host memory would wait for the GPU at every step."""
    if not cfg.color_jitter:
        return [None] * len(batch_sizes)
    factors = jitter_factors(np.random.default_rng([cfg.seed, epoch, cfg.rank, 2]), sum(batch_sizes), cfg.color_jitter)
    return list(torch.from_numpy(factors).to(cfg.device).split(batch_sizes))


_stats_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def normalisation(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each of shape (3,), with x * scale + shift = (x - mean) / std for pixel
    values x on the 0-255 scale; cached per device and dtype."""
    key = (str(device), dtype)
    if key not in _stats_cache:
        mean = torch.tensor(IMAGENET_MEAN, device=device).mul(255)
        scale = torch.tensor(IMAGENET_STD, device=device).mul(255).reciprocal()
        _stats_cache[key] = (scale.to(dtype), (-mean * scale).to(dtype))
    return _stats_cache[key]


def to_model_input(
    images: torch.Tensor, device: torch.device, dtype: torch.dtype, jitter: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW in channels-last memory format on `device`.

    NHWC storage viewed as NCHW *is* channels-last, so no copy is needed for the layout;
    the uint8 transfer moves a quarter of the bytes of a float one.
    """
    return normalised(images.to(device, non_blocking=True).permute(0, 3, 1, 2), dtype, jitter)


def normalised(images: torch.Tensor, dtype: torch.dtype, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 NCHW batch -> normalised `dtype` on the same device, in the same memory format;
    colour-jittered first (in fp32) by the (N, 3) factors `jitter` when given."""
    scale, shift = normalisation(images.device, dtype)
    if jitter is not None:
        images = color_jittered(images.float(), jitter).to(dtype)
    nhwc = images.permute(0, 2, 3, 1)
    if not nhwc.is_contiguous():
        return torch.addcmul(shift, nhwc, scale).permute(0, 3, 1, 2)
    # Channels-last memory is rows of W x 3 values: against a scale and shift tiled to a row's
    # length, the kernel's inner loop runs over whole rows (a broadcast of 3 values makes it
    # loop in threes), and a conversion, then one fused multiply-add in place, beats addcmul
    # converting uint8 as it reads, and convert, multiply, add (docs/results/measured-notes.md).
    width = nhwc.shape[2]
    rows = nhwc.reshape(-1, width * 3).to(dtype)
    torch.addcmul(shift.repeat(width), rows, scale.repeat(width), out=rows)
    return rows.view(nhwc.shape).permute(0, 3, 1, 2)
