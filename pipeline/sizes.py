"""Size policies: the plan of (resolution, batch size) for every batch of an epoch.

A policy is data the loader reads, not code in the trainer: the loader asks for the epoch's
plan and yields batches shaped accordingly, and the trainer only reads each batch's shape.
Plans depend on (epoch, number of samples) alone, so every rank of a distributed run
computes the same plan without talking to the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.config import check_positive_int


@dataclass(frozen=True)
class Step:
    """One batch of the plan: crop side in pixels, number of images, and how many
    independently augmented copies of each distinct image it holds (batch augmentation),
    so it draws batch_size // copies images from the epoch's order."""

    res: int
    batch_size: int
    copies: int = 1

    @property
    def unique(self) -> int:
        return self.batch_size // self.copies


class SizePolicy(Protocol):
    def plan(self, epoch: int, num_samples: int, drop_last: bool) -> list[Step]:
        """The batches of `epoch` over `num_samples` images, in order."""
        ...

    def nominal_res(self, epoch: int) -> int:
        """The one side that stands for the epoch: the side of a fixed-size epoch of the
        same cost (what evaluation and the FixRes rule start from)."""
        ...


def constant_batches(res: int, batch_size: int, num_samples: int, drop_last: bool) -> list[Step]:
    full, rest = divmod(num_samples, batch_size)
    steps = [Step(res, batch_size)] * full
    if rest and not drop_last:
        steps.append(Step(res, rest))
    return steps


@dataclass(frozen=True)
class ConstantSize:
    """FixRes training and every evaluation: one resolution, one batch size."""

    res: int
    batch_size: int

    def __post_init__(self):
        check_positive_int("resolution", self.res)
        check_positive_int("batch size", self.batch_size)

    def plan(self, epoch: int, num_samples: int, drop_last: bool) -> list[Step]:
        return constant_batches(self.res, self.batch_size, num_samples, drop_last)

    def nominal_res(self, epoch: int) -> int:
        return self.res


@dataclass(frozen=True)
class LinearRamp:
    """Progressive resizing: the side grows linearly from `start_res` at `start_epoch` to
    `end_res` at `end_epoch` (constant outside), rounded to a multiple of `step` so that
    the few distinct sizes keep kernels and allocator caches warm."""

    start_res: int
    end_res: int
    start_epoch: int
    end_epoch: int
    batch_size: int
    step: int = 32

    def __post_init__(self):
        for name in ("start_res", "end_res", "batch_size", "step"):
            check_positive_int(name.replace("_", " "), getattr(self, name))
        if not 0 <= self.start_epoch <= self.end_epoch:
            raise ValueError(f"ramp epochs must satisfy 0 <= start <= end, got {self.start_epoch}, {self.end_epoch}")

    def res_at(self, epoch: int) -> int:
        span = max(self.end_epoch - self.start_epoch, 1)
        t = min(max((epoch - self.start_epoch) / span, 0.0), 1.0)
        res = self.start_res + t * (self.end_res - self.start_res)
        return max(self.step, int(round(res / self.step)) * self.step)

    def plan(self, epoch: int, num_samples: int, drop_last: bool) -> list[Step]:
        return constant_batches(self.res_at(epoch), self.batch_size, num_samples, drop_last)

    def nominal_res(self, epoch: int) -> int:
        return self.res_at(epoch)


MIX_MODES = ("B+", "D+")


@dataclass(frozen=True)
class MixSize:
    """MixSize (Hoffer et al.): every step draws its side S from a distribution, and the cost
    per step stays about that of B0 images at the reference side S0.

    B+: B(S) = round(B0 (S0/S)^2) images, each image of the epoch seen exactly once (the last
        batch takes the remainder, so the epoch has no dropped images).
    D+: B0 distinct images per step, each in k = round((S0/S)^2) independently augmented
        copies (batch augmentation).
    Steps are drawn from (seed, epoch) only, so every rank draws the same plan.
    """

    sizes: tuple[int, ...]
    weights: tuple[float, ...]
    batch_size: int  # B0, at the reference side
    mode: str = "B+"
    ref_size: int = 0  # S0; 0 means the largest size
    seed: int = 0

    def __post_init__(self):
        if not self.sizes:
            raise ValueError("MixSize needs at least one size")
        for size in self.sizes:
            check_positive_int("MixSize size", size)
        check_positive_int("batch size", self.batch_size)
        if len(self.weights) != len(self.sizes):
            raise ValueError(f"{len(self.weights)} weights for {len(self.sizes)} sizes")
        if any(not math.isfinite(w) or w < 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError(f"MixSize weights must be >= 0 and sum to a positive number, got {self.weights}")
        if self.mode not in MIX_MODES:
            raise ValueError(f"MixSize mode must be B+ or D+, got {self.mode!r}")
        if self.ref_size:
            check_positive_int("MixSize reference size", self.ref_size)
        for size in self.sizes:
            if self.step_for(size).batch_size < 1:
                raise ValueError(
                    f"batch size {self.batch_size} at reference size {self.s0} gives no image "
                    f"at size {size} (B+ needs B0 * (S0/S)^2 >= 0.5)"
                )

    @classmethod
    def around(cls, mean: int, spread: float, step: int, **kw) -> MixSize:
        """Sizes within two spreads of `mean`, multiples of `step`, Gaussian weights."""
        check_positive_int("MixSize mean size", mean)
        check_positive_int("size step", step)
        if not spread > 0:
            raise ValueError(f"MixSize spread must be positive, got {spread}")
        lo = max(step, int(math.ceil((mean - 2 * spread) / step)) * step)
        sizes = tuple(range(lo, int(mean + 2 * spread) + 1, step))
        weights = tuple(math.exp(-0.5 * ((s - mean) / spread) ** 2) for s in sizes)
        return cls(sizes, weights, **kw)

    @property
    def s0(self) -> int:
        return self.ref_size or max(self.sizes)

    def step_for(self, size: int) -> Step:
        ratio = (self.s0 / size) ** 2
        if self.mode == "B+":
            return Step(size, int(round(self.batch_size * ratio)))
        copies = max(1, int(round(ratio)))
        return Step(size, self.batch_size * copies, copies)

    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def plan(self, epoch: int, num_samples: int, drop_last: bool) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch, 0x313])  # salt: independent of order and crops
        sizes = np.asarray(self.sizes)
        steps, left = [], num_samples
        while left > 0:
            # a block of draws at a time: one rng call per block, not per step
            for size in rng.choice(sizes, size=64, p=self.probabilities()):
                step = self.step_for(int(size))
                if step.unique >= left:
                    if self.mode == "B+" or not drop_last or step.unique == left:
                        steps.append(Step(step.res, left * step.copies, step.copies))
                    left = 0
                    break
                steps.append(step)
                left -= step.unique
        return steps

    def pixels_per_image(self) -> float:
        """Expected pixels processed per image of the epoch (copies included): a fixed-size
        epoch at side K costs K^2 per image."""
        steps = [self.step_for(s) for s in self.sizes]
        pixels = sum(p * st.batch_size * st.res**2 for p, st in zip(self.probabilities(), steps))
        images = sum(p * st.unique for p, st in zip(self.probabilities(), steps))
        return pixels / images

    def nominal_res(self, epoch: int) -> int:
        return int(round(math.sqrt(self.pixels_per_image())))
