import pytest
import torch
from torch import nn

from app.engine import train_epoch
from loaders import create_loader
from loaders.base import LoaderConfig
from pipeline.distributed import DistContext
from pipeline.models import create_model
from pipeline.optim import LrSchedule, make_sgd
from pipeline.precision import Precision, resolve_precision
from pipeline.sizes import MixSize


class LrWatcher:
    """Iterates a real loader and notes the optimiser's lr each time the trainer asks for the
    next batch, i.e. the lr the previous step used."""

    def __init__(self, loader, optimizer):
        self.loader, self.optimizer, self.seen = loader, optimizer, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch
            self.seen.append((batch[0].shape[0], self.optimizer.param_groups[0]["lr"]))


def test_lr_per_step_follows_the_batch_size_of_mixsize():
    policy = MixSize((16, 32), (1, 1), batch_size=4, mode="B+", seed=0)
    cfg = LoaderConfig("synthetic", None, policy, "rrc", shuffle=True, synthetic_samples=64)
    loader = create_loader(cfg)
    model = create_model("resnet_tiny", 10)
    optimizer = make_sgd(model, 0.9, 0.0)
    schedule = LrSchedule(base_lr=0.256, epochs=1000)  # flat over one epoch: only B matters
    watcher = LrWatcher(loader, optimizer)
    precision = Precision(torch.device("cpu"), None)
    stats = train_epoch(
        model,
        watcher,
        optimizer,
        precision.scaler(),
        nn.CrossEntropyLoss(),
        schedule,
        0,
        precision,
        DistContext(),
        progress=False,
    )
    assert {n for n, _ in watcher.seen} == {4, 16}
    for n, lr in watcher.seen:
        assert lr == pytest.approx(0.256 * n / 256, rel=1e-3)
    assert stats["train_images"] == 64 and set(stats["sizes"]) == {"16", "32"}
    assert stats["train_steps"] == len(watcher.seen) == len(policy.plan(0, 64, drop_last=True))


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto").amp_dtype is None
    assert resolve_precision(cpu, "bf16").amp_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_precision(cpu, "fp8")


def test_bf16_autocast_step_runs_on_cpu():
    """The AMP path (autocast + scaler toggled by enabled=) is one code path: bf16 runs on
    the CPU too, so it is exercised here."""
    precision = resolve_precision(torch.device("cpu"), "bf16")
    cfg = LoaderConfig("synthetic", None, MixSize((32,), (1,), 8), "rrc", shuffle=True, synthetic_samples=16)
    model = create_model("resnet_tiny", 10).to(memory_format=torch.channels_last)
    optimizer = make_sgd(model, 0.9, 0.0)
    stats = train_epoch(
        model,
        create_loader(cfg),
        optimizer,
        precision.scaler(),
        nn.CrossEntropyLoss(),
        LrSchedule(0.1, 1),
        0,
        precision,
        DistContext(),
        progress=False,
    )
    assert stats["train_images"] == 16 and torch.isfinite(torch.tensor(stats["train_loss"]))
