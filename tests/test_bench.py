"""The benchmarks run end to end on the tiny data set and write what they promise; their
pure pieces (variants, the batch-size search, the Pareto front, CPU accounting) are exact."""

import json
import multiprocessing
import sys
import threading
import time

import pytest
import torch
from PIL import Image

from bench import loader_throughput, pil_stages, scale, tradeoff, train_throughput
from bench.common import (
    BackendFailed,
    ProcessTreeMonitor,
    failures_named,
    images_per_second,
    open_variant,
    parse_variant,
    settle,
)
from bench.train_throughput import largest
from loaders import BACKENDS
from pipeline.sizes import ConstantSize


def quiet(tmp_path):
    return ["--out", str(tmp_path / "results"), "--machine", "test", "--no-progress"]


def test_variants_parse_loader_config_overrides():
    v = parse_variant("pil:reduced_decode=false")
    assert (v.backend, v.overrides) == ("pil", (("reduced_decode", False),))
    assert parse_variant("pil:root=/x/train,seed=3").overrides == (("root", "/x/train"), ("seed", 3))
    with pytest.raises(ValueError, match="no field 'nope'"):
        parse_variant("pil:nope=1")
    with pytest.raises(ValueError, match="unknown backend 'jpeg2000'"):
        parse_variant("jpeg2000")


def test_missing_data_is_an_error_not_a_skipped_backend(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        open_variant(
            parse_variant("pil"),
            root=str(tmp_path / "missing"),
            policy=ConstantSize(32, 4),
            augment="rrc",
            shuffle=True,
        )


def test_only_a_missing_library_is_a_skip(tiny_data, monkeypatch):
    """A backend that is not installed is skipped with the install hint; a backend that fails
    stops the benchmark, naming the backend."""
    from pipeline.sizes import ConstantSize

    config = dict(root=str(tiny_data / "train"), policy=ConstantSize(32, 8), augment="rrc", shuffle=True, workers=0)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # None blocks the import
    monkeypatch.delitem(sys.modules, "loaders.dali", raising=False)
    loader, why = open_variant(parse_variant("dali"), **config)
    assert loader is None and why.startswith("not installed") and "pip install" in why
    with pytest.raises(BackendFailed, match="backend nvjpeg failed: ZeroDivisionError"):
        with failures_named("nvjpeg"):  # what the benchmarks wrap each backend's measurement in
            raise ZeroDivisionError("a failure while measuring")


def test_largest_batch_search():
    probes = []

    def fits(n):
        probes.append(n)
        return n <= 1000

    found = largest(fits, 16, 8192)
    assert 1000 * 15 / 16 <= found <= 1000 and len(probes) < 15
    assert largest(lambda n: True, 16, 100) == 100
    assert largest(lambda n: False, 16, 100) == 0


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(10, 50, "a"), (20, 40, "b"), (30, 70, "c"), (30, 60, "d"), (5, 20, "e")]
    assert [p[2] for p in tradeoff.pareto(points)] == ["e", "a", "c"]


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_monitor_counts_the_cpu_time_of_child_processes():
    with ProcessTreeMonitor(interval=0.05) as monitor:
        child = multiprocessing.get_context("fork").Process(target=burn, args=(0.6,))
        child.start()
        child.join()
    use = monitor.result()
    assert use["cpu_seconds"] >= 0.5 and use["peak_mem_mb"] > 10


def test_settle_waits_for_busy_threads_to_finish():
    """A turn starts when the process tree is idle: settle returns at once when it is, and not
    before a thread that keeps a core busy has stopped."""
    assert settle(timeout=5) < 1

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(1000))

    worker = threading.Thread(target=spin, args=(0.8,))
    worker.start()
    waited = settle(timeout=5)
    worker.join()
    assert 0.6 < waited < 4


def test_monitor_leaves_its_own_sampling_out_of_the_cpu_time():
    """Idle for 0.5 s while sampling 50 times: the sampling thread's own CPU time (it reads every
    process's memory map) is not counted as the tree's work; without sampling, nothing is."""
    with ProcessTreeMonitor(interval=0.01) as sampled:
        time.sleep(0.5)
    assert sampled.own_cpu > 0 and sampled.cpu_seconds < 0.5 * sampled.own_cpu + 0.02
    with ProcessTreeMonitor(interval=None) as unsampled:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    assert unsampled.thread is None and 0.25 < unsampled.cpu_seconds < 0.6


@pytest.mark.slow
def test_loader_benchmark(tiny_data, tmp_path):
    small = ["--data", str(tiny_data), "--res", "32", "--batch-size", "8", "--workers", "0"]
    short = ["--warmup", "1", "--steps", "2", "--repeats", "2", *quiet(tmp_path)]
    path = loader_throughput.main([*small, *short])
    result = json.loads(path.read_text())
    assert {"cpu", "cores", "gpu", "libraries"} <= set(result["machine"])
    measured = {r["backend"] for r in result["rows"]}
    assert measured | set(result["skipped"]) == {"torchvision", *(b for b in BACKENDS if b != "synthetic")}
    assert {"torchvision", "pil", "nvjpeg"} <= measured and not measured & set(result["skipped"])
    cells = sorted((r["backend"], r["split"], r["res"]) for r in result["rows"])
    assert cells == sorted((b, split, 32) for b in measured for split in ("train", "eval")), "one row a cell"
    for r in result["rows"]:
        assert all(0 < v < float("inf") for v in r["img_per_s"]["values"]) and len(r["img_per_s"]["values"]) == 2
        assert r["tree_peak_mem_mb"] > 0
        assert r["single_core_rate"] > 0 and r["efficiency"] == r["img_per_cpu_s"] / r["single_core_rate"]
        assert r["backend"] != "torchvision" or r["ratio_to_reference"] == r["cpu_ratio_to_reference"] == 1.0
    assert path.with_suffix(".png").stat().st_size > 0 and "| torchvision |" in path.with_suffix(".md").read_text()
    compared = [*small, "--backends", "pil", "--splits", "train", "--compare", str(path), *short]
    again = json.loads(loader_throughput.main(compared).read_text())
    before = {(r["backend"], r["split"]): r for r in result["rows"]}
    assert {(r["backend"], r["split"]) for r in again["rows"]} <= {("torchvision", "train"), ("pil", "train")}
    moved = max(
        abs(r[k] / before[r["backend"], r["split"]][k] - 1)
        for r in again["rows"]
        for k in ("ratio_to_reference", "cpu_ratio_to_reference")
    )
    assert again["compared_with"] == str(path) and again["largest_ratio_change"] == pytest.approx(moved)


def test_agreement_is_the_largest_change_of_either_ratio_in_the_cells_both_runs_measured(tmp_path):
    row = {"backend": "pil", "split": "train", "res": 32, "ratio_to_reference": 2.0, "cpu_ratio_to_reference": 1.0}
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"rows": [row, {**row, "split": "eval"}]}))
    assert loader_throughput.agreement([row], str(before)) == {("pil", "train", 32): 0.0}
    moved = [{**row, "cpu_ratio_to_reference": 0.7}, {**row, "split": "eval", "ratio_to_reference": 3.0}]
    other = {**row, "res": 64, "ratio_to_reference": 9.0}  # not in the earlier run: not compared
    assert loader_throughput.agreement([*moved, other], str(before)) == pytest.approx(
        {("pil", "train", 32): 0.3, ("pil", "eval", 32): 0.5}
    )


def test_pil_stage_benchmark(data_copy, tmp_path):
    """Every stage timed in every round, on the JPEGs the loader plans; a file of another format
    is left out and counted, not timed as a JPEG."""
    Image.new("RGB", (40, 30)).save(
        data_copy / "train" / sorted(p.name for p in (data_copy / "train").iterdir())[0] / "x.png"
    )
    cells = ["--data", str(data_copy), "--res", "24,32", "--splits", "train,eval", "--repeats", "2"]
    path = pil_stages.main([*cells, "--images", "1000", *quiet(tmp_path)])
    result = json.loads(path.read_text())
    jpegs = sum(1 for _ in (data_copy / "train").glob("*/*.JPEG"))
    assert result["left_out"] == {"train 24": 1, "eval 24": 1, "train 32": 1, "eval 32": 1}
    assert len(result["rows"]) == 4 * 8 and {r["stage"] for r in result["rows"]} >= {"decode 1/8", "whole"}
    for r in result["rows"]:
        assert r["images"] == jpegs and len(r["ms_per_image"]["values"]) == 2 and r["ms_per_image"]["min"] > 0
        assert r["resampler"] == ("torch" if r["split"] == "train" else "pillow")
        assert r["stage"] != "whole" or r["share_of_whole"] == 1.0
    few = json.loads(pil_stages.main([*cells, "--images", "5", *quiet(tmp_path)]).read_text())
    assert {r["images"] for r in few["rows"]} == {5}


class Recorded:
    """A loader of numbered one-image batches that records which loader made each batch."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        import torch

        for _ in range(4):
            self.log.append(self.name)
            yield torch.zeros(1), torch.zeros(1)


def test_backends_take_turns_in_rotating_order():
    log = []
    args = loader_throughput.parse_args(["--warmup", "1", "--steps", "2", "--repeats", "3", "--work-batches", "1"])
    turns, single = loader_throughput.interleaved(
        {n: Recorded(n, log) for n in "abc"},
        {n: Recorded(n.upper(), log) for n in "abc"},
        args,
        torch.device("cpu"),
        type("Bar", (), {"set_postfix_str": lambda self, s: None})(),
    )
    assert "".join(log) == "aaaAAbbbBBcccCCbbbBBcccCCaaaAAcccCCaaaAAbbbBB"
    assert all(len(t) == 3 and all(x["images"] == 2 for x in t) for t in turns.values())
    assert all(len(t) == 3 and all(x["images"] == 1 for x in t) for t in single.values())


@pytest.mark.parametrize("slow", ["data", "step"])
def test_timing_counts_the_hosts_wait_for_the_next_batch(slow):
    """Batches that take 20 ms to come and a step that takes none: nearly all the time is data
    wait; the other way round, nearly none."""

    def batches():
        while True:
            time.sleep(0.02 if slow == "data" else 0)
            yield torch.zeros(2, 3), torch.zeros(2)

    def step(x, y):
        time.sleep(0.02 if slow == "step" else 0)

    timed = images_per_second(batches(), step, torch.device("cpu"), steps=3, repeats=2)
    assert timed["images"] == 12 and timed["data_wait_share"] == pytest.approx(float(slow == "data"), abs=0.25)


@pytest.mark.slow
def test_train_benchmark(tiny_data, tmp_path):
    path = train_throughput.main(
        [
            "--data",
            str(tiny_data),
            "--models",
            "resnet_tiny",
            "--res",
            "32",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--repeats",
            "2",
            "--backends",
            "pil",
            *quiet(tmp_path),
        ]
    )
    (row,) = json.loads(path.read_text())["rows"]
    assert row["synthetic"]["img_per_s"]["median"] > 0 and 0 < row["forward_share"] < 1
    real = row["real"]["pil"]
    assert all(0 <= cell["data_wait_share"] < 1 for cell in (row["synthetic"], real))
    assert real["starvation_ratio"] == pytest.approx(
        real["img_per_s"]["median"] / row["synthetic"]["img_per_s"]["median"]
    )
    assert path.with_suffix(".png").exists()


@pytest.mark.slow
def test_tradeoff_benchmark(tiny_data, tmp_path):
    args = [
        "--data",
        str(tiny_data),
        "--train-res",
        "32",
        "--test-res",
        "32,40",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--runs",
        str(tmp_path / "runs"),
        *quiet(tmp_path),
    ]
    path = tradeoff.main(args)
    rows = json.loads(path.read_text())["rows"]
    assert [(r["train_res"], r["test_res"], r["finetune_res"]) for r in rows] == [(32, 32, 40), (32, 40, 40)]
    assert all(0 <= r["top1"] <= 100 and r["train_seconds"] > 0 and r["finetune_seconds"] > 0 for r in rows)
    assert (tmp_path / "runs" / "train-32" / "checkpoint.pt").exists()
    again = json.loads(tradeoff.main(args).read_text())["rows"]  # finished stages are reused, not rerun
    assert again == rows


@pytest.mark.slow
def test_scale_benchmark(tiny_data, tmp_path):
    """Tiny: 3 classes x 12 links; this checkout also stands in for the baseline."""
    path = scale.main(
        [
            "--root",
            str(tmp_path / "scale"),
            "--source",
            str(tiny_data / "train"),
            "--classes",
            "3",
            "--per-class",
            "12",
            "--val-per-class",
            "2",
            "--batches",
            "3",
            "--pss-from",
            "1",
            "--batch-size",
            "4",
            "--res",
            "32",
            "--workers",
            "1",
            "--baseline",
            ".",
            "--baseline-starts",
            "2",
            *quiet(tmp_path),
        ]
    )
    record = json.loads(path.read_text())
    rows = record["rows"]
    assert [(r["code"], r["start"], r["index"]) for r in rows] == [
        ("before", "cold", "scanned"),
        ("before", "warm", "reused"),
        ("this", "cold", "scanned"),
        ("this", "warm", "reused"),
    ]
    assert all(r["images"] == 36 and r["start_to_first_batch_s"] > r["index_s"] > 0 for r in rows)
    assert all(set(r["pss_mb"]) == {"1", "3"} and r["pss_growth"] > -1 for r in rows if r["start"] == "warm")
    assert all("pss_mb" not in r for r in rows if r["start"] == "cold"), "only the last start reads on"
    cold = {r["code"]: r["index_s"] for r in rows if r["start"] == "cold"}
    assert record["cold_scan_speedup"] == pytest.approx(cold["before"] / cold["this"])
    first = tmp_path / "scale" / "imagenet" / "train" / "n00000000" / "n00000000_0.JPEG"
    assert first.stat().st_nlink > 1  # a hard link to a source image
