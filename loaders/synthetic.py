"""Synthetic backend: random tensors made on the device, no decoding at all.

It is the compute-bound upper limit that benchmarks divide real-data throughput by, and it
lets tests and dry runs exercise the trainer without a data set.
"""

from __future__ import annotations

import numpy as np
import torch

from loaders.base import LoaderConfig, epoch_plan


class SyntheticLoader:
    def __init__(self, cfg: LoaderConfig, classes: list[str], num_samples: int):
        self.cfg = cfg
        self.classes = classes
        self.num_samples = num_samples
        self.summary = f"synthetic: {num_samples} random images per epoch, {len(classes)} classes, on {cfg.device}"
        self.skipped: dict[str, int] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.steps, _ = epoch_plan(self.cfg, self.num_samples, epoch)
        self.pool: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def batch(self, res: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One tensor pair per shape and epoch, reused: making random data must cost nothing
        next to the step it feeds."""
        key = (res, batch_size)
        if key not in self.pool:
            cfg = self.cfg
            seed = int(np.random.SeedSequence([cfg.seed, self.epoch, cfg.rank, *key]).generate_state(1)[0])
            gen = torch.Generator(device=cfg.device).manual_seed(seed)
            images = torch.randn(batch_size, res, res, 3, generator=gen, device=cfg.device, dtype=cfg.dtype)
            labels = torch.randint(len(self.classes), (batch_size,), generator=gen, device=cfg.device)
            self.pool[key] = (images.permute(0, 3, 1, 2), labels)
        return self.pool[key]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        for step in self.steps:
            yield self.batch(step.res, step.batch_size)
