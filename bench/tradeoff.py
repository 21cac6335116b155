"""Speed-accuracy trade-off: a grid of train resolution x test resolution.

    python -m bench.tradeoff                          # preset demo: the embedded data set, ~20 min on 2 cores
    python -m bench.tradeoff --preset imagenet-rn50 --data /datasets/imagenet

For each train resolution it trains from scratch (train.py's train job), optionally
FixRes-fine-tunes at the apparent-size K_test (the finetune job), and evaluates both
checkpoints at every test resolution (the sweep job). Each cell records top-1 before and
after fine-tuning, train time, fine-tune time and peak memory (the larger of training and
fine-tuning; evaluation's own peak at that test resolution beside it). Output: a table, JSON
and a Pareto plot of accuracy against training time. Stages write run folders under --runs
and are reused when the command runs again (an interrupted study goes on where it stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from app.jobs import run_finetune, run_sweep, run_train
from app.options import FinetuneConfig, SweepConfig, TrainConfig
from app.session import join_ranks
from app.study import stage_result
from bench.common import ProcessTreeMonitor, add_output_arguments, parse_ints, style, write_results
from pipeline.console import progress_enabled, run_command, say
from pipeline.distributed import DistContext, on_main
from pipeline.fixres import recommended_test_res
from pipeline.reuse import write_json


@dataclass(frozen=True)
class Preset:
    data: str
    model: str
    train_res: tuple[int, ...]
    test_res: tuple[int, ...]
    epochs: int
    batch_size: int
    workers: int
    finetune_epochs: int  # 0: no FixRes fine-tuning
    lr: float = 0.4
    finetune_lr: float = 0.05
    loader: str = "pil"


PRESETS = {
    # Sized for 2 CPU cores (its duration: docs/results/measured-notes.md): resnet_tiny on the embedded set.
    "demo": Preset(
        data="data/demo",
        model="resnet_tiny",
        train_res=(64, 96, 128),
        test_res=(64, 80, 96, 128, 160),
        epochs=8,
        batch_size=128,
        workers=2,
        finetune_epochs=2,
    ),
    # The real study (FixRes paper, table 1 and figure 1 at ImageNet scale), one GPU node:
    # ResNet-50, 90 epochs per train resolution, 5 fine-tuning epochs at the FixRes K_test.
    "imagenet-rn50": Preset(
        data="/datasets/imagenet",
        model="resnet50",
        train_res=(128, 160, 224),
        test_res=(128, 160, 192, 224, 256, 288, 320, 384),
        epochs=90,
        batch_size=256,
        workers=8,
        finetune_epochs=5,
        lr=0.1,
        finetune_lr=0.008,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--data", help="ImageNet-layout root (default: the preset's)")
    p.add_argument("--model")
    p.add_argument("--train-res", type=parse_ints)
    p.add_argument("--test-res", type=parse_ints)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--finetune-epochs", type=int, help="0: no FixRes fine-tuning")
    p.add_argument("--lr", type=float)
    p.add_argument("--finetune-lr", type=float)
    p.add_argument("--loader", help="data backend (default: the preset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--runs", default="", help="folder of the stages' run folders (default: runs/tradeoff-<preset>)")
    add_output_arguments(p)
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    for f in dataclasses.fields(Preset):  # unset options take the preset's values
        if getattr(args, f.name) is None:
            setattr(args, f.name, getattr(preset, f.name))
    args.runs = args.runs or f"runs/tradeoff-{args.preset}"
    return args


def measured_stage(path: Path, job, dist: DistContext) -> dict:
    """Run `job` (a job writing `path`, on every rank) unless it finished before; its training
    time (from its summary), wall time and peak memory (rank 0's), kept beside it for later runs."""
    return stage_result(path / "bench_stage.json", lambda: measure(path, job, dist), dist)


def measure(path: Path, job, dist: DistContext) -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with ProcessTreeMonitor(interval=1.0) as monitor:
        job()
    stage = {"wall_seconds": time.perf_counter() - start, "peak_mem_mb": peak_mb(monitor)}
    on_main(lambda: write_stage(path, stage), dist)


def write_stage(path: Path, stage: dict) -> None:
    summary = path / "summary.json"
    if summary.exists():
        stage = {**stage, "train_seconds": json.loads(summary.read_text())["train_seconds"]}
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "bench_stage.json", stage)


def peak_mb(monitor: ProcessTreeMonitor) -> float:
    """GPU memory on CUDA (what limits the batch there), else the process tree's PSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return monitor.result()["peak_mem_mb"]


def sweep(checkpoint: Path, res: int, common: dict, dist: DistContext) -> tuple[dict, dict]:
    """(top-1 etc. at `res`, stage record) for one checkpoint, via train.py's sweep job. Not
    app.study's `swept`: each side is a stage of its own here, measured in time and memory."""
    out = checkpoint / f"sweep-{res}"
    stage = measured_stage(
        out, lambda: run_sweep(SweepConfig(**common, checkpoint=str(checkpoint), test_res=str(res), out=str(out))), dist
    )
    return on_main(lambda: json.loads((out / "sweep.json").read_text())["rows"][0], dist), stage


def run(args) -> list[dict]:
    runs = Path(args.runs)
    progress = progress_enabled(args.progress)
    common = dict(
        data=args.data,
        loader=args.loader,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        progress=progress,
    )
    dist = join_ranks(args.device)
    rows = []
    for k_train in args.train_res:
        if dist.is_main:
            say(f"== train at {k_train} ({args.model}, {args.epochs} epochs)")
        t_dir = runs / f"train-{k_train}"
        trained = measured_stage(
            t_dir,
            lambda: run_train(
                TrainConfig(
                    **common, model=args.model, train_res=k_train, epochs=args.epochs, lr=args.lr, out=str(t_dir)
                )
            ),
            dist,
        )
        tuned, ft_dir, k_ft = None, None, recommended_test_res(k_train)
        if args.finetune_epochs:
            ft_dir = runs / f"train-{k_train}-ft{k_ft}"
            tuned = measured_stage(
                ft_dir,
                lambda: run_finetune(
                    FinetuneConfig(
                        **common,
                        checkpoint=str(t_dir),
                        test_res=str(k_ft),
                        epochs=args.finetune_epochs,
                        lr=args.finetune_lr,
                        out=str(ft_dir),
                    )
                ),
                dist,
            )
        for k_test in args.test_res:
            before, eval_stage = sweep(t_dir, k_test, common, dist)
            row = {
                "train_res": k_train,
                "test_res": k_test,
                "top1": before["top1"],
                "train_seconds": trained["train_seconds"],
                "train_peak_mem_mb": trained["peak_mem_mb"],
                "eval_peak_mem_mb": eval_stage["peak_mem_mb"],
                "eval_img_per_s": before["img_per_s"],
            }
            if tuned:
                after, _ = sweep(ft_dir, k_test, common, dist)
                row.update(
                    finetune_res=k_ft,
                    top1_finetuned=after["top1"],
                    finetune_seconds=tuned["train_seconds"],
                    finetune_peak_mem_mb=tuned["peak_mem_mb"],
                )
            rows.append(row)
    return rows


def options(rows: list[dict]) -> list[tuple[float, float, str]]:
    """(training time, top-1, label) of every way to get a model: each cell without, and
    with, fine-tuning."""
    points = [(r["train_seconds"], r["top1"], f"{r['train_res']}/{r['test_res']}") for r in rows]
    points += [
        (r["train_seconds"] + r["finetune_seconds"], r["top1_finetuned"], f"{r['train_res']}/{r['test_res']} FT")
        for r in rows
        if "top1_finetuned" in r
    ]
    return points


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats in both time (lower) and accuracy (higher)."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def plot(rows: list[dict], title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for k_train in dict.fromkeys(r["train_res"] for r in rows):
        mine = [r for r in rows if r["train_res"] == k_train]
        (line,) = ax.plot(
            [r["train_seconds"] for r in mine], [r["top1"] for r in mine], "o", alpha=0.5, label=f"train {k_train}"
        )
        tuned = [r for r in mine if "top1_finetuned" in r]
        ax.plot(
            [r["train_seconds"] + r["finetune_seconds"] for r in tuned],
            [r["top1_finetuned"] for r in tuned],
            "s",
            color=line.get_color(),
            label=f"train {k_train} + FixRes FT",
        )
    front = pareto(options(rows))
    ax.plot([p[0] for p in front], [p[1] for p in front], "k-", lw=1, label="Pareto front")
    for x, y, label in front:
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    style(ax, xlabel="training time (s), + fine-tuning", ylabel="top-1 accuracy (%)", title=title)
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows = run(args)
    if not join_ranks(args.device).is_main:  # every rank trained; rank 0 reports
        return rows
    front = {label for _, _, label in pareto(options(rows))}
    headers = [
        "K_train",
        "K_test",
        "top-1 %",
        "top-1 FT %",
        "K_FT",
        "train s",
        "FT s",
        "train/FT peak MB",
        "eval peak MB",
        "Pareto",
    ]
    table = [
        [
            r["train_res"],
            r["test_res"],
            f"{r['top1']:.2f}",
            f"{r['top1_finetuned']:.2f}" if "top1_finetuned" in r else "-",
            r.get("finetune_res", "-"),
            f"{r['train_seconds']:.0f}",
            f"{r['finetune_seconds']:.0f}" if "finetune_seconds" in r else "-",
            f"{max(r['train_peak_mem_mb'], r.get('finetune_peak_mem_mb', 0)):.0f}",
            f"{r['eval_peak_mem_mb']:.0f}",
            " ".join(
                t
                for t, label in (
                    ("no-FT", f"{r['train_res']}/{r['test_res']}"),
                    ("FT", f"{r['train_res']}/{r['test_res']} FT"),
                )
                if label in front
            ),
        ]
        for r in rows
    ]
    title = f"{args.model} on {Path(args.data).name}, {args.epochs} epochs"
    return write_results(
        f"tradeoff-{args.preset}",
        args,
        rows,
        headers,
        table,
        lambda: plot(rows, title),
        extra={"pareto": pareto(options(rows))},
    )


if __name__ == "__main__":
    run_command(main)
