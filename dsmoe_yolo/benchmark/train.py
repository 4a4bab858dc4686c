"""Start one benchmark training: fresh or resumed, in this process or in a worker subprocess.

Every training is the stock ``YOLO(model).train(**args, project=<run dir>, name=<stem>-seed<k>, exist_ok=True,
deterministic=True, plots=True)`` (so ``yolo train`` with the same arguments makes the same folder), or
``YOLO(<folder>/weights/last.pt).train(resume=True)`` to continue an interrupted one.

The worker is ``python -m dsmoe_yolo.benchmark.train model=M project=P name=N resume=False data=... epochs=...``
(values read as YAML scalars, like the ``yolo`` command); ``project=``/``name=`` on its command line let another
benchmark see that the folder is being trained (``runs.live_train_dirs``). Its output goes to
``<run dir>/logs/<name>.log``; a failure ends the log with one ``benchmark worker error: ...`` line.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ("train_run", "InProcess", "Worker", "worker_command", "main")

ERROR_PREFIX = "benchmark worker error: "


def train_run(model: str, train_dir: Path, args: dict, resume: bool) -> None:
    """Train (or resume) one run into ``train_dir`` with the stock Ultralytics trainer."""
    from ultralytics import YOLO

    import dsmoe_yolo.plugin as plugin

    plugin.register()
    if resume:
        YOLO(str(train_dir / "weights" / "last.pt")).train(resume=True)
        return
    YOLO(model).train(
        **args, project=str(train_dir.parent), name=train_dir.name, exist_ok=True, deterministic=True, plots=True
    )


def _message(error: BaseException) -> str:
    """One-line ``Type: message`` of an exception."""
    return f"{type(error).__name__}: {error}".strip().replace("\n", " ")


class InProcess:
    """Train synchronously in this process; ``poll()`` then returns ``""`` (success) or the error line."""

    def __init__(self, model: str, train_dir: Path, args: dict, resume: bool):
        from ultralytics.utils import LOGGER

        self.error = ""
        try:
            train_run(model, train_dir, args, resume)
        except Exception as e:
            self.error = _message(e)
            LOGGER.warning(f"benchmark: training {train_dir} failed: {self.error}\n{traceback.format_exc()}")

    def poll(self) -> str | None:
        """The training's outcome: ``""`` on success, else its error line."""
        return self.error


def worker_command(model: str, train_dir: Path, args: dict, resume: bool) -> list[str]:
    """The worker's command line (``sys.executable -m dsmoe_yolo.benchmark.train key=value ...``)."""
    items = {"model": model, "project": str(train_dir.parent), "name": train_dir.name, "resume": bool(resume), **args}
    tokens = (f"{k}={v}" for k, v in items.items() if v is not None)  # None: Ultralytics' default
    return [sys.executable, "-m", "dsmoe_yolo.benchmark.train", *tokens]


class Worker:
    """Train in a subprocess (output to ``log``); ``poll()`` is None while it runs, then ``""`` or the error line."""

    def __init__(self, model: str, train_dir: Path, args: dict, resume: bool, log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as f:
            self.process = subprocess.Popen(
                worker_command(model, train_dir, args, resume),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def poll(self) -> str | None:
        """None while running; ``""`` after a clean exit, else the worker's error line (or the log's last line)."""
        rc = self.process.poll()
        if rc is None:
            return None
        if rc == 0:
            return ""
        lines = [x.strip() for x in self.log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        errors = [x[len(ERROR_PREFIX) :] for x in lines if x.startswith(ERROR_PREFIX)]
        return errors[-1] if errors else f"worker exited with code {rc}: {lines[-1] if lines else '(no output)'}"


def _parse(argv: list[str]) -> dict[str, Any]:
    """``key=value`` tokens with YAML scalar values."""
    import yaml

    out = {}
    for token in argv:
        key, _, value = token.partition("=")
        out[key] = yaml.safe_load(value) if value else None
    return out


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: train one run from ``key=value`` arguments; 1 and an error line on failure."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    model, project, name, resume = (args.pop(k) for k in ("model", "project", "name", "resume"))
    args["data"] = str(args["data"])
    try:
        train_run(str(model), Path(str(project)) / str(name), args, bool(resume))
    except Exception as e:
        traceback.print_exc()
        print(f"{ERROR_PREFIX}{_message(e)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
