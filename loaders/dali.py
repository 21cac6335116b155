"""DALI backend: ImageFolder JPEGs read, decoded and resampled by NVIDIA DALI, on a GPU
(device="mixed": nvJPEG and the hardware JPEG decoder where the GPU has one) or on the CPU.

The main process plans each epoch exactly as the Pillow backend does (loaders/plan.py: order
from (seed, epoch) and the rank's shard, the size policy's steps, torchvision-semantics crop
boxes, flips) and hands each planned batch to one DALI pipeline built once: file names, crop
windows, flips and the output side enter through `external_source`, so a new epoch, a new
resolution or a new batch size (MixSize) rebuilds nothing. Inside DALI:

  read the file -> decode only the region the crop needs (decoders.image_slice: ROI decoding,
  fused with the crop) -> resample the crop box to K x K (fn.resize with a fractional ROI, linear
  + antialiased like Pillow's bilinear) -> flip + normalise (crop_mirror_normalize) to fp16 on a
  GPU or fp32 on the CPU, layout HWC. With colour jitter, DALI flips only and returns uint8:
  the planned factors are applied by the shared normalisation on the device (pipeline/jitter.py).

The crop box is the train RandomResizedCrop box or the eval box of Resize(K/0.875) +
CenterCrop(K) mapped back to the source (pipeline/transforms.py), so eval resamples once. The
decoded region is the box plus the filter's reach, so the box edges are filtered from real
neighbouring pixels, as Pillow does: both backends agree within a grey level (tests/test_dali.py
measures where they do not).

Crop windows are planned here rather than drawn by decoders.image_random_crop because DALI
seeds its random operators once, when the pipeline is built: reseeding augmentation from
(seed, epoch) in set_epoch would need a rebuild per epoch, and DALI's window sampler is not
torchvision's (aspect drawn uniformly on [3/4, 4/3] or its inverse instead of log-uniformly,
and a centred square as fall-back). Decoding stays fused with the crop.

The HWC batch DALI returns is viewed by torch as NCHW in channels-last memory format through
DLPack: no copy. That is safe because DALI's default (dynamic) executor hands out output buffers
it does not reuse.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from nvidia.dali import Pipeline, fn, types
    from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor
except ImportError as e:  # never fall back to another backend silently
    raise ImportError(
        "the dali loader needs NVIDIA DALI, which is not installed here. Install it with "
        "`pip install -c constraints.txt -e '.[dali]'` (package nvidia-dali-cuda130; `make test` "
        "installs it), or pick another --loader."
    ) from e

from loaders.base import IMAGENET_MEAN, IMAGENET_STD, LoaderConfig, jitter_plan, normalised
from loaders.imagefile import too_large
from loaders.imagefolder import BadDataError, ImageIndex, check_image
from loaders.indexcache import RESCAN_ENV
from loaders.orientation import turned_crops
from loaders.plan import BatchTask, decode_regions, plan_epoch
from loaders.recode import PillowCopies

PREFETCH = 2  # batches DALI prepares while the trainer consumes one


def dali_device_id(device: torch.device) -> int | None:
    """DALI's device_id: None runs every operator on the CPU; a CUDA ordinal runs the mixed path."""
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        raise ValueError(f"the dali loader runs on cpu or cuda devices, not {device}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"dali loader on {device}: no CUDA GPU is visible to PyTorch (use --device cpu)")
    return device.index if device.index is not None else torch.cuda.current_device()


def dali_dtype(cfg: LoaderConfig):
    """uint8 when the batch is jittered and normalised after DALI; else fp16 on a GPU under AMP
    (DALI has no bf16: a bf16 run casts on the device), else fp32."""
    if cfg.color_jitter:
        return types.UINT8
    half = cfg.device.type == "cuda" and cfg.dtype in (torch.float16, torch.bfloat16)
    return types.FLOAT16 if half else types.FLOAT


def yx(boxes: np.ndarray, columns: list[int]) -> np.ndarray:
    """Two columns of (x, y, w, h) rows swapped into DALI's (y, x) order of HWC shapes."""
    return np.ascontiguousarray(boxes[:, columns[::-1]], dtype=np.float32)


class BatchFeed:
    """The external_source callback: DALI's inputs for planned batch number `info.iteration`
    of the current epoch."""

    def __init__(self, index: ImageIndex):
        self.paths = index.paths
        self.sizes = index.sizes
        self.unmarked = index.unmarked_cmyk if index.unmarked_cmyk is not None else np.zeros(len(index), bool)
        self.copies = PillowCopies()  # DALI reads CMYK without Adobe's marker uninverted (loaders/recode.py)
        self.tasks: list[BatchTask] = []

    def encoded_path(self, i: int) -> bytes:
        return self.copies.path(self.paths[i]) if self.unmarked[i] else self.paths.encoded(i)

    def __call__(self, info):
        if info.iteration >= len(self.tasks):
            raise StopIteration
        task = self.tasks[info.iteration]
        names = [np.frombuffer(self.encoded_path(i), dtype=np.uint8) for i in task.indices]
        regions = decode_regions(task.boxes, self.sizes[task.indices], task.res)
        roi = task.boxes.astype(np.float64)
        roi[:, :2] -= regions[:, :2]  # the box in the decoded region's coordinates
        roi[:, 2:] += roi[:, :2]  # (x0, y0, x1, y1)
        size = np.full((len(task.indices), 2), task.res, dtype=np.float32)
        return (
            names,
            yx(regions, [0, 1]),
            yx(regions, [2, 3]),
            yx(roi, [0, 1]),
            yx(roi, [2, 3]),
            task.own_flips().astype(np.int32),
            size,
        )


def build_pipeline(feed: BatchFeed, device_id: int | None, threads: int, max_batch: int, out_dtype) -> Pipeline:
    decoder = "cpu" if device_id is None else "mixed"
    pipe = Pipeline(
        batch_size=max_batch, num_threads=threads, device_id=device_id, prefetch_queue_depth=PREFETCH, exec_dynamic=True
    )
    with pipe:
        names, start, extent, roi_start, roi_end, mirror, size = fn.external_source(
            feed, num_outputs=7, batch=True, batch_info=True
        )
        encoded = fn.io.file.read(names)
        # The size each header says now: a file changed since the scan is caught after its batch (its
        # decode stays within the region planned from the scanned size, so a bomb is never decoded whole).
        shapes = fn.peek_image_shape(encoded, adjust_orientation=False)
        images = fn.decoders.image_slice(
            encoded,
            start,
            extent,
            axis_names="HW",
            normalized_anchor=False,
            normalized_shape=False,
            device=decoder,
            output_type=types.RGB,
            adjust_orientation=False,
        )  # boxes are in the stored frame; crops are turned per the EXIF tag afterwards (loaders/orientation.py)
        # Linear + antialias is Pillow's BILINEAR: a triangle filter widened when shrinking.
        images = fn.resize(
            images, size=size, roi_start=roi_start, roi_end=roi_end, interp_type=types.INTERP_LINEAR, antialias=True
        )
        mean, std = (
            (0.0, 1.0)
            if out_dtype == types.UINT8
            else (  # uint8: values kept for the jitter
                [255 * m for m in IMAGENET_MEAN],
                [255 * s for s in IMAGENET_STD],
            )
        )
        pipe.set_outputs(
            fn.crop_mirror_normalize(images, mirror=mirror, dtype=out_dtype, output_layout="HWC", mean=mean, std=std),
            shapes,
        )
    pipe.build()
    return pipe


def decode_failure(error: Exception, tasks: list[BatchTask], index: ImageIndex) -> BadDataError:
    """DALI names neither the file nor (always) the sample that failed: find the culprits among
    the batches in flight by decoding them fully with Pillow."""
    paths = list(dict.fromkeys(index.paths[i] for task in tasks for i in task.indices))
    bad = [(p, why) for p in paths if (why := check_image(p, full=True)[0])]
    said = str(error).split("encountered:")[-1].strip().splitlines()[0]
    if bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad)
        return BadDataError(
            f"DALI could not decode {len(bad)} file(s):\n{listing}\nDALI said: {said}\n"
            "Scan with --check full (and --skip-bad to leave such files out)."
        )
    return BadDataError(
        f"DALI failed on a batch of {len(paths)} files that Pillow decodes "
        f"({paths[0]} ... {paths[-1]}); DALI said: {said}"
    )


def changed_since_scan(shapes: np.ndarray, indices: np.ndarray, index: ImageIndex) -> BadDataError | None:
    """The error naming the files of a batch whose header size ((B, 3) HWC shapes) is no longer
    the scanned one: their crops were planned for another image."""
    now = shapes[:, 1::-1]  # (width, height)
    moved = np.flatnonzero((now != index.sizes[indices]).any(axis=1))
    if not len(moved):
        return None
    listing = "\n".join(
        f"  {index.paths[indices[m]]}: now {w} x {h}"
        + (f", {why}" if (why := too_large(w, h)) else "")
        + f"; the index says {index.sizes[indices[m]][0]} x {index.sizes[indices[m]][1]}"
        for m in moved
        for w, h in [now[m].tolist()]
    )
    return BadDataError(
        f"{len(moved)} file(s) changed since the scan:\n{listing}\nScan again ({RESCAN_ENV}=1 or --rescan)."
    )


class DaliLoader:
    # What fn.decoders.image_slice decodes (by content), in Pillow's format names: the scan finds the rest.
    decodes = frozenset({"JPEG", "JPEG2000", "TIFF", "PNG", "BMP", "PPM", "WEBP"})

    def __init__(self, cfg: LoaderConfig, index: ImageIndex):
        self.cfg = cfg
        self.index = index
        self.classes = index.classes
        self.skipped = index.skipped_counts()
        self.device_id = dali_device_id(cfg.device)
        self.threads = max(cfg.workers, 1)
        where = "cpu" if self.device_id is None else f"mixed (nvJPEG) on cuda:{self.device_id}"
        self.summary = f"dali, {where}, {self.threads} threads: {index.report()}"
        self.labels = torch.from_numpy(index.labels)
        self.feed = BatchFeed(index)
        self.pipe: Pipeline | None = None
        self.max_batch = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.feed.tasks = plan_epoch(self.cfg, self.index, epoch)
        self.jitter = jitter_plan(self.cfg, epoch, [len(t.indices) for t in self.feed.tasks])
        largest = max((len(t.indices) for t in self.feed.tasks), default=1)
        if largest > self.max_batch:  # DALI sizes its buffers for a maximum batch
            self.max_batch, self.pipe = largest, None

    def __len__(self) -> int:
        return len(self.feed.tasks)

    def __iter__(self):
        if self.pipe is None:
            self.pipe = build_pipeline(self.feed, self.device_id, self.threads, self.max_batch, dali_dtype(self.cfg))
        pipe, self.pipe = self.pipe, None  # an epoch left unfinished leaves batches queued in DALI
        tasks = self.feed.tasks
        stream = torch.cuda.current_stream(self.cfg.device) if self.device_id is not None else None
        for k, labels in enumerate(self.epoch_labels(tasks)):
            try:
                out, shapes = pipe.run(stream)
            except RuntimeError as e:
                raise decode_failure(e, tasks[k : k + PREFETCH + 1], self.index) from e
            if changed := changed_since_scan(np.asarray(shapes.as_tensor()), tasks[k].indices, self.index):
                raise changed
            images = to_torch_tensor(out.as_tensor(), copy=False).permute(0, 3, 1, 2)
            images = turned_crops(images, tasks[k].orientations, tasks[k].flips)
            if self.cfg.color_jitter:
                images = normalised(images, self.cfg.dtype, self.jitter[k])
            yield images.to(self.cfg.dtype), labels
        pipe.reset()
        self.pipe = pipe

    def epoch_labels(self, tasks: list[BatchTask]) -> tuple[torch.Tensor, ...]:
        """Each batch's labels, views of one device tensor copied once per epoch: a batch's labels
        indexed from the host table would sit in pageable memory, from which a `non_blocking`
        copy waits for the GPU at every step."""
        ids = np.concatenate([np.zeros(0, np.int64), *(t.indices for t in tasks)])
        return self.labels[torch.from_numpy(ids)].to(self.cfg.device).split([len(t.indices) for t in tasks])
