"""The whole GPU check in one command: the `cuda` tests, then the GPU benchmarks, all written to
bench/results/<machine>/ (the folder and every JSON name the GPU).

    python -m bench.gpu_check                       # every stage: sized for ~20 min on one H100, 16 cores
    python -m bench.gpu_check --stages train        # one stage (a device call is limited to 10 minutes)

Stages, in order (each a subprocess with its log beside the results; a finished stage is not
run again unless --again, so a command cut short goes on where it stopped). The minutes are
estimates from the step counts, not yet measured on a GPU:

  tests          pytest -m cuda: the loader contract on CUDA, pixels against the CPU path, AMP
                 train steps, the fixres job on the GPU (tests/test_cuda.py)           ~3 min
  loader         loader-only img/s per backend and the torchvision reference, train and eval
                 crops at 128/160/224, batch 256, bf16 on the GPU                      ~3 min
  train          ResNet-50 and ResNet-18, channels-last, bf16, batch 256 at 128/160/224:
                 synthetic img/s, forward/backward split, peak memory, largest batch, and the
                 data-starvation ratio (real / synthetic) of every backend             ~7 min
  train-compile  the same with torch.compile at 128 px (the largest batch search stays
                 eager)                                                               ~4 min

The benchmark data (ImageNet-like sides, 375-500 px, 3,000 JPEGs) is generated first when
--data does not exist. `gpu-check.md` / `gpu-check.json` in the results folder list each
stage's outcome, time and command, with the GPU, the libraries and the JPEG codec in use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import describe_machine, machine_name

STAGES = ("tests", "loader", "train", "train-compile")
SIDES = "128,160,224"
TRAIN = [
    "--models",
    "resnet50,resnet18",
    "--batch-size",
    "256",
    "--amp",
    "bf16",
    "--device",
    "cuda",
    "--warmup",
    "5",
    "--steps",
    "10",
    "--repeats",
    "3",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--data", default="/tmp/lowres-bench-data", help="benchmark data (generated when missing)")
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: the usable cores)")
    p.add_argument("--out", default="bench/results", help="results root")
    p.add_argument("--machine", default="", help="results folder name (default: CPU, cores and GPU)")
    p.add_argument("--again", action="store_true", help="run stages that already passed again")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; available: {', '.join(STAGES)}")
    return args


def stage_commands(args, folder: Path) -> dict[str, list[str]]:
    """The command of each stage."""
    py = sys.executable
    bench = [
        "--data",
        args.data,
        "--workers",
        str(args.workers),
        "--out",
        args.out,
        "--machine",
        folder.name,
        "--no-progress",
    ]
    return {
        "tests": [
            py,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml",
            str(folder / "cuda-tests.xml"),
        ],
        "loader": [
            py,
            "-m",
            "bench.loader_throughput",
            "--res",
            SIDES,
            "--batch-size",
            "256",
            "--device",
            "cuda",
            "--amp",
            "bf16",
            "--warmup",
            "3",
            "--steps",
            "8",
            "--repeats",
            "3",
            *bench,
        ],
        "train": [py, "-m", "bench.train_throughput", "--res", SIDES, *TRAIN, *bench],
        "train-compile": [
            py,
            "-m",
            "bench.train_throughput",
            "--res",
            "128",
            "--compile",
            "--no-max-batch",
            *TRAIN,
            *bench,
        ],
    }


def ensure_data(root: str, workers: int) -> None:
    if (Path(root) / "train").is_dir():
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loaders.demo_data",
            "--out",
            root,
            "--min-side",
            "375",
            "--max-side",
            "500",
            "--workers",
            str(workers),
        ],
        check=True,
    )


def run_stage(name: str, command: list[str], log: Path) -> dict:
    """Run one stage, its output both shown and kept in `log`; its outcome, time and command."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        proc.wait()
    minutes = (time.perf_counter() - start) / 60
    status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    print(f"== {name}: {status} in {minutes:.1f} min (log: {log})", flush=True)
    return {"status": status, "minutes": round(minutes, 2), "command": " ".join(command), "log": log.name}


def jpeg_codec() -> str:
    from loaders.nvjpeg import default_codec

    return default_codec()


def write_summary(folder: Path, record: dict) -> None:
    (folder / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {r['status']} | {r['minutes']:.1f} | `{r['log']}` |" for name, r in record["stages"].items()
    )
    m = record["machine"]
    (folder / "gpu-check.md").write_text(
        f"# GPU check on {m['gpu']} ({m['cpu']}, {m['cores']} cores)\n\n"
        f"JPEG codec of the nvjpeg backend: {record['jpeg_codec']}; libraries: "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
        + f"\n\n| stage | outcome | minutes | log |\n|---|---|---:|---|\n{rows}\n"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to PyTorch; this check needs one", file=sys.stderr)
        return 2
    desc = describe_machine()
    args.workers = args.workers or desc["cores"]
    folder = Path(args.out) / (args.machine or machine_name(desc))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gpu-check.json"
    record = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    record.update(machine=desc, jpeg_codec=jpeg_codec())
    if set(args.stages) - {"tests"}:
        ensure_data(args.data, args.workers)
    commands = stage_commands(args, folder)
    os.environ.setdefault("CI", "1")  # no progress bars in the logs
    for name in args.stages:
        if record["stages"].get(name, {}).get("status") == "passed" and not args.again:
            print(f"== {name}: passed before, skipped (--again runs it again)", flush=True)
            continue
        record["stages"][name] = run_stage(name, commands[name], folder / f"gpu-check-{name}.log")
        write_summary(folder, record)
    write_summary(folder, record)
    print(f"results: {folder}", flush=True)
    return 0 if all(r["status"] == "passed" for r in record["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
