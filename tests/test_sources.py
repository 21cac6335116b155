"""Split paths and class-name sources."""

import pytest

from loaders.imagefolder import BadDataError
from loaders.sources import class_names, split_root


def test_split_root_is_the_given_path_or_the_split_under_data(tmp_path):
    assert split_root("data", "val") == "data/val"
    assert split_root("data", "train", str(tmp_path / "x.ffcv")) == str(tmp_path / "x.ffcv")


def test_class_names_from_a_file_or_a_folder(tiny_data, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("tench\ngoldfish \nwhite shark\n\n")
    assert class_names(str(names)) == ["tench", "goldfish", "white shark"]
    assert class_names(str(tiny_data / "train")) == sorted(p.name for p in (tiny_data / "train").iterdir())


@pytest.mark.parametrize(
    "text,message", [("", "empty"), ("a\n\nb\n", r"line\(s\) \[2\] are empty"), ("a\nb\na\n", "twice: \\['a'\\]")]
)
def test_bad_class_lists_are_named(tmp_path, text, message):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(BadDataError, match=rf"{path}.*{message}"):
        class_names(str(path))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        class_names(str(tmp_path / "missing.txt"))
