"""Batches made ahead of the trainer in a producer thread, on a CUDA stream of their own.

The nvjpeg backend decodes and crops on the GPU in the main process. Done in the trainer's
thread on the training stream, every step would wait for the GPU to drain, decode, and wait
again (the decoders synchronise the stream they run on; copies from pageable memory block).
Here a thread makes batch i+1 on a side stream while the trainer's kernels for batch i run.
An event recorded after each batch orders the trainer's stream after it, and `record_stream`
keeps the caching allocator from giving the batch's memory back to the producer before the
trainer's kernels that read it have run. On the CPU the same thread runs without streams.

At most `depth` batches are made and not yet taken, so the producer holds a bounded amount of
memory. An error in the producer is raised in the consumer, and a consumer that stops early
(break, an exception of its own) stops the thread before the next batch is begun.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext

import torch

DEPTH = 2  # batches made ahead: one being made while one waits is enough to hide the making
END = object()


def prefetched(source: Iterable, make: Callable[[object], tuple], device: torch.device, depth: int = DEPTH) -> Iterator:
    """`make(item)` for each item of `source`, in order, made in a producer thread (on its own
    CUDA stream when `device` is a GPU) at most `depth` batches ahead of the consumer."""
    producer = Producer(iter(source), make, device, depth)
    try:
        while (batch := producer.take()) is not END:
            yield batch
    finally:
        producer.stop()


class Producer:
    def __init__(self, source: Iterator, make: Callable, device: torch.device, depth: int):
        self.made: queue.Queue = queue.Queue()  # bounded by the slots
        self.slots = threading.Semaphore(depth)
        self.stopping = threading.Event()
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.thread = threading.Thread(target=self.run, args=(source, make), name="prefetch", daemon=True)
        self.thread.start()

    def run(self, source: Iterator, make: Callable) -> None:
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                while self.slots.acquire() and not self.stopping.is_set():
                    item = next(source, END)
                    if item is END:
                        break
                    self.made.put((make(item), self.recorded_event()))
            self.made.put((END, None))
        except BaseException as e:  # raised again in the consumer, which would otherwise wait for ever
            self.made.put((e, None))
        finally:
            getattr(source, "close", lambda: None)()  # a generator's own clean-up (a thread pool's futures)

    def recorded_event(self) -> torch.cuda.Event | None:
        """An event after the work queued so far on the producer's stream (None on the CPU)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def take(self):
        """The next batch, usable on the consumer's current stream; END after the last."""
        batch, event = self.made.get()
        self.slots.release()
        if isinstance(batch, BaseException):
            raise batch
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in batch:
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(current)
        return batch

    def stop(self) -> None:
        """Ends the thread: it finishes the batch it is making, if any, and begins no other."""
        self.stopping.set()
        self.slots.release()  # wakes a producer waiting for a free slot
        self.thread.join()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`: on a GPU copied from pinned memory without blocking (a copy from pageable
    memory waits for the stream to drain)."""
    if device.type != "cuda" or t.is_cuda:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
