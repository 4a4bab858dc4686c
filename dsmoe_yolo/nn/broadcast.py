"""Stage 6: "space broadcasting", a modulated deformable convolution steered by visual, geometric and text context.

Adopted formulation (PAPER.md stage 6):

    Fe      = CBS1x1(G)                                    G: HyperbolicAlign output (log-mapped ball features)
    Fm      = [F; Fe]
    om      = PW1x1(DW3x3([Fm; broadcast(TextPool(F, T))]))   2*k*k offsets and k*k mask logits (zero-initialised)
    rho_p   = tanh(sqrt(kappa) |G_p|)                      relative radius of pixel p on the ball, in [0, 1)
    r_p     = 1 + (r_max - 1) (1 - rho_p)                   curvature-driven dilation, in (1, r_max]
    offsets = om_offsets + (r_p - 1) g_j                   g_j: (dy, dx) of kernel tap j on the unit 3x3 grid
    out     = SiLU(BN(deform_conv2d(Fm, offsets, W, mask=sigmoid(mask logits)))) (+ F if widths match)

Curvature-driven dilation (our reading of the paper's "the hyperbolic hierarchy controls the deformable kernel's
dilation through the learnable curvature kappa"). Adding (r - 1) g_j to tap j's offset samples the kernel on a grid
dilated by r (exactly ``dilation=r`` when r is an integer and the learned offsets are zero), so the dilation is a
per-pixel, differentiable function of the hyperbolic geometry. G_p = log0_c(y_p) is HyperbolicAlign's tangent vector,
so with kappa = c, tanh(sqrt(kappa)|G_p|) = sqrt(c)|y_p| is the point's relative radius on the ball: 0 at the origin
(general, root-level content: the kernel opens to r_max for context) and -> 1 near the boundary (specific, leaf-level
content: a tight 3x3). kappa is learnable (log-parametrised, clamped to [1e-2, 10], initialised at 1 like
HyperbolicAlign's c): a larger kappa pushes more pixels towards the boundary and shrinks the kernels. Departure: kappa
is this layer's own parameter, not HyperbolicAlign's c (a YAML layer cannot read another row's parameter); the two
start equal. ``max_dilation=1`` restores the fixed dilation-1 kernel.

Departure: the paper's ``Fm = Up(Concat(F, Fe))`` upsamples; here G and F share one resolution, so no upsampling.
The deformable convolution reads Fm (visual + geometric), so the hyperbolic features reach the output directly, not
only through the (zero-initialised) offsets.
Offsets are made finite and clamped to +-max(H, W) before the deformable convolution in eager mode: torchvision's CPU
kernel reads out of bounds (a segfault) on NaN offsets, e.g. from uninitialised memory. Inside the range the clamp is
a no-op. Eager mode samples with ``nn/deform.py`` (same result as torchvision's kernel, 3-4x faster on a CPU). Export:
``torchvision.ops.deform_conv2d`` maps to ONNX ``DeformConv`` (opset >= 19) through the symbolic that
``dsmoe_yolo.export`` registers when an export starts.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from dsmoe_yolo.nn.base import YAMLLayer, is_tracing, text_cached
from dsmoe_yolo.nn.deform import deform_conv2d, deform_conv2d_flat
from dsmoe_yolo.nn.fusion import TextPool

__all__ = ("SpaceBroadcast",)

LOG_C_RANGE = (math.log(1e-2), math.log(10.0))


def _bounded(offset: torch.Tensor, fm: torch.Tensor) -> torch.Tensor:
    """Offsets (B, 2*k*k, H, W) made finite and within the map's size: torchvision's CPU kernel reads out of bounds
    (segfaults) on NaN offsets."""
    lim = float(max(fm.shape[2:]))
    return offset.nan_to_num(0.0, lim, -lim).clamp(-lim, lim)


class SpaceBroadcast(YAMLLayer):
    """Text-modulated deformable k x k convolution of the visual map.

    YAML: ``[[f, g, t], 1, SpaceBroadcast, [1024]]``: visual map, HyperbolicAlign output, ClassText.

    Args:
        c1 (list[int]): [visual channels, geometric channels, text width] (filled by the builder).
        c2 (int): Output channels (width-scaled).
        k (int): Deformable kernel size.
        max_dilation (float): r_max, the dilation of a pixel at the ball's origin (>= 1; 1 = fixed dilation 1).
        curvature (float): Initial kappa.

    Examples:
        >>> sb = SpaceBroadcast([32, 8, 16], 32)
        >>> sb([torch.randn(2, 32, 6, 5), torch.randn(2, 8, 6, 5), torch.randn(3, 16)]).shape
        torch.Size([2, 32, 6, 5])
    """

    yaml_channels = "declared"
    multi_input = True
    text_inputs = (2,)

    def __init__(self, c1: list[int], c2: int, k: int = 3, max_dilation: float = 2.0, curvature: float = 1.0):
        super().__init__()
        if len(c1) != 3:
            raise ValueError(f"SpaceBroadcast takes [visual, geometric, text] inputs, got {len(c1)} inputs")
        if k % 2 != 1:
            raise ValueError(f"SpaceBroadcast kernel size must be odd, got {k}")
        if max_dilation < 1:
            raise ValueError(f"SpaceBroadcast max_dilation must be >= 1, got {max_dilation}")
        if not 1e-2 <= curvature <= 10:
            raise ValueError(f"SpaceBroadcast curvature must be in [0.01, 10], got {curvature}")
        c, c_geo, d_text = c1
        ce = max(c // 4, 8)
        self.k = k
        self.compress = Conv(c_geo, ce, 1)
        self.text = TextPool(c, d_text, ce)
        cin = c + 2 * ce
        self.offset_dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.offset_pw = nn.Conv2d(cin, 3 * k * k, 1)
        nn.init.zeros_(self.offset_pw.weight)  # start as a plain conv: zero offsets, mask 0.5 (DCNv2 init)
        nn.init.zeros_(self.offset_pw.bias)
        self.weight = nn.Parameter(torch.empty(c2, c + ce, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()
        self.residual = c2 == c
        self.max_dilation = float(max_dilation)
        self.log_c = nn.Parameter(torch.tensor(math.log(curvature)))
        taps = torch.arange(k, dtype=torch.float32) - k // 2
        grid = torch.stack(torch.meshgrid(taps, taps, indexing="ij"), -1).reshape(
            1, 2 * k * k, 1, 1
        )  # (dy, dx) per tap
        self.register_buffer("grid", grid, persistent=False)

    @property
    def curvature(self) -> torch.Tensor:
        """kappa, clamped to [1e-2, 10]."""
        return self.log_c.clamp(*LOG_C_RANGE).exp()

    def dilation(self, geo: torch.Tensor) -> torch.Tensor:
        """Per-pixel dilation r (B, 1, H, W) in (1, r_max] from the tangent vectors G (B, c_geo, H, W)."""
        rho = torch.tanh(self.curvature.sqrt() * geo.float().norm(dim=1, keepdim=True))
        return 1 + (self.max_dilation - 1) * (1 - rho)

    def fuse_inference(self) -> None:
        """Fold BatchNorm into the deformable kernel, W' (c2, C*k*k) and b' (c2, 1), and keep the dilation's constants,
        for ``_deform_folded`` (non-persistent buffers: they follow ``.to()``/``.half()``)."""
        super().fuse_inference()
        with torch.no_grad():
            scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
            weight = (self.weight * scale[:, None, None, None]).flatten(1)
            self.register_buffer("folded_weight", weight, persistent=False)
            self.register_buffer(
                "folded_bias", (self.bn.bias - self.bn.running_mean * scale)[:, None], persistent=False
            )
            self.register_buffer("folded_grid", self.grid * (self.max_dilation - 1), persistent=False)
        self.sqrt_kappa = self.curvature.sqrt().item()

    def _deform_folded(self, fm, offset, mask, geo) -> torch.Tensor:
        """The dilated deformable conv + BatchNorm of ``forward`` for eager inference, with the constants of
        ``fuse_inference`` (equal to float rounding): (B, c2, H, W), before the activation."""
        rho = torch.tanh(geo.norm(dim=1, keepdim=True) * self.sqrt_kappa)  # (r - 1) = (r_max - 1)(1 - rho)
        offset = _bounded(torch.addcmul(offset, 1 - rho, self.folded_grid), fm)
        return deform_conv2d_flat(fm, offset, self.folded_weight, self.folded_bias, self.k, mask)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Map [F (B, c, H, W), G (B, c_geo, H, W), T (nc, d)] to (B, c2, H, W)."""
        feats, geo, text = x
        t = self.text.broadcast(feats, text, text_cached(self, "pool", text, self.text.text_side))
        fm = torch.cat([feats, self.compress(geo)], 1)
        om = self.offset_pw(self.offset_dw(torch.cat([fm, t], 1)))
        kk = self.k * self.k
        offset, mask = om[:, : 2 * kk], torch.sigmoid(om[:, 2 * kk :])
        if self.inference_path and not is_tracing() and fm.dtype == torch.float32:
            y = self._deform_folded(fm, offset, mask, geo)
        else:
            offset = offset + ((self.dilation(geo) - 1) * self.grid).to(offset.dtype)  # dilate the kernel grid by r
            if not is_tracing():
                offset = _bounded(offset, fm)
            with torch.autocast(device_type=fm.device.type, enabled=False):  # fp32: CPU kernels lack bf16/fp16
                y = deform_conv2d(
                    fm.float(), offset.float(), self.weight.float(), None, padding=self.k // 2, mask=mask.float()
                )
            y = self.bn(y.to(fm.dtype))
        y = self.act(y)
        return y + feats if self.residual else y
