"""--log tensorboard: the events a real training run writes, read back with TensorBoard's own reader."""

import sys

import pytest

from app import cli
from app.engine import BAR_EVERY
from app.options import OptimConfig
from app.tblog import EPOCH_SCALARS, check_log
from tests.helpers import json_lines

STEP_SCALARS = ("lr", "res", "loss", "acc", "img_per_s", "data_wait_share")


def scalars(folder) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_a_training_run_writes_step_and_epoch_scalars(tiny_data, tmp_path):
    out = tmp_path / "run"
    cli.main(
        [
            *("train", "--data", str(tiny_data), "--out", str(out), "--epochs", "2", "--train-res", "32"),
            *("--batch-size", "8", "--workers", "0", "--no-progress", "--log", "tensorboard"),
        ]
    )
    records = json_lines(out / "metrics.jsonl")
    logged = scalars(out / "tensorboard")
    assert set(logged) == {f"step/{k}" for k in STEP_SCALARS} | {f"epoch/{k}" for k in (*EPOCH_SCALARS, "res")}

    steps = [r["train_steps"] for r in records]
    assert [e.step for e in logged["step/lr"]] == list(range(sum(steps)))  # one axis across epochs
    assert {e.value for e in logged["step/res"]} == {32.0}
    first = [sum(steps[:k]) for k in range(len(steps))]
    read = [f + i for f, n in zip(first, steps) for i in range(n) if i % BAR_EVERY == 0 or i == n - 1]
    for name in ("loss", "acc", "img_per_s", "data_wait_share"):
        assert [e.step for e in logged[f"step/{name}"]] == read, name
    assert all(0 <= e.value <= 1 for e in logged["step/data_wait_share"])

    ends = [f + n - 1 for f, n in zip(first, steps)]
    for key in EPOCH_SCALARS:
        assert [e.step for e in logged[f"epoch/{key}"]] == ends
        assert [e.value for e in logged[f"epoch/{key}"]] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert [e.value for e in logged["epoch/res"]] == [32.0, 32.0]


def test_log_values_are_checked_at_start():
    with pytest.raises(ValueError, match="--log must be one of jsonl, tensorboard, got 'csv'"):
        OptimConfig(log="csv")
    assert OptimConfig(log="tensorboard").log == "tensorboard"


def test_missing_tensorboard_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install -c constraints.txt -e '\.\[tensorboard\]'"):
        check_log("tensorboard")
    assert check_log("jsonl") == "jsonl"
