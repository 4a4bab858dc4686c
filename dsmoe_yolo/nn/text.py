"""Stage 2: class text embeddings held by the model and refined by self-attention ("semantic distillation").

``ClassText`` is the model's text node. It holds the frozen-LLM class embeddings ``T0`` as a buffer of shape
``(nc, embed_dim)`` (bound by the text pipeline, saved in every checkpoint) and outputs the refined class
embeddings ``T`` of shape ``(nc, c2)`` that the text-guided layers take as one of their inputs (``from: [..., t]``).

Adopted formulation (PAPER.md stage 2), with one departure said here: ``T0`` is first projected to the model's text
width ``c2`` (Linear + LayerNorm); the self-attention then runs at ``c2``. The paper runs it at the LLM width (1536
for DeepSeek-R1-Distill-Qwen-1.5B), which would make this one layer ~9.4 M parameters.

    T0' = LN(W T0) + s * PE(class index)        PE: sinusoidal, s: learnable scale
    T   = LN(T0' + MHA(T0', T0', T0'))

A class given by example boxes (a visual prompt, ``set_visual``) takes the prototype computed from the model's own head
embeddings inside the boxes as its row of ``T`` (scaled to the text rows' length), or, given by text and boxes, the
normalised sum of both; every stage downstream and the head then read it like a text row.

``index_encoding`` (default on, the paper's form) adds ``PE(class index)``. It ties each class to its row, so the
open-vocabulary models (``PromptDetect`` head, ``cfg/models/dsmoe-ov-*.yaml``) switch it off: without it ``T`` depends
only on the prompts (self-attention is permutation-equivariant), so prompts given in another order give the same
class vectors in the new order, and a class is what its text says.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, text_cached

__all__ = ("ClassText", "pair_cosines", "row_overlap", "sinusoidal_encoding")


def sinusoidal_encoding(n: int, dim: int) -> torch.Tensor:
    """Return the (n, dim) sinusoidal encoding of positions 0..n-1 (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def pair_cosines(t: torch.Tensor) -> torch.Tensor:
    """Cosines of the distinct row pairs i < j of (n, c) rows ``t``: (n (n - 1) / 2,).

    Examples:
        >>> pair_cosines(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])).round(decimals=3)
        tensor([0.7070, 0.0000, 0.7070])
    """
    unit = torch.nn.functional.normalize(t.float(), dim=-1)
    i, j = torch.triu_indices(len(t), len(t), offset=1, device=t.device)
    return (unit @ unit.T)[i, j]


def row_overlap(t: torch.Tensor) -> torch.Tensor:
    """Mean over class pairs i < j of max(0, cos(T_i, T_j)) for rows T (nc >= 2, c): 0 when no two rows point alike.

    Examples:
        >>> row_overlap(torch.eye(3))
        tensor(0.)
        >>> row_overlap(torch.ones(2, 4))
        tensor(1.)
    """
    return pair_cosines(t).clamp_min(0).mean()


class ClassText(YAMLLayer):
    """The model's class-text node: frozen class embeddings in, refined class embeddings (nc, c2) out.

    YAML: ``[-1, 1, ClassText, [256, nc, 384, 4]]`` (text width, classes, embedding width of the frozen encoder,
    attention heads). The row's input is ignored: text does not depend on the image.

    Args:
        c1 (int): Channels of the ignored input.
        c2 (int): Text width of the model (width-scaled by the builder).
        nc (int): Number of classes.
        embed_dim (int): Width of the frozen encoder's embeddings (384 for all-MiniLM-L6-v2, 1536 for
            DeepSeek-R1-Distill-Qwen-1.5B). Binding embeddings of another width rebuilds the input projection.
        heads (int): Attention heads; must divide ``c2``.
        index_encoding (bool): Add the sinusoidal class-index encoding (off for open-vocabulary models).
        spread (float): Weight of the class-row spread term while training (``dsmoe_yolo.text_spread``; 0: none).

    Attributes:
        embeddings (Tensor): (nc, embed_dim) buffer of frozen class embeddings, saved in checkpoints.
        text_meta (dict): Provenance of the bound embeddings (encoder id, prompt hash, class names); empty if unbound.

    Examples:
        >>> t = ClassText(64, 32, nc=3, embed_dim=16, heads=4)
        >>> t.bind(torch.randn(3, 16), {"names": ["a", "b", "c"]})
        >>> t(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([3, 32])
    """

    yaml_channels = "declared"
    produces_text = True
    index_encoding: bool = True  # class default: checkpoints of earlier versions had it always on
    spread: float = 0.0  # class default: checkpoints of earlier versions have no spread term

    def __init__(
        self,
        c1: int,
        c2: int,
        nc: int = 80,
        embed_dim: int = 384,
        heads: int = 4,
        index_encoding: bool = True,
        spread: float = 0.0,
    ):
        super().__init__()
        if c2 % heads:
            raise ValueError(f"ClassText width {c2} must be divisible by heads={heads}; change heads or the width")
        if nc < 1 or embed_dim < 1:
            raise ValueError(f"ClassText needs nc >= 1 and embed_dim >= 1, got nc={nc}, embed_dim={embed_dim}")
        if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread >= 0:
            raise ValueError(f"ClassText spread={spread!r} must be a non-negative number (0 adds no term)")
        self.c2, self.heads = c2, heads
        self.register_buffer("embeddings", torch.zeros(nc, embed_dim))
        self.proj = nn.Sequential(nn.Linear(embed_dim, c2), nn.LayerNorm(c2))
        if index_encoding:  # no parameter without a use (DDP's unused-parameter check, optimizer groups)
            self.pos_scale = nn.Parameter(torch.tensor(0.1))
        self.attn = nn.MultiheadAttention(c2, heads, batch_first=True)
        self.norm = nn.LayerNorm(c2)
        self.text_meta: dict = {}
        self.index_encoding = bool(index_encoding)
        self.spread = float(spread)

    @property
    def nc(self) -> int:
        """Number of classes the embeddings cover."""
        return self.embeddings.shape[0]

    @property
    def embed_dim(self) -> int:
        """Width of the frozen encoder's embeddings."""
        return self.embeddings.shape[1]

    @property
    def is_bound(self) -> bool:
        """True once real class embeddings are bound."""
        return bool(self.text_meta)

    def bind(self, embeddings: torch.Tensor, meta: dict) -> None:
        """Bind frozen class embeddings (nc, D) and their provenance.

        A different class count resizes the buffer. On a model that has never been bound (fresh from its YAML), a
        different width D rebuilds the input projection; binding happens before the optimizer is built, so it trains.
        On a model already bound (trained) it is an error: its projection was trained for the old encoder.

        Raises:
            ConfigError: If ``embeddings`` is not a finite 2-D tensor, or its width differs from a trained model's.
        """
        if embeddings.ndim != 2 or not torch.isfinite(embeddings).all():
            raise ConfigError(
                f"class embeddings must be a finite (nc, dim) tensor, got shape {tuple(embeddings.shape)}"
            )
        ref = self.proj[0].weight
        if embeddings.shape[1] != self.embed_dim:
            if self.is_bound:
                raise ConfigError(
                    f"class embeddings are {embeddings.shape[1]}-dim but this model was trained with {self.embed_dim}-dim text "
                    f"from '{self.text_meta.get('encoder')}'; embed with that encoder (text_encoder={self.text_meta.get('encoder')}) "
                    f"or start from the model YAML"
                )
            self.proj[0] = nn.Linear(embeddings.shape[1], self.c2).to(ref.device, ref.dtype)
        self.embeddings = embeddings.detach().to(self.embeddings.device, self.embeddings.dtype).clone()
        self.text_meta = dict(meta)
        self.set_visual(None, None)  # visual rows belong to the class set they were made for

    @property
    def has_visual(self) -> bool:
        """True if some classes are given by example boxes (``set_visual``)."""
        return getattr(self, "visual_mode", None) is not None and bool((self.visual_mode > 0).any())

    def set_visual(self, prototypes: torch.Tensor | None, mode: torch.Tensor | None) -> None:
        """Class rows from example boxes (visual prompts), or none.

        Args:
            prototypes: (nc, c2) unit vectors in the head's embedding space (``dsmoe_yolo.visual_prompts``).
            mode: (nc,) per class: 0 text only, 1 boxes only (the row is the prototype), 2 both (the normalised sum of
                the text row and the prototype).
        """
        for name in ("visual", "visual_mode"):
            if name in self._buffers:
                del self._buffers[name]
        if prototypes is not None:
            if prototypes.shape != (self.nc, self.c2) or mode is None or mode.shape != (self.nc,):
                raise ConfigError(
                    f"visual prototypes must be ({self.nc}, {self.c2}) with a ({self.nc},) mode, "
                    f"got {tuple(prototypes.shape)} and {None if mode is None else tuple(mode.shape)}"
                )
            self.register_buffer("visual", prototypes.detach().to(self.embeddings.device, torch.float32).clone())
            self.register_buffer("visual_mode", mode.detach().to(self.embeddings.device, torch.int8).clone())
        self.embeddings = self.embeddings.clone()  # a new tensor: fused layers recompute what they derive from T

    def forward(self, x=None) -> torch.Tensor:
        """Return refined class embeddings T: (nc, c2). The input is ignored.

        Fused for inference, T is computed once per bound embeddings and the same tensor is returned on every call,
        which lets the text-guided layers downstream reuse what they derive from it (``text_cached``).
        """
        t = text_cached(self, "refined", self.embeddings, self.refine)
        if self.training and self.spread > 0 and len(t) > 1:
            aux_outputs(self)["text_spread"] = row_overlap(t)
        return t

    def refine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """T (nc, c2) = LN(T0' + MHA(T0')) of the frozen embeddings T0 (nc, embed_dim)."""
        t0 = self.proj(embeddings)
        if self.index_encoding:
            t0 = t0 + self.pos_scale * sinusoidal_encoding(len(embeddings), self.c2).to(t0.device, t0.dtype)
        attended, _ = self.attn(t0[None], t0[None], t0[None], need_weights=False)
        t = self.norm(t0 + attended[0])
        if getattr(self, "visual_mode", None) is None:
            return t
        scale = t.norm(dim=-1, keepdim=True)  # visual rows get the text rows' length: the stages read magnitudes
        visual = self.visual.to(t.dtype)
        both = torch.nn.functional.normalize(torch.nn.functional.normalize(t, dim=-1) + visual, dim=-1)
        mode = self.visual_mode.to(torch.long)[:, None]
        return torch.where(mode == 1, visual * scale, torch.where(mode == 2, both * scale, t))
