"""Pillow backend (pip wheels only): ImageFolder JPEGs decoded by libjpeg-turbo through
simplejpeg (other formats by Pillow), crops resized by torch or Pillow, in worker threads (or
processes). Without simplejpeg (the lent GPU machine's image has none) Pillow decodes the JPEGs
too, with the same libjpeg-turbo and the same pixels, and the loader's summary says so.

The main process plans the epoch (order, sizes, crop boxes, flips, colour jitter); each worker turns one
planned batch into a uint8 NHWC array. Workers are pure functions of their task, so they
persist across epochs and the result does not depend on how many there are. Normalisation
and the channels-last layout happen on the device, on a quarter of the bytes.

Workers are threads of the main process by default: simplejpeg, Pillow and torch release the
GIL while they decode and resample, which is nearly all of a worker's time, so threads use the cores as processes
do, and a batch reaches the trainer without being sent between processes (DataLoader worker
processes pass each batch through shared memory and a pipe, and the main process unpickles
it: with threads more of the single-core work rate reaches the trainer; the loader benchmark's
figures are in docs/results/measured-notes.md).
"""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from loaders.base import LoaderConfig, jitter_plan, to_model_input
from loaders.imagefile import JPEG_SOI, ImageTooLarge, check_size, encoded_header
from loaders.imagefolder import ImageIndex
from loaders.orientation import turned_crops
from loaders.plan import BatchTask, plan_epoch

try:
    import simplejpeg
except ImportError:  # an optional speed-up: Pillow's decoder gives the same pixels
    simplejpeg = None

PREFETCH_PER_WORKER = 2  # batches in flight per worker, as DataLoader's default prefetch_factor
DCT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg can apply while decoding (Image.draft)
TURBO_COLORSPACES = ("Gray", "YCbCr", "RGB")  # simplejpeg converts these to RGB as Pillow does


def dct_scale(box_w: float, box_h: float, res: int) -> int:
    """The largest JPEG DCT reduction at which the box still spans at least `res` pixels on
    both sides, so the resize to res x res still only shrinks (1 when the crop is upsampled)."""
    side = min(box_w, box_h)
    return next((s for s in DCT_SCALES if side / s >= res), 1)


def decode_crop(
    path: str, box, res: int, reduce: bool = True, turbo: bool = True, resampler: str = "torch", flip: bool = False
) -> np.ndarray:
    """(res, res, 3) uint8: the box of the image resampled to res x res (bilinear, antialiased),
    mirrored left to right if `flip`.

    With `reduce`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers the box at res x res: the IDCT then does part of the downscaling for a fraction of
    the decoding work. `resampler` "torch": the box rounded to whole decoded pixels, cropped,
    then resized by torch's uint8 kernel (torchvision's crop-then-resize; a third of Pillow's
    time). "pillow": Pillow resamples the exact fractional box and reads the pixels just
    outside it as filter support, as a full-image Resize followed by a crop would.
    """
    try:
        img, f = decoded(path, dct_scale(float(box[2]), float(box[3]), res) if reduce else 1, turbo)
        return RESIZERS[resampler](img, scaled_region(box, f), res, flip)
    except ImageTooLarge:  # names the file already
        raise
    except OSError as e:
        raise OSError(f"cannot decode {path}: {e} (scan with --check full to find such files first)") from e


def scaled_region(box, f: float) -> tuple[float, float, float, float]:
    """The (x, y, w, h) box in decoded pixels, as (x0, y0, x1, y1), for an image decoded at `f`
    times its size."""
    x, y, w, h = (float(v) for v in box)
    return x * f, y * f, (x + w) * f, (y + h) * f


def pillow_resized(img: np.ndarray | Image.Image, region, res: int, flip: bool = False) -> np.ndarray:
    """(res, res, 3) uint8: the fractional `region` (x0, y0, x1, y1) of the RGB image resampled
    by Pillow's antialiased bilinear filter, mirrored after resizing if `flip`."""
    crop = as_pillow(img).resize((res, res), Image.BILINEAR, box=region)
    return np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop)


def torch_resized(img: np.ndarray | Image.Image, region, res: int, flip: bool = False) -> np.ndarray:
    """(res, res, 3) uint8: `region` (x0, y0, x1, y1 in pixels, rounded to the nearest whole
    pixels, at least one) of the RGB image resized by torch's antialiased bilinear kernel,
    which computes Pillow's filter in channels-last uint8 SIMD code; mirrored before resizing
    if `flip` (the filter is symmetric, so that equals mirroring after)."""
    pixels = np.array(img) if isinstance(img, Image.Image) else img  # writable, as torch wants
    height, width = pixels.shape[:2]
    x0, y0 = (min(round(v), n - 1) for v, n in zip(region[:2], (width, height)))
    x1, y1 = (max(min(round(v), n), v0 + 1) for v, n, v0 in zip(region[2:], (width, height), (x0, y0)))
    crop = torch.from_numpy(pixels[y0:y1, x0:x1])
    # One copy of the small crop, mirrored or not, into contiguous (1, H, W, 3): viewed as NCHW
    # that is channels-last, which the kernel reads and writes in half the time of other layouts.
    crop = (crop.flip(1) if flip else crop.contiguous())[None].permute(0, 3, 1, 2)
    resized = F.interpolate(crop, size=(res, res), mode="bilinear", antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


RESIZERS = {"torch": torch_resized, "pillow": pillow_resized}  # LoaderConfig.resampler, once resolved


def decoded(path: str, scale: int, turbo: bool = True) -> tuple[np.ndarray | Image.Image, float]:
    """The image in RGB ((H, W, 3) uint8 array or Pillow image), decoded at 1/scale of its size
    where the format allows (JPEG), and the factor from source to decoded pixel coordinates."""
    with open(path, "rb") as f:
        data = f.read()
    # Both refuse a decompression bomb from its header: the file may have changed since the scan.
    if turbo and (found := turbo_decoded(data, scale, path)):
        return found
    encoded_header(data, path)
    return pillow_decoded(data, scale)


def turbo_decoded(data: bytes, scale: int, path: str) -> tuple[np.ndarray, float] | None:
    """libjpeg-turbo through simplejpeg: the same pixels as Pillow's decoder (also libjpeg-turbo)
    for about a tenth less CPU time per crop. None where Pillow decodes instead: not a JPEG,
    CMYK, over Pillow's pixel limit (Pillow enforces it), or anything libjpeg complains about
    (Pillow tolerates its warnings, and names real errors), or simplejpeg not installed.
    Raises ImageTooLarge (naming `path`) for a header over MAX_PIXELS."""
    if simplejpeg is None or not data.startswith(JPEG_SOI):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        check_size(path, width, height)
        if colorspace not in TURBO_COLORSPACES or width * height > (Image.MAX_IMAGE_PIXELS or float("inf")):
            return None
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=-(-height // scale), min_width=-(-width // scale))
    except ValueError:
        return None
    return pixels, 1 / scale


def as_pillow(img: np.ndarray | Image.Image) -> Image.Image:
    return img if isinstance(img, Image.Image) else Image.fromarray(img)


def pillow_decoded(data: bytes, scale: int) -> tuple[Image.Image, float]:
    img = Image.open(io.BytesIO(data))
    full_width = img.width
    drafted = img.draft("RGB", (img.width // scale, img.height // scale)) if scale > 1 else None
    # draft gives the full image's extent in decoded pixels; None: not a JPEG, decoded at full size
    f = drafted[1][2] / full_width if drafted is not None else 1.0
    return img.convert("RGB") if img.mode != "RGB" else img, f


class PlannedBatches(Dataset):
    """Maps a BatchTask to (uint8 images (B, K, K, 3), int64 labels (B,))."""

    def __init__(
        self, index: ImageIndex, reduce: bool = True, turbo: bool = True, resampler: str = "torch", pin: bool = False
    ):
        self.paths = index.paths
        self.labels = torch.from_numpy(index.labels)
        self.reduce, self.turbo, self.resampler = reduce, turbo, resampler
        self.pin = pin  # worker threads feeding a GPU write straight into pinned memory: the copy is asynchronous

    def __getitem__(self, task: BatchTask):
        images = torch.empty((len(task.indices), task.res, task.res, 3), dtype=torch.uint8, pin_memory=self.pin)
        out = images.numpy()
        for slot, (i, box, flip) in enumerate(zip(task.indices, task.boxes, task.own_flips())):
            out[slot] = decode_crop(self.paths[i], box, task.res, self.reduce, self.turbo, self.resampler, flip)
        turned_crops(images, task.orientations, task.flips, dims=(0, 1))
        labels = self.labels[torch.from_numpy(task.indices)]
        return images, labels.pin_memory() if self.pin else labels


class EpochTasks(Sampler):
    """The current epoch's tasks; lives in the main process, so persistent workers see each
    new epoch's plan without being restarted."""

    def __init__(self):
        self.tasks: list[BatchTask] = []

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self):
        return len(self.tasks)


class ThreadedBatches:
    """`make[task]` for each task of `tasks`, in order, run by a pool of threads that keeps
    `ahead` batches in flight; with no threads, made in the caller's thread on demand."""

    def __init__(self, make: Dataset, tasks: EpochTasks, threads: int, ahead: int):
        self.make, self.tasks, self.ahead = make, tasks, ahead
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="pil-worker") if threads else None

    def __iter__(self):
        if self.pool is None:
            yield from (self.make[task] for task in self.tasks)
            return
        todo = iter(self.tasks)
        pending = deque(self.pool.submit(self.make.__getitem__, task) for task in islice(todo, self.ahead))
        while pending:
            batch = pending.popleft().result()
            pending.extend(self.pool.submit(self.make.__getitem__, task) for task in islice(todo, 1))
            yield batch


def decoder_note(cfg: LoaderConfig) -> str:
    """What the summary says, once, when the faster JPEG decoder asked for is missing."""
    if cfg.turbo_decode and simplejpeg is None:
        return ", JPEGs decoded by Pillow (simplejpeg is not installed)"
    return ""


class PilLoader:
    def __init__(self, cfg: LoaderConfig, index: ImageIndex):
        self.cfg = cfg
        self.index = index
        self.classes = index.classes
        workers = f"{cfg.workers} worker {'threads' if cfg.worker_threads else 'processes'}"
        self.summary = f"pil, {workers}{decoder_note(cfg)}: {index.report()}"
        self.skipped = index.skipped_counts()
        self.sampler = EpochTasks()
        self.loader = self.batches()
        self.set_epoch(0)

    def batches(self):
        """Iterable over the epoch's made batches: a thread pool, or DataLoader worker processes."""
        if self.cfg.worker_threads:
            return ThreadedBatches(
                self.batch_maker(), self.sampler, self.cfg.workers, ahead=PREFETCH_PER_WORKER * max(self.cfg.workers, 1)
            )
        return DataLoader(
            self.batch_maker(),
            sampler=self.sampler,
            batch_size=None,
            num_workers=self.cfg.workers,
            persistent_workers=self.cfg.workers > 0,
            prefetch_factor=PREFETCH_PER_WORKER if self.cfg.workers else None,
            pin_memory=self.cfg.device.type == "cuda",
        )

    def batch_maker(self) -> Dataset:
        """What the workers run on each planned batch (the nvjpeg backend swaps in its own)."""
        pin = self.cfg.device.type == "cuda" and self.cfg.worker_threads  # DataLoader pins for processes
        resampler = self.cfg.resampler
        if resampler == "auto":
            resampler = "torch" if self.cfg.augment == "rrc" else "pillow"
        return PlannedBatches(self.index, self.cfg.reduced_decode, self.cfg.turbo_decode, resampler, pin)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.tasks = plan_epoch(self.cfg, self.index, epoch)
        self.jitter = jitter_plan(self.cfg, epoch, [len(t.indices) for t in self.sampler.tasks])

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for (images, labels), jitter in zip(self.loader, self.jitter):
            yield (
                to_model_input(images, self.cfg.device, self.cfg.dtype, jitter),
                labels.to(self.cfg.device, non_blocking=True),
            )
