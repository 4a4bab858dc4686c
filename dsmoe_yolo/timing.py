"""Wall-clock timing used by the benchmarks: median of repeated calls after warm-up calls."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

__all__ = ("median_ms", "interleaved_median_ms", "WARMUP", "OtherCpuUse")

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


def interleaved_median_ms(
    fns: dict[str, Callable[[], Any]], runs: int = 10, warmup: int = WARMUP, settle: int = 0
) -> dict[str, float]:
    """Median wall time (ms) of each of several functions timed side by side: ``runs`` rounds, one timed call of each
    function per round (the order rotating each round), after ``warmup`` untimed calls of each. A machine that slows
    down or speeds up during the measurement shifts every function alike, so the ratios hold.

    ``settle``: untimed calls of a function right before each of its timed calls. Training steps need one: a step
    right after another model's step first re-faults the memory that step released, which a training (one model
    throughout) never pays. Measured with ``dsmoe bench-models``: DS-MoE-n's step took 7648 ms interleaved without
    it and 5370 ms with it (5006 ms back to back in its own process, an earlier run).
    """
    names = list(fns)
    if not names:
        return {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(settle):
                fns[name]()
            t = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


class OtherCpuUse:
    """How many CPU cores other processes kept busy while the ``with`` block ran (system-wide busy time minus this
    process's own, over the wall time; from ``psutil``, a dependency of Ultralytics).

    Timing with ``threads`` threads is only meaningful if the other processes leave that many cores free: two OpenMP
    threads beside one busy training on two cores wait for each other at every barrier and run ~50x slower.

    Examples:
        >>> with OtherCpuUse() as use:
        ...     pass
        >>> use.cores >= 0.0
        True
    """

    def __init__(self):
        self.cores = 0.0  # other processes' CPU use in cores; 0.0 where psutil cannot tell

    def __enter__(self) -> "OtherCpuUse":
        try:
            import psutil

            self._me, self._psutil, self._cpus = psutil.Process(), psutil, _cpu_set()
            self._start = (time.perf_counter(), self._busy(), self._mine())
        except Exception:  # no psutil, or no access to the counters: nothing measured
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is not None:
            t0, busy0, mine0 = self._start
            wall = time.perf_counter() - t0
            if wall > 0:
                self.cores = max(0.0, ((self._busy() - busy0) - (self._mine() - mine0)) / wall)

    def _busy(self) -> float:
        """Busy seconds of the CPUs this process may run on (guest time is also counted in user / nice on Linux)."""
        busy = 0.0
        for i, t in enumerate(self._psutil.cpu_times(percpu=True)):
            if self._cpus is None or i in self._cpus:
                busy += sum(t) - t.idle - sum(getattr(t, k, 0.0) for k in ("iowait", "guest", "guest_nice"))
        return busy

    def _mine(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    def warning(self, threads: int, cpus: int | None = None) -> str | None:
        """A warning if the other processes left fewer than ``threads`` cores free during the block, else None."""
        cpus = cpus or _cpu_count()
        if self.cores <= max(cpus - threads, 0) + 0.25:
            return None
        free = cpus - round(self.cores)
        fix = f", or with OMP_NUM_THREADS={free} beside the other jobs" if free >= 1 else ""
        return (
            f"other processes kept {self.cores:.1f} of {cpus} CPU cores busy while timing with {threads} "
            f"thread{'' if threads == 1 else 's'}, so these latencies are inflated; time on an idle machine{fix}"
        )


def _cpu_set() -> set[int] | None:
    """Indices of the CPUs this process may run on; None where the OS does not say (then: all)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None


def _cpu_count() -> int:
    """CPU cores this process may run on."""
    mine = _cpu_set()
    return len(mine) if mine is not None else os.cpu_count() or 1
