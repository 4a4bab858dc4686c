"""Stage 9: the heterogeneous ensemble of dilated convolutions over the space features, plus gated features and text.

Adopted formulation (PAPER.md stage 9):

    E = CBS3x3([CBS3x3_d1(S); CBS3x3_d2(S); CBS3x3_d3(S); Y; broadcast(TextPool(Y, T))])

with S the SpaceBroadcast output, Y the SparseMoE output and dilation rates (1, 2, 3) by default: branches with
different receptive fields ("heterogeneous") whose mix is learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from dsmoe_yolo.nn.base import YAMLLayer, is_tracing, text_cached
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
        t = self.text.broadcast(gated, text, text_cached(self, "pool", text, self.text.text_side))
        small = space.shape[0] == 1 and space.numel() <= 20480  # where PyTorch picks its per-image native kernel
        fused = small and self.inference_path and not is_tracing() and not any(hasattr(b, "bn") for b in self.branches)
        branches = self._branches_im2col(space) if fused else [b(space) for b in self.branches]
        return self.fuse(torch.cat([*branches, gated, t], 1))

    def _branches_im2col(self, space: torch.Tensor) -> list[torch.Tensor]:
        """The dilated branches (BatchNorm already folded by ``fuse``) as one batched product of their im2col columns.
        For one image with at most 20480 input values PyTorch skips oneDNN and runs a dilated 3x3 conv through its
        native kernel, a loop of ~100 operator calls (the lite models' 7x7 P5 at 224 px); larger inputs keep oneDNN."""
        b, _, h, w = space.shape
        convs = [branch.conv for branch in self.branches]
        cols = torch.stack([F.unfold(space, 3, dilation=c.dilation, padding=c.padding) for c in convs], 1)
        weight = torch.stack([c.weight.flatten(1) for c in convs])  # (n, branch, c_s*9)
        bias = torch.stack([c.bias for c in convs])[:, :, None]  # (n, branch, 1)
        y = self.branches[0].act(torch.matmul(weight, cols) + bias)  # (B, n, branch, HW)
        return [y.view(b, -1, h, w)]
