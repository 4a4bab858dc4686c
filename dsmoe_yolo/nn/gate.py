"""Stage 7: the text-visual co-attention gate that picks top-k experts per image.

Adopted formulation (PAPER.md stage 7), with H heads of width h/H (index a), class text T (nc, d):

    t    = MLP_t(T)                                  (nc, h)   MLP: 2 hidden layers of 128, SiLU
    P    = W_p F                                     (B, h, HW) pixels projected to the gate width
    A_ka = softmax_pixels(t_ka . P_a / sqrt(h/H))    text -> visual attention, one map per class and head
    e    = W_e concat_a(mean_k A_ka P_a^T)           (B, h)    class-conditioned visual evidence
    v    = S_v(MLP_v(S([GAP F; GMP F])) + e)        (B, h)    S, S_v: running standardisation (see below)
    tbar = W_o concat_a(softmax_k(v_a t_ka / sqrt(h/H)) t_a)   (B, h)  visual -> text attention, per head
    q    = LN(v + v * tbar)                          (B, h)
    K_e  = W_k sum_k softmax_k(u_e . t_k / sqrt(h)) t_k     (N, h)  expert keys derived from the class text
    g    = softmax(q K^T / sqrt(h) / tau + noise)    (B, N)    tau: learnable temperature
    keep the top k of g per image, renormalised;  k = ceil(log2 N) by default (N = 32 -> 5)

The paper's expert keys are class-specific text embeddings t_e; here each expert e owns a learned query u_e that
attention-pools the refined class text into its key, so the keys follow T (rebinding the classes changes them) for
any class count, and N may exceed nc. The co-attention is multi-head (``heads``, default 4), as in the paper.
Measured against the previous form (free keys, single head), everything else equal: DS-MoE-n, neu-det-mini, 10
epochs, 160 px, batch 8, seed 0, CPU. Both reached mAP 0 on the 16 validation images and both routed every validation
image to one expert set (5 of 32 experts used, load CV 2.32; the old gate 6 of 32 in its last epochs), with train
losses within noise (box / cls / dfl 4.23 / 5.80 / 3.82 vs 4.09 / 5.72 / 3.79). The CV^2 balance term was 45x lower
with text keys (0.00034 vs 0.0154 at epoch 10), partly because its gate probabilities are flatter. No cost in
accuracy was visible at that (very small) budget, so the paper's form is kept; the GPU runs should compare them.

Departures, all against routing collapse (every image picking the same k experts: seen in evaluation on PCB images,
whose pooled features are dominated by the board that every image shares):
- the gate reads class-conditioned evidence (text attending over pixels), not only globally pooled features;
- the pooled descriptor is standardised with running statistics that are used in training as in evaluation, so an
  image's experts never depend on which other images share its batch and evaluation routes like training;
- during training Gaussian noise (std ``noise``, in units of the tempered logits) is added before the top-k,
  Shazeer et al.'s noisy top-k gating. Evaluation is deterministic.

Image routing (``image_routing=True``, off by default). The text-derived keys have a blind spot that the multi-dataset
pretraining exposed (docs/results.md, step 7): each K_e is a convex mix of the nc class texts pushed through one
linear map, so the N keys span at most nc directions. With one class prompt (KolektorSDD "defect", CrackForest "crack")
all N keys are equal, every logit ties and the same k experts win on every image (seen: e18, e20-e23 for both
datasets); with six classes the image can only choose among mixes of six directions (DeepPCB: 99 % of images to one
set). ``K_e = W_k sum_k softmax_k(u_e . t_k) t_k + b_e`` gives each expert a direction of its own, learned, so the
image-dependent query q can tell N experts apart whatever the class count; the text still moves every key. Free keys
alone did not spread the routing (a 10-epoch probe on three small datasets: the same four experts for every image of
every dataset): q shares a large image-independent part (the LayerNorm's bias, the mean of v * tbar), so q . b_e
ranks the experts once for all images. Image routing therefore also standardises q with running statistics (as the
pooled descriptor): every expert's logit then has mean 0 over the training images, and only what differs between
images ranks the experts. Both fold into the keys for inference (``folded``). Measured on the multi-dataset
pretraining (docs/results.md, "Routing: image routing, before and after"; one seed): all 32 experts used instead of
11, DeepPCB's images over 27 experts instead of one set of five, the two one-class sets apart; but union mAP50-95
0.118 against 0.139 and a weaker few-label transfer, so it is off by default.

The temperature is stored as log(tau), initialised at log(0.1) and clamped to [0.01, 10] so it can neither collapse
to 0 nor overflow. Routing itself is the small pure function :func:`route`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ("ExpertGate", "RunningStandardize", "route", "default_top_k", "mlp")

LOG_TAU_RANGE = (math.log(1e-2), math.log(10.0))


def default_top_k(n_experts: int) -> int:
    """k = ceil(log2 N), at least 1 (N = 32 -> 5)."""
    return max(1, math.ceil(math.log2(n_experts)))


def route(logits: torch.Tensor, k: int, tau: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax routing with temperature, top-k per row, weights renormalised over the kept k.

    Args:
        logits: (B, N) gate logits.
        k: Experts kept per row.
        tau: Temperature (> 0).

    Returns:
        weights (B, k) summing to 1 per row, indices (B, k), probs (B, N) full softmax (fp32, for balancing).

    Examples:
        >>> w, i, p = route(torch.tensor([[0.0, 1.0, 2.0]]), 2, 1.0)
        >>> i.tolist(), round(w.sum().item(), 6)
        ([[2, 1]], 1.0)
    """
    probs = torch.softmax(logits.float() / tau, dim=-1)
    top, indices = probs.topk(k, dim=-1)
    weights = top / top.sum(-1, keepdim=True).clamp_min(1e-12)
    return weights, indices, probs


class RunningStandardize(nn.Module):
    """(x - running mean) / running std, the running statistics updated in training and used in both modes.

    Unlike BatchNorm, training never uses the batch's own statistics: the output for one sample does not depend on
    the other samples in its batch, and training and evaluation compute the same function.

    Args:
        c (int): Features.
        momentum (float): Running-statistics update rate per training step.
    """

    def __init__(self, c: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise (B, c)."""
        if self.training and self.momentum > 0 and x.shape[0] > 1:
            with torch.no_grad():
                xf = x.detach().float()
                self.running_mean.lerp_(xf.mean(0), self.momentum)
                self.running_var.lerp_(xf.var(0, unbiased=False), self.momentum)
        return (x - self.running_mean.to(x.dtype)) * torch.rsqrt(self.running_var + self.eps).to(x.dtype)


def mlp(c_in: int, hidden: int = 128, c_out: int | None = None) -> nn.Sequential:
    """Projector with two hidden layers: Linear-SiLU-Linear-SiLU-Linear."""
    return nn.Sequential(
        nn.Linear(c_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, c_out or hidden)
    )


class ExpertGate(nn.Module):
    """Pick ``top_k`` of ``n_experts`` per image from visual features and class text.

    Args:
        c_vis (int): Visual channels.
        d_text (int): Text width.
        n_experts (int): N.
        top_k (int, optional): k; default ceil(log2 N).
        hidden (int): Projector width (128 in the paper).
        tau (float): Initial temperature (0.1 in the paper).
        noise (float): Std of the training-time routing noise (0 disables it).
        heads (int): Co-attention heads (must divide ``hidden``).
        image_routing (bool): A learned key per expert, b_e (N, h), added to the text-derived keys, and the query
            standardised with running statistics (module docstring, "Image routing"). Off by default: the paper's
            form, and every checkpoint trained before it.

    Examples:
        >>> gate = ExpertGate(32, 16, n_experts=8)
        >>> w, i, p = gate(torch.randn(4, 32, 5, 5), torch.randn(3, 16))
        >>> w.shape, i.shape, p.shape
        (torch.Size([4, 3]), torch.Size([4, 3]), torch.Size([4, 8]))
    """

    def __init__(
        self,
        c_vis: int,
        d_text: int,
        n_experts: int,
        top_k: int | None = None,
        hidden: int = 128,
        tau: float = 0.1,
        noise: float = 0.5,
        heads: int = 4,
        image_routing: bool = False,
    ):
        super().__init__()
        self.n_experts = n_experts
        self.top_k = default_top_k(n_experts) if top_k is None else int(top_k)
        if not 1 <= self.top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and the number of experts ({n_experts})")
        if not 1e-2 <= tau <= 10:
            raise ValueError(f"gate temperature tau={tau} must be in [0.01, 10]")
        if noise < 0:
            raise ValueError(f"gate noise={noise} must be >= 0")
        if heads < 1 or hidden % heads:
            raise ValueError(f"gate heads={heads} must divide the gate width hidden={hidden}")
        self.noise, self.heads = float(noise), int(heads)
        self.descriptor = RunningStandardize(2 * c_vis)
        self.visual = mlp(2 * c_vis, hidden)
        self.pixels = nn.Conv2d(c_vis, hidden, 1)
        self.centre = RunningStandardize(hidden)
        self.textual = mlp(d_text, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.evidence_out = nn.Linear(hidden, hidden)  # W_e: merges the heads
        self.text_out = nn.Linear(hidden, hidden)  # W_o
        self.expert_queries = nn.Parameter(torch.randn(n_experts, hidden))  # u_e
        self.key_proj = nn.Linear(hidden, hidden)  # W_k
        # image routing: b_e, one free key per expert (~unit norm), and the query centred on its running mean
        self.key_offsets = nn.Parameter(torch.randn(n_experts, hidden) * hidden**-0.5) if image_routing else None
        self.query_centre = RunningStandardize(hidden) if image_routing else None
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        self.scale = hidden**-0.5

    @property
    def tau(self) -> torch.Tensor:
        """Temperature, clamped to [0.01, 10]."""
        return self.log_tau.clamp(*LOG_TAU_RANGE).exp()

    def keys(self, t: torch.Tensor) -> torch.Tensor:
        """Expert keys K (N, h) attention-pooled from the projected class text t (nc, h), plus the free keys b_e
        when the gate has them."""
        mix = torch.softmax(self.expert_queries @ t.T * self.scale, dim=-1)  # (N, nc)
        keys = self.key_proj(mix @ t)
        offsets = getattr(self, "key_offsets", None)  # absent from gates pickled before image routing existed
        return keys if offsets is None else keys + offsets.to(keys.dtype)

    def text_side(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the gate derives from the class text (nc, d) alone: t (nc, h) and the expert keys K (N, h)."""
        t = self.textual(text)
        return t, self.keys(t)

    def logits(
        self, feats: torch.Tensor, text: torch.Tensor, text_side: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Gate logits (B, N) for visual (B, c, H, W) and text (nc, d); ``text_side``: a precomputed
        ``self.text_side(text)`` (the fused layer reuses it while the text is unchanged)."""
        b, heads = feats.shape[0], self.heads
        pooled = torch.cat([F.adaptive_avg_pool2d(feats, 1), F.adaptive_max_pool2d(feats, 1)], 1).flatten(1)
        t, keys = self.text_side(text) if text_side is None else text_side  # (nc, h), (N, h)
        th = t.reshape(t.shape[0], heads, -1)  # (nc, H, h/H)
        head_scale = th.shape[-1] ** -0.5
        pix = self.pixels(feats).flatten(2)  # (B, h, HW)
        ph = pix.reshape(b, heads, th.shape[-1], -1)  # (B, H, h/H, HW)
        attn = torch.softmax(torch.einsum("kad,badn->bkan", th, ph) * head_scale, dim=-1)  # (B, nc, H, HW)
        evidence = torch.einsum("bkan,badn->bad", attn, ph).reshape(b, -1) / t.shape[0]  # mean over classes
        v = self.centre(self.visual(self.descriptor(pooled)) + self.evidence_out(evidence))
        back = torch.softmax(
            torch.einsum("bad,kad->bak", v.reshape(b, heads, -1), th) * head_scale, dim=-1
        )  # (B, H, nc)
        tbar = self.text_out(torch.einsum("bak,kad->bad", back, th).reshape(b, -1))
        q = self.norm(v + v * tbar)
        centre = getattr(self, "query_centre", None)  # absent from gates pickled before image routing existed
        if centre is not None:
            q = centre(q)
        return q @ keys.T * self.scale

    def folded(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits``' constants for inference, for class text (nc, d): everything that depends on the text and the
        (frozen) weights only, folded so that ``folded_logits`` needs a third of ``logits``' operator calls.

        - per-head attention as one matmul: a block-diagonal text matrix Tb (nc*H, h) whose row (k, a) holds t_ka in
          head a's columns, so Tb @ P gives every (class, head) logit and back @ Tb every head's text mix;
        - the two running standardisations folded into the linear layers around them (their statistics are fixed in
          evaluation), the attention and key scales into Tb and K, W_o into Tb.
        """
        t, keys = self.text_side(text)
        nc, h, heads = t.shape[0], t.shape[1], self.heads
        dh = h // heads
        blocks = torch.zeros(nc, heads, h, dtype=t.dtype, device=t.device)
        for a in range(heads):
            blocks[:, a, a * dh : (a + 1) * dh] = t[:, a * dh : (a + 1) * dh]
        blocks = blocks.reshape(nc * heads, h)  # Tb, rows ordered (k, a)
        d_in, d_out = self.descriptor, self.centre
        r_in = torch.rsqrt(d_in.running_var + d_in.eps)
        r_out = torch.rsqrt(d_out.running_var + d_out.eps)
        first, last = self.visual[0], self.visual[-1]
        return {
            "attn": blocks * dh**-0.5,  # (nc*H, h)
            "back": blocks.T * dh**-0.5,  # (h, nc*H)
            "mix_w": blocks @ self.text_out.weight.T,  # (nc*H, h): back @ Tb then W_o
            "mix_b": self.text_out.bias,
            "in_w": first.weight * r_in,  # descriptor standardisation folded into the first visual layer
            "in_b": first.bias - first.weight @ (d_in.running_mean * r_in),
            "out_w": last.weight * r_out[:, None],  # centre standardisation folded into both summands
            "out_b": (last.bias - d_out.running_mean) * r_out,
            "ev_w": self.evidence_out.weight * r_out[:, None] / nc,  # the mean over classes, too
            "ev_b": self.evidence_out.bias * r_out,
            **self._folded_keys(keys.T * (self.scale / self.tau)),  # (h, N), the routing temperature included
        }

    def folded_logits(self, feats: torch.Tensor, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """``logits`` / tau (B, N) from the constants of ``folded`` (equal to float rounding)."""
        b, heads = feats.shape[0], self.heads
        pooled = torch.cat([F.adaptive_avg_pool2d(feats, 1), F.adaptive_max_pool2d(feats, 1)], 1).flatten(1)
        hidden = F.silu(
            F.linear(F.silu(F.linear(pooled, f["in_w"], f["in_b"])), self.visual[2].weight, self.visual[2].bias)
        )
        pix = self.pixels(feats).flatten(2)  # (B, h, HW)
        attn = torch.softmax(f["attn"] @ pix, dim=-1)  # (B, nc*H, HW)
        abar = attn.view(b, -1, heads, attn.shape[-1]).sum(1)  # (B, H, HW): summed over classes (1/nc in ev_w)
        evidence = (pix.view(b, heads, -1, pix.shape[-1]) * abar[:, :, None]).sum(-1).flatten(1)  # (B, h)
        v = F.linear(hidden, f["out_w"], f["out_b"]) + F.linear(evidence, f["ev_w"], f["ev_b"])
        back = torch.softmax((v @ f["back"]).view(b, -1, heads), dim=1)  # (B, nc, H): over classes
        tbar = torch.addmm(f["mix_b"], back.flatten(1), f["mix_w"])
        q = F.layer_norm(v + v * tbar, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        if "keys_bias" in f:  # image routing: the query standardisation folded into the keys
            return torch.addmm(f["keys_bias"], q, f["keys"])
        return q @ f["keys"]

    def _folded_keys(self, k: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"keys": k}`` for the scaled keys k = K^T s (h, N); with image routing the query standardisation folded
        in, ``(q - m) r @ k = q @ (r k) - (m r) @ k``: scaled keys and a per-expert ``keys_bias``."""
        centre = getattr(self, "query_centre", None)  # absent from gates pickled before image routing existed
        if centre is None:
            return {"keys": k}
        r = torch.rsqrt(centre.running_var + centre.eps)
        return {"keys": k * r[:, None], "keys_bias": -(centre.running_mean * r) @ k}

    def forward(self, feats: torch.Tensor, text: torch.Tensor, text_side=None):
        """Return (weights (B, k), indices (B, k), probs (B, N)); ``text_side``: as in ``logits``, or the dict of
        ``folded`` constants (fused inference)."""
        if isinstance(text_side, dict):  # the constants of `folded` (fused inference): logits / tau
            return route(self.folded_logits(feats, text_side).float(), self.top_k, 1.0)
        tau = self.tau.float()
        logits = self.logits(feats, text, text_side).float()
        if self.training and self.noise > 0:
            logits = logits + torch.randn_like(logits) * self.noise * tau  # noise of std `noise` after dividing by tau
        return route(logits, self.top_k, tau)
