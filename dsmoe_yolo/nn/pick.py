"""Pick one feature map out of a multi-output layer (a backbone returning ``[P3, P4, P5]``)."""

from __future__ import annotations

import torch

from dsmoe_yolo.nn.base import YAMLLayer

__all__ = ("Pick",)


class Pick(YAMLLayer):
    """Select ``x[index]`` from a list of maps, declaring its width-scaled channels to the model builder.

    Ultralytics' ``Index`` does the same but declares unscaled channels, which breaks at widths other than 1.0.

    Args:
        c1 (int): Channels recorded for the source row (unused; the source is a list).
        c2 (int): Channels of the picked map (YAML value, width-scaled by the builder).
        index (int): Position in the source list.

    Examples:
        >>> Pick(0, 64, 1)([torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 4, 4)]).shape
        torch.Size([1, 64, 4, 4])
    """

    yaml_channels = "declared"

    def __init__(self, c1: int, c2: int, index: int = 0):
        super().__init__()
        self.c2, self.index = c2, index

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the map at ``self.index``: (B, c2, H, W)."""
        return x[self.index]
