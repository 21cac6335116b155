"""One orientation convention for every backend: the EXIF orientation tag (0x0112), read by the
scan, and what the crops see of it.

"stored" (the default) keeps the pixels as the file stores them, ignoring the tag: what
torchvision's ImageFolder gives with Pillow, so ImageNet weights see what they were trained on.
"apply" shows each image as a viewer does (rotated and mirrored per the tag) and plans the
crops in that frame.

Whatever the setting, every backend decodes the stored pixels (a decoder that would apply the
tag gets a copy of the file with the tag reset: `reset_orientation`). With "apply", the plan
maps each crop box back into the stored frame (`stored_boxes`) and the backend turns the
resampled K x K crop by the tag (`oriented`), then mirrors it where the plan flips. Turning the
crop equals cropping the turned image: mirrors and transposes commute with a separable,
symmetric resampling filter, so no backend ever turns a whole image.
"""

from __future__ import annotations

import numpy as np
import torch

ORIENTATIONS = ("stored", "apply")
TAG = 0x0112
# TIFF integer types -> bytes of one value: Pillow reads the tag whichever it is (SHORT, 3, by the standard)
INTEGER_SIZES = {1: 1, 3: 2, 4: 4, 6: 1, 8: 2, 9: 4}
# EXIF code -> (transpose, mirror top-bottom, mirror left-right) that takes the stored pixels to
# the displayed ones, transposing first (Pillow's ImageOps.exif_transpose for each code).
TURNS = {
    1: (False, False, False),
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),  # 90 degrees clockwise
    7: (True, True, True),
    8: (True, True, False),  # 90 degrees anticlockwise
}


def exif_orientation(payload: bytes | memoryview) -> tuple[int, int]:
    """(code, offset of its value in `payload`) of an APP1 segment's payload ("Exif\\0\\0" and a
    TIFF structure); (1, -1) where it holds no valid orientation (codes outside 1-8 mean none,
    as for Pillow)."""
    payload = bytes(payload[:65536])
    order = {b"II": "little", b"MM": "big"}.get(payload[6:8]) if payload[:6] == b"Exif\x00\x00" else None
    if order is None or len(payload) < 14:
        return 1, -1

    def u16(at: int) -> int:
        return int.from_bytes(payload[at : at + 2], order)

    ifd = 6 + int.from_bytes(payload[10:14], order)
    count = u16(ifd) if ifd + 2 <= len(payload) else 0
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(payload) - 11), 12):
        if u16(entry) == TAG and (size := INTEGER_SIZES.get(u16(entry + 2))):
            code = int.from_bytes(payload[entry + 8 : entry + 8 + size], order)
            low = entry + 8 + (2 if size == 4 and order == "big" else 0)  # the 2 bytes that hold a code 1-8
            return (code, low) if code in TURNS else (1, -1)
    return 1, -1


def reset_orientation(data: torch.Tensor, at: int) -> torch.Tensor:
    """A copy of the encoded file `data` whose orientation value (2 bytes at `at` that hold a code
    2-8 in either byte order, the rest of the value being 0) says 1, for decoders that always
    apply the tag (TorchCodec)."""
    data = data.clone()
    value = data[at : at + 2]
    value.copy_(torch.where(value != 0, 1, 0).to(torch.uint8))
    return data


def codes(orientation: str, tags: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) uint8 codes to apply under the setting `orientation`, given the files' tags."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    if orientation == "stored" or tags is None:
        return np.ones(n, np.uint8)
    return np.asarray(tags, np.uint8)


def transposed(codes: np.ndarray) -> np.ndarray:
    return np.asarray(codes) >= 5


def shown_sizes(sizes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N, 2) width, height as shown: stored sizes swapped where the code transposes."""
    return np.where(transposed(codes)[:, None], sizes[:, ::-1], sizes)


def stored_boxes(boxes: np.ndarray, codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes (x, y, w, h) in the shown frame -> the same regions in the stored frame
    (`sizes`: stored width, height)."""
    turns = np.array([TURNS[int(c)] for c in codes], dtype=bool).reshape(-1, 3)
    shown = shown_sizes(sizes, codes)
    x, y, w, h = (boxes[:, k].astype(np.float64) for k in range(4))
    x = np.where(turns[:, 2], shown[:, 0] - x - w, x)  # undo the mirrors, then the transpose
    y = np.where(turns[:, 1], shown[:, 1] - y - h, y)
    t = turns[:, 0]
    return np.stack([np.where(t, y, x), np.where(t, x, y), np.where(t, h, w), np.where(t, w, h)], axis=1)


def oriented(image, code: int, flip: bool = False, dims: tuple[int, int] = (0, 1)):
    """The stored-frame image (numpy array or tensor; `dims`: its height and width axes) as shown
    under `code`, then mirrored left to right if `flip`."""
    transpose, top_bottom, left_right = TURNS[int(code)]
    numpy = isinstance(image, np.ndarray)
    if transpose:
        image = np.swapaxes(image, *dims) if numpy else image.transpose(*dims)
    axes = [d for d, on in zip(dims, (top_bottom, left_right != flip)) if on]
    if axes:
        image = np.flip(image, axes) if numpy else image.flip(axes)
    return image


def own_flips(flips: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    """(B,) bool: the flips a backend does as it crops, those of the crops not turned (a turned
    crop is flipped after its turn, by `turned_crops`)."""
    return flips if codes is None else flips & (codes == 1)


def turned_crops(images: torch.Tensor, codes: np.ndarray | None, flips: np.ndarray, dims=(1, 2)) -> torch.Tensor:
    """The batch of stored-frame crops with each crop whose code is not 1 turned, then mirrored
    where `flips` says (in place; the others as they are: their backend flipped them). `dims`:
    the height and width axes of one crop."""
    for b in np.flatnonzero(codes != 1) if codes is not None else ():
        images[b] = oriented(images[b].clone(), codes[b], bool(flips[b]), dims)
    return images
