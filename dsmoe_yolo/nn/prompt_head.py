"""Open-vocabulary detection head: the class prompts are the classifier.

``PromptDetect`` is Ultralytics' ``WorldDetect`` (stock box branch ``cv2``, DFL, anchors, decoding; class branch
``cv3`` ending in a ``c_text``-wide embedding per anchor, scored by ``BNContrastiveHead``/``ContrastiveHead``) fed by
the model's own ``ClassText`` row instead of CLIP features held by a ``WorldModel``:

    score[b, c, a] = exp(s_l) * <norm_l(e_l[b, :, a]), T[c] / |T[c]|> + b_l      per level l

with ``e_l = cv3_l(P_l)`` (B, c_text, H_l, W_l), ``T`` the refined class text (nc, c_text) that the DS-MoE stages
(hyperbolic alignment, space broadcasting, the gate) also read, and ``norm_l`` BatchNorm (``with_bn``, YOLO-World v2's
choice) or L2 normalisation. No weight of the head depends on the class count: the number and identity of the classes
come from the prompts bound to ``ClassText`` at run time (``set_classes``), and a checkpoint's head transfers whole to a
dataset with other classes. Not in the paper (its head is a closed-set YOLOv8 ``Detect``): a project extension.

Trained visual path (``visual > 0``): the head also holds ``visual_proj``, a (c_text -> c_text) linear map, identity at
start, that turns a box's pooled embedding into a class-text row; during training each forward leaves the normalised
per-anchor embeddings and ``T`` in ``aux_outputs`` for the alignment term (``dsmoe_yolo.visual_training``, weight
``visual``). Visual prompts on such a model are projected (``dsmoe_yolo.visual_prompts``). Not part of any exported
graph: prototypes are computed when the prompts are set and stored as rows of ``T``. Off in the shipped YAMLs: measured
on an unseen NEU-DET class it made visual prompts worse than the untrained pooled mean (docs/results.md).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.head import WorldDetect

from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, is_tracing

__all__ = ("PromptDetect",)


class PromptDetect(WorldDetect, YAMLLayer):
    """Detect head whose class scores are similarities of per-anchor embeddings with the class text.

    YAML: ``[[P3, P4, P5, t], 1, PromptDetect, [nc]]`` with ``t`` the ``ClassText`` row; its width is the embedding
    width of the head.

    Args:
        c1 (list[int]): Channels of the detection levels, then of the class text (its width ``c_text``).
        nc (int): Number of classes at build time (the prompts decide it afterwards).
        with_bn (bool): BatchNorm contrastive head (True) or L2-normalised cosine (False).
        reg_max (int): DFL bins, as ``Detect``.
        visual (float): Weight of the trained visual path's alignment term; > 0 adds ``visual_proj`` (module docstring).
        visual_target (str): What the term compares a box with: ``"text"`` (its class's text row) or ``"prototypes"``
            (its class's boxes in the other images of the batch); ``dsmoe_yolo.visual_training``.

    Examples:
        >>> head = PromptDetect([32, 64, 128, 16], nc=3)
        >>> x = [torch.randn(1, 32, 8, 8), torch.randn(1, 64, 4, 4), torch.randn(1, 128, 2, 2), torch.randn(5, 16)]
        >>> head.train()(x)["scores"].shape  # five prompts: five classes
        torch.Size([1, 5, 84])
    """

    multi_input = True
    text_inputs = (3,)

    def __init__(
        self,
        c1: list[int],
        nc: int = 80,
        with_bn: bool = True,
        reg_max: int = 16,
        visual: float = 0.0,
        visual_target: str = "text",
    ):
        if len(c1) < 2:
            raise ValueError(f"PromptDetect takes the detection levels then the ClassText row, got {len(c1)} input(s)")
        if not isinstance(visual, (int, float)) or visual < 0:
            raise ValueError(f"PromptDetect visual={visual!r}: the visual alignment weight must be a number >= 0")
        if visual_target not in ("text", "prototypes"):
            raise ValueError(f"PromptDetect visual_target={visual_target!r}: use 'text' or 'prototypes'")
        *ch, c_text = c1
        # built for one class so that no layer width depends on the class count (stock sizes cv3 by nc up to 100)
        super().__init__(nc=1, embed=c_text, with_bn=with_bn, reg_max=reg_max, ch=tuple(ch))
        self.nc, self.no = nc, nc + reg_max * 4
        self.visual, self.visual_target = float(visual), visual_target
        if visual > 0:
            self.visual_proj = nn.Linear(c_text, c_text)
            nn.init.eye_(self.visual_proj.weight)  # untrained, it is the pooled prototype itself
            nn.init.zeros_(self.visual_proj.bias)

    def forward(self, x: list):
        """Levels ``x[:-1]`` (B, C_l, H_l, W_l) and class text ``x[-1]`` (nc, c_text) -> ``WorldDetect`` outputs."""
        *feats, text = x
        if text.ndim != 2:
            raise ValueError(f"PromptDetect expects class text of shape (nc, dim), got {tuple(text.shape)}")
        if not is_tracing():  # exported graphs keep the prompts they were traced with
            self.nc = int(text.shape[0])
        if not (self.training and getattr(self, "visual_proj", None) is not None):
            return super().forward(feats, text[None].expand(feats[0].shape[0], -1, -1))
        with captured_outputs(self.embedding_layers()) as embeds:
            out = super().forward(feats, text[None].expand(feats[0].shape[0], -1, -1))
        levels = [embeds[i] if hasattr(self.cv4[i], "norm") else F.normalize(embeds[i], dim=1) for i in range(self.nl)]
        aux_outputs(self)["visual"] = (levels, text)
        return out

    def embedding_layers(self) -> list[nn.Module]:
        """Per level, the layer whose output is the embedding the class text is compared with: the contrastive head's
        BatchNorm (``with_bn``), else the class branch (its output is L2-normalised by ``ContrastiveHead``)."""
        return [c.norm if hasattr(c, "norm") else b for b, c in zip(self.cv3, self.cv4)]


@contextmanager
def captured_outputs(modules: list[nn.Module]):
    """While open, ``{i: latest forward output of modules[i]}`` (forward hooks, removed on exit)."""
    store: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(module, inputs, output):
            store[i] = output

        return hook

    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for h in hooks:
            h.remove()
