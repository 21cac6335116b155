"""Batch-norm recalibration: re-estimate every BN layer's running statistics at a new size.

A network's activations change with the input size, and the running statistics learned at
the training size(s) then mis-normalise (FixRes section 3.2, MixSize section 4). Feeding N
batches at the test size through the model in train mode, without gradients and with the
test-time augmentation, replaces those statistics with the ones of the new size; no weight
moves. The estimate is a plain average over the N batches (momentum None) rather than an
exponential one, so N batches weigh equally and the old statistics leave no trace.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.distributed import DistContext, all_sum
from pipeline.precision import Precision


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int, precision: Precision, dist: DistContext) -> int:
    """Re-estimate running statistics from up to `batches` batches of `loader`; returns the
    number of images used (on this rank). Ranks average their estimates."""
    if batches <= 0:
        raise ValueError(f"BN recalibration needs a positive number of batches, got {batches}")
    layers = batchnorm_layers(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    seen = 0
    for i, (images, _) in enumerate(loader):
        if i == batches:
            break
        with precision.autocast():
            model(images)
        seen += images.shape[0]
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        if dist.enabled:
            m.running_mean.copy_(all_sum(m.running_mean, dist) / dist.world_size)
            m.running_var.copy_(all_sum(m.running_var, dist) / dist.world_size)
    model.train(was_training)
    return seen
