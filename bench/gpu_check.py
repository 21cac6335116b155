"""The whole GPU check in one command, sized to a lent machine: the plan (bench/gpu_plan.py)
printed first with each stage's estimated seconds, then the stages, all written to
bench/results/<machine>/ (the folder names the GPU).

    python -m bench.gpu_check                   # the core plan: under 8 minutes by its estimates
    python -m bench.gpu_check --dry-run         # print the plan only (no GPU needed)
    python -m bench.gpu_check --plan extra      # DALI and FFCV, once carried (bench/device.sh)
    python -m bench.gpu_check --stages train-resnet50

Each stage is a subprocess with its log beside the results. A stage is not started when its
estimate exceeds the time left before the deadline, and one still running at the deadline is
stopped, so that the summary is always written: `gpu-check.md` / `gpu-check.json` list each
stage's outcome, estimated and measured seconds and command, with the GPU, the libraries, the
JPEG codec in use and the training tables (img/s, peak memory, starvation ratio, data wait).
A stage that passed before is not run again unless --again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import describe_machine, machine_name, usable_cores
from bench.gpu_plan import BUDGET_S, DEADLINE_S, PLANS, command, make_plan, plan_text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", default="core", choices=sorted(PLANS), help="which plan (see bench/gpu_plan.py)")
    p.add_argument("--stages", default="", help="comma-separated stages of the plan (default: all)")
    p.add_argument("--data", default="/tmp/lowres-bench-data", help="benchmark data (the data stage makes it)")
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: the usable cores)")
    p.add_argument("--out", default="bench/results", help="results root")
    p.add_argument("--machine", default="", help="results folder name (default: CPU, cores and GPU)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="refuse a plan estimated over this (seconds)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="stop stages still running then (seconds)")
    p.add_argument("--again", action="store_true", help="run stages that already passed again")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    args.workers = args.workers or usable_cores()
    return args


def planned(args, folder: Path):
    """The plan's stages that were asked for; SystemExit naming any that the plan lacks."""
    stages = make_plan(args.plan, args.data, args.workers, str(folder), args.out)
    unknown = set(args.stages) - {s.name for s in stages}
    if unknown:
        sys.exit(f"gpu_check: unknown stages {sorted(unknown)}; plan {args.plan}: {', '.join(s.name for s in stages)}")
    return [s for s in stages if not args.stages or s.name in args.stages]


def run_stage(argv: list[str], log: Path, timeout_s: float) -> tuple[str, float]:
    """Run one stage (its own process group), its output both shown and kept in `log`, stopped
    after `timeout_s`; its outcome and seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True
        )
        stopped = threading.Event()

        def stop():
            stopped.set()
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and the workers it started

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        proc.wait()
        timer.cancel()
    seconds = time.perf_counter() - start
    if stopped.is_set():
        return f"stopped at the deadline after {seconds:.0f} s", seconds
    return ("passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"), seconds


def jpeg_codec() -> str:
    from loaders.nvjpeg import default_codec

    return default_codec()


def write_summary(folder: Path, record: dict) -> None:
    (folder / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {r['status']} | {r['estimate_s']:.0f} | {r['seconds']:.0f} | `{r['log']}` |"
        for name, r in record["stages"].items()
    )
    m = record["machine"]
    tables = "".join(f"\n{p.read_text()}" for p in sorted(folder.glob("train_throughput*.md")))
    (folder / "gpu-check.md").write_text(
        f"# GPU check on {m['gpu']} ({m['cpu']}, {m['cores']} cores)\n\n"
        f"Plan {record['plan']} (bench/gpu_plan.py). JPEG codec of the nvjpeg backend: {record['jpeg_codec']}; "
        "libraries: " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + "\n\n"
        "| stage | outcome | estimated s | measured s | log |\n|---|---|---:|---:|---|\n"
        f"{rows}\n{tables}"
    )


def run_plan(args, stages, folder: Path, started: float) -> dict:
    path = folder / "gpu-check.json"
    record = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    record.update(machine=describe_machine(), jpeg_codec=jpeg_codec(), plan=args.plan)
    os.environ.setdefault("CI", "1")  # no progress bars in the logs
    for stage in stages:
        if record["stages"].get(stage.name, {}).get("status") == "passed" and not args.again:
            print(f"== {stage.name}: passed before, skipped (--again runs it again)", flush=True)
            continue
        left = args.deadline - (time.perf_counter() - started)
        log = folder / f"gpu-check-{stage.name}.log"
        if stage.estimate_s > left:
            status, seconds = f"not started: {left:.0f} s left, estimated {stage.estimate_s:.0f} s", 0.0
        else:
            status, seconds = run_stage(command(stage), log, left)
        print(f"== {stage.name}: {status} ({seconds:.0f} s, estimated {stage.estimate_s:.0f} s)", flush=True)
        record["stages"][stage.name] = {
            "status": status,
            "seconds": round(seconds, 1),
            "estimate_s": round(stage.estimate_s, 1),
            "command": " ".join(command(stage)),
            "log": log.name,
        }
        write_summary(folder, record)
    return record


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    import torch

    folder = Path(args.out) / (args.machine or machine_name(describe_machine()))
    stages = planned(args, folder)
    print(plan_text(stages, args.budget), flush=True)
    if sum(s.estimate_s for s in stages) > args.budget:
        print("gpu_check: the plan is over its budget; choose fewer --stages or raise --budget", file=sys.stderr)
        return 3
    if args.dry_run:
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to PyTorch; this check needs one", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    record = run_plan(args, stages, folder, started)
    print(f"results: {folder}", flush=True)
    return 0 if all(r["status"] == "passed" for r in record["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
