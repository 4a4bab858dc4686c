"""Checkpoint compatibility, checked before a DS-MoE checkpoint is unpickled.

Every DS-MoE layer records the plugin version that built it (``dsmoe_version``). Before Ultralytics loads a ``.pt``,
the plugin lists the DS-MoE classes the checkpoint references and the recorded version, both read from the pickle's
opcodes without running it:

- a DS-MoE class the installed plugin lacks -> one error naming the classes and the upgrade command;
- a checkpoint written by a newer plugin -> a warning (it may still load).
"""

from __future__ import annotations

import importlib
import pickletools
import zipfile
from pathlib import Path

from dsmoe_yolo._version import __version__

__all__ = ("inspect_checkpoint", "check_compatible", "CheckpointError")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded by the installed plugin; the message says why and how to fix it."""


def _version_tuple(v: str) -> tuple:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _scan_pickle(path: Path) -> tuple[set[str], list[str]]:
    """Read the checkpoint's pickle opcodes (never executing them): the DS-MoE globals it references and every
    ``dsmoe_version`` value it stores. Weights-only tools cannot list our classes: they skip allow-listed globals."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            data = z.read(name) if name else b""
    except (zipfile.BadZipFile, OSError):
        return set(), []
    if b"dsmoe_yolo" not in data:
        return set(), []
    classes, versions, strings = set(), [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):  # protocol <= 3: "module name"
                module, _, attr = arg.partition(" ")
                if module.startswith("dsmoe_yolo"):
                    classes.add(f"{module}.{attr}")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4+: module, name pushed before
                if strings[-2].startswith("dsmoe_yolo"):
                    classes.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                if strings and strings[-1] == "dsmoe_version":
                    versions.append(arg)
                strings.append(arg)
    except Exception:  # a truncated pickle: the loader reports it
        pass
    return classes, versions


def _resolvable(qualified: str) -> bool:
    module, _, name = qualified.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def inspect_checkpoint(path: str | Path) -> dict:
    """Return ``{"dsmoe_classes": [...], "dsmoe_version": str | None}`` for a ``.pt`` file (empty for non-zip files)."""
    classes, versions = _scan_pickle(Path(path))
    return {"dsmoe_classes": sorted(classes), "dsmoe_version": max(versions, key=_version_tuple) if versions else None}


def check_compatible(path: str | Path, log=None) -> dict:
    """Raise ``CheckpointError`` if the checkpoint needs DS-MoE classes the plugin lacks; warn if it is newer.

    Returns the inspection result.
    """
    info = inspect_checkpoint(path)
    if not info["dsmoe_classes"]:
        return info
    written = info["dsmoe_version"]
    missing = [c for c in info["dsmoe_classes"] if not _resolvable(c)]
    if missing:
        by = f"dsmoe_yolo {written}" if written else "another dsmoe_yolo version"
        raise CheckpointError(
            f"{Path(path).name} was saved by {by} and needs {', '.join(missing)}, which the installed dsmoe_yolo "
            f"{__version__} does not have. Upgrade: pip install -U 'dsmoe-yolo{'>=' + written if written else ''}'"
        )
    if written and _version_tuple(written) > _version_tuple(__version__):
        if log is None:
            from ultralytics.utils import LOGGER

            log = LOGGER.warning
        log(
            f"{Path(path).name} was saved by dsmoe_yolo {written}, newer than the installed {__version__}; it loads, but "
            f"layers may behave differently. Upgrade: pip install -U 'dsmoe-yolo>={written}'"
        )
    return info
