"""gpt2/data/workers.py: units run in worker processes, results back in order, a dead worker one line."""

from __future__ import annotations

import os
import signal
import time

import pytest

from gpt2.data.workers import make_pool, ordered
from gpt2.errors import DataError


def slow_square(x: int) -> int:
    time.sleep(0.02 * (x % 3))  # later tasks often finish first
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order(workers):
    with make_pool(workers) as pool:
        results = list(ordered(pool, slow_square, ((i, i) for i in range(20)), window=3))
    assert results == [((i, i), i * i) for i in range(20)]


def die(_: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would


def test_a_worker_that_dies_is_one_line():
    with pytest.raises(DataError, match=r"^a worker process died \(killed, or out of memory\?\)"):
        with make_pool(2) as pool:
            list(ordered(pool, die, [(0, 0)], window=2))
