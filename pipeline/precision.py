"""Where and in which precision the model runs: the device, and autocast + gradient scaling.

One code path for every precision: autocast and the gradient scaler are toggled with
`enabled=`, bf16 needs no scaler, fp32 on the CPU uses neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32

    @property
    def input_dtype(self) -> torch.dtype:
        return self.amp_dtype or torch.float32

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
        )

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA GPU is visible to PyTorch")
    return device


def resolve_precision(device: torch.device, amp: str) -> Precision:
    """auto: bf16 on GPUs that have it, else fp16; fp32 on the CPU (CPU autocast is slower)."""
    choices = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp == "auto":
        if device.type != "cuda":
            return Precision(device, None)
        return Precision(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp not in choices:
        raise ValueError(f"--amp must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use bf16 or off on the CPU")
    return Precision(device, choices[amp])
