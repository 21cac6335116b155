"""Train small, test large: the FixRes recipe from the command line (train.py calls `main`).

    python train.py train     --data ROOT --train-res 128          # from scratch at K_train
    python train.py finetune  --checkpoint RUN --test-res auto     # FixRes head fine-tune at K_test
    python train.py sweep     --checkpoint RUN --test-res 128,160  # accuracy per test resolution
    python train.py recalibrate --checkpoint RUN --test-res 160    # BN statistics at a test side
    python train.py fixres    --data ROOT                          # all of it, with one report
    python train.py activations --checkpoint RUN --test-res 48,96  # pooled-activation statistics per side

ROOT is an ImageNet-layout folder (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG).
Every job writes its own run folder (--out): config.json, metrics.jsonl, checkpoint.pt and a
summary; `--resume` continues an interrupted job. `torchrun --nproc_per_node N train.py ...`
runs any job data-parallel, unchanged.
"""

from __future__ import annotations

import argparse

from app.jobs import run_activations, run_finetune, run_recalibrate, run_sweep, run_train
from app.options import (
    ActivationsConfig,
    FinetuneConfig,
    FixResConfig,
    RecalibrateConfig,
    SweepConfig,
    TrainConfig,
)
from app.study import run_fixres
from pipeline.config import add_arguments, from_args

JOBS = {
    "train": (TrainConfig, run_train, "train from scratch at K_train (RandomResizedCrop)"),
    "finetune": (FinetuneConfig, run_finetune, "FixRes: fine-tune classifier + last BN at K_test"),
    "sweep": (SweepConfig, run_sweep, "evaluate a checkpoint at several test resolutions"),
    "recalibrate": (RecalibrateConfig, run_recalibrate, "re-estimate BN statistics at a test side"),
    "fixres": (FixResConfig, run_fixres, "train, sweep, fine-tune, sweep again, and report"),
    "activations": (ActivationsConfig, run_activations, "statistics of the pooled activations per test side"),
}


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    for name, (cls, _, help_text) in JOBS.items():
        add_arguments(sub.add_parser(name, help=help_text), cls)
    args = parser.parse_args(argv)
    cls, fn, _ = JOBS[args.job]
    try:
        cfg = from_args(cls, args)
    except ValueError as e:
        parser.error(str(e))
    return fn(cfg)
