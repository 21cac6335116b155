"""Real-world image variants, made here with Pillow (and `cjpeg` for arithmetic coding): the
files that decoders disagree on. Shared by the cross-backend agreement tests."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 176, 120  # not square, so a rotation shows in the crops
ORIENTATION_TAG = 0x0112
ADOBE_APP14 = b"\xff\xee"


def scene(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, hard edges and fine texture, nothing symmetric."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    r = 255 * x / width
    g = 255 * (0.5 + 0.5 * np.sin(x / 9.0 + y / 23.0))
    b = 255 * y / height
    img = np.stack([r, g, b], axis=-1)
    img[height // 5 : height // 2, width // 7 : width // 3] = (230, 40, 20)  # an off-centre block
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92, **options)
    return out.getvalue()


def with_orientation(img: Image.Image, code: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = code
    return jpeg_bytes(img, exif=exif.tobytes())


def without_adobe_marker(data: bytes) -> bytes:
    """The JPEG without its Adobe APP14 segment: a CMYK file then no longer says its samples are
    inverted, which decoders read differently (Pillow still assumes the Adobe polarity)."""
    at = data.index(ADOBE_APP14)
    length = int.from_bytes(data[at + 2 : at + 4], "big")
    return data[:at] + data[at + 2 + length :]


def arithmetic_coded(img: Image.Image) -> bytes | None:
    """The image as an arithmetic-coded JPEG written by `cjpeg -arithmetic`, or None without cjpeg."""
    cjpeg = shutil.which("cjpeg")
    if cjpeg is None:
        return None
    ppm = io.BytesIO()
    img.save(ppm, "PPM")
    command = [cjpeg, "-arithmetic", "-quality", "92"]
    return subprocess.run(command, input=ppm.getvalue(), capture_output=True, check=True).stdout


def variants() -> dict[str, bytes]:
    """File name -> encoded bytes of every variant (arithmetic coding only where cjpeg exists)."""
    img = scene()
    cmyk = jpeg_bytes(img.convert("CMYK"))
    assert ADOBE_APP14 in cmyk  # libjpeg marks CMYK as Adobe's (inverted samples)
    files = {f"orientation_{code}.jpg": with_orientation(img, code) for code in range(1, 9)}
    files |= {
        "cmyk_adobe.jpg": cmyk,
        "cmyk_plain.jpg": without_adobe_marker(cmyk),
        "grayscale.jpg": jpeg_bytes(img.convert("L")),
        "progressive.jpg": jpeg_bytes(img, progressive=True),
        "subsampling_444.jpg": jpeg_bytes(img, subsampling=0),
        "subsampling_422.jpg": jpeg_bytes(img, subsampling=1),
        "subsampling_420.jpg": jpeg_bytes(img, subsampling=2),
        "restart_markers.jpg": jpeg_bytes(img, restart_marker_blocks=4),
    }
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(img.size))
    files["alpha.png"] = png_bytes(rgba)
    files["palette.png"] = png_bytes(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    if (arithmetic := arithmetic_coded(img)) is not None:
        files["arithmetic.jpg"] = arithmetic
    return files


def png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def write_variants(root: Path, per_class: int = 1) -> dict[str, Path]:
    """An ImageFolder split under `root`, one class folder per variant (holding `per_class`
    copies of it); variant name -> its first file."""
    written = {}
    for name, data in variants().items():
        stem = name.rsplit(".", 1)[0]
        (root / stem).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            path = root / stem / f"{k}_{name}"
            path.write_bytes(data)
            written.setdefault(stem, path)
    return written
