"""torchrun launches train.py unchanged: two gloo processes on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_training_shards_data_and_reduces_metrics(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", "train", "--data", str(tiny_data), "--epochs", "2", "--train-res", "32",
           "--batch-size", "8", "--workers", "0", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]  # rank 0 alone writes
    # 48 images: 24 per rank, 3 steps of 8 on each; evaluation sees all 18 val images once
    assert all(m["train_images"] == 48 and m["val_images"] == 18 for m in metrics)
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    state = load_checkpoint(out)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
