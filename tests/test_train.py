"""The trainer end to end on the tiny data set: train, fine-tune, sweep, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from app.runs import load_checkpoint
from pipeline.fixres import apparent_size_ratio
from tests.helpers import FAST, ROOT
from tests.helpers import job as run
from tests.helpers import json_lines as lines


@pytest.mark.slow
def test_train_finetune_sweep(tiny_data, tmp_path):
    run("train", "--data", tiny_data, "--epochs", 2, "--train-res", 32, "--out", tmp_path / "t", *FAST)
    t = tmp_path / "t"
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= set(os.listdir(t))
    metrics = lines(t / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert metrics[0]["train_images"] == 48 and metrics[0]["val_images"] == 18
    assert json.loads((t / "config.json").read_text())["train_res"] == 32
    trained = load_checkpoint(t)
    assert trained["epoch"] == 2 and trained["train_res"] == 32 and len(trained["classes"]) == 3

    run(
        "finetune",
        "--data",
        tiny_data,
        "--checkpoint",
        t,
        "--test-res",
        "auto",
        "--epochs",
        1,
        "--out",
        tmp_path / "ft",
        *FAST,
    )
    tuned = load_checkpoint(tmp_path / "ft")
    assert tuned["test_res"] == 40  # the apparent-size rule for K_train = 32
    before, after = trained["model"], tuned["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    head = {"fc.weight", "fc.bias", "features.7.body.4.weight", "features.7.body.4.bias"}
    assert head <= changed, "the classifier and the last BN must train"
    assert not {k for k in changed if k.endswith(("weight", "bias"))} - head, "nothing else may train"
    assert any(k.endswith("running_mean") and not k.startswith("features.7.body.4") for k in changed), (
        "batch-norm statistics are re-estimated at K_test"
    )

    rows = run("sweep", "--data", tiny_data, "--checkpoint", tmp_path / "ft", "--test-res", "32,48", *FAST)
    assert [r["test_res"] for r in rows] == [32, 48]
    assert all(0 <= r["top1"] <= 100 and r["images"] == 18 for r in rows)
    saved = json.loads((tmp_path / "ft" / "sweep.json").read_text())
    assert saved["rows"] == rows and (tmp_path / "ft" / "sweep.md").read_text().count("|") > 10

    # the parametric adaptation: at K_train both laws come from the same images, so the mapping
    # is the identity and the accuracy that of plain testing
    plain = run("sweep", "--data", tiny_data, "--checkpoint", t, "--test-res", "32,48", *FAST)
    adapted = run("sweep", "--data", tiny_data, "--checkpoint", t, "--test-res", "32,48", "--parametric", 2, *FAST)
    assert adapted[0]["top1"] == plain[0]["top1"] and adapted[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)
    assert adapted[0]["frechet_test"] == pytest.approx(adapted[0]["frechet_train"])
    assert adapted[1]["frechet_test"] != pytest.approx(adapted[1]["frechet_train"], rel=1e-3)
    assert json.loads((t / "sweep-parametric2.json").read_text())["rows"] == adapted

    stats = run(
        "activations",
        "--data",
        tiny_data,
        "--checkpoint",
        tmp_path / "ft",
        "--compare",
        t,
        "--test-res",
        "32,48",
        *FAST,
    )
    assert [(r["checkpoint"], r["test_res"]) for r in stats] == [
        (str(tmp_path / "ft"), 32),
        (str(tmp_path / "ft"), 48),
        (str(t), 32),
        (str(t), 48),
    ]
    assert all(r["values"] == 18 * 256 and 0 <= r["zero_share"] <= 1 and r["std"] > 0 for r in stats)
    assert stats[0]["mean"] != stats[2]["mean"], "fine-tuning moved the last BN, hence the pooled values"
    for name in ("activations.json", "activations.md", "activations.png"):
        assert (tmp_path / "ft" / name).stat().st_size > 0
    assert json.loads((tmp_path / "ft" / "activations.json").read_text())["rows"] == stats


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_data, tmp_path):
    args = [
        sys.executable,
        "train.py",
        "train",
        "--data",
        str(tiny_data),
        "--epochs",
        "4",
        "--train-res",
        "32",
        "--lr",
        "0.1",
        *FAST,
    ]
    subprocess.run([*args, "--out", str(tmp_path / "whole")], cwd=ROOT, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "checkpoint.pt").exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert 1 <= load_checkpoint(killed)["epoch"] < 4, "the run must have been interrupted part-way"

    with pytest.raises(FileExistsError, match="--resume"):
        run("train", "--data", tiny_data, "--out", killed, *FAST)
    run("train", "--resume", "--out", killed, *FAST)
    assert [m["epoch"] for m in lines(killed / "metrics.jsonl")] == [0, 1, 2, 3]
    whole, resumed = load_checkpoint(tmp_path / "whole")["model"], load_checkpoint(killed)["model"]
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], msg=k)


@pytest.mark.slow
def test_fixres_job_reports_and_reuses_finished_stages(tiny_data, tmp_path):
    out = tmp_path / "fx"
    args = ["fixres", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--sweep-res", "32,40,48"]
    args += ["--finetune-epochs", 1, "--parametric", 2, "--finetune-augment", "test2", "--repeated-aug", 3]
    report = run(*args, "--out", out, *FAST)
    assert report["finetune_res"] == 40
    sides = [[r["test_res"] for r in report[k]] for k in ("before", "parametric", "after")]
    assert sides == [[32, 40, 48]] * 3
    assert json.loads((out / "finetune-40" / "config.json").read_text())["augment"] == "test2"
    assert json.loads((out / "train" / "config.json").read_text())["repeated_aug"] == 3
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "top-1 after FT" in text and "top-1 parametric" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved == {k: v for k, v in report.items() if k != "plot"}
    at_40 = [next(r for r in saved[k] if r["test_res"] == 40) for k in ("before", "parametric", "after")]
    assert at_40[0]["apparent_size_ratio"] == pytest.approx(apparent_size_ratio(32, 40))
    assert all(0 <= r["top1"] <= 100 and r["images"] == 18 for r in at_40)
    stamp = (out / "train" / "checkpoint.pt").stat().st_mtime_ns
    run(*args, "--out", out, *FAST)
    assert (out / "train" / "checkpoint.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "args,named",
    [
        (["train", "--train-res", "0"], "--train-res"),
        (["train", "--batch-size", "-4"], "--batch-size"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--loader", "opencv"], "opencv"),
        (["sweep", "--checkpoint", "x", "--test-res", "64,abc"], "64,abc"),
        (["sweep", "--checkpoint", "x", "--test-res", "-64"], "-64"),
        (["finetune"], "--checkpoint"),
        (["sweep", "--checkpoint", "x", "--parametric", "-1"], "--parametric"),
        (["activations", "--checkpoint", "x", "--batches", "-2"], "--batches"),
        (["finetune", "--checkpoint", "x", "--augment", "mixup"], "mixup"),
        (["fixres", "--finetune-augment", "flip"], "flip"),
        (["train", "--repeated-aug", "0"], "--repeated-aug"),
        (["sweep", "--weights", "w.pt"], "--model"),
        (["sweep", "--checkpoint", "x", "--model", "resnet18", "--weights", "w.pt"], "either"),
    ],
)
def test_bad_cli_values_fail_at_start(args, named, capsys):
    with pytest.raises(SystemExit):
        run(*args)
    assert named in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoint_with_other_classes_is_refused(tiny_data, data_copy, tmp_path):
    run("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", tmp_path / "t", *FAST)
    src = next((data_copy / "val").glob("*/*.JPEG"))
    for split in ("train", "val"):
        (data_copy / split / "zz_new_class").mkdir()
        (data_copy / split / "zz_new_class" / "a.JPEG").write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="zz_new_class"):
        run("sweep", "--data", data_copy, "--checkpoint", tmp_path / "t", "--test-res", "32", *FAST)
    with pytest.raises(ValueError, match="class count"):
        run(
            "train",
            "--data",
            data_copy,
            "--epochs",
            1,
            "--weights",
            tmp_path / "t" / "checkpoint.pt",
            "--out",
            tmp_path / "t2",
            *FAST,
        )


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        run("sweep", "--checkpoint", tmp_path / "nothing-here", *FAST)


@pytest.mark.slow
def test_synthetic_backend_trains_without_data(tmp_path):
    run(
        "train",
        "--loader",
        "synthetic",
        "--data",
        tmp_path / "none",
        "--epochs",
        1,
        "--train-res",
        32,
        "--out",
        tmp_path / "s",
        *FAST,
    )
    assert lines(tmp_path / "s" / "metrics.jsonl")[0]["train_images"] == 1024


@pytest.mark.slow
def test_splits_named_one_by_one(tiny_data, tmp_path):
    """--train-data / --val-data replace <data>/train and <data>/val (here --data leads nowhere)."""
    run(
        "train",
        "--data",
        tmp_path / "nowhere",
        "--train-data",
        tiny_data / "train",
        "--val-data",
        tiny_data / "val",
        "--epochs",
        1,
        "--train-res",
        32,
        "--out",
        tmp_path / "t",
        *FAST,
    )
    metrics = lines(tmp_path / "t" / "metrics.jsonl")[0]
    assert metrics["train_images"] == 48 and metrics["val_images"] == 18
    with pytest.raises(FileNotFoundError, match="nowhere/val"):
        run("sweep", "--data", tmp_path / "nowhere", "--checkpoint", tmp_path / "t", "--test-res", 32, *FAST)


@pytest.mark.slow
def test_repeated_augmentation_keeps_the_epoch_length(tiny_data, tmp_path):
    run(
        "train",
        "--data",
        tiny_data,
        "--epochs",
        1,
        "--train-res",
        32,
        "--repeated-aug",
        3,
        "--out",
        tmp_path / "ra",
        *FAST,
    )
    metrics = lines(tmp_path / "ra" / "metrics.jsonl")[0]
    assert metrics["train_images"] == 48 and metrics["train_steps"] == 6  # 16 images x 3 copies, batches of 8


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["test2", "train"])
def test_finetune_with_the_other_augmentations(tiny_data, tmp_path, augment):
    run("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", tmp_path / "t", *FAST)
    run(
        "finetune",
        "--data",
        tiny_data,
        "--checkpoint",
        tmp_path / "t",
        "--test-res",
        40,
        "--epochs",
        1,
        "--augment",
        augment,
        "--out",
        tmp_path / "ft",
        *FAST,
    )
    before, after = load_checkpoint(tmp_path / "t")["model"], load_checkpoint(tmp_path / "ft")["model"]
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert lines(tmp_path / "ft" / "metrics.jsonl")[0]["train_images"] == 48


@pytest.mark.slow
def test_sweep_and_finetune_start_from_a_state_dict(tiny_data, tmp_path):
    """A user's state dict (here: the weights of a run of ours, saved bare) sweeps exactly as
    the checkpoint it came from; classes come from the data; a classifier for another class
    count is refused by name."""
    run("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", tmp_path / "t", *FAST)
    torch.save(load_checkpoint(tmp_path / "t")["model"], tmp_path / "tiny.pth")
    ours = run("sweep", "--data", tiny_data, "--checkpoint", tmp_path / "t", "--test-res", "32,48", *FAST)
    theirs = run(
        "sweep",
        "--data",
        tiny_data,
        "--model",
        "resnet_tiny",
        "--weights",
        tmp_path / "tiny.pth",
        "--train-res",
        32,
        "--test-res",
        "32,48",
        "--out",
        tmp_path / "w",
        *FAST,
    )
    assert [(r["test_res"], r["top1"], r["loss"]) for r in theirs] == [
        (r["test_res"], r["top1"], r["loss"]) for r in ours
    ]
    assert json.loads((tmp_path / "w" / "sweep.json").read_text())["train_res"] == 32

    run(
        "finetune",
        "--data",
        tiny_data,
        "--model",
        "resnet_tiny",
        "--weights",
        tmp_path / "tiny.pth",
        "--train-res",
        32,
        "--test-res",
        "auto",
        "--epochs",
        1,
        "--out",
        tmp_path / "ft",
        *FAST,
    )
    tuned = load_checkpoint(tmp_path / "ft")
    assert tuned["test_res"] == 40 and tuned["classes"] == load_checkpoint(tmp_path / "t")["classes"]

    torch.save(__import__("torchvision").models.resnet18(num_classes=5).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="fc.weight has 5 outputs but the model wants 3"):
        run(
            "sweep",
            "--data",
            tiny_data,
            "--model",
            "resnet18",
            "--weights",
            tmp_path / "r18.pth",
            "--test-res",
            "32",
            "--out",
            tmp_path / "r18",
            *FAST,
        )


@pytest.mark.slow
def test_a_run_that_failed_at_start_leaves_its_folder_usable(tiny_data, tmp_path):
    """A mistyped --data fails after the configuration is written; the corrected command may
    use the same --out (nothing was trained there), while a folder with a finished epoch is kept."""
    out = tmp_path / "t"
    with pytest.raises(FileNotFoundError, match="typo"):
        run("train", "--data", tmp_path / "typo", "--epochs", 1, "--train-res", 32, "--out", out, *FAST)
    assert (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
    run("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", out, *FAST)
    assert lines(out / "metrics.jsonl")[0]["epoch"] == 0
    with pytest.raises(FileExistsError, match="--resume"):
        run("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", out, *FAST)
