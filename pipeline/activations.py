"""Activation statistics after global pooling (FixRes section 3.2, figures 3-4).

The classifier's input is the pooled feature vector in a ResNet (torchvision `fc`, timm
`fc`/`classifier`, this project's `resnet_tiny`): a forward pre-hook on the last linear
layer records it without touching the model. Models whose classifier is a small MLP (VGG,
MobileNetV3) would report the MLP's hidden layer instead, so for them these are not the
pooled statistics.

Changing the test side changes these statistics: at small sides the pooled map averages few
positions, so exact zeros (every position zero after the ReLU) and large values become more
frequent (paper: at K_test 64 instead of 224, zeros rise from 0.5% to 29.8% and values above
2 from 1.2% to 11.9%).
"""

from __future__ import annotations

import torch
import torch.distributed
from torch import nn

from pipeline.distributed import DistContext
from pipeline.finetune import last_module
from pipeline.precision import Precision

CDF_LEVELS = 201  # quantile levels 0, 0.005, ..., 1 of the stored CDF
SORT_LIMIT = 1 << 22  # values sorted for quantiles at most; more are subsampled (seeded)
LARGE = 2.0  # the paper's threshold for "large" pooled values


@torch.no_grad()
def pooled_features(
    model: nn.Module, loader, precision: Precision, dist: DistContext, batches: int = 0
) -> torch.Tensor:
    """(images, channels) float32 on the CPU: the classifier input for every image of
    `loader` (the first `batches` batches if positive), gathered from every rank."""
    classifier = last_module(model, nn.Linear)
    seen: list[torch.Tensor] = []
    hook = classifier.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for i, (images, _) in enumerate(loader):
            if batches and i == batches:
                break
            with precision.autocast():
                model(images)
    finally:
        hook.remove()
        model.train(was_training)
    if not seen:
        raise ValueError("no batch reached the classifier: the loader is empty")
    features = torch.cat([s.flatten(1) for s in seen])
    return torch.cat(gathered(features, dist))


def gathered(tensor: torch.Tensor, dist: DistContext) -> list[torch.Tensor]:
    """Every rank's `tensor` (shapes may differ by a batch); one rank: just this one."""
    if not dist.enabled:
        return [tensor]
    parts: list = [None] * dist.world_size
    torch.distributed.all_gather_object(parts, tensor)
    return parts


def sorted_sample(values: torch.Tensor, limit: int = SORT_LIMIT, seed: int = 0) -> torch.Tensor:
    """The values sorted (float64), a seeded uniform subsample of `limit` if there are more:
    quantiles of a sample of millions are exact to about 1e-3 in probability."""
    flat = values.flatten().double()
    if flat.numel() > limit:
        picks = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:limit]
        flat = flat[picks]
    return flat.sort().values


def quantiles(ordered: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Empirical quantiles of sorted values at `levels` in [0, 1] (linear interpolation
    between order statistics, as numpy's default)."""
    position = levels.double() * (ordered.numel() - 1)
    low = position.floor().long()
    high = position.ceil().long()
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def activation_stats(values: torch.Tensor, levels: int = CDF_LEVELS) -> dict:
    """Share of exact zeros, share above 2, mean, standard deviation and the CDF (quantiles
    at `levels` evenly spaced probabilities) of all the values, whatever their shape."""
    flat = values.flatten().double()
    if flat.numel() == 0:
        raise ValueError("activation statistics of an empty tensor")
    probabilities = torch.linspace(0, 1, levels, dtype=torch.float64)
    return {
        "values": flat.numel(),
        "zero_share": (flat == 0).double().mean().item(),
        "above_2_share": (flat > LARGE).double().mean().item(),
        "mean": flat.mean().item(),
        "std": flat.std(correction=0).item(),
        "cdf": {"p": probabilities.tolist(), "x": quantiles(sorted_sample(flat), probabilities).tolist()},
    }
