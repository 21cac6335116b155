"""Every command ends a data or option error with one readable message, not a traceback, and
shows progress bars only on a terminal outside CI."""

import os
import subprocess
import sys

import pytest

from loaders.ffcv.__main__ import main as write_main
from pipeline.console import progress_enabled
from tests.helpers import ROOT


def command(*args, env=None):
    """(exit code, stderr) of `python args...` run from the repository root."""
    env = {**{k: v for k, v in os.environ.items() if k != "LOWRES_DEBUG"}, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    return done.returncode, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,named",
    [
        (
            ["train.py", "train", "--data", "{tmp}/missing", "--no-progress", "--out", "{tmp}/run"],
            "{tmp}/missing/train",
        ),
        (["train.py", "sweep", "--checkpoint", "{tmp}/no-run", "--no-progress"], "{tmp}/no-run"),
        (["train.py", "train", "--train-res", "-5"], "-5"),
        (
            ["-m", "loaders.ffcv", "write", "--data", "{tmp}/missing", "--out", "{tmp}/b", "--no-progress"],
            "{tmp}/missing/train",
        ),
        (
            ["-m", "loaders.ffcv", "write", "--data", "{tmp}", "--out", "{tmp}/b", "--jpeg-quality", "0"],
            "JPEG quality must be in 1..100, got 0",
        ),
        (["-m", "loaders.demo_data", "--out", "{tmp}/demo", "--classes", "1"], "classes must be >= 2, got 1"),
        (
            [
                "-m",
                "bench.loader_throughput",
                "--data",
                "{tmp}/missing",
                "--out",
                "{tmp}/r",
                "--res",
                "32",
                "--steps",
                "1",
            ],
            "{tmp}/missing/train",
        ),
    ],
)
def test_errors_are_one_message_without_traceback(tmp_path, args, named):
    code, err = command(*(a.format(tmp=tmp_path) for a in args))
    assert code != 0 and named.format(tmp=tmp_path) in err and "Traceback" not in err, err


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    args = ["train.py", "sweep", "--checkpoint", tmp_path / "no-run", "--no-progress"]
    for extra, env in (["--debug"], None), ([], {"LOWRES_DEBUG": "1"}):
        code, err = command(*args, *extra, env=env)
        assert code != 0 and "Traceback" in err and "no-run" in err


def test_bars_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("CI", "1")
    assert not progress_enabled()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.delenv("CI")
    assert not progress_enabled()


def test_ffcv_write_shows_no_bars_under_ci(tiny_data, tmp_path, capfd, monkeypatch):
    """On a terminal (stderr says so) with CI set: no bar, neither the scan's nor FFCV's
    writer's; without CI, both show."""
    args = ["write", "--data", str(tiny_data), "--out", str(tmp_path), "--splits", "val", "--workers", "1"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("CI", "1")
    write_main(args)
    err = capfd.readouterr().err
    assert "scan (full)" not in err and "18/18" not in err, err
    monkeypatch.delenv("CI")
    write_main(args)
    err = capfd.readouterr().err
    assert "scan (full)" in err and "18/18" in err, err
