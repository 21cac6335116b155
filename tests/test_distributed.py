"""torchrun launches train.py unchanged: two gloo processes on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from loaders.indexcache import ScanSettings, stored_index
from pipeline.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def torchrun(data, out, cache, *args, epochs=2, timeout=300) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "train.py",
        "train",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--train-res",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
        *args,
    ]
    env = {**os.environ, "LOWRES_CACHE": str(cache)}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_training_shards_data_and_reduces_metrics(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun(tiny_data, out, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("index: scanned") == 2, "one scan per split, not one per rank"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]  # rank 0 alone writes
    # 48 images: 24 per rank, 3 steps of 8 on each; evaluation sees all 18 val images once
    assert all(m["train_images"] == 48 and m["val_images"] == 18 for m in metrics)
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    state = load_checkpoint(out)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_bad_file_ends_every_rank_with_its_name(data_copy, tmp_path):
    """The rank that scans fails; the other must not wait for an index that will not come."""
    bad = sorted(sorted((data_copy / "train").iterdir())[0].iterdir())[0]
    bad.write_bytes(b"")
    proc = torchrun(data_copy, tmp_path / "ddp", tmp_path / "cache", timeout=240)
    assert proc.returncode != 0 and f"{bad.name}: empty file" in proc.stderr


def test_rescan_is_one_scan_per_split_for_the_whole_job(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path / "cache"))
    for split in ("train", "val"):
        stored_index(tiny_data / split, ScanSettings(), progress=False)
    proc = torchrun(tiny_data, tmp_path / "ddp", tmp_path / "cache", "--rescan", epochs=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("index: scanned") == 2 and "asked for it" in proc.stderr


def gather_plans(rank: int, world: int, data: str, port: int, out: str):
    import os

    import torch.distributed as dist

    from loaders import create_loader
    from loaders.base import LoaderConfig
    from pipeline.sizes import MixSize

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    policy = MixSize((32, 48, 64), (1, 1, 1), batch_size=4, mode="B+", seed=7)
    loader = create_loader(
        LoaderConfig("pil", data, policy, "rrc", shuffle=True, workers=0, rank=rank, world_size=world), progress=False
    )
    result = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        shapes = [tuple(x.shape) for x, _ in loader]
        ids = [int(i) for task in loader.sampler.tasks for i in task.indices]
        gathered = [None] * world
        dist.all_gather_object(gathered, (shapes, ids))
        result[epoch] = gathered
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


def test_mixsize_plan_is_identical_on_two_ranks(tiny_data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "plans.pt"
    mp.spawn(gather_plans, args=(2, str(tiny_data / "train"), port, str(out)), nprocs=2)
    result = torch.load(out, weights_only=True)
    for epoch in (0, 1):
        (shapes0, ids0), (shapes1, ids1) = result[epoch]
        assert shapes0 == shapes1, "every rank draws the same sizes and batch sizes"
        assert not set(ids0) & set(ids1) and len(ids0) == len(ids1) == 24, "each rank reads its own shard"
    assert result[0][0][0] != result[1][0][0], "the plan changes with the epoch"
