import json

import pytest

from bench import size_resilience
from pipeline.sizes import MixSize


@pytest.mark.slow
def test_study_runs_end_to_end_and_reuses_finished_stages(tiny_data, tmp_path):
    args = [
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "study"),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--mix-sizes",
        "32,48",
        "--test-res",
        "32,48",
        "--recalibrate-bn",
        "1",
        "--workers",
        "0",
        "--no-progress",
    ]
    result = size_resilience.main(args)
    fixed = f"fixed {result['fixed_res']}"
    assert 32 < result["fixed_res"] < 48
    mixes = ["MixSize B+ 32,48", "MixSize D+ 32,48"]
    assert set(result["curves"]) == {fixed, f"{fixed} + BN recal.", *mixes, *(f"{m} + BN recal." for m in mixes)}
    assert all(set(curve) == {32, 48} for curve in result["curves"].values())
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["table"] == result["table"] and (tmp_path / "study" / "study.png").stat().st_size > 0
    assert "s per epoch" in result["table"]
    runs = result["runs"]
    assert runs["MixSize D+ 32,48"]["images"] > runs["MixSize B+ 32,48"]["images"]  # the copies
    assert all(run["steps"] > 0 and run["epochs"] == 1 for run in runs.values())
    stamp = (tmp_path / "study" / "mixsize" / "checkpoint.pt").stat().st_mtime_ns
    size_resilience.main(args)
    assert (tmp_path / "study" / "mixsize" / "checkpoint.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("mode", ["B+", "D+"])
def test_mixsize_runs_get_the_fixed_runs_pixels_in_all(mode):
    policy = MixSize((48, 64, 96), (1, 1, 1), batch_size=32, mode=mode)
    epochs = size_resilience.equal_pixel_epochs(16, 62, policy)
    fixed_pixels = 16 * 62**2
    assert abs(epochs * policy.pixels_per_image() - fixed_pixels) <= policy.pixels_per_image() / 2
    assert (epochs == 16) if mode == "B+" else (epochs < 16)  # D+ copies make its epochs dearer
