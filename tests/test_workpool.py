"""Work in processes: results in order, a worker's error as it is, a worker's death named."""

import os
import signal

import pytest

from loaders.workpool import WorkerDied, pool_results


def squared_or_worse(job: int) -> int:
    if job == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    if job == 7:
        raise ValueError(f"job {job} is bad")
    return job * job


@pytest.mark.slow
def test_results_come_in_order_and_errors_as_they_are():
    assert list(pool_results(squared_or_worse, [1, 2, 3, 4], 2, str)) == [1, 4, 9, 16]
    with pytest.raises(ValueError, match="job 7 is bad"):
        list(pool_results(squared_or_worse, [6, 7, 8], 2, str))


@pytest.mark.slow
def test_a_killed_worker_ends_the_work_naming_its_job():
    """multiprocessing.Pool would wait for the lost result forever."""
    with pytest.raises(WorkerDied, match=r"one of: .*job 5"):
        list(pool_results(squared_or_worse, list(range(10)), 2, lambda job: f"job {job}"))
