"""The class-row spread term: keeps the class-text rows apart while a model trains (``dsmoe_yolo.text_spread``)."""

from __future__ import annotations

import pytest
import torch
import yaml

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn.base import pop_aux_outputs
from dsmoe_yolo.nn.text import ClassText, row_overlap
from dsmoe_yolo.text_spread import TextSpreadCriterion, spread_criterion, with_text_spread


class _Stock:
    """A stand-in detection criterion: two terms, as Ultralytics' criteria return them (vector * batch, items)."""

    def __call__(self, preds, batch):
        return torch.tensor([1.0, 2.0]) * len(batch["img"]), {
            "box_loss": torch.tensor(1.0),
            "cls_loss": torch.tensor(2.0),
        }


def test_row_overlap_counts_only_rows_that_point_alike():
    assert row_overlap(torch.eye(4)) == 0
    assert row_overlap(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == 0  # opposite rows do not overlap
    assert row_overlap(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])).item() == pytest.approx(1 / 3)


def _class_text(spread: float) -> ClassText:
    torch.manual_seed(0)
    text = ClassText(16, 32, nc=4, embed_dim=8, heads=4, index_encoding=False, spread=spread)
    base = torch.randn(1, 8)
    text.bind(base + 0.7 * torch.randn(4, 8), {"names": list("abcd")})  # four related prompts: rows overlap (0.91)
    return text


def test_spread_term_is_added_named_and_trains_only_the_class_text():
    text = _class_text(0.5)
    criterion = TextSpreadCriterion(_Stock(), [text])
    rows = text.train()(None)
    loss, items = criterion(None, {"img": torch.zeros(6, 3, 8, 8)})
    assert list(items) == ["box_loss", "cls_loss", "text_loss"] and loss.shape == (3,)
    assert items["text_loss"].item() == pytest.approx(0.5 * row_overlap(rows.detach()).item(), rel=1e-5)
    assert items["text_loss"] > 0.1
    loss[2].backward()
    assert text.proj[0].weight.grad.abs().sum() > 0
    assert pop_aux_outputs(text) == {}, "the overlap is consumed"
    text.eval()(None)
    assert criterion(None, {"img": torch.zeros(2, 3, 8, 8)})[1]["text_loss"] == 0  # evaluation: nothing recorded


def test_descending_the_term_spreads_the_rows():
    text = _class_text(1.0)
    criterion = TextSpreadCriterion(_Stock(), [text])
    optimizer = torch.optim.Adam(text.parameters(), lr=1e-3)  # Ultralytics' optimizer=auto on short runs: AdamW
    before = row_overlap(text.train()(None).detach())
    for _ in range(50):
        optimizer.zero_grad()
        text(None)
        criterion(None, {"img": torch.zeros(1, 3, 8, 8)})[0][2].backward()
        optimizer.step()
    assert row_overlap(text(None).detach()) < before / 2


def test_spread_criterion_wraps_only_when_asked_and_bad_weights_are_refused():
    inner = _Stock()
    model = torch.nn.Sequential(ClassText(16, 32, nc=3, embed_dim=8))
    assert spread_criterion(inner, model) is inner
    model[0].spread = 0.2
    assert isinstance(spread_criterion(inner, model), TextSpreadCriterion)
    del model[0].spread  # a ClassText pickled before the term existed
    assert spread_criterion(inner, model) is inner
    with pytest.raises(ValueError, match="spread"):
        ClassText(16, 32, nc=3, embed_dim=8, spread=-1)


def _ov_model(nc: int = 3):
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.assets import CFG_DIR

    cfg = yaml.safe_load((CFG_DIR / "models" / "dsmoe-ov-lite-yolov8.yaml").read_text())
    cfg["scale"] = "n"
    return DetectionModel(cfg, ch=3, nc=nc, verbose=False)


def test_with_text_spread_writes_a_start_the_stock_trainer_rebuilds_with_the_term(tmp_path):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    model = _ov_model()
    torch.save({"model": model, "ema": None, "epoch": -1}, tmp_path / "start.pt")
    out = with_text_spread(tmp_path / "start.pt", 0.7, tmp_path / "spread" / "start.pt")
    saved = torch.load(out, map_location="cpu", weights_only=False)["model"]
    row = next(r for r in saved.yaml["head"] if r[2] == "ClassText")
    assert row[3][-1] == {"index_encoding": False, "spread": 0.7}
    assert next(m for m in saved.modules() if isinstance(m, ClassText)).spread == 0.7
    for a, b in zip(saved.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)  # weights untouched
    rebuilt = DetectionModel(saved.yaml, ch=3, nc=3, verbose=False)  # what the trainer does with a .pt start
    assert next(m for m in rebuilt.modules() if isinstance(m, ClassText)).spread == 0.7
    rebuilt.args = get_cfg()
    rebuilt.train()
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]] * 2),
    }
    loss, items = rebuilt.loss(batch)
    assert "text_loss" in items and items["text_loss"] > 0 and torch.isfinite(loss).all()


def test_with_text_spread_refuses_what_it_cannot_change(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel("yolov8n.yaml", nc=2, verbose=False)}, tmp_path / "v8.pt")
    with pytest.raises(ConfigError, match="no ClassText row"):
        with_text_spread(tmp_path / "v8.pt", 1.0, tmp_path / "out.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(ConfigError, match="holds no model"):
        with_text_spread(tmp_path / "empty.pt", 1.0, tmp_path / "out.pt")
    with pytest.raises(ConfigError, match="non-negative"):
        with_text_spread(tmp_path / "empty.pt", -0.5, tmp_path / "out.pt")
