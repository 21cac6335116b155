"""Size-resilience study: fixed-size training vs MixSize at the same cost per epoch.

    python -m bench.size_resilience --data data/demo --out runs/size-resilience

Trains one model at a fixed side K and one with MixSize whose mean cost per epoch is that of
K (K is the mix's nominal side: the fixed side of equal pixels per image), then sweeps both
over the test sides, with and without re-estimating batch-norm statistics at each side.
The paper's claim to check: MixSize gives a flatter accuracy-vs-test-size curve and better
accuracy at small test sides. Prints and saves one table (markdown + JSON) and a plot.
Finished stages are kept, so an interrupted study continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import describe_machine
from pipeline.config import add_arguments, from_args, opt, positive_ints
from pipeline.jobs import run_sweep, run_train
from pipeline.options import SweepConfig, TrainConfig
from pipeline.report import markdown_table, save_figure
from pipeline.stages import stage_result


@dataclass
class StudyConfig:
    data: str = opt("data/demo", "ImageNet-layout root holding train/ and val/")
    out: str = opt("runs/size-resilience", "study folder")
    loader: str = opt("pil", "data backend")
    model: str = opt("resnet_tiny", "model name")
    epochs: int = opt(16, "epochs of each training run")
    batch_size: int = opt(32, "B0: batch size at the largest MixSize side")
    mix_sizes: str = opt("48,64,96", "MixSize sides")
    mix_weights: str = opt("", "MixSize weights (default: equal)")
    mix_mode: str = opt("B+", "B+ or D+")
    test_res: str = opt("32,48,64,80,96,128", "test sides to sweep")
    recalibrate_bn: int = opt(20, "batches for BN recalibration at each test side")
    workers: int = opt(2, "decoding workers")
    seed: int = opt(0, "seed")
    progress: bool = opt(True, "progress bars")


def train_config(cfg: StudyConfig, out: Path, **policy) -> TrainConfig:
    return TrainConfig(data=cfg.data, loader=cfg.loader, model=cfg.model, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
                       progress=cfg.progress, out=str(out), resume=(out / "config.json").exists(),
                       **policy)


def trained(tc: TrainConfig) -> dict:
    """Train unless already done; returns the run's summary and mean epoch time."""
    out = Path(tc.out)
    summary = stage_result(out / "summary.json", lambda: run_train(tc))
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"path": str(out), "train_res": summary["train_res"],
            "seconds_per_epoch": sum(m["train_seconds"] for m in epochs) / len(epochs),
            "sizes": epochs[-1]["sizes"]}


def swept(cfg: StudyConfig, run: dict, recalibrate: int) -> dict[int, float]:
    name = f"sweep-bn{recalibrate}.json" if recalibrate else "sweep.json"
    done = stage_result(Path(run["path"]) / name, lambda: run_sweep(SweepConfig(
        data=cfg.data, loader=cfg.loader, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
        progress=cfg.progress, checkpoint=run["path"], test_res=cfg.test_res, recalibrate_bn=recalibrate)),
        valid=lambda done: done["config"]["test_res"] == cfg.test_res)
    return {r["test_res"]: r["top1"] for r in done["rows"]}


def study(cfg: StudyConfig) -> dict:
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    mix_tc = train_config(cfg, root / "mixsize", mix_sizes=cfg.mix_sizes, mix_weights=cfg.mix_weights,
                          mix_mode=cfg.mix_mode)
    policy = mix_tc.size_policy()
    fixed_res = policy.nominal_res(0)
    # the fixed run takes the batch that MixSize would use at its side: same cost per step too
    fixed_tc = train_config(cfg, root / f"fixed-{fixed_res}", train_res=fixed_res)
    fixed_tc.batch_size = policy.step_for(fixed_res).batch_size
    runs = {f"fixed {fixed_res}": trained(fixed_tc),
            f"MixSize {cfg.mix_mode} {cfg.mix_sizes}": trained(mix_tc)}
    curves = {}
    for name, run in runs.items():
        curves[name] = swept(cfg, run, 0)
        curves[f"{name} + BN recal."] = swept(cfg, run, cfg.recalibrate_bn)
    result = {"config": asdict(cfg), "machine": describe_machine(), "fixed_res": fixed_res, "runs": runs,
              "curves": curves, "table": table(cfg, runs, curves)}
    (root / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    (root / "study.md").write_text(result["table"] + "\n")
    save_figure(root / "study.png", lambda: curves_figure(curves, fixed_res))
    print(result["table"])
    return result


def table(cfg: StudyConfig, runs: dict, curves: dict) -> str:
    sides = positive_ints(cfg.test_res, "--test-res")
    rows = [[name, *(f"{curve[s]:.2f}" for s in sides)] for name, curve in curves.items()]
    times = [f"- {name}: {run['seconds_per_epoch']:.1f} s per epoch, sizes used (images) {run['sizes']}"
             for name, run in runs.items()]
    return "\n".join([f"## Size resilience: top-1 % by test side ({cfg.epochs} epochs each, same cost per epoch)",
                      "", markdown_table(["model", *map(str, sides)], rows), "", *times])


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
    main()
