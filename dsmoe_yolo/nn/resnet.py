"""ResNet backbone for the paper's ablation rows A and B (torchvision's ResNet-50, no download).

Returns C3 (stride 8, 512 ch), C4 (stride 16, 1024 ch), C5 (stride 32, 2048 ch) adapted to YOLO widths by CBS + C2f,
the same adapters as ``MobileSAMBackbone`` so the ablation compares backbones, not adapters. ``weights`` loads a
torchvision ResNet-50 state dict from a local file (e.g. ``resnet50-0676ba61.pth``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from dsmoe_yolo.nn.base import YAMLLayer

__all__ = ("ResNetBackbone",)


class ResNetBackbone(YAMLLayer):
    """ResNet-18/34/50/101 trunk returning YOLO-width [P3, P4, P5].

    YAML: ``[-1, 3, ResNetBackbone, [[256, 512, 1024], 50]]`` then ``Pick`` rows.

    Args:
        c1 (int): Input channels.
        c2 (list[int]): Output widths of P3, P4, P5 (width-scaled).
        depth (int): ResNet depth (18, 34, 50 or 101).
        weights (str, optional): Local torchvision state dict for the trunk.
        n (int): Bottlenecks per adapter C2f.

    Examples:
        >>> bb = ResNetBackbone(3, [32, 64, 128], depth=18)
        >>> [f.shape[1] for f in bb(torch.zeros(1, 3, 64, 64))]
        [32, 64, 128]
    """

    yaml_channels = "declared_list"

    def __init__(self, c1: int, c2: list[int], depth: int = 50, weights: str | None = None, n: int = 1):
        super().__init__()
        import torchvision

        builders = {
            18: torchvision.models.resnet18,
            34: torchvision.models.resnet34,
            50: torchvision.models.resnet50,
            101: torchvision.models.resnet101,
        }
        if depth not in builders:
            raise ValueError(f"ResNetBackbone depth must be one of {sorted(builders)}, got {depth}")
        if len(c2) != 3:
            raise ValueError(f"ResNetBackbone needs 3 output widths [P3, P4, P5], got {c2}")
        net = builders[depth](weights=None)
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"ResNet weights '{weights}' not found; pass a local torchvision state dict or null"
                )
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        if c1 != 3:
            net.conv1 = nn.Conv2d(c1, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        widths = [self._out(net.layer2), self._out(net.layer3), self._out(net.layer4)]
        self.adapters = nn.ModuleList(nn.Sequential(Conv(w, c, 1), C2f(c, c, n)) for w, c in zip(widths, c2))

    @staticmethod
    def _out(layer: nn.Sequential) -> int:
        last = layer[-1]
        return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map (B, c1, H, W) to [P3 (H/8), P4 (H/16), P5 (H/32)]."""
        c3 = self.layer2(self.stem(x))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [a(f) for a, f in zip(self.adapters, (c3, c4, c5))]
