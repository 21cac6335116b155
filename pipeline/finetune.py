"""FixRes fine-tuning: which parameters adapt to the test resolution.

Raising K_test changes the statistics after global pooling (more spread, other sparsity).
The paper fixes this by fine-tuning, at K_test and with the test-time augmentation, only
the classifier and the batch-norm right before pooling. All batch-norm layers stay in train
mode meanwhile, so every layer's running statistics are re-estimated at K_test, while only
the head's parameters move.
"""

from __future__ import annotations

from torch import nn

# The fine-tuning augmentations of the paper's section 5, as (loader augmentation, colour-jitter
# strength): "test DA" (the default: the head learns the statistics it will see), "test DA2" and
# "train DA". The paper gives no jitter strength for test DA2; 0.05 is the ColorJitter of its
# released fine-tuning code. train DA is this project's training augmentation (no jitter).
FINETUNE_AUGMENTATIONS = {"test": ("center", 0.0), "test2": ("center_shift", 0.05), "train": ("rrc", 0.0)}


def last_module(model: nn.Module, kind: type) -> nn.Module:
    found = [m for m in model.modules() if isinstance(m, kind)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no {kind.__name__} for FixRes fine-tuning")
    return found[-1]


def head_modules(model: nn.Module) -> tuple[nn.Linear, nn.modules.batchnorm._BatchNorm]:
    """The classifier (last linear layer) and the batch-norm before global pooling (the last
    batch-norm layer: layer4[-1].bn3 in a ResNet-50, bn2 after conv_head in an EfficientNet)."""
    return last_module(model, nn.Linear), last_module(model, nn.modules.batchnorm._BatchNorm)


def finetune_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Freeze everything but the head; return the head's parameters."""
    model.requires_grad_(False)
    params = []
    for module in head_modules(model):
        module.requires_grad_(True)
        params += list(module.parameters())
    return params
