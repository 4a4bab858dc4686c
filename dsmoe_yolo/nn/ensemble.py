"""Stage 9: the heterogeneous ensemble of dilated convolutions over the space features, plus gated features and text.

Adopted formulation (PAPER.md stage 9):

    E = CBS3x3([CBS3x3_d1(S); CBS3x3_d2(S); CBS3x3_d3(S); Y; broadcast(TextPool(Y, T))])

with S the SpaceBroadcast output, Y the SparseMoE output and dilation rates (1, 2, 3) by default: branches with
different receptive fields ("heterogeneous") whose mix is learned.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from dsmoe_yolo.nn.base import YAMLLayer
from dsmoe_yolo.nn.fusion import TextPool

__all__ = ("HeterogeneousEnsemble",)


class HeterogeneousEnsemble(YAMLLayer):
    """Dilated-conv branches on the space features, fused with the gated features and text.

    YAML: ``[[s, y, t], 1, HeterogeneousEnsemble, [1024]]``: SpaceBroadcast, SparseMoE, ClassText rows.

    Args:
        c1 (list[int]): [space channels, gated channels, text width] (filled by the builder).
        c2 (int): Output channels (width-scaled).
        dilations (list[int]): Dilation rate of each branch.

    Examples:
        >>> he = HeterogeneousEnsemble([32, 32, 16], 32)
        >>> he([torch.randn(2, 32, 6, 6), torch.randn(2, 32, 6, 6), torch.randn(3, 16)]).shape
        torch.Size([2, 32, 6, 6])
    """

    yaml_channels = "declared"
    multi_input = True
    text_inputs = (2,)

    def __init__(self, c1: list[int], c2: int, dilations: tuple[int, ...] = (1, 2, 3)):
        super().__init__()
        if len(c1) != 3:
            raise ValueError(f"HeterogeneousEnsemble takes [space, gated, text] inputs, got {len(c1)} inputs")
        if not dilations or min(dilations) < 1:
            raise ValueError(f"HeterogeneousEnsemble dilations must be positive integers, got {dilations}")
        c_space, c_gate, d_text = c1
        branch = max(c2 // len(dilations), 8)
        self.branches = nn.ModuleList(Conv(c_space, branch, 3, d=int(r)) for r in dilations)
        hidden = max(c2 // 4, 8)
        self.text = TextPool(c_gate, d_text, hidden)
        self.fuse = Conv(branch * len(dilations) + c_gate + hidden, c2, 3)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Map [S (B, c_s, H, W), Y (B, c_y, H, W), T (nc, d)] to E (B, c2, H, W)."""
        space, gated, text = x
        t = self.text.broadcast(gated, text)
        return self.fuse(torch.cat([*(b(space) for b in self.branches), gated, t], 1))
