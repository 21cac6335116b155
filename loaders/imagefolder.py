"""Index of an ImageNet-layout split folder (root/<class>/<image>), with its bad files found.

Every backend starts from this index: paths, labels, image sizes (the crop sampler needs
them) and the class list. Scanning catches what would otherwise surface as a decoder crash
deep inside a worker, hours into a run: each bad file is named, and either fails the scan
or (with skip_bad) is left out and counted.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from loaders.imagefile import (
    HEAD_BYTES,
    JPEG_SOI,
    Header,
    ImageTooLarge,
    file_reader,
    has_end_marker,
    jpeg_header,
    open_image,
    pillow_header,
    too_large,
)
from loaders.workpool import pool_results

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
PARALLEL_SCAN_FROM = 2000  # below this, a process pool costs more than it saves
SCAN_CHUNK = 1024  # files per task sent to a scan process: fewer round trips than one per file


class BadDataError(ValueError):
    """A data folder holds files or folders the loaders cannot use."""


class PathList(Sequence):
    """The index's file paths as one byte buffer of names relative to the root, with offsets.

    Two arrays instead of a million str objects: they load from the stored index in one read,
    and forked loader workers read them without touching reference counts, so the pages stay
    shared instead of being copied into every worker as the epochs go by."""

    def __init__(self, root: str, names: np.ndarray, offsets: np.ndarray):
        self.prefix = os.path.join(root, "")
        self.names = names  # (bytes,) uint8: every relative name, os.fsencode'd, back to back
        self.offsets = offsets  # (N + 1,) int64: name i is names[offsets[i]:offsets[i + 1]]

    @classmethod
    def of(cls, root: str, relative: list[str]) -> PathList:
        encoded = [os.fsencode(name) for name in relative]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(root, np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, i: int) -> str:
        return os.fsdecode(self.names[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def __getitem__(self, i) -> str:
        """The path as Python spells a file name: bytes that are not UTF-8 become lone surrogates
        (os.fsdecode), which open() accepts and str.encode() refuses."""
        return self.prefix + self.relative(self.position(i))

    def encoded(self, i) -> bytes:
        """The path as the file system holds it, for libraries that open files by bytes (DALI)."""
        i = self.position(i)
        return os.fsencode(self.prefix) + self.names[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def position(self, i) -> int:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"path {i} of {len(self)}")
        return i % len(self)


@dataclass
class ImageIndex:
    root: str
    classes: list[str]
    paths: PathList
    labels: np.ndarray  # (N,) int64
    sizes: np.ndarray  # (N, 2) int32: width, height as stored (the EXIF orientation not applied)
    orientations: np.ndarray | None = None  # (N,) uint8 EXIF orientation tags (1: none); None: all 1
    unmarked_cmyk: np.ndarray | None = None  # (N,) bool: CMYK JPEGs without Adobe's marker; None: none
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths left out
    notes: Counter = field(default_factory=Counter)  # handled oddities: CMYK, grayscale, PNG in .JPEG

    def __len__(self) -> int:
        return len(self.labels)

    def skipped_counts(self) -> dict[str, int]:
        return {why: len(paths) for why, paths in self.skipped.items()}

    def without(self, positions: list[int], why: str) -> ImageIndex:
        """The index less the images at `positions`, counted as skipped for `why`."""
        keep = np.setdiff1d(np.arange(len(self)), positions)
        if not len(keep):
            raise BadDataError(f"no usable images under {self.root}")
        skipped = {reason: list(paths) for reason, paths in self.skipped.items()}
        skipped.setdefault(why, []).extend(self.paths[i] for i in positions)
        paths = PathList.of(self.root, [self.paths.relative(i) for i in keep])
        orientations = None if self.orientations is None else self.orientations[keep]
        unmarked = None if self.unmarked_cmyk is None else self.unmarked_cmyk[keep]
        return replace(
            self,
            paths=paths,
            labels=self.labels[keep],
            sizes=self.sizes[keep],
            orientations=orientations,
            unmarked_cmyk=unmarked,
            skipped=skipped,
        )

    def report(self) -> str:
        """One line on what the scan found, for logs and run summaries."""
        parts = [f"{len(self)} images in {len(self.classes)} classes under {self.root}"]
        parts += [f"{n} {what} (handled)" for what, n in sorted(self.notes.items())]
        parts += [f"skipped {len(p)} {why}" for why, p in sorted(self.skipped.items())]
        return "; ".join(parts)


UNREAD = (0, 0, None, 1, False)  # what check_image says of a file it cannot read, past the problem


def check_image(
    path: str, full: bool, formats: frozenset[str] | None = None
) -> tuple[str | None, int, int, str | None, int, bool]:
    """(problem or None, width, height, note or None, EXIF orientation, CMYK without Adobe's
    marker) for one file. `formats`: the Pillow format names the backend decodes (None: whatever
    Pillow opens)."""
    try:
        header = checked_header(path, full, formats)
    except ImageTooLarge as e:
        return e.why, *UNREAD
    except FileNotFoundError as e:
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)})", *UNREAD
        return f"unreadable image ({e})", *UNREAD
    except OSError as e:  # PIL's UnidentifiedImageError and truncation errors are OSErrors
        return f"unreadable image ({e})", *UNREAD
    if isinstance(header, str):
        return header, *UNREAD
    note = None
    if (header.format == "JPEG") != path.lower().endswith((".jpg", ".jpeg")):
        note = f"{header.format} files named {Path(path).suffix}"  # decoded by content, not by name
    elif header.unmarked_cmyk:
        note = "CMYK JPEGs without Adobe's marker, read as inverted (as Pillow does)"
    elif header.mode != "RGB":
        note = f"{header.mode} images converted to RGB"
    return None, header.width, header.height, note, header.orientation, header.unmarked_cmyk


def checked_header(path: str, full: bool, formats: frozenset[str] | None) -> Header | str:
    """The file's header, or what is wrong with it (raises OSError where it cannot be read)."""
    fd = os.open(path, os.O_RDONLY)  # a descriptor and positioned reads: no Python buffer to set up
    try:
        return header_of(fd, path, full, formats)
    finally:
        os.close(fd)


def header_of(fd: int, path: str, full: bool, formats: frozenset[str] | None) -> Header | str:
    size = os.fstat(fd).st_size
    if size == 0:
        return "empty file"
    head = os.pread(fd, HEAD_BYTES, 0)
    read = file_reader(fd, head)
    header = jpeg_header(read) if head[:2] == JPEG_SOI else None
    if header is None:  # not a JPEG, or one this parser cannot follow
        with open(path, "rb") as f:
            header = pillow_header(f, path)
    if why := too_large(header.width, header.height):
        return why
    if formats is not None and header.format not in formats:
        return f"format the loader cannot decode ({header.format}; it decodes {', '.join(sorted(formats))})"
    if full:
        with open_image(path) as img:
            img.load()
    elif header.format == "JPEG" and not has_end_marker(read, size, header.data_start):
        return "truncated JPEG (no end-of-image marker)"
    return header


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


def scan_image_folder(
    root: str | os.PathLike,
    classes: list[str] | None = None,
    check: str = "header",
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    formats: frozenset[str] | None = None,
) -> ImageIndex:
    """Index `root`, checking every file. `classes` fixes the label order (eval uses the
    training classes); by default it is the sorted list of class folders. `formats`: the
    image formats (Pillow's names) the backend decodes; None accepts whatever Pillow opens."""
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
        images, others, broken = class_listing(root / name)
        if others:  # torchvision's ImageFolder ignores them too; we also say so
            skipped.setdefault("files without an image extension", []).extend(others)
        if not images and not broken and name in found:
            if not skip_bad:
                raise BadDataError(
                    f"class folder {root / name} holds no images (use --skip-bad to keep the class with no samples)"
                )
            skipped.setdefault("empty class folders", []).append(str(root / name))
        candidates += images + broken
        candidate_labels += [label] * (len(images) + len(broken))

    results = run_checks(candidates, check, workers, progress, formats)
    notes: Counter = Counter()
    bad: list[tuple[str, str]] = []
    keep = []
    for i, (problem, _, _, note, _, _) in enumerate(results):
        if problem:
            bad.append((candidates[i], problem))
        else:
            keep.append(i)
            if note:
                notes[note] += 1
    if bad and not skip_bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise BadDataError(
            f"{len(bad)} bad image file(s) under {root}:\n{listing}{more}\n"
            "Remove them, or pass --skip-bad to leave them out (they are counted)."
        )
    for path, why in bad:
        skipped.setdefault(why.split(" (")[0], []).append(path)
    if not keep:
        raise BadDataError(f"no usable images under {root}")
    start = len(str(root)) + 1
    return ImageIndex(
        root=str(root),
        classes=classes,
        paths=PathList.of(str(root), [candidates[i][start:] for i in keep]),
        labels=np.asarray([candidate_labels[i] for i in keep], dtype=np.int64),
        sizes=np.asarray([results[i][1:3] for i in keep], dtype=np.int32).reshape(-1, 2),
        orientations=np.asarray([results[i][4] for i in keep], dtype=np.uint8),
        unmarked_cmyk=np.asarray([results[i][5] for i in keep], dtype=bool),
        skipped=skipped,
        notes=notes,
    )


def class_listing(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(image files, other files, broken symbolic links) of a class folder, sorted by name.
    A broken link with an image extension is a bad image (the checks name it); subfolders
    are not searched."""
    if not folder.is_dir():
        return [], [], []
    images, others, broken = [], [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        is_image = entry.name.lower().endswith(IMAGE_EXTENSIONS)
        if entry.is_file():  # the directory entry's type: no stat for a regular file
            (images if is_image else others).append(entry.path)
        elif entry.is_symlink() and not entry.is_dir():
            (broken if is_image else others).append(entry.path)
    return images, others, broken


def check_chunk(paths: list[str], full: bool, formats: frozenset[str] | None) -> list:
    return [check_image(p, full, formats) for p in paths]


def run_checks(
    paths: list[str], check: str, workers: int | None, progress: bool, formats: frozenset[str] | None = None
) -> list:
    fn = partial(check_chunk, full=check == "full", formats=formats)
    chunks = [paths[i : i + SCAN_CHUNK] for i in range(0, len(paths), SCAN_CHUNK)]
    bar = tqdm(total=len(paths), desc=f"scan ({check})", unit="img", disable=not progress, leave=False)
    results = []
    with bar:
        if len(paths) < PARALLEL_SCAN_FROM or workers == 0:
            for chunk in chunks:
                results += fn(chunk)
                bar.update(len(chunk))
            return results
        for done in pool_results(fn, chunks, workers or os.cpu_count(), lambda c: f"the files {c[0]} to {c[-1]}"):
            results += done
            bar.update(len(done))
    return results


def add_scan_arguments(parser: argparse.ArgumentParser, check: str, check_note: str, counted_in: str) -> None:
    """--skip-bad, --check and --progress of the commands that scan and write a data set."""
    parser.add_argument("--skip-bad", action="store_true", help=f"leave out bad images (counted in {counted_in})")
    parser.add_argument(
        "--check", choices=("header", "full"), default=check, help=f"image check (default: %(default)s; {check_note})"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars (off when not a terminal or when CI is set)",
    )
