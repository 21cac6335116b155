"""The DALI backend on the CPU (device_id=None): the crops it takes, agreement with the Pillow
backend, per-batch sizes, bad input, and the trainer on top of it. The loader contract
(shape, dtype, channels-last, len, set_epoch determinism, labels) runs for it in test_loaders.py.
The GPU ("mixed") path cannot run here: it is the same pipeline with device="mixed" decoders."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_loaders import batches, make
from test_transforms import box_statistics, torchvision_boxes

from loaders.imagefolder import BadDataError
from loaders.plan import plan_epoch
from pipeline.sizes import Step
from tests import tolerances as tol
from tests.helpers import ROOT, job, ks_distance
from tests.helpers import grey_levels as levels
from tests.jpeg_variants import jpeg_bytes, without_adobe_marker

COORDINATE_SIZES = {"landscape": (256, 192), "portrait": (176, 240)}  # sides <= 256: one grey level per pixel
RES = 32


def grey_levels(images: torch.Tensor) -> np.ndarray:
    """Normalised (N, 3, K, K) back to rounded 0-255 values."""
    return levels(images).round().numpy()


def both_backends(data, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Both backends' batches as grey levels; Pillow decodes at full scale, as DALI does."""
    pil, dali = (
        np.concatenate([grey_levels(x) for x, _ in make(data, b, reduced_decode=False, **kw)]) for b in ("pil", "dali")
    )
    return pil, dali


def test_eval_crops_agree_with_pil(tiny_data):
    """Same centre-crop boxes, one resampling each (Pillow bilinear vs DALI linear+antialias):
    every value within one rounding."""
    diff = np.abs(
        np.subtract(*both_backends(tiny_data, split="val", res=48, batch_size=7, augment="center", shuffle=False))
    )
    assert diff.max() <= tol.ONE_ROUNDING_WORST and diff.mean() < tol.ONE_ROUNDING_MEAN
    loader = make(tiny_data, "dali", split="val", res=48, batch_size=7, augment="center", shuffle=False)
    labels = torch.cat([y for _, y in loader])
    assert [len(y) for _, y in loader] == [7, 7, 4]  # the last partial batch is kept
    assert labels.tolist() == loader.index.labels.tolist()


def test_train_crops_agree_with_pil(tiny_data):
    """Same seed, same plan (boxes, flips): every value inside the outermost ring of the crop
    within one rounding. On that ring they differ:
    pil resizes the crop alone, as torchvision's RandomResizedCrop does, while DALI reads the
    pixels just outside the crop as filter support."""
    pil, dali = both_backends(tiny_data, res=40, batch_size=16, seed=0)
    diff = np.abs(pil - dali)
    inner = np.ones((40, 40), bool)
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    assert diff[..., inner].max() <= tol.ONE_ROUNDING_WORST
    assert np.mean(diff > 1) < tol.DALI_RING_SHARE, np.mean(diff > 1)
    assert diff.mean() < tol.ONE_ROUNDING_MEAN, diff.mean()


@pytest.fixture(scope="module")
def coordinate_data(tmp_path_factory) -> Path:
    """PNG images whose red value is the column and green the row: a crop shows where it was taken."""
    root = tmp_path_factory.mktemp("coords")
    for name, (w, h) in COORDINATE_SIZES.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        x, y = np.meshgrid(np.arange(w), np.arange(h))
        Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)).save(folder / "0.png")
        for i in range(1, 150):
            (folder / f"{i}.png").write_bytes((folder / "0.png").read_bytes())
    return root


def observed_windows(images: torch.Tensor) -> np.ndarray:
    """(N, 5) windows (x, y, w, h, flipped) read off coordinate crops. Output pixel centre j + 0.5
    samples source position x0 + (j + 0.5) w / K, where the red ramp reads that minus 0.5; a flip
    reverses the ramp. The two outer pixels each side are left out (filter meets image border)."""
    px = grey_levels(images)
    centres = np.arange(2, RES - 2) + 0.5
    out = []
    for red, green in zip(px[:, 0].mean(axis=1), px[:, 1].mean(axis=2)):
        sx, ix = np.polyfit(centres, red[2:-2], 1)
        sy, iy = np.polyfit(centres, green[2:-2], 1)
        w, h = abs(sx) * RES, sy * RES
        x0 = ix + 0.5 - (w if sx < 0 else 0)
        out.append((x0, iy + 0.5, w, h, sx < 0))
    return np.asarray(out)


def coordinate_epochs(data, epochs=2):
    """Observed windows, planned boxes and image sizes over a few training epochs."""
    loader = make(data, "dali", res=RES, batch_size=50, seed=7)
    seen, planned, sizes = [], [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        seen += [observed_windows(x) for x, _ in loader]
        for task in plan_epoch(loader.cfg, loader.index, epoch):
            planned.append(np.column_stack([task.boxes, task.flips]))
            sizes.append(loader.index.sizes[task.indices])
    return np.concatenate(seen), np.concatenate(planned), np.concatenate(sizes)


def test_dali_crops_exactly_the_planned_windows(coordinate_data):
    seen, planned, _ = coordinate_epochs(coordinate_data)
    assert len(seen) == 600
    np.testing.assert_allclose(seen[:, :4], planned[:, :4], atol=1.0)
    assert (seen[:, 4] == planned[:, 4]).all() and 0.4 < seen[:, 4].mean() < 0.6


def test_crop_statistics_agree_with_torchvision(coordinate_data):
    """Area share and log aspect of the windows DALI took against torchvision's
    RandomResizedCrop.get_params on the same image size: two-sample Kolmogorov-Smirnov
    distance under its critical value (tolerances.ks_critical) for the sample sizes."""
    seen, _, sizes = coordinate_epochs(coordinate_data)
    for w, h in COORDINATE_SIZES.values():
        mine = seen[(sizes[:, 0] == w) & (sizes[:, 1] == h), :4]
        ours, ref = box_statistics(mine, w, h), box_statistics(torchvision_boxes(w, h, 2000), w, h)
        for key in ("area", "log_aspect"):
            bound = tol.ks_critical(len(mine), 2000)
            assert ks_distance(ours[key], ref[key]) < bound, (w, h, key)


class MixedSizes:
    """A MixSize-like plan: sizes, batch sizes and copies change from batch to batch, and the
    largest batch grows in epoch 1."""

    def plan(self, epoch, num_samples, drop_last):
        return [Step(32, 8), Step(48, 6, copies=2), Step(24, 12, copies=3), Step(40, 8 + 8 * epoch)]


def test_per_batch_sizes_and_copies(tiny_data):
    loader = make(tiny_data, "dali", policy=MixedSizes())
    for epoch, last in ((0, 8), (1, 16)):
        loader.set_epoch(epoch)
        out = batches(loader)
        assert [(x.shape[0], x.shape[-1]) for x, _ in out] == [(8, 32), (6, 48), (12, 24), (last, 40)]
        x, y = out[1]
        assert torch.equal(y[0::2], y[1::2]) and not torch.equal(x[0::2], x[1::2])  # copies, own crops


def test_batches_stay_valid_after_later_batches(tiny_data):
    """Batches are DLPack views of DALI's output buffers, not copies: DALI must not reuse them."""
    kept = [x for x, _ in make(tiny_data, "dali", batch_size=8)]
    fresh = batches(make(tiny_data, "dali", batch_size=8))
    assert all(torch.equal(a, b) for a, (b, _) in zip(kept, fresh))


def test_labels_are_copied_to_the_device_once_per_epoch(tiny_data):
    """Per-batch labels indexed on the host are pageable, and a non_blocking copy from pageable
    memory is synchronous: every batch's labels are a view of one tensor made per epoch."""
    loader = make(tiny_data, "dali", policy=MixedSizes())
    out = list(loader)
    assert len({y.untyped_storage().data_ptr() for _, y in out}) == 1
    assert torch.cat([y for _, y in out]).tolist() == [
        int(loader.index.labels[i]) for task in plan_epoch(loader.cfg, loader.index, 0) for i in task.indices
    ]


def test_result_does_not_depend_on_thread_count(tiny_data):
    one, two = (batches(make(tiny_data, "dali", workers=w)) for w in (1, 2))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(one, two))


def test_eval_shards_cover_every_image_once(tiny_data):
    shards = [
        make(tiny_data, "dali", split="val", augment="center", shuffle=False, batch_size=4, rank=r, world_size=2)
        for r in (0, 1)
    ]
    assert sorted(
        sum((s.index.labels[plan.indices].tolist() for s in shards for plan in plan_epoch(s.cfg, s.index, 0)), [])
    ) == sorted(shards[0].index.labels.tolist())
    assert [sum(len(y) for _, y in s) for s in shards] == [9, 9]


def test_handled_oddities_decode_like_pil(data_copy):
    """PNG content under a .JPEG name, CMYK JPEGs with and without Adobe's marker (which DALI alone
    would read uninverted), grayscale, and an EXIF orientation tag (ignored by every backend, as by
    torchvision's ImageFolder): DALI decodes the same RGB."""
    a, b, c, d, e = sorted((data_copy / "val" / sorted(p.name for p in (data_copy / "val").iterdir())[0]).iterdir())[:5]
    Image.open(a).save(a, format="PNG")
    Image.open(b).convert("CMYK").save(b, format="JPEG", quality=95)
    Image.open(c).convert("L").save(c, format="JPEG")
    with Image.open(d) as img:
        exif = img.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees to display"
        img.save(d, format="JPEG", quality=95, exif=exif)
    with Image.open(e) as img:
        e.write_bytes(without_adobe_marker(jpeg_bytes(img.convert("CMYK"))))
    pil, dali = both_backends(data_copy, split="val", res=48, batch_size=5, augment="center", shuffle=False)
    assert np.abs(pil[:5] - dali[:5]).max() <= tol.DALI_ODDITY_WORST


def test_cmyk_without_adobe_marker_damaged_after_the_scan_is_named(data_copy):
    victim = sorted((data_copy / "val" / sorted(p.name for p in (data_copy / "val").iterdir())[0]).iterdir())[0]
    with Image.open(victim) as img:
        victim.write_bytes(without_adobe_marker(jpeg_bytes(img.convert("CMYK"))))
    loader = make(data_copy, "dali", split="val", batch_size=6, augment="center", shuffle=False)
    assert loader.index.unmarked_cmyk.tolist() == [True] + [False] * 17
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(BadDataError, match=rf"{victim.name}: unreadable image"):
        batches(loader)


def test_file_damaged_after_the_scan_is_named(data_copy):
    loader = make(data_copy, "dali", batch_size=8, seed=1)
    victim = Path(loader.index.paths[loader.feed.tasks[1].indices[3]])
    victim.write_text("not an image any more")
    with pytest.raises(BadDataError, match=rf"(?s){victim.name}.*unreadable image.*--check full"):
        batches(loader)


def test_skip_bad_leaves_out_and_counts(data_copy):
    bad = sorted((data_copy / "train" / sorted(p.name for p in (data_copy / "train").iterdir())[0]).iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(BadDataError, match=bad.name):
        make(data_copy, "dali")
    loader = make(data_copy, "dali", skip_bad=True, batch_size=47)
    assert loader.skipped == {"truncated JPEG": 1} and len(batches(loader)[0][1]) == 47


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when no GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_data):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        make(tiny_data, "dali", device=torch.device("cuda"))


@pytest.mark.slow
def test_missing_dali_install_says_how_to_install(tiny_data):
    """A Python where `import nvidia.dali` fails (None in sys.modules blocks the import)."""
    code = (
        "import sys; sys.modules['nvidia.dali'] = None\n"
        "from loaders import create_loader; from loaders.base import LoaderConfig\n"
        "from pipeline.sizes import ConstantSize\n"
        f"create_loader(LoaderConfig('dali', {str(tiny_data / 'train')!r}, ConstantSize(32, 8), 'rrc', True))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "not installed" in result.stderr and ".[dali]" in result.stderr


@pytest.mark.slow
def test_trainer_trains_finetunes_and_sweeps_with_dali(tiny_data, tmp_path):
    fast = ["--loader", "dali", "--batch-size", "8", "--workers", "1", "--no-progress"]
    job("train", "--data", tiny_data, "--epochs", 1, "--train-res", 32, "--out", tmp_path / "t", *fast)
    job(
        "finetune",
        "--data",
        tiny_data,
        "--checkpoint",
        tmp_path / "t",
        "--test-res",
        40,
        "--epochs",
        1,
        "--out",
        tmp_path / "ft",
        *fast,
    )
    rows = job("sweep", "--data", tiny_data, "--checkpoint", tmp_path / "ft", "--test-res", "32,48", *fast)
    assert [(r["test_res"], r["images"]) for r in rows] == [(32, 18), (48, 18)]


def test_format_dali_cannot_decode_is_found_by_the_scan(data_copy):
    """GIF content under a .JPEG name: Pillow decodes it, DALI does not; the scan knows which
    backend it scans for, instead of the run stopping mid-epoch."""
    gif = sorted((data_copy / "train" / sorted(p.name for p in (data_copy / "train").iterdir())[0]).iterdir())[0]
    Image.open(gif).convert("P").save(gif, format="GIF")
    assert len(make(data_copy, "pil").index) == 48
    with pytest.raises(BadDataError, match=rf"{gif.name}: format the loader cannot decode \(GIF; it decodes BMP"):
        make(data_copy, "dali")
    loader = make(data_copy, "dali", skip_bad=True, batch_size=47)
    assert loader.skipped == {"format the loader cannot decode": 1} and len(batches(loader)[0][1]) == 47


def test_jpeg_trailer_decodes_like_pil(data_copy):
    """Bytes after the end-of-image marker are accepted by the scan and ignored by DALI."""
    for path in sorted((data_copy / "val").glob("*/*.JPEG"))[:4]:
        path.write_bytes(path.read_bytes() + b"\x00trailer" * 500)
    pil, dali = both_backends(data_copy, split="val", res=48, batch_size=4, augment="center", shuffle=False)
    assert np.abs(pil[:4] - dali[:4]).max() <= tol.DALI_ODDITY_WORST


def test_bomb_written_after_the_scan_is_named(data_copy):
    """DALI decodes only the region planned from the scanned size, then the batch's header sizes
    are compared with the scanned ones: the replaced file is named, never decoded whole."""
    loader = make(data_copy, "dali", split="val", batch_size=6, augment="center", shuffle=False)
    victim = Path(loader.index.paths[4])
    Image.new("L", (14000, 14000), 128).save(victim, format="JPEG", quality=1)
    with pytest.raises(
        BadDataError,
        match=rf"(?s)changed since the scan.*{victim.name}: now 14000 x 14000, "
        r"decompression bomb.*--rescan",
    ):
        batches(loader)
