"""Zero-initialised residual branch: how the lite models add the DS-MoE stages to a pretrained YOLOv8 without
changing what it computes at the start.

    out = x + W y        W: 1x1 conv (c_y -> c_x) with weight and bias initialised to 0

At initialisation ``out == x`` exactly, so a lite model loaded with YOLOv8 weights starts as that YOLOv8; gradients
reach ``W`` at once (dL/dW = dL/dout * y) and the DS-MoE branch behind ``y`` learns as soon as ``W`` leaves zero (the
"zero convolution" of ControlNet, Zhang et al. 2023). Not a stage of the paper: a composition choice of this project.
"""

from __future__ import annotations

import torch
from torch import nn

from dsmoe_yolo.nn.base import YAMLLayer

__all__ = ("ZeroInitResidual",)


class ZeroInitResidual(YAMLLayer):
    """Add a branch ``y`` to a map ``x`` through a zero-initialised 1x1 projection; keeps ``x``'s channels.

    YAML: ``[[x, y], 1, ZeroInitResidual, []]``.

    Args:
        c1 (list[int]): [x channels, y channels].

    Examples:
        >>> r = ZeroInitResidual([32, 16])
        >>> x = torch.randn(2, 32, 4, 4)
        >>> torch.equal(r([x, torch.randn(2, 16, 4, 4)]), x)
        True
    """

    multi_input = True

    def __init__(self, c1: list[int]):
        super().__init__()
        if len(c1) != 2:
            raise ValueError(f"ZeroInitResidual takes two inputs [x, branch], got {len(c1)}")
        self.proj = nn.Conv2d(c1[1], c1[0], 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Map [x (B, c_x, H, W), y (B, c_y, H, W)] to x + W y (B, c_x, H, W)."""
        return x[0] + self.proj(x[1])
