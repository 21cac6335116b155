"""Model factory: the demo's small ResNet, torchvision models and timm models by name.

No weights are ever downloaded; `load_weights` reads a local state dict instead (for
instance torchvision's ResNet-50 file, to sweep it on ImageNet).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.tensorfile import read_tensors


def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A ResNet small enough to train on a laptop CPU in minutes: a stride-2 3x3 stem and
    basic blocks of widths 32-256. Like a ResNet-50 it ends in an identity block, so its last
    batch-norm layer is the one right before add -> ReLU -> global pooling -> linear: the
    part FixRes fine-tunes."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 2)):
        super().__init__()
        layers = [*conv_bn(3, widths[0], stride=2), nn.ReLU(inplace=True)]
        cin = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for b in range(count):
                layers.append(BasicBlock(cin, width, stride=2 if stage > 0 and b == 0 else 1))
                cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def create_model(name: str, num_classes: int) -> nn.Module:
    """`resnet_tiny`, any torchvision classification model (`resnet18`, `resnet50`, ...), or a
    timm model as `timm/<name>`."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if name == "resnet_tiny":
        return TinyResNet(num_classes)
    if name.startswith("timm/"):
        import timm

        return timm.create_model(name.removeprefix("timm/"), pretrained=False, num_classes=num_classes)
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(
            f"unknown model {name!r}: use resnet_tiny, a torchvision classification model "
            f"(e.g. resnet18, resnet50) or timm/<name>"
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def compile_model(model: nn.Module) -> nn.Module:
    """`model` with its forward compiled by torch.compile (TorchInductor), in place: its state
    dict keeps its keys, so checkpoints move between compiled and eager runs. Compiling happens
    at the first step of each new input shape (seconds to a minute); a MixSize run recompiles
    per side until torch switches to dynamic shapes."""
    model.compile()
    return model


def load_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict (raw, or a checkpoint of this project), with clear errors."""
    state = read_tensors(path, "weights file")
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} holds no state dict")
    state = state.get("model", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head = classifier_weight(model)
    if head in state and head in own and state[head].shape[0] != own[head].shape[0]:
        raise ValueError(
            f"weights {path}: the classifier {head} has {state[head].shape[0]} outputs but the model "
            f"wants {own[head].shape[0]} (the class count of the data): bring weights for these classes"
        )
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"weights {path} do not fit the model: " + "; ".join(mismatched[:5]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights {path} do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def classifier_slot(model: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the last linear layer, the classifier: where a
    layer is put in front of it or in its place."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear classifier")
    parent_name, _, child = names[-1].rpartition(".")
    return model.get_submodule(parent_name), child


def classifier_weight(model: nn.Module) -> str:
    """The state-dict key of the last linear layer's weight (fc.weight in a torchvision ResNet)."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
