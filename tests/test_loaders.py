"""The loader contract, for every backend: shape, dtype, layout, len, determinism, coverage."""

import os
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from loaders import BACKENDS, create_loader
from loaders.base import LoaderConfig, epoch_order, jitter_plan, normalised
from loaders.plan import plan_epoch
from pipeline.sizes import ConstantSize, LinearRamp
from tests import tolerances as tol
from tests.helpers import MEAN_255, STD_255, ffcv_in_the_slow_tier, grey_levels


def make(data, backend, split="train", res=32, batch_size=8, augment="rrc", shuffle=True, workers=0, **kw):
    cfg = LoaderConfig(
        backend=backend,
        root=str(data / split),
        policy=kw.pop("policy", ConstantSize(res, batch_size)),
        augment=augment,
        shuffle=shuffle,
        workers=workers,
        **kw,
    )
    return create_loader(cfg, progress=False)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
@pytest.mark.parametrize(
    "augment,shuffle,jitter", [("rrc", True, 0.0), ("center", False, 0.0), ("center_shift", True, 0.3)]
)
def test_contract(tiny_data, backend, augment, shuffle, jitter):
    loader = make(tiny_data, backend, res=40, batch_size=10, augment=augment, shuffle=shuffle, color_jitter=jitter)
    out = batches(loader)
    assert len(out) == len(loader) == (4 if shuffle else 5)  # 48 images: 4 full batches, or 5 with the rest
    assert sum(len(y) for _, y in out) == (40 if shuffle else 48)
    for x, y in out:
        assert x.shape[1:] == (3, 40, 40) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert 0 <= int(y.min()) and int(y.max()) < len(loader.classes) == 3
        assert x.device == y.device == torch.device("cpu")


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
def test_set_epoch_is_the_only_source_of_randomness(tiny_data, backend):
    a, b = make(tiny_data, backend, seed=3), make(tiny_data, backend, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    first, second = batches(a), batches(b)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, second))
    b.set_epoch(2)
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, batches(b)))
    b.set_epoch(1)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, batches(b)))


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
def test_resolution_change_between_epochs_takes_effect(tiny_data, backend):
    loader = make(tiny_data, backend, policy=LinearRamp(32, 64, 0, 1, 8, step=32))
    assert {x.shape[-1] for x, _ in loader} == {32}
    loader.set_epoch(1)
    assert {x.shape[-1] for x, _ in loader} == {64}


def test_pil_result_does_not_depend_on_workers_or_jpeg_decoder(tiny_data):
    one = batches(make(tiny_data, "pil", workers=0))
    for kw in ({"workers": 2}, {"workers": 2, "worker_threads": False}, {"workers": 1}, {"turbo_decode": False}):
        other = batches(make(tiny_data, "pil", **kw))
        assert len(other) == len(one)
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(one, other)), kw


def test_pil_eval_equals_torchvision_resize_centercrop(tiny_data):
    """Same JPEGs, Pillow backend vs torchvision's Resize(K/0.875) + CenterCrop(K): they
    differ by rounding only (at most 1 grey level, almost never). With full decoding: the
    reduced DCT scale's own difference (resampling noise) is bounded in test_pil_decode.py."""
    loader = make(
        tiny_data, "pil", split="val", res=48, batch_size=6, augment="center", shuffle=False, reduced_decode=False
    )
    ours = torch.cat([grey_levels(x) for x, _ in loader]).round()
    labels = torch.cat([y for _, y in loader])
    reference = v2.Compose([v2.Resize(55), v2.CenterCrop(48), v2.PILToTensor()])
    index = loader.index
    ref = torch.stack([reference(Image.open(p).convert("RGB")) for p in index.paths]).float()
    diff = (ours - ref).abs()
    assert diff.max() <= tol.ONE_ROUNDING_WORST and diff.mean() < tol.PIL_TORCHVISION_MEAN
    assert labels.tolist() == index.labels.tolist()  # every val image once, in order, labelled by folder


@pytest.mark.parametrize("channels_last", [True, False])
def test_normalised_is_mean_and_std_in_the_input_layout(channels_last):
    """Both of normalised's ways (rows of a channels-last batch, broadcast otherwise) give
    (x - mean) / std, and keep the layout: a trainer gets channels-last from channels-last."""
    nhwc = torch.randint(0, 256, (3, 5, 7, 3), dtype=torch.uint8)
    images = nhwc.permute(0, 3, 1, 2) if channels_last else nhwc.permute(0, 3, 1, 2).contiguous()
    out = normalised(images, torch.float32)
    assert out.shape == (3, 3, 5, 7) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out, (images.float() - MEAN_255) / STD_255)


def test_train_flips_and_crops_vary(tiny_data):
    x, _ = next(iter(make(tiny_data, "pil", batch_size=48)))
    y, _ = next(iter(make(tiny_data, "pil", batch_size=48, seed=1)))
    assert not torch.equal(x, y)


def test_distributed_shards():
    shards = [epoch_order(101, seed=0, epoch=3, rank=r, world_size=2, shuffle=True) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 50 and not set(shards[0]) & set(shards[1])
    evals = [epoch_order(101, 0, 3, r, 2, shuffle=False) for r in (0, 1)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(101))


@pytest.mark.parametrize("world_size", [1, 2, 4])
@pytest.mark.parametrize("num_samples", [48, 101, 7])
@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_repeated_augmentation_shows_every_image_of_the_epoch_exactly_k_times(world_size, num_samples, repeats):
    shards = [epoch_order(num_samples, 0, 5, r, world_size, shuffle=True, repeats=repeats) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # equal shards: the same size plan on every rank
    counts = Counter(np.concatenate(shards).tolist())
    assert set(counts.values()) <= {repeats}
    step = world_size // np.gcd(repeats, world_size)
    assert len(counts) == num_samples // repeats // step * step  # about N/k images: an epoch costs N
    if world_size >= repeats:  # copies spread over ranks
        assert all(len({r for r, s in enumerate(shards) if i in s}) == repeats for i in counts)
    again = epoch_order(num_samples, 0, 5, 0, world_size, shuffle=True, repeats=repeats)
    assert np.array_equal(again, shards[0])  # every rank plans the same epoch from (seed, epoch) alone
    other = epoch_order(num_samples, 0, 6, 0, world_size, shuffle=True, repeats=repeats)
    assert len(other) == len(again) and (num_samples < 10 or not np.array_equal(other, again))


@pytest.mark.parametrize("augment,distinct", [("rrc", 3), ("center_shift", 2)])
def test_copies_of_an_image_get_their_own_crops(tiny_data, augment, distinct):
    """Each copy draws its own view; DA2 has few (a shift of a few pixels at 32 px, a flip), so
    two of three copies may share one."""
    loader = make(tiny_data, "pil", batch_size=5, augment=augment, repeats=3)
    tasks = plan_epoch(loader.cfg, loader.index, 0)
    ids = np.concatenate([t.indices for t in tasks])
    boxes = np.concatenate([t.boxes for t in tasks])
    flips = np.concatenate([t.flips for t in tasks])
    assert Counter(ids.tolist()).most_common()[-1][1] == 3
    views = [{(*boxes[ids == i][c].round(3).tolist(), bool(flips[ids == i][c])) for c in range(3)} for i in set(ids)]
    assert np.mean([len(v) >= distinct for v in views]) > 0.9


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
def test_repeated_augmentation_on_every_backend(tiny_data, backend):
    loader = make(tiny_data, backend, batch_size=6, repeats=3)
    out = batches(loader)
    assert len(out) == len(loader) == 8 and all(x.shape == (6, 3, 32, 32) for x, _ in out)  # 16 images x 3
    if backend != "synthetic":  # its labels are random
        label_counts = Counter(torch.cat([y for _, y in out]).tolist())
        assert all(c % 3 == 0 for c in label_counts.values())


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(["dali", "nvjpeg", "ffcv"]))
def test_every_backend_jitters_like_the_pillow_one(tiny_data, backend):
    """The factors are planned, not drawn by the decoder: on the same eval crops each backend's
    jittered batch is close to Pillow's jittered one (decoders differ by a few grey levels)
    and far from Pillow's plain one."""

    def grey(b, jitter):
        loader = make(
            tiny_data, b, split="val", res=40, batch_size=6, augment="center", shuffle=False, color_jitter=jitter
        )
        return torch.cat([grey_levels(x) for x, _ in loader])

    ours = grey(backend, 0.5)
    same, plain = (ours - grey("pil", 0.5)).abs().mean(), (ours - grey("pil", 0.0)).abs().mean()
    assert same < tol.WORST_BACKEND_EVAL_MEAN and plain > 2 * same


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible to PyTorch"),
            ],
        ),
    ],
)
def test_jitter_factors_reach_the_device_once_per_epoch(device):
    """Every batch's factors are a view of one tensor on the device (one copy per epoch, not one
    per batch), and they are the epoch's factors whatever the split into batches."""
    cfg = LoaderConfig("pil", None, ConstantSize(32, 4), "rrc", True, device=torch.device(device), color_jitter=0.4)
    plan = jitter_plan(cfg, 2, [4, 4, 3])
    assert [tuple(f.shape) for f in plan] == [(4, 3), (4, 3), (3, 3)]
    assert all(f.device.type == device for f in plan)
    assert len({f.untyped_storage().data_ptr() for f in plan}) == 1
    torch.testing.assert_close(torch.cat(plan), jitter_plan(cfg, 2, [11])[0], rtol=0, atol=0)
    assert not torch.equal(torch.cat(plan), torch.cat(jitter_plan(cfg, 3, [4, 4, 3]))), "drawn per epoch"
    assert bool(((torch.cat(plan) >= 0.6) & (torch.cat(plan) <= 1.4)).all())
    assert jitter_plan(LoaderConfig("pil", None, ConstantSize(32, 4), "rrc", True), 2, [4, 4]) == [None, None]


def test_unknown_backend_and_bad_values(tiny_data):
    with pytest.raises(ValueError, match="'nope'"):
        make(tiny_data, "nope")
    with pytest.raises(ValueError, match="augment"):
        make(tiny_data, "pil", augment="mixup")
    with pytest.raises(ValueError, match="resolution"):
        make(tiny_data, "pil", res=0)
    with pytest.raises(ValueError, match="repeated augmentation"):
        make(tiny_data, "pil", repeats=0)
    with pytest.raises(ValueError, match="jitter"):
        make(tiny_data, "pil", color_jitter=1.5)


def test_split_by_plan_repeats_copies_in_place():
    from loaders.base import split_by_plan
    from pipeline.sizes import Step

    chunks = split_by_plan(np.arange(10, 20), [Step(64, 4), Step(32, 6, copies=3), Step(64, 4)])
    assert [c.tolist() for c in chunks] == [[10, 11, 12, 13], [14, 14, 14, 15, 15, 15], [16, 17, 18, 19]]
    with pytest.raises(ValueError, match="asks for 12"):
        split_by_plan(np.arange(10), [Step(64, 12)])


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
def test_mixsize_b_plus_batches_follow_the_plan(tiny_data, backend):
    from pipeline.sizes import MixSize

    policy = MixSize((32, 48), (1, 1), batch_size=4, mode="B+", ref_size=48, seed=0)
    loader = make(tiny_data, backend, policy=policy)
    shapes = [(x.shape[0], x.shape[-1]) for x, _ in loader]
    assert shapes == [(s.batch_size, s.res) for s in policy.plan(0, 48, drop_last=True)]
    assert sum(n for n, _ in shapes) == 48 and {r for _, r in shapes} == {32, 48}


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(sorted(set(BACKENDS) - {"synthetic"})))
def test_mixsize_d_plus_copies_are_independent_crops(tiny_data, backend):
    from pipeline.sizes import MixSize

    policy = MixSize((32, 64), (1, 1), batch_size=4, mode="D+", seed=0)
    for x, y in make(tiny_data, backend, policy=policy):
        k = x.shape[0] // 4
        assert k == (4 if x.shape[-1] == 32 else 1)
        groups, labels = x.view(4, k, *x.shape[1:]), y.view(4, k)
        assert (labels == labels[:, :1]).all(), "copies of one image share its label"
        if k > 1:
            assert all(not torch.equal(g[0], g[1]) for g in groups), "each copy has its own crop"


@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier([b for b in BACKENDS if b != "synthetic"]))
def test_file_name_that_is_not_utf8_is_read(data_copy, backend):
    """File names are bytes on Linux: one that is not UTF-8 reaches every decoder as its bytes."""
    folder = sorted((data_copy / "val").iterdir())[0]
    victim = sorted(folder.iterdir())[0]
    os.rename(os.fsencode(victim), os.path.join(os.fsencode(folder), b"caf\xe9.JPEG"))
    images, labels = zip(*batches(make(data_copy, backend, split="val", augment="center", shuffle=False)))
    assert sum(len(y) for y in labels) == 18
    assert all(torch.isfinite(x.float()).all() for x in images)
