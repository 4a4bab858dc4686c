"""Stage 8's three expert kinds. Each maps (x (B, c_in, H, W), text (nc, d)) to (B, c_out, H, W).

Experts use no BatchNorm: with sparse routing an expert sees only the images routed to it, and a batch-dependent
norm would make an image's output depend on which other images were routed alongside (and break sparse == dense).

- ``LocalAnisotropicExpert``: Concat(conv 1xk, conv kx1) -> 1x1, the anisotropic factorisation of a kxk kernel.
- ``GlobalPyramidExpert``: pyramid pooling (global mean, stride-2 and stride-4 average pools) -> upsample -> 1x1.
  Departure: fixed pooling strides instead of fixed bin counts (PSP's 1/2/4 bins), because adaptive pooling to fixed
  bins does not export to ONNX with dynamic input sizes.
- ``CrossModalExpert``: LN(1x1(Concat(F, broadcast(T_e)))), with T_e the class texts pooled by a learnable per-expert
  query; computed as conv1x1(F) + linear(T_e) (identical to the 1x1 conv over the concatenation, without building it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ("LocalAnisotropicExpert", "GlobalPyramidExpert", "CrossModalExpert", "ConvAct", "ChannelLayerNorm")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of (B, C, H, W), written with reductions so it exports to ONNX with
    dynamic shapes (Ultralytics' ``LayerNorm2d`` passes a traced shape to ``F.layer_norm``, which the legacy exporter
    rejects)."""

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        return (x - u) / torch.sqrt(v + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class ConvAct(nn.Sequential):
    """Conv2d (with bias, 'same' padding) + SiLU."""

    def __init__(self, c1: int, c2: int, k=1):
        k = (k, k) if isinstance(k, int) else tuple(k)
        super().__init__(nn.Conv2d(c1, c2, k, padding=(k[0] // 2, k[1] // 2)), nn.SiLU())


class LocalAnisotropicExpert(nn.Module):
    """Concat(conv 1xk, conv kx1) -> 1x1: elongated local structure (scratches, traces, cracks)."""

    kind = "local"

    def __init__(self, c_in: int, c_out: int, d_text: int = 0, k: int = 7):
        super().__init__()
        self.horizontal = ConvAct(c_in, c_out // 2, (1, k))
        self.vertical = ConvAct(c_in, c_out - c_out // 2, (k, 1))
        self.mix = nn.Conv2d(c_out, c_out, 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return self.mix(torch.cat([self.horizontal(x), self.vertical(x)], 1))


class GlobalPyramidExpert(nn.Module):
    """Pyramid pooling context: [x; up(mean x); up(pool2 x); up(pool4 x)] -> 1x1."""

    kind = "global"

    def __init__(self, c_in: int, c_out: int, d_text: int = 0, strides: tuple[int, ...] = (2, 4)):
        super().__init__()
        hidden = max(c_in // 4, 8)
        self.strides = tuple(strides)
        self.reduce = ConvAct(c_in, hidden, 1)
        self.mix = nn.Conv2d(hidden * (2 + len(self.strides)), c_out, 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        r = self.reduce(x)
        size = r.shape[2:]
        levels = [r, r.mean((2, 3), keepdim=True).expand_as(r)]
        for s in self.strides:
            pooled = F.avg_pool2d(r, s, s, ceil_mode=True, count_include_pad=False)
            levels.append(F.interpolate(pooled, size=size, mode="nearest"))
        return self.mix(torch.cat(levels, 1))


class CrossModalExpert(nn.Module):
    """LN(W_F F + W_T T_e), T_e = softmax_k(T_k . q_e / sqrt(d)) T: the expert's own view of the class texts."""

    kind = "cross"

    def __init__(self, c_in: int, c_out: int, d_text: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(d_text) * d_text**-0.5)
        self.visual = nn.Conv2d(c_in, c_out, 1)
        self.textual = nn.Linear(d_text, c_out)
        self.norm = ChannelLayerNorm(c_out)
        self.act = nn.SiLU()
        self.scale = d_text**-0.5

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        te = torch.softmax(text @ self.query * self.scale, dim=0) @ text  # (d,)
        return self.act(self.norm(self.visual(x) + self.textual(te)[None, :, None, None]))
