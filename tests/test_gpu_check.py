"""The GPU check's plan (bench/gpu_plan.py) and its runner (bench/gpu_check.py), on the CPU: the
plan fits its budget on the lent machine (16 cores), is printed first, every stage's command is
one its program accepts, the cuda test counts it is estimated from are the collected ones, and
the runner stops a stage at the deadline and still writes its summary."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check, gpu_plan, loader_throughput, train_throughput
from bench.gpu_plan import BUDGET_S, Costs, Stage, make_plan, train_seconds
from tests.helpers import ROOT

LENT_CORES = 16


def plan(name="core", tmp_path=Path("/tmp/x")):
    return make_plan(name, str(tmp_path / "data"), LENT_CORES, str(tmp_path / "results" / "gpu"), str(tmp_path))


def test_the_core_plan_fits_its_budget_and_is_printed_first(capsys):
    stages = plan()
    assert [s.name for s in stages] == ["data", "tests-core", "train-resnet18", "train-resnet50", "train-compile"]
    assert 0 < sum(s.estimate_s for s in stages) <= BUDGET_S <= 8 * 60
    assert gpu_check.main(["--dry-run", "--workers", str(LENT_CORES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPU check plan") and "within the budget" in lines[-1]
    assert [line.split()[0] for line in lines[1:-1]] == [s.name for s in stages]


def test_a_plan_over_its_budget_is_refused_before_anything_runs(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--workers", "16", "--budget", "60", "--out", str(tmp_path)]) == 3
    assert "over its budget" in capsys.readouterr().err and not any(tmp_path.iterdir())
    with pytest.raises(SystemExit, match="unknown stages"):
        gpu_check.main(["--dry-run", "--stages", "tests,benchmarks"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path), "--workers", "16"]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["core", "extra"])
def test_every_benchmark_stage_is_a_command_its_program_accepts(tmp_path, name):
    """A typo in a stage would surface only on the lent machine, after its start was paid for."""
    modules = {"bench.train_throughput": train_throughput, "bench.loader_throughput": loader_throughput}
    for stage in plan(name, tmp_path):
        if stage.argv[0] in modules:
            args = modules[stage.argv[0]].parse_args(stage.argv[1:])
            assert args.device == "cuda" and args.workers == LENT_CORES and args.machine == "gpu"
            assert args.batch_size == gpu_plan.BATCH and args.amp == "bf16"
        if stage.argv[0] == "bench.train_throughput":
            assert not args.max_batch and args.compile == (stage.name == "train-compile")
            assert {v.backend for v in args.backends} <= {"pil", "nvjpeg", "dali", "ffcv"} and args.tag
    tests = next(s for s in plan(name, tmp_path) if s.name.startswith("tests"))
    assert tests.argv[:5] == ["pytest", "tests/test_cuda.py", "-m", "cuda", "-k"]


def test_train_estimates_follow_the_step_counts_and_the_slower_of_model_and_data():
    costs = Costs()
    one = train_seconds(costs, "resnet50", (128,), (), LENT_CORES)
    assert train_seconds(costs, "resnet50", (128, 224), (), LENT_CORES) > one
    assert train_seconds(costs, "resnet18", (128,), (), LENT_CORES) < one
    fed = train_seconds(costs, "resnet50", (128,), ("pil",), LENT_CORES)
    assert train_seconds(costs, "resnet50", (128,), ("pil",), 1) > fed > one  # one core starves the model
    assert train_seconds(costs, "resnet50", (128,), (), LENT_CORES, compiled=True) == one + costs.compile_s


@pytest.mark.slow
@pytest.mark.parametrize("name", ["core", "extra"])
def test_the_cuda_test_counts_of_the_estimates_are_the_collected_ones(name):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["tests/test_cuda.py", "-m", "cuda", "-k", gpu_plan.SELECTION[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    collected = [line for line in done.stdout.splitlines() if line.startswith("tests/test_cuda.py::")]
    assert len(collected) == gpu_plan.CUDA_TESTS[name], done.stdout[-500:]
    assert sum("test_fixres_job_on_the_gpu" in line for line in collected) == gpu_plan.FIXRES_JOBS[name]


@pytest.mark.slow
def test_stages_run_until_the_deadline_and_the_summary_is_written(tmp_path, monkeypatch, tiny_data):
    """The plan's own data stage at a tiny size, a CPU training stage, a failing stage and one
    estimated past the deadline (not started): each recorded, with the training table."""
    monkeypatch.setattr(gpu_plan, "DATA_IMAGES", (2, 3, 1))
    folder = tmp_path / "results" / "m"
    folder.mkdir(parents=True)
    data = next(s for s in plan("core", tmp_path) if s.name == "data")
    cpu_train = ["bench.train_throughput", "--data", str(tiny_data), "--models", "resnet_tiny", "--res", "32"]
    cpu_train += ["--batch-size", "4", "--workers", "0", "--warmup", "1", "--steps", "1", "--repeats", "1"]
    cpu_train += ["--backends", "--tag", "cpu", "--out", str(tmp_path / "results"), "--machine", "m", "--no-progress"]
    stages = [
        data,
        Stage("train-cpu", cpu_train, 1.0, "tiny"),
        Stage("broken", ["bench.no_such_benchmark"], 1.0, "fails at once"),
        Stage("late", ["-c", "pass"], 10_000.0, "estimated past the deadline"),
    ]
    args = gpu_check.parse_args(["--deadline", "120", "--out", str(tmp_path / "results")])
    record = gpu_check.run_plan(args, stages, folder, started=time.perf_counter())
    outcome = {name: r["status"] for name, r in record["stages"].items()}
    assert outcome["data"] == outcome["train-cpu"] == "passed"
    assert outcome["broken"].startswith("failed") and outcome["late"].startswith("not started")
    assert (tmp_path / "data" / "train").is_dir()
    summary = (folder / "gpu-check.md").read_text()
    assert "| train-cpu | passed | 1 |" in summary and "# train_throughput-cpu" in summary
    assert json.loads((folder / "gpu-check.json").read_text())["stages"]["late"]["seconds"] == 0.0


@pytest.mark.slow
def test_a_stage_past_its_time_is_stopped_with_its_children(tmp_path):
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    status, seconds = gpu_check.run_stage(
        [sys.executable, "-c", child + "print('started', flush=True); time.sleep(60)"], tmp_path / "log", 2.0
    )
    assert status.startswith("stopped at the deadline") and seconds < 30
    assert (tmp_path / "log").read_text() == "started\n"
