"""Reading torch files that come from elsewhere (checkpoints, state dicts): data only, never code."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def read_tensors(path: Path, what: str):
    """The tensors, numbers, strings, lists and dicts in the torch file `path`. Nothing else is
    unpickled: a checkpoint from elsewhere is data, and unpickling an arbitrary object can run
    any code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{what} {path} is refused: it holds Python objects other than tensors, numbers, "
            f"strings, lists and dicts, and loading them could run code ({str(e).splitlines()[0]})"
        ) from None
    except Exception as e:  # a truncated or foreign file: say which one
        raise ValueError(f"cannot read {what} {path}: {e}") from e
