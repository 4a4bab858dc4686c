"""Wall-clock timing used by the benchmarks: median of repeated calls after warm-up calls."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

__all__ = ("median_ms", "interleaved_median_ms", "WARMUP")

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


def interleaved_median_ms(fns: dict[str, Callable[[], Any]], runs: int = 10, warmup: int = WARMUP) -> dict[str, float]:
    """Median wall time (ms) of each of several functions timed side by side: ``runs`` rounds, one call of each
    function per round (the order rotating each round), after ``warmup`` untimed calls of each. A machine that slows
    down or speeds up during the measurement shifts every function alike, so the ratios hold."""
    names = list(fns)
    if not names:
        return {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}
