"""Stage 10: differentiable aggregation, a learned channel-attention mix of the ensemble and MoE outputs.

Adopted formulation (PAPER.md stage 10):

    alpha = sigmoid(MLP(GAP [E; Y]))        (B, c, 1, 1)
    out   = alpha * E + (1 - alpha) * Y
    align = 1 - cos(GAP E, GAP Y)            gradient-alignment term, exposed as aux output ``align`` for the loss
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, is_tracing

__all__ = ("DifferentiableAggregation",)


class DifferentiableAggregation(YAMLLayer):
    """Channel-attention mix of two same-width maps [E, Y].

    YAML: ``[[e, y], 1, DifferentiableAggregation, [1024]]``.

    Args:
        c1 (list[int]): [E channels, Y channels]; both must equal ``c2``.
        c2 (int): Channels (width-scaled).
        reduction (int): MLP reduction.

    Examples:
        >>> agg = DifferentiableAggregation([16, 16], 16)
        >>> agg([torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)]).shape
        torch.Size([2, 16, 4, 4])
    """

    yaml_channels = "declared"
    multi_input = True

    def __init__(self, c1: list[int], c2: int, reduction: int = 4):
        super().__init__()
        if len(c1) != 2 or c1[0] != c2 or c1[1] != c2:
            raise ValueError(f"DifferentiableAggregation mixes two maps of c2={c2} channels, got inputs with {c1}")
        hidden = max(c2 // reduction, 8)
        self.mlp = nn.Sequential(nn.Linear(2 * c2, hidden), nn.SiLU(), nn.Linear(hidden, c2))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Map [E, Y] (B, c, H, W) to alpha*E + (1-alpha)*Y."""
        e, y = x
        ge, gy = F.adaptive_avg_pool2d(e, 1).flatten(1), F.adaptive_avg_pool2d(y, 1).flatten(1)
        alpha = torch.sigmoid(self.mlp(torch.cat([ge, gy], 1)))[:, :, None, None]
        if not (is_tracing() or self.inference_path):
            aux_outputs(self)["align"] = (1 - F.cosine_similarity(ge.float(), gy.float(), dim=1)).mean()
        return torch.lerp(y, e, alpha)  # alpha * E + (1 - alpha) * Y
