"""Colour jitter against torchvision's brightness, contrast and saturation adjustments."""

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from pipeline.jitter import color_jittered, jitter_factors


def test_equals_torchvision_adjustments_in_that_order():
    images = torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    factors = torch.from_numpy(jitter_factors(np.random.default_rng(1), 6, 0.4))
    ours = color_jittered(images.clone(), factors, bound=1.0)
    for img, out, (b, c, s) in zip(images, ours, factors.tolist()):
        ref = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(img, b), c), s)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_factors_of_one_leave_the_batch_and_its_layout_alone():
    images = (torch.rand(3, 3, 8, 8) * 255).contiguous(memory_format=torch.channels_last)
    out = color_jittered(images, torch.ones(3, 3))
    torch.testing.assert_close(out, images)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("strength", [0.05, 0.3])
def test_factors_are_uniform_in_the_stated_range(strength):
    f = jitter_factors(np.random.default_rng(0), 20000, strength)
    assert f.shape == (20000, 3) and f.dtype == np.float32
    assert f.min() >= 1 - strength and f.max() <= 1 + strength
    np.testing.assert_allclose(f.mean(axis=0), 1, atol=strength / 50)
    np.testing.assert_allclose(f.std(axis=0), strength / np.sqrt(3), rtol=0.03)
