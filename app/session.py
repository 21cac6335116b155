"""What every job sets up the same way: device, precision and ranks (a Session), its loaders,
its model on the device, and its run folder with the printed and saved configuration."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from app.options import CommonConfig, FromCheckpoint
from app.runs import CHECKPOINT, RunDir, claim_run_folder, load_checkpoint
from loaders import create_loader
from loaders.base import LoaderConfig
from loaders.indexcache import JOB_ENV
from loaders.sources import class_names, split_root
from pipeline.console import progress_enabled, say
from pipeline.distributed import DistContext, from_main, init_from_env, on_main
from pipeline.models import compile_model, create_model, load_weights
from pipeline.precision import Precision, resolve_device, resolve_precision
from pipeline.sizes import ConstantSize

# --workers -1 on the CPU: the decoders share the cores with the model's own threads.
CPU_WORKERS = 2


@dataclass(frozen=True)
class Session:
    precision: Precision
    dist: DistContext
    progress: bool
    compile: bool = False
    workers: int = CPU_WORKERS  # loader workers per process, --workers resolved

    @property
    def device(self) -> torch.device:
        return self.precision.device


def join_ranks(device: str) -> DistContext:
    """This process's place among the ranks torchrun started (joining their group once): the
    first thing a job does, so that it can share rank 0's decisions from then on. The ranks
    also agree on a job name, with which they share one index rescan (loaders/indexcache.py)."""
    dist = init_from_env(resolve_device(device).type)
    if dist.enabled and JOB_ENV not in os.environ:
        os.environ[JOB_ENV] = from_main(uuid.uuid4().hex, dist)
    return dist


def start_session(cfg: CommonConfig) -> Session:
    device = resolve_device(cfg.device)
    dist = join_ranks(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    workers, why = (cfg.workers, "--workers") if cfg.workers >= 0 else default_workers(device)
    if dist.is_main:
        say(f"loader workers: {workers} per process ({why})")
    return Session(
        resolve_precision(device, cfg.amp), dist, progress_enabled(cfg.progress) and dist.is_main, cfg.compile, workers
    )


def default_workers(device: torch.device) -> tuple[int, str]:
    """(--workers -1's count, where it comes from). On CUDA the decoders are what keeps the
    GPU fed, so each rank gets its share of the cores this process may run on (its affinity
    mask: a cgroup or taskset limit counts, the machine's core count does not); torchrun's
    LOCAL_WORLD_SIZE is the number of ranks sharing them. A launcher that already binds each
    rank to its own cores gets this share divided again: pass --workers there."""
    if device.type != "cuda":
        return CPU_WORKERS, "default on the CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // ranks), f"default on CUDA: {cores} usable CPU cores / {ranks} ranks on this node"


def loader_workers(cfg: CommonConfig, s: Session) -> int:
    """--workers, or the session's default for it (-1)."""
    return cfg.workers if cfg.workers >= 0 else s.workers


def make_loader(
    cfg: CommonConfig,
    s: Session,
    split: str,
    policy,
    augment: str,
    shuffle: bool,
    classes: list[str] | None = None,
    repeats: int = 1,
    color_jitter: float = 0.0,
):
    """The loader of `split` (--train-data / --val-data, or <data>/<split>); labels index
    `classes` (the training classes or a checkpoint's), else --classes, else the data's own."""
    lc = LoaderConfig(
        backend=cfg.loader,
        root=split_root(cfg.data, split, cfg.train_data if split == "train" else cfg.val_data),
        policy=policy,
        augment=augment,
        shuffle=shuffle,
        device=s.device,
        dtype=s.precision.input_dtype,
        seed=cfg.seed,
        workers=loader_workers(cfg, s),
        rank=s.dist.rank,
        world_size=s.dist.world_size,
        classes=data_classes(cfg, classes),
        skip_bad=cfg.skip_bad,
        check=cfg.check,
        rescan=cfg.rescan,
        orientation=cfg.exif_orientation,
        repeats=repeats,
        color_jitter=color_jitter,
    )
    loader = create_loader(lc, progress=s.progress)
    if s.dist.is_main:
        say(f"{split}: {loader.summary}")
    return loader


def data_classes(cfg: CommonConfig, known: list[str] | None) -> list[str] | None:
    """`known` (the training or checkpoint classes) or the names --classes gives, which must
    agree with `known` when both are there."""
    given = class_names(cfg.classes) if cfg.classes else None
    if given is not None and known is not None and given != known:
        raise ValueError(
            f"--classes {cfg.classes} names other classes than the checkpoint's "
            f"({len(given)}: {given[:3]}... vs {len(known)}: {known[:3]}...)"
        )
    return known if known is not None else given


def prepare_model(model: nn.Module, s: Session) -> nn.Module:
    model = model.to(s.device, memory_format=torch.channels_last)
    return compile_model(model) if s.compile else model


def source_checkpoint(cfg: FromCheckpoint, s: Session) -> dict:
    """The checkpoint a job starts from: ours (--checkpoint), or one made of a state dict the
    user brings (--model, --weights, --train-res) with the classes of the data (the validation
    split's class folders, as torchvision's ImageNet weights expect them)."""
    if cfg.checkpoint:
        return on_main(lambda: load_checkpoint(cfg.checkpoint), s.dist)
    return on_main(lambda: checkpoint_of_weights(cfg, s), s.dist)


def checkpoint_of_weights(cfg: FromCheckpoint, s: Session) -> dict:
    probe = make_loader(dataclasses.replace(cfg, workers=0), s, "val", ConstantSize(cfg.train_res, 1), "center", False)
    model = create_model(cfg.model, len(probe.classes))
    load_weights(model, cfg.weights)
    return {
        "model": model.state_dict(),
        "classes": probe.classes,
        "model_name": cfg.model,
        "train_res": cfg.train_res,
        "weights": cfg.weights,
    }


def source_folder(cfg: FromCheckpoint) -> Path:
    """Where a job on a trained model writes by default: beside the checkpoint, or for a state
    dict in runs/<its file name>."""
    return checkpoint_folder(cfg.checkpoint) if cfg.checkpoint else Path("runs") / Path(cfg.weights).stem


def model_from_checkpoint(state: dict, s: Session) -> nn.Module:
    model = create_model(state["model_name"], len(state["classes"]))
    model.load_state_dict(state["model"])
    return prepare_model(model, s)


def checkpoint_folder(checkpoint: str) -> Path:
    return Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent


def run_folder(cfg: CommonConfig, job: str) -> Path:
    """--out, or runs/<job>-<time> as rank 0's clock reads it (ranks may start a second apart)."""
    if cfg.out:
        return Path(cfg.out)
    return Path(from_main(f"runs/{job}-{time.strftime('%Y%m%d-%H%M%S')}", join_ranks(cfg.device)))


def announce(job: str, cfg, run: RunDir, s: Session) -> None:
    """Print the resolved configuration and save it in the run folder."""
    if s.dist.is_main:
        say(f"== {job} -> {run.path}\n{json.dumps(asdict(cfg), indent=2)}")
    run.write_json(
        "config.json",
        {
            "job": job,
            **asdict(cfg),
            "world_size": s.dist.world_size,
            "resolved_device": str(s.device),
            "resolved_workers": s.workers,
            "resolved_amp": str(s.precision.amp_dtype),
        },
    )


def resume_or_start(cfg, job: str):
    """(config, run folder, checkpoint or None). A resumed run reloads its saved config, so
    it continues exactly the run that was interrupted (from scratch if it was stopped
    before its first checkpoint)."""
    dist = join_ranks(cfg.device)
    path = run_folder(cfg, job)
    on_main(lambda: claim_run_folder(path, cfg.resume), dist)
    if not cfg.resume:
        return cfg, path, None
    saved, state = on_main(lambda: saved_run(path), dist)
    fields = {f.name for f in dataclasses.fields(cfg)}
    cfg = type(cfg)(
        **{
            **{k: v for k, v in saved.items() if k in fields},
            "resume": True,
            "progress": cfg.progress,
            "out": str(path),
        }
    )
    return cfg, path, state


def saved_run(path: Path) -> tuple[dict, dict | None]:
    """The configuration and, once it has one, the checkpoint of the run in `path`."""
    saved = json.loads((path / "config.json").read_text())
    return saved, load_checkpoint(path) if (path / CHECKPOINT).exists() else None
