"""SGD with the ImageNet recipe's conventions: lr = base x B / 256 (per step, so that steps
of different batch sizes get their own lr), linear warm-up, cosine or step decay, and no
weight decay on batch-norm parameters and biases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# The first warm-up step gets lr x WARMUP_FLOOR / warmup_epochs rather than exactly 0, which
# would be a wasted step.
WARMUP_FLOOR = 1e-3
# Devices with torch's fused SGD kernel (the CPU's since torch 2.4): one kernel for all the
# parameters, and under fp16 the GradScaler hands it the scale and the inf check on the device
# instead of reading the check back with .item() at every step (GradScaler.step).
FUSED_DEVICES = ("cuda", "cpu")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)  # 1-D: BN weights/biases, biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_sgd(model: nn.Module, momentum: float, weight_decay: float) -> torch.optim.SGD:
    # lr is set before every step by LrSchedule; the value here is a placeholder that
    # torch requires and that is overwritten before it is ever used.
    return torch.optim.SGD(
        param_groups(model, weight_decay), lr=0.0, momentum=momentum, nesterov=False, fused=fused_supported(model)
    )


def fused_supported(model: nn.Module) -> bool:
    """Whether every parameter of `model` is a float on one device with a fused SGD kernel."""
    params = list(model.parameters())
    return (
        len({p.device for p in params}) == 1
        and params[0].device.type in FUSED_DEVICES
        and all(p.is_floating_point() for p in params)
    )


def load_sgd_state(optimizer: torch.optim.SGD, state: dict) -> None:
    """Load a saved optimiser state, keeping this run's kernel: the saved groups carry the
    `fused` flag of the run that saved them, and a fused optimiser's step given an unfused
    group under the GradScaler fails (it passes the scale, which only the fused kernel takes)."""
    kernels = [(g["fused"], g["foreach"]) for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, kernels):
        group["fused"], group["foreach"] = fused, foreach


@dataclass(frozen=True)
class LrSchedule:
    base_lr: float  # for a batch of 256 images
    epochs: int
    warmup_epochs: float = 0.0
    schedule: str = "cosine"  # or "step": divide by 10 every `step_every` epochs
    step_every: int = 30

    def __post_init__(self):
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if self.base_lr <= 0:
            raise ValueError(f"learning rate must be positive, got {self.base_lr}")

    def factor(self, progress: float) -> float:
        """Multiplier at `progress` epochs into the run (fractional)."""
        if progress < self.warmup_epochs:
            return (progress + WARMUP_FLOOR) / self.warmup_epochs
        if self.schedule == "step":
            return 0.1 ** int(progress // self.step_every)
        span = max(self.epochs - self.warmup_epochs, 1e-9)
        return 0.5 * (1 + math.cos(math.pi * min((progress - self.warmup_epochs) / span, 1.0)))

    def lr(self, progress: float, global_batch: int) -> float:
        return self.base_lr * global_batch / 256 * self.factor(progress)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
