"""What every job sets up alike: `--compile` on the command line reaches the job's model."""

import argparse
import json
import os

import pytest
import torch
from test_models import small_net, two_sgd_steps

from app.options import TrainConfig
from app.runs import RunDir
from app.session import CPU_WORKERS, announce, default_workers, prepare_model, start_session
from pipeline.config import add_arguments, from_args


def config(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig)
    return from_args(TrainConfig, parser.parse_args(["--device", "cpu", *argv]))


def test_compile_option_compiles_the_prepared_model():
    """The same steps as test_models' compile test (TorchInductor's cache makes the second fast)."""
    assert not config().compile
    eager = prepare_model(small_net(), start_session(config()))
    compiled = prepare_model(small_net(), start_session(config("--compile")))
    assert two_sgd_steps(compiled) == pytest.approx(two_sgd_steps(eager), rel=1e-4)
    assert compiled[3].seen == [True, True] and eager[3].seen == [False, False]


def test_workers_default_to_the_cores_of_this_process_per_rank_on_cuda(monkeypatch):
    """The count comes from this process's affinity mask and torchrun's LOCAL_WORLD_SIZE (set
    here, as torchrun would), not from the machine's core count."""
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_workers(torch.device("cuda"))[0] == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))
    assert default_workers(torch.device("cuda"))[0] == 1, "never 0: at least one decoder per rank"
    if cores >= 2:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        workers, why = default_workers(torch.device("cuda"))
        assert workers == cores // 2 and f"{cores} usable CPU cores / 2 ranks" in why
    assert default_workers(torch.device("cpu"))[0] == CPU_WORKERS


def test_workers_option_is_resolved_printed_and_saved(capsys, tmp_path):
    assert config().workers == -1
    s = start_session(config())
    assert s.workers == CPU_WORKERS and "loader workers: 2 per process (default on the CPU)" in capsys.readouterr().out
    assert start_session(config("--workers", "5")).workers == 5
    assert "loader workers: 5 per process (--workers)" in capsys.readouterr().out
    run = RunDir(tmp_path / "run", True)
    announce("train", config(), run, s)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved_workers"] == CPU_WORKERS
    with pytest.raises(ValueError, match="--workers"):
        config("--workers", "-2")
