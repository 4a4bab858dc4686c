"""Stages 7+8: sparse mixture of experts routed per image by the text-visual gate.

    Y = sum over the kept k experts e of  g_e * E_e(F, T)        (g renormalised over the kept k)

Experts (``experts.py``): ``n_local`` local anisotropic, ``n_global`` global pyramid, the rest cross-modal (the
paper: one local, one global, N-2 cross-modal). Dispatch follows Mixtral's block: in eager mode only experts that
received an image run, each on its images only (``index_add_``), so compute scales with k, not N. While tracing
for export (or with ``dense=True``) every expert runs on the whole batch and a top-k weight mask zeroes the others:
the same output, a static graph.

Fused for inference (``fuse_inference``, called by ``BaseModel.fuse`` before ``yolo predict``/``val``/``export``), the
cross-modal experts run as one batched product: their weights are stacked once, each image gathers the weights of the
experts it chose, and the text term of every expert (a per-expert bias, since T_e depends on the text only) is computed
once per class text. The local and global experts run on the images that chose them (while tracing: on all, weighted
by the mask). Same output as the eval-mode forward to float rounding; cost and graph size scale with k, not N, also in
ONNX (a ``Gather`` of the stacked weights by the top-k indices).

Auxiliary outputs (``aux_outputs``), read by the loss and the routing report: ``moe_probs`` (B, N) full gate
softmax (differentiable, for the CV^2 importance balance loss), ``moe_load`` (N,) selections per expert,
``moe_indices`` (B, k) chosen experts (detached).

Distributed training with a static graph (``compile=True`` under DDP) needs every parameter in every step's graph: the
layer then adds the idle experts' parameters times zero (``keep_idle_in_graph``), which costs a sum, not their compute.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, is_tracing, record_routing, text_cached
from dsmoe_yolo.nn.experts import CrossModalExpert, GlobalPyramidExpert, LocalAnisotropicExpert
from dsmoe_yolo.nn.gate import ExpertGate

__all__ = ("SparseMoE",)


class SparseMoE(YAMLLayer):
    """Top-k of N experts per image, chosen by the co-attention gate.

    YAML: ``[[f, t], 1, SparseMoE, [1024, {experts: 32, top_k: 5}]]``.

    Args:
        c1 (list[int]): [visual channels, text width] (filled by the builder).
        c2 (int): Output channels (width-scaled).
        experts (int): N, at least 3 (one of each kind).
        top_k (int, optional): k, default ceil(log2 N).
        n_local (int): Local anisotropic experts.
        n_global (int): Global pyramid experts.
        hidden (int): Gate projector width.
        tau (float): Initial gate temperature.
        noise (float): Training-time routing noise of the gate (0 disables it).
        kernel (int): Kernel length of the local experts.
        heads (int): Heads of the gate's co-attention (keyword only: ``{heads: 4}`` in YAML).
        image_routing (bool): Free expert keys and a centred query in the gate (keyword only; ``gate.py``).
        balance (float): Weight of a load-balance term added to a model trained with the stock loss (no ``loss:``
            key; ``routing_balance.py``); 0 adds none. The DS-MoE loss has its own (``loss: {moe: ...}``).

    Examples:
        >>> moe = SparseMoE([32, 16], 32, experts=8)
        >>> moe([torch.randn(4, 32, 5, 5), torch.randn(3, 16)]).shape
        torch.Size([4, 32, 5, 5])
    """

    yaml_channels = "declared"
    multi_input = True
    text_inputs = (1,)

    def __init__(
        self,
        c1: list[int],
        c2: int,
        experts: int = 32,
        top_k: int | None = None,
        n_local: int = 1,
        n_global: int = 1,
        hidden: int = 128,
        tau: float = 0.1,
        kernel: int = 7,
        noise: float = 0.5,
        *,
        heads: int = 4,
        image_routing: bool = False,
        balance: float = 0.0,
    ):
        super().__init__()
        if len(c1) != 2:
            raise ValueError(f"SparseMoE takes [visual, text] inputs, got {len(c1)} inputs")
        if experts < 3:
            raise ValueError(f"SparseMoE needs N >= 3 experts (one of each of the 3 kinds), got experts={experts}")
        if n_local < 1 or n_global < 1 or experts - n_local - n_global < 1:
            raise ValueError(
                f"SparseMoE needs at least one local, one global and one cross-modal expert: experts={experts}, "
                f"n_local={n_local}, n_global={n_global}"
            )
        if not isinstance(balance, (int, float)) or balance < 0:
            raise ValueError(f"SparseMoE balance={balance!r} must be a non-negative number (0 adds no term)")
        c, d = c1
        self.gate = ExpertGate(c, d, experts, top_k, hidden, tau, noise, heads, image_routing=bool(image_routing))
        self.balance = float(balance)
        kinds = [LocalAnisotropicExpert] * n_local + [GlobalPyramidExpert] * n_global
        kinds += [CrossModalExpert] * (experts - n_local - n_global)
        self.experts = nn.ModuleList(
            kind(c, c2, d, k=kernel) if kind is LocalAnisotropicExpert else kind(c, c2, d) for kind in kinds
        )
        self.c2, self.dense = c2, False

    @property
    def top_k(self) -> int:
        """Experts kept per image."""
        return self.gate.top_k

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Map [F (B, c, H, W), T (nc, d)] to (B, c2, H, W)."""
        feats, text = x
        if self.inference_path and not self.dense:
            return self._fused(feats, text)
        weights, indices, probs = self.gate(feats, text)
        weights = weights.to(feats.dtype)
        if self.dense or is_tracing():
            return self._dense(feats, text, weights, indices)
        aux = aux_outputs(self)
        aux["moe_probs"] = probs
        aux["moe_load"] = torch.bincount(indices.flatten(), minlength=len(self.experts))
        aux["moe_indices"] = indices.detach()
        record_routing(self, indices)
        return self._sparse(feats, text, weights, indices)

    def _dense(self, feats, text, weights, indices):
        """All experts on the whole batch, weighted by a (B, N) top-k mask: export-friendly, same output."""
        mask = torch.zeros(feats.shape[0], len(self.experts), dtype=feats.dtype, device=feats.device)
        mask = mask.scatter(1, indices, weights)
        out = 0
        for e, expert in enumerate(self.experts):
            out = out + mask[:, e, None, None, None] * expert(feats, text)
        return out

    def _sparse(self, feats, text, weights, indices):
        """Run each selected expert once, on the images that selected it; idle experts cost nothing."""
        out = feats.new_zeros(feats.shape[0], self.c2, *feats.shape[2:])
        for e in indices.unique().tolist():
            rows, slot = (indices == e).nonzero(as_tuple=True)
            y = self.experts[e](feats[rows], text)
            out = out.index_add(0, rows, (y * weights[rows, slot][:, None, None, None]).to(out.dtype))
        if self.training and self.keep_idle_in_graph():
            used = set(indices.unique().tolist())
            idle = [p for e, m in enumerate(self.experts) if e not in used for p in m.parameters()]
            if idle:
                out = out + 0.0 * sum(p.sum() for p in idle)
        return out

    def fuse_inference(self) -> None:
        """Stack the cross-modal experts' parameters (non-persistent buffers, so they follow ``.to()``/``.half()``)."""
        super().fuse_inference()
        kinds = [type(e) for e in self.experts]
        self.first_cross = kinds.index(CrossModalExpert)  # experts are ordered local, global, cross-modal
        cross = self.experts[self.first_cross :]

        def stack(get):
            return torch.stack([get(e).detach() for e in cross])

        self.register_buffer("cross_visual_w", stack(lambda e: e.visual.weight.flatten(1)), persistent=False)
        self.register_buffer("cross_visual_b", stack(lambda e: e.visual.bias), persistent=False)
        self.register_buffer("cross_query", stack(lambda e: e.query), persistent=False)
        self.register_buffer("cross_text_w", stack(lambda e: e.textual.weight), persistent=False)
        self.register_buffer("cross_text_b", stack(lambda e: e.textual.bias), persistent=False)
        self.register_buffer("cross_norm_w", stack(lambda e: e.norm.weight), persistent=False)
        self.register_buffer("cross_norm_b", stack(lambda e: e.norm.bias), persistent=False)
        self.cross_eps, self.cross_scale = cross[0].norm.eps, cross[0].scale

    def _cross_text_bias(self, text: torch.Tensor) -> torch.Tensor:
        """Each cross-modal expert's bias b_V + W_T T_e + b_T, norm weight and norm bias, stacked (N_cross, 3, c2), for
        class text (nc, d)."""
        te = torch.softmax(self.cross_query @ text.T * self.cross_scale, dim=-1) @ text  # (N_cross, d)
        bias = torch.einsum("eod,ed->eo", self.cross_text_w, te) + self.cross_text_b + self.cross_visual_b
        return torch.stack([bias, self.cross_norm_w, self.cross_norm_b], 1)

    def _fused(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Inference: the chosen cross-modal experts as one gathered product, the others on the images that chose
        them. (B, c, H, W) -> (B, c2, H, W)."""
        gate = text_cached(self, "gate", text, self.gate.folded)
        weights, indices, _ = self.gate(feats, text, gate)
        weights = weights.to(feats.dtype)
        record_routing(self, indices)
        b, _, h, w = feats.shape
        per_expert = text_cached(self, "cross", text, self._cross_text_bias)  # (N_cross, 3, c2)
        slot = (indices - self.first_cross).clamp_min(0)  # (B, k): cross-modal expert of each slot (0 if another kind)
        bias, norm_w, norm_b = per_expert[slot].unbind(2)  # (B, k, c2) each
        slot_weight = weights * (indices >= self.first_cross).to(weights.dtype)
        y = feats.flatten(2).transpose(1, 2) @ self.cross_visual_w[slot].flatten(1, 2).transpose(1, 2)  # (B, HW, k*c2)
        y = F.layer_norm(y.view(b, h * w, -1, self.c2) + bias[:, None], (self.c2,), eps=self.cross_eps)
        y = F.silu(y * norm_w[:, None] + norm_b[:, None])  # (B, HW, k, c2): LN(W_F F + W_T T_e) of each chosen expert
        out = (y * slot_weight[:, None, :, None]).sum(2).transpose(1, 2).reshape(b, self.c2, h, w)
        if not is_tracing() and not bool((indices < self.first_cross).any()):
            return out
        for e in range(self.first_cross):  # local and global experts
            per_image = (weights * (indices == e).to(weights.dtype)).sum(1)  # (B,) its weight, 0 if not chosen
            if is_tracing():
                out = out + per_image[:, None, None, None] * self.experts[e](feats, text)
            elif (rows := per_image.nonzero().flatten()).numel():
                y_e = self.experts[e](feats[rows], text) * per_image[rows, None, None, None]
                out = out.index_add(0, rows, y_e.to(out.dtype))
        return out

    @staticmethod
    def keep_idle_in_graph() -> bool:
        """True under torch.distributed, where a static-graph DDP needs every parameter in every step's graph."""
        return dist.is_available() and dist.is_initialized()
