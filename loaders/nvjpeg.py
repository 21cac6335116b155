"""nvJPEG backend: GPU decoding without DALI, through TorchCodec (or torchvision's decoders).

The epoch is planned exactly as in the Pillow backend (it is a PilLoader with another batch
maker), so the crop boxes and flips are the same. On CUDA, the workers only read the
files; a producer thread of the main process decodes each batch, one ahead of the trainer and on
a CUDA stream of its own (loaders/prefetch.py), with one batched `decode_jpeg(..., device="cuda")`
call (nvJPEG) and does RandomResizedCrop / the centre crop for the whole batch with
`torchvision.ops.roi_align` to (K, K), then flips and normalises on the GPU. On the CPU the
same calls run in the workers (libjpeg-turbo + roi_align on the CPU), so the backend is fully
usable, and tested, without a GPU.

The decoder is TorchCodec's when it is installed (the `codec` extra): torchvision's image
decoders are deprecated since torchvision 0.29 and warn on every call. Without TorchCodec they
are used with that warning silenced at the call, and the loader's summary says so once.

roi_align averages ceil(box side / K) samples per output pixel and axis: an area filter,
which antialiases like Pillow's bilinear filter does when shrinking, and is plain bilinear
interpolation when enlarging. Its float input holds only each box's region of its image, in
chunks of at most CANVAS_BYTES, so one large photo in a batch cannot blow it up.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from loaders.base import LoaderConfig, to_model_input
from loaders.imagefile import JPEG_SOI, encoded_header, jpeg_header
from loaders.imagefolder import ImageIndex
from loaders.orientation import own_flips, reset_orientation, turned_crops
from loaders.pil import PilLoader
from loaders.plan import BatchTask, decode_regions
from loaders.prefetch import prefetched, to_device

CODECS = ("torchcodec", "torchvision")
CANVAS_BYTES = 256 * 2**20  # the float canvas of one roi_align call; a batch needing more is cropped in chunks
TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def default_codec() -> str:
    """TorchCodec when it loads here, else torchvision's decoders."""
    try:
        import torchcodec.decoders  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # not installed, or built for another torch
        return "torchvision"
    return "torchcodec"


@contextmanager
def torchvision_deprecation_silenced():
    """torchvision >= 0.29 warns on every decoder call (a thousand times per epoch); the loader's
    summary says once that the deprecated decoder is in use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHVISION_DEPRECATION, category=DeprecationWarning)
        yield


def decode_jpegs(data: list[torch.Tensor], device: torch.device, codec: str) -> list[torch.Tensor]:
    """JPEG files as (3, H, W) uint8 RGB tensors on `device`, in one batched call (nvJPEG on CUDA)."""
    if codec == "torchcodec":
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg(data, mode="RGB", device=device)
    from torchvision.io import ImageReadMode, decode_jpeg

    with torchvision_deprecation_silenced():
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_any(data: torch.Tensor, codec: str) -> torch.Tensor:
    """One file of any format the codec knows as a (3, H, W) uint8 RGB tensor on the CPU."""
    if codec == "torchcodec":
        from torchcodec.decoders import decode_image

        return decode_image(data, mode="RGB")
    from torchvision.io import ImageReadMode, decode_image

    with torchvision_deprecation_silenced():
        return decode_image(data, mode=ImageReadMode.RGB)


def decode_batch(
    data: list[torch.Tensor], paths: list[str], device: torch.device, codec: str = "torchvision"
) -> list[torch.Tensor]:
    """Each encoded file as a (3, H, W) uint8 RGB tensor on `device`: the JPEGs in one batched
    call (nvJPEG on CUDA), other formats (a PNG named .JPEG) and, on CUDA, JPEGs nvJPEG may not
    decode (CMYK) on the CPU. If the batched call fails, each file is decoded alone, on the CPU
    where `device` fails it (as DALI falls back), so one odd file never stops an epoch."""
    batched = [batch_decodable(d, device) for d in data]
    try:
        decoded = iter(decode_jpegs([d for d, b in zip(data, batched) if b], device, codec) if any(batched) else [])
        return [next(decoded) if b else decode_any(d, codec).to(device) for d, b in zip(data, batched)]
    except (RuntimeError, ValueError):
        return [decode_alone(d, path, device, codec) for d, path in zip(data, paths)]


def batch_decodable(data: torch.Tensor, device: torch.device) -> bool:
    """Whether the file goes to the batched JPEG decoder: a JPEG, and on CUDA one of 1 or 3
    components (nvJPEG has failed on CMYK, NVIDIA/DALI#1204)."""
    if data[:2].numpy().tobytes() != JPEG_SOI:  # a JPEG whatever its file name says
        return False
    header = jpeg_header(lambda offset, count: data[offset : offset + count].numpy().tobytes())
    return device.type == "cpu" or (header is not None and header.mode in ("RGB", "L"))


def decode_alone(data: torch.Tensor, path: str, device: torch.device, codec: str) -> torch.Tensor:
    """One file as (3, H, W) uint8 RGB on `device`: decoded there, else on the CPU; an OSError
    naming the file where neither decodes it."""
    if device.type != "cpu" and batch_decodable(data, device):
        try:
            return decode_jpegs([data], device, codec)[0]
        except (RuntimeError, ValueError):
            pass  # the CPU decoder is tried next, and names the file if it fails too
    try:
        return decode_any(data, codec).to(device)
    except (RuntimeError, ValueError) as e:
        raise OSError(f"cannot decode {path}: {e} (scan with --check full to find such files first)") from None


def read_encoded(path: str) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8))


def stored_pixels(data: torch.Tensor, path: str) -> torch.Tensor:
    """The encoded file, its EXIF orientation reset to 1 where it has one: TorchCodec applies the
    tag as it decodes, every other backend decodes the stored pixels (loaders/orientation.py).
    Its header is checked first: the file may have changed since the scan, and decode_jpeg
    knows no pixel limit."""
    header = encoded_header(memoryview(data.numpy()), path)
    if header.orientation_at >= 0 and header.orientation != 1:
        return reset_orientation(data, header.orientation_at)
    return data


def canvas_chunks(extents: list[tuple[int, int]], budget: int = CANVAS_BYTES) -> Iterator[slice]:
    """Consecutive runs of images whose float canvas (count x 3 x (H+1) x (W+1), the largest
    region of the run plus the replicated border) stays within `budget` bytes; one image per run
    at least."""
    start, height, width = 0, 0, 0
    for i, (h, w) in enumerate(extents):
        grown = max(height, h + 1), max(width, w + 1)
        if i > start and (i + 1 - start) * 3 * 4 * grown[0] * grown[1] > budget:
            yield slice(start, i)
            start, grown = i, (h + 1, w + 1)
        height, width = grown
    if extents:
        yield slice(start, len(extents))


def crop_batch(
    images: list[torch.Tensor],
    boxes: torch.Tensor,
    flips: torch.Tensor,
    res: int,
    turns: np.ndarray | None = None,
    whole: bool = False,
) -> torch.Tensor:
    """(B, res, res, 3) uint8 on the images' device: box b of image b resampled to res x res,
    turned by the EXIF code turns[b] (loaders/orientation.py) where given, then mirrored where
    flips[b]. `whole`: the eval crops, each image resized whole first (`resized_windows`)."""
    device = images[0].device
    out = resized_windows(images, boxes, res) if whole else region_crops(images, boxes, res)
    own = torch.from_numpy(own_flips(flips.numpy(force=True), turns))
    out = torch.where(to_device(own, device)[:, None, None, None], out.flip(-1), out)
    out = turned_crops(out, turns, flips.numpy(force=True), dims=(1, 2))
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resized_windows(images: list[torch.Tensor], boxes: torch.Tensor, res: int) -> torch.Tensor:
    """(B, 3, res, res) float: each image resized whole to the size its box implies (bilinear,
    antialiased, torchvision's Resize), then cut at the box. The eval crops (centre, shifted
    centre) are then torchvision's Resize + CenterCrop, where roi_align's area average over the
    box alone is another filter (docs/backends.md). One kernel per image: evaluation is not
    where the loader races the model."""
    out = []
    for img, (x, y, w, h) in zip(images, boxes.tolist()):
        sx, sy = res / w, res / h
        size = (round(img.shape[1] * sy), round(img.shape[2] * sx))
        resized = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        left, top = round(x * sx), round(y * sy)
        out.append(resized[0, :, top : top + res, left : left + res])
    return torch.stack(out)


def region_crops(images: list[torch.Tensor], boxes: torch.Tensor, res: int) -> torch.Tensor:
    """(B, 3, res, res) float: the boxes resampled by roi_align, batched over canvases of the
    decoded regions (the training crops: one call for many images)."""
    boxes = boxes.to(torch.float64).cpu()
    sizes = np.array([[img.shape[2], img.shape[1]] for img in images])
    regions = decode_regions(boxes.numpy(), sizes, res).tolist()  # reaches further than roi_align reads
    local = boxes - torch.tensor([[x, y, 0, 0] for x, y, _, _ in regions], dtype=torch.float64)
    return torch.cat(
        [
            crop_regions(
                [img[:, y : y + h, x : x + w] for img, (x, y, w, h) in zip(images[part], regions[part])],
                local[part],
                res,
            )
            for part in canvas_chunks([(h, w) for _, _, w, h in regions])
        ]
    )


def crop_regions(regions: list[torch.Tensor], boxes: torch.Tensor, res: int) -> torch.Tensor:
    """(n, 3, res, res) float: one roi_align over a zero-padded float canvas of the regions.
    Each region gets one replicated row and column so that interpolation at its far border
    reads the border pixel (as Pillow's resize does), not padding."""
    device = regions[0].device
    height = max(r.shape[1] for r in regions) + 1
    width = max(r.shape[2] for r in regions) + 1
    canvas = torch.zeros(len(regions), 3, height, width, device=device)
    for i, region in enumerate(regions):
        h, w = region.shape[1:]
        canvas[i, :, :h, :w] = region
        canvas[i, :, h, :w] = region[:, -1]
        canvas[i, :, : h + 1, w] = canvas[i, :, : h + 1, w - 1]
    boxes = to_device(boxes.to(torch.float32), device)
    rois = torch.cat(
        [
            torch.arange(len(regions), device=device, dtype=torch.float32)[:, None],
            boxes[:, :2],
            boxes[:, :2] + boxes[:, 2:],
        ],
        dim=1,
    )
    return roi_align(canvas, rois, (res, res), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class EncodedBatches(Dataset):
    """BatchTask -> (encoded files, boxes, flips, res, sample ids, labels, EXIF codes or None): the
    workers' share on CUDA, where decoding happens on the GPU in the main process."""

    def __init__(self, index: ImageIndex, codec: str, whole: bool):
        self.paths = index.paths
        self.labels = torch.from_numpy(index.labels)
        self.codec = codec
        self.whole = whole  # eval crops: resized whole, then cut (crop_batch)

    def __getitem__(self, task: BatchTask):
        ids = torch.from_numpy(task.indices)
        data = [stored_pixels(read_encoded(self.paths[i]), self.paths[i]) for i in task.indices]
        return (
            data,
            torch.from_numpy(task.boxes),
            torch.from_numpy(task.flips),
            task.res,
            ids,
            self.labels[ids],
            task.orientations,
        )


class CroppedBatches(EncodedBatches):
    """BatchTask -> (uint8 images (B, K, K, 3), labels): the same decode and
    crop, on the CPU in the workers."""

    def __getitem__(self, task: BatchTask):
        data, boxes, flips, res, ids, labels, turns = super().__getitem__(task)
        images = decode_batch(data, [self.paths[i] for i in task.indices], torch.device("cpu"), self.codec)
        return crop_batch(images, boxes, flips, res, turns, self.whole), labels


class NvjpegLoader(PilLoader):
    decodes = frozenset({"JPEG", "PNG", "GIF", "WEBP"})  # torchvision's decode_jpeg / decode_image

    def __init__(
        self, cfg: LoaderConfig, index: ImageIndex, decode_in_main: bool | None = None, codec: str | None = None
    ):
        # On CUDA the main process owns the decoder; `decode_in_main` lets the CPU run that path too.
        self.decode_in_main = cfg.device.type == "cuda" if decode_in_main is None else decode_in_main
        self.codec = codec or default_codec()
        if self.codec not in CODECS:
            raise ValueError(f"unknown JPEG codec {self.codec!r}; available: {', '.join(CODECS)}")
        super().__init__(cfg, index)
        where = "nvJPEG on " + str(cfg.device) if cfg.device.type == "cuda" else "libjpeg-turbo on the CPU"
        how = (
            "TorchCodec"
            if self.codec == "torchcodec"
            else "torchvision's deprecated decoder (pip install -e '.[codec]' for TorchCodec)"
        )
        self.summary = (
            f"nvjpeg ({where} through {how}, roi_align train crops, Resize + CenterCrop eval crops): {index.report()}"
        )

    def batch_maker(self) -> Dataset:
        batches = EncodedBatches if self.decode_in_main else CroppedBatches
        return batches(self.index, self.codec, self.whole_resize)

    @property
    def whole_resize(self) -> bool:
        """Eval crops are torchvision's Resize + CenterCrop (crop_batch's `whole`)."""
        return self.cfg.augment != "rrc"

    def __iter__(self):
        if not self.decode_in_main:
            return super().__iter__()
        return prefetched(self.encoded_with_jitter(), self.made_on_device, self.cfg.device)

    def encoded_with_jitter(self) -> Iterator[tuple[tuple, torch.Tensor | None]]:
        """(encoded batch, its colour-jitter factors on the device) for each batch of the epoch;
        closing it closes the workers' iterator (a thread pool's futures)."""
        batches = iter(self.loader)
        try:
            yield from zip(batches, self.jitter)
        finally:
            getattr(batches, "close", lambda: None)()

    def made_on_device(self, item: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of encoded files decoded, cropped and normalised on the device (the
        producer thread's work: loaders/prefetch.py)."""
        (data, boxes, flips, res, ids, labels, turns), jitter = item
        device = self.cfg.device
        images = decode_batch(data, [self.index.paths[i] for i in ids.tolist()], device, self.codec)
        if jitter is not None and jitter.is_cuda:  # allocated on the main stream: not reused before this one reads it
            jitter.record_stream(torch.cuda.current_stream(device))
        return (
            to_model_input(
                crop_batch(images, boxes, flips, res, turns, self.whole_resize), device, self.cfg.dtype, jitter
            ),
            to_device(labels, device),
        )
