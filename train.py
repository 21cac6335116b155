"""Train small, test large: the FixRes recipe from the command line.

    python train.py train     --data ROOT --train-res 128          # from scratch at K_train
    python train.py finetune  --checkpoint RUN --test-res auto     # FixRes head fine-tune at K_test
    python train.py sweep     --checkpoint RUN --test-res 128,160  # accuracy per test resolution
    python train.py recalibrate --checkpoint RUN --test-res 160    # BN statistics at a test side
    python train.py fixres    --data ROOT                          # all of it, with one report

ROOT is an ImageNet-layout folder (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG).
Every job writes its own run folder (--out): config.json, metrics.jsonl, checkpoint.pt and a
summary; `--resume` continues an interrupted job. `torchrun --nproc_per_node N train.py ...`
runs any job data-parallel, unchanged.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loaders import BACKENDS, create_loader
from loaders.base import LoaderConfig
from pipeline.bn import recalibrate_bn
from pipeline.config import add_arguments, from_args, opt, positive_ints
from pipeline.distributed import DistContext, barrier, init_from_env
from pipeline.engine import Precision, evaluate, resolve_device, resolve_precision, train_epoch
from pipeline.finetune import finetune_parameters
from pipeline.fixres import apparent_size_ratio, recommended_test_res, sweep_resolutions
from pipeline.models import create_model, load_weights
from pipeline.optim import LrSchedule, make_sgd
from pipeline.report import fixres_report, sweep_table
from pipeline.runs import CHECKPOINT, RunDir, claim_run_folder, load_checkpoint
from pipeline.sizes import ConstantSize, LinearRamp, MixSize, SizePolicy, check_positive_int


# ---------------------------------------------------------------------------- configuration

@dataclass
class CommonConfig:
    data: str = opt("data/demo", "ImageNet-layout root holding train/ and val/ (ffcv: or train.beton and val.beton)")
    loader: str = opt("pil", f"data backend: {', '.join(BACKENDS)}")
    batch_size: int = opt(128, "images per batch on each process")
    workers: int = opt(2, "decoding worker processes per process")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    amp: str = opt("auto", "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off")
    seed: int = opt(0, "seed of order and augmentation (per epoch)")
    skip_bad: bool = opt(False, "leave out unreadable images and empty classes (counted and reported)")
    check: str = opt("header", "image check while scanning: header (fast) or full (decode all)")
    out: str = opt("", "run folder (default: runs/<job>-<time>)")
    progress: bool = opt(True, "progress bars (off when not a terminal or when CI is set)")

    def __post_init__(self):
        check_positive_int("--batch-size", self.batch_size)
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.loader not in BACKENDS:
            raise ValueError(f"--loader must be one of {', '.join(BACKENDS)}, got {self.loader!r}")


@dataclass
class OptimConfig(CommonConfig):
    epochs: int = opt(16, "epochs")
    lr: float = opt(0.4, "learning rate for a batch of 256 (scaled by B/256)")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-5, "weight decay (not on batch-norm and biases)")
    warmup_epochs: float = opt(1.0, "linear warm-up epochs")
    schedule: str = opt("cosine", "cosine, or step (divide by 10 every --step-every epochs)")
    step_every: int = opt(30, "epochs between divisions by 10 of the step schedule")
    label_smoothing: float = opt(0.1, "label smoothing")
    resume: bool = opt(False, "continue the run in --out from its last checkpoint")

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--epochs", self.epochs)
        self.lr_schedule()  # validates lr and schedule

    def lr_schedule(self) -> LrSchedule:
        return LrSchedule(self.lr, self.epochs, self.warmup_epochs, self.schedule, self.step_every)


@dataclass
class TrainConfig(OptimConfig):
    model: str = opt("resnet_tiny", "resnet_tiny, a torchvision model (resnet18, resnet50...) or timm/<name>")
    weights: str = opt("", "local state dict to start from (nothing is downloaded)")
    train_res: int = opt(64, "train crop side K_train (start of the ramp if --final-res)")
    final_res: int = opt(0, "progressive resizing: ramp linearly to this side (0: constant)")
    ramp_epochs: str = opt("", "first,last epoch of the ramp (default: the whole run)")
    res_step: int = opt(32, "ramp and --mix-mean sizes are multiples of this")
    mix_sizes: str = opt("", "MixSize: comma-separated sizes drawn per step (with --mix-weights)")
    mix_weights: str = opt("", "MixSize: weights of --mix-sizes (default: equal)")
    mix_mean: int = opt(0, "MixSize: mean side, sizes within 2 spreads in multiples of --res-step")
    mix_spread: float = opt(16.0, "MixSize: spread (standard deviation) of the side around --mix-mean")
    mix_mode: str = opt("B+", "MixSize: B+ (batch size B0 (S0/S)^2) or D+ (B0 images, (S0/S)^2 copies)")
    mix_ref: int = opt(0, "MixSize: reference side S0 at which --batch-size is B0 (0: the largest size)")
    eval_res: int = opt(0, "validation side after each epoch (0: the last epoch's nominal train side)")

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--train-res", self.train_res)
        self.size_policy()  # validates ramp and MixSize values

    def size_policy(self) -> SizePolicy:
        mix = dict(batch_size=self.batch_size, mode=self.mix_mode, ref_size=self.mix_ref, seed=self.seed)
        if self.mix_sizes:
            sizes = positive_ints(self.mix_sizes, "--mix-sizes")
            weights = parse_floats(self.mix_weights, "--mix-weights") if self.mix_weights else (1.0,) * len(sizes)
            return MixSize(sizes, weights, **mix)
        if self.mix_mean:
            return MixSize.around(self.mix_mean, self.mix_spread, self.res_step, **mix)
        if not self.final_res:
            return ConstantSize(self.train_res, self.batch_size)
        first, last = (int(v) for v in self.ramp_epochs.split(",")) if self.ramp_epochs else (0, self.epochs - 1)
        return LinearRamp(self.train_res, self.final_res, first, last, self.batch_size, self.res_step)


@dataclass
class FromCheckpoint(CommonConfig):
    """Jobs that start from a trained checkpoint, at one or more test sides."""

    checkpoint: str = opt("", "checkpoint file or run folder to start from (required)")
    test_res: str = opt("auto", "test side(s): comma-separated, or auto (the FixRes apparent-size rule "
                                "for one side; 0.75x-2x K_train for a sweep)")

    def __post_init__(self):
        super().__post_init__()
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")
        parse_resolutions(self.test_res, 64)


@dataclass
class FinetuneConfig(OptimConfig, FromCheckpoint):
    epochs: int = opt(3, "fine-tuning epochs")
    lr: float = opt(0.05, "learning rate for a batch of 256 (head only)")
    warmup_epochs: float = opt(0.0, "linear warm-up epochs")
    label_smoothing: float = opt(0.0, "label smoothing (FixEfficientNet uses 0.1)")


@dataclass
class SweepConfig(FromCheckpoint):
    recalibrate_bn: int = opt(0, "before each test side, re-estimate BN statistics from this many "
                                 "training batches at that side (0: no recalibration)")


@dataclass
class RecalibrateConfig(FromCheckpoint):
    batches: int = opt(50, "training batches (test-time augmentation, no gradient) to estimate from")

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--batches", self.batches)


@dataclass
class FixResConfig(TrainConfig):
    sweep_res: str = opt("auto", "test sides to sweep before and after fine-tuning, or auto")
    finetune_res: str = opt("auto", "K_test to fine-tune at: a side, auto (apparent-size rule) or best "
                                    "(best of the first sweep above K_train)")
    finetune_epochs: int = opt(3, "fine-tuning epochs")
    finetune_lr: float = opt(0.05, "fine-tuning learning rate for a batch of 256")

    def __post_init__(self):
        super().__post_init__()
        parse_resolutions(self.sweep_res, self.train_res)
        if self.finetune_res not in ("auto", "best"):
            parse_resolutions(self.finetune_res, self.train_res)


def parse_resolutions(text: str, train_res: int) -> list[int]:
    if text == "auto":
        return sweep_resolutions(train_res)
    return list(positive_ints(text, "test resolutions"))


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


# ---------------------------------------------------------------------------- shared set-up

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
    progress = cfg.progress and sys.stderr.isatty() and not os.environ.get("CI") and dist.is_main
    return Session(resolve_precision(device, cfg.amp), dist, progress)


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


def run_folder(cfg: CommonConfig, job: str) -> Path:
    return Path(cfg.out or f"runs/{job}-{time.strftime('%Y%m%d-%H%M%S')}")


def say(msg: str) -> None:
    print(msg, flush=True)


def announce(job: str, cfg, run: RunDir, s: Session) -> None:
    if s.dist.is_main:
        say(f"== {job} -> {run.path}\n{json.dumps(asdict(cfg), indent=2)}")
    run.write_json("config.json", {"job": job, **asdict(cfg), "world_size": s.dist.world_size,
                                   "resolved_device": str(s.device),
                                   "resolved_amp": str(s.precision.amp_dtype)})


# ---------------------------------------------------------------------------- the jobs

def fit(model: nn.Module, train_loader, val_loader, optimizer, cfg: OptimConfig, run: RunDir, s: Session,
        state: dict | None, meta: dict) -> dict:
    """The epoch loop of train and finetune: train, validate, log, checkpoint (with `meta`).
    `state` is the checkpoint of an interrupted run to continue, or None."""
    core = model
    scaler = s.precision.scaler()
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        say(f"resuming {run.path} at epoch {start_epoch + 1}/{cfg.epochs}")
    run.drop_metrics_from(start_epoch)  # epochs logged but not checkpointed run again
    if s.dist.enabled:
        model = DistributedDataParallel(model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    schedule = cfg.lr_schedule()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    last = {}
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)
        stats = train_epoch(model, train_loader, optimizer, scaler, criterion, schedule, epoch,
                            s.precision, s.dist, s.progress)
        val = evaluate(core, val_loader, s.precision, s.dist, s.progress, desc="val")
        last = {"epoch": epoch, **stats, **{f"val_{k}": v for k, v in val.items()}}
        run.log(last)
        run.save_checkpoint({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": epoch + 1, **meta})
        if s.dist.is_main:
            say(f"epoch {epoch + 1}/{cfg.epochs}  sizes {stats['sizes']}  loss {stats['train_loss']:.3f}  "
                f"train acc {stats['train_acc']:.1f}  val top1 {val['top1']:.2f}  "
                f"{stats['train_img_per_s']:.0f} img/s  {stats['train_seconds']:.1f}s")
    barrier(s.dist)
    return last


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


def run_train(cfg: TrainConfig) -> Path:
    cfg, path, state = resume_or_start(cfg, "train")
    s = start_session(cfg)
    run = RunDir(path, s.dist.is_main)
    announce("train", cfg, run, s)
    policy = cfg.size_policy()
    train_loader = make_loader(cfg, s, "train", policy, "rrc", shuffle=True)
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
    run.write_json("summary.json", {
        "job": "train", "train_res": last_res, "eval_res": eval_res, "final": last,
        "train_seconds": sum(m["train_seconds"] for m in run.metrics()),
        "skipped": {"train": train_loader.skipped, "val": val_loader.skipped}})
    return path


def run_finetune(cfg: FinetuneConfig) -> Path:
    source = load_checkpoint(cfg.checkpoint)
    test_res = (recommended_test_res(source["train_res"]) if cfg.test_res == "auto"
                else parse_resolutions(cfg.test_res, source["train_res"])[0])
    if not cfg.out:
        cfg = dataclasses.replace(cfg, out=f"{checkpoint_folder(cfg.checkpoint)}-ft{test_res}")
    cfg, path, state = resume_or_start(cfg, "finetune")
    s = start_session(cfg)
    run = RunDir(path, s.dist.is_main)
    announce("finetune", cfg, run, s)
    classes = source["classes"]
    if s.dist.is_main:
        say(f"FixRes fine-tuning at K_test={test_res} (trained at {source['train_res']}; apparent object "
            f"size ratio {apparent_size_ratio(source['train_res'], test_res):.2f})")
    policy = ConstantSize(test_res, cfg.batch_size)
    # Test DA as the fine-tuning augmentation: the head learns the statistics it will see.
    train_loader = make_loader(cfg, s, "train", policy, "center", shuffle=True, classes=classes)
    val_loader = make_loader(cfg, s, "val", policy, "center", shuffle=False, classes=classes)

    model = model_from_checkpoint(state or source, s)
    finetune_parameters(model)
    optimizer = make_sgd(model, cfg.momentum, cfg.weight_decay)
    meta = {"classes": classes, "model_name": source["model_name"], "train_res": source["train_res"],
            "test_res": test_res, "job": "finetune", "source": str(cfg.checkpoint)}
    last = fit(model, train_loader, val_loader, optimizer, cfg, run, s, state, meta)
    run.write_json("summary.json", {"job": "finetune", "train_res": source["train_res"], "test_res": test_res,
                                    "final": last, "train_seconds": sum(m["train_seconds"] for m in run.metrics())})
    return path


def run_sweep(cfg: SweepConfig) -> list[dict]:
    state = load_checkpoint(cfg.checkpoint)
    s = start_session(cfg)
    run = RunDir(cfg.out or checkpoint_folder(cfg.checkpoint), s.dist.is_main)  # beside the checkpoint
    if s.dist.is_main:
        say(f"== sweep {cfg.checkpoint}\n{json.dumps(asdict(cfg), indent=2)}")
    classes, train_res = state["classes"], state["train_res"]
    trained = model_from_checkpoint(state, s)
    rows = []
    for res in parse_resolutions(cfg.test_res, train_res):
        model = trained
        if cfg.recalibrate_bn:
            model = copy.deepcopy(trained)
            recalibrate_at(model, cfg, s, res, cfg.recalibrate_bn, classes)
        loader = make_loader(cfg, s, "val", ConstantSize(res, cfg.batch_size), "center", False, classes)
        m = evaluate(model, loader, s.precision, s.dist, s.progress, desc=f"sweep {res}")
        rows.append({"test_res": res, "top1": m["top1"], "top5": m["top5"], "loss": m["loss"],
                     "apparent_size_ratio": apparent_size_ratio(train_res, res),
                     "img_per_s": m["images"] / m["seconds"], "images": m["images"],
                     "recalibrated_batches": cfg.recalibrate_bn})
        if s.dist.is_main:
            say(f"K_test {res:4d}  top1 {m['top1']:6.2f}  top5 {m['top5']:6.2f}")
    bn = f", BN recalibrated on {cfg.recalibrate_bn} batches" if cfg.recalibrate_bn else ""
    table = sweep_table(rows, title=f"{Path(cfg.checkpoint)} (train {train_res}{bn})")
    if s.dist.is_main:
        say(table)
    name = f"sweep-bn{cfg.recalibrate_bn}" if cfg.recalibrate_bn else "sweep"
    run.write_json(f"{name}.json", {"checkpoint": str(cfg.checkpoint), "train_res": train_res,
                                    "config": asdict(cfg), "rows": rows})
    run.write_text(f"{name}.md", table + "\n")
    return rows


def recalibrate_at(model: nn.Module, cfg: CommonConfig, s: Session, res: int, batches: int,
                   classes: list[str]) -> int:
    """Re-estimate `model`'s BN statistics at side `res` from training images under the
    test-time augmentation (shuffled, so the batches are a sample of the whole split)."""
    loader = make_loader(cfg, s, "train", ConstantSize(res, cfg.batch_size), "center", True, classes)
    seen = recalibrate_bn(model, loader, batches, s.precision, s.dist)
    if s.dist.is_main:
        say(f"BN statistics re-estimated at {res} px from {seen} images per process")
    return seen


def run_recalibrate(cfg: RecalibrateConfig) -> Path:
    """Re-estimate BN statistics at one test side and save the result as a new checkpoint."""
    state = load_checkpoint(cfg.checkpoint)
    res = (recommended_test_res(state["train_res"]) if cfg.test_res == "auto"
           else parse_resolutions(cfg.test_res, state["train_res"])[0])
    path = Path(cfg.out or f"{checkpoint_folder(cfg.checkpoint)}-bn{res}")
    claim_run_folder(path, resume=False)
    s = start_session(cfg)
    run = RunDir(path, s.dist.is_main)
    announce("recalibrate", cfg, run, s)
    model = model_from_checkpoint(state, s)
    seen = recalibrate_at(model, cfg, s, res, cfg.batches, state["classes"])
    run.save_checkpoint({**{k: v for k, v in state.items() if k not in ("optimizer", "scaler")},
                         "model": model.state_dict(), "test_res": res, "recalibrated_images": seen,
                         "source": str(cfg.checkpoint)})
    run.write_json("summary.json", {"job": "recalibrate", "test_res": res, "images": seen,
                                    "source": str(cfg.checkpoint)})
    return path


def checkpoint_folder(checkpoint: str) -> Path:
    return Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent


def model_from_checkpoint(state: dict, s: Session) -> nn.Module:
    model = create_model(state["model_name"], len(state["classes"]))
    model.load_state_dict(state["model"])
    return prepare_model(model, s)


def run_fixres(cfg: FixResConfig) -> dict:
    """Train at K_train, sweep, fine-tune at K_test, sweep again, report. Each finished
    stage is kept, so running the same command again after an interruption goes on where
    it stopped."""
    root = run_folder(cfg, "fixres")
    common = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CommonConfig)}
    t_train = timed_stage(root / "train", lambda: run_train(TrainConfig(**{
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)},
        "out": str(root / "train"), "resume": (root / "train" / "config.json").exists()})))
    sweep_res = ",".join(map(str, parse_resolutions(cfg.sweep_res, cfg.train_res)))
    before = sweep_once(root / "train", sweep_res, common)
    ft_res = pick_finetune_res(cfg, before)
    ft_dir = root / f"finetune-{ft_res}"
    t_ft = timed_stage(ft_dir, lambda: run_finetune(FinetuneConfig(**{
        **common, "out": str(ft_dir), "checkpoint": str(root / "train"), "test_res": str(ft_res),
        "epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr,
        "resume": (ft_dir / "config.json").exists()})))
    after = sweep_once(ft_dir, sweep_res, common)
    report = fixres_report(root, cfg.train_res, ft_res, before, after, t_train, t_ft)
    say(report["table"])
    return report


def timed_stage(path: Path, job) -> float:
    """Run `job` unless its summary exists; return the stage's recorded training time."""
    if not (path / "summary.json").exists():
        job()
    return json.loads((path / "summary.json").read_text())["train_seconds"]


def sweep_once(path: Path, test_res: str, common: dict) -> list[dict]:
    done = path / "sweep.json"
    if done.exists() and json.loads(done.read_text())["config"]["test_res"] == test_res:
        return json.loads(done.read_text())["rows"]
    return run_sweep(SweepConfig(**{**common, "out": str(path), "checkpoint": str(path), "test_res": test_res}))


def pick_finetune_res(cfg: FixResConfig, sweep: list[dict]) -> int:
    if cfg.finetune_res == "auto":
        return recommended_test_res(cfg.train_res)
    if cfg.finetune_res == "best":
        above = [r for r in sweep if r["test_res"] >= cfg.train_res] or sweep
        return max(above, key=lambda r: r["top1"])["test_res"]
    return parse_resolutions(cfg.finetune_res, cfg.train_res)[0]


# ---------------------------------------------------------------------------- command line

JOBS = {
    "train": (TrainConfig, run_train, "train from scratch at K_train (RandomResizedCrop)"),
    "finetune": (FinetuneConfig, run_finetune, "FixRes: fine-tune classifier + last BN at K_test"),
    "sweep": (SweepConfig, run_sweep, "evaluate a checkpoint at several test resolutions"),
    "recalibrate": (RecalibrateConfig, run_recalibrate, "re-estimate BN statistics at a test side"),
    "fixres": (FixResConfig, run_fixres, "train, sweep, fine-tune, sweep again, and report"),
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


if __name__ == "__main__":
    main()
