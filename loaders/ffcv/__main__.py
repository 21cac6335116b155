"""Write an ImageNet-layout data set as .beton files for the ffcv backend.

    python -m loaders.ffcv write --data ROOT --out DIR --for-res 128

writes DIR/train.beton and DIR/val.beton (each with its class map, <split>.beton.json);
`train.py --loader ffcv --data DIR` then reads them. --for-res K stores each split at the
smallest longer side that serves training at K and the default sweep's test sides
(loaders/stored_size.py states the rule); --max-resolution N stores every split at N.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loaders.ffcv import require_ffcv
from loaders.ffcv.write import WRITE_MODES, WriterSettings, write_beton
from loaders.imagefolder import add_scan_arguments, scan_image_folder
from loaders.orientation import ORIENTATIONS
from loaders.stored_size import split_max_side
from pipeline.console import progress_enabled, run_command


def split_settings(args, split: str) -> WriterSettings:
    side = args.max_resolution or None
    if args.for_res:
        side = split_max_side(split, args.for_res)
    return WriterSettings(
        max_resolution=side,
        write_mode=args.write_mode,
        jpeg_quality=args.jpeg_quality,
        compress_probability=args.compress_probability,
        smart_threshold=args.smart_threshold,
        orientation=args.exif_orientation,
    )


def write(args) -> list[Path]:
    classes, written = None, []
    for split in args.splits.split(","):
        settings = split_settings(args, split)
        progress = progress_enabled(args.progress)
        index = scan_image_folder(Path(args.data) / split, classes, args.check, args.skip_bad, progress=progress)
        classes = classes or index.classes  # later splits use the first split's labels
        print(
            f"{split}: {index.report()}; longer side <= {settings.max_resolution or 'as stored'}, "
            f"{settings.write_mode}",
            flush=True,
        )
        out = write_beton(index, Path(args.out) / f"{split}.beton", settings, args.workers, progress, args.skip_bad)
        print(f"  -> {out} ({out.stat().st_size / 2**20:.1f} MiB)", flush=True)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m loaders.ffcv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="ImageFolder splits -> DIR/<split>.beton")
    defaults = WriterSettings()
    w.add_argument("--data", required=True, help="ImageNet-layout root (ROOT/<split>/<class>/<image>)")
    w.add_argument("--out", required=True, help="folder for <split>.beton and <split>.beton.json")
    w.add_argument("--splits", default="train,val", help="comma-separated splits; the first fixes the labels")
    w.add_argument(
        "--for-res",
        type=int,
        default=0,
        help="resolution-aware preset for training at this side (overrides --max-resolution)",
    )
    w.add_argument(
        "--max-resolution",
        type=int,
        default=defaults.max_resolution,
        help="longer side stored, 0 keeps the original size (default: %(default)s)",
    )
    w.add_argument("--write-mode", choices=WRITE_MODES, default=defaults.write_mode, help="default: %(default)s")
    w.add_argument(
        "--exif-orientation",
        choices=ORIENTATIONS,
        default="stored",
        help="pixels as stored, or turned per their EXIF tag (the run's --exif-orientation; default: %(default)s)",
    )
    w.add_argument("--jpeg-quality", type=int, default=defaults.jpeg_quality, help="default: %(default)s")
    w.add_argument(
        "--compress-probability",
        type=float,
        default=defaults.compress_probability,
        help="share of JPEG images under --write-mode proportion (default: %(default)s)",
    )
    w.add_argument(
        "--smart-threshold",
        type=int,
        default=None,
        help="--write-mode smart: JPEG when the raw pixels take more bytes than this",
    )
    w.add_argument("--workers", type=int, default=2, help="writer processes (default: %(default)s)")
    add_scan_arguments(w, "full", "before writing, see loaders/ffcv/write.py", counted_in="the class map")
    args = parser.parse_args(argv)
    if args.for_res < 0:
        parser.error(f"--for-res must be positive, got {args.for_res}")
    try:
        for split in args.splits.split(","):
            split_settings(args, split)  # bad values fail at start, before any scan
    except ValueError as e:
        parser.error(str(e))
    require_ffcv()
    return write(args)


if __name__ == "__main__":
    run_command(main)
