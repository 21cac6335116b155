"""What every job sets up alike: `--compile` on the command line reaches the job's model."""

import argparse

import pytest
from test_models import small_net, two_sgd_steps

from app.options import TrainConfig
from app.session import prepare_model, start_session
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
