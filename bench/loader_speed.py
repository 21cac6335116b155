"""Loader-only throughput, backends side by side on the same JPEGs, cores and settings.

    python -m bench.loader_speed --data /tmp/demo_check --backends pil,dali --res 128,224

Each measurement is one training epoch (RandomResizedCrop + flip) of the train split, timed
from the second batch on (worker start-up and pipeline build excluded), the batches left on
the loader's device. Rounds alternate the backends so that load from other jobs on the
machine hits them alike; the table reports the median of the rounds and its ratio to the
first backend.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from loaders import BACKENDS, create_loader
from loaders.base import LoaderConfig
from pipeline.sizes import ConstantSize


def images_per_second(loader) -> float:
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for images, _ in batches:
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageNet-layout root (its train/ split is read)")
    p.add_argument("--backends", default="pil,dali", help=f"comma-separated, from {', '.join(BACKENDS)}")
    p.add_argument("--res", default="128,224", help="comma-separated crop sides")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="worker processes (pil) or threads (dali)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    backends = args.backends.split(",")
    sides = [int(r) for r in args.res.split(",")]
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    loaders = {(b, r): create_loader(LoaderConfig(
        backend=b, root=str(Path(args.data) / "train"), policy=ConstantSize(r, args.batch_size), augment="rrc",
        shuffle=True, device=device, dtype=dtype, workers=args.workers), progress=False)
        for b in backends for r in sides}
    speeds: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
    for round_ in range(args.rounds):
        for key, loader in loaders.items():
            loader.set_epoch(round_)
            speeds[key].append(images_per_second(loader))
    print(f"torch threads {torch.get_num_threads()}, workers {args.workers}, batch {args.batch_size}, "
          f"device {device}, {args.rounds} rounds, data {args.data}")
    print("| res | " + " | ".join(f"{b} img/s" for b in backends) + " | " +
          " | ".join(f"{b}/{backends[0]}" for b in backends[1:]) + " |")
    print("|---" * (1 + 2 * len(backends) - 1) + "|")
    for r in sides:
        med = [statistics.median(speeds[(b, r)]) for b in backends]
        spread = [f"{m:.0f} ({min(speeds[(b, r)]):.0f}-{max(speeds[(b, r)]):.0f})" for b, m in zip(backends, med)]
        print(f"| {r} | " + " | ".join(spread) + " | " + " | ".join(f"{m / med[0]:.2f}" for m in med[1:]) + " |")


if __name__ == "__main__":
    main()
