"""FFCV's writer on bad input: values named, sides kept at 1 px at least, a failing or killed
writer process named (or its file skipped), names that are not UTF-8 and broken links."""

import json
import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from test_ffcv import loader
from test_imagefolder import first_image

from loaders.ffcv.__main__ import main as write_main
from loaders.ffcv.watch import WriteFailure, watched_writer
from loaders.ffcv.write import SKIPPED_IN_WRITE, fitted, write_beton
from loaders.imagefolder import BadDataError, scan_image_folder

# FFCV compiles its pipeline with numba for every loader, seconds a test: the whole file is in the
# slow tier (the quick tier runs the other backends; tests/helpers.py:ffcv_in_the_slow_tier).
pytestmark = pytest.mark.slow


def test_bad_writer_values_are_named(tiny_data, tmp_path, capsys):
    for flag, value in [("--jpeg-quality", "0"), ("--compress-probability", "2")]:
        with pytest.raises(SystemExit):
            write_main(["write", "--data", str(tiny_data), "--out", str(tmp_path), flag, value])
        assert value in capsys.readouterr().err


@pytest.mark.parametrize("side", [(30000, 3), (3, 30000), (700, 500), (512, 100), (90, 60)])
def test_fitted_resizes_as_ffcv_but_keeps_every_side(side):
    """FFCV's own resizer where it works; 1 px where its side would round to 0 (OpenCV asserts)."""
    from ffcv.fields.rgb_image import resizer

    pixels = np.random.default_rng(0).integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)
    out = fitted(pixels, 512)
    assert max(out.shape[:2]) <= 512 and min(out.shape[:2]) >= 1
    assert resizer(out, 512) is out  # FFCV keeps it as it is
    if min(side) * 512 >= max(side):
        assert np.array_equal(out, resizer(pixels, 512))


def test_image_that_scales_to_under_a_pixel_is_written(data_copy, tmp_path):
    wide = first_image(data_copy).with_name("wide.JPEG")
    Image.fromarray(np.full((3, 30000, 3), 200, dtype=np.uint8)).save(wide)
    write_main(["write", "--data", str(data_copy), "--out", str(tmp_path), "--splits", "train", "--no-progress"])
    assert json.loads((tmp_path / "train.beton.json").read_text())["images"] == 49


@contextmanager
def ends_within(seconds=300):
    """Fails the test, instead of hanging it, if the block has not ended after `seconds`."""

    def hung(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_file_failing_in_a_writer_process_is_named_or_skipped(data_copy, tmp_path):
    index = scan_image_folder(data_copy / "train", check="full", progress=False)
    victim = index.paths[20]
    open(victim, "wb").write(b"garbage, not an image" * 100)  # changed after the scan
    out = tmp_path / "out"
    with ends_within(), pytest.raises(BadDataError, match=victim):
        write_beton(index, out / "train.beton", workers=2)
    assert not list(out.iterdir())  # nothing half-written left behind
    with ends_within():
        write_beton(index, out / "train.beton", workers=2, skip_bad=True)
    meta = json.loads((out / "train.beton.json").read_text())
    assert meta["images"] == 47 and meta["skipped"] == {SKIPPED_IN_WRITE: 1}


class KillsItself:
    """A data set whose sample `at` kills the writer process reading it, as the OOM killer would."""

    def __init__(self, at: int):
        self.at = at

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return (i,)


def test_writer_process_killed_mid_write_is_named(tmp_path):
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    writer = DatasetWriter(str(tmp_path / "x.beton"), {"label": IntField()}, num_workers=2)
    with ends_within(), watched_writer(2) as watch, pytest.raises(WriteFailure) as failure:
        writer.from_indexed_dataset(KillsItself(5), chunksize=1)
    watch.stop(writer)
    assert failure.value.sample == 5 and "SIGKILL" in failure.value.said


def test_broken_link_is_skipped_and_names_that_are_not_utf8_are_read(data_copy):
    folder = first_image(data_copy, "val").parent
    (folder / "gone.JPEG").symlink_to(folder / "missing.JPEG")
    os.rename(os.fsencode(first_image(data_copy, "val")), os.path.join(os.fsencode(folder), b"caf\xe9.JPEG"))
    with pytest.raises(BadDataError, match="gone.JPEG: broken symbolic link"):
        loader(data_copy / "val")
    assert loader(data_copy / "val", skip_bad=True).skipped == {"broken symbolic link": 1}
