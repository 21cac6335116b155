"""FFCV files written by FFCV's own DatasetWriter (as its ImageNet example does), not by
`python -m loaders.ffcv write`: any name, fields found by type, no class map."""

import json
import shutil

import pytest
from test_ffcv import loader, pixels
from torchvision.datasets import ImageFolder

from app import cli
from app.runs import load_checkpoint
from loaders.ffcv import require_ffcv
from loaders.ffcv.beton import ffcv_file
from loaders.imagefolder import BadDataError

require_ffcv()
from ffcv.fields import FloatField, IntField, RGBImageField  # noqa: E402
from ffcv.writer import DatasetWriter  # noqa: E402

# FFCV compiles its pipeline with numba for every loader, seconds a test: the slow tier's.
pytestmark = pytest.mark.slow

NAME = "{split}_64_0.50_90.ffcv"  # the naming of FFCV's ImageNet example


class Samples:
    """(label, image, weight) per image of an ImageFolder: the label field first and an extra
    field, so that neither the order nor the names of the fields are ours."""

    def __init__(self, root, shift=0):
        self.folder = ImageFolder(str(root))
        self.shift = shift

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        image, label = self.folder[i]
        return label + self.shift, image, float(i)


def write_foreign(path, root, shift=0):
    fields = {
        "target": IntField(),
        "img": RGBImageField(write_mode="proportion", max_resolution=96, compress_probability=0.5, jpeg_quality=90),
        "weight": FloatField(),
    }
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(Samples(root, shift))
    return path


@pytest.fixture(scope="module")
def foreign(tiny_data, tmp_path_factory):
    """tiny_data's splits as FFCV's ImageNet example writes them: ROOT/train_64_0.50_90.ffcv, ROOT/val_..."""
    root = tmp_path_factory.mktemp("foreign")
    for split in ("train", "val"):
        write_foreign(root / NAME.format(split=split), tiny_data / split)
    return root


def test_fields_are_found_by_type_and_classes_are_label_ids(tiny_data, foreign):
    ours = loader(foreign / "val")  # <data>/<split> finds <data>/val_64_0.50_90.ffcv
    _, labels = pixels(ours)
    assert labels.tolist() == ImageFolder(str(tiny_data / "val")).targets
    assert ours.classes == ["0", "1", "2"]
    assert "label ids 0..2 (no class names)" in ours.summary and "not read: weight" in ours.summary
    shuffled = loader(foreign / NAME.format(split="train"), augment="rrc", shuffle=True, batch_size=12, res=48)
    images, labels = pixels(shuffled)
    assert images.shape == (48, 3, 48, 48) and sorted(labels.tolist()) == sorted(
        ImageFolder(str(tiny_data / "train")).targets
    )


def test_class_names_come_from_the_list_given(tiny_data, foreign):
    names = ImageFolder(str(tiny_data / "val")).classes
    named = loader(foreign / "val", classes=names)
    assert named.classes == names and "3 classes" in named.summary
    assert pixels(named)[1].tolist() == ImageFolder(str(tiny_data / "val")).targets
    with pytest.raises(BadDataError, match=r"val_64_0.50_90.ffcv holds label ids 0..2, outside the 2 classes"):
        loader(foreign / "val", classes=names[:2])


def test_names_are_resolved_or_refused(foreign, tmp_path):
    assert ffcv_file(foreign / "train") == foreign / NAME.format(split="train")
    assert ffcv_file(tmp_path / "train") is None
    for name in ("train.beton", "train_a.ffcv", "train_b.ffcv"):
        shutil.copy(foreign / NAME.format(split="train"), tmp_path / name)
    assert ffcv_file(tmp_path / "train") == tmp_path / "train.beton"  # the exact name wins
    (tmp_path / "train.beton").unlink()
    with pytest.raises(BadDataError, match=r"several FFCV files.*train_a.ffcv.*train_b.ffcv"):
        ffcv_file(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match="missing.ffcv"):
        loader(tmp_path / "missing.ffcv")


def test_a_file_without_an_image_field_is_named(tmp_path):
    path = tmp_path / "labels_only.beton"
    DatasetWriter(str(path), {"label": IntField(), "score": FloatField()}, num_workers=1).from_indexed_dataset(
        [(i, 0.5) for i in range(4)]
    )
    with pytest.raises(BadDataError, match=r"labels_only.beton must hold exactly one RGB image field.*score"):
        loader(path)


def test_damaged_foreign_file_is_named(foreign, tmp_path):
    path = tmp_path / "val.ffcv"
    data = (foreign / NAME.format(split="val")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadDataError, match=rf"{path} is truncated"):
        loader(path)


def test_a_class_map_that_is_not_ours_is_named(foreign, tmp_path):
    path = tmp_path / "val.ffcv"
    shutil.copy(foreign / NAME.format(split="val"), path)
    path.with_name("val.ffcv.json").write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(BadDataError, match=r"val.ffcv.json is not a class map"):
        loader(path)


def test_labels_beyond_the_training_classes_are_named(tiny_data, tmp_path):
    path = write_foreign(tmp_path / "val.ffcv", tiny_data / "val", shift=5)
    with pytest.raises(BadDataError, match=r"val.ffcv holds label ids 5..7, outside the 3 classes"):
        loader(path, classes=["0", "1", "2"])


FAST = ["--loader", "ffcv", "--batch-size", "8", "--workers", "1", "--no-progress"]


def test_train_and_sweep_on_ffcv_files(foreign, tmp_path):
    """--data finds ROOT/<split>_64_0.50_90.ffcv; the checkpoint's classes are the label ids."""
    cli.main(
        ["train", *FAST, "--data", str(foreign), "--epochs", "1", "--train-res", "32", "--out", str(tmp_path / "t")]
    )
    metrics = json.loads((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["train_images"] == 48 and metrics["val_images"] == 18
    assert load_checkpoint(tmp_path / "t")["classes"] == ["0", "1", "2"]
    rows = cli.main(
        [
            "sweep",
            *FAST,
            "--val-data",
            str(foreign / NAME.format(split="val")),
            "--data",
            "/nowhere",
            "--checkpoint",
            str(tmp_path / "t"),
            "--test-res",
            "32,48",
        ]
    )
    assert [r["test_res"] for r in rows] == [32, 48] and all(r["images"] == 18 for r in rows)


def test_class_names_from_a_file_or_an_image_folder(tiny_data, foreign, tmp_path):
    files = [
        "--train-data",
        str(foreign / NAME.format(split="train")),
        "--val-data",
        str(foreign / NAME.format(split="val")),
        "--data",
        "/nowhere",
    ]
    folders = ImageFolder(str(tiny_data / "train")).classes
    names = tmp_path / "names.txt"
    names.write_text("\n".join(folders) + "\n")
    for source, out in ((names, "file"), (tiny_data / "train", "folder")):
        cli.main(
            [
                "train",
                *FAST,
                *files,
                "--classes",
                str(source),
                "--epochs",
                "1",
                "--train-res",
                "32",
                "--out",
                str(tmp_path / out),
            ]
        )
        assert load_checkpoint(tmp_path / out)["classes"] == folders
    rows = cli.main(
        ["sweep", *FAST, *files, "--classes", str(names), "--checkpoint", str(tmp_path / "file"), "--test-res", "32"]
    )
    assert rows[0]["images"] == 18
    names.write_text("tench\ngoldfish\n")
    with pytest.raises(BadDataError, match=r"train_64_0.50_90.ffcv holds label ids 0..2, outside the 2 classes"):
        cli.main(["train", *FAST, *files, "--classes", str(names), "--epochs", "1", "--out", str(tmp_path / "few")])
    with pytest.raises(ValueError, match=r"--classes .*names.txt names other classes than the checkpoint's"):
        cli.main(["sweep", *FAST, *files, "--classes", str(names), "--checkpoint", str(tmp_path / "file")])


@pytest.mark.parametrize(
    "type_id,message",
    [(200, "is not an FFCV file: field 'target' has unknown type id 200"), (255, "field 'target' has a custom type")],
)
def test_fields_ffcv_cannot_read_are_named(foreign, tmp_path, type_id, message):
    from ffcv.types import HeaderType

    data = bytearray((foreign / NAME.format(split="val")).read_bytes())
    data[HeaderType.itemsize] = type_id  # the first field descriptor starts with its type id
    path = tmp_path / "val.ffcv"
    path.write_bytes(bytes(data))
    with pytest.raises(BadDataError, match=rf"{path}:? .*{message}"):
        loader(path)
