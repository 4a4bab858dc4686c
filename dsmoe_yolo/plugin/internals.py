"""The Ultralytics internals the plugin hooks, checked so a changed Ultralytics fails loudly instead of silently.

Supported: ``ultralytics>=8.4.190,<8.5`` (the range ``pyproject.toml`` pins and CI tests).
"""

from __future__ import annotations

import importlib
from types import ModuleType

SUPPORTED = ">=8.4.190,<8.5"

REQUIRED: dict[str, tuple[str, ...]] = {
    "ultralytics.nn.tasks": (
        "parse_model",
        "yaml_model_load",
        "guess_model_scale",
        "Index",
        "DetectionModel.init_criterion",
        "BaseModel.load",
        "BaseModel.fuse",
        "DetectionModel",
        "BaseModel.is_fused",
        "torch_safe_load",
    ),
    "ultralytics.utils.checks": ("check_file", "check_yaml"),
    "ultralytics.cfg": (
        "TASK2DATA",
        "CFG_FLOAT_KEYS",
        "CFG_FRACTION_KEYS",
        "CFG_STR_KEYS",
        "DEFAULT_CFG_DICT",
        "DEFAULT_CFG",
    ),
    "ultralytics.engine.model": ("yaml_model_load", "Model.train", "Model.predict", "Model.val", "Model.export"),
    "ultralytics.engine.trainer": ("BaseTrainer.save_model", "strip_optimizer", "check_det_dataset"),
    "ultralytics.engine.validator": ("check_det_dataset",),
    "ultralytics.models.yolo.detect.val": (
        "build_yolo_dataset",
        "DetectionValidator.update_metrics",
        "DetectionValidator.get_stats",
    ),
    "ultralytics.engine.exporter": ("Exporter.__call__", "export_formats"),
    "ultralytics.data.utils": ("check_file", "check_det_dataset"),
    "ultralytics.data.dataset": ("v8_transforms", "YOLODataset.build_transforms"),
    "ultralytics.data.augment": ("RandomHSV", "Compose"),
    "ultralytics.utils.callbacks.base": ("default_callbacks",),
    "ultralytics.models.yolo.detect.train": ("DetectionTrainer.set_model_attributes", "build_yolo_dataset"),
    "ultralytics.utils.loss": ("v8DetectionLoss.get_assigned_targets_and_loss", "BboxLoss"),
}


def _missing(module: ModuleType) -> list[str]:
    missing = []
    for dotted in REQUIRED.get(module.__name__, ()):
        obj = module
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"{module.__name__}.{dotted}")
                break
    return missing


def check_module(module: ModuleType) -> None:
    """Raise if ``module`` lacks an internal the plugin hooks.

    Raises:
        RuntimeError: Naming every missing internal, the installed and the supported Ultralytics versions.
    """
    missing = _missing(module)
    if missing:
        import ultralytics

        raise RuntimeError(
            f"dsmoe_yolo supports ultralytics{SUPPORTED}, but the installed ultralytics {ultralytics.__version__} "
            f"lacks {', '.join(missing)}. Install a supported version: pip install 'ultralytics{SUPPORTED}'"
        )


def import_checked(name: str) -> ModuleType:
    """Import ``name`` and check its required internals."""
    module = importlib.import_module(name)
    check_module(module)
    return module


def check_all() -> list[str]:
    """Import every hooked module and return the missing internals (empty when all are present)."""
    missing = []
    for name in REQUIRED:
        missing += _missing(importlib.import_module(name))
    return missing
