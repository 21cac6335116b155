"""The CUDA paths, each beside the same test on the CPU: every backend with a device path (pil:
pinned host batches; dali: "mixed" decoders; nvjpeg: nvJPEG; ffcv: its device copy) keeps the
loader contract on the GPU in fp16 and bf16 and agrees with its own CPU pixels; the trainer
steps under fp16 with the gradient scaler and under bf16; the fixres job runs on the GPU.

Tests marked `cuda` need a CUDA device and are skipped without one (`pytest -m cuda` runs them
alone; bench/gpu_check.py runs them first). The CPU twins (bf16 batches, bf16 autocast) run
everywhere, so the body of every test also runs in CI. A backend whose library is not installed
(DALI, FFCV) is skipped with the reason.
"""

import numpy as np
import pytest
import torch
from test_loaders import make
from torch import nn

from app.engine import train_epoch
from loaders.nvjpeg import crop_batch
from loaders.prefetch import prefetched
from pipeline.distributed import DistContext
from pipeline.models import create_model
from pipeline.optim import LrSchedule, make_sgd
from pipeline.precision import resolve_precision
from tests import tolerances as tol
from tests.helpers import ffcv_in_the_slow_tier, grey_levels, job

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible to PyTorch")
DEVICE_BACKENDS = ("pil", "dali", "nvjpeg", "ffcv")
TARGETS = {
    "cpu-bf16": ("cpu", torch.bfloat16),
    "cuda-fp16": ("cuda", torch.float16),
    "cuda-bf16": ("cuda", torch.bfloat16),
}


def targets(*names):
    return [
        pytest.param(*TARGETS[n], id=n, marks=[pytest.mark.cuda, NO_CUDA] if n.startswith("cuda") else [])
        for n in names
    ]


def open_loader(data, backend, device, dtype, **kw):
    """A loader delivering to `device` in `dtype` (two workers on the GPU, whose batches are
    pinned), or a skip when the backend's library is missing here."""
    try:
        return make(data, backend, device=torch.device(device), dtype=dtype, workers=2 if device == "cuda" else 0, **kw)
    except ImportError as e:
        pytest.skip(f"{backend} is not installed here: {str(e)[:120]}")


@pytest.mark.parametrize("device,dtype", targets("cpu-bf16", "cuda-fp16", "cuda-bf16"))
@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(DEVICE_BACKENDS))
def test_contract_on_the_device(tiny_data, backend, device, dtype):
    """Shape, dtype, channels-last, device; and every batch still holds its values after the
    batches that follow it (no buffer of the backend reused under the trainer's feet)."""
    loader = open_loader(tiny_data, backend, device, dtype, res=40, batch_size=10)
    kept = [(x, y, x.clone(), y.clone()) for x, y in loader]
    assert len(kept) == len(loader) == 4
    for x, y, x_then, y_then in kept:
        assert x.shape == (10, 3, 40, 40) and x.dtype == dtype and x.is_contiguous(memory_format=torch.channels_last)
        assert x.device.type == device and y.device == x.device and y.dtype == torch.int64
        assert 0 <= int(y.min()) and int(y.max()) < 3 and bool(x.isfinite().all()) and float(x.abs().max()) < 3
        assert torch.equal(x, x_then) and torch.equal(y, y_then)


@pytest.mark.parametrize("device,dtype", targets("cpu-bf16", "cuda-bf16"))
def test_synthetic_batches_are_made_on_the_device(tiny_data, device, dtype):
    """The compute bound the benchmarks divide by: batches made where the model runs, in its dtype."""
    loader = open_loader(tiny_data, "synthetic", device, dtype, res=40, batch_size=10)
    for x, y in loader:
        assert x.shape == (10, 3, 40, 40) and x.dtype == dtype and x.is_contiguous(memory_format=torch.channels_last)
        assert x.device.type == y.device.type == device and 0 <= int(y.min()) and int(y.max()) < 3
    assert len(loader) == 4


@pytest.mark.parametrize("device,dtype", targets("cpu-bf16", "cuda-bf16"))
@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(DEVICE_BACKENDS))
def test_set_epoch_replays_an_epoch_on_the_device(tiny_data, backend, device, dtype):
    loader = open_loader(tiny_data, backend, device, dtype, seed=3)
    loader.set_epoch(1)
    first = [(x.clone(), y.clone()) for x, y in loader]
    loader.set_epoch(2)
    assert not all(torch.equal(a, x) for (a, _), (x, _) in zip(first, loader))
    loader.set_epoch(1)
    again = [(x.clone(), y.clone()) for x, y in loader]
    assert all(torch.equal(a, b) and torch.equal(y, z) for (a, y), (b, z) in zip(first, again))


@pytest.mark.parametrize("device,dtype", targets("cpu-bf16", "cuda-fp16", "cuda-bf16"))
@pytest.mark.parametrize(
    "backend,augment", ffcv_in_the_slow_tier([(b, a) for b in DEVICE_BACKENDS for a in ("rrc", "center")])
)
def test_pixels_agree_with_the_cpu_path(tiny_data, backend, augment, device, dtype):
    """The same plan through the device path and through the CPU path in fp32. pil and ffcv move
    the same uint8 pixels: they differ by the batch dtype's rounding only. nvjpeg and dali decode
    with nvJPEG on the GPU, libjpeg-turbo on the CPU (other IDCT and chroma upsampling): on top
    of that, the decoders' own difference (tolerances.GPU_DECODE_*)."""
    kw = dict(res=48, batch_size=8, augment=augment, shuffle=augment == "rrc", seed=5)
    ours = torch.cat([grey_levels(x) for x, _ in open_loader(tiny_data, backend, device, dtype, **kw)])
    cpu = torch.cat([grey_levels(x) for x, _ in open_loader(tiny_data, backend, "cpu", torch.float32, **kw)])
    assert ours.shape == cpu.shape
    diff = (ours - cpu).abs()
    if backend in ("nvjpeg", "dali") and device == "cuda":
        assert diff.mean(dim=(1, 2, 3)).max() < tol.GPU_DECODE_MEAN
        assert abs(float((ours - cpu).mean())) < tol.GPU_DECODE_BIAS
    else:
        assert float(diff.max()) <= tol.DTYPE_WORST[str(dtype).removeprefix("torch.")]


@pytest.mark.parametrize("device,dtype", targets("cpu-bf16", "cuda-bf16"))
def test_pil_host_batches_are_pinned_on_cuda(tiny_data, device, dtype):
    """Pinned host memory is what makes the uint8 copy to the GPU asynchronous."""
    loader = open_loader(tiny_data, "pil", device, dtype)
    images, labels = next(iter(loader.loader))  # the host batch, before it moves to the device
    assert images.is_pinned() == labels.is_pinned() == (device == "cuda")


@pytest.mark.cuda
@NO_CUDA
def test_nvjpeg_crop_memory_is_bounded_by_the_crop_regions():
    """One 3000 x 2000 photo among 63 small images, every box 64 px: the float canvas holds the
    regions (64 x ~66 x 66 x 3 x 4 bytes ~ 3 MB), not 64 copies of the photo's extent (4.6 GB)."""
    device = torch.device("cuda")
    images = [torch.randint(0, 256, (3, 2000, 3000), dtype=torch.uint8, device=device)]
    images += [torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8, device=device) for _ in range(63)]
    boxes = torch.tensor([[1000.0, 900.0, 64.0, 64.0]] + [[10.0, 20.0, 64.0, 64.0]] * 63, dtype=torch.float64)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = crop_batch(images, boxes, torch.zeros(64, dtype=torch.bool), 32)
    torch.cuda.synchronize()
    assert out.shape == (64, 32, 32, 3) and torch.cuda.max_memory_allocated() - before < 64 * 2**20


GPU_SLEEP = 50_000_000  # cycles of torch.cuda._sleep: tens of milliseconds, far longer than a fill
ELEMENTS = 1 << 20


@pytest.mark.cuda
@NO_CUDA
def test_prefetched_batches_wait_for_the_producer_stream():
    """The producer fills each batch on its own stream after a long kernel; the consumer reads it
    at once on its stream, and must see the filled values (the event it waits on)."""
    device = torch.device("cuda")
    streams = []

    def late_fill(i):
        streams.append(torch.cuda.current_stream(device))
        torch.cuda._sleep(GPU_SLEEP)
        return (torch.full((ELEMENTS,), float(i), device=device),)

    sums = [x.sum() for (x,) in prefetched(range(6), late_fill, device)]
    assert [float(s) for s in sums] == [float(i * ELEMENTS) for i in range(6)]
    assert torch.cuda.current_stream(device) not in streams


@pytest.mark.cuda
@NO_CUDA
def test_prefetched_batch_memory_is_not_refilled_before_the_consumer_read_it():
    """The consumer queues a slow read of each batch, then drops it; the producer, on its own
    stream, fills new batches of the same size at once. Without record_stream the allocator would
    hand it the dropped batch's memory before the read ran."""
    device = torch.device("cuda")
    sums = []
    for (x,) in prefetched(range(8), lambda i: (torch.full((ELEMENTS,), float(i), device=device),), device):
        torch.cuda._sleep(GPU_SLEEP)
        sums.append(x.sum())
    assert [float(s) for s in sums] == [float(i * ELEMENTS) for i in range(8)]


def trained_weights_move(precision, loader, epochs: int) -> tuple[dict, torch.amp.GradScaler, nn.Module]:
    model = create_model("resnet_tiny", 3).to(precision.device, memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer, scaler = make_sgd(model, 0.9, 0.0), precision.scaler()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        stats = train_epoch(
            model,
            loader,
            optimizer,
            scaler,
            nn.CrossEntropyLoss(),
            LrSchedule(0.2, epochs),
            epoch,
            precision,
            DistContext(),
            progress=False,
        )
        assert np.isfinite(stats["train_loss"]) and stats["train_images"] == 40
    return before, scaler, model


@pytest.mark.parametrize(
    "device,amp",
    [
        pytest.param("cpu", "bf16", id="cpu-bf16", marks=pytest.mark.slow),  # bf16 convolutions are slow on a CPU
        *[pytest.param("cuda", a, id=f"cuda-{a}", marks=[pytest.mark.cuda, NO_CUDA]) for a in ("fp16", "bf16")],
    ],
)
def test_train_steps_under_amp(tiny_data, device, amp):
    """A real loader, channels-last, autocast; fp16 through the gradient scaler (its first steps
    may overflow and be skipped: after 3 epochs of 4 steps the weights must have moved, and stay fp32)."""
    precision = resolve_precision(torch.device(device), amp)
    loader = open_loader(tiny_data, "pil", device, precision.input_dtype, res=32, batch_size=10)
    before, scaler, model = trained_weights_move(precision, loader, epochs=3 if amp == "fp16" else 1)
    assert scaler.is_enabled() == (amp == "fp16") and (not scaler.is_enabled() or 0 < scaler.get_scale() < 2.0**17)
    weights = {k: v for k, v in model.state_dict().items() if k.endswith("weight")}
    assert all(v.dtype == torch.float32 and bool(v.isfinite().all()) for v in weights.values())
    assert any(not torch.equal(v, before[k]) for k, v in weights.items())
    with torch.no_grad(), precision.autocast():
        x, _ = next(iter(loader))
        assert model(x).dtype == precision.amp_dtype


@pytest.mark.cuda
@pytest.mark.slow
@NO_CUDA
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_fixres_job_on_the_gpu(tiny_data, tmp_path, backend):
    """train -> sweep -> fine-tune -> sweep on the demo generator's data, on the GPU with the
    default AMP (its CPU twin is tests/test_train.py's fixres test)."""
    try:
        report = job(
            "fixres",
            "--data",
            tiny_data,
            "--device",
            "cuda",
            "--loader",
            backend,
            "--epochs",
            2,
            "--train-res",
            32,
            "--sweep-res",
            "32,40",
            "--finetune-epochs",
            1,
            "--batch-size",
            8,
            "--workers",
            2,
            "--no-progress",
            "--out",
            tmp_path / "fx",
        )
    except ImportError as e:
        pytest.skip(f"{backend} is not installed here: {str(e)[:120]}")
    assert report["finetune_res"] == 40 and [r["test_res"] for r in report["after"]] == [32, 40]
    assert all(0 <= r["top1"] <= 100 and r["images"] == 18 for r in report["after"])
    assert (tmp_path / "fx" / "report.md").stat().st_size > 0
