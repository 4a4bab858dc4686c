"""Bare-name resolution of bundled files (``dsmoe.yaml``, ``dsmoe-synth.yaml``, ``paper.yaml``) from any directory.

Stock ``check_file`` looks in the working directory, then inside the ultralytics package and site-packages, never
in an editable install's source tree. The wrapper answers from the bundled ``cfg/`` and ``datasets/`` folders first
(after the working directory, so a local file of the same name still wins) and explains misses of ``dsmoe*`` names.
A bundled dataset YAML whose data would land inside the source tree is answered with a relocated copy
(``data/location.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dsmoe_yolo.assets import DATASETS_DIR, bundled_names, find_bundled


def _outside_source_tree(bundled: Path) -> Path:
    """The bundled dataset YAML, or a copy whose data goes to the user cache (see ``data/location.py``); the
    synthetic set's data is checked against the current generator first (``synth.set_aside_if_outdated``)."""
    from ultralytics.utils import DATASETS_DIR as ultralytics_datasets_dir
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.data.location import data_root, relocated_dataset_yaml

    out = relocated_dataset_yaml(bundled, Path(ultralytics_datasets_dir), LOGGER.info)
    if bundled.name == "dsmoe-synth.yaml":
        from dsmoe_yolo.data.synth import set_aside_if_outdated

        set_aside_if_outdated(data_root(out, Path(ultralytics_datasets_dir)), LOGGER.warning)
    return out


def make_check_file(stock_check_file):
    """Return a ``check_file`` that resolves bundled DS-MoE files by bare name, else defers to ``stock_check_file``."""

    def check_file(file, suffix="", download=True, download_dir=".", hard=True):
        args, kwargs = (suffix, download, download_dir), {"hard": hard}
        name = str(file).strip()
        if name and "://" not in name and not os.path.isfile(name) and Path(name).name == name:
            hit = find_bundled(name)
            if hit is not None and hit.parent == DATASETS_DIR:
                return str(_outside_source_tree(hit))
            if hit is not None:
                return str(hit)
            if os.path.isdir(name) and Path(name).suffix in (".yaml", ".yml"):  # e.g. a run folder named after a YAML
                if not hard:
                    return []
                raise FileNotFoundError(f"'{name}' is a folder here, not a YAML file; pass the YAML's path")
        try:
            return stock_check_file(file, *args, **kwargs)
        except FileNotFoundError:
            if Path(name).name.lower().startswith("dsmoe"):
                raise FileNotFoundError(
                    f"'{name}' does not exist here nor among the bundled DS-MoE files: "
                    f"{', '.join(bundled_names())} (model YAMLs also resolve with a scale letter, e.g. dsmoe-yolov8n.yaml)"
                ) from None
            raise

    check_file._dsmoe_hook = "full"
    check_file.stock = stock_check_file
    return check_file
