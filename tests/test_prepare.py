"""python -m loaders.prepare: a resolution-aware copy that every ImageFolder backend reads,
written file by file so that a killed run resumes and never counts a half-written image."""

import json

import numpy as np
import pytest
from PIL import Image

from bench import backend_agreement as agreement
from loaders import create_loader
from loaders.base import LoaderConfig
from loaders.imagefolder import BadDataError, scan_image_folder
from loaders.orientation import ORIENTATIONS, TAG
from loaders.prepare import main as prepare
from loaders.stored_size import split_max_side
from pipeline.sizes import ConstantSize


def run(data, out, *extra):
    return prepare(
        ["--data", str(data), "--out", str(out), "--for-res", "32", "--workers", "2", "--no-progress", *extra]
    )


def test_copy_is_stored_at_the_rule_side_and_loads_like_the_original(tiny_data, tmp_path):
    manifest = run(tiny_data, tmp_path / "p")
    for split in ("train", "val"):
        side = split_max_side(split, 32)
        original = scan_image_folder(tiny_data / split, progress=False)
        copy = scan_image_folder(tmp_path / "p" / split, original.classes, progress=False)
        assert len(copy) == len(original) and copy.labels.tolist() == original.labels.tolist()
        assert (copy.sizes.max(axis=1) <= side).all()
        small = original.sizes.max(axis=1) <= side  # copied untouched; the others keep their aspect
        assert np.array_equal(copy.sizes[small], original.sizes[small])
        ratio = original.sizes[~small] / original.sizes[~small].max(axis=1, keepdims=True)
        assert np.allclose(copy.sizes[~small] / side, ratio, atol=1.5 / side)
        assert sum(manifest["complete"][split]["images"].values()) == len(original)
    assert manifest["complete"]["train"]["images"]["resized"] > 0 and manifest["settings"]["jpeg_quality"] == 90
    cfg = LoaderConfig(
        backend="pil",
        root=str(tmp_path / "p" / "train"),
        policy=ConstantSize(32, 8),
        augment="rrc",
        shuffle=True,
        workers=0,
    )
    x, y = next(iter(create_loader(cfg, progress=False)))
    assert x.shape == (8, 3, 32, 32)


def test_killed_run_resumes_without_counting_partial_files(tiny_data, tmp_path):
    out = tmp_path / "p"
    run(tiny_data, out, "--splits", "train")
    files = sorted((out / "train").glob("*/*"))
    files[0].unlink()
    files[1].unlink()
    stale = files[1].with_name(files[1].name + ".1234.partial")
    stale.write_bytes(b"half an image")
    manifest = run(tiny_data, out, "--splits", "train")
    assert manifest["complete"]["train"]["images"].get("done") == len(files) - 2
    assert files[0].is_file() and files[1].is_file() and not stale.exists()
    with Image.open(files[1]) as img:
        img.load()


def test_other_settings_into_the_same_folder_are_refused(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "p", "--splits", "val")
    with pytest.raises(BadDataError, match="use another --out"):
        run(tiny_data, tmp_path / "p", "--splits", "val", "--jpeg-quality", "80")
    assert json.loads((tmp_path / "p" / "prepared.json").read_text())["settings"]["jpeg_quality"] == 90


def test_bad_image_is_named_or_skipped_and_counted(data_copy, tmp_path):
    bad = sorted((data_copy / "train").glob("*/*"))[3]
    bad.write_bytes(bad.read_bytes()[:200])  # header intact, image data cut
    with pytest.raises(BadDataError, match=bad.name):
        run(data_copy, tmp_path / "a", "--splits", "train")
    manifest = run(data_copy, tmp_path / "b", "--splits", "train", "--skip-bad")
    assert sum(manifest["complete"]["train"]["skipped"].values()) == 1
    assert not (tmp_path / "b" / "train" / bad.parent.name / bad.name).exists()


def test_copy_keeps_the_orientation_tag(data_copy, tmp_path):
    """A downscaled copy keeps the source's EXIF orientation, so `--exif-orientation apply` turns
    its crops as it turns the source's; "stored" ignores the tag on both."""
    train, side = data_copy / "train", split_max_side("train", 32)
    index = scan_image_folder(train, progress=False)
    large = [index.paths.relative(i) for i in range(len(index)) if index.sizes[i].max() > side]  # re-encoded
    tagged = dict(zip(large[::5], (6, 3, 8, 5)))
    for name, code in tagged.items():
        with Image.open(train / name) as img:
            exif = img.getexif()
            exif[TAG] = code
            img.save(train / name, format="JPEG", quality=95, exif=exif)
    run(data_copy, tmp_path / "p", "--splits", "train")
    copy, source = tmp_path / "p" / "train", scan_image_folder(train, progress=False)
    assert scan_image_folder(copy, progress=False).orientations.tolist() == source.orientations.tolist()
    assert sorted(source.orientations[source.orientations != 1]) == [3, 5, 6, 8]
    crops = {(root, o): agreement.crops(root, "pil", "center", o, 32) for root in (train, copy) for o in ORIENTATIONS}

    def off(a, b, name):
        return float((crops[a][name] - crops[b][name]).abs().mean())

    for name in tagged:  # the copy's crop is the source's, downscaled, the same in both settings
        downscaled = off((copy, "stored"), (train, "stored"), name)
        assert abs(off((copy, "apply"), (train, "apply"), name) - downscaled) < 0.5
        assert off((copy, "stored"), (train, "apply"), name) > 2 * downscaled  # what a copy without the tag gives
