"""Index of an ImageNet-layout split folder (root/<class>/<image>), with its bad files found.

Every backend starts from this index: paths, labels, image sizes (the crop sampler needs
them) and the class list. Scanning catches what would otherwise surface as a decoder crash
deep inside a worker, hours into a run: each bad file is named, and either fails the scan
or (with skip_bad) is left out and counted.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
JPEG_EOI = b"\xff\xd9"
TAIL_BYTES = 1024  # a JPEG may carry padding after its end-of-image marker
PARALLEL_SCAN_FROM = 2000  # below this, a process pool costs more than it saves


class BadDataError(ValueError):
    """A data folder holds files or folders the loaders cannot use."""


@dataclass
class ImageIndex:
    root: str
    classes: list[str]
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    sizes: np.ndarray  # (N, 2) int64: width, height
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths left out
    notes: Counter = field(default_factory=Counter)  # handled oddities: CMYK, grayscale, PNG in .JPEG

    def __len__(self) -> int:
        return len(self.paths)

    def skipped_counts(self) -> dict[str, int]:
        return {why: len(paths) for why, paths in self.skipped.items()}

    def report(self) -> str:
        """One line on what the scan found, for logs and run summaries."""
        parts = [f"{len(self)} images in {len(self.classes)} classes under {self.root}"]
        parts += [f"{n} {what} (handled)" for what, n in sorted(self.notes.items())]
        parts += [f"skipped {len(p)} {why}" for why, p in sorted(self.skipped.items())]
        return "; ".join(parts)


def check_image(path: str, full: bool) -> tuple[str | None, int, int, str | None]:
    """(problem or None, width, height, note or None) for one file."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file", 0, 0, None
        with Image.open(path) as img:
            width, height = img.size
            fmt, mode = img.format, img.mode
            if full:
                img.load()
        if fmt == "JPEG" and not full and not has_jpeg_end(path):
            return "truncated JPEG (no end-of-image marker)", 0, 0, None
    except OSError as e:  # PIL's UnidentifiedImageError and truncation errors are OSErrors
        return f"unreadable image ({e})", 0, 0, None
    note = None
    if (fmt == "JPEG") != path.lower().endswith((".jpg", ".jpeg")):
        note = f"{fmt} files named {Path(path).suffix}"  # decoded by content, not by name
    elif mode != "RGB":
        note = f"{mode} images converted to RGB"
    return None, width, height, note


def has_jpeg_end(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - TAIL_BYTES, 0))
        return JPEG_EOI in f.read()


def class_folders(root: Path) -> list[str]:
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"data path is not a folder: {root}")
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except PermissionError as e:
        raise PermissionError(f"cannot read data folder {root}: {e}") from e
    if not names:
        raise BadDataError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    return names


def scan_image_folder(root: str | os.PathLike, classes: list[str] | None = None, check: str = "header",
                      skip_bad: bool = False, workers: int | None = None,
                      progress: bool = True) -> ImageIndex:
    """Index `root`, checking every file. `classes` fixes the label order (eval uses the
    training classes); by default it is the sorted list of class folders."""
    if check not in ("header", "full"):
        raise ValueError(f"check must be 'header' or 'full', got {check!r}")
    root = Path(root)
    found = class_folders(root)
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BadDataError(f"{root} has class folders that the class list lacks: {unknown[:10]}")

    skipped: dict[str, list[str]] = {}
    candidates, candidate_labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []
        images = [e.path for e in files if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        others = [e.path for e in files if e.is_file() and not e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if others:  # torchvision's ImageFolder ignores them too; we also say so
            skipped.setdefault("files without an image extension", []).extend(others)
        if not images and name in found:
            if not skip_bad:
                raise BadDataError(f"class folder {folder} holds no images (use --skip-bad to keep "
                                   "the class with no samples)")
            skipped.setdefault("empty class folders", []).append(str(folder))
        candidates += images
        candidate_labels += [label] * len(images)

    results = run_checks(candidates, check, workers, progress)
    notes: Counter = Counter()
    bad: list[tuple[str, str]] = []
    keep = []
    for i, (problem, _, _, note) in enumerate(results):
        if problem:
            bad.append((candidates[i], problem))
        else:
            keep.append(i)
            if note:
                notes[note] += 1
    if bad and not skip_bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise BadDataError(f"{len(bad)} bad image file(s) under {root}:\n{listing}{more}\n"
                           "Remove them, or pass --skip-bad to leave them out (they are counted).")
    for path, why in bad:
        skipped.setdefault(why.split(" (")[0], []).append(path)
    if not keep:
        raise BadDataError(f"no usable images under {root}")
    return ImageIndex(
        root=str(root), classes=classes,
        paths=[candidates[i] for i in keep],
        labels=np.asarray([candidate_labels[i] for i in keep], dtype=np.int64),
        sizes=np.asarray([results[i][1:3] for i in keep], dtype=np.int64).reshape(-1, 2),
        skipped=skipped, notes=notes)


def run_checks(paths: list[str], check: str, workers: int | None, progress: bool) -> list:
    fn = partial(check_image, full=check == "full")
    bar = dict(total=len(paths), desc=f"scan ({check})", unit="img", disable=not progress, leave=False)
    if len(paths) < PARALLEL_SCAN_FROM or workers == 0:
        return [fn(p) for p in tqdm(paths, **bar)]
    with Pool(workers or os.cpu_count()) as pool:
        return list(tqdm(pool.imap(fn, paths, chunksize=256), **bar))
