"""DS-MoE YOLO: text-guided dynamic sparse mixture-of-experts detection as an Ultralytics plugin.

``import dsmoe_yolo`` registers every DS-MoE layer with Ultralytics (right away if ``ultralytics.nn.tasks`` is
already imported, else right after it is), so ``YOLO("dsmoe.yaml")`` works afterwards. The stock ``yolo`` command
gets the same registration from the ``dsmoe_yolo_autoload.pth`` start-up hook installed with the package.

This module stays light (no torch import); heavy names load on first access.

Examples:
    >>> import dsmoe_yolo
    >>> from ultralytics import YOLO
    >>> model = YOLO("dsmoe-yolov8n.yaml")
"""

from __future__ import annotations

import importlib

from dsmoe_yolo import _startup
from dsmoe_yolo._version import __version__

__all__ = ("__version__", "DSMoE", "register", "set_classes", "CFG_DIR", "DATASETS_DIR")

_LAZY = {
    "DSMoE": "dsmoe_yolo.model",
    "set_classes": "dsmoe_yolo.text.binding",
    "register": "dsmoe_yolo.plugin",
    "CFG_DIR": "dsmoe_yolo.assets",
    "DATASETS_DIR": "dsmoe_yolo.assets",
}

_startup.install(full=True)


def __getattr__(name: str):
    """Import heavy public names on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dsmoe_yolo' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
