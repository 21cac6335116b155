"""Activation statistics after global pooling (FixRes section 3.2, figures 3-4).

The classifier's input is the pooled feature vector in a ResNet (torchvision `fc`, timm
`fc`/`classifier`, this project's `resnet_tiny`): the model run with its last linear layer
swapped for an identity returns it (`headless`). Models whose classifier is a small MLP (VGG,
MobileNetV3) would report the MLP's hidden layer instead, so for them these are not the
pooled statistics.

Changing the test side changes these statistics: at small sides the pooled map averages few
positions, so exact zeros (every position zero after the ReLU) and large values become more
frequent (paper: at K_test 64 instead of 224, zeros rise from 0.5% to 29.8% and values above
2 from 1.2% to 11.9%).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed
from torch import nn

from pipeline.distributed import DistContext
from pipeline.models import classifier_slot
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
    seen: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with headless(model) as classifier:
            for i, (images, _) in enumerate(loader):
                if batches and i == batches:
                    break
                with precision.autocast():
                    seen.append(model(images).float().flatten(1).cpu())
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError("no batch reached the classifier: the loader is empty")
    features = torch.cat(seen)
    if features.shape[1] != classifier.in_features:
        raise ValueError(
            f"{type(model).__name__} does not end in its last linear layer: without it, it gives "
            f"{features.shape[1]} values per image, not that layer's {classifier.in_features} inputs"
        )
    return torch.cat(gathered(features, dist))


@contextmanager
def headless(model: nn.Module) -> Iterator[nn.Linear]:
    """`model` with its classifier (last linear layer, given to the block) replaced by
    nn.Identity, so that the model returns the classifier's input; put back on exit.

    Not a forward hook: under torch.compile the classifier's hooks are traced into the graph,
    and dynamo does not guard on hooks (torch._dynamo.config.skip_nnmodule_hook_guards), so a
    hook added after a size was compiled is never called. A module of another type in the
    classifier's place fails dynamo's TYPE_MATCH guard on the parent's `_modules` entry, so
    the compiled model recompiles (or reuses its graph without the classifier) and returns
    the features from outside the compiled region."""
    parent, child = classifier_slot(model)
    classifier = getattr(parent, child)
    setattr(parent, child, nn.Identity())
    try:
        yield classifier
    finally:
        setattr(parent, child, classifier)


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
