"""Files a decoder would read otherwise than Pillow, handed to it as what Pillow decodes.

A CMYK JPEG without Adobe's APP14 marker does not say whether its samples are stored inverted.
Pillow reads every CMYK JPEG as inverted (Adobe's convention, which CMYK JPEGs follow); DALI's
decoder inverts only where the marker says so, and would give another image. Such a file goes to
DALI as a PNG of Pillow's RGB decode: lossless and of the same size, so the planned crop
boxes, the header check and the decode that follows are those of any other file. The scan
finds these files (ImageIndex.unmarked_cmyk); each is re-encoded once per loader, when first
fed, into a temporary folder that goes with the loader.
"""

from __future__ import annotations

import os
import tempfile

from loaders.imagefile import open_image
from loaders.imagefolder import BadDataError


class PillowCopies:
    """Source path -> path (bytes) of a PNG of Pillow's RGB decode of it, made on first use."""

    def __init__(self):
        self.folder: tempfile.TemporaryDirectory | None = None
        self.made: dict[str, bytes] = {}

    def path(self, source: str) -> bytes:
        if source not in self.made:
            self.folder = self.folder or tempfile.TemporaryDirectory(prefix="lowres-pillow-")
            self.made[source] = os.fsencode(pillow_png(source, os.path.join(self.folder.name, f"{len(self.made)}.png")))
        return self.made[source]


def pillow_png(source: str, target: str) -> str:
    """`target`, written as a PNG of Pillow's RGB decode of `source` (a BadDataError naming the
    file where Pillow cannot decode it)."""
    try:
        with open_image(source) as img:  # refuses a bomb: the file may have changed since the scan
            img.convert("RGB").save(target + ".partial", format="PNG", compress_level=1)
    except OSError as e:
        raise BadDataError(f"{source}: unreadable image ({e})") from e
    os.replace(target + ".partial", target)
    return target
