"""The data wait: measured through the real trainer with loaders and steps slowed on purpose,
so that every bound below follows from the sleeps, not from the machine's speed."""

import time

import pytest
from torch import nn

from app.datawait import STARVED_SHARE, starvation_verdict
from app.engine import fit, train_epoch
from app.options import OptimConfig
from app.runs import RunDir
from app.session import Session
from loaders import create_loader
from loaders.base import LoaderConfig
from pipeline.distributed import DistContext
from pipeline.optim import LrSchedule, make_sgd
from pipeline.sizes import ConstantSize
from tests.helpers import CPU, json_lines


class SlowLoader:
    """A real loader whose every batch arrives `delay` seconds late."""

    def __init__(self, loader, delay: float):
        self.loader, self.delay = loader, delay

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


class SlowLoss(nn.CrossEntropyLoss):
    """The real loss, `delay` seconds slower: a step that takes at least that long."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def forward(self, logits, labels):
        time.sleep(self.delay)
        return super().forward(logits, labels)


def real_loader(backend: str, tiny_data):
    """The backend over the tiny training split (synthetic: its classes and length), 6 batches of 8."""
    cfg = LoaderConfig(backend, str(tiny_data / "train"), ConstantSize(32, 8), "rrc", shuffle=True)
    return create_loader(cfg, progress=False)


def small_model() -> nn.Module:
    """A model whose step costs next to nothing beside the sleeps, even on a busy machine."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def one_epoch(loader, criterion, progress=False) -> dict:
    model = small_model()
    optimizer = make_sgd(model, 0.9, 0.0)
    schedule = LrSchedule(base_lr=0.1, epochs=1, warmup_epochs=0)
    return train_epoch(model, loader, optimizer, CPU.scaler(), criterion, schedule, 0, CPU, DistContext(), progress)


@pytest.mark.parametrize("backend", ["synthetic", "pil"])
def test_the_wait_counts_the_loader_and_not_the_step(tiny_data, backend):
    wait, step = 0.04, 0.04
    stats = one_epoch(SlowLoader(real_loader(backend, tiny_data), wait), SlowLoss(step))
    steps = stats["train_steps"]
    assert steps == 6
    assert stats["data_wait_seconds"] >= steps * wait  # every late batch was waited for
    assert stats["data_wait_seconds"] <= stats["train_seconds"] - steps * step  # the steps were not
    assert stats["data_wait_share"] == pytest.approx(stats["data_wait_seconds"] / stats["train_seconds"])


def test_progress_bar_shows_the_running_wait(tiny_data, capsys):
    one_epoch(SlowLoader(real_loader("synthetic", tiny_data), 0.01), nn.CrossEntropyLoss(), progress=True)
    assert "wait=" in capsys.readouterr().err


def test_verdict_names_the_knobs_above_the_threshold_only():
    assert starvation_verdict(STARVED_SHARE, "pil", 2) is None
    verdict = starvation_verdict(0.5, "pil", 2)
    assert "50%" in verdict and "pil loader starves" in verdict
    for knob in ("--workers (now 2", "--loader", "python -m loaders.prepare", "python -m loaders.ffcv write"):
        assert knob in verdict


def test_a_starved_run_logs_the_wait_and_says_what_to_turn(tiny_data, tmp_path, capsys):
    """fit over a loader that sleeps far longer than the step: metrics.jsonl holds the wait
    and the epoch line is followed by the verdict."""
    wait = 0.2
    cfg = OptimConfig(loader="synthetic", workers=1, epochs=2, batch_size=8, warmup_epochs=0)
    loader = SlowLoader(real_loader("synthetic", tiny_data), wait)
    val = real_loader("synthetic", tiny_data)
    run = RunDir(tmp_path / "run", writer=True)
    model = small_model()
    fit(model, loader, val, make_sgd(model, 0.9, 0.0), cfg, run, Session(CPU, DistContext(), False), None, {})
    out = capsys.readouterr().out
    records = json_lines(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 2
    for r in records:
        assert r["data_wait_seconds"] >= r["train_steps"] * wait
        assert STARVED_SHARE < r["data_wait_share"] <= 1
        assert f"data wait {r['data_wait_share']:.0%}" in out
    assert out.count("the synthetic loader starves the model") == 2
    assert "--workers (now 1" in out
