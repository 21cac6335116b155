"""The ffcv backend with FFCV itself: writing .beton files, reading them, crops, bad files.

The loader contract (shapes, layout, determinism, resolution per epoch) runs for ffcv in
test_loaders.py, from ImageFolder splits written to the cache on first use.
"""

import json
import sys
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image
from test_imagefolder import first_image, truncate
from torchvision.transforms import RandomResizedCrop

from loaders import create_loader
from loaders.base import LoaderConfig
from loaders.ffcv import require_ffcv
from loaders.ffcv.__main__ import main as write_main
from loaders.imagefolder import BadDataError, scan_image_folder
from pipeline.sizes import ConstantSize, LinearRamp, MixSize, Step
from tests import tolerances as tol
from tests.helpers import grey_levels, job, json_lines, ks_distance

# FFCV compiles its pipeline with numba for every loader, seconds a test: the whole file is in the
# slow tier (the quick tier runs the other backends; tests/helpers.py:ffcv_in_the_slow_tier).
pytestmark = pytest.mark.slow


def loader(root, res=32, batch_size=8, augment="center", shuffle=False, backend="ffcv", **kw):
    policy = kw.pop("policy", ConstantSize(res, batch_size))
    cfg = LoaderConfig(
        backend=backend,
        root=str(root),
        policy=policy,
        augment=augment,
        shuffle=shuffle,
        workers=kw.pop("workers", 0),
        **kw,
    )
    return create_loader(cfg, progress=False)


def pixels(batches):
    """(images on the 0-255 scale, labels) of a whole epoch."""
    out = [(grey_levels(x), y) for x, y in batches]
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out])


def write_raw(data, out) -> None:
    """The ImageFolder root `data` written by `ffcv write` as raw pixels at full size into `out`."""
    write_main(
        ["write", "--data", str(data), "--out", str(out), "--write-mode", "raw", "--max-resolution", "0"]
        + ["--workers", "1", "--no-progress"]
    )


@pytest.fixture(scope="module")
def betons(tiny_data, tmp_path_factory):
    """tiny_data written as raw pixels at full size: only cropping and resampling differ from Pillow."""
    out = tmp_path_factory.mktemp("betons")
    write_raw(tiny_data, out)
    return out


@pytest.fixture(scope="module")
def gradient_data(tmp_path_factory):
    """64 lossless 200 x 150 images whose red = x and green = y: a decoded crop tells its box."""
    root = tmp_path_factory.mktemp("gradient")
    x, y = np.meshgrid(np.arange(200), np.arange(150))
    image = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)
    for split in ("train", "val"):
        (root / split / "grad").mkdir(parents=True)
        for i in range(64):
            Image.fromarray(image).save(root / split / "grad" / f"{i:03d}.png")
    write_raw(root, root)
    return root


def test_round_trip_keeps_every_image_and_label(tiny_data, betons):
    meta = json.loads((betons / "train.beton.json").read_text())
    index = scan_image_folder(tiny_data / "train", progress=False)
    assert meta["classes"] == index.classes and meta["images"] == 48
    ordered = loader(betons / "train")  # <data>/<split> reads <data>/<split>.beton
    _, labels = pixels(ordered)
    assert labels.tolist() == index.labels.tolist()
    shuffled = loader(betons / "train.beton", augment="rrc", shuffle=True, batch_size=12)
    _, labels = pixels(shuffled)
    assert Counter(labels.tolist()) == Counter(index.labels.tolist())
    _, val_labels = pixels(loader(betons / "val"))
    assert val_labels.tolist() == scan_image_folder(tiny_data / "val", progress=False).labels.tolist()


def test_eval_classes_follow_the_training_list(betons):
    classes = json.loads((betons / "val.beton.json").read_text())["classes"]
    _, stored = pixels(loader(betons / "val"))
    _, mapped = pixels(loader(betons / "val", classes=classes[::-1]))
    assert mapped.tolist() == (len(classes) - 1 - stored).tolist()
    with pytest.raises(BadDataError, match="lacks"):
        loader(betons / "val", classes=classes[:2])


def test_eval_crops_agree_with_pillow(tiny_data, betons):
    """Same pixels, same centre square (0.875 of the shorter side); FFCV resamples with
    OpenCV's INTER_AREA (a box filter), Pillow with an antialiased triangle filter, which
    differ on these high-frequency textures (tolerances.AREA_FILTER_*)."""
    for res in (32, 48, 96):
        ours, y1 = pixels(loader(betons / "val", res=res, batch_size=6))
        pil, y2 = pixels(loader(tiny_data / "val", res=res, batch_size=6, backend="pil"))
        diff = (ours - pil).abs()
        assert torch.equal(y1, y2)
        assert diff.mean() < tol.AREA_FILTER_MEAN and diff.mean(dim=(1, 2, 3)).max() < tol.AREA_FILTER_WORST_IMAGE, res


def test_eval_crop_geometry_equals_pillow(gradient_data):
    """On a smooth image the filter does not matter and red/green read as source x/y: the
    boxes agree to within one output pixel (torchvision rounds the resized image's sides and
    the crop offset in resized pixels; FFCV crops int(0.875 x side) source pixels). Measured:
    1.35 source px at 48 (one output pixel is 2.7), 0.49 at 96."""
    for res in (48, 96):
        ours, _ = pixels(loader(gradient_data / "val", res=res))
        pil, _ = pixels(loader(gradient_data / "val", res=res, backend="pil"))
        assert (ours - pil)[:, :2].abs().mean() < 150 * 0.875 / res


def boxes_seen(images: torch.Tensor, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(width, height, flipped) of each crop of the gradient images, read from its pixels:
    the first and last output columns average the source columns w/res wide at each end."""
    red, green = images[:, 0].double(), images[:, 1].double()
    dx = (red[:, :, -1] - red[:, :, 0]).mean(1).numpy()
    dy = (green[:, -1, :] - green[:, 0, :]).mean(1).numpy()
    stretch = res / (res - 1)
    return np.abs(dx) * stretch, dy * stretch, dx < 0


def test_train_crops_follow_torchvision_sampler(gradient_data):
    res, epochs = 32, 24
    train_loader = loader(gradient_data / "train", res=res, batch_size=16, augment="rrc", shuffle=True)
    seen = []
    for epoch in range(epochs):
        train_loader.set_epoch(epoch)
        seen.append(pixels(train_loader)[0])
    w, h, flipped = boxes_seen(torch.cat(seen), res)
    torch.manual_seed(0)
    image = torch.zeros(3, 150, 200)
    ref = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])[2:] for _ in range(len(w))])
    area, ref_area = w * h / (200 * 150), ref[:, 0] * ref[:, 1] / (200 * 150)
    aspect, ref_aspect = np.log(w / h), np.log(ref[:, 1] / ref[:, 0])
    bound = tol.ks_critical(len(w), len(ref))
    assert ks_distance(area, ref_area) < bound and ks_distance(aspect, ref_aspect) < bound
    assert abs(np.sqrt(area).mean() - np.sqrt(ref_area).mean()) < 0.02
    assert 0.45 < flipped.mean() < 0.55


def test_result_does_not_depend_on_thread_count(betons):
    one = pixels(loader(betons / "train", augment="rrc", shuffle=True, workers=1))
    two = pixels(loader(betons / "train", augment="rrc", shuffle=True, workers=2))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_d_plus_batches_hold_copies_with_their_own_crops(betons, gradient_data):
    """D+ at two sides: 4 distinct images per batch, in 4 copies at 32 px and 1 at 64 px;
    every image once per epoch, its copies with its label and each from its own crop box
    (read from the gradient images' pixels)."""
    policy = MixSize((32, 64), (1, 1), batch_size=4, mode="D+", seed=0)
    shapes, first_copies = [], []
    for x, y in loader(betons / "train", augment="rrc", shuffle=True, policy=policy):
        k = len(y) // 4
        shapes.append((len(y), x.shape[-1]))
        assert (y.view(4, k) == y.view(4, k)[:, :1]).all(), "copies of one image share its label"
        first_copies += y[::k].tolist()
    assert shapes == [(s.batch_size, s.res) for s in policy.plan(0, 48, drop_last=True)]
    assert set(shapes) == {(16, 32), (4, 64)}
    assert sorted(Counter(first_copies).values()) == [16, 16, 16]  # tiny_data: 3 classes x 16
    for x, _ in loader(gradient_data / "train", augment="rrc", shuffle=True, policy=policy):
        if x.shape[-1] > 32:
            continue
        w, h, _ = boxes_seen(grey_levels(x), 32)
        boxes = np.stack([w, h], axis=1).reshape(4, 4, 2)
        assert all(np.ptp(copies, axis=0).max() > 1 for copies in boxes), "each copy has its own crop"


def test_da2_crop_is_the_centre_square_shifted_horizontally(gradient_data):
    """Test DA2 read from the gradient images' pixels: every crop has the centre square's size
    (int(0.875 x 150) = 131 px) and row; its column moves by up to the centre offset (34 px)
    both ways; half are flipped."""
    res = 32
    images = torch.cat(
        [
            pixels(
                loader(gradient_data / "train", res=res, batch_size=16, augment="center_shift", shuffle=True, seed=s)
            )[0]
            for s in range(4)
        ]
    )
    w, h, flipped = boxes_seen(images, res)
    np.testing.assert_allclose(w, 131, atol=2)
    np.testing.assert_allclose(h, 131, atol=2)
    red, green = images[:, 0].mean(dim=(1, 2)).numpy(), images[:, 1].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(green, green.mean(), atol=0.5)  # the row is the centre crop's
    assert abs(green.mean() - (9 + 131 / 2)) < 1.5
    shift = red - (34 + 131 / 2)
    assert np.abs(shift).max() <= 34 + 1.5 and shift.min() < -20 and shift.max() > 20
    assert 0.3 < flipped.mean() < 0.7


def test_repeated_copies_get_their_own_crops_across_batches(gradient_data):
    """Batches of 2 with 3 copies per image: copies of one image meet the same slot in other
    batches, and still crop differently (the decoder's seed includes the batch)."""
    ra = loader(gradient_data / "train", batch_size=2, augment="rrc", shuffle=True, repeats=3)
    images, _ = pixels(ra)
    ids = np.concatenate(ra.loader.batches)
    assert sorted(Counter(ids.tolist()).values()) == [2] + [3] * 20  # 64 // 3 images; the last batch of 1 is dropped
    for i in set(ids.tolist()):
        copies = images[torch.from_numpy(ids == i)]
        assert not any(torch.equal(copies[a], copies[b]) for a, b in combinations(range(len(copies)), 2))


def compiled_overloads(ffcv_loader) -> int:
    """Number of numba compilations behind the FFCV pipeline."""
    stages, _ = ffcv_loader.loader.code
    dispatchers = {id(f): f for stage, _ in stages for f in stage.__globals__.values() if hasattr(f, "signatures")}
    return sum(len(f.signatures) for f in dispatchers.values())


def test_compilation_happens_before_the_first_epoch(betons):
    """So that epoch 0's throughput does not include numba's JIT, nor a resolution change."""
    ramp = loader(betons / "train", augment="rrc", shuffle=True, policy=LinearRamp(32, 64, 0, 1, 8, step=32))
    compiled = compiled_overloads(ramp)
    assert compiled > 0 and ramp.compile_seconds > 0
    assert {x.shape[-1] for x, _ in ramp} == {32}
    ramp.set_epoch(1)
    assert {x.shape[-1] for x, _ in ramp} == {64}
    assert compiled_overloads(ramp) == compiled


@dataclass(frozen=True)
class FixedPlan:
    steps: tuple[Step, ...]

    def plan(self, epoch, num_samples, drop_last):
        return list(self.steps)


def test_batches_of_mixed_sides_equal_constant_size_ones(betons):
    """Each batch of a plan that changes side and size per batch holds the pixels a
    one-size loader gives the same images (centre crops are deterministic), without any
    compilation beyond the constructor's."""
    plan = FixedPlan((Step(48, 4), Step(32, 8), Step(64, 2), Step(32, 4)))
    mixed = loader(betons / "val", policy=plan)
    compiled = compiled_overloads(mixed)
    start = 0
    for (images, labels), step in zip(mixed, plan.steps, strict=True):
        same, same_labels = pixels(loader(betons / "val", res=step.res, batch_size=18))
        assert images.shape == (step.batch_size, 3, step.res, step.res)
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(pixels([(images, labels)])[0], same[start : start + step.batch_size])
        assert torch.equal(labels, same_labels[start : start + step.batch_size])
        start += step.batch_size
    assert compiled_overloads(mixed) == compiled


def test_device_copy_fills_the_front_of_the_epoch_buffer():
    """The copy FFCV's pipeline makes on a GPU, run on the CPU: a (B, S, S, 3) batch lands
    in the front of the buffer allocated for the epoch's largest batch and side."""
    require_ffcv()  # first: a bare `import ffcv` sets torch's thread count for the whole session
    from loaders.ffcv.decoders import CompactToDevice

    copy = CompactToDevice(torch.device("cpu")).generate_code()
    buffer = torch.zeros(8, 64, 64, 3, dtype=torch.uint8)
    batch = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    out = copy(batch, buffer)
    assert torch.equal(out, batch) and out.data_ptr() == buffer.data_ptr() and out.is_contiguous()


def test_torch_keeps_its_thread_count_through_epochs(betons):
    """FFCV sets torch's thread count to its decoding threads when an epoch starts; the
    trainer's count must survive it (a leak makes in-process training differ from the same
    run in a subprocess)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        train_loader = loader(betons / "train", augment="rrc", shuffle=True)
        for epoch in range(10):
            train_loader.set_epoch(epoch)
            assert sum(len(y) for _, y in train_loader) == 48 and torch.get_num_threads() == 3, epoch
    finally:
        torch.set_num_threads(threads)


def test_split_folder_is_written_to_the_cache_once(data_copy, capfd):
    loader(data_copy / "val")
    assert "writing" in capfd.readouterr().err
    loader(data_copy / "val")
    assert "writing" not in capfd.readouterr().err
    first = first_image(data_copy, "val")
    (first.parent / "copy.JPEG").write_bytes(first.read_bytes())
    _, labels = pixels(loader(data_copy / "val"))
    assert "writing" in capfd.readouterr().err and len(labels) == 19


def test_bad_images_fail_the_write_or_are_skipped(data_copy, tmp_path):
    bad = first_image(data_copy)
    truncate(bad)
    args = ["write", "--data", str(data_copy), "--out", str(tmp_path), "--splits", "train", "--no-progress"]
    with pytest.raises(BadDataError, match=bad.name):  # the command line prints it (tests/test_console.py)
        write_main(args)
    assert not (tmp_path / "train.beton").exists()
    write_main(args + ["--skip-bad"])
    meta = json.loads((tmp_path / "train.beton.json").read_text())
    assert meta["images"] == 47 and sum(meta["skipped"].values()) == 1
    assert loader(tmp_path / "train").skipped == meta["skipped"]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100)), "not an FFCV .beton"),
        (lambda p: p.write_bytes(b""), "shorter than its header"),
        (lambda p: p.with_name(p.name + ".json").write_text("{"), "class map"),
    ],
)
def test_damaged_beton_is_named(betons, tmp_path, damage, message):
    path = tmp_path / "val.beton"
    path.write_bytes((betons / "val.beton").read_bytes())
    path.with_name("val.beton.json").write_bytes((betons / "val.beton.json").read_bytes())
    damage(path)
    with pytest.raises(BadDataError, match=rf"(?s){path}.*{message}|{message}.*{path}"):
        loader(path)


def with_image_meta(path, sample, **values) -> None:
    """Rewrite one sample's stored image record (width, height, mode) in the file, as a damaged
    or hostile file would have it."""
    from ffcv.reader import Reader
    from ffcv.types import FieldDescType, HeaderType

    reader = Reader(str(path))
    record = reader.metadata.copy()
    for key, value in values.items():
        record[f"f{reader.field_names.index('image')}"][key][sample] = value
    with open(path, "r+b") as f:
        f.seek(HeaderType.itemsize + reader.num_fields * FieldDescType.itemsize)
        f.write(record.tobytes())


@pytest.mark.parametrize(
    "claims,message",
    [
        ({0: {"width": 65535}, 1: {"height": 65535}}, "sample 0 claims a width of 65535 px and sample 1 a height"),
        ({3: {"width": 10}}, r"raw sample 3 claims 10 x \d+ px \(x 3 bytes\) but stores \d+ bytes"),
    ],
)
def test_stored_sizes_are_checked_before_ffcv_allocates(betons, tmp_path, claims, message):
    path = tmp_path / "val.beton"
    path.write_bytes((betons / "val.beton").read_bytes())
    path.with_name("val.beton.json").write_bytes((betons / "val.beton.json").read_bytes())
    loader(path)  # sound as written
    for sample, values in claims.items():
        with_image_meta(path, sample, **values)
    with pytest.raises(BadDataError, match=rf"{path}.*{message}"):
        loader(path)


def test_missing_ffcv_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ffcv", None)
    with pytest.raises(ImportError, match=r"apt-get install libturbojpeg0-dev.*pip install"):
        require_ffcv()


def test_train_finetune_sweep_through_ffcv(betons, tmp_path):
    fast = ["--loader", "ffcv", "--data", str(betons), "--batch-size", "8", "--workers", "1", "--no-progress"]
    job("train", *fast, "--epochs", "1", "--train-res", "32", "--out", tmp_path / "t")
    metrics = json_lines(tmp_path / "t" / "metrics.jsonl")[0]
    assert metrics["train_images"] == 48 and metrics["val_images"] == 18
    job("finetune", *fast, "--checkpoint", tmp_path / "t", "--epochs", "1", "--out", tmp_path / "f")
    rows = job("sweep", *fast, "--checkpoint", tmp_path / "f", "--test-res", "32,48")
    assert [r["test_res"] for r in rows] == [32, 48] and all(r["images"] == 18 for r in rows)
