"""Stages 7+8: sparse mixture of experts routed per image by the text-visual gate.

    Y = sum over the kept k experts e of  g_e * E_e(F, T)        (g renormalised over the kept k)

Experts (``experts.py``): ``n_local`` local anisotropic, ``n_global`` global pyramid, the rest cross-modal (the
paper: one local, one global, N-2 cross-modal). Dispatch follows Mixtral's block: in eager mode only experts that
received an image run, each on its images only (``index_add_``), so compute scales with k, not N. While tracing
for export (or with ``dense=True``) every expert runs on the whole batch and a top-k weight mask zeroes the others:
the same output, a static graph.

Auxiliary outputs (``aux_outputs``), read by the loss and the routing report: ``moe_probs`` (B, N) full gate
softmax (differentiable, for the CV^2 importance balance loss), ``moe_load`` (N,) selections per expert,
``moe_indices`` (B, k) chosen experts (detached).

Distributed training with a static graph (``compile=True`` under DDP) needs every parameter in every step's graph: the
layer then adds the idle experts' parameters times zero (``keep_idle_in_graph``), which costs a sum, not their compute.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, is_tracing, record_routing
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
        c, d = c1
        self.gate = ExpertGate(c, d, experts, top_k, hidden, tau, noise, heads)
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

    @staticmethod
    def keep_idle_in_graph() -> bool:
        """True under torch.distributed, where a static-graph DDP needs every parameter in every step's graph."""
        return dist.is_available() and dist.is_initialized()
