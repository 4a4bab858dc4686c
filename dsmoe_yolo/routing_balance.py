"""A load-balance term for MoE layers in models trained with the stock loss.

The lite and open-vocabulary YAMLs train with Ultralytics' stock ``v8DetectionLoss`` (no ``loss:`` key), which knows
nothing of routing: their one SparseMoE was trained with the gate's noise as its only pressure against collapse. A
SparseMoE row with ``balance: w`` adds, to whatever criterion the model has (stock or union-masked),

    moe_loss = w * sum over such layers of (CV^2(sum_b g_b) + N sum_i f_i P_i - 1)      (``loss.moe_balance``, "both")

from the layer's latest training forward: g (B, N) the gate's probabilities, f_i the share of the batch's top-k
selections that went to expert i, P_i the mean probability of expert i. Both parts are 0 for uniform routing; the
first (Shazeer et al. 2017) sees the soft probabilities, the second (Switch Transformer) the hard choices. An
evaluation forward (the validator's loss) records no routing, so the term is 0 there.

A model whose YAML selects the DS-MoE loss (``loss: qfocal_ciou`` / ``bce_iou``) balances through that loss's own
``moe`` weight; ``balance`` on one of its rows is refused rather than counted twice.
"""

from __future__ import annotations

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.loss import LayerTermCriterion, loss_config, moe_balance

__all__ = ("RoutingBalanceCriterion", "balance_criterion")


class RoutingBalanceCriterion(LayerTermCriterion):
    """Wraps a detection criterion: adds ``moe_loss`` (module docstring) for ``layers`` (SparseMoE with balance > 0)."""

    name = "moe_loss"

    def layer_term(self, layer, aux):
        if "moe_probs" in aux:
            return layer.balance * moe_balance(aux["moe_probs"], aux["moe_load"], "both")
        return None


def balance_criterion(criterion, model):
    """``criterion`` wrapped in ``RoutingBalanceCriterion`` when a SparseMoE of ``model`` asks for ``balance``,
    else unchanged.

    Raises:
        ConfigError: ``balance`` on a model whose YAML selects the DS-MoE loss (it balances through ``moe``).
    """
    layers = [m for m in model.modules() if type(m).__name__ == "SparseMoE" and getattr(m, "balance", 0) > 0]
    if not layers:
        return criterion
    if loss_config(getattr(model, "yaml", None) or {}) is not None:
        raise ConfigError(
            "a SparseMoE row sets 'balance' but the model YAML selects the DS-MoE loss, which balances routing itself: "
            "remove 'balance' from the row and set the loss's weight instead (loss: {type: ..., moe: 0.01})"
        )
    return RoutingBalanceCriterion(criterion, layers)
