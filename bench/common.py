"""What every benchmark shares: the machine description, steady-state timing, process-tree
CPU and memory sampling, backend discovery, and writing results (table, JSON, PNG).

Results go to `<out>/<machine>/<benchmark>.{json,md,png}`, so runs from several machines sit
side by side under bench/results/ and each says what it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import psutil
import torch

from app.datawait import DataClock
from app.report import markdown_table, save_figure
from pipeline.config import positive_ints
from pipeline.console import say

LIBRARIES = ("torch", "torchvision", "numpy", "pillow", "pillow-simd", "psutil", "timm", "ffcv", "nvidia-dali-cuda130")


# ---------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import PIL

    found["PIL (imported)"] = PIL.__version__  # Pillow-SIMD reports x.y.z.postN
    return found


def describe_machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def machine_name(desc: dict) -> str:
    """A short folder name for results: CPU model and core count, and the GPU if any."""

    def slug(text: str) -> str:
        text = re.sub(r"\((R|TM)\)|CPU|Processor|@.*|\d+-Core", "", text, flags=re.I)
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    parts = [slug(desc["cpu"]), f"{desc['cores']}c"] + ([slug(desc["gpu"])] if desc["gpu"] else [])
    return "-".join(p for p in parts if p)


# ---------------------------------------------------------------------------- timing


def spread(values: list[float]) -> dict:
    """Median and spread of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rel_spread": (max(values) - min(values)) / statistics.median(values) if statistics.median(values) else 0.0,
        "values": values,
    }


def endless(loader) -> Iterator:
    """Batches of consecutive epochs without end: steady state crosses epoch boundaries."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(batches: Iterator, consume: Callable, device: torch.device, steps: int) -> None:
    """Untimed batches first: worker start-up, JIT, allocator and cuDNN autotuning."""
    for _ in range(steps):
        consume(*next(batches))
    sync(device)


def images_per_second(batches: Iterator, consume: Callable, device: torch.device, steps: int, repeats: int) -> dict:
    """Steady-state rate of `consume(images, labels)` over `batches`: `repeats` timed runs of
    `steps` batches each, the device synchronised once at the end of each run; median and spread
    of images per second, the totals, and the share of the time the host spent waiting for the
    next batch (`data_wait_share`: 0 when the data is always ready)."""
    clock = DataClock()  # the trainer's own measure of the data wait
    timed = clock.batches(batches)
    rates, images, seconds = [], 0, 0.0
    for _ in range(repeats):
        start, count = time.perf_counter(), 0
        for _ in range(steps):
            x, y = next(timed)
            consume(x, y)
            count += x.shape[0]
        sync(device)
        rates.append(count / (time.perf_counter() - start))
        images += count
        seconds += count / rates[-1]
    return {**spread(rates), "images": images, "seconds": seconds, "data_wait_share": clock.share(seconds)}


def process_tree() -> list[psutil.Process]:
    """This process and its live children (loader workers)."""
    root = psutil.Process()
    return [root, *root.children(recursive=True)]


def cpu_seconds_by_pid() -> dict[int, float]:
    """CPU seconds used so far by each process of the tree."""
    used = {}
    for p in process_tree():
        try:
            t = p.cpu_times()
        except psutil.Error:  # a worker that just exited
            continue
        used[p.pid] = t.user + t.system
    return used


def settle(quiet_cores: float = 0.1, window: float = 0.1, timeout: float = 30.0) -> float:
    """Waits until this process tree uses under `quiet_cores` cores over `window` seconds (the
    loaders' workers have filled their queues and stopped), or `timeout` seconds; returns the
    seconds waited. Without it, one loader's prefetching runs into the next one's timed turn."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        before = sum(cpu_seconds_by_pid().values())
        time.sleep(window)
        if sum(cpu_seconds_by_pid().values()) - before < quiet_cores * window:
            break
    return time.perf_counter() - start


class ProcessTreeMonitor:
    """CPU time and peak memory of this process and all its children (loader workers),
    sampled in a thread while the `with` block runs. Memory is the proportional set size
    (PSS: a page shared by n processes counts 1/n in each), so the sum over the tree is the
    memory the tree really holds; forked workers share most of their parent's pages."""

    def __init__(self, interval: float | None = 0.25):
        self.interval = interval  # None: no sampling thread, memory read once at the end
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.peak_bytes = 0
        self.own_cpu = 0.0  # CPU time of the sampling thread itself
        self.stop = threading.Event()

    def sample(self) -> None:
        total = 0
        for p in process_tree():
            try:
                t = p.cpu_times()
                mem = p.memory_full_info()
            except psutil.Error:  # a worker that just exited
                continue
            total += getattr(mem, "pss", mem.rss)  # PSS is Linux-only
            self.cpu_start.setdefault(p.pid, 0.0)  # born inside the block: all its time counts
            self.cpu_last[p.pid] = t.user + t.system
        self.peak_bytes = max(self.peak_bytes, total)

    def run(self) -> None:
        start = time.thread_time()
        while not self.stop.wait(self.interval):
            self.sample()
            self.own_cpu = time.thread_time() - start

    def __enter__(self):
        self.cpu_start = cpu_seconds_by_pid()
        self.cpu_last = dict(self.cpu_start)
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self.run, daemon=True) if self.interval else None
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.sample()
        self.seconds = time.perf_counter() - self.started
        # Reading a process's memory map costs the reader kernel time (0.3 CPU-s per sample of a
        # loader benchmark's tree, measured): the sampling thread's own CPU is not the work's.
        total = sum(self.cpu_last[pid] - self.cpu_start[pid] for pid in self.cpu_last)
        self.cpu_seconds = max(total - self.own_cpu, 0.0)

    def result(self) -> dict:
        return {
            "cpu_cores_used": self.cpu_seconds / self.seconds if self.seconds else 0.0,
            "cpu_seconds": self.cpu_seconds,
            "peak_mem_mb": self.peak_bytes / 2**20,
        }


def gpu_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_gpu_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------------------- backends


@dataclasses.dataclass(frozen=True)
class Variant:
    """A backend with LoaderConfig overrides, written `name` or `name:field=value,field=value`
    (e.g. `pil:reduced_decode=false`, or `ffcv:root=/betons/512q90/train.beton` for another
    FFCV write), so that a benchmark compares settings of one backend."""

    label: str
    backend: str
    overrides: tuple[tuple[str, object], ...] = ()


SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def parse_variant(text: str) -> Variant:
    from loaders import BACKENDS
    from loaders.base import LoaderConfig

    name, _, rest = text.partition(":")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} in {text!r}; available: {', '.join(BACKENDS)}")
    fields = {f.name: f for f in dataclasses.fields(LoaderConfig)}
    overrides = []
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise ValueError(f"{text!r}: LoaderConfig has no field {key!r}")
        kind = SCALARS.get(str(fields[key].type).split(" |")[0])  # annotations are strings here
        if kind is None:
            raise ValueError(f"{text!r}: LoaderConfig.{key} ({fields[key].type}) cannot be set from the command line")
        overrides.append((key, parse_value(value, kind)))
    return Variant(text, name, tuple(overrides))


def parse_value(text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return kind(text)


def default_variants(exclude: tuple[str, ...] = ("synthetic",)) -> list[Variant]:
    """Every backend in loaders.BACKENDS (those that cannot run are skipped later, with a reason)."""
    from loaders import BACKENDS

    return [Variant(name, name) for name in BACKENDS if name not in exclude]


class BackendFailed(RuntimeError):
    """An installed backend failed: the benchmark stops, naming it."""


@contextmanager
def failures_named(label: str):
    """Any error inside the block is raised again with the backend's name: a CUDA or data error
    must stop a benchmark, never pass for a backend that is not installed."""
    try:
        yield
    except (BackendFailed, FileNotFoundError, NotADirectoryError):
        raise  # missing data is the command's error (one message), not a failing backend
    except Exception as e:
        raise BackendFailed(f"backend {label} failed: {type(e).__name__}: {e}") from e


def open_variant(variant: Variant, **config):
    """The variant's loader, or (None, reason) when its backend's library is not installed here
    (ImportError, also the install hint of dali and ffcv). Any other error raises BackendFailed."""
    from loaders import create_loader
    from loaders.base import LoaderConfig

    with failures_named(variant.label):
        try:
            cfg = LoaderConfig(backend=variant.backend, **{**config, **dict(variant.overrides)})
            return create_loader(cfg, progress=False), None
        except ImportError as e:
            return None, f"not installed: {e}"


# ---------------------------------------------------------------------------- command line and output


def parse_ints(text: str) -> list[int]:
    """argparse type: positive integers from 'a,b,c'."""
    try:
        return list(positive_ints(text, "value"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/results", help="results folder (default: bench/results)")
    parser.add_argument(
        "--machine", default="", help="name of this machine's results folder (default: from CPU model, cores and GPU)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars (off when not a terminal or when CI is set)",
    )


def style(ax, **labels) -> None:
    """Titles and axis labels, a light grid and the legend: every benchmark plot's finish."""
    ax.set(**labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def write_results(
    name: str,
    args: argparse.Namespace,
    rows: list[dict],
    headers: list[str],
    table: list[list],
    draw: Callable,
    extra: dict | None = None,
) -> Path:
    """Print the table and save it with the rows, the arguments and the machine description
    as <out>/<machine>/<name>.md, .json, and the figure `draw()` returns as .png; returns the
    JSON's path."""
    desc = describe_machine()
    folder = Path(args.out) / (args.machine or machine_name(desc))
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown_table(headers, table)
    say(f"\n{text}\n")
    (folder / f"{name}.md").write_text(
        f"# {name} on {desc['cpu']} ({desc['cores']} cores{', ' + desc['gpu'] if desc['gpu'] else ''})\n\n{text}\n"
    )
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": desc,
        "command": " ".join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        "args": vars(args),
        **(extra or {}),
        "rows": rows,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_figure(folder / f"{name}.png", draw)
    say(f"results: {path} (+ .md, .png)")
    return path
