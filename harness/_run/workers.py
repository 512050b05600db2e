"""A data stage's chunks in worker processes: for components that say their work is plain computation on its
arguments (``Teacher.parallel``, ``Strategy.parallel``), teach and build hand chunks to ``run.workers`` processes (and
the filter always: grading is plain computation), each reading its own rows from the stage files and handing back
an Arrow record batch, written in chunk order.

Workers are started (``spawn``: no copy of the parent's threads or locks) only when a stage has more than
``PARALLEL_FROM`` questions; below that the chunks run in the stage's own process, as they do for every other
component. A worker ignores Ctrl-C (the stage's process reports it once); one killed by the kernel ends the stage
with a message naming the knob.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from harness.errors import RunError

J = TypeVar("J")
R = TypeVar("R")

PARALLEL_FROM = 16_384
"""Questions from which a stage's chunks go to worker processes (starting them costs about a second)."""

_STATE: dict[str, Any] = {}


def workers(setting: int, questions: int) -> int:
    """How many worker processes a stage of ``questions`` questions uses: 1 (its own process) below
    ``PARALLEL_FROM``, else ``run.workers`` (0: one per CPU this process may use)."""
    if questions < PARALLEL_FROM or sys.platform != "linux":
        return 1
    if setting > 0:
        return setting
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _start(state: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent reports an interrupt, once
    _STATE.update(state)


def _call(fn: Callable[[Any, dict[str, Any]], Any], job: Any) -> Any:
    return fn(job, _STATE)


def ordered_map(fn: Callable[[J, dict[str, Any]], R], jobs: Iterable[J], state: dict[str, Any], processes: int,
                stage: str) -> Iterator[R]:
    """``fn(job, state)`` for every job, the results in the jobs' order. ``processes`` > 1: in that many worker
    processes (``fn`` a module-level function, ``state`` pickled once per worker), with at most ``processes``
    jobs taken ahead of the results handed back (``jobs`` may be a generator that sizes the next chunk by what
    came back)."""
    if processes <= 1:
        for job in jobs:
            yield fn(job, state)
        return
    pool = ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_start, initargs=(state,))
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(_call, fn, job))
            while len(pending) > processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise RunError(f"{stage}: a worker process died (killed by the kernel, most likely out of memory). To fit: "
                       f"set run.workers to fewer processes (1: none)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
