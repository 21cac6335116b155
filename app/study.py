"""Multi-stage commands: fixres here, the trade-off and size-resilience studies in bench/.

A stage is a job (train, finetune, sweep) whose result file marks it done: a stage whose file
is there (and fits the request) is not run again, so an interrupted command goes on where it
stopped, and a training stage that was interrupted resumes from its checkpoint. Under torchrun
every rank runs the stages; rank 0 alone decides whether a stage is done and reads its result,
which every rank then receives (pipeline/distributed.py `on_main`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from app.jobs import run_finetune, run_sweep, run_train, sweep_name
from app.options import CommonConfig, FinetuneConfig, FixResConfig, SweepConfig, TrainConfig, parse_resolutions
from app.report import fixres_report
from app.runs import RunDir
from app.session import join_ranks, run_folder, source_folder
from pipeline.console import say
from pipeline.distributed import DistContext, on_main
from pipeline.fixres import recommended_test_res
from pipeline.reuse import read_json


def stage_result(result: Path, run: Callable[[], object], dist: DistContext, valid=lambda _: True) -> dict:
    """The JSON at `result`, after calling `run` on every rank (it writes the file) unless a
    file there already passes `valid`. Not pipeline.reuse.reused_or_built: rank 0 alone checks
    the file, and every rank runs the stage."""
    done = on_main(lambda: finished(result, valid), dist)
    if done is None:
        run()
        done = on_main(lambda: json.loads(result.read_text()), dist)
    return done


def finished(result: Path, valid: Callable[[dict], bool]) -> dict | None:
    done = read_json(result)
    return done if done is not None and valid(done) else None


def trained(cfg: TrainConfig) -> dict:
    """The summary of the training run in `cfg.out` with its per-epoch `metrics`: trained (or
    resumed) first unless it finished."""
    return finished_run(cfg, run_train)


def finetuned(cfg: FinetuneConfig) -> dict:
    """The summary of the fine-tuning run in `cfg.out` with its per-epoch `metrics`."""
    return finished_run(cfg, run_finetune)


def finished_run(cfg: TrainConfig | FinetuneConfig, job: Callable) -> dict:
    dist = join_ranks(cfg.device)
    out = Path(cfg.out)
    started = on_main(lambda: (out / "config.json").exists(), dist)
    summary = stage_result(out / "summary.json", lambda: job(dataclasses.replace(cfg, resume=started)), dist)
    metrics = on_main(lambda: RunDir(out, writer=False).metrics(), dist)
    return {**summary, "metrics": metrics}


def swept(cfg: SweepConfig) -> list[dict]:
    """The rows of the sweep `cfg` asks for (beside its checkpoint, or in `cfg.out`), unless it
    was swept so before."""
    folder = Path(cfg.out) if cfg.out else source_folder(cfg)
    return stage_result(
        folder / f"{sweep_name(cfg)}.json",
        lambda: run_sweep(cfg),
        join_ranks(cfg.device),
        valid=lambda done: done["config"]["test_res"] == cfg.test_res,
    )["rows"]


def run_fixres(cfg: FixResConfig) -> dict:
    """Train at K_train, sweep (plain, and with the parametric adaptation), fine-tune at
    K_test, sweep again, report."""
    dist = join_ranks(cfg.device)
    root = run_folder(cfg, "fixres")
    common = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CommonConfig)}
    train_fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    t_train = trained(TrainConfig(**{**train_fields, "out": str(root / "train")}))["train_seconds"]
    sweep_res = ",".join(map(str, parse_resolutions(cfg.sweep_res, cfg.train_res)))

    def sweep(path: Path, parametric: int = 0) -> list[dict]:
        return swept(
            SweepConfig(
                **{**common, "out": str(path), "checkpoint": str(path), "test_res": sweep_res, "parametric": parametric}
            )
        )

    before = sweep(root / "train")
    parametric = sweep(root / "train", cfg.parametric) if cfg.parametric else None
    ft_res = pick_finetune_res(cfg, before)
    ft_dir = root / f"finetune-{ft_res}"
    t_ft = finetuned(
        FinetuneConfig(
            **{
                **common,
                "out": str(ft_dir),
                "checkpoint": str(root / "train"),
                "test_res": str(ft_res),
                "epochs": cfg.finetune_epochs,
                "lr": cfg.finetune_lr,
                "augment": cfg.finetune_augment,
                "log": cfg.log,
            }
        )
    )["train_seconds"]
    after = sweep(ft_dir)
    report = on_main(lambda: fixres_report(root, cfg.train_res, ft_res, before, after, t_train, t_ft, parametric), dist)
    if dist.is_main:
        say(report["table"])
    return report


def pick_finetune_res(cfg: FixResConfig, sweep: list[dict]) -> int:
    if cfg.finetune_res == "auto":
        return recommended_test_res(cfg.train_res)
    if cfg.finetune_res == "best":
        above = [r for r in sweep if r["test_res"] >= cfg.train_res] or sweep
        return max(above, key=lambda r: r["top1"])["test_res"]
    return parse_resolutions(cfg.finetune_res, cfg.train_res)[0]
