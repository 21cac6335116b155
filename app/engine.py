"""The training step, the epoch loops (`fit` over epochs, `train_epoch` over steps) and
evaluation, shared by train, finetune, sweep and the benchmarks. Batches come from any
`Loader`; the loops read only their shapes.

Metrics accumulate on the device and are read once per epoch (and every few steps for the
progress bar), so the step never waits for the host.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from app.datawait import DataClock, starvation_verdict
from app.options import OptimConfig
from app.runs import RunDir
from app.session import Session, loader_workers
from app.tblog import TensorBoardLog, tensorboard_log
from pipeline.console import say
from pipeline.distributed import DistContext, all_sum, barrier
from pipeline.optim import LrSchedule, load_sgd_state, set_lr
from pipeline.precision import Precision

BAR_EVERY = 10  # steps between progress-bar updates (each one syncs with the device)


def forward_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, criterion, precision: Precision
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of one batch under the run's precision."""
    with precision.autocast():
        logits = model(images)
        return logits, criterion(logits, labels)


def backward_step(loss: torch.Tensor, optimizer, scaler) -> None:
    """Gradients of `loss` and one optimiser update (through the scaler under fp16)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer, scaler, criterion, precision: Precision
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step: forward, backward, update; returns (logits, loss). The benchmarks
    time its two halves apart, so each is a function of its own."""
    logits, loss = forward_loss(model, images, labels, criterion, precision)
    backward_step(loss, optimizer, scaler)
    return logits, loss


def train_epoch(
    model: nn.Module,
    loader,
    optimizer,
    scaler,
    criterion,
    schedule: LrSchedule,
    epoch: int,
    precision: Precision,
    dist: DistContext,
    progress: bool = True,
    tb: TensorBoardLog | None = None,
) -> dict:
    """One pass over `loader`; returns loss, accuracy, optimiser steps, throughput, the time
    spent waiting for batches and the sizes used. `tb` gets the step scalars (rank 0)."""
    model.train()
    steps = len(loader)
    device = precision.device
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss*n, correct: stay on the device
    sizes: Counter = Counter()  # images per side, counted on the host (shapes need no sync)
    clock = DataClock()
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not progress, leave=False)
    start = time.perf_counter()
    last = Mark(start)
    for i, (images, labels) in enumerate(clock.batches(loader)):
        n, side = images.shape[0], images.shape[-1]
        sizes[side] += n
        lr = schedule.lr(epoch + i / steps, n * dist.world_size)
        set_lr(optimizer, lr)
        logits, loss = train_step(model, images, labels, optimizer, scaler, criterion, precision)
        with torch.no_grad():
            sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == labels).sum().double()])
        bar.update(1)
        if tb is not None:
            tb.step(i, lr=lr, res=side)
        if (progress or tb is not None) and (i % BAR_EVERY == 0 or i == steps - 1):
            now = mark(sums, sizes.total(), clock.waited)
            if tb is not None:
                tb.step(i, **window(last, now))
            last = now
            wait = clock.share(now.time - start)
            bar.set_postfix(loss=f"{now.loss / now.images:.3f}", lr=f"{lr:.3g}", res=side, wait=f"{wait:.0%}")
    bar.close()
    seconds = time.perf_counter() - start
    sides = sorted(sizes)  # every rank trains the same sides (the plan is drawn from seed and epoch)
    counts = torch.tensor([float(sizes[k]) for k in sides], device=device, dtype=torch.float64)
    timing = torch.tensor([clock.waited, seconds], device=device, dtype=torch.float64)
    loss_sum, correct, waited, rank_seconds, *counts = all_sum(torch.cat([sums, timing, counts]), dist).tolist()
    count = sum(counts)
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_acc": 100 * correct / max(count, 1),
        "train_images": int(count),
        "train_steps": steps,
        "train_seconds": seconds,
        "train_img_per_s": count / seconds if seconds else 0.0,
        "data_wait_seconds": waited / dist.world_size,  # per process, the mean over the ranks
        "data_wait_share": waited / rank_seconds if rank_seconds else 0.0,
        "sizes": {str(k): int(n) for k, n in zip(sides, counts)},  # images per side, all ranks
    }


@dataclass(frozen=True)
class Mark:
    """An epoch's running totals at one point where the host reads the device's sums."""

    time: float
    images: int = 0
    waited: float = 0.0
    loss: float = 0.0  # summed over the images
    correct: float = 0.0


def mark(sums: torch.Tensor, images: int, waited: float) -> Mark:
    loss, correct = sums.tolist()  # the one sync with the device
    return Mark(time.perf_counter(), images, waited, loss, correct)


def window(a: Mark, b: Mark) -> dict:
    """Loss, accuracy, img/s and data-wait share of the steps between two marks. Both marks
    synced with the device, so the wall time between them is the steps' own."""
    n, dt = max(b.images - a.images, 1), b.time - a.time
    return {
        "loss": (b.loss - a.loss) / n,
        "acc": 100 * (b.correct - a.correct) / n,
        "img_per_s": (b.images - a.images) / dt if dt > 0 else 0.0,
        "data_wait_share": min((b.waited - a.waited) / dt, 1.0) if dt > 0 else 0.0,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, precision: Precision, dist: DistContext, progress: bool = True, desc: str = "eval"
) -> dict:
    """Top-1/top-5 accuracy and loss over every sample once (summed across ranks).

    Call it with the unwrapped model: DDP would broadcast buffers on every forward, and
    ranks may hold one batch more than others in evaluation.
    """
    model.eval()
    device = precision.device
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss*n, top1, top5: stay on the device
    images_seen = 0
    start = time.perf_counter()
    for images, labels in tqdm(loader, desc=desc, unit="step", disable=not progress, leave=False):
        with precision.autocast():
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == labels[:, None]
        sums += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.any(1).sum().double()])
        images_seen += labels.shape[0]
    seconds = time.perf_counter() - start
    count = torch.tensor([float(images_seen)], device=device, dtype=torch.float64)
    loss_sum, top1, top5, count = all_sum(torch.cat([sums, count]), dist).tolist()
    return {
        "loss": loss_sum / max(count, 1),
        "top1": 100 * top1 / max(count, 1),
        "top5": 100 * top5 / max(count, 1),
        "images": int(count),
        "seconds": seconds,
    }


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer,
    cfg: OptimConfig,
    run: RunDir,
    s: Session,
    state: dict | None,
    meta: dict,
) -> dict:
    """The epoch loop of train and finetune: train, validate, log, checkpoint (with `meta`).
    `state` is the checkpoint of an interrupted run to continue, or None."""
    core = model
    scaler = s.precision.scaler()
    start_epoch = 0
    if state is not None:
        load_sgd_state(optimizer, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        say(f"resuming {run.path} at epoch {start_epoch + 1}/{cfg.epochs}")
    run.drop_metrics_from(start_epoch)  # epochs logged but not checkpointed run again
    if s.dist.enabled:
        model = DistributedDataParallel(model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    schedule = cfg.lr_schedule()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    tb = tensorboard_log(run, cfg.log)
    last = {}
    try:
        for epoch in range(start_epoch, cfg.epochs):
            train_loader.set_epoch(epoch)
            stats = train_epoch(
                model, train_loader, optimizer, scaler, criterion, schedule, epoch, s.precision, s.dist, s.progress, tb
            )
            val = evaluate(core, val_loader, s.precision, s.dist, s.progress, desc="val")
            last = {"epoch": epoch, **stats, **{f"val_{k}": v for k, v in val.items()}}
            run.log(last)
            if tb is not None:
                tb.epoch(last)
            run.save_checkpoint(
                {
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    **meta,
                }
            )
            if s.dist.is_main:
                report_epoch(last, cfg, loader_workers(cfg, s))
    finally:
        if tb is not None:
            tb.close()
    barrier(s.dist)
    return last


def report_epoch(record: dict, cfg: OptimConfig, workers: int) -> None:
    """The epoch line, and the starvation verdict below it when the loader kept the model waiting
    (`workers`: the run's --workers as resolved at start)."""
    say(
        f"epoch {record['epoch'] + 1}/{cfg.epochs}  sizes {record['sizes']}  loss {record['train_loss']:.3f}  "
        f"train acc {record['train_acc']:.1f}  val top1 {record['val_top1']:.2f}  "
        f"{record['train_img_per_s']:.0f} img/s  {record['train_seconds']:.1f}s  "
        f"data wait {record['data_wait_share']:.0%}"
    )
    verdict = starvation_verdict(record["data_wait_share"], cfg.loader, workers)
    if verdict:
        say(verdict)
