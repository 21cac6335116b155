"""Data backends behind one interface (`loaders.base.Loader`); `create_loader` picks one."""

from __future__ import annotations

import os
from pathlib import Path

from loaders.base import Loader, LoaderConfig
from loaders.heap import map_large_buffers
from loaders.imagefolder import IMAGE_EXTENSIONS, class_folders
from loaders.indexcache import ScanSettings, stored_index

BACKENDS = ("pil", "dali", "synthetic", "ffcv", "nvjpeg")


def create_loader(cfg: LoaderConfig, progress: bool = True) -> Loader:
    """The loader for `cfg.backend` over the split folder `cfg.root`."""
    if cfg.device.type == "cuda":  # see loaders/heap.py: on the CPU the trainer's own tensors would pay
        map_large_buffers()
    if cfg.backend == "synthetic":
        from loaders.synthetic import SyntheticLoader

        classes, count = synthetic_shape(cfg)
        return SyntheticLoader(cfg, classes, count)
    if cfg.backend == "ffcv":
        from loaders.ffcv import require_ffcv

        require_ffcv()
        from loaders.ffcv.beton import beton_for
        from loaders.ffcv.loader import FfcvLoader

        if cfg.root is None:
            raise ValueError("the ffcv backend needs a data folder or a .beton file")
        return FfcvLoader(cfg, beton_for(cfg, progress))
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown loader backend {cfg.backend!r}; available: {', '.join(BACKENDS)}")
    if cfg.root is None:
        raise ValueError(f"the {cfg.backend} backend needs a data folder")
    backend = imagefolder_backend(cfg.backend)  # before the scan: a missing install fails at once
    return backend(cfg, cached_index(cfg, progress, getattr(backend, "decodes", None)))


def imagefolder_backend(name: str):
    """The loader class of a backend over an ImageFolder index, imported only when asked for:
    DALI is an optional install."""
    if name == "dali":
        from loaders.dali import DaliLoader

        return DaliLoader
    if name == "nvjpeg":
        from loaders.nvjpeg import NvjpegLoader

        return NvjpegLoader
    from loaders.pil import PilLoader

    return PilLoader


_indexes: dict[tuple, object] = {}


def cached_index(cfg: LoaderConfig, progress: bool = True, formats: frozenset[str] | None = None):
    """The index of `cfg.root` for a backend that decodes `formats` (None: whatever Pillow opens):
    from the stored index shared by every job and rank (loaders/indexcache.py), and once per
    process: a sweep or a recalibration builds a loader per resolution over the same folder."""
    settings = ScanSettings(
        tuple(cfg.classes) if cfg.classes is not None else None,
        cfg.check,
        cfg.skip_bad,
        tuple(sorted(formats)) if formats is not None else None,
    )
    key = (str(Path(cfg.root).resolve()), settings)
    if key not in _indexes:
        _indexes[key] = stored_index(cfg.root, settings, cfg.rescan, progress, loud=cfg.rank == 0)
    return _indexes[key]


def synthetic_shape(cfg: LoaderConfig) -> tuple[list[str], int]:
    """Classes and epoch length of the data set the synthetic backend stands in for: those
    of `cfg.root` when there is one (file names only, nothing decoded), else a default."""
    if cfg.root is None or not Path(cfg.root).is_dir():
        classes = cfg.classes or [f"class{i:03d}" for i in range(10)]
        return classes, cfg.synthetic_samples
    classes = cfg.classes or class_folders(Path(cfg.root))
    count = sum(
        1
        for c in classes
        if (Path(cfg.root) / c).is_dir()
        for name in os.listdir(Path(cfg.root) / c)
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    return classes, count
