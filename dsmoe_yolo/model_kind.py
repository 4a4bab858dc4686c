"""Is this a DS-MoE model? For a module, a model YAML or a checkpoint, without building or fully loading it."""

from __future__ import annotations

from pathlib import Path

from torch import nn

__all__ = ("is_dsmoe_source",)


def is_dsmoe_source(model) -> bool:
    """True if ``model`` (module, YAML path or ``.pt`` path) is a DS-MoE model."""
    from dsmoe_yolo.nn.base import YAMLLayer

    if isinstance(model, nn.Module):
        return any(isinstance(m, YAMLLayer) for m in model.modules())
    path = str(model or "")
    if path.endswith((".yaml", ".yml")):
        from ultralytics.nn import tasks

        from dsmoe_yolo.nn import LAYERS

        try:
            d = tasks.yaml_model_load(path)
        except Exception:
            return False
        return any(isinstance(r[2], str) and r[2] in LAYERS for r in [*d.get("backbone", []), *d.get("head", [])])
    if path.endswith(".pt") and Path(path).is_file():
        from dsmoe_yolo.checkpoint import inspect_checkpoint

        return bool(inspect_checkpoint(path)["dsmoe_classes"])
    return False
