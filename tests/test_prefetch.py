"""The producer thread that makes nvjpeg's batches ahead of the trainer (loaders/prefetch.py), on
the CPU: order, the bound on batches made ahead, errors reaching the consumer, an early stop
ending the thread, and no batch's memory written again while the consumer holds it. The CUDA
side (stream, event, record_stream) is tested in test_cuda.py."""

import threading
import time

import pytest
import torch
from test_loaders import make

from loaders.nvjpeg import NvjpegLoader
from loaders.prefetch import prefetched

CPU = torch.device("cpu")


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch"]


def test_batches_come_in_order_and_at_most_depth_ahead():
    made = []

    def slow_make(i):
        made.append(i)
        return (torch.full((4,), i),)

    taken = []
    for (x,) in prefetched(range(20), slow_make, CPU, depth=2):
        time.sleep(0.002)  # a consumer slower than the producer: the bound is what stops it
        taken.append(int(x[0]))
        assert len(made) <= len(taken) + 2
    assert taken == made == list(range(20))
    assert not producer_threads()


def test_an_error_in_the_producer_reaches_the_consumer_after_the_batches_before_it():
    def failing(i):
        if i == 3:
            raise OSError(f"cannot decode file{i}.JPEG")
        return (torch.tensor([i]),)

    taken = []
    with pytest.raises(OSError, match="file3.JPEG"):
        for (x,) in prefetched(range(10), failing, CPU):
            taken.append(int(x))
    assert taken == [0, 1, 2] and not producer_threads()


def test_an_error_in_the_source_reaches_the_consumer():
    def source():
        yield 0
        raise ValueError("the index changed under the loader")

    with pytest.raises(ValueError, match="index changed"):
        list(prefetched(source(), lambda i: (torch.tensor([i]),), CPU))


def test_stopping_early_ends_the_thread_and_closes_the_source():
    closed, made = [], []

    def source():
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    def tracked(i):
        made.append(i)
        return (torch.tensor([i]),)

    for (x,) in prefetched(source(), tracked, CPU, depth=2):
        if int(x) == 1:
            break
    assert not producer_threads() and closed == [True] and len(made) <= 4


def test_a_batch_keeps_its_values_while_the_producer_makes_the_next_ones():
    """A producer writing into a ring of reused buffers would change batches the consumer still holds."""
    kept = [(x, x.clone()) for (x,) in prefetched(range(12), lambda i: (torch.full((64,), float(i)),), CPU)]
    assert all(torch.equal(x, then) for x, then in kept)
    assert len({x.data_ptr() for x, _ in kept}) == len(kept)  # every kept batch has memory of its own


@pytest.mark.parametrize("workers", [0, 2])
def test_nvjpeg_main_process_path_stops_its_producer_on_break(tiny_data, workers):
    loader = make(tiny_data, "nvjpeg", workers=workers)
    main = NvjpegLoader(loader.cfg, loader.index, decode_in_main=True)
    for _ in main:
        break
    assert not producer_threads()
    assert len(list(main)) == len(main) == 6  # and the next epoch runs whole
