import numpy as np
import pytest

from pipeline.fixres import apparent_size_ratio, expected_roc_scale, recommended_test_res, sweep_resolutions
from pipeline.transforms import CenterCropSpec, RandomResizedCropSpec, random_resized_crop_boxes


def test_standard_parameters_give_the_papers_numbers():
    assert expected_roc_scale() == pytest.approx(0.708, abs=1e-3)
    assert apparent_size_ratio(224, 224) == pytest.approx(0.81, abs=5e-3)
    assert apparent_size_ratio(128, 128) == pytest.approx(0.81, abs=5e-3)


def test_recommended_test_resolution():
    assert 280 <= recommended_test_res(224) <= 288
    assert recommended_test_res(128) == 160
    assert recommended_test_res(64) == 80
    # at the recommendation the apparent sizes match
    assert apparent_size_ratio(224, recommended_test_res(224)) == pytest.approx(1.0, abs=0.02)


def test_closed_form_is_the_mean_scale():
    sigma = np.sqrt(np.random.default_rng(0).uniform(0.08, 1.0, 1_000_000))
    assert sigma.mean() == pytest.approx(expected_roc_scale(), rel=2e-3)


def test_real_sampler_crops_somewhat_smaller_than_the_closed_form():
    """torchvision's sampler rejects large boxes whose aspect does not fit the image and
    tries again, so its E[sigma] on a square image is below the paper's F (which assumes
    sigma^2 exactly uniform): the recommended K_test is, if anything, a little low."""
    n = 200_000
    boxes = random_resized_crop_boxes(np.random.default_rng(0), np.full(n, 1000), np.full(n, 1000))
    sampled = np.sqrt(boxes[:, 2] * boxes[:, 3] / 1e6).mean()
    assert 0.90 * expected_roc_scale() < sampled < 0.97 * expected_roc_scale()


def test_other_augmentation_parameters():
    spec = RandomResizedCropSpec(scale=(0.25, 1.0))
    assert expected_roc_scale(spec) == pytest.approx((2 / 3) * (1 - 0.125) / (1 - 0.25))
    assert expected_roc_scale(RandomResizedCropSpec(scale=(1.0, 1.0))) == 1.0
    # a full-image train crop and a full test crop: the same apparent size
    assert apparent_size_ratio(100, 100, RandomResizedCropSpec(scale=(1.0, 1.0)), CenterCropSpec(1.0)) == 1.0


def test_default_sweep_contains_train_and_recommended():
    sides = sweep_resolutions(64)
    assert 64 in sides and 80 in sides and min(sides) < 64 and max(sides) >= 128
