"""How large to store images for a run at a given crop side: the rule every prepared copy
follows (FFCV's .beton preset, `python -m loaders.prepare` for the ImageFolder backends).

A run reads no stored pixel it does not need: training decodes the average crop at K_train
pixels or more, and the test sweep's largest centre crop reads no upsampled pixels.
"""

from __future__ import annotations

import math

from pipeline.fixres import expected_roc_scale, sweep_resolutions
from pipeline.transforms import CenterCropSpec

PHOTO_ASPECT = 4 / 3  # the longer side is stored; photos are mostly 4:3
SIDE_STEP = 32


def round_up(value: float, step: int = SIDE_STEP) -> int:
    return int(math.ceil(value / step)) * step


def train_max_side(train_res: int) -> int:
    """Longer side to store for RandomResizedCrop training at `train_res`.

    Rule: the shorter side is K_train / F, F = E[sigma] = 0.708 the mean side share of the
    crop (pipeline/fixres.py), so the average crop is decoded at K_train pixels or more and
    only crops smaller than average are upsampled (by at most 0.708 / sqrt(0.08) = 2.5x);
    times 4/3 for the longer side. 128 -> 256, 224 -> 448: a 128-px run decodes a quarter
    of the pixels of FFCV's 500-px recipe. The same side is also the FixRes test image
    (K_test / 0.875 with K_test from the apparent-size rule), so the fine-tuning at K_test
    reads no upsampled pixels either.
    """
    return round_up(PHOTO_ASPECT * train_res / expected_roc_scale())


def eval_max_side(test_res: int, spec: CenterCropSpec = CenterCropSpec()) -> int:
    """Longer side to store for the test transform at `test_res` (shorter side resized to
    K_test / 0.875): the centre crop then never reads upsampled pixels."""
    return round_up(PHOTO_ASPECT * spec.resize_side(test_res))


def split_max_side(split: str, train_res: int) -> int:
    """Longer side to store a split at for a run training at `train_res`: train by the
    training rule, the other splits for the largest side of the default test sweep."""
    return train_max_side(train_res) if split == "train" else eval_max_side(max(sweep_resolutions(train_res)))
