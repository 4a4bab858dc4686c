"""Stage 4: CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018), as published.

Ultralytics ships a simplified ``CBAM`` (channel attention from average pooling only, no reduction MLP, spatial
convolution without BatchNorm). This is the original: channel attention from both average- and max-pooled
descriptors through one shared reduction MLP, then a 7x7 spatial attention over the channel-wise mean and max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsmoe_yolo.nn.base import YAMLLayer

__all__ = ("CBAM", "ChannelAttention", "SpatialAttention")


class ChannelAttention(nn.Module):
    """Mc = sigmoid(MLP(AvgPool F) + MLP(MaxPool F)), the MLP shared by both branches.

    Args:
        c (int): Channels.
        reduction (int): Hidden width of the MLP is ``max(c // reduction, 8)``.
    """

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        hidden = max(c // reduction, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(hidden, c, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the channel attention map (B, C, 1, 1) in [0, 1]."""
        return torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))


class SpatialAttention(nn.Module):
    """Ms = sigmoid(BN(conv_k([mean_c F; max_c F]))).

    Args:
        kernel_size (int): Odd kernel size of the spatial convolution (7 in the paper).
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"CBAM kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the spatial attention map (B, 1, H, W) in [0, 1]."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(YAMLLayer):
    """Channel attention, then spatial attention, both multiplicative. Keeps the input's shape.

    YAML: ``[-1, 1, CBAM, [7]]`` (kernel size; optional reduction as a second arg).

    Args:
        c1 (int): Input channels (filled by the model builder).
        kernel_size (int): Spatial attention kernel size.
        reduction (int): Channel MLP reduction ratio.

    Examples:
        >>> CBAM(64)(torch.randn(2, 64, 20, 20)).shape
        torch.Size([2, 64, 20, 20])
    """

    yaml_channels = "same"

    def __init__(self, c1: int, kernel_size: int = 7, reduction: int = 16):
        super().__init__()
        self.channel = ChannelAttention(c1, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply CBAM to (B, C, H, W) features."""
        x = x * self.channel(x)
        return x * self.spatial(x)
