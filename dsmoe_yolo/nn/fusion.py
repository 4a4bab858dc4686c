"""Text-to-visual fusion helpers: image-conditioned pooling of class text, and the plain fusion of ablation row B.

``TextPool`` turns the class embeddings T (nc, d) into one text vector per image by attention with the image's
pooled visual descriptor as the query, so "broadcast text features" depend on what the image shows.
``PlainTextFusion`` is the simplest text guidance (ablation row B): add a 1x1 projection of [F; broadcast(text)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from dsmoe_yolo.nn.base import YAMLLayer

__all__ = ("TextPool", "PlainTextFusion")


class TextPool(nn.Module):
    """Attention-pool class embeddings per image: softmax_k(q(GAP F) . T_k / sqrt(d)) T, projected to ``c_out``.

    Args:
        c_vis (int): Visual channels (query source).
        d_text (int): Text width.
        c_out (int): Output width.

    Examples:
        >>> TextPool(32, 16, 8)(torch.randn(2, 32, 4, 4), torch.randn(5, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(self, c_vis: int, d_text: int, c_out: int):
        super().__init__()
        self.query = nn.Linear(c_vis, d_text)
        self.out = nn.Linear(d_text, c_out)
        self.scale = d_text**-0.5

    def forward(self, feats: torch.Tensor, text: torch.Tensor, text_side=None) -> torch.Tensor:
        """Map visual (B, c_vis, H, W) and text (nc, d) to one text vector per image (B, c_out).

        ``text_side``: a precomputed ``self.text_side(text)`` (fused inference reuses it while the text is unchanged).
        """
        g = F.adaptive_avg_pool2d(feats, 1).flatten(1)  # (B, c_vis)
        if text_side is not None:
            keys, key_bias, values = text_side
            return torch.softmax(torch.addmm(key_bias, g, keys), dim=-1) @ values
        q = self.query(g)  # (B, d)
        attn = torch.softmax(q @ text.T * self.scale, dim=-1)  # (B, nc)
        return self.out(attn @ text)

    def text_side(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The text-only factors of ``forward`` for class text T (nc, d): keys (c_vis, nc) and key bias (nc,) with
        q(g) . T_k / sqrt(d) = g . keys_k + bias_k, and values (nc, c_out) = out(T) (exact: attention rows sum to 1)."""
        keys = (text @ self.query.weight).T * self.scale
        key_bias = text @ self.query.bias * self.scale
        return keys, key_bias, self.out(text)

    def broadcast(self, feats: torch.Tensor, text: torch.Tensor, text_side=None) -> torch.Tensor:
        """The pooled text vector of each image spread over its map: (B, c_out, H, W), for concatenation with F."""
        return self(feats, text, text_side)[:, :, None, None].expand(-1, -1, *feats.shape[2:])


class PlainTextFusion(YAMLLayer):
    """Ablation row B's text guidance: F + Conv1x1([F; broadcast(TextPool(F, T))]). Keeps F's shape.

    YAML: ``[[f, t], 1, PlainTextFusion, [1024]]`` (c2 must equal the visual channels).

    Examples:
        >>> PlainTextFusion([32, 16], 32)([torch.randn(2, 32, 4, 4), torch.randn(3, 16)]).shape
        torch.Size([2, 32, 4, 4])
    """

    yaml_channels = "declared"
    multi_input = True
    text_inputs = (1,)

    def __init__(self, c1: list[int], c2: int):
        super().__init__()
        c_vis, d_text = c1
        if c2 != c_vis:
            raise ValueError(f"PlainTextFusion keeps the visual width: c2={c2} must equal the visual input's {c_vis}")
        hidden = max(c_vis // 4, 8)
        self.pool = TextPool(c_vis, d_text, hidden)
        self.mix = Conv(c_vis + hidden, c2, 1)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Fuse [F (B, c, H, W), T (nc, d)] into (B, c, H, W)."""
        feats, text = x
        t = self.pool.broadcast(feats, text)
        return feats + self.mix(torch.cat([feats, t], 1))
