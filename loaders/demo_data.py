"""Embedded demo data set: synthetic "photos" of N object classes, as JPEG in ImageFolder layout.

We cannot ship ImageNet, yet the demo and the tests need data on which the FixRes method
behaves as it does on photos. Layout: `root/{train,val}/<class>/<class>_<index>.JPEG`, plus
`root/manifest.json` with the parameters, so a build step can call the generator every time
and only pay for it when something changed.

The images and what they reproduce of photos: loaders/demo_render.py.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from loaders.demo_render import SPLITS, class_specs, render_image
from loaders.workpool import pool_results
from pipeline.console import progress_enabled, run_command
from pipeline.reuse import read_json, reused_or_built, write_json, written

GENERATOR_VERSION = 1  # bump whenever the output changes: cached sets are matched on it
JPEG_QUALITY = 90
MIN_SIDE_LIMIT = 32


# --- the data set -------------------------------------------------------------------------


def file_name(class_name: str, index: int) -> str:
    return f"{class_name}_{index:05d}.JPEG"


def render_chunk(job: tuple[str, dict, list[tuple[str, int, int]]]) -> tuple[int, int]:
    """Worker: render and write a list of (split, class, index); returns (images, bytes)."""
    root, params, items = job
    names = [spec.name for spec in class_specs(params["classes"])]
    total = 0
    for split, class_id, index in items:
        image = render_image(
            params["seed"], split, class_id, index, params["classes"], params["min_side"], params["max_side"]
        )
        path = Path(root, split, names[class_id], file_name(names[class_id], index))
        image.save(path, "JPEG", quality=JPEG_QUALITY)
        total += path.stat().st_size
    return len(items), total


def checked_parameters(
    classes: int, train_per_class: int, val_per_class: int, scale: float, seed: int, min_side: int, max_side: int
) -> dict:
    """The parameters that determine the output, validated; the manifest records them."""
    checks = [
        (classes >= 2, f"classes must be >= 2, got {classes}"),
        (train_per_class > 0, f"train_per_class must be > 0, got {train_per_class}"),
        (val_per_class > 0, f"val_per_class must be > 0, got {val_per_class}"),
        (scale > 0 and math.isfinite(scale), f"scale must be a positive number, got {scale}"),
        (seed >= 0, f"seed must be >= 0, got {seed}"),
        (min_side >= MIN_SIDE_LIMIT, f"min_side must be >= {MIN_SIDE_LIMIT}, got {min_side}"),
        (min_side <= max_side, f"min_side ({min_side}) must be <= max_side ({max_side})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return {
        "classes": int(classes),
        "train_per_class": int(train_per_class),
        "val_per_class": int(val_per_class),
        "scale": float(scale),
        "seed": int(seed),
        "min_side": int(min_side),
        "max_side": int(max_side),
        "generator_version": GENERATOR_VERSION,
    }


def split_counts(params: dict) -> dict[str, int]:
    """Images per class in each split, after scaling (at least one)."""
    return {split: max(1, round(params[f"{split}_per_class"] * params["scale"])) for split in SPLITS}


def chunked(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_images(root: Path, params: dict, workers: int, progress: bool) -> int:
    """Render every image under `root`, in parallel; returns the bytes written."""
    counts = split_counts(params)
    items = [(split, c, i) for split in SPLITS for c in range(params["classes"]) for i in range(counts[split])]
    # a few chunks per worker balance the load; bounded so progress still moves
    chunks = chunked(items, max(1, min(64, len(items) // (workers * 8))))
    jobs = [(str(root), params, chunk) for chunk in chunks]
    show = progress_enabled(progress)
    total = 0
    with tqdm(total=len(items), unit="img", desc="demo data", disable=not show) as bar:
        made = (
            pool_results(render_chunk, jobs, min(workers, len(jobs)), lambda job: f"images {job[2][0]} to {job[2][-1]}")
            if workers > 1
            else map(render_chunk, jobs)
        )
        for done, size in made:
            total += size
            bar.update(done)
    return total


def generate(
    out: str | Path,
    classes: int = 10,
    train_per_class: int = 300,
    val_per_class: int = 50,
    scale: float = 1.0,
    seed: int = 0,
    workers: int | None = None,
    min_side: int = 200,
    max_side: int = 500,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the demo data set to `out` (ImageFolder layout plus manifest.json); returns `out`.

    Nothing is done when `out` already holds a set made with the same parameters. A set with
    other parameters is replaced only with `force`; a folder that is not a demo set never is.
    The set is built in `<out>.partial` and renamed at the end, so `out` is always complete.
    """
    params = checked_parameters(classes, train_per_class, val_per_class, scale, seed, min_side, max_side)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    return reused_or_built(
        out, lambda found: up_to_date(found, params, force), lambda: written_set(out, params, workers, progress)
    )


def up_to_date(out: Path, params: dict, force: bool) -> Path | None:
    """`out` when it holds a set made with `params`; None when it holds another one that `force`
    lets us replace; an error for anything else."""
    try:
        manifest = read_json(out / "manifest.json")
    except ValueError:
        manifest = None
    if manifest is None:
        raise FileExistsError(
            f"{out} exists and is not a demo data set (no readable manifest.json); remove it or choose another --out"
        )
    if manifest.get("parameters") == params:
        print(f"{out}: demo data set is up to date", file=sys.stderr)
        return out
    if not force:
        raise FileExistsError(
            f"{out} holds a demo data set with other parameters "
            f"({manifest.get('parameters')}); use force (--force) to replace it"
        )
    return None


def written_set(out: Path, params: dict, workers: int, progress: bool) -> Path:
    """The set rendered into `<out>.partial` (one fixed name, so that what a killed run left is
    cleared by the next), its manifest last, then renamed to `out`."""
    start = time.perf_counter()
    classes = params["classes"]
    with written(out, out.with_name(out.name + ".partial")) as partial:
        shutil.rmtree(partial, ignore_errors=True)
        names = [spec.name for spec in class_specs(classes)]
        for split in SPLITS:
            for name in names:
                (partial / split / name).mkdir(parents=True)
        total_bytes = write_images(partial, params, workers, progress)
        counts = split_counts(params)
        manifest = {
            "generator_version": GENERATOR_VERSION,
            "parameters": params,
            "classes": names,
            "counts": {split: {"per_class": counts[split], "total": counts[split] * classes} for split in SPLITS},
            "total_bytes": total_bytes,
        }
        write_json(partial / "manifest.json", manifest)
    images = sum(counts.values()) * classes
    print(
        f"{out}: wrote {images} images ({total_bytes / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.demo_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (e.g. data/demo)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies both per-class counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--min-side", type=int, default=200)
    parser.add_argument("--max-side", type=int, default=500)
    parser.add_argument("--force", action="store_true", help="replace a set made with other parameters")
    args = parser.parse_args(argv)
    try:
        generate(
            args.out,
            args.classes,
            args.train_per_class,
            args.val_per_class,
            args.scale,
            args.seed,
            args.workers,
            args.min_side,
            args.max_side,
            force=args.force,
        )
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    run_command(main)
