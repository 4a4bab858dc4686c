"""DS-MoE detection losses: QFocal + CIoU (row F, the full model) or BCE + IoU (ablation rows A-E), each + DFL + MoE
load balance (+ optional alignment terms).

Selected by a model YAML's top-level ``loss:`` key, read by the plugin's ``DetectionModel.init_criterion`` hook, so
the stock trainer and the validator's lazily built criterion (on the EMA copy) both use it. Without the key the
stock ``v8DetectionLoss`` is used, unchanged.

    loss: qfocal_ciou                      # defaults below
    loss: {type: qfocal_ciou, alpha: 0.25, gamma: 1.5, cls_scale: 16.0, moe: 0.01, balance: cv2, align: 0.5, hyp_angle: 0.0, hyp_order: 0.03}
    loss: bce_iou                          # the paper's "CE + IoU" of ablation rows A-E (cls_scale 1, no alpha/gamma)

=============  ===========================================================================================
term           definition
=============  ===========================================================================================
``box_loss``   qfocal_ciou: 1 - CIoU on TAL-assigned boxes (Ultralytics' ``BboxLoss``); bce_iou: 1 - IoU (plain
               IoU, ``IoUBboxLoss``); gain ``box`` (train arg)
``cls_loss``   qfocal_ciou: Quality Focal Loss on TAL's soft (IoU-aware) targets: BCE(x, y) |y - sigmoid(x)|^gamma
               (y alpha + (1 - y)(1 - alpha)) as YOLOv5's ``QFocalLoss`` (Li et al. 2020); bce_iou: per-class
               sigmoid cross-entropy (the multi-label form of the paper's "CE", Ultralytics' stock BCE) on the same
               targets; gain ``cls`` x ``cls_scale``
``dfl_loss``   Distribution Focal Loss as YOLOv8, gain ``dfl``
``moe_loss``   load balance of every SparseMoE: CV^2 of expert importance (Shazeer et al. 2017) and/or the
               Switch-Transformer load term N sum_i f_i P_i - 1 (both 0 for uniform routing), weight ``moe``
``align_loss`` 1 - cos(GAP E, GAP Y) from DifferentiableAggregation, weight ``align`` (listed if > 0 and the model has the layer)
``hyp_loss``   hyperbolic angle + ordering terms from HyperbolicAlign, weights ``hyp_angle``/``hyp_order``; the
               ordering term (Eq. 12) exists only when the prompt file gives a class ``hierarchy``
=============  ===========================================================================================

Auxiliary weights (the paper gives none), decided by one short measurement: DS-MoE-n after 2 epochs on neu-det-mini
(224 px, batch 8, seed 0, the bundled prompts and hierarchy), 3 batches of 8 training images, each term's raw value and
the norm of its gradient against the detection loss's (box + cls + dfl, with their gains) on the parameters it touches:

- ``align`` (Eq. 27, stage 10): raw 0.69 (E and Y far from aligned), gradient 0.107x the detection gradient at weight 1.
  Default 0.5: the paper's constraint acts (about 5 % of the detection gradient) without competing with detection.
- ``hyp_angle`` (Eq. 13): raw 0.003, gradient 0.14x at weight 1: the linear text map already keeps the class-text
  angles, so the term has nothing to correct. Default 0 (off); set it if a different text map distorts them.
- ``hyp_order`` (Eq. 12): 0 at margin 0.1 (every class anchor sat at the ball's clamp, d(0, a) = 6.21, the group centres
  at 5.72 and 5.86); with every pair violated its gradient is 3.9x the detection gradient at weight 1. Default 0.03
  (about 10 % when it acts); it only exists when the prompt file gives a ``hierarchy:``.

These are gradient scales, not accuracy: the mAP effect of each term was not measurable on the 2-core machine (16
validation images, mAP 0 after 10 epochs at 160 px); the GPU ablation should confirm or revise them.

``bce_iou`` (ablation rows A-E): the paper trains rows A-E with "CE + IoU" and only row F with QFocal + CIoU. DFL
stays in both: the YOLOv8 head regresses each box side as a distribution over ``reg_max`` bins, and without DFL
those bins get no direct target (the IoU term alone trains them only through the expectation). The MoE balance and
alignment terms are the same in both, so rows E -> F differ only in the classification and box terms.

``cls_scale`` (a project choice; the paper gives no weights): Ultralytics' ``cls`` gain (0.5) is tuned for BCE, and
QFocal's alpha and |y - sigmoid(x)|^gamma factors make it about 11x smaller (train cls_loss after 30 epochs of
DS-MoE-n on deeppcb-mini at the same gain: 0.22 with QFocal, 2.55 with BCE), which starves classification. The default
16 gives an effective gain of 8 with the stock ``cls=0.5``: in 30-epoch DS-MoE-n runs (320 px, seed 0) mAP50-95 went
0.033 -> 0.051 on deeppcb-mini and 0.032 -> 0.058 on neu-det-mini (docs/results.md). On full NEU-DET (lite-n, 60 epochs, seed
0; docs/results.md "Ablations") 8 / 16 / 32 gave mAP50-95 0.326 / 0.335 / 0.302: 16 stays. ``cls_scale: 1`` restores the bare
``cls`` gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.loss import BboxLoss, v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn.base import YAMLLayer, pop_aux_outputs

__all__ = (
    "QualityFocalLoss",
    "DSMoEDetectionLoss",
    "BCEIoUDetectionLoss",
    "IoUBboxLoss",
    "criterion_for",
    "loss_config",
    "cv_squared",
    "switch_balance",
    "moe_balance",
    "AddedTermCriterion",
    "LayerTermCriterion",
    "ciou_loss",
)

COMMON = {"moe": 0.01, "balance": "cv2", "align": 0.5, "hyp_angle": 0.0, "hyp_order": 0.03}  # reasons: module docstring
LOSS_TYPES = {  # type -> its settings and their defaults
    "qfocal_ciou": {"alpha": 0.25, "gamma": 1.5, "cls_scale": 16.0, **COMMON},
    "bce_iou": {"cls_scale": 1.0, **COMMON},  # BCE is what Ultralytics' cls gain is tuned for: no extra scale
}
DEFAULTS = LOSS_TYPES["qfocal_ciou"]


class QualityFocalLoss(nn.Module):
    """Element-wise Quality Focal Loss on soft targets (YOLOv5's ``QFocalLoss`` without its reduction).

    Args:
        alpha (float): Weight of positives (0.25).
        gamma (float): Focusing exponent on |y - sigmoid(x)| (1.5).
        loss_weight (float): Multiplies the loss (1.0); DSMoEDetectionLoss passes ``cls_scale``.

    Examples:
        >>> QualityFocalLoss()(torch.zeros(1, 2), torch.tensor([[0.0, 1.0]])).shape
        torch.Size([1, 2])
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 1.5, loss_weight: float = 1.0):
        super().__init__()
        self.alpha, self.gamma, self.loss_weight = alpha, gamma, float(loss_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the loss of logits ``pred`` against soft targets ``target`` in [0, 1], same shape, no reduction."""
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        prob = pred.sigmoid()
        alpha = target * self.alpha + (1 - target) * (1 - self.alpha)
        return self.loss_weight * bce * alpha * (target - prob).abs().pow(self.gamma)


def ciou_loss(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor) -> torch.Tensor:
    """1 - CIoU per box pair (N, 4) xyxy: the box term of the loss (as Ultralytics' ``BboxLoss``)."""
    return 1.0 - bbox_iou(pred_xyxy, target_xyxy, xywh=False, CIoU=True).squeeze(-1)


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation var(x) / mean(x)^2: 0 for a uniform vector (Shazeer et al. 2017)."""
    x = x.float()
    return x.var(unbiased=False) / (x.mean() ** 2 + 1e-10)


def switch_balance(probs: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load term N * sum_i f_i P_i - 1 (0 for uniform routing), f from ``load``, P from ``probs``."""
    n = probs.shape[-1]
    f = load.float() / load.sum().clamp_min(1)
    return n * (f * probs.float().mean(0)).sum() - 1


def moe_balance(probs: torch.Tensor, load: torch.Tensor, kind: str = "cv2") -> torch.Tensor:
    """Load-balance term of one MoE layer from its gate probabilities (B, N) and selections per expert (N,):
    ``cv2`` (importance), ``switch`` or ``both`` (their sum); 0 for uniform routing."""
    term = probs.new_zeros(())
    if kind in ("cv2", "both"):
        term = term + cv_squared(probs.sum(0))
    if kind in ("switch", "both"):
        term = term + switch_balance(probs, load)
    return term


def loss_config(yaml: dict) -> dict | None:
    """Parse a model YAML's ``loss:`` key into the loss settings, or None if absent.

    Raises:
        ConfigError: For an unknown loss type or setting.
    """
    spec = yaml.get("loss") if isinstance(yaml, dict) else None
    if spec is None:
        return None
    spec = {"type": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("type", None)
    if kind not in LOSS_TYPES:
        raise ConfigError(
            f"model YAML 'loss: {kind}' is unknown; use one of {tuple(LOSS_TYPES)}, or remove the key for the stock loss"
        )
    defaults = LOSS_TYPES[kind]
    unknown = set(spec) - set(defaults)
    if unknown:
        raise ConfigError(
            f"model YAML 'loss: {kind}' has unknown settings {sorted(unknown)}; valid: {sorted(defaults)}"
        )
    cfg = {"type": kind, **defaults, **spec}
    if cfg["balance"] not in ("cv2", "switch", "both"):
        raise ConfigError(f"loss balance '{cfg['balance']}' must be cv2, switch or both")
    for k in set(cfg) - {"type", "balance"}:
        if not isinstance(cfg[k], (int, float)) or cfg[k] < 0:
            raise ConfigError(f"loss setting {k}={cfg[k]!r} must be a non-negative number")
    return cfg


def criterion_for(model) -> DSMoEDetectionLoss | None:
    """The DS-MoE criterion for a model whose YAML has ``loss:``, else None (the caller uses the stock loss)."""
    cfg = loss_config(getattr(model, "yaml", None) or {})
    if cfg is None:
        return None
    kind = cfg.pop("type")
    return DSMoEDetectionLoss(model, **cfg) if kind == "qfocal_ciou" else BCEIoUDetectionLoss(model, **cfg)


class IoUBboxLoss(BboxLoss):
    """Ultralytics' ``BboxLoss`` with plain IoU instead of CIoU: (1 - IoU) weighted by the TAL scores, plus DFL."""

    def forward(
        self,
        pred_dist,
        pred_bboxes,
        anchor_points,
        target_bboxes,
        target_scores,
        target_scores_sum,
        fg_mask,
        imgsz,
        stride,
    ):
        """Return (IoU loss, DFL loss) as the stock ``BboxLoss`` does (same weighting and normalisation)."""
        _, loss_dfl = super().forward(
            pred_dist,
            pred_bboxes,
            anchor_points,
            target_bboxes,
            target_scores,
            target_scores_sum,
            fg_mask,
            imgsz,
            stride,
        )
        fg = fg_mask.nonzero(as_tuple=True)
        weight = target_scores[fg].sum(-1, keepdim=True)
        iou = bbox_iou(pred_bboxes[fg], target_bboxes[fg], xywh=False)
        return ((1.0 - iou) * weight).sum() / target_scores_sum, loss_dfl


class DSMoEDetectionLoss(v8DetectionLoss):
    """v8 detection loss with QFocal classification and the DS-MoE auxiliary terms (see module docstring).

    Returns, like every Ultralytics criterion, ``(loss_vector * batch_size, {name: detached item})``.
    """

    def __init__(
        self,
        model,
        alpha=0.25,
        gamma=1.5,
        cls_scale=16.0,
        moe=0.01,
        balance="cv2",
        align=0.5,
        hyp_angle=0.0,
        hyp_order=0.03,
        tal_topk=10,
    ):
        super().__init__(model, tal_topk=tal_topk)
        # used element-wise by get_assigned_targets_and_loss on TAL soft targets; cls_scale stacks on the train arg cls
        self.bce = QualityFocalLoss(alpha, gamma, loss_weight=cls_scale)
        self.weights = {"moe": moe, "align": align, "hyp_angle": hyp_angle, "hyp_order": hyp_order}
        self.balance = balance
        self.aux_layers = [m for m in model.modules() if isinstance(m, YAMLLayer)]
        self.has_moe = any(type(m).__name__ == "SparseMoE" for m in self.aux_layers)
        extra = ["moe_loss"] if self.has_moe else []
        has_align = align > 0 and any(type(m).__name__ == "DifferentiableAggregation" for m in self.aux_layers)
        extra += ["align_loss"] if has_align else []
        has_order = hyp_order > 0 and any(getattr(m, "has_hierarchy", False) for m in self.aux_layers)
        extra += ["hyp_loss"] if hyp_angle > 0 or has_order else []
        self.loss_names = (*self.loss_names, *extra)

    @property
    def cls_scale(self) -> float:
        """Factor on the QFocal term on top of the train arg ``cls`` (module docstring)."""
        return self.bce.loss_weight

    def auxiliary_terms(self) -> dict[str, torch.Tensor]:
        """Weighted auxiliary terms from the layers' latest forward (consumed: each forward's aux is read once)."""
        zero = torch.zeros((), device=self.device)
        moe, align, hyp = zero, zero, zero
        for m in self.aux_layers:
            aux = pop_aux_outputs(m)
            if "moe_probs" in aux:
                moe = moe + moe_balance(aux["moe_probs"], aux["moe_load"], self.balance)
            if "align" in aux:
                align = align + aux["align"]
            if "hyp_angle" in aux:
                hyp = hyp + self.weights["hyp_angle"] * aux["hyp_angle"]
            if "hyp_order" in aux:
                hyp = hyp + self.weights["hyp_order"] * aux["hyp_order"]
        terms = {}
        if "moe_loss" in self.loss_names:
            terms["moe_loss"] = self.weights["moe"] * moe
        if "align_loss" in self.loss_names:
            terms["align_loss"] = self.weights["align"] * align
        if "hyp_loss" in self.loss_names:
            terms["hyp_loss"] = hyp
        return {k: v.to(self.device).float().reshape(()) for k, v in terms.items()}

    def loss(
        self, preds: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detection terms from the stock pipeline (with QFocal) plus the auxiliary terms."""
        batch_size = preds["boxes"].shape[0]
        _, det, items = self.get_assigned_targets_and_loss(preds, batch)
        extra = self.auxiliary_terms()
        total = torch.cat([det, torch.stack(list(extra.values()))]) if extra else det
        items = {**items, **{k: v.detach() for k, v in extra.items()}}
        return total * batch_size, items


class BCEIoUDetectionLoss(DSMoEDetectionLoss):
    """Ablation rows A-E: per-class BCE (the stock term, x ``cls_scale``) + plain-IoU box + DFL + the same auxiliary
    terms as the full loss (module docstring)."""

    def __init__(
        self, model, cls_scale=1.0, moe=0.01, balance="cv2", align=0.5, hyp_angle=0.0, hyp_order=0.03, tal_topk=10
    ):
        super().__init__(
            model,
            cls_scale=cls_scale,
            moe=moe,
            balance=balance,
            align=align,
            hyp_angle=hyp_angle,
            hyp_order=hyp_order,
            tal_topk=tal_topk,
        )
        self.bce = ScaledBCE(cls_scale)
        self.bbox_loss = IoUBboxLoss(self.bbox_loss.dfl_loss.reg_max if self.bbox_loss.dfl_loss else 1).to(self.device)


class ScaledBCE(nn.Module):
    """Element-wise sigmoid cross-entropy times ``loss_weight`` (Ultralytics' ``BCEWithLogitsLoss(reduction="none")``)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE of logits ``pred`` against targets in [0, 1], same shape, no reduction."""
        return self.loss_weight * F.binary_cross_entropy_with_logits(pred, target, reduction="none")


class AddedTermCriterion:
    """Wraps a detection criterion and appends one named term to its loss vector and items.

    Subclasses set ``name`` and implement ``term(batch)``: the weighted term (a 0-dim tensor) from what the layers
    recorded in their latest forward, or None when nothing was recorded (an evaluation forward: the validator's loss).
    It is read before the inner criterion runs, because the DS-MoE criteria clear every layer's auxiliary outputs.
    """

    name = "term"

    def __init__(self, inner):
        self.inner = inner

    def term(self, batch) -> torch.Tensor | None:
        raise NotImplementedError

    def __call__(self, preds, batch):
        term = self.term(batch)
        loss, items = self.inner(preds, batch)
        term = torch.zeros((), device=loss.device) if term is None else term.to(loss.device)
        batch_size = len(batch["img"]) if "img" in batch else 1
        total = torch.cat([loss.reshape(-1), (term * batch_size).reshape(1).to(loss.dtype)])
        return total, {**items, self.name: term.detach()}

    def __getattr__(self, name):
        if name == "inner":  # unpickling: before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.inner, name)


class LayerTermCriterion(AddedTermCriterion):
    """An ``AddedTermCriterion`` whose term is the sum over ``layers`` of ``layer_term(layer, aux)``, each layer's
    recorded auxiliary outputs read (and cleared) once per loss; None when no layer recorded anything."""

    def __init__(self, inner, layers):
        super().__init__(inner)
        self.layers = list(layers)

    def layer_term(self, layer, aux: dict) -> torch.Tensor | None:
        """One layer's weighted part from its auxiliary outputs ``aux``, or None if it recorded none."""
        raise NotImplementedError

    def term(self, batch):
        term = None
        for layer in self.layers:
            part = self.layer_term(layer, pop_aux_outputs(layer))
            if part is not None:
                term = part if term is None else term + part
        return term
