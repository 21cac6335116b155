import copy

import pytest
import torch
from torch import nn

from pipeline.models import create_model
from pipeline.optim import LrSchedule, load_sgd_state, make_sgd, set_lr

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible to PyTorch")


def test_no_weight_decay_on_batchnorm_and_biases():
    model = create_model("resnet18", 10)
    decay, no_decay = make_sgd(model, 0.9, 1e-4).param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert any(p is model.fc.bias for p in no_decay["params"])
    assert any(p is model.bn1.weight for p in no_decay["params"])


def test_lr_scales_with_batch_and_follows_warmup_and_cosine():
    s = LrSchedule(base_lr=0.1, epochs=10, warmup_epochs=2)
    assert s.lr(2.0, 512) == pytest.approx(0.2)
    assert s.lr(2.0, 128) == pytest.approx(0.05)
    assert s.lr(1.0, 256) == pytest.approx(0.05, rel=1e-2)
    assert s.lr(6.0, 256) == pytest.approx(0.05)
    assert s.lr(10.0, 256) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule():
    s = LrSchedule(0.1, 120, schedule="step", step_every=30)
    assert [round(s.lr(e, 256), 6) for e in (0, 29.9, 30, 60, 90)] == [0.1, 0.1, 0.01, 0.001, 0.0001]


def test_bad_schedule():
    with pytest.raises(ValueError, match="'linear'"):
        LrSchedule(0.1, 10, schedule="linear")
    with pytest.raises(ValueError, match="-0.1"):
        LrSchedule(-0.1, 10)


def sgd_steps(model: nn.Module, optimizer: torch.optim.SGD, scaler: torch.amp.GradScaler, device: str) -> None:
    """Three SGD steps (momentum, weight decay, lr 0.1) on seeded data, through `scaler`."""
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 32, 32, generator=g).to(device, memory_format=torch.channels_last)
        y = torch.randint(0, 5, (4,), generator=g).to(device)
        set_lr(optimizer, 0.1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, NO_CUDA])])
def test_fused_sgd_where_the_device_has_it_and_the_same_steps_as_unfused(device):
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 5).to(device, memory_format=torch.channels_last)
    twin = copy.deepcopy(model)
    fused = make_sgd(model, 0.9, 1e-4)
    assert all(g["fused"] for g in fused.param_groups), f"{device} has a fused SGD kernel"
    unfused = make_sgd(twin, 0.9, 1e-4)
    for group in unfused.param_groups:
        group["fused"], group["foreach"] = False, False
    scale = device == "cuda"  # fp16's GradScaler: the fused step takes the scale on the device
    sgd_steps(model, fused, torch.amp.GradScaler(device, enabled=scale), device)
    sgd_steps(twin, unfused, torch.amp.GradScaler(device, enabled=scale), device)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_parameters_on_a_device_without_fused_sgd_get_the_default_kernel():
    model = create_model("resnet_tiny", 5).to("meta")
    assert not any(g["fused"] for g in make_sgd(model, 0.9, 0.0).param_groups)


def test_a_resumed_optimiser_keeps_its_own_kernel():
    """A checkpoint saved by an unfused optimiser (an older run) loads into a fused one without
    turning it back: under fp16 the GradScaler hands a fused optimiser the scale, which the
    unfused kernel refuses."""
    model = create_model("resnet_tiny", 5)
    old = make_sgd(model, 0.9, 0.0)
    for group in old.param_groups:
        group["fused"] = False
    sgd_steps(model, old, torch.amp.GradScaler("cpu", enabled=False), "cpu")
    new = make_sgd(model, 0.9, 0.0)
    load_sgd_state(new, old.state_dict())
    assert all(g["fused"] for g in new.param_groups)
    assert new.state_dict()["state"][0]["momentum_buffer"].equal(old.state_dict()["state"][0]["momentum_buffer"])


@pytest.mark.cuda
@NO_CUDA
def test_a_fused_fp16_step_does_not_wait_for_the_gpu():
    """GradScaler.step reads the inf check back (.item(), a synchronisation) unless the optimiser
    takes the scale itself, as the fused one does: sync debug mode turns a read-back into an error."""
    model = create_model("resnet_tiny", 5).cuda()
    optimizer, scaler = make_sgd(model, 0.9, 0.0), torch.amp.GradScaler("cuda")
    set_lr(optimizer, 0.1)
    x, y = torch.randn(4, 3, 32, 32, device="cuda"), torch.zeros(4, dtype=torch.long, device="cuda")
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    torch.cuda.set_sync_debug_mode("error")
    try:
        scaler.step(optimizer)
        scaler.update()
    finally:
        torch.cuda.set_sync_debug_mode("default")
