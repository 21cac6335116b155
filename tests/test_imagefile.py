"""Image headers read without Pillow, and the pixel limit every decode path applies."""

import io
import struct
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from loaders.imagefile import MAX_PIXELS, ImageTooLarge, encoded_header, jpeg_header, open_image, pillow_header
from loaders.orientation import TAG, oriented, reset_orientation
from tests.jpeg_variants import without_adobe_marker


def jpeg_bytes(mode="RGB", side=(40, 30), **save) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="JPEG", **save)
    return out.getvalue()


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) rewritten to claim width x height."""
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[sof + 9 :]


LONG_HEADER = {"exif": b"Exif\x00\x00" + b"\xff\xd9" * 100, "icc_profile": b"x" * 70000}  # beyond the first read


@pytest.mark.parametrize(
    "mode,save", [("RGB", {}), ("L", {}), ("CMYK", {}), ("RGB", {"progressive": True}), ("RGB", LONG_HEADER)]
)
def test_jpeg_header_agrees_with_pillow(mode, save):
    data = jpeg_bytes(mode, (37, 23), **save)
    header = jpeg_header(lambda offset, count: data[offset : offset + count])
    with Image.open(io.BytesIO(data)) as img:
        assert (header.format, header.width, header.height, header.mode) == ("JPEG", *img.size, img.mode)
    sos = data.index(b"\xff\xda")
    assert header.data_start == sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")  # just after the scan header


@pytest.mark.parametrize("mode,strip,unmarked", [("CMYK", False, False), ("CMYK", True, True), ("RGB", False, False)])
def test_adobe_marker_is_noted_as_pillow_sees_it(mode, strip, unmarked, tmp_path):
    data = jpeg_bytes(mode)
    data = without_adobe_marker(data) if strip else data
    header = jpeg_header(lambda offset, count: data[offset : offset + count])
    with Image.open(io.BytesIO(data)) as img:
        assert header.adobe == ("adobe" in img.info) == (mode == "CMYK" and not strip)
    assert header.unmarked_cmyk == unmarked
    (tmp_path / "x.png").write_bytes(data)  # Pillow's header reader, for JPEGs this parser cannot follow
    with open(tmp_path / "x.png", "rb") as f:
        assert pillow_header(f, "x.png") == replace(header, data_start=0, orientation_at=-1)


def test_jpeg_header_gives_up_on_garbage():
    data = b"\xff\xd8" + b"\x00" * 50
    assert jpeg_header(lambda offset, count: data[offset : offset + count]) is None


def test_open_image_refuses_what_pillow_only_warns_about(tmp_path):
    """Between Pillow's limit and twice it, Image.open only warns; 10000 x 10000 = 100 M pixels."""
    path = tmp_path / "big.jpg"
    path.write_bytes(with_size(jpeg_bytes(), 10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes either
        with pytest.raises(ImageTooLarge, match=r"big.jpg: decompression bomb"):
            with open_image(path):
                pass
    path.write_bytes(with_size(jpeg_bytes(), 9000, 9000))  # 81 M pixels: under the limit
    with open_image(path) as img:
        assert img.size == (9000, 9000) and 9000 * 9000 <= MAX_PIXELS


def test_encoded_header_refuses_a_bomb_held_in_memory():
    data = jpeg_bytes()
    assert encoded_header(memoryview(data), "ok.jpg").width == 40
    with pytest.raises(ImageTooLarge, match=r"x.jpg: decompression bomb \(header says 60000 x 60000"):
        encoded_header(with_size(data, 60000, 60000), "x.jpg")
    png = io.BytesIO()
    Image.new("L", (9500, 9500)).save(png, format="PNG")  # 90 M pixels, through Pillow's header reader
    with pytest.raises(ImageTooLarge, match="x.png"):
        encoded_header(png.getvalue(), "x.png")


def test_bytes_pillow_cannot_identify_name_their_file():
    """Pillow names a BytesIO by its repr; a worker's error must name the file."""
    with pytest.raises(Image.UnidentifiedImageError, match="'/data/cat.JPEG'"):
        encoded_header(b"not an image at all" * 10, "/data/cat.JPEG")


def exif_segment(order: bytes, *entries: tuple[int, int, bytes]) -> bytes:
    """An APP1 segment holding a TIFF structure in byte order `order` (b"II" or b"MM") whose first
    IFD has the entries (tag, TIFF type, 4-byte value field), each of count 1."""
    e = "<" if order == b"II" else ">"
    ifd = struct.pack(e + "H", len(entries)) + b"".join(struct.pack(e + "HHI", t, k, 1) + v for t, k, v in entries)
    payload = b"Exif\x00\x00" + order + struct.pack(e + "HI", 42, 8) + ifd + b"\x00" * 4
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def short(order: bytes, code: int) -> bytes:
    return struct.pack("<HH" if order == b"II" else ">HH", code, 0)


def long(order: bytes, code: int) -> bytes:
    return struct.pack("<I" if order == b"II" else ">I", code)


DESCRIPTION = (0x010E, 2, b"cat\x00")  # an ASCII tag before the orientation
EXIF_CASES = {  # name -> (APP1 segments, the code Pillow's exif_transpose applies)
    "big-endian": ([exif_segment(b"MM", (TAG, 3, short(b"MM", 6)))], 6),
    "little-endian": ([exif_segment(b"II", (TAG, 3, short(b"II", 8)))], 8),
    "after another tag": ([exif_segment(b"MM", DESCRIPTION, (TAG, 3, short(b"MM", 5)))], 5),
    "LONG, big-endian": ([exif_segment(b"MM", (TAG, 4, long(b"MM", 7)))], 7),
    "LONG, little-endian": ([exif_segment(b"II", (TAG, 4, long(b"II", 3)))], 3),
    "in a second APP1": ([exif_segment(b"II", DESCRIPTION), exif_segment(b"II", (TAG, 3, short(b"II", 6)))], 1),
    "first APP1 counts": (
        [exif_segment(b"II", (TAG, 3, short(b"II", 2))), exif_segment(b"II", (TAG, 3, short(b"II", 6)))],
        2,
    ),
    "out of range (9)": ([exif_segment(b"MM", (TAG, 3, short(b"MM", 9)))], 1),
    "out of range (0)": ([exif_segment(b"II", (TAG, 3, short(b"II", 0)))], 1),
    "text value": ([exif_segment(b"II", (TAG, 2, b"6\x00\x00\x00"))], 1),
    "garbage": ([b"\xff\xe1\x00\x12Exif\x00\x00garbage!!!"], 1),
    "no EXIF": ([], 1),
}


@pytest.mark.parametrize("case", EXIF_CASES)
def test_exif_orientation_is_what_pillow_applies(case):
    """The header's orientation is the turn ImageOps.exif_transpose gives (the first EXIF segment,
    any integer type, codes outside 1-8 ignored), and resetting it leaves Pillow nothing to turn."""
    segments, expected = EXIF_CASES[case]
    plain = jpeg_bytes(quality=100, subsampling=0)
    data = plain[:2] + b"".join(segments) + plain[2:]
    header = jpeg_header(lambda offset, count: data[offset : offset + count])
    assert header.orientation == expected
    with Image.open(io.BytesIO(data)) as img:
        stored = np.asarray(img.convert("RGB"))
        shown = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(oriented(stored, header.orientation), shown)
    if header.orientation_at >= 0:
        reset = reset_orientation(torch.frombuffer(bytearray(data), dtype=torch.uint8), header.orientation_at)
        with Image.open(io.BytesIO(reset.numpy().tobytes())) as img:
            assert img.getexif()[TAG] == 1
    else:
        assert expected == 1
