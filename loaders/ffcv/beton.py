"""Which FFCV file a split stands for, and whether it is a sound one.

`LoaderConfig.root` is `<data>/<split>` (or a path given with --train-data / --val-data). The
ffcv backend reads, in order:
  1. `root` itself when it is a file (any name: FFCV's own writer picks its names);
  2. `<data>/<split>.beton`, `<data>/<split>.ffcv`, or the one `<data>/<split>*.beton|.ffcv`
     (FFCV's ImageNet example writes `train_256_0.50_90.ffcv`); several are an error;
  3. the ImageFolder split `root`, written once to a cache folder ($LOWRES_CACHE, default
     ~/.cache/lowres, then ffcv/) under a key of the split's path, its file listing (names,
     sizes, times), the class list and the writer settings: a changed folder is written again.

Any file FFCV's DatasetWriter wrote is read: its one RGB image field and one integer field are
the image and the label, whatever their names; other fields are not read. Class names come
from our class map `<file>.json` (python -m loaders.ffcv write), else from the class list the
caller gives (--classes, or the training split's classes), else the classes are the label ids.

A file is checked before FFCV reads it: FFCV trusts its header and pointers, so a truncated
or foreign file would otherwise surface as a numba error, garbage pixels or a crash.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from loaders.base import LoaderConfig
from loaders.cache import cache_dir
from loaders.ffcv.write import FORMAT, WriterSettings, class_map_path, write_beton
from loaders.imagefile import MAX_PIXELS
from loaders.imagefolder import BadDataError, class_folders, scan_image_folder
from pipeline.console import say
from pipeline.reuse import product_key, reused_or_built

SUFFIXES = (".beton", ".ffcv")
IMAGE_TYPE, LABEL_TYPE = 2, 1  # FFCV type ids of RGBImageField and IntField
RAW_MODE = 1  # RGBImageField's per-image mode: 0 JPEG, 1 raw pixels (ffcv.fields.rgb_image.IMAGE_MODES)


@dataclass(frozen=True)
class Layout:
    """What the checked file holds: its field names in file order, which of them are the image
    and the label, and the labels."""

    fields: list[str]
    image: str
    label: str
    labels: np.ndarray  # (N,) int64, as stored

    @property
    def image_first(self) -> bool:
        """FFCV yields the fields it reads in the file's order."""
        return self.fields.index(self.image) < self.fields.index(self.label)


@dataclass
class Beton:
    path: Path
    classes: list[str]
    layout: Layout
    skipped: dict[str, int] = field(default_factory=dict)
    named: bool = True  # False: the classes are the label ids, the file has no class names

    @property
    def labels(self) -> np.ndarray:
        return self.layout.labels

    def __len__(self) -> int:
        return len(self.labels)

    def report(self) -> str:
        classes = (
            f"in {len(self.classes)} classes"
            if self.named
            else f"with label ids 0..{len(self.classes) - 1} (no class names)"
        )
        parts = [f"{len(self)} images {classes} in {self.path}"]
        extra = [f for f in self.layout.fields if f not in (self.layout.image, self.layout.label)]
        if (self.layout.image, self.layout.label) != ("image", "label") or extra:
            parts.append(
                f"fields image={self.layout.image}, label={self.layout.label}"
                + (f", not read: {', '.join(extra)}" if extra else "")
            )
        return "; ".join(parts + [f"skipped {n} {why}" for why, n in sorted(self.skipped.items())])


def beton_for(cfg: LoaderConfig, progress: bool = True) -> Beton:
    root = Path(cfg.root)
    path = ffcv_file(root)
    if path is not None:
        return open_beton(path, cfg.classes)
    if root.is_dir():
        return cached_beton(cfg, progress)
    raise FileNotFoundError(
        f"the ffcv backend found neither {root}.beton, {root}.ffcv, {root}*.beton|.ffcv nor a split folder {root}"
    )


def ffcv_file(root: Path) -> Path | None:
    """The FFCV file `root` stands for (see the module's docstring), or None."""
    if root.is_file() or (root.suffix in SUFFIXES and not root.is_dir()):
        return root  # a missing file is named by open_beton
    exact = [root.with_name(root.name + s) for s in SUFFIXES]
    found = [p for p in exact if p.is_file()] or sorted(
        p for s in SUFFIXES for p in root.parent.glob(glob.escape(root.name) + "*" + s) if p.is_file()
    )
    if len(found) > 1:
        raise BadDataError(
            f"several FFCV files could be the split {root}: {', '.join(map(str, found))}; "
            "name one with --train-data / --val-data"
        )
    return found[0] if found else None


def open_beton(path: Path, classes: list[str] | None = None) -> Beton:
    """The checked FFCV file at `path` with its class names: from its class map when it has
    one, else `classes` (the names of the label ids), else the label ids themselves."""
    layout = checked_layout(path)
    meta_path = class_map_path(path)
    if meta_path.exists():
        meta = class_map(meta_path)
        beton = Beton(path, list(meta["classes"]), layout, dict(meta.get("skipped", {})))
        source = str(meta_path)
    elif classes is not None:
        beton, source = Beton(path, list(classes), layout), "the class list given (--classes or the training data)"
    else:
        ids = int(layout.labels.max()) + 1 if len(layout.labels) else 0
        return Beton(path, [str(i) for i in range(ids)], layout, named=False)
    labels = layout.labels
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(beton.classes):
        raise BadDataError(
            f"{path} holds label ids {labels.min()}..{labels.max()}, outside the "
            f"{len(beton.classes)} classes of {source}"
        )
    return beton


def class_map(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadDataError(f"class map {path} is unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or len(meta.get("classes", [])) == 0:
        raise BadDataError(
            f"{path} is not a class map written by python -m loaders.ffcv write "
            "(move it away to read the file with label ids or --classes)"
        )
    return meta


def checked_layout(path: Path) -> Layout:
    """The fields and labels of the FFCV file at `path`, after checking that its structure is
    whole for whatever fields it holds."""
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType, get_metadata_type

    if not path.is_file():
        raise FileNotFoundError(f"FFCV file not found: {path}")
    size = path.stat().st_size
    if size < HeaderType.itemsize:
        raise BadDataError(f"{path} is not an FFCV .beton: {size} bytes, shorter than its header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise BadDataError(
            f"{path} is not an FFCV .beton of format version {CURRENT_VERSION} "
            f"(its first bytes say version {int(header['version'])})"
        )
    n, count, fields_at = int(header["num_samples"]), int(header["num_fields"]), HeaderType.itemsize
    if fields_at + count * FieldDescType.itemsize > size:
        raise BadDataError(
            f"{path} is truncated or damaged: its {count} field descriptors do not fit in its {size} bytes"
        )
    desc = np.fromfile(path, dtype=FieldDescType, count=count, offset=fields_at)
    names = [bytes(d["name"]).split(b"\0")[0].decode("ascii", "replace") for d in desc]
    if len(set(names)) != len(names):
        raise BadDataError(f"{path} holds fields with the same name: {names}")
    handlers = field_handlers(path, desc, names)
    types = desc["type_id"].tolist()
    image = only_field(path, names, types, IMAGE_TYPE, "RGB image field (RGBImageField)")
    label = only_field(path, names, types, LABEL_TYPE, "integer label field (IntField)")
    meta_type = get_metadata_type(handlers)
    meta_at = fields_at + desc.nbytes
    table_at = int(header["alloc_table_ptr"])
    if not meta_at + n * meta_type.itemsize <= table_at <= size or (size - table_at) % ALLOC_TABLE_TYPE.itemsize:
        raise BadDataError(
            f"{path} is truncated or damaged: its {n} samples and allocation table "
            f"do not fit in its {size} bytes (write it again)"
        )
    meta = np.fromfile(path, dtype=meta_type, count=n, offset=meta_at)
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_at)
    images = meta[f"f{names.index(image)}"]
    if (table["ptr"] + table["size"] > table_at).any() or not np.isin(images["data_ptr"], table["ptr"]).all():
        raise BadDataError(f"{path} is truncated or damaged: image data points outside the file (write it again)")
    check_image_sizes(path, images, table)
    return Layout(names, image, label, meta[f"f{names.index(label)}"].astype(np.int64))


def check_image_sizes(path: Path, images: np.ndarray, table: np.ndarray) -> None:
    """Refuse what the stored sizes would make FFCV do before a pixel is read: it gives every
    slot of a batch a decoding buffer of the file's largest width x largest height (a file
    claiming one huge image, or one very wide and one very tall, exhausts memory), and reads a
    raw image as height x width x 3 bytes of its data (fewer: a numba error mid-epoch)."""
    if not len(images):
        return
    widths, heights = images["width"].astype(np.int64), images["height"].astype(np.int64)
    wide, tall = int(widths.argmax()), int(heights.argmax())
    if widths[wide] * heights[tall] > MAX_PIXELS:
        raise BadDataError(
            f"{path}: sample {wide} claims a width of {widths[wide]} px and sample {tall} a height of "
            f"{heights[tall]} px; FFCV would allocate {widths[wide] * heights[tall]:,} pixels for every image of a "
            f"batch, over the limit of {MAX_PIXELS:,} (loaders.imagefile.MAX_PIXELS)"
        )
    raw = np.flatnonzero(images["mode"] == RAW_MODE)
    order = table["ptr"].argsort()
    stored = table["size"][order[np.searchsorted(table["ptr"], images["data_ptr"][raw], sorter=order)]]
    wrong = np.flatnonzero(stored != widths[raw] * heights[raw] * 3)
    if len(wrong):
        i = int(raw[wrong[0]])
        raise BadDataError(
            f"{path} is damaged: raw sample {i} claims {widths[i]} x {heights[i]} px (x 3 bytes) but stores "
            f"{int(stored[wrong[0]])} bytes ({len(wrong)} such samples; write it again)"
        )


def field_handlers(path: Path, desc: np.ndarray, names: list[str]) -> list:
    """FFCV's field objects for the descriptors (their metadata types size each sample's
    record), or a BadDataError for a type FFCV cannot read by itself."""
    from ffcv.types import TYPE_ID_HANDLER

    handlers = []
    for name, d in zip(names, desc):
        type_id = int(d["type_id"])
        if type_id not in TYPE_ID_HANDLER:
            raise BadDataError(f"{path} is not an FFCV file: field {name!r} has unknown type id {type_id}")
        if TYPE_ID_HANDLER[type_id] is None:
            raise BadDataError(f"{path}: field {name!r} has a custom type, which FFCV cannot read without its class")
        try:
            handlers.append(TYPE_ID_HANDLER[type_id].from_binary(d["arguments"]))
        except (AssertionError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise BadDataError(f"{path}: the description of field {name!r} is damaged ({e})") from e
    return handlers


def only_field(path: Path, names: list[str], types: list[int], type_id: int, what: str) -> str:
    found = [name for name, t in zip(names, types) if t == type_id]
    if len(found) != 1:
        raise BadDataError(
            f"{path} must hold exactly one {what}; its fields are "
            f"{', '.join(f'{n} (type {t})' for n, t in zip(names, types))}"
        )
    return found[0]


CACHE_SETTINGS = WriterSettings()


def cache_settings(cfg: LoaderConfig) -> WriterSettings:
    """How a split folder is written for the ffcv loader: CACHE_SETTINGS, in the run's orientation."""
    return replace(CACHE_SETTINGS, orientation=cfg.orientation)


def cached_beton(cfg: LoaderConfig, progress: bool) -> Beton:
    """The split folder's .beton in the cache, written first unless a file of the same key is
    there (the key holds everything that makes the file, so one that exists is current)."""
    root = Path(cfg.root).resolve()
    path = cache_dir("ffcv") / f"{root.name}-{cache_key(root, cfg)}.beton"
    return reused_or_built(path, open_beton, lambda: open_beton(written_beton(root, path, cfg, progress)))


def written_beton(root: Path, path: Path, cfg: LoaderConfig, progress: bool) -> Path:
    say(
        f"ffcv: writing {root} to {path} (once; python -m loaders.ffcv write makes resolution-aware .beton files)",
        err=True,
    )
    index = scan_image_folder(root, cfg.classes, "full", cfg.skip_bad, progress=progress)
    return write_beton(index, path, cache_settings(cfg), max(cfg.workers, 1), progress, cfg.skip_bad)


def cache_key(root: Path, cfg: LoaderConfig) -> str:
    folders = class_folders(root)
    classes = cfg.classes or folders  # the same labels whether or not the caller names the classes
    return product_key(
        str(root), classes, cfg.skip_bad, asdict(cache_settings(cfg)), listing=folder_listing(root, folders)
    )


def folder_listing(root: Path, folders: list[str]):
    """One line per file of the class folders: its name, size and modification time."""
    for name in folders:
        for entry in sorted(os.scandir(root / name), key=lambda e: e.name):
            st = listed_stat(entry)
            yield os.fsencode(f"{name}/{entry.name}:{st.st_size}:{st.st_mtime_ns}\n")  # names are bytes


def listed_stat(entry: os.DirEntry) -> os.stat_result:
    """The entry's target's stat; a broken symbolic link's own (the scan names or skips it)."""
    try:
        return entry.stat()
    except FileNotFoundError:
        return entry.stat(follow_symlinks=False)
