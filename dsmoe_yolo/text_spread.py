"""A term that keeps the class-text rows apart while a model trains (issue 32, campaign step 14).

Fine-tuning the open-vocabulary start on 40 DeepPCB images pulled its classes' refined text rows together (mean
pairwise cosine 0.58 -> 0.84; open and short 0.97): one classifier for "a PCB defect", so the head finds defects but
names them poorly (docs/results.md, step 13). A ClassText row with ``spread: w`` adds, to whatever criterion the
model has,

    text_loss = w * mean over class pairs i < j of max(0, cos(T_i, T_j))        (``nn.text.row_overlap``)

from the layer's latest training forward, T (nc, c) its refined class rows. It is 0 when no two rows point alike, so
it pushes only rows that overlap, and only through the class-text layer's own weights (the rows do not depend on the
image). An evaluation forward records nothing: the term is 0 there.

A start made elsewhere gets the term without retraining from its YAML: ``with_text_spread`` writes a copy of a
checkpoint whose ClassText row asks for it, which the stock trainer then rebuilds from (``yolo train model=<copy>``):

    python -m dsmoe_yolo.text_spread start.pt 1.0 start-spread.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.loss import LayerTermCriterion

__all__ = ("TextSpreadCriterion", "spread_criterion", "with_text_spread")


class TextSpreadCriterion(LayerTermCriterion):
    """Wraps a detection criterion: adds ``text_loss`` (module docstring) for ``layers`` (ClassText with spread > 0)."""

    name = "text_loss"

    def layer_term(self, layer, aux):
        return layer.spread * aux["text_spread"] if "text_spread" in aux else None


def spread_criterion(criterion, model):
    """``criterion`` wrapped in ``TextSpreadCriterion`` when a ClassText of ``model`` asks for ``spread``, else as is."""
    layers = [m for m in model.modules() if type(m).__name__ == "ClassText" and m.spread > 0]
    return TextSpreadCriterion(criterion, layers) if layers else criterion


def with_text_spread(checkpoint: str | Path, weight: float, out: str | Path) -> Path:
    """Write a copy of ``checkpoint`` whose ClassText row(s) train with ``spread: weight``; return ``out``.

    The row's YAML arguments and the layer itself both get the weight, so the stock trainer (which rebuilds the model
    from the checkpoint's YAML and loads its weights) trains with the term. Weights are unchanged.

    Raises:
        ConfigError: If the checkpoint has no model, no ClassText row, or ``weight`` is not a non-negative number.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ConfigError(f"text spread weight {weight!r} must be a non-negative number (0 removes the term)")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    models = [ckpt.get(k) for k in ("model", "ema") if ckpt.get(k) is not None]
    if not models:
        raise ConfigError(f"{checkpoint} holds no model; give a checkpoint saved by training (best.pt / last.pt)")
    rows = [row for row in models[0].yaml.get("head", []) if row[2] == "ClassText"]
    if not rows:
        raise ConfigError(
            f"{checkpoint} has no ClassText row, so it has no class text to spread; use an open-vocabulary or DS-MoE model"
        )
    for row in rows:
        args = row[3]
        if args and isinstance(args[-1], dict):
            args[-1] = {**args[-1], "spread": float(weight)}
        else:
            args.append({"spread": float(weight)})
    for model in models:
        if model is not models[0]:
            model.yaml = models[0].yaml
        for m in model.modules():
            if type(m).__name__ == "ClassText":
                m.spread = float(weight)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m dsmoe_yolo.text_spread START.pt WEIGHT OUT.pt")
    print(with_text_spread(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
