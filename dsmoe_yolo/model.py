"""``DSMoE``: Ultralytics' ``YOLO`` with DS-MoE conveniences (``set_classes``). Everything else is stock YOLO.

Examples:
    >>> from dsmoe_yolo import DSMoE
    >>> model = DSMoE("dsmoe-yolov8n.yaml")
    >>> model.set_classes(["scratch", "crack"], embeddings=torch.randn(2, 384))
"""

from __future__ import annotations

import torch
from ultralytics import YOLO

from dsmoe_yolo.text.binding import set_classes

__all__ = ("DSMoE",)


class DSMoE(YOLO):
    """A YOLO model object for DS-MoE YAMLs and checkpoints (also works with plain ``YOLO``)."""

    def __init__(self, model="dsmoe.yaml", task: str | None = None, verbose: bool = False):
        import dsmoe_yolo.plugin as plugin

        plugin.register()
        super().__init__(model=model, task=task, verbose=verbose)

    def set_classes(self, names: list[str], embeddings: torch.Tensor | None = None, **kwargs) -> None:
        """Set class names and class text (embedding them if not given); see ``dsmoe_yolo.set_classes``."""
        set_classes(self, names, embeddings, **kwargs)
