"""Write a resolution-aware copy of an ImageNet-layout data set for the ImageFolder backends
(pil, dali, nvjpeg), as the .beton preset does for ffcv:

    python -m loaders.prepare --data ROOT --out DIR --for-res 128

DIR/<split>/<class>/<file> then holds every image of ROOT/<split> under the same name, stored
at a longer side of at most the rule's side for the split (loaders/stored_size.py: train at
256 px for a 128-px run, val for the default test sweep). Larger images are downscaled
(Lanczos) and written as JPEG at --jpeg-quality (default 90, FFCV's recipe), in the stored frame
with the source's EXIF orientation tag (and no other metadata); images already small enough are
copied byte for byte. Each split is scanned first like every loader's input,
so a bad file stops the command with its name, or with --skip-bad is left out and counted in
DIR/prepared.json.

Each file is written under a temporary name and renamed, so a file that exists in DIR is
complete: a killed run leaves no half-written image, and running the same command again
carries on where it stopped (DIR/prepared.json records the settings; other settings into the
same DIR are refused). A split is complete when prepared.json lists it under "complete".
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from loaders.imagefile import open_image, orientation
from loaders.imagefolder import BadDataError, add_scan_arguments, scan_image_folder
from loaders.orientation import TAG
from loaders.stored_size import split_max_side
from loaders.workpool import pool_results
from pipeline.console import progress_enabled, run_command
from pipeline.reuse import PARTIAL, read_json, write_json, written

FORMAT = "lowres-prepared/1"
CHUNK = 16  # files per task sent to a worker process


@dataclass(frozen=True)
class PrepareSettings:
    for_res: int
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.for_res <= 0:
            raise ValueError(f"--for-res must be positive, got {self.for_res}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.jpeg_quality}")


def store(src: str, dst: str, side: int, quality: int) -> tuple[str, str | None]:
    """Write `src` to `dst` at a longer side of at most `side`; ("resized" | "copied" | "done", None),
    or (src, problem) when the image cannot be decoded."""
    if os.path.exists(dst):
        return "done", None
    try:
        # open_image refuses a bomb (the file may have changed since the scan)
        with written(Path(dst)) as tmp, open_image(src) as img:
            if max(img.size) <= side:
                shutil.copyfile(src, tmp)
                return "copied", None
            scale = side / max(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img.draft("RGB", (2 * size[0], 2 * size[1]))  # a reduced DCT decode, still 2x oversampled
            small = img.convert("RGB").resize(size, Image.LANCZOS)
            small.save(tmp, format="JPEG", quality=quality, exif=orientation_exif(orientation(img)))
            return "resized", None
    except OSError as e:
        return src, f"unreadable image ({e})"


def orientation_exif(code: int) -> bytes:
    """EXIF that holds the orientation tag `code` alone (none for 1): the copy keeps the stored
    frame, so `--exif-orientation apply` turns it as it turns the source."""
    if code == 1:
        return b""
    exif = Image.Exif()
    exif[TAG] = code
    return exif.tobytes()


def prepare_split(root: Path, out: Path, side: int, settings: PrepareSettings, classes, args) -> dict:
    index = scan_image_folder(root, classes, args.check, args.skip_bad, progress=progress_enabled(args.progress))
    for name in index.classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"*/*{PARTIAL}"):  # a killed run's unfinished files
        stale.unlink()
    jobs = [(p, str(out / Path(p).relative_to(root))) for p in index.paths]
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    work = partial(store_chunk, side=side, quality=settings.jpeg_quality)
    bar = dict(total=len(jobs), desc=f"prepare {root.name}", unit="img", disable=not progress_enabled(args.progress))
    counts, bad = Counter(), []
    with tqdm(**bar) as progress:
        for done in pool_results(work, chunks, max(args.workers, 1), lambda c: f"{c[0][0]} to {c[-1][0]}"):
            for outcome, problem in done:
                if problem:
                    bad.append((outcome, problem))
                else:
                    counts[outcome] += 1
            progress.update(len(done))
    if bad and not args.skip_bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        raise BadDataError(
            f"{len(bad)} image(s) under {root} could not be decoded:\n{listing}\n"
            "Remove them, or pass --skip-bad to leave them out (they are counted)."
        )
    skipped = {why: len(p) for why, p in index.skipped.items()}
    if bad:
        skipped["unreadable image"] = skipped.get("unreadable image", 0) + len(bad)
    return {"classes": index.classes, "max_side": side, "images": dict(counts), "skipped": skipped}


def store_chunk(jobs: list[tuple[str, str]], side: int, quality: int) -> list[tuple[str, str | None]]:
    return [store(*job, side=side, quality=quality) for job in jobs]


def read_manifest(path: Path, settings: PrepareSettings, source: str) -> dict:
    """The manifest of an earlier run into the same folder, or a new one; a run with other
    settings or another source is refused rather than mixed in. Not rebuilt when it differs,
    as pipeline.reuse.reused_or_built would: the copy is made file by file, each one whole, so
    a run carries on what an earlier one began."""
    manifest = read_json(path)
    if manifest is None:
        return {"format": FORMAT, "source": source, "settings": asdict(settings), "complete": {}}
    if (
        manifest.get("format") != FORMAT
        or manifest.get("settings") != asdict(settings)
        or manifest.get("source") != source
    ):
        raise BadDataError(
            f"{path.parent} holds a copy prepared from {manifest.get('source')} with "
            f"{manifest.get('settings')}, not {source} with {asdict(settings)}: use another --out"
        )
    return manifest


def prepare(args) -> dict:
    settings = PrepareSettings(args.for_res, args.jpeg_quality)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "prepared.json"
    manifest = read_manifest(manifest_path, settings, str(Path(args.data).resolve()))
    write_json(manifest_path, manifest)
    classes = None
    for split in args.splits.split(","):
        side = split_max_side(split, settings.for_res)
        done = prepare_split(Path(args.data) / split, out / split, side, settings, classes, args)
        classes = classes or done["classes"]  # later splits use the first split's labels
        print(
            f"{split}: longer side <= {side} px, JPEG q{settings.jpeg_quality}: "
            f"{', '.join(f'{n} {k}' for k, n in sorted(done['images'].items()))}"
            f"{''.join(f'; skipped {n} {why}' for why, n in done['skipped'].items())} -> {out / split}",
            flush=True,
        )
        manifest["complete"][split] = {k: v for k, v in done.items() if k != "classes"}
        write_json(manifest_path, manifest)
    return manifest


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m loaders.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="ImageNet-layout root (ROOT/<split>/<class>/<image>)")
    parser.add_argument("--out", required=True, help="folder for the copy (DIR/<split>/<class>/<image>)")
    parser.add_argument("--for-res", type=int, required=True, help="the training crop side the copy serves")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits; the first fixes the labels")
    parser.add_argument(
        "--jpeg-quality",
        type=int,
        default=PrepareSettings.jpeg_quality,
        help="quality of the downscaled JPEGs (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    add_scan_arguments(parser, "header", "of the scan; the copy decodes every image anyway", counted_in="prepared.json")
    args = parser.parse_args(argv)
    return prepare(args)


if __name__ == "__main__":
    run_command(main)
