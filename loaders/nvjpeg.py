"""nvJPEG backend: GPU decoding with torchvision alone, for GPU machines without DALI.

The epoch is planned exactly as in the Pillow backend (it is a PilLoader with another batch
maker), so the crop boxes and flips are the same. On CUDA, worker processes only read the
files; the main process decodes each batch with one `torchvision.io.decode_jpeg(...,
device="cuda")` call (nvJPEG) and does RandomResizedCrop / the centre crop for the whole
batch in one `torchvision.ops.roi_align` to (K, K), then flips and normalises on the GPU.
On the CPU the same two calls run in the workers (libjpeg-turbo + roi_align on the CPU), so
the backend is fully usable, and tested, without a GPU.

roi_align averages ceil(box side / K) samples per output pixel and axis: an area filter,
which antialiases like Pillow's bilinear filter does when shrinking, and is plain bilinear
interpolation when enlarging.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.ops import roi_align

from loaders.base import LoaderConfig, to_model_input
from loaders.imagefolder import ImageIndex
from loaders.pil import PilLoader
from loaders.plan import BatchTask

JPEG_SOI = (0xFF, 0xD8)  # a JPEG's first two bytes, whatever its file name says


def decode_batch(data: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor]:
    """Each encoded file as a (3, H, W) uint8 RGB tensor on `device`: the JPEGs in one
    batched decode_jpeg call (nvJPEG on CUDA), other formats (a PNG named .JPEG) on the CPU."""
    is_jpeg = [tuple(d[:2].tolist()) == JPEG_SOI for d in data]
    jpegs = [d for d, j in zip(data, is_jpeg) if j]
    try:
        decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
    except RuntimeError:
        raise name_the_bad_file(data, paths, is_jpeg) from None
    return [next(decoded) if j else decode_image(d, mode=ImageReadMode.RGB).to(device)
            for d, j in zip(data, is_jpeg)]


def name_the_bad_file(data, paths, is_jpeg) -> OSError:
    """The error of the first file of a failed batch that does not decode on its own."""
    for d, path, j in zip(data, paths, is_jpeg):
        try:
            decode_jpeg(d, mode=ImageReadMode.RGB) if j else decode_image(d, mode=ImageReadMode.RGB)
        except RuntimeError as e:
            return OSError(f"cannot decode {path}: {e} (scan with --check full to find such files first)")
    return OSError(f"batched JPEG decoding failed for {len(data)} files that decode one by one: {paths[:3]}...")


def crop_batch(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, res: int) -> torch.Tensor:
    """(B, res, res, 3) uint8 on the images' device: box b of image b resampled to res x res,
    mirrored where flips[b]. One roi_align over a zero-padded float canvas does every crop;
    each image gets one replicated row and column so that interpolation at its far border
    reads the border pixel (as Pillow's resize does), not padding."""
    device = images[0].device
    height = max(img.shape[1] for img in images) + 1
    width = max(img.shape[2] for img in images) + 1
    canvas = torch.zeros(len(images), 3, height, width, device=device)
    for i, img in enumerate(images):
        h, w = img.shape[1:]
        canvas[i, :, :h, :w] = img
        canvas[i, :, h, :w] = img[:, -1]
        canvas[i, :, :h + 1, w] = canvas[i, :, :h + 1, w - 1]
    boxes = boxes.to(device=device, dtype=torch.float32)
    rois = torch.cat([torch.arange(len(images), device=device, dtype=torch.float32)[:, None],
                      boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
    out = roi_align(canvas, rois, (res, res), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    out = torch.where(flips.to(device)[:, None, None, None], out.flip(-1), out)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class EncodedBatches(Dataset):
    """BatchTask -> (encoded files, boxes, flips, res, sample ids, labels, jitter factors): the
    workers' share on CUDA, where decoding happens on the GPU in the main process."""

    def __init__(self, index: ImageIndex):
        self.paths = index.paths
        self.labels = torch.from_numpy(index.labels)

    def __getitem__(self, task: BatchTask):
        ids = torch.from_numpy(task.indices)
        return ([read_file(self.paths[i]) for i in task.indices], torch.from_numpy(task.boxes),
                torch.from_numpy(task.flips), task.res, ids, self.labels[ids], task.jitter)


class CroppedBatches(EncodedBatches):
    """BatchTask -> (uint8 images (B, K, K, 3), labels, jitter factors): the same decode and
    crop, on the CPU in the workers."""

    def __getitem__(self, task: BatchTask):
        data, boxes, flips, res, ids, labels, jitter = super().__getitem__(task)
        images = decode_batch(data, [self.paths[i] for i in task.indices], torch.device("cpu"))
        return crop_batch(images, boxes, flips, res), labels, jitter


class NvjpegLoader(PilLoader):
    def __init__(self, cfg: LoaderConfig, index: ImageIndex, decode_in_main: bool | None = None):
        # On CUDA the main process owns the decoder; `decode_in_main` lets the CPU run that path too.
        self.decode_in_main = cfg.device.type == "cuda" if decode_in_main is None else decode_in_main
        super().__init__(cfg, index)
        where = "nvJPEG on " + str(cfg.device) if cfg.device.type == "cuda" else "decode_jpeg on the CPU"
        self.summary = f"nvjpeg ({where} + roi_align): {index.report()}"

    def batch_maker(self) -> Dataset:
        return EncodedBatches(self.index) if self.decode_in_main else CroppedBatches(self.index)

    def __iter__(self):
        if not self.decode_in_main:
            yield from super().__iter__()
            return
        device = self.cfg.device
        for data, boxes, flips, res, ids, labels, jitter in self.loader:
            images = decode_batch(data, [self.index.paths[i] for i in ids.tolist()], device)
            yield (to_model_input(crop_batch(images, boxes, flips, res), device, self.cfg.dtype, jitter),
                   labels.to(device, non_blocking=True))
