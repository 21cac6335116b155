"""What the GPU check runs on a lent machine, and how long each stage should take there.

A lent machine gives a session 15 minutes of device time, its start and every idle wait
included, and one command at most 10 minutes: the check must fit one command and leave room
for the start. Each stage's time is estimated before anything runs, from its step counts and
the assumed costs below (ASSUMED: planning figures for an H200 with 16 cores, not
measurements; gpu-check.md sets each stage's measured time beside its estimate, so that they
can be corrected from a real run). The check prints the plan first and refuses one whose total
is over its budget.

Plans:
  core   the data, the cuda tests of pil, nvjpeg and synthetic, ResNet-18 and ResNet-50
         trained at 128/160/224 (bf16, channels-last, batch 256) on synthetic, pil and nvjpeg
         data, and one torch.compile cell. Needs nothing carried beyond the working tree.
  extra  DALI and FFCV, once their wheels are on the machine (bench/device.sh receive): their
         cuda tests and training cells, and the loader-only benchmark.
"""

from __future__ import annotations

import dataclasses
import sys

BUDGET_S = 480  # a plan's estimated total: 8 of the command's 10 minutes, the rest a margin
DEADLINE_S = 570  # stages still running then are stopped, so that results are written and returned
BATCH = 256
SIDES = (128, 160, 224)
WARMUP, STEPS, REPEATS = 5, 10, 3
DATA_IMAGES = (10, 300, 50)  # classes, train and val images per class
CUDA_TESTS = {"core": 23, "extra": 16}  # what the selections collect (a test keeps these true)
FIXRES_JOBS = {"core": 2, "extra": 2}  # of those, whole fixres jobs
SELECTION = {"core": "not dali and not ffcv", "extra": "dali or ffcv"}


@dataclasses.dataclass(frozen=True)
class Costs:
    """ASSUMED costs on the lent machine (seconds, images per second)."""

    process_s: float = 20.0  # a fresh Python: torch, CUDA context, timm
    image_cpu_s: float = 0.03  # one 375-500 px demo JPEG generated, per core
    test_s: float = 2.0  # one cuda test: a loader over 40 tiny images, or a few steps
    job_s: float = 20.0  # one fixres job of the cuda tests
    cell_s: float = 8.0  # a model built, cuDNN autotuned for a new shape
    loader_s: float = 3.0  # a loader opened and its workers started
    compile_s: float = 90.0  # torch.compile of ResNet-50's forward and backward, cold cache
    model_img_s: tuple = (("resnet18", 9000.0), ("resnet50", 3000.0))  # bf16 training at 224 px
    data_img_s: tuple = (("pil", 150.0), ("dali", 4000.0), ("ffcv", 300.0), ("nvjpeg", 1500.0))
    per_core: tuple = ("pil", "ffcv")  # data rates above are per worker core


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    argv: list[str]  # after `python -m`
    estimate_s: float
    what: str


def model_rate(costs: Costs, model: str, res: int) -> float:
    """Training images/s: the 224 px rate, scaled by pixels to the power 0.75 (small sides use
    the GPU less well than their pixel count says)."""
    return dict(costs.model_img_s)[model] * (224 / res) ** 1.5


def data_rate(costs: Costs, backend: str, workers: int) -> float:
    rate = dict(costs.data_img_s)[backend]
    return rate * workers if backend in costs.per_core else rate


def train_seconds(costs: Costs, model: str, sides, backends, workers: int, compiled: bool = False) -> float:
    """One bench.train_throughput run: per side, the synthetic timing and its forward/backward
    pass, then each backend's timing, every batch at the slower of the model and the data."""
    timed = WARMUP + STEPS * REPEATS
    total = costs.process_s + (costs.compile_s if compiled else 0.0)
    for res in sides:
        step = BATCH / model_rate(costs, model, res)
        total += costs.cell_s + (timed + STEPS) * step
        for b in backends:
            total += costs.loader_s + timed * max(step, BATCH / data_rate(costs, b, workers))
    return total


def train_argv(models: str, sides, backends, workers: int, data: str, tag: str, extra=()) -> list[str]:
    return [
        "bench.train_throughput",
        "--data",
        data,
        "--models",
        models,
        "--res",
        ",".join(map(str, sides)),
        "--backends",
        *backends,
        "--batch-size",
        str(BATCH),
        "--amp",
        "bf16",
        "--device",
        "cuda",
        "--workers",
        str(workers),
        "--warmup",
        str(WARMUP),
        "--steps",
        str(STEPS),
        "--repeats",
        str(REPEATS),
        "--no-max-batch",
        "--tag",
        tag,
        *extra,
    ]


def data_stage(costs: Costs, data: str, workers: int) -> Stage:
    classes, train, val = DATA_IMAGES
    images = classes * (train + val)
    argv = ["loaders.demo_data", "--out", data, "--classes", str(classes), "--train-per-class", str(train)]
    argv += ["--val-per-class", str(val), "--min-side", "375", "--max-side", "500", "--workers", str(workers)]
    estimate = costs.process_s + images * costs.image_cpu_s / workers
    return Stage("data", argv, estimate, f"{images} JPEGs of ImageNet-like sides (375-500 px)")


def tests_stage(costs: Costs, plan: str, junit: str) -> Stage:
    argv = ["pytest", "tests/test_cuda.py", "-m", "cuda", "-k", SELECTION[plan], "-q", "-p", "no:cacheprovider"]
    argv += ["--junitxml", junit]
    count, jobs = CUDA_TESTS[plan], FIXRES_JOBS[plan]
    estimate = costs.process_s + (count - jobs) * costs.test_s + jobs * costs.job_s
    return Stage(f"tests-{plan}", argv, estimate, f"{count} cuda tests ({SELECTION[plan]})")


def core_stages(costs: Costs, data: str, workers: int, folder: str) -> list[Stage]:
    real = ("pil", "nvjpeg")
    stages = [data_stage(costs, data, workers), tests_stage(costs, "core", f"{folder}/cuda-tests-core.xml")]
    for model in ("resnet18", "resnet50"):
        stages.append(
            Stage(
                f"train-{model}",
                train_argv(model, SIDES, real, workers, data, model),
                train_seconds(costs, model, SIDES, real, workers),
                f"{model} at {'/'.join(map(str, SIDES))} px on synthetic, pil and nvjpeg",
            )
        )
    stages.append(
        Stage(
            "train-compile",
            train_argv("resnet50", (128,), ("nvjpeg",), workers, data, "resnet50", ["--compile"]),
            train_seconds(costs, "resnet50", (128,), ("nvjpeg",), workers, compiled=True),
            "resnet50 at 128 px, torch.compile, on synthetic and nvjpeg (the GPU's own data path)",
        )
    )
    return stages


def extra_stages(costs: Costs, data: str, workers: int, folder: str) -> list[Stage]:
    real, sides = ("dali", "ffcv"), (128, 224)
    loader_argv = ["bench.loader_throughput", "--data", data, "--res", "128,224", "--splits", "train"]
    loader_argv += ["--batch-size", str(BATCH), "--device", "cuda", "--amp", "bf16", "--workers", str(workers)]
    loader_argv += ["--steps", "8", "--repeats", "3"]
    loader_s = costs.process_s + 2 * 5 * (costs.loader_s + 3 * 8 * BATCH / data_rate(costs, "pil", workers))
    return [
        data_stage(costs, data, workers),
        tests_stage(costs, "extra", f"{folder}/cuda-tests-extra.xml"),
        Stage(
            "train-extra",
            train_argv("resnet50", sides, real, workers, data, "extra"),
            train_seconds(costs, "resnet50", sides, real, workers),
            "resnet50 at 128/224 px on synthetic, dali and ffcv",
        ),
        Stage("loader", loader_argv, loader_s, "loader-only img/s of every backend at 128/224 px, train crops"),
    ]


PLANS = {"core": core_stages, "extra": extra_stages}


def make_plan(name: str, data: str, workers: int, folder: str, results: str, costs: Costs = Costs()) -> list[Stage]:
    """The stages of plan `name`, each benchmark writing to `results`/<folder's name>/."""
    stages = PLANS[name](costs, data, workers, folder)
    machine = ["--out", results, "--machine", folder.rstrip("/").rsplit("/", 1)[-1], "--no-progress"]
    return [dataclasses.replace(s, argv=s.argv + machine) if s.argv[0].startswith("bench.") else s for s in stages]


def plan_text(stages: list[Stage], budget_s: float) -> str:
    lines = [f"  {s.name:<15} ~{s.estimate_s:4.0f} s  {s.what}" for s in stages]
    total = sum(s.estimate_s for s in stages)
    verdict = "within" if total <= budget_s else "OVER"
    return "\n".join(
        ["GPU check plan (estimated from step counts and assumed costs, bench/gpu_plan.py):", *lines]
        + [f"  total           ~{total:4.0f} s ({total / 60:.1f} min), {verdict} the budget of {budget_s:.0f} s"]
    )


def command(stage: Stage) -> list[str]:
    return [sys.executable, "-m", *stage.argv]
