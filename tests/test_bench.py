"""The benchmarks run end to end on the tiny data set and write what they promise; their
pure pieces (variants, the batch-size search, the Pareto front, CPU accounting) are exact."""
import json
import multiprocessing
import time

import pytest
import torch

from bench import loader_throughput, tradeoff, train_throughput
from bench.common import ProcessTreeMonitor, parse_variant
from bench.train_throughput import largest
from loaders import BACKENDS


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


def test_loader_benchmark(tiny_data, tmp_path):
    path = loader_throughput.main(["--data", str(tiny_data), "--res", "32", "--batch-size", "8", "--workers", "0",
                                   "--warmup", "1", "--steps", "2", "--repeats", "2", *quiet(tmp_path)])
    result = json.loads(path.read_text())
    assert {"cpu", "cores", "gpu", "libraries"} <= set(result["machine"])
    measured = {r["backend"] for r in result["rows"]}
    assert measured | set(result["skipped"]) == {"torchvision", *(b for b in BACKENDS if b != "synthetic")}
    assert {"torchvision", "pil", "nvjpeg"} <= measured and not measured & set(result["skipped"])
    assert {r["split"] for r in result["rows"]} == {"train", "eval"}
    for r in result["rows"]:
        assert r["img_per_s"]["median"] > 0 and len(r["img_per_s"]["values"]) == 2 and r["tree_peak_mem_mb"] > 0
        assert r["single_core_rate"] > 0 and r["efficiency"] == r["img_per_cpu_s"] / r["single_core_rate"]
        assert r["backend"] != "torchvision" or r["ratio_to_reference"] == r["cpu_ratio_to_reference"] == 1.0
    assert path.with_suffix(".png").stat().st_size > 0 and "| torchvision |" in path.with_suffix(".md").read_text()
    again = json.loads(loader_throughput.main([
        "--data", str(tiny_data), "--res", "32", "--batch-size", "8", "--workers", "0", "--warmup", "1", "--steps", "2",
        "--repeats", "2", "--backends", "pil", "--splits", "train", "--compare", str(path),
        *quiet(tmp_path)]).read_text())
    assert again["compared_with"] == str(path) and 0 <= again["largest_ratio_change"] < float("inf")


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
        {n: Recorded(n, log) for n in "abc"}, {n: Recorded(n.upper(), log) for n in "abc"}, args,
        torch.device("cpu"), type("Bar", (), {"set_postfix_str": lambda self, s: None})())
    assert "".join(log) == "aaaAAbbbBBcccCC" "bbbBBcccCCaaaAA" "cccCCaaaAAbbbBB"
    assert all(len(t) == 3 and all(x["images"] == 2 for x in t) for t in turns.values())
    assert all(len(t) == 3 and all(x["images"] == 1 for x in t) for t in single.values())


def test_train_benchmark(tiny_data, tmp_path):
    path = train_throughput.main(["--data", str(tiny_data), "--models", "resnet_tiny", "--res", "32",
                                  "--batch-size", "8", "--workers", "0", "--warmup", "1", "--steps", "1",
                                  "--repeats", "2", "--backends", "pil", *quiet(tmp_path)])
    (row,) = json.loads(path.read_text())["rows"]
    assert row["synthetic"]["img_per_s"]["median"] > 0 and 0 < row["forward_share"] < 1
    real = row["real"]["pil"]
    assert real["starvation_ratio"] == pytest.approx(real["img_per_s"]["median"] / row["synthetic"]["img_per_s"]["median"])
    assert path.with_suffix(".png").exists()


def test_tradeoff_benchmark(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), "--train-res", "32", "--test-res", "32,40", "--epochs", "1",
            "--finetune-epochs", "1", "--batch-size", "8", "--workers", "0", "--runs", str(tmp_path / "runs"),
            *quiet(tmp_path)]
    path = tradeoff.main(args)
    rows = json.loads(path.read_text())["rows"]
    assert [(r["train_res"], r["test_res"], r["finetune_res"]) for r in rows] == [(32, 32, 40), (32, 40, 40)]
    assert all(0 <= r["top1"] <= 100 and r["train_seconds"] > 0 and r["finetune_seconds"] > 0 for r in rows)
    assert (tmp_path / "runs" / "train-32" / "checkpoint.pt").exists()
    again = json.loads(tradeoff.main(args).read_text())["rows"]  # finished stages are reused, not rerun
    assert again == rows
