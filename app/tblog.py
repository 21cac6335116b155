"""`--log tensorboard`: rank 0 also writes TensorBoard events to <run>/tensorboard (metrics.jsonl
stays the record). Every scalar is on one axis, optimiser steps since the start of the run:
per step `step/*` (lr and batch side every step; loss, accuracy, img/s and data-wait share
over the steps since the previous progress read, which syncs with the device anyway), per
epoch `epoch/*` at the epoch's last step.
"""

from __future__ import annotations

from app.runs import RunDir

LOGS = ("jsonl", "tensorboard")
EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "train_img_per_s", "data_wait_share")


def summary_writer_class():
    """torch's SummaryWriter, imported only when asked for: tensorboard is an optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            f"--log tensorboard needs the tensorboard package ({e}): pip install -c constraints.txt -e '.[tensorboard]'"
        ) from None
    return SummaryWriter


def tensorboard_log(run: RunDir, log: str) -> TensorBoardLog | None:
    """The run's TensorBoard log under --log tensorboard, on the process that writes the run
    folder (rank 0); it continues after the epochs already in metrics.jsonl."""
    if log != "tensorboard" or not run.writer:
        return None
    return TensorBoardLog(run.path / "tensorboard", sum(m["train_steps"] for m in run.metrics()))


class TensorBoardLog:
    def __init__(self, path, first_step: int):
        """Events in `path`; `first_step` is the optimiser steps of the epochs already logged (a
        resumed run), and events a killed run wrote from there on are dropped."""
        self.writer = summary_writer_class()(str(path), purge_step=first_step or None)
        self.first_step = first_step  # of the current epoch

    def step(self, i: int, **values: float) -> None:
        """Scalars of step `i` of the current epoch."""
        for name, value in values.items():
            self.writer.add_scalar(f"step/{name}", value, self.first_step + i)

    def epoch(self, record: dict) -> None:
        """The epoch's metrics.jsonl record, at its last step; the next epoch starts after it."""
        self.first_step += record["train_steps"]
        for key in EPOCH_SCALARS:
            self.writer.add_scalar(f"epoch/{key}", record[key], self.first_step - 1)
        self.writer.add_scalar("epoch/res", mean_side(record["sizes"]), self.first_step - 1)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def mean_side(sizes: dict) -> float:
    """The mean batch side of an epoch weighted by images ({side: images}, sides as strings)."""
    images = sum(sizes.values())
    return sum(int(side) * n for side, n in sizes.items()) / images if images else 0.0


def check_log(name: str) -> str:
    """`name` if it is one of LOGS; tensorboard's import fails here, at start, when it is missing."""
    if name not in LOGS:
        raise ValueError(f"--log must be one of {', '.join(LOGS)}, got {name!r}")
    if name == "tensorboard":
        summary_writer_class()
    return name
