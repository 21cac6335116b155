"""ImageFolder split -> `.beton` file, with FFCV's own DatasetWriter, and the class list beside it.

The split is indexed (and its bad files found) by `scan_image_folder`, the same scanner the
other backends use, so labels agree across backends and a bad file fails the write with its
name (or, with skip_bad, is left out and counted in the class map's `skipped`). The write
decodes every image, so the scan decodes them all first (`check="full"` by default): every bad
file is named in one listing before anything is written. FFCV's writer processes are watched
(watch.py): a file that fails there anyway (changed since the scan) ends the write with its
name, or with skip_bad is left out, counted, and the rest written again.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from loaders.ffcv.watch import NOT_STARTED, WriteFailure, watched_writer
from loaders.imagefile import open_image
from loaders.imagefolder import BadDataError, ImageIndex
from loaders.orientation import codes, oriented
from pipeline.reuse import write_json, written

WRITE_MODES = ("raw", "jpg", "smart", "proportion")
FORMAT = "lowres-ffcv/1"
SKIPPED_IN_WRITE = "image the FFCV writer failed on"  # the reason counted in the class map


@dataclass(frozen=True)
class WriterSettings:
    """RGBImageField's options. The default stores JPEG q90 at most 512 px on the longer side,
    about FFCV's ImageNet recipe (500 px, q90); loaders/stored_size.py has the resolution-aware choice."""

    max_resolution: int | None = 512  # longer side stored (downscaled only); None keeps it
    write_mode: str = "jpg"  # raw pixels, JPEG, smart (JPEG above smart_threshold bytes), proportion
    jpeg_quality: int = 90
    compress_probability: float = 0.5  # share of JPEG images under write_mode proportion
    smart_threshold: int | None = None  # raw size in bytes above which write_mode smart compresses
    orientation: str = "stored"  # pixels written as stored, or turned per their EXIF tag (loaders/orientation.py)

    def __post_init__(self):
        if self.write_mode not in WRITE_MODES:
            raise ValueError(f"write mode must be one of {', '.join(WRITE_MODES)}, got {self.write_mode!r}")
        if self.max_resolution is not None and self.max_resolution <= 0:
            raise ValueError(f"max resolution must be positive, got {self.max_resolution}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.jpeg_quality}")
        if not 0 <= self.compress_probability <= 1:
            raise ValueError(f"compress probability must be in [0, 1], got {self.compress_probability}")
        if self.write_mode == "smart" and not self.smart_threshold:
            raise ValueError("write mode smart needs a smart threshold (bytes of raw pixels)")
        codes(self.orientation, None, 0)  # validates it


def class_map_path(beton: Path) -> Path:
    return beton.with_name(beton.name + ".json")


class ImageFolderSamples:
    """The indexable data set DatasetWriter reads: (RGB uint8 array, label) per image, turned per
    its EXIF tag under the orientation "apply", and at most `max_side` on its longer side."""

    def __init__(self, index: ImageIndex, max_side: int | None, orientation: str = "stored"):
        self.paths = index.paths
        self.labels = index.labels
        self.max_side = max_side
        self.turns = codes(orientation, index.orientations, len(index))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with open_image(self.paths[i]) as img:
            pixels = oriented(np.asarray(img.convert("RGB")), self.turns[i])
            return fitted(np.ascontiguousarray(pixels), self.max_side), int(self.labels[i])


def fitted(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """The image downscaled as RGBImageField's resizer does (OpenCV's area filter to the size
    times max_side / longer side, truncated), except that no side falls below 1 px: there OpenCV
    asserts (a 30000 x 3 image at 512 px) and FFCV's writer process dies. The field then stores
    the result as it is (its longer side is at most max_side)."""
    import cv2

    height, width = pixels.shape[:2]
    if max_side is None or max(width, height) <= max_side:
        return pixels
    ratio = max_side / max(width, height)
    size = np.maximum((ratio * np.array([width, height])).astype(int), 1)
    return cv2.resize(pixels, tuple(size.tolist()), interpolation=cv2.INTER_AREA)


def beton_fields(settings: WriterSettings) -> dict:
    from ffcv.fields import IntField, RGBImageField

    return {
        "image": RGBImageField(
            write_mode=settings.write_mode,
            max_resolution=settings.max_resolution,
            smart_threshold=settings.smart_threshold,
            jpeg_quality=settings.jpeg_quality,
            compress_probability=settings.compress_probability,
        ),
        "label": IntField(),
    }


def write_beton(
    index: ImageIndex,
    out: str | os.PathLike,
    settings: WriterSettings = WriterSettings(),
    workers: int = 1,
    progress: bool = False,
    skip_bad: bool = False,
) -> Path:
    """Write `index` to the .beton `out` and its class map to `out.json`, with FFCV's progress
    bar when `progress`; returns `out`. A file the writer fails on (changed since the scan) fails
    the write with its name, or with `skip_bad` is left out and counted, and the rest written again.

    Both are written under temporary names and renamed, the .beton last: a .beton that
    exists is complete and has its class map.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with written(out) as temp:
        while True:
            try:
                write_samples(index, temp, settings, max(workers, 1), progress)
                break
            except WriteFailure as failure:
                index = without_failed(index, failure, skip_bad)
        meta = {
            "format": FORMAT,
            "classes": index.classes,
            "images": len(index),
            "source": index.root,
            "settings": asdict(settings),
            "skipped": {why: len(p) for why, p in index.skipped.items()},
            "notes": dict(index.notes),
        }
        write_json(class_map_path(out), meta)
    return out


def write_samples(index: ImageIndex, path: Path, settings: WriterSettings, workers: int, progress: bool) -> None:
    """FFCV's DatasetWriter over the index, its workers watched; a failure leaves no process,
    shared memory or file behind."""
    from ffcv.writer import DatasetWriter

    writer = DatasetWriter(str(path), beton_fields(settings), num_workers=workers)
    with writer_bar(progress), watched_writer(workers) as watch:
        try:
            writer.from_indexed_dataset(ImageFolderSamples(index, settings.max_resolution, settings.orientation))
        except BaseException:
            watch.stop(writer)
            path.unlink(missing_ok=True)
            raise


def without_failed(index: ImageIndex, failure: WriteFailure, skip_bad: bool) -> ImageIndex:
    """The index less the file the writer failed on, counted as skipped; BadDataError naming the
    file unless `skip_bad`."""
    if failure.sample == NOT_STARTED:
        raise BadDataError(f"the FFCV writer failed before reading an image: {failure.said}")
    path = index.paths[failure.sample]
    if not skip_bad:
        raise BadDataError(
            f"the FFCV writer failed on {path}: {failure.said}\n"
            "Remove it, or pass --skip-bad to leave it out (it is counted)."
        )
    print(f"ffcv: left out {path} ({failure.said}); writing the rest again", file=sys.stderr, flush=True)
    return index.without([failure.sample], SKIPPED_IN_WRITE)


@contextmanager
def writer_bar(show: bool):
    """FFCV 1.0.2's DatasetWriter draws a tqdm bar whatever the output (ffcv/writer.py,
    `_write_common`); within this context it draws one only when `show`."""
    import ffcv.writer

    bar = ffcv.writer.tqdm
    ffcv.writer.tqdm = partial(bar, disable=not show)
    try:
        yield
    finally:
        ffcv.writer.tqdm = bar
