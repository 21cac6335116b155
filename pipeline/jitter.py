"""Colour jitter as data: factors drawn per image where the epoch is planned, applied on the
device to the float batch before normalisation.

Drawing the factors from (seed, epoch) with the rest of the plan makes the jitter independent
of workers and decoder threads, and the same for every backend; applying them to the batch in
one function on the device keeps decoders (Pillow, DALI, FFCV, nvJPEG) free of it. The
operations are torchvision's ColorJitter brightness, contrast and saturation (blend with
black, with the image's mean grey, with each pixel's grey; clamped to the value range), in
this fixed order where torchvision permutes the order per image. Hue is left out, as in
FixRes's ColorJitter(b, c, s).
"""

from __future__ import annotations

import numpy as np
import torch

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BRIGHTNESS, CONTRAST, SATURATION = range(3)


def jitter_factors(rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """(n, 3) float32 factors (brightness, contrast, saturation), each uniform on
    [1 - strength, 1 + strength] as in torchvision's ColorJitter(strength, strength, strength)."""
    return rng.uniform(1 - strength, 1 + strength, size=(n, 3)).astype(np.float32)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of an (N, 3, H, W) batch."""
    w = torch.tensor(GREY, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor, bound: float) -> torch.Tensor:
    return (factor * images + (1 - factor) * other).clamp_(0, bound)


def color_jittered(images: torch.Tensor, factors: torch.Tensor, bound: float = 255.0) -> torch.Tensor:
    """The float (N, 3, H, W) batch (values in [0, bound]) with brightness, contrast and
    saturation of image i scaled by factors[i]; same memory format as the input."""
    f = factors.to(device=images.device, dtype=images.dtype).view(-1, 3, 1, 1)
    images = blend(images, torch.zeros_like(images), f[:, BRIGHTNESS : BRIGHTNESS + 1], bound)
    images = blend(images, grey(images).mean(dim=(1, 2, 3), keepdim=True), f[:, CONTRAST : CONTRAST + 1], bound)
    return blend(images, grey(images), f[:, SATURATION : SATURATION + 1], bound)
