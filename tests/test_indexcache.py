"""One scan per data set: the stored index is reused while the folder's listing is unchanged,
rebuilt when it changes or when asked, and shared by processes that need it at once."""

import fcntl
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from test_imagefolder import first_image

from loaders.imagefolder import BadDataError, scan_image_folder
from loaders.indexcache import ScanSettings, index_file, stored_index
from tests.jpeg_variants import jpeg_bytes, without_adobe_marker


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LOWRES_RESCAN", raising=False)
    return tmp_path / "cache"


def same_index(a, b) -> bool:
    return (
        list(a.paths) == list(b.paths)
        and a.classes == b.classes
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.sizes, b.sizes)
        and np.array_equal(a.orientations, b.orientations)
        and np.array_equal(a.unmarked_cmyk, b.unmarked_cmyk)
        and a.skipped == b.skipped
        and a.notes == b.notes
    )


def test_stored_once_then_reused(data_copy, cache, capfd):
    root = data_copy / "train"
    victim = first_image(data_copy)  # a CMYK JPEG without Adobe's marker, which the index must remember
    with Image.open(victim) as img:
        cmyk = jpeg_bytes(img.convert("CMYK"))
    victim.write_bytes(without_adobe_marker(cmyk))
    first = stored_index(root, ScanSettings(), progress=False)
    assert "index: scanned" in capfd.readouterr().err
    again = stored_index(root, ScanSettings(), progress=False)
    log = capfd.readouterr().err
    assert "index: reused" in log and "LOWRES_RESCAN=1 or --rescan rebuilds it" in log
    assert same_index(first, again) and same_index(again, scan_image_folder(root, progress=False))
    assert again.unmarked_cmyk.sum() == 1
    stored = index_file(root.resolve(), ScanSettings())
    assert stored.parent == cache / "index"
    with np.load(stored, allow_pickle=False) as z:  # arrays only: nothing to unpickle
        assert z["labels"].dtype == np.int64 and z["names"].dtype == np.uint8


@pytest.mark.parametrize("change", ["add", "remove", "rename", "new class"])
def test_a_changed_listing_is_scanned_again(data_copy, cache, capfd, change):
    root = data_copy / "train"
    before = stored_index(root, ScanSettings(), progress=False)
    folder = sorted(root.iterdir())[1]
    image = sorted(folder.iterdir())[0]
    if change == "add":
        shutil.copy(image, folder / "extra.JPEG")
    elif change == "remove":
        image.unlink()
    elif change == "rename":
        image.rename(folder / "renamed.JPEG")
    else:
        (root / "zz_new").mkdir()
        shutil.copy(image, root / "zz_new" / "x.JPEG")
    capfd.readouterr()
    after = stored_index(root, ScanSettings(), progress=False)
    assert "the folder changed since" in capfd.readouterr().err
    assert same_index(after, scan_image_folder(root, progress=False)) and not same_index(before, after)


def test_rescan_on_request(data_copy, cache, capfd, monkeypatch):
    root = data_copy / "train"
    stored_index(root, ScanSettings(), progress=False)
    stored_index(root, ScanSettings(), rescan=True, progress=False)
    assert capfd.readouterr().err.count("index: scanned") == 2
    monkeypatch.setenv("LOWRES_RESCAN", "1")
    stored_index(root, ScanSettings(), progress=False)
    assert "LOWRES_RESCAN asked for it" in capfd.readouterr().err


def test_settings_are_part_of_the_key(data_copy, cache):
    root = data_copy / "train"
    variants = [
        ScanSettings(),
        ScanSettings(check="full"),
        ScanSettings(skip_bad=True),
        ScanSettings(formats=("JPEG",)),
        ScanSettings(classes=tuple(sorted(os.listdir(root)))),
    ]
    assert len({index_file(root, s) for s in variants}) == len(variants)
    assert index_file(root, ScanSettings()) != index_file(data_copy / "val", ScanSettings())


def test_paths_follow_the_callers_spelling_of_the_root(data_copy, cache):
    link = data_copy.parent / "linked"
    link.symlink_to(data_copy / "train")
    stored_index(data_copy / "train", ScanSettings(), progress=False)
    index = stored_index(link, ScanSettings(), progress=False)  # the same folder, resolved: reused
    assert index.paths[0].startswith(str(link) + os.sep) and os.path.isfile(index.paths[0])


def test_a_failure_while_waiting_is_raised_not_waited_for(data_copy, cache):
    """The process that holds the lock fails and leaves its error; the one waiting raises it."""
    root = data_copy / "train"
    stored = index_file(root.resolve(), ScanSettings())
    stored.parent.mkdir(parents=True)
    errors = []

    def waiter():
        try:
            stored_index(root, ScanSettings(), progress=False)
        except BadDataError as e:
            errors.append(str(e))

    with open(stored.with_name(stored.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=waiter)
        thread.start()
        failed = stored.with_name(stored.name + ".failed")
        failed.write_text("3 bad image file(s) under the folder")
        future = os.stat(failed).st_mtime + 60
        os.utime(failed, (future, future))  # written after the waiter began to wait, whatever the clock
    thread.join(timeout=60)
    assert errors and errors[0].startswith("3 bad image file(s)") and "another process" in errors[0]


def test_the_builders_error_is_the_one_raised_and_nothing_is_stored(data_copy, cache):
    root = data_copy / "train"
    bad = sorted(sorted(root.iterdir())[0].iterdir())[0]
    bad.write_bytes(b"")
    with pytest.raises(BadDataError, match=rf"{bad.name}: empty file"):
        stored_index(root, ScanSettings(), progress=False)
    assert not index_file(root.resolve(), ScanSettings()).exists()
    assert len(stored_index(root, ScanSettings(skip_bad=True), progress=False)) == 47


def test_unwritable_cache_scans_without_storing(data_copy, tmp_path, monkeypatch, capfd):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path / "file"))  # a file where a folder should be
    index = stored_index(data_copy / "train", ScanSettings(), progress=False)
    assert len(index) == 48 and "scanning without storing it" in capfd.readouterr().err
