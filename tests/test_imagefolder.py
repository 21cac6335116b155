"""Every kind of bad input the scan meets: a clear error naming the file, or a counted skip."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from loaders.imagefolder import BadDataError, scan_image_folder
from tests.jpeg_variants import jpeg_bytes, without_adobe_marker


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


@pytest.mark.parametrize(
    "damage,reason", [(truncate, "truncated JPEG"), (make_empty, "empty file"), (make_text, "unreadable image")]
)
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
    a, b, c, d = sorted((data_copy / "train" / sorted(os.listdir(data_copy / "train"))[0]).iterdir())[:4]
    Image.open(a).save(a, format="PNG")
    Image.open(b).convert("CMYK").save(b, format="JPEG")
    Image.open(c).convert("L").save(c, format="JPEG")
    with Image.open(d) as img:
        cmyk = jpeg_bytes(img.convert("CMYK"))
    d.write_bytes(without_adobe_marker(cmyk))
    index = scan_image_folder(data_copy / "train", progress=False)
    assert len(index) == 48
    assert index.notes == {
        "PNG files named .JPEG": 1,
        "CMYK images converted to RGB": 1,
        "CMYK JPEGs without Adobe's marker, read as inverted (as Pillow does)": 1,
        "L images converted to RGB": 1,
    }
    assert index.unmarked_cmyk.tolist() == [False] * 3 + [True] + [False] * 44  # what DALI gets re-encoded
    assert index.without([1], "left out").unmarked_cmyk.tolist() == [False] * 2 + [True] + [False] * 44


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


def patched_size(path, width, height):
    """Rewrite the size in a JPEG's frame header (SOF0) in place: the header then claims
    width x height while the file stays a few kilobytes."""
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def header_bomb(path):
    patched_size(path, 60000, 60000)


def real_bomb(path):
    """A real 14000 x 14000 JPEG (196 M pixels; Pillow refuses it from its header): 2 MB at quality 1."""
    Image.new("L", (14000, 14000), 128).save(path, format="JPEG", quality=1)


@pytest.mark.parametrize("make_bomb", [header_bomb, real_bomb])
def test_decompression_bomb_is_named_or_skipped_and_never_decoded(data_copy, make_bomb):
    bad = first_image(data_copy)
    make_bomb(bad)
    for check in ("header", "full"):  # the full check must not decode it either
        with pytest.raises(
            BadDataError,
            match=rf"(?s){bad.name}: decompression bomb \(header says "
            rf"(60000 x 60000|14000 x 14000).*limit of 89,478,485",
        ):
            scan_image_folder(data_copy / "train", check=check, progress=False)
    index = scan_image_folder(data_copy / "train", skip_bad=True, progress=False)
    assert len(index) == 47 and index.skipped == {"decompression bomb": [str(bad)]}


def jpeg_with_trailer(path, trailer: bytes):
    data = path.read_bytes()
    assert data.endswith(b"\xff\xd9")
    path.write_bytes(data + trailer)


@pytest.mark.parametrize("trailer", [b"\x00" * 3000, b"\x00" * (3 << 20), b"\xff\xd8 another image \xff"])
def test_jpeg_with_bytes_after_its_end_marker_is_accepted(data_copy, trailer):
    """Cameras and editors append data after the end-of-image marker; decoders stop at the marker.
    Trailers longer than the last kilobyte and than one backward search step are accepted too."""
    good = first_image(data_copy)
    jpeg_with_trailer(good, trailer)
    with Image.open(good) as img:
        img.load()  # Pillow decodes it (as DALI and FFCV's writer, which reads through Pillow, do)
    for check in ("header", "full"):
        index = scan_image_folder(data_copy / "train", check=check, progress=False)
        assert len(index) == 48 and not index.skipped


def test_truncated_jpeg_with_a_thumbnail_is_still_refused(data_copy):
    """The end marker is searched after the image data starts: the end marker of the EXIF
    thumbnail in the header of a cut file (here within its last kilobyte) does not make it whole."""
    bad = first_image(data_copy)
    thumb = bad.with_name("thumb.jpg")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(thumb, format="JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)  # ~270 bytes of image data
    Image.fromarray(noise).save(bad, format="JPEG", quality=50, exif=b"Exif\x00\x00" + thumb.read_bytes())
    thumb.unlink()
    data = bad.read_bytes()
    bad.write_bytes(data[:-100])
    assert b"\xff\xd9" in data[-1024:-100]  # the thumbnail's marker is where the old check looked
    with pytest.raises(BadDataError, match=rf"{bad.name}: truncated JPEG"):
        scan_image_folder(data_copy / "train", progress=False)


def test_broken_symbolic_link_is_named_or_skipped_and_counted(data_copy):
    folder = first_image(data_copy).parent
    link = folder / "gone.JPEG"
    link.symlink_to(data_copy / "nowhere.JPEG")
    (folder / "notes.txt").symlink_to(data_copy / "nowhere.txt")  # not an image by name: counted as such
    with pytest.raises(BadDataError, match=rf"{link.name}: broken symbolic link \(to .*nowhere.JPEG\)"):
        scan_image_folder(data_copy / "train", progress=False)
    index = scan_image_folder(data_copy / "train", skip_bad=True, progress=False)
    assert len(index) == 48
    assert index.skipped == {
        "broken symbolic link": [str(link)],
        "files without an image extension": [str(folder / "notes.txt")],
    }
    assert "skipped 1 broken symbolic link" in index.report()


def test_format_the_backend_cannot_decode_is_found_by_the_scan(data_copy):
    gif = first_image(data_copy)
    Image.open(gif).convert("P").save(gif, format="GIF")
    index = scan_image_folder(data_copy / "train", progress=False)  # Pillow decodes GIF
    assert len(index) == 48 and index.notes == {"GIF files named .JPEG": 1}
    jpeg_only = frozenset({"JPEG", "PNG"})
    with pytest.raises(BadDataError, match=rf"{gif.name}: format the loader cannot decode \(GIF; it decodes JPEG, PNG"):
        scan_image_folder(data_copy / "train", formats=jpeg_only, progress=False)
    index = scan_image_folder(data_copy / "train", formats=jpeg_only, skip_bad=True, progress=False)
    assert index.skipped == {"format the loader cannot decode": [str(gif)]}


def test_paths_are_arrays_that_read_as_strings(tiny_data):
    index = scan_image_folder(tiny_data / "train", progress=False)
    files = sorted(str(p) for p in (tiny_data / "train").glob("*/*.JPEG"))
    assert list(index.paths) == files and index.paths[-1] == files[-1] and index.paths[np.int64(3)] == files[3]
    assert index.paths.names.dtype == np.uint8 and index.paths.offsets.dtype == np.int64
    assert index.sizes.dtype == np.int32
    with pytest.raises(IndexError):
        index.paths[len(files)]


def non_utf8_name(path) -> bytes:
    """Rename `path` to a name that is not UTF-8 (café.JPEG in Latin-1, as an old archive may
    hold); its new path as bytes."""
    new = os.path.join(os.fsencode(path.parent), b"caf\xe9.JPEG")
    os.rename(os.fsencode(path), new)
    return new


def test_name_that_is_not_utf8_is_indexed_as_its_bytes(data_copy):
    new = non_utf8_name(first_image(data_copy))
    index = scan_image_folder(data_copy / "train", progress=False)
    encoded = [index.paths.encoded(i) for i in range(len(index))]
    assert len(index) == 48 and new in encoded
    i = encoded.index(new)
    assert open(index.paths[i], "rb").read() == open(new, "rb").read()  # the str path opens the same file


def test_without_leaves_out_and_counts(tiny_data):
    index = scan_image_folder(tiny_data / "train", progress=False)
    less = index.without([0, 17], "image the writer failed on")
    assert len(less) == 46 and less.skipped == {"image the writer failed on": [index.paths[0], index.paths[17]]}
    assert [less.paths[i] for i in range(46)] == [index.paths[i] for i in range(48) if i not in (0, 17)]
    assert less.labels.tolist() == np.delete(index.labels, [0, 17]).tolist()
    assert (less.sizes == np.delete(index.sizes, [0, 17], axis=0)).all()
    with pytest.raises(BadDataError, match="no usable images"):
        index.without(list(range(48)), "all of them")
