import copy

import pytest
import torch

from loaders import create_loader
from loaders.base import LoaderConfig
from pipeline.bn import batchnorm_layers, recalibrate_bn
from pipeline.distributed import DistContext
from pipeline.models import create_model
from pipeline.sizes import ConstantSize
from tests.helpers import CPU


def loader_at(data, res):
    cfg = LoaderConfig("pil", str(data / "train"), ConstantSize(res, 8), "center", shuffle=True, workers=0)
    return create_loader(cfg, progress=False)


def test_recalibration_moves_statistics_to_the_new_size_and_nothing_else(tiny_data):
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 3).to(memory_format=torch.channels_last)
    before = copy.deepcopy(model.state_dict())
    seen = recalibrate_bn(model, loader_at(tiny_data, 48), batches=4, precision=CPU, dist=DistContext())
    assert seen == 32
    after = model.state_dict()
    for key, value in before.items():
        if key.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, after[key]), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, after[key]), f"{key} must not change"
    for m in batchnorm_layers(model):
        assert m.momentum == 0.1, "the momentum is restored"
    assert model.training, "the mode the model came in is restored"


def test_recalibrated_statistics_are_those_of_the_new_size(tiny_data):
    """The first BN's running mean equals the mean over the batches used of its input,
    measured directly at that size (the stem conv is linear, so this is exact)."""
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 3).eval()
    loader = loader_at(tiny_data, 64)
    conv, bn = model.features[0], model.features[1]
    with torch.no_grad():
        direct = torch.stack([conv(x).mean(dim=(0, 2, 3)) for x, _ in loader])
    recalibrate_bn(model, loader, batches=len(loader), precision=CPU, dist=DistContext())
    torch.testing.assert_close(bn.running_mean, direct.mean(0), rtol=1e-4, atol=1e-5)


def test_bad_batch_count(tiny_data):
    with pytest.raises(ValueError, match="0"):
        recalibrate_bn(create_model("resnet_tiny", 3), loader_at(tiny_data, 32), 0, CPU, DistContext())
