"""Loader throughput: images per second that each backend delivers, per resolution and split,
side by side with the torchvision reference (same JPEGs, same cores, same worker count), and
how much of its decoder's capacity each backend's pipeline delivers.

    python -m bench.loader_throughput --data data/demo
    python -m bench.loader_throughput --data /tmp/bench_data --res 128 --backends pil pil:worker_threads=false
    python -m bench.loader_throughput ... --backends pil 'pil:root=/tmp/prepared/{res}/train'

For each cell (resolution x split) every loader is opened once, then the backends take turns:
each of `--repeats` rounds runs every loader in turn (the order rotating by one per round). A
turn waits until the process tree is idle (every loader's workers have filled their queues, so
no prefetching of another loader runs into it), takes `--warmup` untimed batches (more than any
loader's queue holds, so the timed batches are made while they are timed), then `--steps` timed
batches. Interleaving exposes every backend to the same drift of a shared machine, and each
ratio to the reference is taken within a round, so the ratios hold where absolute rates move.
Reported per backend: median images/s and its spread over rounds, the median per-round ratio
to the reference and that ratio's spread, CPU cores used by the whole process tree, and images
per CPU-second (what a loader costs, meaningful even when other jobs share the cores).

Single-core rate: the backend's own work per image on one core, in images per CPU-second: its
loader with no workers (given a turn right after the loader's own in every round), so reading,
decoding, cropping, resizing, flipping and normalising all run in the calling thread, one after
another, with one torch thread (DALI and FFCV cannot run without their engine: one decoding
thread). Pipeline efficiency = images per CPU-second delivered / single-core rate: the share of
the CPU time that goes to the work itself rather than to moving batches between processes,
scheduling and waiting. On a machine shared with other jobs, the work itself also slows down
when run in parallel (caches, memory bandwidth), and that shows up as lost efficiency too.

Batches are consumed as a trainer would receive them (normalised, channels-last, on the
device). Both splits read the train folder so epochs are long; the split only selects the
augmentation (train: RandomResizedCrop + flip; eval: resize to K/0.875 + centre crop). `{res}`
in a variant's value is replaced by the cell's crop side (data prepared per resolution).
`--compare` names an earlier result of the same command: the table then says by how much each
ratio moved between the two runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench.common import (
    ProcessTreeMonitor,
    add_output_arguments,
    default_variants,
    endless,
    failures_named,
    gpu_memory_mb,
    open_variant,
    parse_ints,
    parse_variant,
    reset_gpu_memory,
    settle,
    spread,
    style,
    sync,
    warm_up,
    write_results,
)
from bench.reference import TorchvisionReference
from pipeline.console import progress_enabled, run_command, say
from pipeline.precision import resolve_device, resolve_precision
from pipeline.sizes import ConstantSize

REFERENCE = "torchvision"
SPLITS = {"train": "rrc", "eval": "center"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="ImageNet-layout root; its train/ folder is read")
    p.add_argument("--res", type=parse_ints, default=[64, 96, 128, 160, 192, 224], help="crop sides")
    p.add_argument("--splits", default="train,eval", help="train (RandomResizedCrop), eval (centre crop)")
    p.add_argument(
        "--backends",
        nargs="+",
        type=parse_variant,
        default=None,
        help="backends or variants (name:field=value,...); default: every backend in loaders.BACKENDS but synthetic",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="workers (processes or threads), for every loader alike")
    p.add_argument(
        "--warmup", type=int, default=8, help="untimed batches before each timed turn (more than a loader queues)"
    )
    p.add_argument("--steps", type=int, default=16, help="batches per timed turn")
    p.add_argument("--repeats", type=int, default=5, help="rounds: timed turns per loader and cell")
    p.add_argument("--work-batches", type=int, default=4, help="batches per timed turn of the single-core twin")
    p.add_argument("--compare", default=None, help="an earlier loader_throughput.json to compare the ratios with")
    p.add_argument("--device", default="cpu", help="where batches are delivered: cpu, cuda, auto")
    p.add_argument("--amp", default="auto", help="batch dtype as in training: auto, bf16, fp16, off")
    add_output_arguments(p)
    args = p.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    if not set(args.splits) <= set(SPLITS):
        p.error(f"--splits must name train and/or eval, got {args.splits}")
    return args


@dataclasses.dataclass
class Cell:
    res: int
    split: str
    root: str
    device: object
    dtype: object
    args: argparse.Namespace

    def open(self, variant, workers: int | None = None):
        """The variant's loader at this cell, or (None, reason)."""
        if variant is None:
            return TorchvisionReference(
                self.root,
                self.res,
                self.args.batch_size,
                SPLITS[self.split],
                self.args.workers if workers is None else workers,
                self.device,
                self.dtype,
            ), None
        at_res = dataclasses.replace(
            variant,
            overrides=tuple((k, v.format(res=self.res) if isinstance(v, str) else v) for k, v in variant.overrides),
        )
        return open_variant(
            at_res,
            root=self.root,
            policy=ConstantSize(self.res, self.args.batch_size),
            augment=SPLITS[self.split],
            shuffle=self.split == "train",
            device=self.device,
            dtype=self.dtype,
            workers=self.args.workers if workers is None else workers,
        )


def timed_turn(batches, warmup: int, steps: int, device, threads: int | None = None) -> dict:
    """One loader's turn in a round: `warmup` untimed batches, then `steps` timed ones (with
    `threads` torch threads if given). Memory is read once, after the timed batches: reading
    a process tree's memory maps takes a large share of a core while it runs."""
    kept = torch.get_num_threads()
    torch.set_num_threads(threads or kept)
    try:
        settle()
        warm_up(batches, lambda x, y: None, device, warmup)
        reset_gpu_memory(device)
        with ProcessTreeMonitor(interval=None) as monitor:
            start, images = time.perf_counter(), 0
            for _ in range(steps):
                images += next(batches)[0].shape[0]
            sync(device)
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(kept)
    return {
        "images": images,
        "seconds": seconds,
        "cpu_seconds": monitor.cpu_seconds,
        "peak_mem_mb": monitor.result()["peak_mem_mb"],
        "gpu_mem_mb": gpu_memory_mb(device),
    }


def interleaved(loaders: dict, single: dict, args, device, bar) -> tuple[dict, dict]:
    """Timed turns of each loader and of its single-core twin (`single`), `repeats` rounds of
    every backend in rotating order."""
    streams = {label: endless(loader) for label, loader in loaders.items()}
    single_streams = {label: endless(loader) for label, loader in single.items()}
    turns, single_turns = {label: [] for label in loaders}, {label: [] for label in loaders}
    labels = list(loaders)
    for r in range(args.repeats):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            bar.set_postfix_str(f"round {r + 1}/{args.repeats} {label}")
            with failures_named(label):
                turns[label].append(timed_turn(streams[label], args.warmup, args.steps, device))
                single_turns[label].append(timed_turn(single_streams[label], args.warmup, args.work_batches, device, 1))
    return turns, single_turns


def cell_rows(cell: Cell, variants, bar) -> tuple[list[dict], dict[str, str]]:
    """Every backend's row at this cell. Single-core rate: the backend's loader with no workers
    (its whole work in the calling thread; DALI and FFCV: one decoding thread) and one torch
    thread, timed in the same rounds."""
    chosen = {REFERENCE: None, **{v.label: v for v in variants}}
    loaders, single, skipped = {}, {}, {}
    for label, variant in chosen.items():
        loader, why = cell.open(variant)
        if loader is None:
            skipped[label] = why
        else:
            loaders[label], single[label] = loader, cell.open(variant, workers=0)[0]
    turns, single_turns = interleaved(loaders, single, cell.args, cell.device, bar)
    del loaders, single
    gc.collect()  # shuts the workers down before the next cell opens its own
    return [summary(label, cell, turns[label], turns[REFERENCE], single_turns[label]) for label in turns], skipped


def summary(label: str, cell: Cell, turns: list[dict], reference: list[dict], single: list[dict]) -> dict:
    ips = [t["images"] / t["seconds"] for t in turns]
    ipc = [t["images"] / max(t["cpu_seconds"], 1e-9) for t in turns]
    ref_ips = [t["images"] / t["seconds"] for t in reference]
    ref_ipc = [t["images"] / max(t["cpu_seconds"], 1e-9) for t in reference]
    images, seconds, cpu = (sum(t[k] for t in turns) for k in ("images", "seconds", "cpu_seconds"))
    per_cpu_s = images / max(cpu, 1e-9)
    rate = sum(t["images"] for t in single) / max(sum(t["cpu_seconds"] for t in single), 1e-9)
    return {
        "backend": label,
        "split": cell.split,
        "res": cell.res,
        "img_per_s": spread(ips),
        "ratio": spread([a / b for a, b in zip(ips, ref_ips)]),
        "cpu_ratio": spread([a / b for a, b in zip(ipc, ref_ipc)]),
        "ratio_to_reference": statistics.median(a / b for a, b in zip(ips, ref_ips)),
        "cpu_ratio_to_reference": statistics.median(a / b for a, b in zip(ipc, ref_ipc)),
        "img_per_cpu_s": per_cpu_s,
        "cpu_cores_used": cpu / seconds,
        "cpu_seconds": cpu,
        "single_core_rate": rate,
        "efficiency": per_cpu_s / rate,
        "tree_peak_mem_mb": max(t["peak_mem_mb"] for t in turns),
        "gpu_mem_mb": max((t["gpu_mem_mb"] for t in turns if t["gpu_mem_mb"] is not None), default=None),
    }


def run(args) -> tuple[list[dict], dict[str, str]]:
    """The rows measured, and the reason for each backend that could not run here."""
    device = resolve_device(args.device)
    dtype = resolve_precision(device, args.amp).input_dtype
    root = str(Path(args.data) / "train")
    variants = args.backends or default_variants()
    cells = [Cell(res, split, root, device, dtype, args) for res in args.res for split in args.splits]
    rows, skipped = [], {}
    bar = tqdm(cells, desc="loader cells", disable=not progress_enabled(args.progress))
    for cell in bar:
        found, why = cell_rows(cell, variants, bar)
        rows += found
        skipped.update(why)
    for label, why in skipped.items():
        say(f"skipped {label}: {why}")
    return rows, skipped


def agreement(rows: list[dict], path: str) -> dict[tuple, float]:
    """Per (backend, split, K): the largest relative change of either ratio since the run at `path`."""
    before = {(r["backend"], r["split"], r["res"]): r for r in json.loads(Path(path).read_text())["rows"]}
    moved = {}
    for r in rows:
        old = before.get((r["backend"], r["split"], r["res"]))
        if old is not None:
            moved[(r["backend"], r["split"], r["res"])] = max(
                abs(r[k] / old[k] - 1) for k in ("ratio_to_reference", "cpu_ratio_to_reference")
            )
    return moved


def plot(rows: list[dict], splits: list[str]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for label in dict.fromkeys(r["backend"] for r in rows):
            pts = [(r["res"], r["img_per_s"]["median"]) for r in rows if r["backend"] == label and r["split"] == split]
            ax.plot(*zip(*pts), "o-" if label != REFERENCE else "k--", label=label)
        style(
            ax,
            title=f"{split} ({'RandomResizedCrop' if split == 'train' else 'centre crop'})",
            xlabel="crop side K (px)",
            ylabel="images / s",
        )
    return fig


def table_row(r: dict, moved: dict) -> list:
    change = moved.get((r["backend"], r["split"], r["res"]))
    return [
        r["backend"],
        r["split"],
        r["res"],
        f"{r['img_per_s']['median']:.0f}",
        f"{100 * r['img_per_s']['rel_spread']:.0f}",
        f"{r['ratio_to_reference']:.2f}",
        f"{100 * r['ratio']['rel_spread']:.0f}",
        f"{r['img_per_cpu_s']:.0f}",
        f"{r['cpu_ratio_to_reference']:.2f}",
        f"{r['cpu_cores_used']:.2f}",
        f"{r['single_core_rate']:.0f}",
        f"{100 * r['efficiency']:.0f}",
        "-" if change is None else f"{100 * change:.1f}",
        "-" if r["gpu_mem_mb"] is None else f"{r['gpu_mem_mb']:.0f}",
    ]


def main(argv=None):
    args = parse_args(argv)
    rows, skipped = run(args)
    moved = agreement(rows, args.compare) if args.compare else {}
    headers = [
        "backend",
        "split",
        "K",
        "img/s",
        "spread %",
        "x torchvision",
        "ratio spread %",
        "img/CPU-s",
        "x torchvision (CPU)",
        "CPU cores",
        "1-core img/CPU-s",
        "efficiency %",
        "moved % (--compare)",
        "GPU MB",
    ]
    extra = {
        "skipped": skipped,
        "compared_with": args.compare,
        "largest_ratio_change": max(moved.values(), default=None),
    }
    if moved:
        say(f"largest change of a ratio since {args.compare}: {100 * extra['largest_ratio_change']:.1f}%")
    return write_results(
        "loader_throughput",
        args,
        rows,
        headers,
        [table_row(r, moved) for r in rows],
        lambda: plot(rows, args.splits),
        extra=extra,
    )


if __name__ == "__main__":
    run_command(main)
