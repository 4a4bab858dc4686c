"""The trained visual path: a term that teaches the head to turn example boxes into class rows.

A visual prompt's prototype is pooled from the head's own per-anchor embeddings inside example boxes
(``dsmoe_yolo.visual_prompts``). On a head built with ``visual > 0`` (``PromptDetect``) every training batch adds
``vis_loss = visual * CE(logits_g, c_g)`` over the batch's ground-truth boxes g (class c_g), where

    v_g = normalize(P(normalize(pool_g)))

``pool_g`` is the mean of the normalised per-anchor embeddings whose anchor centres lie inside box g on every level
(the same pooling as a visual prompt at inference) and ``P`` the head's ``visual_proj`` (identity at start). The
logits compare ``v_g`` with one row per class, scaled by ``TEMPERATURE``; the head's ``visual_target`` picks the rows:

- ``"text"``: the class text rows ``T_c / |T_c|`` (detached: the detection loss alone trains the text path), so a
  box's projected embedding must pick its own class's text: ``P`` learns to map boxes where their text lies;
- ``"prototypes"``: for each class, the normalised mean of ``v`` over the boxes of that class in the *other* images of
  the batch (prototypical networks, Snell et al. 2017): a box must be nearest to its class's prototype drawn from
  other images, which is what a visual prompt asks at inference. Classes without a box in another image are left out
  of a box's logits; a box whose own class has none is skipped.

The gradient also reaches the embeddings, which learn to be class-discriminative per box. Boxes that cover no anchor
centre are skipped. A project extension in the spirit of YOLOE's trained visual prompt encoder (SAVPE), much smaller:
one linear map, no separate branch.

The criterion wrapper adds ``vis_loss`` to whatever criterion the model has (stock, DS-MoE, masked for several
datasets); in evaluation forwards (the validator's loss) it is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsmoe_yolo.loss import AddedTermCriterion
from dsmoe_yolo.nn.base import pop_aux_outputs
from dsmoe_yolo.visual_prompts import pool_boxes

__all__ = ("TEMPERATURE", "TARGETS", "visual_alignment_loss", "VisualAlignCriterion", "visual_criterion")

TEMPERATURE = 10.0  # logits = 10 x cosine: cos 0.5 to its row, 0 to five others, gives p = 0.97
TARGETS = ("text", "prototypes")  # what a box is compared with (module docstring)


def visual_alignment_loss(
    levels: list[torch.Tensor],
    text: torch.Tensor,
    proj: torch.nn.Module,
    batch: dict,
    strides: list[float],
    target: str = "text",
) -> torch.Tensor:
    """The unweighted term of the module docstring (a 0-dim tensor; 0 if no box can be scored).

    Args:
        levels: Per level, normalised per-anchor embeddings (B, C, H_l, W_l) of the training batch.
        text: Class text ``T`` (nc, C).
        proj: The head's ``visual_proj`` (C -> C).
        batch: The trainer's batch: ``batch_idx`` (n,), ``cls`` (n, 1), ``bboxes`` (n, 4) normalised xywh.
        strides: Per level, pixels per anchor.
        target: ``"text"`` or ``"prototypes"`` (module docstring).
    """
    h, w = levels[0].shape[2] * strides[0], levels[0].shape[3] * strides[0]
    device = levels[0].device
    xywh = batch["bboxes"].to(device, torch.float32) * torch.tensor([w, h, w, h], device=device)
    boxes = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
    index, cls = batch["batch_idx"].to(device).long(), batch["cls"].to(device).view(-1).long()
    pooled, labels, images = [], [], []
    for b in index.unique().tolist():
        mine = index == b
        sums, counts = pool_boxes([e[b] for e in levels], boxes[mine], strides)
        kept = counts > 0
        pooled.append(sums[kept] / counts[kept, None])
        labels.append(cls[mine][kept])
        images.append(torch.full((int(kept.sum()),), b, device=device))
    none = levels[0].sum() * 0.0  # keeps the graph when no box can be scored
    if not pooled or not sum(len(p) for p in pooled):
        return none
    v = F.normalize(proj(F.normalize(torch.cat(pooled), dim=1)), dim=1)
    labels = torch.cat(labels)
    if target == "text":
        return F.cross_entropy(TEMPERATURE * v @ F.normalize(text.detach().float(), dim=1).T, labels)
    logits, valid = _prototype_logits(v, labels, torch.cat(images))
    classes = labels.unique()
    own = (labels[:, None] == classes[None]).float().argmax(1)  # each box's class as a column of ``logits``
    scored = valid[torch.arange(len(v), device=device), own]
    if not scored.any():
        return none
    logits = logits.masked_fill(~valid, float("-inf"))[scored]
    return F.cross_entropy(logits, own[scored])


def _prototype_logits(v: torch.Tensor, labels: torch.Tensor, images: torch.Tensor):
    """``(logits (n, K), valid (n, K))``: each box against each class's prototype from the other images' boxes
    (K = the classes present); ``valid`` is False where a class has no box outside the box's own image."""
    classes = labels.unique()
    member = (labels[:, None] == classes[None]).to(v.dtype)  # (n, K)
    same_image = (images[:, None] == images[None]).to(v.dtype)  # (n, n)
    total, count = member.T @ v, member.sum(0)  # (K, C), (K,)
    own_sum = torch.einsum("gh,hk,hc->gkc", same_image, member, v)  # (n, K, C): the box's own image's share
    own_count = same_image @ member  # (n, K)
    left = count[None] - own_count
    prototypes = F.normalize((total[None] - own_sum) / left.clamp(min=1)[..., None], dim=2)
    return TEMPERATURE * torch.einsum("gc,gkc->gk", v, prototypes), left > 0


class VisualAlignCriterion(AddedTermCriterion):
    """Wraps a detection criterion: adds ``vis_loss`` (module docstring), read from the head's latest forward."""

    name = "vis_loss"

    def __init__(self, inner, head):
        super().__init__(inner)
        self.head = head

    def term(self, batch):
        aux = pop_aux_outputs(self.head).get("visual")
        if aux is None:  # an evaluation forward: no embeddings were kept
            return None
        levels, text = aux
        target = getattr(self.head, "visual_target", "text")
        return self.head.visual * visual_alignment_loss(
            levels, text, self.head.visual_proj, batch, self.head.stride.tolist(), target
        )


def visual_criterion(criterion, model):
    """``criterion`` wrapped in ``VisualAlignCriterion`` when ``model``'s head trains a visual path, else unchanged."""
    head = model.model[-1]
    return VisualAlignCriterion(criterion, head) if getattr(head, "visual_proj", None) is not None else criterion
