"""Stage 5: hyperbolic alignment of visual features with class text on a Poincare ball (geoopt).

Adopted formulation (PAPER.md stage 5). Per pixel p with visual vector F_p and class embeddings T_k:

    z_p  = exp0_c(clamp(alpha_v W_v F_p))              visual point on the ball
    a_k  = proj_c(exp0_c(clamp(alpha_t W_t T_k)))      text anchors
    w_pk = softmax_k(-d_c(z_p, a_k) / tau)             pixel-to-class weights from geodesic distance
    ctx  = exp0_c(sum_k w_pk log0_c(a_k))              weighted log0-mean of the anchors
    out  = log0_c(proj_c(z_p (+)_c (lambda (x)_c ctx)))   Mobius fusion, mapped back to the tangent space

The curvature c > 0 is learnable, stored as log(c) and clamped in log space to [1e-2, 10]; tau and lambda are
learnable too. alpha_v and alpha_t are MERU's learnable input scales (Desai et al., 2023), stored as logs,
initialised to 1/sqrt(D) and clamped to <= 1. Without them (the first version of this layer) a trained model put every
text anchor and most pixels at the ball's projection margin (sqrt(c)|a_k| = 1 - 4e-3: |W_t T_k| ~ 6 where tanh
saturates), where the geometry is lost: all anchors equally far from the origin (so the ordering loss has no
gradient), c, tau and lambda without gradient (they stayed at their initial values), and SpaceBroadcast's
curvature-driven dilation stuck at 1. Checkpoints of layers built before the scales keep computing without them.
Departures: the context is the weighted log0-mean of the anchors (PAPER.md allows it instead of the gyro-midpoint). The whole stage runs as an fp32 island (autocast off) and clamps tangent vectors before ``tanh``, so
inputs of norm 0, 1e-8 or 1e4, and points at the ball boundary, stay finite.

Optional losses (weights set in the loss config, computed here and exposed through ``aux_outputs``):
- ``hyp_order``: parent-child ordering d(0, a_parent) + margin <= d(0, a_child), PAPER.md Eq. 12, as the mean hinge
  relu(d(0, parent) - d(0, child) + margin) over every parent-child pair. Parents come from ``hierarchy`` (a parent
  class index per class, -1 for roots; a YAML arg) and/or from ``groups`` (a group index per class, -1 for none),
  set by the plugin from a prompt file's ``hierarchy:`` (group -> classes). A group has no text of its own: its anchor
  is exp0 of the mean of its members' tangent anchors (the log0-mean the context uses), so
  d(0, group) = 2 |mean_k log0(a_k)| and the term asks each member to lie further out than its group's centre (a
  group more general than its classes). Groups of one class are skipped (child = parent: no ordering to learn);
- ``hyp_angle``: angle preservation, mean squared difference between the cosine similarities of the class texts
  and of their tangent anchors, Eq. 13.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsmoe_yolo.nn import poincare as ball
from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, is_tracing, text_cached

__all__ = ("HyperbolicAlign",)

LOG_C_RANGE = (math.log(1e-2), math.log(10.0))
LOG_TAU_RANGE = (math.log(1e-2), math.log(1e2))


class HyperbolicAlign(YAMLLayer):
    """Align visual features (B, c, H, W) with class text (nc, d) on a learnable-curvature Poincare ball.

    YAML: ``[[f, t], 1, HyperbolicAlign, [64]]`` with ``f`` the visual map and ``t`` the ``ClassText`` row.

    Args:
        c1 (list[int]): [visual channels, text width] (filled by the builder).
        c2 (int): Hyperbolic (ball) dimension of the output, width-scaled by the builder.
        curvature (float): Initial c.
        hierarchy (list[int], optional): Parent class index per class (-1 for roots) for the ordering loss.
        groups (list[int], optional): Group index per class (-1 for none) for the ordering loss (``set_groups``).
        margin (float): Margin of the ordering loss.

    Returns (forward):
        (B, c2, H, W) tangent-space fused features.

    Examples:
        >>> layer = HyperbolicAlign([32, 16], 8)
        >>> layer([torch.randn(2, 32, 5, 6), torch.randn(3, 16)]).shape
        torch.Size([2, 8, 5, 6])
    """

    yaml_channels = "declared"
    multi_input = True
    text_inputs = (1,)

    def __init__(
        self,
        c1: list[int],
        c2: int,
        curvature: float = 1.0,
        hierarchy: list[int] | None = None,
        margin: float = 0.1,
        groups: list[int] | None = None,
    ):
        super().__init__()
        if len(c1) != 2:
            raise ValueError(f"HyperbolicAlign takes [visual, text] inputs, got {len(c1)} inputs")
        if not 1e-2 <= curvature <= 10:
            raise ValueError(f"HyperbolicAlign curvature must be in [0.01, 10], got {curvature}")
        c_vis, d_text = c1
        self.visual = nn.Conv2d(c_vis, c2, 1)
        self.text = nn.Linear(d_text, c2)
        self.log_c = nn.Parameter(torch.tensor(math.log(curvature)))
        self.log_tau = nn.Parameter(torch.tensor(0.0))
        self.fusion_scale = nn.Parameter(torch.tensor(0.5))
        self.log_scale = nn.Parameter(torch.full((2,), -0.5 * math.log(c2)))  # log(alpha_v), log(alpha_t)
        self.hierarchy = list(hierarchy) if hierarchy else None
        self.groups = None
        self.set_groups(groups)
        self.margin = margin

    def set_groups(self, groups: list[int] | None) -> None:
        """Set the class groups of the ordering loss: a group index per class (-1 for none), or None."""
        self.groups = [int(g) for g in groups] if groups and any(int(g) >= 0 for g in groups) else None

    @property
    def has_hierarchy(self) -> bool:
        """True if the ordering loss (Eq. 12) has parent-child pairs to order."""
        return bool(self.hierarchy or self.groups)

    def input_scales(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(alpha_v, alpha_t), each <= 1; (1.0, 1.0) for a layer unpickled from a checkpoint that predates them."""
        log_scale = getattr(self, "log_scale", None)
        if log_scale is None:
            return 1.0, 1.0
        alpha = log_scale.float().clamp(max=0.0).exp()
        return alpha[0], alpha[1]

    def fuse_inference(self) -> None:
        """Fold alpha_v into the pixels' projection once, for the inference path (non-persistent buffers: they follow
        ``.to()``/``.half()``)."""
        super().fuse_inference()
        with torch.no_grad():
            weight, bias = self.visual_projection()
        self.register_buffer("fused_visual_w", weight, persistent=False)
        self.register_buffer("fused_visual_b", bias, persistent=False)

    @property
    def curvature(self) -> torch.Tensor:
        """Positive curvature magnitude c, clamped to [1e-2, 10]."""
        return self.log_c.clamp(*LOG_C_RANGE).exp()

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Fuse [F (B, c, H, W), T (nc, d)] into (B, c2, H, W)."""
        feats, text = x
        dtype = feats.dtype
        b, _, h, w = feats.shape
        with torch.autocast(device_type=feats.device.type, enabled=False):  # fp32 island
            if self.inference_path:  # closed form; the text's constants computed once per class text
                weight, bias = self.fused_visual_w.float(), self.fused_visual_b.float()
                v = F.conv2d(feats.float(), weight, bias).flatten(2).transpose(1, 2)  # (B, HW, D)
                out = self._fuse_radial(v, text_cached(self, "ball", text, self.ball_constants))
            else:
                weight, bias = self.visual_projection()
                v = F.conv2d(feats.float(), weight, bias).flatten(2).transpose(1, 2)  # (B, HW, D)
                c = self.curvature.float()
                anchors, anchors_t = self.anchors(text, c)
                out = self._fuse(v, anchors, anchors_t, c, self.log_tau.float().clamp(*LOG_TAU_RANGE).exp())
                if not is_tracing():
                    self._record_losses(text.float(), anchors, anchors_t, c)
        return out.transpose(1, 2).reshape(b, -1, h, w).to(dtype)

    def anchors(self, text: torch.Tensor, c: torch.Tensor, plain: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Text anchors on the ball a_k and their tangent vectors log0(a_k), both (nc, D), for class text (nc, d)."""
        t = F.linear(text.float(), self.text.weight.float(), self.text.bias.float()) * self.input_scales()[1]  # (nc, D)
        anchors = ball.project(ball.expmap0(ball.clamp_tangent(t, c), c, plain), c, plain=plain)
        return anchors, ball.logmap0(anchors, c, plain)

    def visual_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_v W_v as a 1x1 conv: weight (D, c, 1, 1) and bias (D,), fp32."""
        alpha = self.input_scales()[0]
        return self.visual.weight.float() * alpha, self.visual.bias.float() * alpha

    def _fuse(self, v, anchors, anchors_t, c, tau) -> torch.Tensor:
        """The stage's equations with the ball operations of ``poincare`` (geoopt): v (B, HW, D) -> (B, HW, D)."""
        z = ball.project(ball.expmap0(ball.clamp_tangent(v, c), c), c)
        d = ball.dist(z[:, :, None, :], anchors[None, None], c)  # (B, HW, nc)
        weights = torch.softmax(-d / tau, dim=-1)
        ctx = ball.project(ball.expmap0(ball.clamp_tangent(weights @ anchors_t, c), c), c)
        fused = ball.mobius_add(z, ball.mobius_scalar_mul(self.fusion_scale.float(), ctx, c), c)
        return ball.logmap0(ball.project(fused, c), c)

    def ball_constants(self, text: torch.Tensor) -> dict:
        """What ``_fuse_radial`` needs besides the pixels, for class text (nc, d): the anchors' products and the
        scalars of the ball (Python floats in eager mode, 0-dim tensors while tracing)."""
        c = self.curvature.float()
        anchors, anchors_t = self.anchors(text, c, plain=True)
        tau, lam = self.log_tau.float().clamp(*LOG_TAU_RANGE).exp(), self.fusion_scale.float()
        if not is_tracing():
            c, tau, lam = c.item(), tau.item(), lam.item()
        s = (c + 1e-15) ** 0.5
        a2 = (anchors * anchors).sum(-1)  # (nc,)
        return {
            "neg_anchors": -anchors.T,  # (D, nc)
            "anchors_t": anchors_t,  # (nc, D)
            "a2": a2,
            "a2c1": a2 * c + 1,
            "a2cc": a2 * (c * c),
            "c": c,
            "s": s,
            "limit": ball.MAX_TANGENT / c**0.5,
            "maxnorm": (1 - ball.EPS_FP32) / s,  # project's margin (the stage is an fp32 island)
            "logit": -2 / (tau * s),  # softmax(-d / tau) with d = 2 artanh(s |.|) / s
            "lam": lam,
        }

    def _fuse_radial(self, v: torch.Tensor, k: dict) -> torch.Tensor:
        """``_fuse`` for inference in closed form, a fifth of its operator calls (same clamps as ``poincare``'s
        plain-torch mirror; equal to float rounding, tests/test_fused_inference.py). v (B, HW, D) -> (B, HW, D).

        - clamp_tangent, expmap0 and project only rescale a vector by a function of its norm, so each chain is one
          radial factor; so is the Mobius scalar multiplication;
        - d(z, a_k) = 2 artanh(sqrt(c) |(-z) (+) a_k|) / sqrt(c) needs only |z|^2, |a_k|^2 and z . a_k (one matmul):
          |A x + B y|^2 = A^2 |x|^2 + B^2 |y|^2 + 2 A B x . y, without the (B, HW, nc, D) tensor of differences.
        """
        c, s, edge, clamp = k["c"], k["s"], ball.ARTANH_EDGE, ball.TANH_CLAMP
        atanh = ball.artanh_exportable if is_tracing() else torch.atanh  # ONNX has no aten::atanh symbolic

        def to_ball(u):  # project(expmap0(clamp_tangent(u)))
            n = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
            return u * (torch.tanh((n.clamp(max=k["limit"]) * s).clamp(max=clamp)).div(s).clamp(max=k["maxnorm"]) / n)

        z = to_ball(v)  # (B, HW, D)
        z2 = (z * z).sum(-1, keepdim=True)  # (B, HW, 1)
        xy = z @ k["neg_anchors"]  # (-z) . a_k: (B, HW, nc)
        two_c_xy = xy * (2 * c)
        big_a, big_b = two_c_xy + k["a2c1"], 1 - z2 * c
        num2 = (big_a * big_a * z2 + big_b * big_b * k["a2"] + 2 * big_a * big_b * xy).clamp_min(0)
        denom = (two_c_xy + 1 + z2 * k["a2cc"]).clamp_min(1e-15)
        logits = atanh((num2.sqrt() / denom * s).clamp(max=edge)) * k["logit"]  # -d / tau
        ctx = to_ball(torch.softmax(logits, dim=-1) @ k["anchors_t"])
        n = ctx.norm(dim=-1, keepdim=True).clamp_min(1e-15)
        ctx = ctx * (torch.tanh((atanh((n * s).clamp(max=edge)) * k["lam"]).clamp(-clamp, clamp)) / (n * s))
        y2, zy = (ctx * ctx).sum(-1, keepdim=True), (z * ctx).sum(-1, keepdim=True)
        two_c_zy = zy * (2 * c)
        fused = ((two_c_zy + 1 + y2 * c) * z + big_b * ctx) / (two_c_zy + 1 + z2 * y2 * (c * c)).clamp_min(1e-15)
        n = fused.norm(dim=-1, keepdim=True).clamp_min(1e-15)
        return fused * (atanh((n.clamp(max=k["maxnorm"]) * s).clamp(max=edge)) / (n * s))

    def _record_losses(self, text, anchors, anchors_t, c) -> None:
        aux = aux_outputs(self)
        cos_text = F.normalize(text, dim=-1) @ F.normalize(text, dim=-1).T
        cos_ball = F.normalize(anchors_t, dim=-1) @ F.normalize(anchors_t, dim=-1).T
        aux["hyp_angle"] = (cos_text - cos_ball).pow(2).mean()
        d0 = 2 * anchors_t.norm(dim=-1)  # d(0, a) = 2 artanh(sqrt(c)|a|)/sqrt(c) = 2 |log0(a)|
        parent_d, child_d = [], []
        for name, per_class in (("hierarchy", self.hierarchy), ("groups", self.groups)):
            if per_class and len(per_class) != len(anchors):
                raise ValueError(
                    f"HyperbolicAlign {name} lists {len(per_class)} entries but the model has {len(anchors)} classes; "
                    f"give one {'parent index' if name == 'hierarchy' else 'group index'} (or -1) per class"
                )
        if self.hierarchy:
            parents = torch.tensor(self.hierarchy, device=anchors.device)
            has_parent = parents >= 0
            parent_d.append(d0[parents[has_parent]])
            child_d.append(d0[has_parent])
        for g in sorted({g for g in self.groups or [] if g >= 0}):
            members = [k for k, gk in enumerate(self.groups) if gk == g]
            if len(members) > 1:
                centre = 2 * anchors_t[members].mean(0).norm()  # d(0, exp0(mean log0 a_k))
                parent_d.append(centre.expand(len(members)))
                child_d.append(d0[members])
        if parent_d and sum(len(x) for x in parent_d):
            aux["hyp_order"] = F.relu(torch.cat(parent_d) - torch.cat(child_d) + self.margin).mean()
