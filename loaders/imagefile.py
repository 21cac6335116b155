"""What one image file holds, read from its header: format, size, colour mode, and whether
it is whole; and a Pillow open that refuses decompression bombs before decoding anything.

JPEG headers are parsed here rather than by Pillow: the scan reads the first bytes of a
file once and walks its marker segments, about a tenth of the work of `Image.open` (which
also reads every quantisation and Huffman table into Python objects). Other formats, and
JPEGs this parser cannot follow, go to Pillow.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from loaders.orientation import TAG, TURNS, exif_orientation

MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (~ 1024 x 1024 x 1024 // 4 // 3); ours, stated
HEAD_BYTES = 16384  # one read holds the header of most JPEGs (EXIF and ICC segments can be longer)
TAIL_BYTES = 1024  # the end-of-image marker is looked for here first, then further back
SEARCH_BYTES = 1 << 20  # then backwards in chunks of this size, down to the image data's start
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
SOS = 0xDA
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC are not frames
APP1, EXIF = 0xE1, b"Exif\x00\x00"  # the EXIF segment and its payload's first bytes
APP14, ADOBE = 0xEE, b"Adobe"  # Adobe's segment: among others, it says CMYK samples are stored inverted
STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # components -> the mode Pillow reports


class ImageTooLarge(OSError):
    """An image whose header claims more pixels than MAX_PIXELS: decoding it could exhaust memory."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.why = why


@dataclass(frozen=True)
class Header:
    format: str  # Pillow's format name: JPEG, PNG, GIF, ...
    width: int
    height: int
    mode: str  # Pillow's mode: RGB, L, CMYK, P, ...
    data_start: int = 0  # JPEG: where the first scan's entropy-coded data begins
    orientation: int = 1  # the EXIF orientation tag (1-8; 1 where absent), loaders/orientation.py
    orientation_at: int = -1  # JPEG: the file offset of the tag's value (-1: none)
    adobe: bool = False  # JPEG: an APP14 "Adobe" segment is present

    @property
    def unmarked_cmyk(self) -> bool:
        """A CMYK JPEG that does not say its samples are inverted: Pillow reads them as inverted all
        the same (Adobe's convention, which CMYK JPEGs follow), DALI's decoder does not."""
        return self.format == "JPEG" and self.mode == "CMYK" and not self.adobe


def too_large(width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width * height > MAX_PIXELS:
        return (
            f"decompression bomb (header says {width} x {height} = {width * height:,} pixels, more than "
            f"the limit of {MAX_PIXELS:,})"
        )
    return None


def check_size(path: str, width: int, height: int) -> None:
    if why := too_large(width, height):
        raise ImageTooLarge(path, why)


def jpeg_header(read: Callable[[int, int], bytes]) -> Header | None:
    """The frame header of a JPEG given `read(offset, count)`, or None where the marker
    segments cannot be followed up to the first scan (Pillow then says what is wrong)."""
    pos, frame, orientation, adobe = 2, None, None, False
    while True:
        seg = read(pos, 10)
        if len(seg) < 2 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in STANDALONE:
            pos += 2
            continue
        if len(seg) < 4:
            return None
        length = seg[2] << 8 | seg[3]
        if marker in SOF_MARKERS and frame is None:
            if len(seg) < 10:
                return None
            frame = (seg[7] << 8 | seg[8], seg[5] << 8 | seg[6], seg[9])  # width, height, components
        elif marker == APP1 and orientation is None and read(pos + 4, 6) == EXIF:  # the first one counts, as for Pillow
            code, at = exif_orientation(read(pos + 4, length - 2))
            orientation = code, pos + 4 + at if at >= 0 else -1
        elif marker == APP14:
            adobe = adobe or read(pos + 4, len(ADOBE)) == ADOBE
        elif marker == SOS:
            if frame is None or 0 in frame[:2]:  # height 0 (set by a later DNL marker): let Pillow judge
                return None
            width, height, components = frame
            mode = JPEG_MODES.get(components, f"{components}-channel")
            return Header("JPEG", width, height, mode, pos + 2 + length, *(orientation or (1, -1)), adobe)
        elif marker == 0xD9 or length < 2:
            return None
        pos += 2 + length


def file_reader(fd: int, head: bytes) -> Callable[[int, int], bytes]:
    """read(offset, count) over an open file descriptor whose first bytes are `head`: served from
    `head` where it covers the range, otherwise one positioned read (no seek, no Python buffer)."""

    def read(offset: int, count: int) -> bytes:
        if offset + count <= len(head):
            return head[offset : offset + count]
        return os.pread(fd, count, offset)

    return read


def has_end_marker(read: Callable[[int, int], bytes], size: int, start: int) -> bool:
    """Whether the JPEG's end-of-image marker occurs after `start` (its image data). Entropy-coded
    data never holds FF D9 (an FF there is followed by 00 or a restart marker), so finding it means
    the image is whole, whatever trailer follows (decoders stop at the marker); a cut file lacks it.
    The last kilobyte is read first, where the marker is in nearly every file."""
    end, step = size, TAIL_BYTES
    while end > start:
        lo = max(start, end - step)
        if JPEG_EOI in read(lo, min(end + 1, size) - lo):  # one byte of overlap: a marker split between reads
            return True
        end, step = lo, SEARCH_BYTES
    return False


def pillow_header(f: BinaryIO, path: str) -> Header:
    """Format, size and mode as Pillow reads them (no pixels decoded; raises OSError if unreadable)."""
    with open_image(f, path) as img:
        fmt = "JPEG" if img.format == "MPO" else img.format  # MPO: several JPEGs in one file
        return Header(fmt, img.width, img.height, img.mode, orientation=orientation(img), adobe="adobe" in img.info)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation of an opened image as Pillow's ImageOps.exif_transpose applies it (1-8)."""
    code = img.getexif().get(TAG, 1)
    return code if code in TURNS else 1


@contextmanager
def open_image(source: str | BinaryIO, path: str | None = None) -> Iterator[Image.Image]:
    """`Image.open`, refusing an image above MAX_PIXELS before any pixel is decoded: Pillow only
    warns between its limit and twice that, and its own limit may have been changed by a library."""
    path = path or str(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageTooLarge(path, f"decompression bomb ({e})") from None
        except UnidentifiedImageError:
            if isinstance(source, (str, os.PathLike)):
                raise
            # Pillow names what it was given: here bytes in memory, which say nothing of their file.
            raise UnidentifiedImageError(f"cannot identify image file {path!r}") from None
    with img:
        check_size(path, img.width, img.height)
        yield img


def encoded_header(data: bytes | memoryview, path: str) -> Header:
    """The header of an image held in memory (a worker's encoded file, before a decoder that knows
    no pixel limit gets it); raises ImageTooLarge above MAX_PIXELS."""
    header = jpeg_header(lambda offset, count: data[offset : offset + count]) if data[:2] == JPEG_SOI else None
    header = header or pillow_header(io.BytesIO(data), path)
    check_size(path, header.width, header.height)
    return header
