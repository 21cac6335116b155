"""What every job sets up the same way: device, precision and ranks (a Session), its loaders,
its model on the device, and its run folder with the printed and saved configuration."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from loaders import create_loader
from loaders.base import LoaderConfig
from pipeline.console import progress_enabled, say
from pipeline.distributed import DistContext, init_from_env
from pipeline.models import create_model
from pipeline.options import CommonConfig
from pipeline.precision import Precision, resolve_device, resolve_precision
from pipeline.runs import CHECKPOINT, RunDir, claim_run_folder, load_checkpoint


@dataclass(frozen=True)
class Session:
    precision: Precision
    dist: DistContext
    progress: bool

    @property
    def device(self) -> torch.device:
        return self.precision.device


def start_session(cfg: CommonConfig) -> Session:
    device = resolve_device(cfg.device)
    dist = init_from_env(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Session(resolve_precision(device, cfg.amp), dist, progress_enabled(cfg.progress) and dist.is_main)


def make_loader(cfg: CommonConfig, s: Session, split: str, policy, augment: str, shuffle: bool,
                classes: list[str] | None = None):
    lc = LoaderConfig(
        backend=cfg.loader, root=str(Path(cfg.data) / split), policy=policy, augment=augment,
        shuffle=shuffle, device=s.device, dtype=s.precision.input_dtype, seed=cfg.seed,
        workers=cfg.workers, rank=s.dist.rank, world_size=s.dist.world_size, classes=classes,
        skip_bad=cfg.skip_bad, check=cfg.check)
    loader = create_loader(lc, progress=s.progress)
    if s.dist.is_main:
        say(f"{split}: {loader.summary}")
    return loader


def prepare_model(model: nn.Module, s: Session) -> nn.Module:
    return model.to(s.device, memory_format=torch.channels_last)


def model_from_checkpoint(state: dict, s: Session) -> nn.Module:
    model = create_model(state["model_name"], len(state["classes"]))
    model.load_state_dict(state["model"])
    return prepare_model(model, s)


def checkpoint_folder(checkpoint: str) -> Path:
    return Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent


def run_folder(cfg: CommonConfig, job: str) -> Path:
    return Path(cfg.out or f"runs/{job}-{time.strftime('%Y%m%d-%H%M%S')}")


def announce(job: str, cfg, run: RunDir, s: Session) -> None:
    """Print the resolved configuration and save it in the run folder."""
    if s.dist.is_main:
        say(f"== {job} -> {run.path}\n{json.dumps(asdict(cfg), indent=2)}")
    run.write_json("config.json", {"job": job, **asdict(cfg), "world_size": s.dist.world_size,
                                   "resolved_device": str(s.device),
                                   "resolved_amp": str(s.precision.amp_dtype)})


def resume_or_start(cfg, job: str):
    """(config, run folder, checkpoint or None). A resumed run reloads its saved config, so
    it continues exactly the run that was interrupted (from scratch if it was stopped
    before its first checkpoint)."""
    path = run_folder(cfg, job)
    claim_run_folder(path, cfg.resume)
    if not cfg.resume:
        return cfg, path, None
    saved = json.loads((path / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(cfg)}
    cfg = type(cfg)(**{**{k: v for k, v in saved.items() if k in fields}, "resume": True,
                       "progress": cfg.progress, "out": str(path)})
    return cfg, path, load_checkpoint(path) if (path / CHECKPOINT).exists() else None
