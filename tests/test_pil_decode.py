"""Resolution-aware Pillow decoding: decoding at a reduced DCT scale must give the crop a full
decode gives, up to resampling noise, with the same geometry."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_loaders import make

from loaders.imagefile import ImageTooLarge
from loaders.imagefolder import scan_image_folder
from loaders.pil import dct_scale, decode_crop, pillow_decoded, turbo_decoded
from pipeline.transforms import center_crop_boxes, random_resized_crop_boxes
from tests import tolerances as tol


def test_dct_scale_is_the_largest_reduction_that_still_covers_the_crop():
    assert dct_scale(400, 300, 128) == 2  # 300 / 2 = 150 >= 128, 300 / 4 < 128
    assert dct_scale(400, 300, 32) == 8
    assert dct_scale(400, 300, 75) == 4
    assert dct_scale(400, 300, 76) == 2
    assert dct_scale(100, 90, 128) == 1  # upsampled: decode everything


# The bounds per resampler and their reasons: tolerances.REDUCED_DECODE.
@pytest.mark.parametrize("resampler", ["torch", "pillow"])
@pytest.mark.parametrize("augment,res", [("rrc", 16), ("rrc", 24), ("center", 16), ("center", 32)])
def test_reduced_decode_matches_full_decode(tiny_data, augment, res, resampler):
    """Differences stay within the resampler's tolerance, without a bias (no brightening or
    darkening, no colour cast)."""
    index = scan_image_folder(tiny_data / "train", progress=False)
    w, h = index.sizes.T
    boxes = (
        random_resized_crop_boxes(np.random.default_rng(0), w, h) if augment == "rrc" else center_crop_boxes(w, h, res)
    )
    scales = [dct_scale(b[2], b[3], res) for b in boxes]
    assert sum(s > 1 for s in scales) > len(scales) / 2  # the test exercises reduction
    diffs = np.stack(
        [
            decode_crop(p, b, res, resampler=resampler).astype(float)
            - decode_crop(p, b, res, reduce=False, resampler=resampler)
            for p, b in zip(index.paths, boxes)
        ]
    )
    per_image = np.abs(diffs).mean(axis=(1, 2, 3))
    mean_bound, worst_bound = tol.REDUCED_DECODE[resampler]
    assert per_image.mean() < mean_bound and per_image.max() < worst_bound, (per_image.mean(), per_image.max())
    assert abs(diffs.mean()) < tol.REDUCED_DECODE_BIAS
    assert np.abs(diffs.mean(axis=(0, 1, 2))).max() < tol.REDUCED_DECODE_BIAS


def test_torch_resampler_is_torchvisions_crop_then_resize(tiny_data):
    """At full decode, a train crop (whole-pixel box) through the torch resampler is what
    torchvision's RandomResizedCrop computes for the same box on the decoded image."""
    from torchvision.transforms.v2 import functional as TF

    index = scan_image_folder(tiny_data / "train", progress=False)
    w, h = index.sizes.T
    boxes = random_resized_crop_boxes(np.random.default_rng(1), w, h)
    for i, (x, y, bw, bh) in enumerate(boxes[:12]):
        path = index.paths[i]
        with Image.open(path) as img:
            expected = TF.resized_crop(TF.pil_to_tensor(img.convert("RGB")), y, x, bh, bw, [24, 24], antialias=True)
        got = decode_crop(path, (x, y, bw, bh), 24, reduce=False)
        assert np.abs(got.astype(int) - expected.permute(1, 2, 0).numpy()).max() <= 1


@pytest.mark.parametrize("resampler", ["torch", "pillow"])
def test_flip_mirrors_the_crop(tiny_data, resampler):
    path = scan_image_folder(tiny_data / "train", progress=False).paths[0]
    plain = decode_crop(path, (10, 5, 40, 30), 16, resampler=resampler)
    assert np.array_equal(decode_crop(path, (10, 5, 40, 30), 16, resampler=resampler, flip=True), plain[:, ::-1])


def centroid(img: np.ndarray) -> np.ndarray:
    weight = img[..., 0].astype(float) - img[..., 0].min()
    ys, xs = np.indices(weight.shape)
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_reduced_decode_keeps_the_crop_geometry(tmp_path):
    """A bright disc off-centre in a crop: its centroid lands on the same output pixel
    (within a tenth of a pixel) whatever the DCT scale, and where the box maths puts it."""
    path = tmp_path / "disc.jpg"
    img = Image.new("RGB", (480, 360), (40, 40, 40))
    ImageDraw.Draw(img).ellipse((250, 150, 290, 190), fill=(230, 230, 230))  # centre (270, 170)
    img.save(path, quality=95)
    box = (200, 100, 256, 192)  # x, y, w, h: the disc centre sits at (70, 70) inside
    res = 32  # scale 4: 192 / 4 = 48 >= 32
    assert dct_scale(box[2], box[3], res) == 4
    full, reduced = decode_crop(str(path), box, res, reduce=False), decode_crop(str(path), box, res)
    expected = np.array([70 / 256 * res, 70 / 192 * res]) - 0.5  # pixel-centre coordinates
    assert np.abs(centroid(full) - expected).max() < 0.15
    assert np.abs(centroid(reduced) - centroid(full)).max() < 0.1


def test_png_content_is_decoded_at_full_size(tmp_path):
    path = tmp_path / "x.JPEG"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)).save(path, format="PNG")
    assert np.array_equal(
        decode_crop(str(path), (0, 0, 100, 120), 20), decode_crop(str(path), (0, 0, 100, 120), 20, False)
    )


def test_decode_refuses_a_decompression_bomb(tmp_path):
    """A file may change after the scan: decoding checks the header against the limit again."""
    path = tmp_path / "bomb.JPEG"
    Image.new("L", (14000, 14000), 128).save(path, format="JPEG", quality=1)
    with pytest.raises(ImageTooLarge, match=r"bomb.JPEG: decompression bomb"):
        decode_crop(str(path), (0, 0, 64, 64), 32)


def jpeg_bytes(mode: str, size=(150, 110)) -> bytes:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_turbo_decode_gives_pillows_pixels_and_scale(mode, scale):
    data = jpeg_bytes(mode)
    (turbo, f_turbo), (pillow, f_pillow) = turbo_decoded(data, scale, "x.jpg"), pillow_decoded(data, scale)
    assert f_turbo == f_pillow == 1 / scale
    assert pillow.mode == "RGB" and turbo.shape == (pillow.height, pillow.width, 3)
    assert np.array_equal(turbo, np.asarray(pillow))


def test_pillow_decodes_what_turbo_leaves(monkeypatch):
    assert turbo_decoded(jpeg_bytes("CMYK"), 2, "x.jpg") is None  # Pillow undoes Adobe's inverted CMYK
    assert turbo_decoded(b"\x89PNG\r\n", 1, "x.png") is None
    assert turbo_decoded(jpeg_bytes("RGB")[:300], 1, "x.jpg") is None  # truncated: Pillow names the error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 110 // 3)
    assert turbo_decoded(jpeg_bytes("RGB"), 1, "x.jpg") is None  # over the limit: Pillow enforces it


def test_decode_crop_refuses_images_over_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes("RGB"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 110 // 3)
    with pytest.raises(Image.DecompressionBombError):
        decode_crop(str(path), (0, 0, 100, 100), 32)


def test_truncated_jpeg_error_names_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes("RGB")[:300])
    with pytest.raises(OSError, match="cut.jpg"):
        decode_crop(str(path), (0, 0, 100, 100), 32)


WITHOUT_SIMPLEJPEG = """
import sys
sys.modules["simplejpeg"] = None  # None blocks the import, as on the lent GPU machine's image
sys.path.insert(0, "tests")
import numpy as np, torch
import bench.gpu_check, bench.train_throughput, bench.loader_throughput, test_cuda  # what the GPU check imports
from test_loaders import make
loader = make(__import__("pathlib").Path(sys.argv[1]), "pil", res=40, batch_size=8, augment="center", shuffle=False)
print(loader.summary)
np.save(sys.argv[2], torch.cat([x for x, _ in loader]).numpy(), allow_pickle=False)
"""


@pytest.mark.slow
def test_without_simplejpeg_pil_decodes_with_pillow_to_the_same_pixels(tiny_data, tmp_path):
    """The GPU machine has no simplejpeg: everything the GPU check and the cuda tests import
    must still import, and pil then decodes through Pillow, says so once, and gives the pixels
    it gives with simplejpeg."""
    out = tmp_path / "batches.npy"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SIMPLEJPEG, str(tiny_data), str(out)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("decoded by Pillow (simplejpeg is not installed)") == 1
    with_turbo = make(tiny_data, "pil", res=40, batch_size=8, augment="center", shuffle=False)
    assert "simplejpeg" not in with_turbo.summary
    assert torch.equal(torch.from_numpy(np.load(out, allow_pickle=False)), torch.cat([x for x, _ in with_turbo]))
