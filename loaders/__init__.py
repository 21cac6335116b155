"""Data backends behind one interface (`loaders.base.Loader`); `create_loader` picks one."""
from __future__ import annotations

import os
from pathlib import Path

from loaders.base import Loader, LoaderConfig
from loaders.imagefolder import IMAGE_EXTENSIONS, class_folders, scan_image_folder

BACKENDS = ("pil", "dali", "synthetic", "ffcv")


def create_loader(cfg: LoaderConfig, progress: bool = True) -> Loader:
    """The loader for `cfg.backend` over the split folder `cfg.root`."""
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
    return backend(cfg, cached_index(cfg, progress))


def imagefolder_backend(name: str):
    """The loader class of a backend over an ImageFolder index, imported only when asked for:
    DALI is an optional install."""
    if name == "dali":
        from loaders.dali import DaliLoader
        return DaliLoader
    from loaders.pil import PilLoader
    return PilLoader


_indexes: dict[tuple, object] = {}


def cached_index(cfg: LoaderConfig, progress: bool = True):
    """The scanned index of `cfg.root`, once per process: a sweep or a recalibration builds
    a loader per resolution over the same folder, and scanning ImageNet takes minutes."""
    key = (str(Path(cfg.root).resolve()), tuple(cfg.classes or ()), cfg.check, cfg.skip_bad)
    if key not in _indexes:
        _indexes[key] = scan_image_folder(cfg.root, cfg.classes, cfg.check, cfg.skip_bad, progress=progress)
    return _indexes[key]


def synthetic_shape(cfg: LoaderConfig) -> tuple[list[str], int]:
    """Classes and epoch length of the data set the synthetic backend stands in for: those
    of `cfg.root` when there is one (file names only, nothing decoded), else a default."""
    if cfg.root is None or not Path(cfg.root).is_dir():
        classes = cfg.classes or [f"class{i:03d}" for i in range(10)]
        return classes, cfg.synthetic_samples
    classes = cfg.classes or class_folders(Path(cfg.root))
    count = sum(1 for c in classes if (Path(cfg.root) / c).is_dir()
                for name in os.listdir(Path(cfg.root) / c) if name.lower().endswith(IMAGE_EXTENSIONS))
    return classes, count
