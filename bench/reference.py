"""The loader a user would write without this project, as the yardstick of every backend:
torchvision ImageFolder + DataLoader + transforms.v2 (RandomResizedCrop + flip for training,
Resize(K/0.875) + CenterCrop(K) for evaluation), normalised in the workers, moved to the
device in channels-last in the main process: the same batches, by the textbook recipe."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from loaders.base import IMAGENET_MEAN, IMAGENET_STD
from pipeline.transforms import CenterCropSpec

# Epoch e of seed s shuffles with generator seed s * EPOCHS_PER_SEED + e: distinct for every
# (seed, epoch) with fewer epochs than this prime, unlike seed + epoch.
EPOCHS_PER_SEED = 1_000_003


def reference_transform(res: int, augment: str) -> v2.Compose:
    if augment == "rrc":
        geometry = [v2.RandomResizedCrop(res, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(CenterCropSpec().resize_side(res), antialias=True), v2.CenterCrop(res)]
    return v2.Compose(
        [*geometry, v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


class TorchvisionReference:
    """Follows the Loader protocol, so benchmarks drive it like any backend."""

    def __init__(
        self,
        root: str,
        res: int,
        batch_size: int,
        augment: str,
        workers: int,
        device: torch.device,
        dtype: torch.dtype,
        seed: int = 0,
    ):
        self.dataset = datasets.ImageFolder(root, transform=reference_transform(res, augment))
        self.classes = self.dataset.classes
        self.summary = f"torchvision reference: ImageFolder of {len(self.dataset)} images, transforms.v2"
        self.skipped: dict[str, int] = {}
        self.device, self.dtype, self.seed = device, dtype, seed
        self.generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=augment == "rrc",
            drop_last=augment == "rrc",
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * EPOCHS_PER_SEED + epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            images = images.to(self.device, self.dtype, non_blocking=True)
            yield images.contiguous(memory_format=torch.channels_last), labels.to(self.device, non_blocking=True)
