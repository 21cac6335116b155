"""Every backend crops the same pixels as pil from real-world JPEG variants (EXIF orientations
1-8, CMYK, grayscale, progressive, subsampling, restart markers, arithmetic coding, PNG with
alpha or a palette), in both orientation settings, and pil's orientation is Pillow's own."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from bench import backend_agreement as agreement
from loaders.orientation import ORIENTATIONS
from tests.helpers import ffcv_in_the_slow_tier
from tests.jpeg_variants import write_variants
from tests.tolerances import BACKEND_AGREEMENT as TOLERANCES
from tests.tolerances import PILLOW_PASSES

RES = 48
BACKENDS = tuple(TOLERANCES)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    if shutil.which("cjpeg") is None:
        pytest.skip("cjpeg (Debian's libjpeg-turbo-progs, `make system-deps`) is absent: no arithmetic-coded JPEG")
    root = tmp_path_factory.mktemp("variants") / "train"
    return root, write_variants(root)


def crops(root, backend: str, augment: str, orientation: str, **kw) -> dict[str, torch.Tensor]:
    """Variant name (its class folder) -> (3, RES, RES) crop in grey levels."""
    found = agreement.crops(root, backend, augment, orientation, RES, **kw)
    return {name.split("/")[0]: crop for name, crop in found.items()}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("augment", ["center", "rrc"])
@pytest.mark.parametrize("backend", ffcv_in_the_slow_tier(BACKENDS))
def test_backends_crop_what_pil_crops(variants, backend, augment, orientation):
    root, files = variants
    assert "arithmetic" in files and len(files) == 19
    reference = crops(root, "pil", augment, orientation)
    ours = crops(root, backend, augment, orientation)
    tolerance = TOLERANCES[backend][augment == "rrc"]
    if tolerance is None:
        pytest.skip(TOLERANCES[backend][2])
    off = {name: float((ours[name] - reference[name]).abs().mean()) for name in reference}
    worst = max(off, key=off.get)
    assert off[worst] <= tolerance, f"{backend} {augment} {orientation}: {worst} differs by {off[worst]:.2f}: {off}"


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_pil_eval_crops_are_torchvisions(variants, orientation):
    """pil's eval crop of each orientation is torchvision's Resize + CenterCrop of the image
    Pillow opens (stored) or of ImageOps.exif_transpose of it (apply)."""
    root, files = variants
    ours = crops(root, "pil", "center", orientation, reduced_decode=False)  # DCT scaling is another decode
    resize = v2.Compose([v2.Resize(round(RES / 0.875)), v2.CenterCrop(RES), v2.PILToTensor()])
    for code in range(1, 9):
        name = f"orientation_{code}"
        with Image.open(files[name]) as img:
            shown = ImageOps.exif_transpose(img) if orientation == "apply" else img.convert("RGB")
            expected = resize(shown).float()
        assert (ours[name] - expected).abs().mean() < PILLOW_PASSES, (name, orientation)
    # the tag matters: under "apply", a rotated image's crop is not the stored one's
    stored = crops(root, "pil", "center", "stored", reduced_decode=False)
    turned = (ours["orientation_6"] - stored["orientation_6"]).abs().mean()
    assert (turned > 10) == (orientation == "apply"), turned
