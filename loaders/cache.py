"""Where derived data (scanned indexes, FFCV files written from folders) is kept: beside the
user's data would fail on read-only data sets, so a cache folder of its own."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """$LOWRES_CACHE/<kind>, by default ~/.cache/lowres/<kind> (not created here)."""
    return Path(os.environ.get("LOWRES_CACHE") or Path.home() / ".cache" / "lowres") / kind
