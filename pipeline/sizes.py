"""Size policies: the plan of (resolution, batch size) for every batch of an epoch.

A policy is data the loader reads, not code in the trainer: the loader asks for the epoch's
plan and yields batches shaped accordingly, and the trainer only reads each batch's shape.
Plans depend on (epoch, number of samples) alone, so every rank of a distributed run
computes the same plan without talking to the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


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
            raise ValueError(
                f"ramp epochs must satisfy 0 <= start <= end, got {self.start_epoch}, {self.end_epoch}")

    def res_at(self, epoch: int) -> int:
        span = max(self.end_epoch - self.start_epoch, 1)
        t = min(max((epoch - self.start_epoch) / span, 0.0), 1.0)
        res = self.start_res + t * (self.end_res - self.start_res)
        return max(self.step, int(round(res / self.step)) * self.step)

    def plan(self, epoch: int, num_samples: int, drop_last: bool) -> list[Step]:
        return constant_batches(self.res_at(epoch), self.batch_size, num_samples, drop_last)
