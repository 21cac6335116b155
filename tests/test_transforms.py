"""The crop sampler against torchvision's own RandomResizedCrop.get_params, the eval boxes
against torchvision's Resize + CenterCrop geometry, and test DA2's shifted centre crop."""

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from pipeline.transforms import (
    CenterCropSpec,
    RandomResizedCropSpec,
    center_crop_boxes,
    random_resized_crop_boxes,
    resized_extent,
    shifted_center_crop_boxes,
)

N = 20000


def torchvision_boxes(width: int, height: int, n: int, spec=RandomResizedCropSpec()) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.empty(3, height, width)
    out = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(img, list(spec.scale), list(spec.ratio))
        out.append((j, i, w, h))
    return np.asarray(out, dtype=np.float64)


def box_statistics(boxes: np.ndarray, width: int, height: int) -> dict:
    x, y, w, h = boxes.T
    return {
        "area": w * h / (width * height),
        "log_aspect": np.log(w / h),
        "cx": (x + w / 2) / width,
        "cy": (y + h / 2) / height,
    }


@pytest.mark.parametrize("width,height", [(500, 375), (300, 400), (640, 240)])
def test_crop_statistics_match_torchvision(width, height):
    ours = random_resized_crop_boxes(np.random.default_rng(0), np.full(N, width), np.full(N, height))
    ref = torchvision_boxes(width, height, N)
    a, b = box_statistics(ours.astype(float), width, height), box_statistics(ref, width, height)
    for key in a:
        qs = [0.05, 0.25, 0.5, 0.75, 0.95]
        # 20k samples: quantiles agree to about 1% of the range; 0.02 leaves room for noise only
        np.testing.assert_allclose(np.quantile(a[key], qs), np.quantile(b[key], qs), atol=0.02, err_msg=key)
    # the fall-back (whole image clipped to the aspect range) fires equally often
    full_ours = np.mean((ours[:, 2] == min(width, round(height * 4 / 3))) & (ours[:, 3] == height))
    full_ref = np.mean((ref[:, 2] == min(width, round(height * 4 / 3))) & (ref[:, 3] == height))
    assert abs(full_ours - full_ref) < 0.01


def test_boxes_stay_inside_the_image_and_are_deterministic():
    rng = np.random.default_rng(1)
    widths, heights = rng.integers(20, 600, 5000), rng.integers(20, 600, 5000)
    boxes = random_resized_crop_boxes(np.random.default_rng(7), widths, heights)
    x, y, w, h = boxes.T
    assert (w >= 1).all() and (h >= 1).all()
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= widths).all() and (y + h <= heights).all()
    again = random_resized_crop_boxes(np.random.default_rng(7), widths, heights)
    assert np.array_equal(boxes, again)


def test_fallback_for_extreme_aspect_matches_torchvision():
    # 1000x50: no box with aspect in [3/4, 4/3] and area >= 8% fits, so every try fails
    ours = random_resized_crop_boxes(
        np.random.default_rng(0), np.array([1000]), np.array([50]), RandomResizedCropSpec(scale=(0.5, 1.0))
    )
    ref = torchvision_boxes(1000, 50, 1, RandomResizedCropSpec(scale=(0.5, 1.0)))
    assert ours.tolist() == ref.astype(int).tolist() == [[466, 0, 67, 50]]


@pytest.mark.parametrize("width,height,res", [(500, 375, 224), (375, 500, 128), (333, 333, 64), (97, 61, 64)])
def test_center_box_matches_torchvision_resize_then_centercrop(width, height, res):
    side = CenterCropSpec().resize_side(res)
    rh, rw = T.Resize(side, antialias=False)(torch.zeros(1, height, width)).shape[1:]
    top = int(round((rh - res) / 2.0))
    left = int(round((rw - res) / 2.0))
    x, y, w, h = center_crop_boxes(np.array([width]), np.array([height]), res)[0]
    np.testing.assert_allclose(
        [x, y, w, h], [left * width / rw, top * height / rh, res * width / rw, res * height / rh]
    )


@pytest.mark.parametrize(
    "width,height,res", [(500, 375, 224), (375, 500, 128), (333, 333, 64), (97, 61, 64), (640, 240, 48)]
)
def test_da2_box_is_the_centre_crop_shifted_horizontally_within_the_image(width, height, res):
    n = 4000
    W, H = np.full(n, width), np.full(n, height)
    shifted = shifted_center_crop_boxes(np.random.default_rng(0), W, H, res)
    center = center_crop_boxes(W, H, res)
    np.testing.assert_array_equal(shifted[:, 1:], center[:, 1:])  # same row, same size
    x, w = shifted[:, 0], shifted[:, 2]
    assert (x >= 0).all() and (x + w <= width * (1 + 1e-12)).all()
    rw = resized_extent(W, H, res)[0][0]
    start = x * rw / width  # where the K x K window starts in the resized image: whole pixels
    x0 = round((rw - res) / 2)
    np.testing.assert_allclose(start, np.round(start), atol=1e-9)
    start = np.round(start)
    assert np.abs(start - x0).max() <= x0  # FixRes: a shift of at most the centre offset
    assert len(np.unique(start)) == min(int(rw - res) + 1, 2 * x0 + 1)  # every position is reached
    left, right = (start < x0).mean(), (start > x0).mean()
    assert abs(left - right) < 0.05  # both directions alike


def test_bad_specs():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropSpec(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="crop ratio"):
        CenterCropSpec(0)
