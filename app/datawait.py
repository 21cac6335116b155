"""The data wait: host time the trainer spends blocked on the loader for its next batch, and
the verdict when that share of an epoch says the loader starves the model.

On CUDA the step does not sync with the device, so the host runs ahead of the GPU by at
most the launch queue: time blocked in `next()` is time the model has (almost) nothing left
to compute. A GPU-bound run blocks in the step's launches instead, and its wait stays small.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

# Above this share of the epoch spent waiting for data, the epoch line names the knobs: at
# a tenth, a loader that kept up would shorten every epoch by as much, more than a
# differently tuned model step usually gains; below it the wait is mostly the start of the
# epoch (workers filling their first batches), which no knob removes.
STARVED_SHARE = 0.10


class DataClock:
    """Iterates a loader and adds up the host seconds spent waiting for each batch
    (starting the iteration included: a loader may start its workers there)."""

    def __init__(self):
        self.waited = 0.0

    def batches(self, loader: Iterable) -> Iterator:
        start = time.perf_counter()
        it = iter(loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                self.waited += time.perf_counter() - start
                return
            self.waited += time.perf_counter() - start
            yield batch
            start = time.perf_counter()

    def share(self, seconds: float) -> float:
        """The wait as a fraction of `seconds` of wall time (0 for no time)."""
        return min(self.waited / seconds, 1.0) if seconds > 0 else 0.0


def starvation_verdict(share: float, loader: str, workers: int) -> str | None:
    """The line that says the loader starves the model and which knobs to turn, or None
    when the wait share is at most STARVED_SHARE."""
    if share <= STARVED_SHARE:
        return None
    return (
        f"data wait {share:.0%} of the epoch (above {STARVED_SHARE:.0%}): the {loader} loader starves the model. "
        f"Turn: --workers (now {workers}; up to the free CPU cores), --loader (dali or nvjpeg decode on the GPU, "
        "ffcv reads prepared files), or prepared data sized for the run "
        "(python -m loaders.prepare --for-res K, or FFCV files: python -m loaders.ffcv write --for-res K)"
    )
