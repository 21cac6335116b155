"""The demo data generator: layout, determinism, sizes, caching and argument checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loaders.demo_data import class_specs, generate, main, render_image
from tests.helpers import ROOT

SMALL = dict(classes=3, train_per_class=4, val_per_class=2, min_side=64, max_side=160, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("demo") / "set", workers=1, **SMALL)


def test_layout_and_counts(small_set):
    names = [spec.name for spec in class_specs(3)]
    assert names == sorted(names)
    assert sorted(p.name for p in small_set.iterdir()) == ["manifest.json", "train", "val"]
    for split, per_class in (("train", 4), ("val", 2)):
        assert sorted(p.name for p in (small_set / split).iterdir()) == names
        for name in names:
            files = sorted((small_set / split / name).iterdir())
            assert [f.name for f in files] == [f"{name}_{i:05d}.JPEG" for i in range(per_class)]
            for f in files:
                with Image.open(f) as im:
                    assert (im.format, im.mode) == ("JPEG", "RGB")
    assert not small_set.with_name("set.partial").exists()


def test_manifest(small_set):
    manifest = json.loads((small_set / "manifest.json").read_text())
    assert manifest["classes"] == [spec.name for spec in class_specs(3)]
    assert manifest["counts"] == {"train": {"per_class": 4, "total": 12}, "val": {"per_class": 2, "total": 6}}
    assert manifest["parameters"]["seed"] == 0
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in small_set.rglob("*.JPEG"))


def test_scale_multiplies_counts(tmp_path):
    out = generate(tmp_path / "set", **{**SMALL, "scale": 0.5}, workers=1)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"]["per_class"] == 2
    assert len(list((out / "val").rglob("*.JPEG"))) == 3


def test_same_seed_is_byte_identical_in_parallel_too(small_set, tmp_path):
    again = generate(tmp_path / "again", workers=2, **SMALL)
    assert tree_bytes(again) == tree_bytes(small_set)


def test_other_seed_differs(small_set, tmp_path):
    other = tree_bytes(generate(tmp_path / "other", seed=1, workers=1, **SMALL))
    first = tree_bytes(small_set)
    images = [k for k in first if k.endswith(".JPEG")]
    assert all(other[k] != first[k] for k in images)


def test_sizes_and_orientations():
    sizes = [render_image(0, "train", c, i, 3, 100, 250).size for c in range(3) for i in range(16)]
    assert all(100 <= side <= 250 for size in sizes for side in size)
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert len(set(sizes)) > len(sizes) // 2


def test_up_to_date_rerun_is_a_no_op(tmp_path):
    out = generate(tmp_path / "set", workers=1, **SMALL)
    files = [out / "manifest.json", next(out.rglob("*.JPEG"))]
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert generate(out, workers=1, **SMALL) == out
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_other_parameters_need_force(tmp_path):
    out = generate(tmp_path / "set", workers=1, **SMALL)
    with pytest.raises(FileExistsError, match="force"):
        generate(out, seed=1, workers=1, **SMALL)
    generate(out, seed=1, workers=1, force=True, **SMALL)
    assert json.loads((out / "manifest.json").read_text())["parameters"]["seed"] == 1
    assert not out.with_name("set.partial").exists()


def test_never_replaces_a_folder_that_is_not_a_demo_set(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a demo data set"):
        generate(tmp_path / "mine", force=True, workers=1, **SMALL)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "bad, named",
    [
        (dict(classes=1), "classes"),
        (dict(train_per_class=0), "train_per_class"),
        (dict(val_per_class=-1), "val_per_class"),
        (dict(scale=0.0), "scale"),
        (dict(scale=float("nan")), "scale"),
        (dict(seed=-1), "seed"),
        (dict(min_side=300, max_side=200), "min_side"),
        (dict(min_side=16), "min_side"),
        (dict(workers=0), "workers"),
    ],
)
def test_bad_values_raise_naming_them(tmp_path, bad, named):
    with pytest.raises(ValueError, match=named):
        generate(tmp_path / "set", **{**SMALL, "workers": 1, **bad})
    assert not (tmp_path / "set").exists() and not (tmp_path / "set.partial").exists()


def test_mean_colour_does_not_separate_classes():
    """Classes share hues in pairs and sit on varied backgrounds: a nearest-centroid classifier
    on mean image colour must fail often even on the images it was fitted to."""
    classes, per_class = 6, 12
    means = np.array(
        [
            [
                np.asarray(render_image(0, "train", c, i, classes, 64, 96), np.float32).mean(axis=(0, 1))
                for i in range(per_class)
            ]
            for c in range(classes)
        ]
    )
    centroids = means.mean(axis=1)
    distances = np.linalg.norm(means[:, :, None, :] - centroids[None, None], axis=-1)
    accuracy = (distances.argmin(axis=-1) == np.arange(classes)[:, None]).mean()
    assert accuracy < 0.8


@pytest.mark.slow
def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1", "--workers", "1"]
    # one real `python -m` run for the entry point (slow: the package imports torch), the rest in-process
    first = subprocess.run(
        [sys.executable, "-m", "loaders.demo_data", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"CI": "1", "PATH": ""},
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert len(list(out.rglob("*.JPEG"))) == 4
    assert main(args) == 0 and "up to date" in capsys.readouterr().err
    for extra, message in ((["--seed", "3"], "--force"), (["--classes", "1", "--force"], "classes")):
        with pytest.raises(SystemExit) as exit_info:
            main(args + extra)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
