"""Running prepare's units in worker processes, in order, with bounded memory, stoppable."""

from __future__ import annotations

import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

from tqdm import tqdm

from gpt2.errors import DataError
from gpt2.signals import STOP, Interrupted


def _init_worker() -> None:
    """A worker ignores Ctrl-C (the terminal sends it to every process: the main process stops the
    pool) and dies of SIGTERM (not by a handler it may have inherited from its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Done:
    """A result computed already (workers=1)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class InProcess:
    """workers=1: the same tasks, run in this process."""

    def submit(self, fn, *args) -> Done:
        return Done(fn(*args))


@contextmanager
def make_pool(workers: int) -> Iterator:
    """`workers` processes (this one for 1). On leaving, tasks not started are cancelled; a
    worker that died (killed, out of memory) is one clear error."""
    if workers == 1:
        yield InProcess()
        return
    pool = ProcessPoolExecutor(workers, initializer=_init_worker)
    try:
        yield pool
    except BrokenProcessPool:
        raise DataError("a worker process died (killed, or out of memory?): nothing finished was written; "
                        "run the command again, with fewer --workers if memory is short") from None
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except RuntimeError:  # stopped while the pool was starting its manager thread: nothing runs
            pass


def stop_point() -> None:
    """Where a Ctrl-C or SIGTERM received meanwhile stops prepare (a signal is only recorded while
    prepare runs: raised from anywhere, it could land inside a fork, where Python ignores it)."""
    if STOP.received:
        raise Interrupted(STOP.received, STOP.context)


def ordered(pool, fn, tasks: Iterable[tuple], window: int) -> Iterator[tuple[tuple, object]]:
    """(task, fn(*task[1:])) in task order, with at most `window` tasks in flight (bounded memory)."""
    pending: deque = deque()
    for task in tasks:
        stop_point()
        pending.append((task, pool.submit(fn, *task[1:])))
        if len(pending) >= window:
            task, future = pending.popleft()
            yield task, future.result()
    while pending:
        stop_point()
        task, future = pending.popleft()
        yield task, future.result()


def progress(total: Optional[int], unit_name: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=unit_name,
                disable=None, smoothing=0.1, dynamic_ncols=True)
