"""Where the bundled ``cfg/`` and ``datasets/`` folders live, for an editable checkout and for a built wheel.

A wheel ships them inside the package (``dsmoe_yolo/cfg``, ``dsmoe_yolo/datasets``, via hatch ``force-include``);
an editable install runs from the source tree, where they sit next to the package at the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    """Return the first existing of ``<package>/<name>`` (wheel) and ``<repo>/<name>`` (source tree)."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dsmoe_yolo: bundled folder '{name}/' not found next to {PACKAGE_DIR}; reinstall the package "
        f"(pip install dsmoe-yolo, or pip install -e . from a checkout)"
    )


CFG_DIR = _bundled("cfg")
DATASETS_DIR = _bundled("datasets")
# Bare-name lookup order. Prompt files are not here: they share dataset names and are found by the text pipeline.
SEARCH_DIRS = (CFG_DIR / "models", CFG_DIR / "models" / "ablation", CFG_DIR / "train", DATASETS_DIR)


def find_bundled(name: str) -> Path | None:
    """Return the bundled file called ``name`` (a bare file name such as ``dsmoe.yaml``), or None."""
    for folder in SEARCH_DIRS:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def bundled_names(suffix: str = ".yaml") -> list[str]:
    """List bundled file names ending in ``suffix`` (for error messages)."""
    return sorted({p.name for folder in SEARCH_DIRS if folder.is_dir() for p in folder.glob(f"*{suffix}")})


def cache_root() -> Path:
    """dsmoe_yolo's user cache: ``$DSMOE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dsmoe_yolo`` (default ``~/.cache/dsmoe_yolo``)."""
    root = (
        os.environ.get("DSMOE_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsmoe_yolo"
    )
    return Path(root).expanduser()
