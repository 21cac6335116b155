"""Size-resilience study: fixed-size training vs MixSize B+ and D+ at the same total cost.

    python -m bench.size_resilience --data data/demo --out runs/size-resilience

Trains one model at a fixed side K and one per MixSize mode (B+: batch size B0 (S0/S)^2;
D+: B0 distinct images per step, each in (S0/S)^2 augmented copies). K is the nominal side of
the B+ plan (the fixed side of equal pixels per image), and the fixed run takes the batch B+
uses at K, so the two cost the same per epoch and step. Every MixSize run gets as many epochs
as give it the fixed run's pixels in all: B+ the same epochs, D+ (whose copies make an epoch
about (S0/K)^2 times dearer) fewer. With the study's defaults that also gives every run about
the same number of optimiser steps; the table shows epochs, steps and images seen per run.
Then every model is swept over the test sides, with and without re-estimating batch-norm
statistics at each side. The paper's claim to check: MixSize gives a flatter
accuracy-vs-test-size curve and better accuracy at small test sides. Prints and saves one
table (markdown + JSON) and a plot, rewritten after each run. Finished stages are kept, so an
interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from app.options import SweepConfig, TrainConfig
from app.report import markdown_table, save_figure
from app.session import join_ranks
from app.study import swept, trained
from bench.common import describe_machine
from pipeline.config import add_arguments, from_args, opt, positive_ints
from pipeline.console import run_command
from pipeline.sizes import MixSize


@dataclass
class StudyConfig:
    data: str = opt("data/demo", "ImageNet-layout root holding train/ and val/")
    out: str = opt("runs/size-resilience", "study folder")
    loader: str = opt("pil", "data backend")
    model: str = opt("resnet_tiny", "model name")
    epochs: int = opt(16, "epochs of the fixed-size run (MixSize runs: the same pixels in all)")
    batch_size: int = opt(32, "B0: batch size at the largest MixSize side")
    mix_sizes: str = opt("48,64,96", "MixSize sides")
    mix_weights: str = opt("", "MixSize weights (default: equal)")
    mix_modes: str = opt("B+,D+", "MixSize modes to train, comma-separated (B+, D+)")
    test_res: str = opt("32,48,64,80,96,128", "test sides to sweep")
    recalibrate_bn: int = opt(20, "batches for BN recalibration at each test side")
    workers: int = opt(2, "decoding workers")
    seed: int = opt(0, "seed")
    progress: bool = opt(True, "progress bars")

    def __post_init__(self):
        if not self.modes():
            raise ValueError(f"--mix-modes names no mode: {self.mix_modes!r}")

    def modes(self) -> list[str]:
        return [m.strip() for m in self.mix_modes.split(",") if m.strip()]


def train_config(cfg: StudyConfig, out: Path, epochs: int, **policy) -> TrainConfig:
    """The training stage `out`; `policy`: its size options (and a batch size other than B0)."""
    return TrainConfig(
        **{
            "data": cfg.data,
            "loader": cfg.loader,
            "model": cfg.model,
            "epochs": epochs,
            "batch_size": cfg.batch_size,
            "workers": cfg.workers,
            "seed": cfg.seed,
            "progress": cfg.progress,
            "out": str(out),
            **policy,
        }
    )


def equal_pixel_epochs(epochs: int, fixed_res: int, policy: MixSize) -> int:
    """Epochs of `policy` that process the pixels of `epochs` epochs at `fixed_res` (at least one)."""
    return max(1, round(epochs * fixed_res**2 / policy.pixels_per_image()))


def mix_config(cfg: StudyConfig, out: Path, epochs: int, mode: str) -> TrainConfig:
    return train_config(cfg, out, epochs, mix_sizes=cfg.mix_sizes, mix_weights=cfg.mix_weights, mix_mode=mode)


def training_record(tc: TrainConfig) -> dict:
    """Train unless already done; returns the run's folder, mean epoch time, optimiser steps
    and images seen (augmented copies included)."""
    run = trained(tc)
    epochs = run["metrics"]
    return {
        "path": tc.out,
        "train_res": run["train_res"],
        "epochs": len(epochs),
        "steps": sum(m["train_steps"] for m in epochs),
        "images": sum(m["train_images"] for m in epochs),
        "seconds_per_epoch": sum(m["train_seconds"] for m in epochs) / len(epochs),
        "sizes": epochs[-1]["sizes"],
    }


def top1_by_side(cfg: StudyConfig, run: dict, recalibrate: int) -> dict[int, float]:
    rows = swept(
        SweepConfig(
            data=cfg.data,
            loader=cfg.loader,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            seed=cfg.seed,
            progress=cfg.progress,
            checkpoint=run["path"],
            test_res=cfg.test_res,
            recalibrate_bn=recalibrate,
        )
    )
    return {r["test_res"]: r["top1"] for r in rows}


def study(cfg: StudyConfig) -> dict:
    """Every rank runs the study's jobs (under torchrun); rank 0 alone writes the study's files."""
    writer = join_ranks("auto").is_main
    root = Path(cfg.out)
    if writer:
        root.mkdir(parents=True, exist_ok=True)
        (root / "study_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    reference = mix_config(cfg, root, cfg.epochs, "B+").size_policy()
    fixed_res = reference.nominal_res(0)
    # the fixed run takes the batch that B+ would use at its side: same cost per step too
    fixed_batch = reference.step_for(fixed_res).batch_size
    fixed_tc = train_config(cfg, root / f"fixed-{fixed_res}", cfg.epochs, train_res=fixed_res, batch_size=fixed_batch)
    plans = {f"fixed {fixed_res}": fixed_tc}
    for mode in cfg.modes():
        folder = root / ("mixsize" if mode == "B+" else f"mixsize-{mode}")
        epochs = equal_pixel_epochs(cfg.epochs, fixed_res, mix_config(cfg, folder, cfg.epochs, mode).size_policy())
        plans[f"MixSize {mode} {cfg.mix_sizes}"] = mix_config(cfg, folder, epochs, mode)
    result = {"config": asdict(cfg), "machine": describe_machine(), "fixed_res": fixed_res, "runs": {}, "curves": {}}
    done = {}
    for name in [*list(plans)[1:], list(plans)[0]]:  # MixSize runs first, the fixed reference last
        done[name] = training_record(plans[name])
        result["runs"] = {n: done[n] for n in plans if n in done}  # table order: fixed first
        result["curves"] = {
            f"{n}{suffix}": top1_by_side(cfg, done[n], bn)
            for n in result["runs"]
            for suffix, bn in (("", 0), (" + BN recal.", cfg.recalibrate_bn))
        }
        result["table"] = table(cfg, result["runs"], result["curves"])
        if writer:
            write_results(root, result)
    if writer:
        print(result["table"])
    return result


def write_results(root: Path, result: dict) -> None:
    """The study so far: after every run, so that a stopped study still leaves its table."""
    (root / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    (root / "study.md").write_text(result["table"] + "\n")
    save_figure(root / "study.png", lambda: curves_figure(result["curves"], result["fixed_res"]))


def table(cfg: StudyConfig, runs: dict, curves: dict) -> str:
    sides = positive_ints(cfg.test_res, "--test-res")
    rows = [[name, *(f"{curve[s]:.2f}" for s in sides)] for name, curve in curves.items()]
    cost = [
        [name, run["epochs"], run["steps"], run["images"], f"{run['seconds_per_epoch']:.1f}", run["sizes"]]
        for name, run in runs.items()
    ]
    return "\n".join(
        [
            "## Size resilience: top-1 % by test side (every run: the same pixels in all)",
            "",
            markdown_table(["model", *map(str, sides)], rows),
            "",
            markdown_table(
                ["run", "epochs", "optimiser steps", "images seen", "s per epoch", "images per side, last epoch"], cost
            ),
        ]
    )


def curves_figure(curves: dict, fixed_res: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curve in curves.items():
        ax.plot(list(curve), list(curve.values()), "o-" if "recal" not in name else "s--", label=name)
    ax.axvline(fixed_res, color="grey", lw=1, ls=":")
    ax.set_xlabel("test side (px)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, StudyConfig)
    return study(from_args(StudyConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    run_command(main)
