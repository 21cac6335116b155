"""FFCV's writer processes, watched: a failure in one ends the write, naming the sample.

FFCV 1.0.2's DatasetWriter (ffcv/writer.py, `_write_common`) starts its worker processes, polls
a shared count of the samples written until it reaches the total (sleeping between reads), then
takes one list of allocations per worker from a queue. A worker that raises (a decoder or OpenCV
error) or is killed (out of memory) neither counts its samples nor sends its list: the parent
would wait forever. Within `watched_writer`, the writer module's Process, Queue and sleep are
replaced, as write.py replaces its tqdm: each worker records which sample it is on and, if it
raises, sends the error; the parent checks its workers wherever it would wait (each sleep of the
poll, and each wait on a queue) and raises WriteFailure with the sample's index.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from contextlib import contextmanager
from multiprocessing import shared_memory
from multiprocessing.queues import Queue

POLL_S = 0.1  # as FFCV's own poll of its sample count
NOT_STARTED = -1  # a worker's sample before it reads one


class WriteFailure(Exception):
    """A writer worker failed on sample `sample` (NOT_STARTED: before reading one)."""

    def __init__(self, sample: int, said: str):
        super().__init__(said)
        self.sample, self.said = sample, said


class Tracked:
    """The indexed data set a worker reads, recording the index of the sample it last read
    (encoding a sample follows reading it, so a failure there is the same sample's)."""

    def __init__(self, dataset, current, slot: int):
        self.dataset, self.current, self.slot = dataset, current, slot

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        self.current[self.slot] = int(i)
        return self.dataset[i]


def guarded(target, current, slot: int, errors, args: tuple) -> None:
    """A worker's job (FFCV's, whose last argument is the data set), sending its error if it raises."""
    try:
        target(*args[:-1], Tracked(args[-1], current, slot))
    except BaseException as e:
        errors.put(f"{type(e).__name__}: {e}".strip())
        raise SystemExit(1) from None


class Watch:
    """The parent's view of one write's workers."""

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context()
        self.current = ctx.RawArray("q", [NOT_STARTED] * workers)
        self.errors = ctx.SimpleQueue()  # written straight to its pipe: there before the worker exits
        self.processes: list[multiprocessing.Process] = []
        self.parent = os.getpid()

    def process(self, target, args: tuple) -> multiprocessing.Process:
        """FFCV's Process(target=..., args=...), guarded."""
        slot = len(self.processes)
        p = multiprocessing.Process(target=guarded, args=(target, self.current, slot, self.errors, args))
        self.processes.append(p)
        return p

    def check(self) -> None:
        """Raise WriteFailure if a worker failed (in the parent only: the workers share the queues)."""
        if os.getpid() != self.parent:
            return
        dead = [k for k, p in enumerate(self.processes) if p.exitcode not in (None, 0)]
        if not dead:
            return
        k = dead[0]
        said = self.errors.get() if not self.errors.empty() else died(self.processes[k].exitcode)
        raise WriteFailure(int(self.current[k]), said)

    def sleep(self, seconds: float) -> None:
        self.check()
        time.sleep(seconds)

    def queue(self) -> Queue:
        return WatchedQueue(self)

    def stop(self, writer) -> None:
        """After a failure: end the workers still running, and free the writer's shared memory."""
        for p in self.processes:
            if p.exitcode is None and p.pid is not None:
                p.terminate()
            if p.pid is not None:
                p.join()
        if isinstance(shared := getattr(writer, "metadata_sm", None), shared_memory.SharedMemory):
            shared.close()
            shared.unlink()


def died(exitcode: int) -> str:
    if exitcode < 0:
        return f"the writer process was killed by {signal.Signals(-exitcode).name} (out of memory?)"
    return f"the writer process exited with code {exitcode}"


class WatchedQueue(Queue):
    """A multiprocessing queue whose blocking get in the parent checks the workers as it waits."""

    def __init__(self, watch: Watch):
        super().__init__(ctx=multiprocessing.get_context())
        self.watch = watch

    def get(self, block: bool = True, timeout: float | None = None):
        watch = getattr(self, "watch", None)  # None in a spawned worker: not pickled with the queue
        if watch is None or not block or timeout is not None:
            return super().get(block, timeout)
        while True:
            watch.check()
            try:
                return super().get(timeout=POLL_S)
            except queue.Empty:
                pass


@contextmanager
def watched_writer(workers: int):
    """The Watch of a DatasetWriter run within this context with `workers` workers."""
    import ffcv.writer

    watch = Watch(workers)
    saved = ffcv.writer.Process, ffcv.writer.Queue, ffcv.writer.sleep
    ffcv.writer.Process, ffcv.writer.Queue, ffcv.writer.sleep = watch.process, watch.queue, watch.sleep
    try:
        yield watch
    finally:
        ffcv.writer.Process, ffcv.writer.Queue, ffcv.writer.sleep = saved
