"""What state a training folder is in, read the way Ultralytics reads it, so a benchmark can be re-run to continue.

A training folder ``<run dir>/<stem>-seed<k>`` (made by ``yolo train ... project=<run dir> name=<stem>-seed<k>``, by
hand or by the benchmark) is one of:

- ``done``: ``weights/last.pt`` holds a finished run. Ultralytics' ``resume_training`` refuses a checkpoint unless
  ``0 < epoch + 1 < epochs``: the final, optimizer-stripped ``last.pt`` has ``epoch = -1`` (also after early stopping),
  and one saved after the last epoch has ``epoch + 1 == epochs``. Both are finished.
- ``resume``: ``last.pt`` was saved after an earlier epoch (the run was interrupted); continue it with
  ``YOLO(last.pt).train(resume=True)``.
- ``restart``: no readable ``last.pt`` (killed before its first epoch ended, or while writing it); train afresh.
- ``running``: a live process on this machine is training into that folder (``live_train_dirs``): wait for it.

Before any of this, ``check_recorded_args`` compares the folder's ``args.yaml`` with the requested train arguments.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable

from dsmoe_yolo.errors import ConfigError

__all__ = ("run_state", "check_recorded_args", "read_results", "epoch_times", "live_train_dirs", "train_dirs_in_argv")

# train args the benchmark sets whose recorded value must match (device and workers may differ: Ultralytics lets a
# resumed run change them, and they do not change what is trained).
AUTO_CHOICES = ("AdamW", "MuSGD", "SGD")  # what optimizer=auto resolves to in Ultralytics 8.4 (SGD before MuSGD)
COMPARED = (
    "data",
    "epochs",
    "imgsz",
    "batch",
    "seed",
    "fraction",
    "optimizer",
    "patience",
    "nbs",
    "lr0",
    "deterministic",
    "val",
    "freeze",
)


def _checkpoint_epochs(last: Path) -> tuple[int, int] | None:
    """``(epoch, epochs)`` saved in ``last.pt``, or None if it cannot be read (missing, truncated, foreign)."""
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        return int(ckpt.get("epoch", -1)), int(ckpt["train_args"]["epochs"])
    except Exception:
        return None


def run_state(train_dir: Path, live: bool = False) -> tuple[str, str]:
    """``(state, reason)`` of one training folder: state is ``done``, ``resume``, ``restart`` or ``running``."""
    if live:
        return "running", "a live process is training into it"
    last = train_dir / "weights" / "last.pt"
    if not last.is_file():
        return "restart", "no weights/last.pt" if train_dir.exists() else "new"
    saved = _checkpoint_epochs(last)
    if saved is None:
        return "restart", f"{last} cannot be read"
    epoch, epochs = saved
    start = epoch + 1  # Ultralytics' resume_training: finished unless 0 < start_epoch < epochs
    if not 0 < start < epochs:
        return "done", "final checkpoint" if epoch == -1 else f"all {epochs} epochs saved"
    return "resume", f"epoch {start} of {epochs} saved"


def _same(key: str, recorded: Any, requested: Any) -> bool:
    """Whether a recorded train arg equals the requested one (numbers by value, data files by resolved path)."""
    if isinstance(requested, (int, float)) and not isinstance(requested, bool):
        try:
            return abs(float(recorded) - float(requested)) <= 1e-9 * max(1.0, abs(float(requested)))
        except (TypeError, ValueError):
            return False
    if recorded == requested or str(recorded) == str(requested):
        return True
    if key == "data":
        a, b = Path(str(recorded)).expanduser(), Path(str(requested)).expanduser()
        return a.is_file() and b.is_file() and a.resolve() == b.resolve()
    return False


def check_recorded_args(train_dir: Path, model: str, requested: dict) -> None:
    """Raise ConfigError naming ``train_dir`` and the keys whose ``args.yaml`` value differs from ``requested``.

    ``requested`` holds the run's train args (including ``seed`` and ``deterministic``); an absent ``lr0`` means
    Ultralytics' default, an absent ``freeze`` nothing frozen. A folder without ``args.yaml`` passes (nothing was
    recorded). A resumed run's ``args.yaml`` holds the checkpoint's args, in which Ultralytics replaced
    ``optimizer=auto`` (and its ``lr0``) by its choice and ``model`` by the ``last.pt``: those are accepted. The recorded
    ``model`` is otherwise compared by file name.
    """
    import yaml

    path = train_dir / "args.yaml"
    if not path.is_file():
        return
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    wanted = dict(requested)
    wanted.setdefault("freeze", None)
    if "lr0" not in wanted:
        from ultralytics.cfg import DEFAULT_CFG_DICT

        wanted["lr0"] = DEFAULT_CFG_DICT["lr0"]
    if wanted.get("optimizer") == "auto":
        wanted.pop("lr0")  # optimizer=auto ignores lr0
        if recorded.get("resume") and recorded.get("optimizer") in AUTO_CHOICES:
            wanted.pop("optimizer")  # a resumed run records what auto chose (BaseTrainer.build_optimizer)
    if wanted.get("batch") == -1 and recorded.get("resume"):
        wanted.pop("batch")  # likewise AutoBatch's choice
    diff = [
        f"{k}: recorded {recorded.get(k)!r}, requested {wanted[k]!r}"
        for k in COMPARED
        if k in wanted and not _same(k, recorded.get(k), wanted[k])
    ]
    rec_model = str(recorded.get("model") or "")
    if rec_model and not rec_model.endswith(".pt") and Path(rec_model).name != Path(model).name:
        diff.insert(0, f"model: recorded {rec_model!r}, requested {model!r}")
    if diff:
        raise ConfigError(
            f"benchmark: {train_dir} was trained with other settings ({'; '.join(diff)}); "
            f"use another project/name, or request the recorded settings"
        )


def read_results(train_dir: Path) -> list[dict[str, float]]:
    """Rows of ``results.csv`` as floats, one per epoch (a resumed run's repeated epoch keeps its last row)."""
    path = train_dir / "results.csv"
    if not path.is_file():
        return []
    rows: dict[int, dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                try:
                    row[str(k).strip()] = float(v)
                except (TypeError, ValueError):
                    continue
            if "epoch" in row:
                rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)]


def epoch_times(rows: list[dict[str, float]]) -> list[float]:
    """Wall seconds of each epoch from ``results.csv``'s ``time`` column (seconds since that session's start).

    The column restarts from zero when a run is resumed: an epoch whose time is below the previous one's is the first
    of a new session and took ``time`` seconds.
    """
    out, previous = [], 0.0
    for row in rows:
        t = row.get("time")
        if t is None:
            continue
        out.append(t - previous if t >= previous else t)
        previous = t
    return out


def train_dirs_in_argv(argv: list[str], cwd: Path) -> set[Path]:
    """Training folders a command line trains into: ``project=P name=N`` gives ``P/N``, ``.../weights/last.pt`` its run."""
    values = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    out = set()
    if values.get("project") and values.get("name"):
        out.add((cwd / Path(values["project"]).expanduser()).resolve() / values["name"])
    for a in argv:
        value = a.split("=", 1)[-1]
        if value.endswith("last.pt") and Path(value).parent.name == "weights":
            out.add((cwd / Path(value).expanduser()).resolve().parent.parent)
    return out


def live_train_dirs(exclude: Iterable[int] = ()) -> dict[Path, int]:
    """Training folders named on the command line of a live process on this machine (Linux ``/proc``), with its pid.

    Catches ``yolo train ... project=P name=N``, ``yolo train resume model=.../weights/last.pt`` and the benchmark's
    own workers; a training started from Python code is not seen. Empty where ``/proc`` does not exist.
    """
    proc, skip = Path("/proc"), {os.getpid(), *exclude}
    out: dict[Path, int] = {}
    if not proc.is_dir():
        return out
    for p in proc.iterdir():
        if not p.name.isdigit() or int(p.name) in skip:
            continue
        try:
            argv = [a.decode(errors="replace") for a in (p / "cmdline").read_bytes().split(b"\0") if a]
            cwd = Path(os.readlink(p / "cwd"))
        except OSError:
            continue
        for d in train_dirs_in_argv(argv, cwd):
            out.setdefault(d, int(p.name))
    return out
