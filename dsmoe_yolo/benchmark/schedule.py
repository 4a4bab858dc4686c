"""Run every pending training, ``jobs`` at a time, skipping finished ones and waiting on ones trained elsewhere.

Each time a slot is free the next run's state is read again (``runs.run_state``): ``done`` is skipped, ``resume`` and
``restart`` are started, ``running`` (a live process on this machine trains into that folder) is left pending, counts
against ``jobs``, and is looked at again every ``poll_s`` seconds, so a benchmark started beside hand-started
``yolo train`` runs picks each one up when it ends (finished: evaluated; killed: resumed).
"""

from __future__ import annotations

import time
from typing import Callable

from dsmoe_yolo.benchmark.runs import live_train_dirs, run_state
from dsmoe_yolo.benchmark.settings import Run

__all__ = ("train_all", "state_of")


def state_of(run: Run, live: dict) -> tuple[str, str]:
    """``(state, reason)`` of ``run`` given the live training folders (``{folder: pid}``)."""
    pid = live.get(run.dir.resolve())
    state, reason = run_state(run.dir, live=pid is not None)
    return state, (f"pid {pid} is training it" if pid is not None else reason)


def train_all(
    runs: list[Run],
    start: Callable[[Run, bool], object],
    jobs: int = 1,
    poll_s: float = 5.0,
    live: Callable[[], dict] = live_train_dirs,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> dict[Run, str]:
    """Bring every run to ``done``; return ``{run: error line}`` for the trainings that failed.

    Args:
        runs: Trainings, in the order to start them.
        start: ``start(run, resume)`` launches one training and returns a handle whose ``poll()`` is None while it
            runs, then ``""`` on success or an error line (``train.InProcess`` / ``train.Worker``).
        jobs: Trainings at once, counting the benchmark's runs that other processes are training.
        poll_s: Seconds between looks while every slot is busy or a run is trained elsewhere.
        live: Returns ``{training folder: pid}`` of live trainings on this machine (ours excluded by the caller's
            handles, which are tracked here).
        sleep, log: Injected for tests.
    """
    if log is None:
        from ultralytics.utils import LOGGER

        log = LOGGER.info
    pending, active, errors, waiting = list(runs), {}, {}, set()
    while pending or active:
        progressed = False
        for run, handle in list(active.items()):
            outcome = handle.poll()
            if outcome is not None:
                del active[run]
                progressed = True
                if outcome:
                    errors[run] = outcome
                    log(f"benchmark: {run.dir} failed: {outcome}")
                else:
                    log(f"benchmark: {run.dir} trained")
        others = live() if pending else {}
        elsewhere = [r for r in pending if r.dir.resolve() in others]  # ours, trained by another process
        for run in elsewhere:
            if run not in waiting:
                log(f"benchmark: waiting for {run.dir} ({state_of(run, others)[1]})")
                waiting.add(run)
        free = jobs - len(active) - len(elsewhere)  # those count against jobs too
        for run in [r for r in pending if r not in elsewhere]:
            if free <= 0:
                break
            state, reason = state_of(run, {})
            pending.remove(run)
            progressed = True
            if state == "done":
                log(f"benchmark: {run.dir} is finished ({reason}), skipped")
                continue
            log(f"benchmark: {'resuming' if state == 'resume' else 'training'} {run.dir} ({reason})")
            active[run] = start(run, state == "resume")
            free -= 1
        if (pending or active) and not progressed:
            sleep(poll_s)
    return errors
