"""Helpers the test files share: the checkout's root, quiet job arguments, an in-process job,
the CPU's precision, run logs, free ports, grey levels and the two-sample Kolmogorov-Smirnov distance. Fixtures
live in conftest.py; tolerances in tolerances.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from loaders.base import IMAGENET_MEAN, IMAGENET_STD
from pipeline.precision import Precision

ROOT = Path(__file__).resolve().parents[1]
# A job on the tiny data set: small batches, no loader workers, no bars.
FAST = ["--batch-size", "8", "--workers", "0", "--no-progress"]
# Steps in float32 on the CPU, no autocast.
CPU = Precision(torch.device("cpu"), None)
MEAN_255 = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
STD_255 = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255


def job(*args):
    """What `train.py <args>` returns, run in this process (every argument as its string)."""
    from app import cli

    return cli.main([str(a) for a in args])


def json_lines(path) -> list[dict]:
    """The records of a JSON-lines file (a run's metrics.jsonl)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def grey_levels(images: torch.Tensor) -> torch.Tensor:
    """Normalised (N, 3, K, K) images back on the 0-255 scale, in float32 on the CPU."""
    return images.float().cpu() * STD_255 + MEAN_255


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest gap between the empirical distribution functions of two samples."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda v: np.searchsorted(np.sort(v), grid, side="right") / len(v)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def ffcv_in_the_slow_tier(params) -> list:
    """pytest parameters (a backend, or a tuple that starts with one) with ffcv's marked slow:
    FFCV compiles its pipeline with numba for every loader, seconds a test (tests/test_ffcv.py
    and the slow tier run it whole)."""

    def backend(p):
        return p[0] if isinstance(p, tuple) else p

    return [
        pytest.param(*(p if isinstance(p, tuple) else (p,)), marks=pytest.mark.slow) if backend(p) == "ffcv" else p
        for p in params
    ]
