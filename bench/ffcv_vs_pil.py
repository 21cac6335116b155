"""Loader throughput, ffcv beside pil, on the same JPEGs and the same cores (no model).

    python -m bench.ffcv_vs_pil --data /tmp/demo_check --res 128,224 --workers 2

For each resolution: pil decodes the ImageFolder JPEGs; ffcv reads .beton files written
from them (once, under --betons) twice: at the resolution-aware preset (`--for-res K`) and
at 512 px (about FFCV's ImageNet recipe). Train augmentation (RandomResizedCrop + flip),
images/s over --epochs epochs after --warmup epochs (worker start-up, page cache), fp32 on
the CPU. FFCV's JIT compilation happens in the loader's constructor and is reported apart.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from loaders import create_loader
from loaders.base import LoaderConfig
from loaders.ffcv.__main__ import main as write_main
from pipeline.sizes import ConstantSize


def beton_dir(args, name: str, *flags: str) -> Path:
    out = Path(args.betons) / name
    if not (out / "train.beton").exists():
        write_main(["write", "--data", args.data, "--out", str(out), "--splits", "train",
                    "--workers", str(args.workers), *flags])
    return out


def images_per_second(loader, epochs: range) -> float:
    count, start = 0, time.perf_counter()
    for epoch in epochs:
        loader.set_epoch(epoch)
        count += sum(len(y) for _, y in loader)
    return count / (time.perf_counter() - start)


def measure(args, backend: str, root: Path, res: int) -> dict:
    cfg = LoaderConfig(backend=backend, root=str(root / "train"), policy=ConstantSize(res, args.batch_size),
                       augment="rrc", shuffle=True, workers=args.workers)
    start = time.perf_counter()
    loader = create_loader(cfg, progress=False)
    made = time.perf_counter() - start
    images_per_second(loader, range(args.warmup))
    rate = images_per_second(loader, range(args.warmup, args.warmup + args.epochs))
    return {"backend": backend, "data": str(root), "res": res, "img_per_s": rate, "setup_s": made,
            "compile_s": getattr(loader, "compile_seconds", 0.0)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageNet-layout root (its train/ split is read)")
    parser.add_argument("--betons", default="data/ffcv-bench", help="where the .beton files are written")
    parser.add_argument("--res", default="128,224")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    for res in (int(r) for r in args.res.split(",")):
        rows.append(measure(args, "pil", Path(args.data), res))
        rows.append(measure(args, "ffcv", beton_dir(args, f"for{res}", "--for-res", str(res)), res))
        rows.append(measure(args, "ffcv", beton_dir(args, "max512", "--max-resolution", "512"), res))
    print("| res | backend | data | img/s | vs pil | set-up s (JIT s) |\n|---:|---|---|---:|---:|---:|")
    for row in rows:
        pil = next(r for r in rows if r["res"] == row["res"] and r["backend"] == "pil")
        print(f"| {row['res']} | {row['backend']} | {row['data']} | {row['img_per_s']:.0f} | "
              f"{row['img_per_s'] / pil['img_per_s']:.2f}x | {row['setup_s']:.1f} ({row['compile_s']:.1f}) |")
    return rows


if __name__ == "__main__":
    main()
