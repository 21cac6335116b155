"""Reuse what a slow step made while it is up to date, and write it so that what exists is whole.

One rule for every product that is kept between runs (the scanned index, the .beton written
from a folder, the demo data set, a prepared copy, a study's stage results, a run's files): the
product carries what made it (a key of its settings in its file name, or a JSON record stored
with it); it is reused only when that matches what would make it now, else it is built again;
and it is written under a temporary name and renamed when whole, its record before it, so a
process killed midway leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PARTIAL = ".partial"  # the suffix of every temporary name: a folder's leftovers are found by it


def product_key(*parts, listing: Iterable[bytes] = ()) -> str:
    """16 hex digits standing for `parts` (JSON) and the `listing` lines: a product stored under
    its key is found again only with the same settings and the same listing."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode())
    for line in listing:
        digest.update(line)
    return digest.hexdigest()[:16]


def reused_or_built(product: Path, current: Callable[[Path], T | None], build: Callable[[], T]) -> T:
    """What `current` finds at `product` when it is there and up to date (None: it is not), else
    what `build` returns; `build` writes the product whole (see `written`)."""
    found = current(product) if product.exists() else None
    return found if found is not None else build()


def temporary(path: Path) -> Path:
    """A name beside `path` that only this process writes."""
    return path.with_name(f"{path.name}.{os.getpid()}{PARTIAL}")


@contextmanager
def written(path: Path, temp: Path | None = None) -> Iterator[Path]:
    """A temporary name (default: `temporary(path)`) to write the file or folder `path` under:
    renamed to `path` (replacing what was there) when the block ends, removed when it raises."""
    temp = temp or temporary(path)
    try:
        yield temp
    except BaseException:
        remove(temp)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # os.replace renames a folder only onto an empty one
    os.replace(temp, path)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with written(path) as temp:
        temp.write_bytes(data)


def write_json(path: Path, data) -> None:
    """`data` as indented JSON (paths and other objects as their strings), written whole."""
    write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def read_json(path: Path) -> dict | None:
    """The JSON record at `path`; None when there is none, a ValueError naming it when it is
    not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not a readable JSON record ({e})") from e
