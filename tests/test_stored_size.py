"""The stored-size rule of every prepared copy (ffcv preset, loaders.prepare)."""

from loaders.stored_size import eval_max_side, split_max_side, train_max_side
from pipeline.fixres import expected_roc_scale, sweep_resolutions


def test_train_side_covers_the_average_crop():
    for k in (64, 128, 224):
        side = train_max_side(k)
        assert side % 32 == 0 and side * 3 / 4 >= k / expected_roc_scale() > (side - 32) * 3 / 4
    assert train_max_side(128) == 256 < 500  # FFCV's ImageNet recipe stores 500 px
    assert eval_max_side(224) * 3 / 4 >= 256


def test_other_splits_serve_the_largest_test_side_of_the_sweep():
    assert split_max_side("train", 128) == train_max_side(128)
    assert split_max_side("val", 128) == eval_max_side(max(sweep_resolutions(128))) > train_max_side(128) * 0.75
