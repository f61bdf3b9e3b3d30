"""Best-of timing and peak extra memory of one call, for the aggregation benchmark and its
Flower child (numpy and the standard library only: the child runs in Flower's venv)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

Job = tuple[Callable[[Any], Any], Callable[[], Any]]  # (timed call, untimed setup of its input)


def best_of(job: Job, repeat: int) -> float:
    """The fastest of `repeat` calls, in seconds (each one's input set up untimed)."""
    fn, setup = job
    times = []
    for _ in range(repeat):
        arg = setup()
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return min(times)


def peak_extra(job: Job) -> int:
    """Peak bytes allocated during one call (numpy reports its buffers to tracemalloc)."""
    fn, setup = job
    arg = setup()
    tracemalloc.start()
    fn(arg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak
