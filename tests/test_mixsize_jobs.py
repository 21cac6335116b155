"""MixSize runs end to end on the tiny data set: B+ and D+ training on every backend, the sweep
and the batch-norm recalibration after it, and bad MixSize values named at start."""

import pytest
import torch

from app.runs import load_checkpoint
from tests.helpers import FAST
from tests.helpers import job as run
from tests.helpers import json_lines as lines


@pytest.mark.slow
@pytest.mark.parametrize("backend", __import__("loaders").BACKENDS)
def test_mixsize_run_trains_sweeps_and_recalibrates(tiny_data, tmp_path, backend):
    out = tmp_path / "mix"
    source = ["--data", tiny_data, "--loader", backend, *FAST]
    run(
        "train",
        *source,
        "--epochs",
        1,
        "--mix-sizes",
        "32,48",
        "--mix-mode",
        "B+",
        "--out",
        out,
    )
    metrics = lines(out / "metrics.jsonl")[0]
    assert set(metrics["sizes"]) == {"32", "48"} and metrics["train_images"] == 48
    trained = load_checkpoint(out)
    assert 32 <= trained["train_res"] <= 48  # the nominal side of the mix

    rows = run("sweep", *source, "--checkpoint", out, "--test-res", "32,64", "--recalibrate-bn", 2)
    assert [r["recalibrated_batches"] for r in rows] == [2, 2]
    assert (out / "sweep-bn2.json").exists() and not (out / "sweep.json").exists()
    assert load_checkpoint(out)["model"]["fc.weight"].equal(trained["model"]["fc.weight"]), (
        "a recalibrating sweep leaves the checkpoint alone"
    )

    run("recalibrate", *source, "--checkpoint", out, "--test-res", 64, "--batches", 2, "--out", tmp_path / "bn64")
    recal = load_checkpoint(tmp_path / "bn64")
    assert recal["test_res"] == 64 and recal["recalibrated_images"] == 16
    changed = [k for k in trained["model"] if not torch.equal(trained["model"][k], recal["model"][k])]
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


@pytest.mark.slow
def test_d_plus_run(tiny_data, tmp_path):
    run(
        "train",
        "--data",
        tiny_data,
        "--epochs",
        1,
        "--mix-sizes",
        "32,64",
        "--mix-mode",
        "D+",
        "--batch-size",
        4,
        "--workers",
        0,
        "--no-progress",
        "--out",
        tmp_path / "d",
    )
    metrics = lines(tmp_path / "d" / "metrics.jsonl")[0]
    # 48 images in steps of 4 distinct ones, 4 copies at 32 px and 1 at 64 px
    assert metrics["sizes"]["32"] % 16 == 0 and metrics["sizes"].get("64", 0) % 4 == 0
    assert metrics["sizes"]["32"] / 4 + metrics["sizes"].get("64", 0) == 48


@pytest.mark.parametrize(
    "args,named",
    [
        (["train", "--mix-sizes", "64,0"], "--mix-sizes"),
        (["train", "--mix-sizes", "64,x"], "64,x"),
        (["train", "--mix-sizes", "64,96", "--mix-weights", "0,0"], "weights"),
        (["train", "--mix-sizes", "64,96", "--mix-mode", "E+"], "E+"),
        (["recalibrate", "--checkpoint", "x", "--batches", "0"], "--batches"),
    ],
)
def test_bad_mixsize_cli_values(args, named, capsys):
    with pytest.raises(SystemExit):
        run(*args)
    assert named in capsys.readouterr().err
