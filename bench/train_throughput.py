"""Training throughput and memory per model and resolution, and how far real data falls short.

    python -m bench.train_throughput --data data/demo --models resnet_tiny,resnet18

For each model x resolution: training images per second on the synthetic backend (random
tensors already on the device: the compute bound), peak memory (torch.cuda.max_memory_allocated
on a GPU; the process tree's PSS on the CPU), the forward / backward-and-update split of a step
and, on a GPU, the largest batch that fits. Then the same steps fed by each real
backend: the data-starvation ratio is real / synthetic images per second at that resolution
(1.0: the loader keeps the model fed), and the same ratio per CPU-second of the process tree
(robust when other jobs share the cores; on the CPU, loader workers and the model compete),
and the share of the time the host waited for the next batch (data_wait_share).

Every data source, synthetic included, is timed by the same loop over the trainer's own step
(app/engine.py), the device synchronised only at the end of each timed run, so that the
ratio compares like with like. The forward / backward-and-update split of a step needs the
device synchronised inside each step: it is measured in a pass of its own on synthetic data,
after the timed runs, and never enters a rate.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from app.engine import backward_step, forward_loss, train_step
from bench.common import (
    ProcessTreeMonitor,
    Variant,
    add_output_arguments,
    default_variants,
    endless,
    failures_named,
    gpu_memory_mb,
    images_per_second,
    open_variant,
    parse_ints,
    parse_variant,
    reset_gpu_memory,
    style,
    sync,
    warm_up,
    write_results,
)
from pipeline.console import progress_enabled, run_command, say
from pipeline.models import compile_model, create_model
from pipeline.optim import make_sgd, set_lr
from pipeline.precision import resolve_device, resolve_precision
from pipeline.sizes import ConstantSize


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="ImageNet-layout root; real backends read its train/ folder")
    p.add_argument("--models", default="resnet_tiny,resnet18", help="comma-separated model names")
    p.add_argument("--res", type=parse_ints, default=[64, 96, 128, 160, 192, 224], help="crop sides")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--backends",
        nargs="*",
        type=parse_variant,
        default=None,
        help="real backends or variants to feed the same steps (default: every backend in "
        "loaders.BACKENDS but synthetic; none: synthetic only)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--amp", default="auto", help="auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads of the training process (0: torch's default). On a machine "
        "shared with other jobs use 1: spinning OpenMP threads on oversubscribed "
        "cores made steps 8x slower here",
    )
    p.add_argument(
        "--max-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a GPU, search the largest batch that fits at each resolution",
    )
    p.add_argument("--max-batch-limit", type=int, default=8192, help="stop the search there")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (results go to train_throughput-compile.*); the first warm-up "
        "step of each cell compiles, the largest-batch search stays eager",
    )
    p.add_argument("--tag", default="", help="appended to the results' file name (train_throughput[-compile]-TAG)")
    add_output_arguments(p)
    return p.parse_args(argv)


class Trainer:
    """A model with its optimiser, stepped by the engine's own training step."""

    def __init__(self, name: str, classes: int, precision, compiled: bool = False):
        self.precision = precision
        torch.manual_seed(0)
        self.model = create_model(name, classes).to(precision.device, memory_format=torch.channels_last).train()
        if compiled:
            compile_model(self.model)
        self.optimizer = make_sgd(self.model, 0.9, 5e-5)
        set_lr(self.optimizer, 0.1)
        self.scaler = precision.scaler()
        self.criterion = nn.CrossEntropyLoss()

    def step(self, images, labels) -> None:
        train_step(self.model, images, labels, self.optimizer, self.scaler, self.criterion, self.precision)

    def forward_share(self, batches, steps: int) -> float:
        """The forward pass's share of a step's time over `steps` batches, the device synchronised
        between the halves (which slows the steps: no rate is taken from this pass)."""
        device = self.precision.device
        forward = backward = 0.0
        for _ in range(steps):
            images, labels = next(batches)
            sync(device)
            start = time.perf_counter()
            _, loss = forward_loss(self.model, images, labels, self.criterion, self.precision)
            sync(device)
            middle = time.perf_counter()
            backward_step(loss, self.optimizer, self.scaler)
            sync(device)
            forward += middle - start
            backward += time.perf_counter() - middle
        return forward / max(forward + backward, 1e-12)


def synthetic_batches(args, res: int, classes: int, precision):
    loader, _ = open_variant(
        Variant("synthetic", "synthetic"),
        root=None,
        classes=[str(i) for i in range(classes)],
        policy=ConstantSize(res, args.batch_size),
        augment="rrc",
        shuffle=True,
        device=precision.device,
        dtype=precision.input_dtype,
        synthetic_samples=args.batch_size * 8,
    )
    return endless(loader)


def measure(trainer: Trainer, batches, args) -> dict:
    """The same timing for every data source: warm-up, then the timed runs of the plain step."""
    device = trainer.precision.device
    warm_up(batches, trainer.step, device, args.warmup)
    reset_gpu_memory(device)
    with ProcessTreeMonitor() as monitor:
        rate = images_per_second(batches, trainer.step, device, args.steps, args.repeats)
    return {
        "img_per_s": rate,
        "data_wait_share": rate["data_wait_share"],
        **monitor.result(),
        "gpu_mem_mb": gpu_memory_mb(device),
    }


def fits(name: str, classes: int, precision, res: int, batch_size: int) -> bool:
    """Whether two training steps at this batch size run without running out of GPU memory."""
    trainer = Trainer(name, classes, precision)
    try:
        x = torch.randn(batch_size, 3, res, res, device=precision.device, dtype=precision.input_dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(classes, (batch_size,), device=precision.device)
        for _ in range(2):
            trainer.step(x, y)
        sync(precision.device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del trainer
        gc.collect()
        torch.cuda.empty_cache()


def largest(ok, start: int, limit: int) -> int:
    """The largest n <= limit with ok(n), for a monotone ok: doubling, then bisection to
    within about 6% (each probe builds a model). 0 when even `start` fails."""
    if not ok(start):
        return 0
    good, bad = start, None
    while bad is None:
        probe = min(good * 2, limit)
        if probe == good:
            return good
        good, bad = (probe, None) if ok(probe) else (good, probe)
    while bad - good > max(1, good // 16):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if ok(mid) else (good, mid)
    return good


def run(args) -> tuple[list[dict], dict[str, str]]:
    """The rows measured, and the reason for each backend that could not run here."""
    device = resolve_device(args.device)
    precision = resolve_precision(device, args.amp)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.torch_threads = torch.get_num_threads()  # recorded with the arguments
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = str(Path(args.data) / "train")
    variants = default_variants() if args.backends is None else args.backends
    models = [m for m in args.models.split(",") if m]
    rows, skipped = [], {}
    bar = tqdm(
        total=len(models) * len(args.res) * (1 + len(variants)),
        desc="train cells",
        disable=not progress_enabled(args.progress),
    )
    classes = 1000 if not Path(root).is_dir() else len([d for d in Path(root).iterdir() if d.is_dir()])
    for name in models:
        for res in args.res:
            row = {"model": name, "res": res, "batch_size": args.batch_size, "real": {}}
            if device.type == "cuda" and args.max_batch:  # first, while no other model holds memory
                bar.set_postfix_str(f"{name} {res} largest batch")
                row["largest_batch"] = largest(
                    lambda b: fits(name, classes, precision, res, b), 16, args.max_batch_limit
                )
            bar.set_postfix_str(f"{name} {res} synthetic")
            trainer = Trainer(name, classes, precision, args.compile)
            synthetic_data = synthetic_batches(args, res, classes, precision)
            row["synthetic"] = measure(trainer, synthetic_data, args)
            row["forward_share"] = trainer.forward_share(synthetic_data, args.steps)
            synthetic = row["synthetic"]
            bar.update(1)
            for v in variants:
                bar.set_postfix_str(f"{name} {res} {v.label}")
                loader, why = open_variant(
                    v,
                    root=root,
                    policy=ConstantSize(res, args.batch_size),
                    augment="rrc",
                    shuffle=True,
                    device=device,
                    dtype=precision.input_dtype,
                    workers=args.workers,
                )
                if loader is None:
                    skipped.setdefault(v.label, why)
                else:
                    with failures_named(v.label):
                        real = measure(trainer, endless(loader), args)
                    real["starvation_ratio"] = real["img_per_s"]["median"] / synthetic["img_per_s"]["median"]
                    real["cpu_starvation_ratio"] = per_cpu_second(real) / per_cpu_second(synthetic)
                    row["real"][v.label] = real
                    del loader
                    gc.collect()
                bar.update(1)
            rows.append(row)
            del trainer
            gc.collect()
    bar.close()
    for label, why in skipped.items():
        say(f"skipped {label}: {why}")
    return rows, skipped


def per_cpu_second(cell: dict) -> float:
    """Images per CPU-second of the process tree: on a machine shared with other jobs, the
    ratio of these says what the data costs in compute even when wall-clock rates are noisy."""
    return cell["img_per_s"]["images"] / max(cell["cpu_seconds"], 1e-9)


def real_cell(cell: dict) -> str:
    return (
        f"{cell['img_per_s']['median']:.1f} ({cell['starvation_ratio']:.2f}; "
        f"{cell['cpu_starvation_ratio']:.2f}; {100 * cell['data_wait_share']:.0f})"
    )


def memory_mb(cell: dict) -> float:
    return cell["gpu_mem_mb"] if cell["gpu_mem_mb"] is not None else cell["peak_mem_mb"]


def plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        (line,) = ax.plot(
            [r["res"] for r in mine],
            [r["synthetic"]["img_per_s"]["median"] for r in mine],
            "o-",
            label=f"{name} synthetic",
        )
        for label in dict.fromkeys(k for r in mine for k in r["real"]):
            pts = [
                (r["res"], r["real"][label]["img_per_s"]["median"], r["real"][label]["starvation_ratio"])
                for r in mine
                if label in r["real"]
            ]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "x--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{name} {label}",
            )
            bx.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=f"{name} {label}")
    style(ax, xlabel="crop side K (px)", ylabel="training images / s", yscale="log", title="throughput")
    bx.axhline(1.0, color="grey", lw=1)
    style(bx, xlabel="crop side K (px)", ylabel="real / synthetic", title="data-starvation ratio")
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows, skipped = run(args)
    labels = list(dict.fromkeys(k for r in rows for k in r["real"]))
    headers = [
        "model",
        "K",
        "batch",
        "synthetic img/s",
        "spread %",
        "forward %",
        "peak MB",
        "largest batch",
        *[f"{label} img/s (ratio; per CPU-s; data wait %)" for label in labels],
    ]
    table = [
        [
            r["model"],
            r["res"],
            r["batch_size"],
            f"{r['synthetic']['img_per_s']['median']:.1f}",
            f"{100 * r['synthetic']['img_per_s']['rel_spread']:.0f}",
            f"{100 * r['forward_share']:.0f}",
            f"{memory_mb(r['synthetic']):.0f}",
            r.get("largest_batch", "-"),
            *[real_cell(r["real"][k]) if k in r["real"] else "-" for k in labels],
        ]
        for r in rows
    ]
    name = "train_throughput" + ("-compile" if args.compile else "") + (f"-{args.tag}" if args.tag else "")
    return write_results(name, args, rows, headers, table, lambda: plot(rows), extra={"skipped": skipped})


if __name__ == "__main__":
    run_command(main)
