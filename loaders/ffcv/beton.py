"""Which .beton a split stands for, and whether it is a sound one.

`LoaderConfig.root` is `<data>/<split>` for every backend. The ffcv backend reads, in order:
  1. `root` itself when it is a `.beton` file;
  2. `<data>/<split>.beton` (written by `python -m loaders.ffcv write --out <data>`);
  3. the ImageFolder split `root`, written once to a cache folder ($LOWRES_CACHE, default
     ~/.cache/lowres, then ffcv/) under a key of the split's path, its file listing (names,
     sizes, times), the class list and the writer settings: a changed folder is written again.

A .beton is checked before FFCV reads it: FFCV trusts its header and pointers, so a truncated
or foreign file would otherwise surface as a numba error, garbage pixels or a crash.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loaders.base import LoaderConfig
from loaders.cache import cache_dir
from loaders.ffcv.write import FORMAT, WriterSettings, class_map_path, write_beton
from loaders.imagefolder import BadDataError, class_folders, scan_image_folder

FIELDS = {"image": 2, "label": 1}  # FFCV type ids of RGBImageField and IntField


@dataclass
class Beton:
    path: Path
    classes: list[str]
    labels: np.ndarray  # (N,) int64, as stored
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def report(self) -> str:
        parts = [f"{len(self)} images in {len(self.classes)} classes in {self.path}"]
        return "; ".join(parts + [f"skipped {n} {why}" for why, n in sorted(self.skipped.items())])


def beton_for(cfg: LoaderConfig, progress: bool = True) -> Beton:
    root = Path(cfg.root)
    if root.suffix == ".beton":
        return open_beton(root)
    sibling = root.with_name(root.name + ".beton")
    if sibling.is_file():
        return open_beton(sibling)
    if root.is_dir():
        return cached_beton(cfg, progress)
    raise FileNotFoundError(f"the ffcv backend found neither {sibling} nor a split folder {root}")


def open_beton(path: Path) -> Beton:
    """The checked .beton at `path` with its class map."""
    labels = checked_labels(path)
    meta_path = class_map_path(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise BadDataError(f"{path}: its class map {meta_path} is missing or unreadable ({e}); "
                           "write .beton files with python -m loaders.ffcv write") from e
    if meta.get("format") != FORMAT or len(meta.get("classes", [])) == 0:
        raise BadDataError(f"{meta_path} is not a class map written by python -m loaders.ffcv write")
    classes = list(meta["classes"])
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
        raise BadDataError(f"{path} has labels outside its {len(classes)} classes ({meta_path})")
    return Beton(path, classes, labels, dict(meta.get("skipped", {})))


def checked_labels(path: Path) -> np.ndarray:
    """The labels of the .beton at `path`, after checking that its structure is whole."""
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType, get_metadata_type
    from ffcv.fields import IntField, RGBImageField

    if not path.is_file():
        raise FileNotFoundError(f".beton file not found: {path}")
    size = path.stat().st_size
    if size < HeaderType.itemsize:
        raise BadDataError(f"{path} is not an FFCV .beton: {size} bytes, shorter than its header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise BadDataError(f"{path} is not an FFCV .beton of format version {CURRENT_VERSION} "
                           f"(its first bytes say version {int(header['version'])})")
    n, fields_at = int(header["num_samples"]), HeaderType.itemsize
    if header["num_fields"] != len(FIELDS) or fields_at + len(FIELDS) * FieldDescType.itemsize > size:
        raise BadDataError(f"{path} does not hold the image and label fields this project writes")
    desc = np.fromfile(path, dtype=FieldDescType, count=len(FIELDS), offset=fields_at)
    names = [bytes(d["name"]).rstrip(b"\0").decode("ascii", "replace") for d in desc]
    if dict(zip(names, desc["type_id"].tolist())) != FIELDS:
        raise BadDataError(f"{path} holds fields {names}, not image (RGB) and label (int)")
    meta_type = get_metadata_type([RGBImageField(), IntField()])
    meta_at = fields_at + desc.nbytes
    table_at = int(header["alloc_table_ptr"])
    if not meta_at + n * meta_type.itemsize <= table_at <= size or (size - table_at) % ALLOC_TABLE_TYPE.itemsize:
        raise BadDataError(f"{path} is truncated or damaged: its {n} samples and allocation table "
                           f"do not fit in its {size} bytes (write it again)")
    meta = np.fromfile(path, dtype=meta_type, count=n, offset=meta_at)
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_at)
    if (table["ptr"] + table["size"] > table_at).any() or not np.isin(meta["f0"]["data_ptr"], table["ptr"]).all():
        raise BadDataError(f"{path} is truncated or damaged: image data points outside the file (write it again)")
    return meta["f1"].astype(np.int64)


CACHE_SETTINGS = WriterSettings()


def cached_beton(cfg: LoaderConfig, progress: bool) -> Beton:
    root = Path(cfg.root).resolve()
    path = cache_dir("ffcv") / f"{root.name}-{cache_key(root, cfg)}.beton"
    if not path.is_file():
        print(f"ffcv: writing {root} to {path} (once; python -m loaders.ffcv write makes "
              "resolution-aware .beton files)", file=sys.stderr, flush=True)
        index = scan_image_folder(root, cfg.classes, "full", cfg.skip_bad, progress=progress)
        write_beton(index, path, CACHE_SETTINGS, workers=max(cfg.workers, 1))
    return open_beton(path)


def cache_key(root: Path, cfg: LoaderConfig) -> str:
    folders = class_folders(root)
    classes = cfg.classes or folders  # the same labels whether or not the caller names the classes
    h = hashlib.sha256(json.dumps([str(root), classes, cfg.skip_bad, asdict(CACHE_SETTINGS)]).encode())
    for name in folders:
        for entry in sorted(os.scandir(root / name), key=lambda e: e.name):
            st = entry.stat()
            h.update(f"{name}/{entry.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
