"""Routing against collapse: image routing in the gate (free expert keys, a centred query) and the load-balance term
for models trained with the stock loss."""

from __future__ import annotations

import pytest
import torch

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn.base import aux_outputs, pop_aux_outputs
from dsmoe_yolo.nn.gate import ExpertGate
from dsmoe_yolo.nn.moe import SparseMoE
from dsmoe_yolo.routing_balance import RoutingBalanceCriterion, balance_criterion


def _experts_used(gate: ExpertGate, feats: torch.Tensor, text: torch.Tensor) -> int:
    with torch.no_grad():
        return len(gate(feats, text)[1].unique())


def test_text_keys_tie_under_one_class_and_image_routing_breaks_the_tie():
    """With one class prompt every text-derived key is the same vector: all images pick the same k experts whatever
    they show. Image routing gives each expert its own direction, so different images can pick different experts."""
    torch.manual_seed(0)
    feats, text = torch.randn(32, 16, 5, 5) * 3, torch.randn(1, 8)
    paper = ExpertGate(16, 8, 16, top_k=2, noise=0.0).eval()
    t, keys = paper.text_side(text)
    torch.testing.assert_close(keys, keys[:1].expand_as(keys))  # N identical keys
    assert _experts_used(paper, feats, text) == 2  # every image: the same two
    free = ExpertGate(16, 8, 16, top_k=2, noise=0.0, image_routing=True).eval()
    own = {k: v for k, v in free.state_dict().items() if k.startswith(("key_offsets", "query_centre"))}
    free.load_state_dict({**paper.state_dict(), **own})
    assert _experts_used(free, feats, text) > 2 * 2


def test_image_routing_keeps_the_fused_path_exact_and_old_gates_load():
    torch.manual_seed(0)
    gate = ExpertGate(16, 8, 12, top_k=3, image_routing=True).eval()
    with torch.no_grad():  # statistics as after training, so the folded standardisation is not the identity
        gate.query_centre.running_mean.normal_()
        gate.query_centre.running_var.uniform_(0.5, 2.0)
    feats, text = torch.randn(4, 16, 5, 5), torch.randn(3, 8)
    with torch.no_grad():
        plain = gate(feats, text)
        fused = gate(feats, text, gate.folded(text))
    torch.testing.assert_close(fused[2], plain[2], atol=1e-5, rtol=1e-4)
    assert torch.equal(fused[1], plain[1])
    old = ExpertGate(16, 8, 12, top_k=3).eval()
    del old.key_offsets, old.query_centre  # a gate pickled before image routing existed has neither attribute
    with torch.no_grad():
        assert old(feats, text)[1].shape == (4, 3)


def _training_forward(moe: SparseMoE, b: int = 6) -> None:
    moe.train()
    moe([torch.randn(b, 16, 4, 4), torch.randn(3, 8)])


class _Stock:
    """A stand-in detection criterion: two terms, as Ultralytics' criteria return them (vector * batch, items)."""

    def __call__(self, preds, batch):
        loss = torch.tensor([1.0, 2.0]) * len(batch["img"])
        return loss, {"box_loss": torch.tensor(1.0), "cls_loss": torch.tensor(2.0)}


def test_balance_term_is_added_named_and_trains_only_the_gate():
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=8, top_k=2, balance=0.5)
    criterion = RoutingBalanceCriterion(_Stock(), [moe])
    _training_forward(moe)
    loss, items = criterion(None, {"img": torch.zeros(6, 3, 8, 8)})
    assert list(items) == ["box_loss", "cls_loss", "moe_loss"] and loss.shape == (3,)
    assert items["moe_loss"] > 0
    assert loss[2].item() == pytest.approx(6 * items["moe_loss"].item(), rel=1e-5)
    loss[2].backward()
    assert moe.gate.expert_queries.grad is not None and moe.gate.expert_queries.grad.abs().sum() > 0
    assert all(p.grad is None for p in moe.experts.parameters()), "the balance term only trains the gate"
    assert pop_aux_outputs(moe) == {}, "the routing statistics are consumed"


def test_balance_is_zero_without_a_training_forward_and_scales_with_its_weight():
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=8, top_k=2, balance=1.0)
    criterion = RoutingBalanceCriterion(_Stock(), [moe])
    assert criterion(None, {"img": torch.zeros(2, 3, 8, 8)})[1]["moe_loss"] == 0  # evaluation: nothing recorded
    _training_forward(moe)
    aux = dict(aux_outputs(moe))
    first = criterion(None, {"img": torch.zeros(6, 3, 8, 8)})[1]["moe_loss"]
    moe.balance = 0.25
    aux_outputs(moe).update(aux)
    assert criterion(None, {"img": torch.zeros(6, 3, 8, 8)})[1]["moe_loss"].item() == pytest.approx(
        first.item() / 4, rel=1e-5
    )


def test_balance_criterion_wraps_only_when_asked_and_refuses_a_double_count():
    inner = _Stock()
    model = torch.nn.Sequential(SparseMoE([16, 8], 16, experts=4))
    model.yaml = {}
    assert balance_criterion(inner, model) is inner
    model[0].balance = 0.05
    assert isinstance(balance_criterion(inner, model), RoutingBalanceCriterion)
    model.yaml = {"loss": "qfocal_ciou"}
    with pytest.raises(ConfigError, match="balance"):
        balance_criterion(inner, model)
    with pytest.raises(ValueError, match="balance"):
        SparseMoE([16, 8], 16, experts=4, balance=-1)


def test_yaml_row_options_reach_the_layer_and_the_trainer_loss():
    """``{image_routing: true, balance: w}`` on a SparseMoE row of an open-vocabulary YAML: the stock loss gains moe_loss."""
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.assets import CFG_DIR

    cfg = yaml.safe_load((CFG_DIR / "models" / "dsmoe-ov-lite-yolov8.yaml").read_text())
    row = next(r for r in cfg["head"] if r[2] == "SparseMoE")
    row[3][1].update({"image_routing": True, "balance": 0.05})
    model = DetectionModel(cfg, ch=3, nc=3, verbose=False)
    moe = next(m for m in model.modules() if isinstance(m, SparseMoE))
    assert moe.balance == 0.05 and moe.gate.key_offsets.shape == (32, moe.gate.key_proj.out_features)
    model.args = get_cfg()
    model.train()
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]] * 2),
    }
    loss, items = model.loss(batch)
    assert "moe_loss" in items and items["moe_loss"] > 0 and torch.isfinite(loss).all()
