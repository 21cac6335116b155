"""Work spread over processes that ends, rather than waits forever, when one of them dies.

multiprocessing.Pool replaces a worker killed mid-task (by the out-of-memory killer, a signal,
a crash in a C library) and waits for the lost task's result forever. concurrent.futures'
pool notices the death and fails the tasks left; `pool_results` turns that into an error
naming the tasks the dead worker may have been running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


class WorkerDied(ChildProcessError):
    """A worker process ended without finishing its task."""


def pool_results(fn: Callable, jobs: list, workers: int, name: Callable[[object], str]) -> Iterator:
    """fn(job) for each job, in order, computed by `workers` processes. A worker's exception is
    raised here as it is; a worker's death raises WorkerDied naming, through `name`, the jobs
    it may have been running: the first unfinished ones (jobs start in order, one per worker
    plus one queued)."""
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        for k, future in enumerate(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                suspects = [name(job) for job, f in zip(jobs[k:], futures[k:]) if not succeeded(f)][: workers + 1]
                raise WorkerDied(
                    f"a worker process died (killed: out of memory?) while working on one of: {'; '.join(suspects)}"
                ) from None


def succeeded(future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None
