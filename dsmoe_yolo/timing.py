"""Wall-clock timing used by the benchmarks: median of repeated calls after warm-up calls."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

__all__ = ("median_ms", "WARMUP")

WARMUP = 2


def median_ms(fn: Callable[[], Any], runs: int = 10, warmup: int = WARMUP) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)
