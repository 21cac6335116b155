"""Every kind of bad input the scan meets: a clear error naming the file, or a counted skip."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from loaders.imagefolder import BadDataError, scan_image_folder


def first_image(root, split="train"):
    folder = sorted((root / split).iterdir())[0]
    return sorted(folder.iterdir())[0]


def test_clean_folder(tiny_data):
    index = scan_image_folder(tiny_data / "train", progress=False)
    assert len(index) == 48 and index.classes == sorted(os.listdir(tiny_data / "train"))
    assert np.bincount(index.labels).tolist() == [16, 16, 16]
    assert (index.sizes >= 64).all() and (index.sizes <= 160).all()
    assert not index.skipped


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_empty(path):
    path.write_bytes(b"")


def make_text(path):
    path.write_text("this is not an image\n")


@pytest.mark.parametrize("damage,reason", [(truncate, "truncated JPEG"), (make_empty, "empty file"),
                                           (make_text, "unreadable image")])
def test_bad_file_is_named_or_skipped_and_counted(data_copy, damage, reason):
    bad = first_image(data_copy)
    damage(bad)
    with pytest.raises(BadDataError, match=rf"(?s){bad.name}.*{reason}.*--skip-bad"):
        scan_image_folder(data_copy / "train", progress=False)
    index = scan_image_folder(data_copy / "train", skip_bad=True, progress=False)
    assert len(index) == 47 and str(bad) not in index.paths
    assert sum(len(v) for v in index.skipped.values()) == 1
    assert reason in index.report()


def test_full_check_decodes_every_image(data_copy):
    bad = first_image(data_copy)
    truncate(bad)
    with pytest.raises(BadDataError, match=rf"{bad.name}: unreadable image \(image file is truncated"):
        scan_image_folder(data_copy / "train", check="full", progress=False)


def test_png_named_jpeg_cmyk_and_grayscale_are_handled(data_copy):
    a, b, c = sorted((data_copy / "train" / sorted(os.listdir(data_copy / "train"))[0]).iterdir())[:3]
    Image.open(a).save(a, format="PNG")
    Image.open(b).convert("CMYK").save(b, format="JPEG")
    Image.open(c).convert("L").save(c, format="JPEG")
    index = scan_image_folder(data_copy / "train", progress=False)
    assert len(index) == 48
    assert index.notes == {"PNG files named .JPEG": 1, "CMYK images converted to RGB": 1,
                           "L images converted to RGB": 1}


def test_empty_class_folder(data_copy):
    folder = sorted((data_copy / "train").iterdir())[1]
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(BadDataError, match=folder.name):
        scan_image_folder(data_copy / "train", progress=False)
    index = scan_image_folder(data_copy / "train", skip_bad=True, progress=False)
    assert len(index.classes) == 3 and np.bincount(index.labels, minlength=3)[1] == 0
    assert index.skipped["empty class folders"] == [str(folder)]


def test_non_image_files_are_ignored_and_counted(data_copy):
    (sorted((data_copy / "train").iterdir())[0] / "README.txt").write_text("notes")
    index = scan_image_folder(data_copy / "train", progress=False)
    assert len(index) == 48
    assert len(index.skipped["files without an image extension"]) == 1


def test_missing_path_and_no_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_image_folder(tmp_path / "nowhere", progress=False)
    (tmp_path / "flat").mkdir()
    with pytest.raises(BadDataError, match="no class folders"):
        scan_image_folder(tmp_path / "flat", progress=False)


def test_class_list_from_training_maps_a_subset_and_rejects_strangers(data_copy):
    classes = sorted(os.listdir(data_copy / "train"))
    shutil.rmtree(data_copy / "val" / classes[0])
    index = scan_image_folder(data_copy / "val", classes=classes, progress=False)
    assert set(index.labels.tolist()) == {1, 2}
    (data_copy / "val" / "intruder").mkdir()
    shutil.copy(first_image(data_copy, "val"), data_copy / "val" / "intruder" / "x.JPEG")
    with pytest.raises(BadDataError, match="intruder"):
        scan_image_folder(data_copy / "val", classes=classes, progress=False)
