import pytest
import torch
from torch import nn

from pipeline.finetune import finetune_parameters, head_modules
from pipeline.models import compile_model, create_model, load_weights


@pytest.mark.parametrize("name", ["resnet_tiny", "resnet18", "resnet50", "timm/resnet18"])
def test_models_by_name_run_channels_last(name):
    model = create_model(name, num_classes=7).to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    assert model(x).shape == (2, 7)


def test_unknown_model():
    with pytest.raises(ValueError, match="'resnet9000'"):
        create_model("resnet9000", 10)


def test_head_of_a_resnet50_is_fc_and_the_last_bottleneck_bn():
    model = create_model("resnet50", 10)
    fc, bn = head_modules(model)
    assert fc is model.fc and bn is model.layer4[-1].bn3


def test_head_of_the_tiny_resnet_is_the_last_identity_block_bn():
    model = create_model("resnet_tiny", 10)
    fc, bn = head_modules(model)
    assert fc is model.fc and bn is model.features[-1].body[-1]
    assert isinstance(model.features[-1].shortcut, nn.Identity)


def test_finetune_parameters_freeze_everything_else():
    model = create_model("resnet_tiny", 5)
    params = finetune_parameters(model)
    fc, bn = head_modules(model)
    assert {id(p) for p in params} == {id(p) for p in [*fc.parameters(), *bn.parameters()]}
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in params}


def test_load_weights_checks_the_class_count(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("resnet18", 10).state_dict(), path)
    model = create_model("resnet18", 10)
    load_weights(model, str(path))
    with pytest.raises(ValueError, match=r"classifier fc.weight has 10 outputs but the model wants 5"):
        load_weights(create_model("resnet18", 5), str(path))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(model, str(tmp_path / "missing.pt"))


class Probe(nn.Module):
    """Notes whether its forward runs inside a torch.compile graph."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(torch.compiler.is_compiling())
        return x


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Probe(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def two_sgd_steps(model: nn.Module) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=gen).to(memory_format=torch.channels_last)
    y = torch.randint(4, (4,), generator=gen)
    losses = []
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow  # torch.compile runs a C++ compiler on its kernels
def test_compiled_model_trains_as_the_eager_one_and_keeps_its_state_dict_keys():
    """--compile on the CPU (TorchInductor through the C++ compiler): two SGD steps give the eager
    model's losses and weights, through a compiled graph, and checkpoints keep their keys."""
    eager, compiled = small_net(), compile_model(small_net())
    assert two_sgd_steps(compiled) == pytest.approx(two_sgd_steps(eager), rel=1e-4)
    assert compiled[3].seen == [True, True] and eager[3].seen == [False, False]  # both steps ran the graph
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    for k, v in eager.state_dict().items():
        assert torch.allclose(compiled.state_dict()[k].float(), v.float(), atol=1e-5), k
