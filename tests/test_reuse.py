"""pipeline/reuse.py: the one rule by which kept products are reused and written whole."""

import hashlib
import json
from dataclasses import asdict

import pytest

from loaders.indexcache import FORMAT, ScanSettings
from pipeline.reuse import product_key, read_json, reused_or_built, write_json, written


def test_key_depends_on_parts_and_listing():
    assert product_key("a", {"x": 1}) == product_key("a", {"x": 1})
    assert product_key("a", {"x": 1}) != product_key("a", {"x": 2})
    assert product_key("a", listing=[b"f:1\n"]) != product_key("a", listing=[b"f:2\n"])
    assert len(product_key("a")) == 16


def test_index_key_is_the_one_stored_before(tmp_path):
    """The index cache's file names did not change with the shared key: stored indexes stay found."""
    settings = ScanSettings(classes=("a", "b"), skip_bad=True)
    before = hashlib.sha256(json.dumps([FORMAT, str(tmp_path), asdict(settings)]).encode()).hexdigest()[:16]
    assert settings.key(tmp_path) == before


def test_written_file_appears_only_whole(tmp_path):
    path = tmp_path / "product.bin"
    with written(path) as temp:
        temp.write_bytes(b"abc")
        assert not path.exists()
    assert path.read_bytes() == b"abc" and list(tmp_path.iterdir()) == [path]


def test_written_failure_leaves_the_old_product(tmp_path):
    path = tmp_path / "product.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), written(path) as temp:
        temp.write_text("half")
        raise RuntimeError("killed")
    assert read_json(path) == {"v": 1} and list(tmp_path.iterdir()) == [path]


def test_written_folder_replaces_a_folder(tmp_path):
    out = tmp_path / "set"
    (out / "old").mkdir(parents=True)
    with written(out, tmp_path / "set.partial") as temp:
        (temp / "new").mkdir(parents=True)
    assert [p.name for p in out.iterdir()] == ["new"] and not (tmp_path / "set.partial").exists()


def test_reused_or_built_builds_only_when_not_current(tmp_path):
    path, built = tmp_path / "p.json", []

    def build():
        built.append(1)
        write_json(path, {"v": 2})
        return "built"

    def current(p):
        return "reused" if read_json(p)["v"] == 2 else None

    assert reused_or_built(path, current, build) == "built"  # missing
    assert reused_or_built(path, current, build) == "reused"
    write_json(path, {"v": 1})
    assert reused_or_built(path, current, build) == "built"  # out of date
    assert len(built) == 2


def test_read_json_names_an_unreadable_record(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
