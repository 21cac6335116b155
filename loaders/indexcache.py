"""One scan per data set: the scanned index of a split folder, stored once and reused.

Scanning ImageNet's 1.28 M files takes minutes, and every job (train, sweep, finetune,
recalibrate) and every rank of a torchrun job needs the same index. It is stored in the cache
folder (cache_dir("index"); data sets are often read-only) under a key of the split's resolved
path and the scan settings, as arrays in an .npz (no pickle), and reused while a cheap listing
check passes: the identity and modification time of the split folder and of every class folder.
Adding, removing or renaming a file changes its folder's modification time; rewriting a file in
place does not (nor does changing what a symbolic link points to): LOWRES_RESCAN=1 (or
LoaderConfig.rescan) rebuilds the index.

Processes that need the same index at once (the ranks of a torchrun job on one machine, or a
sweep started beside a training run) take a file lock: the first builds, the others wait and
then load what it stored. If the builder fails, it leaves a failure note that the waiters raise,
so no process waits for an index that will not come; if it dies, the lock is released and the
next process builds.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loaders.cache import cache_dir
from loaders.imagefolder import BadDataError, ImageIndex, PathList, class_folders, scan_image_folder
from pipeline.console import say
from pipeline.reuse import product_key, written

FORMAT = 4  # bump when the stored arrays change meaning
JOB_ENV = "LOWRES_JOB"
RESCAN_ENV = "LOWRES_RESCAN"


@dataclass(frozen=True)
class ScanSettings:
    """Everything besides the folder that decides what the scan returns."""

    classes: tuple[str, ...] | None = None
    check: str = "header"
    skip_bad: bool = False
    formats: tuple[str, ...] | None = None  # the backend's decodable formats, sorted

    def key(self, root: Path) -> str:
        return product_key(FORMAT, str(root), asdict(self))


def index_file(root: Path, settings: ScanSettings) -> Path:
    """Where the index of `root` (resolved) scanned with `settings` is stored."""
    return cache_dir("index") / f"{root.parent.name}-{root.name}-{settings.key(root)}.npz"


def listing_signature(root: Path, classes: tuple[str, ...] | None) -> np.ndarray:
    """(1 + classes, 2) int64: inode and modification time (ns) of the split folder and of each
    class folder ((-1, -1) where one is missing): one stat per folder, no file listed."""
    names = classes if classes is not None else class_folders(root)
    rows = []
    for folder in [root, *(root / name for name in names)]:
        try:
            st = os.stat(folder)
            rows.append((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            rows.append((-1, -1))
    return np.asarray(rows, dtype=np.int64)


def save_index(index: ImageIndex, signature: np.ndarray, path: Path) -> None:
    """Write the index as arrays under a temporary name, then rename: a stored index is whole."""
    meta = {
        "format": FORMAT,
        "root": index.root,
        "classes": index.classes,
        "skipped": index.skipped,
        "notes": dict(index.notes),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "job": job_id(),
    }
    with written(path) as partial, open(partial, "wb") as f:
        np.savez(
            f,
            names=index.paths.names,
            offsets=index.paths.offsets,
            labels=index.labels,
            sizes=index.sizes,
            orientations=index.orientations if index.orientations is not None else np.ones(len(index), np.uint8),
            unmarked_cmyk=index.unmarked_cmyk if index.unmarked_cmyk is not None else np.zeros(len(index), bool),
            signature=signature,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )


def load_index(path: Path, root: str) -> tuple[ImageIndex, np.ndarray, dict]:
    """The stored index (its paths under `root` as the caller spells it), its listing signature
    and its metadata."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
        index = ImageIndex(
            root=root,
            classes=meta["classes"],
            paths=PathList(root, z["names"], z["offsets"]),
            labels=z["labels"],
            sizes=z["sizes"],
            orientations=z["orientations"],
            unmarked_cmyk=z["unmarked_cmyk"],
            skipped=meta["skipped"],
            notes=Counter(meta["notes"]),
        )
        return index, z["signature"], meta


def job_id() -> str:
    """The torchrun job this process belongs to ("" when unknown): its ranks share one rescan.
    The jobs set JOB_ENV to a name rank 0 draws; without it, torchrun's run id, except the
    "none" that plain `torchrun` (no --rdzv-id) gives every job and so tells no two apart."""
    run_id = os.environ.get(JOB_ENV) or os.environ.get("TORCHELASTIC_RUN_ID", "")
    return "" if run_id == "none" else run_id


def stored_index(
    root: str | os.PathLike, settings: ScanSettings, rescan: bool = False, progress: bool = True, loud: bool = True
) -> ImageIndex:
    """The index of the split folder `root`: loaded from the cache when the folder's listing is
    unchanged, otherwise scanned (by one process at a time) and stored. `rescan` rebuilds it
    unless another process built it while this one waited; so does LOWRES_RESCAN=1. `loud`: log
    the reuse (rank 0 says it, the other ranks stay quiet)."""
    given = str(root)
    root = Path(root).resolve()
    rescan = rescan or os.environ.get(RESCAN_ENV, "") not in ("", "0")
    path = index_file(root, settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError as e:
        say(
            f"index: cannot store the index of {root} under {path.parent} ({e}); scanning without "
            "storing it (set LOWRES_CACHE to a writable folder)",
            err=True,
        )
        return scan(given, settings, progress)
    with lock:  # closing the file (or the process dying) releases the lock
        waited_from = time.time()
        fcntl.flock(lock, fcntl.LOCK_EX)
        return index_under_lock(given, root, settings, path, rescan, waited_from, progress, loud)


def index_under_lock(
    given: str,
    root: Path,
    settings: ScanSettings,
    path: Path,
    rescan: bool,
    waited_from: float,
    progress: bool,
    loud: bool,
) -> ImageIndex:
    """Under the lock: the stored index if still valid, else a fresh scan, stored. Not
    pipeline.reuse.reused_or_built: the check reads the listing signature stored in the index, a
    rescan may reuse what another process built meanwhile, and a failure must reach the waiters."""
    failed = path.with_name(path.name + ".failed")
    if failed.is_file() and failed.stat().st_mtime >= waited_from:
        said = failed.read_text(errors="surrogateescape")
        raise BadDataError(f"{said}\n(found by another process indexing {root} while this one waited)")
    how_to = f"{RESCAN_ENV}=1 or --rescan rebuilds it"
    signature = listing_signature(root, settings.classes)
    why = "--rescan or LOWRES_RESCAN asked for it" if rescan else "no stored index"
    if path.is_file():
        try:
            index, stored, meta = load_index(path, given)
            # Built while this process waited, or by another rank of this torchrun job: never rescan twice.
            fresh = path.stat().st_mtime >= waited_from or meta["job"] == job_id() != ""
            if np.array_equal(stored, signature) and (fresh or not rescan):
                if loud:
                    say(
                        f"index: reused {path} for {root} (built {meta['built']}, folder listing unchanged; {how_to})",
                        err=True,
                    )
                return index
            if not rescan:
                why = "the folder changed since"
        except (OSError, ValueError, KeyError) as e:
            why = f"the stored one is unreadable ({e})"
    started = time.perf_counter()
    try:
        index = scan(given, settings, progress)
    except Exception as e:
        failed.write_text(str(e), errors="surrogateescape")  # file names are bytes
        raise
    failed.unlink(missing_ok=True)
    save_index(index, signature, path)
    say(
        f"index: scanned {root} in {time.perf_counter() - started:.1f} s ({why}); stored as {path}, reused "
        f"while the folder listing is unchanged ({how_to})",
        err=True,
    )
    return index


def scan(root: str, settings: ScanSettings, progress: bool) -> ImageIndex:
    return scan_image_folder(
        root,
        settings.classes,
        settings.check,
        settings.skip_bad,
        progress=progress,
        formats=frozenset(settings.formats) if settings.formats is not None else None,
    )
