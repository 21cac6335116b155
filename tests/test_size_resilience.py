import json

from bench import size_resilience


def test_study_runs_end_to_end_and_reuses_finished_stages(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "study"), "--epochs", "1", "--batch-size", "4",
            "--mix-sizes", "32,48", "--test-res", "32,48", "--recalibrate-bn", "1", "--workers", "0",
            "--no-progress"]
    result = size_resilience.main(args)
    fixed = f"fixed {result['fixed_res']}"
    assert 32 < result["fixed_res"] < 48
    assert set(result["curves"]) == {fixed, f"{fixed} + BN recal.", "MixSize B+ 32,48",
                                     "MixSize B+ 32,48 + BN recal."}
    assert all(set(curve) == {32, 48} for curve in result["curves"].values())
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["table"] == result["table"] and (tmp_path / "study" / "study.png").stat().st_size > 0
    assert "s per epoch" in result["table"]
    stamp = (tmp_path / "study" / "mixsize" / "checkpoint.pt").stat().st_mtime_ns
    size_resilience.main(args)
    assert (tmp_path / "study" / "mixsize" / "checkpoint.pt").stat().st_mtime_ns == stamp
