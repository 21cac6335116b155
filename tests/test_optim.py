import pytest

from pipeline.models import create_model
from pipeline.optim import LrSchedule, make_sgd


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
