"""Shared fixtures: a tiny demo data set (generated once per session) and bad-file makers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loaders.demo_data import generate


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Backends that cache converted data (ffcv) write under the session's temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOWRES_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 16 train + 6 val images of the demo generator, at small sides."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    return generate(
        root, classes=3, train_per_class=16, val_per_class=6, min_side=64, max_side=160, workers=1, progress=False
    )


@pytest.fixture
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of the tiny data set that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_data, dst)
    return dst
