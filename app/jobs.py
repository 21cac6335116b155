"""The jobs: train, finetune, sweep, recalibrate, activations (fixres, which runs several of
them, is in app/study.py).

Each takes its configuration (app/options.py), writes its own run folder and returns
what a caller needs (the folder, or the sweep's rows); app/cli.py maps commands to them.
Every rank runs a job alike; rank 0 alone writes (app/runs.py) and reads what it wrote
(pipeline/distributed.py `on_main`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from app.engine import evaluate, fit
from app.options import (
    ActivationsConfig,
    CommonConfig,
    FinetuneConfig,
    FromCheckpoint,
    RecalibrateConfig,
    SweepConfig,
    TrainConfig,
    parse_resolutions,
)
from app.report import activations_table, plot_activation_cdfs, sweep_table
from app.runs import RunDir, claim_run_folder, load_checkpoint
from app.session import (
    Session,
    announce,
    join_ranks,
    make_loader,
    model_from_checkpoint,
    prepare_model,
    resume_or_start,
    source_checkpoint,
    source_folder,
    start_session,
)
from pipeline.activations import activation_stats, pooled_features
from pipeline.bn import recalibrate_bn
from pipeline.console import say
from pipeline.distributed import on_main, rank_share
from pipeline.finetune import FINETUNE_AUGMENTATIONS, finetune_parameters
from pipeline.fixres import apparent_size_ratio, recommended_test_res
from pipeline.models import create_model, load_weights
from pipeline.optim import make_sgd
from pipeline.parametric import Frechet, fit_distance, fit_frechet, with_equalization
from pipeline.sizes import ConstantSize


def run_train(cfg: TrainConfig) -> Path:
    cfg, path, state = resume_or_start(cfg, "train")
    s = start_session(cfg)
    run = RunDir(path, s.dist.is_main)
    announce("train", cfg, run, s)
    policy = cfg.size_policy()
    train_loader = make_loader(cfg, s, "train", policy, "rrc", shuffle=True, repeats=cfg.repeated_aug)
    classes = train_loader.classes
    last_res = policy.nominal_res(cfg.epochs - 1)
    eval_res = cfg.eval_res or last_res
    val_loader = make_loader(cfg, s, "val", ConstantSize(eval_res, cfg.batch_size), "center", False, classes)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(classes))
    if cfg.weights:
        load_weights(model, cfg.weights)
    if state is not None:
        model.load_state_dict(state["model"])
    model = prepare_model(model, s)
    optimizer = make_sgd(model, cfg.momentum, cfg.weight_decay)
    meta = {"classes": classes, "model_name": cfg.model, "train_res": last_res, "job": "train"}
    last = fit(model, train_loader, val_loader, optimizer, cfg, run, s, state, meta)
    run.write_json(
        "summary.json",
        {
            "job": "train",
            "train_res": last_res,
            "eval_res": eval_res,
            "final": last,
            "train_seconds": sum(m["train_seconds"] for m in run.metrics()),
            "skipped": {"train": train_loader.skipped, "val": val_loader.skipped},
        },
    )
    return path


def run_finetune(cfg: FinetuneConfig) -> Path:
    train_res, test_res = one_test_res(cfg)
    if not cfg.out:
        cfg = dataclasses.replace(cfg, out=f"{source_folder(cfg)}-ft{test_res}")
    cfg, path, state = resume_or_start(cfg, "finetune")
    s = start_session(cfg)
    run = RunDir(path, s.dist.is_main)
    announce("finetune", cfg, run, s)
    source = source_checkpoint(cfg, s)
    classes = source["classes"]
    if s.dist.is_main:
        say(
            f"FixRes fine-tuning at K_test={test_res} with {cfg.augment} augmentation (trained at {train_res}; "
            f"apparent object size ratio {apparent_size_ratio(train_res, test_res):.2f})"
        )
    policy = ConstantSize(test_res, cfg.batch_size)
    augment, jitter = FINETUNE_AUGMENTATIONS[cfg.augment]
    train_loader = make_loader(cfg, s, "train", policy, augment, shuffle=True, classes=classes, color_jitter=jitter)
    val_loader = make_loader(cfg, s, "val", policy, "center", shuffle=False, classes=classes)

    model = model_from_checkpoint(state or source, s)
    finetune_parameters(model)
    optimizer = make_sgd(model, cfg.momentum, cfg.weight_decay)
    meta = {
        "classes": classes,
        "model_name": source["model_name"],
        "train_res": source["train_res"],
        "test_res": test_res,
        "job": "finetune",
        "source": str(cfg.source),
    }
    last = fit(model, train_loader, val_loader, optimizer, cfg, run, s, state, meta)
    run.write_json(
        "summary.json",
        {
            "job": "finetune",
            "train_res": source["train_res"],
            "test_res": test_res,
            "final": last,
            "train_seconds": sum(m["train_seconds"] for m in run.metrics()),
        },
    )
    return path


def one_test_res(cfg: FromCheckpoint) -> tuple[int, int]:
    """(K_train of the model, the test side of a one-side job: --test-res, auto being the
    apparent-size rule's K_test)."""
    if cfg.checkpoint:
        train_res = on_main(lambda: load_checkpoint(cfg.checkpoint)["train_res"], join_ranks(cfg.device))
    else:
        train_res = cfg.train_res
    if cfg.test_res == "auto":
        return train_res, recommended_test_res(train_res)
    return train_res, parse_resolutions(cfg.test_res, train_res)[0]


def run_sweep(cfg: SweepConfig) -> list[dict]:
    s = start_session(cfg)
    run = RunDir(cfg.out or source_folder(cfg), s.dist.is_main)  # beside the checkpoint
    if s.dist.is_main:
        say(f"== sweep {cfg.source}\n{json.dumps(asdict(cfg), indent=2)}")
    state = source_checkpoint(cfg, s)
    classes, train_res = state["classes"], state["train_res"]
    trained = model_from_checkpoint(state, s)
    train_law = fitted_law(trained, cfg, s, train_res, classes) if cfg.parametric else None
    rows = []
    for res in parse_resolutions(cfg.test_res, train_res):
        model, laws = trained, {}
        if cfg.recalibrate_bn:
            model = copy.deepcopy(trained)
            recalibrate_at(model, cfg, s, res, cfg.recalibrate_bn, classes)
        if train_law:
            test_law = fitted_law(model, cfg, s, res, classes)
            model = with_equalization(copy.deepcopy(model), test_law, train_law)
            laws = {"frechet_test": asdict(test_law), "frechet_train": asdict(train_law)}
        loader = make_loader(cfg, s, "val", ConstantSize(res, cfg.batch_size), "center", False, classes)
        m = evaluate(model, loader, s.precision, s.dist, s.progress, desc=f"sweep {res}")
        rows.append(
            {
                "test_res": res,
                "top1": m["top1"],
                "top5": m["top5"],
                "loss": m["loss"],
                "apparent_size_ratio": apparent_size_ratio(train_res, res),
                "img_per_s": m["images"] / m["seconds"],
                "images": m["images"],
                "recalibrated_batches": cfg.recalibrate_bn,
                "parametric_batches": cfg.parametric,
                **laws,
            }
        )
        if s.dist.is_main:
            say(f"K_test {res:4d}  top1 {m['top1']:6.2f}  top5 {m['top5']:6.2f}")
    bn = f", BN recalibrated on {cfg.recalibrate_bn} batches" if cfg.recalibrate_bn else ""
    parametric = f", parametric adaptation fitted on {cfg.parametric} batches" if cfg.parametric else ""
    table = sweep_table(rows, title=f"{Path(cfg.source)} (train {train_res}{bn}{parametric})")
    if s.dist.is_main:
        say(table)
    name = sweep_name(cfg)
    run.write_json(
        f"{name}.json", {"checkpoint": str(cfg.source), "train_res": train_res, "config": asdict(cfg), "rows": rows}
    )
    run.write_text(f"{name}.md", table + "\n")
    return rows


def sweep_name(cfg: SweepConfig) -> str:
    """The sweep's file name in the run folder: one per kind of adaptation."""
    return (
        "sweep"
        + (f"-bn{cfg.recalibrate_bn}" if cfg.recalibrate_bn else "")
        + (f"-parametric{cfg.parametric}" if cfg.parametric else "")
    )


def train_sample(cfg: CommonConfig, s: Session, res: int, classes: list[str]):
    """Shuffled training images at side `res` under the test-time augmentation: the sample
    that BN recalibration and the parametric fit estimate from."""
    return make_loader(cfg, s, "train", ConstantSize(res, cfg.batch_size), "center", True, classes)


def recalibrate_at(model: nn.Module, cfg: CommonConfig, s: Session, res: int, batches: int, classes: list[str]) -> int:
    """Re-estimate `model`'s BN statistics at side `res` from `batches` training batches in all."""
    seen = recalibrate_bn(model, train_sample(cfg, s, res, classes), rank_share(batches, s.dist), s.precision, s.dist)
    if s.dist.is_main:
        say(f"BN statistics re-estimated at {res} px from {seen} images per process")
    return seen


def fitted_law(model: nn.Module, cfg: SweepConfig, s: Session, res: int, classes: list[str]) -> Frechet:
    """The Fréchet law of `model`'s pooled activations at side `res` (FixRes appendix A),
    fitted on `cfg.parametric` training batches in all: the images one process would fit on."""
    sample = train_sample(cfg, s, res, classes)
    values = pooled_features(model, sample, s.precision, s.dist, rank_share(cfg.parametric, s.dist))
    law = fit_frechet(values)
    if s.dist.is_main:
        say(
            f"Fréchet law at {res} px from {values.shape[0]} images: mu {law.mu:.4f}, sigma {law.sigma:.4f}, "
            f"xi {law.xi:g} (zeros {100 * (values == 0).double().mean().item():.1f}%, Kolmogorov distance "
            f"of the fit {fit_distance(values, law):.3f})"
        )
    return law


def run_activations(cfg: ActivationsConfig) -> list[dict]:
    """Statistics of the pooled activations on the validation set at each test side, for the
    checkpoint and, with --compare, a second one: table, JSON and CDF plot beside the first."""
    s = start_session(cfg)
    state = source_checkpoint(cfg, s)
    run = RunDir(cfg.out or source_folder(cfg), s.dist.is_main)
    if s.dist.is_main:
        say(f"== activations {cfg.source}\n{json.dumps(asdict(cfg), indent=2)}")
    sides = parse_resolutions(cfg.test_res, state["train_res"])
    rows = []
    compared = [(cfg.compare, on_main(lambda: load_checkpoint(cfg.compare), s.dist))] if cfg.compare else []
    models = [(cfg.source, state), *compared]
    for path, checkpoint in models:
        model = model_from_checkpoint(checkpoint, s)
        for res in sides:
            loader = make_loader(
                cfg, s, "val", ConstantSize(res, cfg.batch_size), "center", False, checkpoint["classes"]
            )
            features = pooled_features(model, loader, s.precision, s.dist, rank_share(cfg.batches, s.dist))
            stats = activation_stats(features)
            rows.append({"checkpoint": str(path), "train_res": checkpoint["train_res"], "test_res": res, **stats})
    table = activations_table(rows)
    if s.dist.is_main:
        say(table)
        run.write_json("activations.json", {"config": asdict(cfg), "rows": rows})
        run.write_text("activations.md", table + "\n")
        plot_activation_cdfs(run.path / "activations.png", rows)
    return rows


def run_recalibrate(cfg: RecalibrateConfig) -> Path:
    """Re-estimate BN statistics at one test side and save the result as a new checkpoint."""
    _, res = one_test_res(cfg)
    path = Path(cfg.out or f"{source_folder(cfg)}-bn{res}")
    s = start_session(cfg)
    on_main(lambda: claim_run_folder(path, resume=False), s.dist)
    run = RunDir(path, s.dist.is_main)
    announce("recalibrate", cfg, run, s)
    state = source_checkpoint(cfg, s)
    model = model_from_checkpoint(state, s)
    seen = recalibrate_at(model, cfg, s, res, cfg.batches, state["classes"])
    run.save_checkpoint(
        {
            **{k: v for k, v in state.items() if k not in ("optimizer", "scaler")},
            "model": model.state_dict(),
            "test_res": res,
            "recalibrated_images": seen,
            "source": str(cfg.source),
        }
    )
    run.write_json("summary.json", {"job": "recalibrate", "test_res": res, "images": seen, "source": str(cfg.source)})
    return path
