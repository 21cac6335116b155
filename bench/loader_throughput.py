"""Loader throughput: images per second that each backend delivers, per resolution and split,
side by side with the torchvision reference (same JPEGs, same cores, same worker count).

    python -m bench.loader_throughput --data data/demo
    python -m bench.loader_throughput --data /tmp/bench_data --res 128 --backends pil pil:reduced_decode=false

Each cell: warm-up batches (worker start-up, JIT) are not timed, then `--repeats` timed runs
of `--steps` batches; median images/s and spread, CPU cores used by the whole process tree,
images per CPU-second (what a loader costs, meaningful even when other jobs share the
cores), the tree's peak memory (PSS), and GPU memory on CUDA. Ratios are to the reference
measured in the same run at the same resolution and split. Batches are consumed as a trainer would receive them
(normalised, channels-last, on the device). Both splits read the train folder so epochs are
long; the split only selects the augmentation (train: RandomResizedCrop + flip; eval:
resize to K/0.875 + centre crop).
"""
from __future__ import annotations

import argparse
import gc
from pathlib import Path

from tqdm import tqdm

from bench.common import (ProcessTreeMonitor, add_output_arguments, default_variants, endless, gpu_memory_mb,
                          images_per_second, open_variant, parse_ints, parse_variant, reset_gpu_memory, style,
                          warm_up, write_results)
from bench.reference import TorchvisionReference
from pipeline.console import progress_enabled, say
from pipeline.precision import resolve_device, resolve_precision
from pipeline.sizes import ConstantSize

REFERENCE = "torchvision"
SPLITS = {"train": "rrc", "eval": "center"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="ImageNet-layout root; its train/ folder is read")
    p.add_argument("--res", type=parse_ints, default=[64, 96, 128, 160, 192, 224], help="crop sides")
    p.add_argument("--splits", default="train,eval", help="train (RandomResizedCrop), eval (centre crop)")
    p.add_argument("--backends", nargs="+", type=parse_variant, default=None,
                   help="backends or variants (name:field=value,...); default: every backend in "
                        "loaders.BACKENDS but synthetic")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="worker processes, for every loader alike")
    p.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    p.add_argument("--steps", type=int, default=8, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell")
    p.add_argument("--device", default="cpu", help="where batches are delivered: cpu, cuda, auto")
    p.add_argument("--amp", default="auto", help="batch dtype as in training: auto, bf16, fp16, off")
    add_output_arguments(p)
    args = p.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    if not set(args.splits) <= set(SPLITS):
        p.error(f"--splits must name train and/or eval, got {args.splits}")
    return args


def measure(loader, args, device) -> dict:
    reset_gpu_memory(device)
    batches = endless(loader)
    warm_up(batches, lambda x, y: None, device, args.warmup)
    with ProcessTreeMonitor() as monitor:
        rate = images_per_second(batches, lambda x, y: None, device, args.steps, args.repeats)
    use = monitor.result()
    # Images per CPU-second of the whole tree: what the loader costs, even on a shared machine.
    return {"img_per_s": rate, **use, "img_per_cpu_s": rate["images"] / max(use["cpu_seconds"], 1e-9),
            "gpu_mem_mb": gpu_memory_mb(device)}


def run(args) -> tuple[list[dict], dict[str, str]]:
    """The rows measured, and the reason for each backend that could not run here."""
    device = resolve_device(args.device)
    dtype = resolve_precision(device, args.amp).input_dtype
    root = str(Path(args.data) / "train")
    variants = args.backends or default_variants()
    cells = [(res, split) for res in args.res for split in args.splits]
    rows, skipped = [], {}
    bar = tqdm(total=len(cells) * (len(variants) + 1), desc="loader cells", disable=not progress_enabled(args.progress))
    for res, split in cells:
        augment = SPLITS[split]
        loaders = [(REFERENCE, lambda: (TorchvisionReference(root, res, args.batch_size, augment, args.workers,
                                                              device, dtype), None))]
        loaders += [(v.label, lambda v=v: open_variant(
            v, root=root, policy=ConstantSize(res, args.batch_size), augment=augment, shuffle=split == "train",
            device=device, dtype=dtype, workers=args.workers)) for v in variants]
        reference = None
        for label, opener in loaders:
            bar.set_postfix_str(f"{label} {split} {res}")
            loader, why = opener()
            if loader is None:
                skipped.setdefault(label, why)
                bar.update(1)
                continue
            row = {"backend": label, "split": split, "res": res, **measure(loader, args, device)}
            del loader
            gc.collect()  # shuts the workers down before the next loader starts its own
            reference = reference or row
            row["ratio_to_reference"] = row["img_per_s"]["median"] / reference["img_per_s"]["median"]
            row["cpu_ratio_to_reference"] = row["img_per_cpu_s"] / reference["img_per_cpu_s"]
            rows.append(row)
            bar.update(1)
    bar.close()
    for label, why in skipped.items():
        say(f"skipped {label}: {why}")
    return rows, skipped


def plot(rows: list[dict], splits: list[str]):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for label in dict.fromkeys(r["backend"] for r in rows):
            pts = [(r["res"], r["img_per_s"]["median"]) for r in rows if r["backend"] == label and r["split"] == split]
            ax.plot(*zip(*pts), "o-" if label != REFERENCE else "k--", label=label)
        style(ax, title=f"{split} ({'RandomResizedCrop' if split == 'train' else 'centre crop'})",
              xlabel="crop side K (px)", ylabel="images / s")
    return fig


def main(argv=None):
    args = parse_args(argv)
    rows, skipped = run(args)
    headers = ["backend", "split", "K", "img/s", "spread %", "x torchvision", "img/CPU-s", "x torchvision (CPU)",
               "CPU cores", "peak PSS MB", "GPU MB"]
    table = [[r["backend"], r["split"], r["res"], f"{r['img_per_s']['median']:.0f}",
              f"{100 * r['img_per_s']['rel_spread']:.0f}", f"{r['ratio_to_reference']:.2f}",
              f"{r['img_per_cpu_s']:.0f}", f"{r['cpu_ratio_to_reference']:.2f}", f"{r['cpu_cores_used']:.2f}",
              f"{r['peak_mem_mb']:.0f}", "-" if r["gpu_mem_mb"] is None else f"{r['gpu_mem_mb']:.0f}"] for r in rows]
    return write_results("loader_throughput", args, rows, headers, table, lambda: plot(rows, args.splits),
                         extra={"skipped": skipped})


if __name__ == "__main__":
    main()
