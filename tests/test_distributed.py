"""torchrun launches train.py unchanged: two gloo processes on the CPU, on one simulated node
or on two (two torchrun agents on 127.0.0.1, each with its own cache folder, as two machines)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.runs import load_checkpoint
from loaders.indexcache import JOB_ENV, ScanSettings, job_id, stored_index
from tests.helpers import ROOT, free_port, json_lines

QUIET = ["--workers", "0", "--no-progress", "--device", "cpu"]
TRAIN = ["--train-res", "32", "--batch-size", "8", *QUIET]


def torchrun_command(*args, nproc: int = 2, nnodes: int = 1, node_rank: int = 0, port: int = 0) -> list[str]:
    """train.py under torchrun; one node: --standalone, else a static rendezvous on 127.0.0.1."""
    if nnodes == 1 and not port:
        where = ["--standalone"]
    else:
        where = ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--master_addr", "127.0.0.1"]
        where += ["--master_port", str(port)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        "--nproc_per_node",
        str(nproc),
        str(ROOT / "train.py"),
        *args,
    ]


def env_with(cache: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != JOB_ENV}, "LOWRES_CACHE": str(cache)}


def torchrun(*args, cache: Path, timeout: int = 300, cwd: Path = ROOT, **where) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_command(*args, **where), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env_with(cache)
    )


def two_nodes(*args, caches: tuple[Path, Path], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """One rank on each of two simulated nodes (two agents), each node with its own cache."""
    port = free_port()
    agents = [
        subprocess.Popen(
            torchrun_command(*args, nproc=1, nnodes=2, node_rank=n, port=port),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_with(cache),
        )
        for n, cache in enumerate(caches)
    ]
    outs = [agent.communicate(timeout=timeout) for agent in agents]
    return [subprocess.CompletedProcess(a.args, a.returncode, out, err) for a, (out, err) in zip(agents, outs)]


def train_args(data, out, epochs=2) -> list[str]:
    return ["train", "--data", str(data), "--epochs", str(epochs), *TRAIN, "--out", str(out)]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_two_process_training_shards_data_and_reduces_metrics(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun(*train_args(tiny_data, out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("index: scanned") == 2, "one scan per split, not one per rank"
    metrics = json_lines(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]  # rank 0 alone writes
    # 48 images: 24 per rank, 3 steps of 8 on each; evaluation sees all 18 val images once
    assert all(m["train_images"] == 48 and m["val_images"] == 18 for m in metrics)
    assert all(m["sizes"] == {"32": 48} for m in metrics), "images per side counted over both ranks"
    assert all(0 < m["data_wait_share"] <= 1 for m in metrics), "waits over wall times, summed over both ranks"
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    state = load_checkpoint(out)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_a_bad_file_ends_every_rank_with_its_name(data_copy, tmp_path):
    """The rank that scans fails; the other must not wait for an index that will not come."""
    bad = sorted(sorted((data_copy / "train").iterdir())[0].iterdir())[0]
    bad.write_bytes(b"")
    proc = torchrun(*train_args(data_copy, tmp_path / "ddp"), cache=tmp_path / "cache", timeout=240)
    assert proc.returncode != 0 and f"{bad.name}: empty file" in proc.stderr


@pytest.mark.slow
def test_rescan_is_one_scan_per_split_for_the_whole_job(tiny_data, tmp_path, monkeypatch):
    """Also under plain torchrun (a static rendezvous, whose run id is "none" for every job)."""
    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path / "cache"))
    for split in ("train", "val"):
        stored_index(tiny_data / split, ScanSettings(), progress=False)
    args = [*train_args(tiny_data, tmp_path / "ddp", epochs=1), "--rescan"]
    proc = torchrun(*args, cache=tmp_path / "cache", port=free_port())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("index: scanned") == 2 and "asked for it" in proc.stderr


def test_plain_torchruns_run_id_names_no_job(monkeypatch):
    """Every job of plain torchrun has the run id "none": taken as a job name, a later job
    would reuse an earlier one's rescan."""
    monkeypatch.delenv(JOB_ENV, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert job_id() == ""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "3f2a")
    assert job_id() == "3f2a"
    monkeypatch.setenv(JOB_ENV, "b71c")
    assert job_id() == "b71c"


@pytest.mark.slow
def test_fixres_on_two_ranks_writes_one_run_folder(tiny_data, tmp_path):
    """No --out: the folder's name comes from rank 0's clock, and every stage reads what
    rank 0 wrote (the job once failed on rank 1 reading train/summary.json)."""
    args = ["fixres", "--data", str(tiny_data), "--epochs", "1", *TRAIN, "--sweep-res", "32,48"]
    args += ["--finetune-epochs", "1", "--parametric", "2"]
    proc = torchrun(*args, cache=tmp_path / "cache", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "runs").iterdir()
    report = json.loads((folder / "report.json").read_text())
    assert [r["test_res"] for r in report["after"]] == [32, 48]
    assert report["parametric"] is not None and report["finetune_res"] == 40
    assert proc.stdout.count("## FixRes") == 1, "rank 0 alone reports"


@pytest.mark.slow
def test_sweep_accuracies_are_those_of_one_process(tiny_data, tmp_path):
    """Evaluation covers every image exactly once, and the parametric fit takes N batches in
    all, so one process and two give the same figures."""
    run = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "train.py", *train_args(tiny_data, run, epochs=1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env_with(tmp_path / "cache"),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    rows = {}
    for world in (1, 2):
        out = tmp_path / f"sweep{world}"
        args = ["sweep", "--checkpoint", str(run), "--data", str(tiny_data), "--test-res", "24,32,48"]
        args += ["--parametric", "2", "--batch-size", "4", *QUIET, "--out", str(out)]
        if world == 1:
            proc = subprocess.run(
                [sys.executable, "train.py", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                env=env_with(tmp_path / "cache"),
            )
        else:
            proc = torchrun(*args, cache=tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows[world] = json.loads((out / "sweep-parametric2.json").read_text())["rows"]
    for one, two in zip(rows[1], rows[2]):
        assert one["images"] == two["images"] == 18
        assert (one["top1"], one["top5"]) == (two["top1"], two["top5"])
        assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)
        for law in ("frechet_test", "frechet_train"):
            assert one[law]["mu"] == pytest.approx(two[law]["mu"], rel=1e-4), "fitted on the same images"


@pytest.mark.slow
def test_a_missing_checkpoint_ends_every_rank_with_one_line(tiny_data, tmp_path):
    missing = tmp_path / "nothing-here"
    args = ["sweep", "--checkpoint", str(missing), "--data", str(tiny_data), *QUIET]
    proc = torchrun(*args, cache=tmp_path / "cache", timeout=120)
    assert proc.returncode != 0
    assert error_lines(proc.stderr) == [f"error: checkpoint not found: {missing}"] * 2
    assert 'Traceback (most recent call last):\n  File "' + str(ROOT) not in proc.stderr


@pytest.mark.slow
def test_two_nodes_train_with_their_own_caches(tiny_data, tmp_path):
    caches = (tmp_path / "node0", tmp_path / "node1")
    procs = two_nodes(*train_args(tiny_data, tmp_path / "run", epochs=1), caches=caches)
    assert all(p.returncode == 0 for p in procs), procs[1].stderr[-3000:]
    assert all(p.stderr.count("index: scanned") == 2 for p in procs), "each node indexes into its own cache"
    assert all(list((cache / "index").glob("*.npz")) for cache in caches)
    (metrics,) = json_lines(tmp_path / "run" / "metrics.jsonl")
    assert metrics["train_images"] == 48 and metrics["val_images"] == 18


@pytest.mark.slow
def test_a_file_broken_after_indexing_ends_the_other_node_with_its_name(data_copy, tmp_path):
    """The rank that reads the file fails mid-epoch; the rank on the other node, whose next
    collective breaks, ends with the same one-line error instead of a transport traceback."""
    caches = (tmp_path / "node0", tmp_path / "node1")
    for cache in caches:  # index the intact folder on both nodes
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LOWRES_CACHE", str(cache))
            for split in ("train", "val"):
                stored_index(data_copy / split, ScanSettings(), progress=False)
    bad = sorted(sorted((data_copy / "train").iterdir())[0].iterdir())[0]
    stat = bad.stat()
    bad.write_bytes(os.urandom(stat.st_size))  # same size and time: the stored index stays valid
    os.utime(bad, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    procs = two_nodes(*train_args(data_copy, tmp_path / "run", epochs=1), caches=caches, timeout=240)
    assert all(p.returncode != 0 for p in procs)
    lines = [error_lines(p.stderr) for p in procs]
    assert all(len(found) == 1 and bad.name in found[0] for found in lines), lines


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


@pytest.mark.slow
def test_mixsize_plan_is_identical_on_two_ranks(tiny_data, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "plans.pt"
    mp.spawn(gather_plans, args=(2, str(tiny_data / "train"), free_port(), str(out)), nprocs=2)
    result = torch.load(out, weights_only=True)
    for epoch in (0, 1):
        (shapes0, ids0), (shapes1, ids1) = result[epoch]
        assert shapes0 == shapes1, "every rank draws the same sizes and batch sizes"
        assert not set(ids0) & set(ids1) and len(ids0) == len(ids1) == 24, "each rank reads its own shard"
    assert result[0][0][0] != result[1][0][0], "the plan changes with the epoch"
