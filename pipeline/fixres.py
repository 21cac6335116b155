"""FixRes maths (Touvron et al. 2019, section 3.1, eqs. 1-5): apparent object size.

A RandomResizedCrop of scale sigma (sigma^2 = area share of the region of classification)
resized to K_train magnifies objects by K_train / (sigma * image side); the test transform
magnifies them by K_image_test / image side. With sigma^2 ~ U(sigma_min^2, sigma_max^2),

    E[r_test / r_train] = F * K_image_test / K_train,
    F = E[sigma] = (2/3) (sigma_max^3 - sigma_min^3) / (sigma_max^2 - sigma_min^2).

Objects look larger in training than in testing (ratio 0.81 for the standard parameters),
so the test resolution that equalises them is above the train resolution.
"""

from __future__ import annotations

import math

from pipeline.transforms import CenterCropSpec, RandomResizedCropSpec


def expected_roc_scale(spec: RandomResizedCropSpec = RandomResizedCropSpec()) -> float:
    """F = E[sigma] for sigma^2 uniform on the area range `spec.scale`."""
    lo, hi = (math.sqrt(s) for s in spec.scale)
    if math.isclose(lo, hi):
        return lo
    return (2 / 3) * (hi**3 - lo**3) / (hi**2 - lo**2)


def apparent_size_ratio(
    train_res: int,
    test_res: int,
    train_spec: RandomResizedCropSpec = RandomResizedCropSpec(),
    test_spec: CenterCropSpec = CenterCropSpec(),
) -> float:
    """E[r_test / r_train]: below 1 means objects look smaller at test time than in training."""
    k_image_test = test_res / test_spec.crop_ratio
    return expected_roc_scale(train_spec) * k_image_test / train_res


def recommended_test_res(
    train_res: int,
    step: int = 8,
    train_spec: RandomResizedCropSpec = RandomResizedCropSpec(),
    test_spec: CenterCropSpec = CenterCropSpec(),
) -> int:
    """The K_test (a multiple of `step`) whose apparent object size matches training:
    224 -> 280, 128 -> 160, 64 -> 80 for the standard parameters."""
    exact = train_res * test_spec.crop_ratio / expected_roc_scale(train_spec)
    return max(step, int(round(exact / step)) * step)


def sweep_resolutions(train_res: int, step: int = 16) -> list[int]:
    """A default test sweep: from 0.75x to 2x the train side, the recommended K_test included."""
    lo = max(step, int(math.floor(0.75 * train_res / step)) * step)
    hi = int(math.ceil(2 * train_res / step)) * step
    return sorted(set(range(lo, hi + 1, step)) | {train_res, recommended_test_res(train_res)})
