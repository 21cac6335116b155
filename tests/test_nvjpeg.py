"""The nvjpeg backend's crop maths on the CPU (decode_jpeg + roi_align), checked against the
Pillow backend on the same plan; the contract tests run for it through BACKENDS, the CUDA path
in test_cuda.py."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import roi_align
from torchvision.transforms import v2

from loaders import create_loader
from loaders.base import LoaderConfig
from loaders.imagefile import ImageTooLarge
from loaders.imagefolder import scan_image_folder
from loaders.nvjpeg import CODECS, NvjpegLoader, canvas_chunks, crop_batch, decode_batch, default_codec, read_encoded
from pipeline.sizes import ConstantSize
from pipeline.transforms import CenterCropSpec, center_crop_boxes
from tests import tolerances as tol
from tests.helpers import grey_levels

HAS_TORCHCODEC = default_codec() == "torchcodec"
EACH_CODEC = [
    pytest.param(
        c,
        marks=pytest.mark.skipif(
            c == "torchcodec" and not HAS_TORCHCODEC, reason="TorchCodec is not installed (the codec extra)"
        ),
    )
    for c in CODECS
]


def config(data, backend, augment, res=40, batch_size=8, split="train", **kw):
    return LoaderConfig(
        backend=backend,
        root=str(data / split),
        policy=ConstantSize(res, batch_size),
        augment=augment,
        shuffle=augment == "rrc",
        workers=0,
        **kw,
    )


def epoch_levels(loader) -> torch.Tensor:
    return torch.cat([grey_levels(x) for x, _ in loader])


@pytest.mark.parametrize("augment,res", [("rrc", 40), ("rrc", 96), ("center", 40)])
def test_crops_match_the_pillow_backend(tiny_data, augment, res):
    """Same plan (boxes, flips), other decoder and resampler: roi_align's area filter vs
    Pillow's antialiased bilinear. Measured: 0.5-1.2 grey levels on average, 3 at most per
    image (300 demo images, 64-128 px); here under 2 on average and 6 per image. A wrong box
    or flip would differ by tens of grey levels."""
    ours = epoch_levels(create_loader(config(tiny_data, "nvjpeg", augment, res), progress=False))
    pil = epoch_levels(create_loader(config(tiny_data, "pil", augment, res), progress=False))
    per_image = (ours - pil).abs().mean(dim=(1, 2, 3))
    assert per_image.mean() < tol.NVJPEG_MEAN and per_image.max() < tol.NVJPEG_WORST_IMAGE
    assert abs((ours - pil).mean()) < tol.NVJPEG_BIAS


def test_main_process_path_equals_the_worker_path(tiny_data):
    """On CUDA decoding moves to the main process; that code path, run on the CPU, must
    give exactly the batches the workers give."""
    cfg = config(tiny_data, "nvjpeg", "rrc")
    index = scan_image_folder(cfg.root, progress=False)
    main = list(NvjpegLoader(cfg, index, decode_in_main=True))
    workers = list(NvjpegLoader(cfg, index, decode_in_main=False))
    assert len(main) == len(workers) == 6
    assert all(torch.equal(a, b) and torch.equal(y, z) for (a, y), (b, z) in zip(main, workers))


def test_crop_at_unit_scale_copies_pixels_and_flips_mirror():
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    boxes = torch.tensor([[4.0, 3.0, 8.0, 8.0], [4.0, 3.0, 8.0, 8.0]])
    out = crop_batch([img, img], boxes, torch.tensor([False, True]), 8)
    assert torch.equal(out[0], img[:, 3:11, 4:12].permute(1, 2, 0))
    assert torch.equal(out[1], out[0].flip(1))


def test_far_border_reads_the_image_not_the_padding():
    """A small image beside a large one in the batch: its crop up to its own right and bottom
    edges must not blend in the zero padding of the shared canvas."""
    small = torch.full((3, 10, 10), 200, dtype=torch.uint8)
    large = torch.zeros((3, 50, 60), dtype=torch.uint8)
    out = crop_batch(
        [small, large], torch.tensor([[0.0, 0.0, 10.0, 10.0], [0, 0, 60, 50]]), torch.tensor([False, False]), 16
    )
    assert int(out[0].min()) == 200


@pytest.mark.parametrize("codec", EACH_CODEC)
def test_png_cmyk_and_grayscale_files_decode(data_copy, codec):
    """The oddities the scanner lets through decode as the Pillow backend decodes them."""
    cls = sorted((data_copy / "val").iterdir())[0]
    a, b, c = sorted(cls.iterdir())[:3]
    Image.open(a).convert("RGB").save(a, format="PNG")
    Image.open(b).convert("CMYK").save(b, format="JPEG")
    Image.open(c).convert("L").save(c, format="JPEG")
    paths = [str(a), str(b), str(c)]
    images = decode_batch([read_encoded(p) for p in paths], paths, torch.device("cpu"), codec)
    for p, img in zip(paths, images):
        ref = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).int()
        assert img.shape == ref.shape and (img.int() - ref).abs().float().mean() < tol.CODEC_ODDITY_MEAN


@pytest.mark.parametrize("codec", EACH_CODEC)
def test_undecodable_bytes_name_the_file(codec):
    bad = torch.from_numpy(np.frombuffer(b"\xff\xd8\xff\xe0 not really a jpeg", dtype=np.uint8).copy())
    with pytest.raises(OSError, match="broken.JPEG"):
        decode_batch([bad], ["/data/broken.JPEG"], torch.device("cpu"), codec)


@pytest.mark.parametrize("decode_in_main", [False, True])
def test_decompression_bomb_written_after_the_scan_is_refused_before_decoding(data_copy, decode_in_main):
    """decode_jpeg knows no pixel limit: the worker checks each file's header first."""
    cfg = config(data_copy, "nvjpeg", "center", split="val", batch_size=18)
    loader = NvjpegLoader(cfg, scan_image_folder(cfg.root, progress=False), decode_in_main=decode_in_main)
    victim = loader.index.paths[5]
    data = bytearray(open(victim, "rb").read())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    open(victim, "wb").write(bytes(data))
    with pytest.raises(ImageTooLarge, match=rf"{victim}: decompression bomb \(header says 60000 x 60000"):
        list(loader)


@pytest.mark.parametrize("decode_in_main", [False, True])
def test_file_overwritten_after_the_scan_is_named(data_copy, decode_in_main):
    cfg = config(data_copy, "nvjpeg", "center", split="val", batch_size=18)
    loader = NvjpegLoader(cfg, scan_image_folder(cfg.root, progress=False), decode_in_main=decode_in_main)
    victim = loader.index.paths[5]
    open(victim, "wb").write(b"garbage, not an image" * 100)
    with pytest.raises(OSError, match=f"'{victim}'"):
        list(loader)


@pytest.mark.parametrize("codec", EACH_CODEC)
def test_an_epoch_warns_nothing_and_the_summary_names_the_decoder(tiny_data, codec):
    """torchvision's decoders warn on every call since 0.29: a thousand warnings per test run
    before the call site silenced them. The summary says which decoder runs, once."""
    cfg = config(tiny_data, "nvjpeg", "rrc")
    loader = NvjpegLoader(cfg, scan_image_folder(cfg.root, progress=False), codec=codec)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert len(list(loader)) == 6
    assert not seen, [str(w.message)[:80] for w in seen]
    assert ("TorchCodec" if codec == "torchcodec" else "deprecated") in loader.summary


def test_the_codecs_decode_alike(tiny_data):
    if not HAS_TORCHCODEC:
        pytest.skip("TorchCodec is not installed (the codec extra)")
    paths = [str(p) for p in sorted((tiny_data / "val").rglob("*.JPEG"))[:6]]
    data = [read_encoded(p) for p in paths]
    cpu = torch.device("cpu")
    for a, b in zip(decode_batch(data, paths, cpu, "torchcodec"), decode_batch(data, paths, cpu, "torchvision")):
        assert a.shape == b.shape and (a.int() - b.int()).abs().max() <= 1


def random_boxes(gen, sizes, count):
    """Boxes anywhere in (w, h) images, from a few pixels to the whole image, touching borders."""
    out = []
    for w, h in sizes[:count]:
        bw, bh = (torch.rand(2, generator=gen) * torch.tensor([w - 2, h - 2]) + 2).tolist()
        x, y = (torch.rand(2, generator=gen) * torch.tensor([w - bw, h - bh])).tolist()
        out.append([x, y, bw, bh])
    out[0] = [0.0, 0.0, float(sizes[0][0]), float(sizes[0][1])]  # the whole image: every border
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("res", [8, 48])
def test_region_canvas_crops_as_roi_align_on_each_whole_image(res):
    """Cropping each image to its box's region (and cutting the batch into chunks) changes no
    pixel: per image, roi_align on the whole image alone (no canvas, no padding) is the reference."""
    gen = torch.Generator().manual_seed(0)
    sizes = [(int(w), int(h)) for w, h in torch.randint(12, 120, (24, 2), generator=gen).tolist()]
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for w, h in sizes]
    boxes = random_boxes(gen, sizes, len(sizes))
    flips = torch.zeros(len(sizes), dtype=torch.bool)
    ours = crop_batch(images, boxes, flips, res).permute(0, 3, 1, 2).float()
    for img, box, got in zip(images, boxes.float(), ours):
        roi = torch.cat([torch.zeros(1), box[:2], box[:2] + box[2:]])[None]
        ref = roi_align(img[None].float(), roi, (res, res), 1.0, -1, True)[0].round().clamp(0, 255)
        assert (got - ref).abs().max() <= 1


def test_canvas_chunks_keep_within_the_budget():
    """Large regions among small ones: a chunk's canvas is its largest region times its count."""
    budget = 2 * 3 * 4 * 1501 * 2001  # two large images' canvas
    extents = [(10, 10)] * 100 + [(1500, 2000)] * 3
    parts = list(canvas_chunks(extents, budget))
    assert [(p.start, p.stop) for p in parts] == [(0, 100), (100, 102), (102, 103)]
    assert list(canvas_chunks([(1500, 2000)], budget=1)) == [slice(0, 1)]  # one image always goes


@pytest.mark.parametrize("res", [16, 64])
def test_eval_crops_are_torchvisions_resize_and_center_crop(res):
    """Eval crops (whole=True) are the image resized whole at the plan's scale, then the window:
    torchvision's Resize(res / 0.875) + CenterCrop(res) on the decoded tensor."""
    gen = torch.Generator().manual_seed(1)
    sizes = [(int(w), int(h)) for w, h in torch.randint(res, 400, (12, 2), generator=gen).tolist()]
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for w, h in sizes]
    widths, heights = np.array(sizes).T
    boxes = torch.from_numpy(center_crop_boxes(widths, heights, res))
    ours = crop_batch(images, boxes, torch.zeros(len(sizes), dtype=torch.bool), res, whole=True)
    side = CenterCropSpec().resize_side(res)
    for img, got in zip(images, ours.permute(0, 3, 1, 2).float()):
        ref = v2.functional.center_crop(v2.functional.resize(img.float(), side, antialias=True), res)
        assert (got - ref.round().clamp(0, 255)).abs().max() <= 1
