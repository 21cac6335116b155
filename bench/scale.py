"""Data at ImageNet scale: the scan, the start of a job and the loader's memory on a simulated
ImageNet folder, for this checkout and, side by side in the same run, another one (the code
before a change).

    python -m bench.scale --baseline /tmp/main-before            # 1000 classes x 1281 + 50 val
    python -m bench.scale --classes 3 --per-class 20 --batches 4  # a tiny run

The folder (built once under --root, then reused) holds `classes` x `per-class` train files and
`classes` x `val-per-class` val files, all hard links to a few hundred real JPEGs (--source, or
375-500 px demo images generated there): a million directory entries at no disk cost. The page
cache holds the few source files, so the figures are those of a local disk with warm caches.

Each checkout runs `--starts` fresh processes (bench/first_batch.py) that build a pil loader over
the train split (K = --res, --batch-size, --workers) and take `--batches` batches; the first start
has the index cache (LOWRES_CACHE under --root) emptied: a cold scan. Measured per start: the
index time (the scan, or loading the stored index), process start to first batch, and the loader
tree's PSS after batch --pss-from and after the last batch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import add_output_arguments, write_results
from pipeline.console import progress_enabled, say

HERE = Path(__file__).resolve().parents[1]  # this checkout
IMAGE_SUFFIXES = (".jpeg", ".jpg")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/lowres-scale", help="where the simulated folder and its caches live")
    p.add_argument("--source", default="", help="folder of JPEGs to link to (default: generate 300 demo images)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=1281, help="train files per class")
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--baseline", default="", help="another checkout (e.g. a git worktree of main) measured alike")
    p.add_argument("--starts", type=int, default=2, help="process starts of this checkout; the first is cold")
    p.add_argument(
        "--baseline-starts",
        type=int,
        default=1,
        help="process starts of the baseline (code that stores no index scans at every start, so "
        "one start measures its cold and its warm start)",
    )
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=200, help="batches read by the last start")
    p.add_argument("--pss-from", type=int, default=20, help="batch after which memory growth is measured from")
    add_output_arguments(p)
    args = p.parse_args(argv)
    if min(args.classes, args.per_class, args.val_per_class, args.starts, args.baseline_starts, args.batches) < 1:
        p.error("--classes, --per-class, --val-per-class, --starts, --baseline-starts and --batches must be >= 1")
    if not 1 <= args.pss_from < args.batches:
        p.error(f"--pss-from must be in 1..{args.batches - 1}")
    return args


def source_images(args) -> list[Path]:
    if args.source:
        folder = Path(args.source)
    else:
        from loaders.demo_data import generate

        folder = generate(
            Path(args.root) / "source",
            classes=10,
            train_per_class=30,
            val_per_class=1,
            min_side=375,
            max_side=500,
            progress=progress_enabled(args.progress),
        )
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"no JPEG files under {folder}")
    return images


def simulated_folder(args) -> Path:
    """<root>/imagenet: train/ and val/ of hard links, built once per size (a marker says which)."""
    data = Path(args.root) / "imagenet"
    shape = {
        "classes": args.classes,
        "per_class": args.per_class,
        "val_per_class": args.val_per_class,
        "source": args.source,
    }
    marker = data / "shape.json"
    if marker.is_file() and json.loads(marker.read_text()) == shape:
        return data
    shutil.rmtree(data, ignore_errors=True)
    images = source_images(args)
    started, n = time.perf_counter(), 0
    for split, count in (("train", args.per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            folder = data / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                os.link(images[n % len(images)], folder / f"n{c:08d}_{i}.JPEG")
                n += 1
    marker.write_text(json.dumps(shape))
    say(f"built {data}: {n} links to {len(images)} JPEGs in {time.perf_counter() - started:.0f} s")
    return data


def start(checkout: Path, cache: Path, spec: dict) -> dict:
    """One fresh process over `checkout`'s code; its measurements and whether it reused an index."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "LOWRES_CACHE": str(cache)}
    env.pop("LOWRES_RESCAN", None)
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, str(HERE / "bench" / "first_batch.py"), json.dumps(spec)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"the start under {checkout} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["start_to_first_batch_s"] = out.pop("first_batch") - spawned
    out["index"] = "reused" if "index: reused" in proc.stderr else "scanned"
    return out


def measure(label: str, checkout: Path, data: Path, starts: int, args) -> list[dict]:
    cache = Path(args.root) / "cache" / label
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for n in range(starts):
        last = n == starts - 1
        spec = {
            "root": str(data / "train"),
            "res": args.res,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "batches": args.batches if last else 1,
            "pss_at": [args.pss_from, args.batches] if last else [],
        }
        say(f"{label}: start {n + 1} of {starts} ({'cold' if n == 0 else 'warm'})")
        row = {
            "code": label,
            "checkout": str(checkout),
            "start": "cold" if n == 0 else "warm",
            **start(checkout, cache, spec),
        }
        pss = {int(k): v for k, v in row.pop("pss_mb").items()}
        if pss:
            row["pss_mb"] = pss
            row["pss_growth"] = pss[args.batches] / pss[args.pss_from] - 1
        rows.append(row)
        say(
            f"  index {row['index']} in {row['index_s']:.1f} s, first batch {row['start_to_first_batch_s']:.1f} s "
            "after the process started"
        )
    return rows


def table(rows: list[dict], args) -> list[list]:
    def pss(r, k):
        return f"{r['pss_mb'][k]:.0f}" if "pss_mb" in r else "-"

    return [
        [
            r["code"],
            r["start"],
            r["index"],
            f"{r['images']:,}",
            f"{r['index_s']:.1f}",
            f"{r['start_to_first_batch_s']:.1f}",
            pss(r, args.pss_from),
            pss(r, args.batches),
            f"{100 * r['pss_growth']:+.1f}" if "pss_growth" in r else "-",
        ]
        for r in rows
    ]


def plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['code']}\n{r['start']}" for r in rows]
    ax.barh(labels, [r["start_to_first_batch_s"] for r in rows], color="tab:blue", label="start to first batch")
    ax.barh(labels, [r["index_s"] for r in rows], color="tab:orange", label="of which: index (scan or load)")
    ax.set(xlabel="seconds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return fig


def main(argv=None):
    args = parse_args(argv)
    data = simulated_folder(args)
    checkouts = [("before", Path(args.baseline).resolve(), args.baseline_starts)] if args.baseline else []
    rows = [
        row
        for label, checkout, starts in checkouts + [("this", HERE, args.starts)]
        for row in measure(label, checkout, data, starts, args)
    ]
    cold = {r["code"]: r["index_s"] for r in rows if r["start"] == "cold"}
    extra = {"cold_scan_speedup": cold["before"] / cold["this"]} if "before" in cold else {}
    if extra:
        say(f"cold scan: {extra['cold_scan_speedup']:.2f}x faster than the baseline")
    headers = [
        "code",
        "start",
        "index",
        "train images",
        "index s",
        "start to 1st batch s",
        f"PSS MB @{args.pss_from}",
        f"PSS MB @{args.batches}",
        "PSS growth %",
    ]
    return write_results("scale", args, rows, headers, table(rows, args), lambda: plot(rows), extra=extra)


if __name__ == "__main__":
    main()
