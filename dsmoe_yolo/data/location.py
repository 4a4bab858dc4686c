"""Where a bundled dataset YAML's files go: Ultralytics' ``datasets_dir``, unless that lies inside this source tree.

Ultralytics resolves a relative ``path:`` against its ``datasets_dir`` setting, whose default is ``./datasets`` of the
directory where settings were first created. Run from a checkout of dsmoe-yolo, that is the repository's own
``datasets/`` folder, next to the bundled YAMLs, so a generated set would land in the source tree. Then (and only then)
the YAML is rewritten to the user cache, ``$DSMOE_CACHE_DIR/datasets`` (default ``~/.cache/dsmoe_yolo/datasets``),
and one log line says where.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from dsmoe_yolo.assets import DATASETS_DIR, cache_root

__all__ = ("relocated_dataset_yaml", "user_datasets_dir", "data_root")

SOURCE_ROOT = DATASETS_DIR.parent  # the checkout (editable install) or the installed package (wheel)


def user_datasets_dir() -> Path:
    """``$DSMOE_CACHE_DIR/datasets`` (default ``$XDG_CACHE_HOME/dsmoe_yolo/datasets``, i.e. ``~/.cache/...``)."""
    return cache_root() / "datasets"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def relocated_dataset_yaml(bundled: Path, datasets_dir: Path, log=None) -> Path:
    """Return ``bundled`` itself, or a copy in the user cache whose ``path:`` points outside the source tree.

    Args:
        bundled: A bundled dataset YAML (``datasets/<name>.yaml``).
        datasets_dir: Ultralytics' configured ``datasets_dir``.
        log: ``callable(str)`` for the one line that says where the data goes.
    """
    doc = yaml.safe_load(bundled.read_text(encoding="utf-8")) or {}
    rel = doc.get("path")
    if not rel or Path(str(rel)).is_absolute() or not _inside(datasets_dir / str(rel), SOURCE_ROOT):
        return bundled
    target_dir = user_datasets_dir()
    doc["path"] = str(target_dir / str(rel))
    out = target_dir / bundled.name
    out.parent.mkdir(parents=True, exist_ok=True)
    text = f"# Written by dsmoe_yolo from {bundled}: 'path' moved out of the source tree.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    if log:
        log(
            f"dsmoe_yolo: Ultralytics' datasets_dir ({datasets_dir}) lies inside the dsmoe-yolo source tree; "
            f"'{bundled.name}' data goes to {doc['path']} instead (choose with 'yolo settings datasets_dir=...')"
        )
    return out


def data_root(dataset_yaml: Path, datasets_dir: Path) -> Path:
    """The folder a dataset YAML's ``path:`` names, resolved as Ultralytics does (relative to ``datasets_dir``)."""
    doc = yaml.safe_load(Path(dataset_yaml).read_text(encoding="utf-8")) or {}
    path = Path(str(doc.get("path") or ""))
    return path if path.is_absolute() else datasets_dir / path
