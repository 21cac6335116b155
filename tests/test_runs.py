"""Run folders: checkpoints are data (never unpickled objects), saved so that they load as data."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from app import cli
from app.runs import RunDir, load_checkpoint
from tests.helpers import FAST


class RunsCode:
    """Unpickling this touches `marker`: what any pickled object could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def booby_trapped(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"fc.weight": RunsCode(marker)}, "classes": ["a", "b"], "epoch": 1}, path)
    return path


def test_the_trap_works_when_unpickled(tmp_path):
    """The file below really runs code under a full unpickling (what load_checkpoint did)."""
    path = booby_trapped(tmp_path / "checkpoint.pt", tmp_path / "marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "marker").exists()


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = booby_trapped(tmp_path / "run" / "checkpoint.pt", tmp_path / "marker")
    with pytest.raises(ValueError, match=rf"checkpoint {path} is refused"):
        load_checkpoint(tmp_path / "run")
    assert not (tmp_path / "marker").exists()


@pytest.mark.slow
def test_jobs_refuse_code_in_checkpoint_resume_and_weights(tiny_data, tmp_path):
    marker = tmp_path / "marker"
    evil = booby_trapped(tmp_path / "evil" / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match=rf"checkpoint {evil} is refused"):
        cli.main(["sweep", "--data", str(tiny_data), "--checkpoint", str(evil), "--test-res", "32", *FAST])
    with pytest.raises(ValueError, match=rf"weights file {evil} is refused"):
        cli.main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--weights",
                str(evil),
                "--epochs",
                "1",
                "--train-res",
                "32",
                "--out",
                str(tmp_path / "w"),
                *FAST,
            ]
        )
    run = tmp_path / "resumed"
    cli.main(["train", "--data", str(tiny_data), "--epochs", "1", "--train-res", "32", "--out", str(run), *FAST])
    booby_trapped(run / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match=rf"checkpoint {run / 'checkpoint.pt'} is refused"):
        cli.main(["train", "--resume", "--out", str(run), "--no-progress"])
    assert not marker.exists()


def test_checkpoints_hold_only_data(tmp_path):
    """numpy scalars and paths are saved as Python numbers and strings, so the file loads
    without unpickling any object."""
    RunDir(tmp_path, writer=True).save_checkpoint(
        {
            "model": {"w": torch.ones(2)},
            "classes": ["a", "b"],
            "train_res": np.int64(64),
            "source": tmp_path,
            "sizes": {"32": np.float32(0.5)},
            "sides": (np.int32(32), 48),
        }
    )
    state = load_checkpoint(tmp_path)
    assert state["train_res"] == 64 and type(state["train_res"]) is int
    assert state["source"] == str(tmp_path) and state["sizes"] == {"32": 0.5} and state["sides"] == (32, 48)
