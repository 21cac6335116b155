"""A run's folder: resolved config, metrics per epoch, checkpoint, summary.

Nothing is lost when a run is interrupted: the checkpoint is replaced atomically (temp file
+ rename), metrics are appended line by line, and a resumed run drops any metrics line of an
epoch that its checkpoint does not contain (that epoch runs again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.reuse import write_bytes, write_json, written
from pipeline.tensorfile import read_tensors

CHECKPOINT = "checkpoint.pt"
TORCH_STATES = ("model", "optimizer", "scaler")  # state dicts from torch, saved as they are


def claim_run_folder(path: Path, resume: bool) -> None:
    """A new run needs a folder no other run has trained in; a resumed one needs its own. A
    folder whose run wrote its configuration but never finished an epoch (it failed at start,
    e.g. on a mistyped --data) holds nothing to lose: a new run may take it."""
    started = (path / "config.json").exists()
    trained = (path / "metrics.jsonl").exists() or (path / CHECKPOINT).exists()
    if trained and not resume:
        raise FileExistsError(
            f"run folder {path} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if resume and not started:
        raise FileNotFoundError(f"--resume: no run in {path} (no config.json)")


class RunDir:
    def __init__(self, path: str | os.PathLike, writer: bool):
        self.path = Path(path)
        self.writer = writer  # only rank 0 writes
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, data) -> None:
        if self.writer:
            write_json(self.path / name, data)

    def write_text(self, name: str, text: str) -> None:
        if self.writer:
            write_bytes(self.path / name, text.encode())

    def log(self, record: dict) -> None:
        if self.writer:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def drop_metrics_from(self, epoch: int) -> None:
        """Forget logged epochs >= `epoch` (run again after a resume)."""
        if self.writer:
            kept = [m for m in self.metrics() if m.get("epoch", -1) < epoch]
            write_bytes(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept).encode())

    def save_checkpoint(self, state: dict) -> None:
        if self.writer:
            with written(self.path / CHECKPOINT) as tmp:
                torch.save({k: v if k in TORCH_STATES else plain(v) for k, v in state.items()}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = read_tensors(path, "checkpoint")
    if not isinstance(state, dict) or "model" not in state or "classes" not in state:
        raise ValueError(f"{path} is not a checkpoint of this project (no model/classes entries)")
    return state


def plain(value):
    """`value` with numpy scalars and paths as Python numbers and strings, which a checkpoint
    read with weights_only=True may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value
