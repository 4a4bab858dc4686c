"""Training objective: QFocal, CIoU, MoE balance, the YAML switch, and the gamma transform."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsmoe_yolo.augment import GammaTransform, insert_gamma_transform
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.loss import DSMoEDetectionLoss, QualityFocalLoss, ciou_loss, cv_squared, loss_config, switch_balance
from dsmoe_yolo.nn import SparseMoE


# QFocal ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, y", [(0.5, 0.3), (-2.0, 0.0), (3.0, 1.0), (0.0, 0.8), (-1.2, 0.55)])
def test_qfocal_equals_the_published_formula(x, y):
    """YOLOv5 QFocalLoss: BCE(x, y) * (y*a + (1-y)*(1-a)) * |y - sigmoid(x)|^gamma, a=0.25, gamma=1.5."""
    s = 1 / (1 + math.exp(-x))
    bce = -(y * math.log(s) + (1 - y) * math.log(1 - s))
    expected = bce * (y * 0.25 + (1 - y) * 0.75) * abs(y - s) ** 1.5
    got = QualityFocalLoss(0.25, 1.5)(torch.tensor([x]), torch.tensor([y])).item()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_qfocal_reduces_to_bce_times_distance_weighting():
    """With alpha = 0.5 the loss is 0.5 * BCE * |y - sigmoid|^gamma: GFL's QFL (Li et al. 2020) up to the constant."""
    torch.manual_seed(0)
    x, y = torch.randn(100), torch.rand(100)
    got = QualityFocalLoss(alpha=0.5, gamma=2.0)(x, y)
    qfl = -(y - x.sigmoid()).abs().pow(2) * ((1 - y) * torch.log(1 - x.sigmoid()) + y * torch.log(x.sigmoid()))
    torch.testing.assert_close(got, 0.5 * qfl, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        got, 0.5 * F.binary_cross_entropy_with_logits(x, y, reduction="none") * (y - x.sigmoid()).abs() ** 2
    )
    assert QualityFocalLoss()(torch.tensor([10.0]), torch.tensor([1.0])).item() < 1e-6  # confident and right: ~0


# CIoU -----------------------------------------------------------------------------------------------------------------
def ciou_by_hand(a, b):
    """Complete IoU (Zheng et al. 2020): IoU - rho^2/c^2 - alpha v."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    union = wa * ha + wb * hb - inter
    iou = inter / union
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    v = 4 / math.pi**2 * (math.atan(wb / hb) - math.atan(wa / ha)) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / c2 - alpha * v


@pytest.mark.parametrize(
    "a, b", [((0, 0, 10, 10), (2, 2, 12, 14)), ((5, 5, 8, 20), (4, 6, 9, 18)), ((0, 0, 4, 4), (10, 10, 12, 15))]
)
def test_ciou_equals_the_formula_and_ultralytics(a, b):
    from ultralytics.utils.metrics import bbox_iou

    pa, pb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    assert ciou_loss(pa, pb).item() == pytest.approx(1 - ciou_by_hand(a, b), rel=1e-6)
    assert ciou_loss(pa, pb).item() == pytest.approx(1 - bbox_iou(pa, pb, xywh=False, CIoU=True).item(), rel=1e-9)


# balance --------------------------------------------------------------------------------------------------------------
def test_balance_is_zero_for_uniform_routing_and_grows_with_imbalance():
    assert cv_squared(torch.full((32,), 3.0)).item() == pytest.approx(0.0, abs=1e-9)
    values = [cv_squared(torch.tensor([1.0 + s, 1.0, 1.0, 1.0 - s / 3])).item() for s in (0.0, 0.3, 0.6, 0.9)]
    assert values[0] == pytest.approx(0.0, abs=1e-9) and all(b > a for a, b in zip(values, values[1:]))
    probs = torch.full((8, 4), 0.25)
    assert switch_balance(probs, torch.tensor([4, 4, 4, 4])).item() == pytest.approx(0.0, abs=1e-6)
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 8)
    assert switch_balance(skewed, torch.tensor([16, 0, 0, 0])).item() > 1.0


def test_balance_term_reaches_the_gate():
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=8, top_k=2).train()
    moe([torch.randn(6, 16, 4, 4), torch.randn(3, 8)])

    criterion = DSMoEDetectionLoss.__new__(DSMoEDetectionLoss)
    criterion.aux_layers, criterion.device, criterion.balance = [moe], torch.device("cpu"), "both"
    criterion.weights = {"moe": 0.01, "align": 0.0, "hyp_angle": 0.0, "hyp_order": 0.0}
    criterion.loss_names = ("box_loss", "cls_loss", "dfl_loss", "moe_loss")
    terms = criterion.auxiliary_terms()
    terms["moe_loss"].backward()
    grads = [p.grad for p in moe.gate.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in moe.experts.parameters()), "the balance term only trains the gate"


# the YAML switch --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return {
        "img": torch.rand(2, 3, 128, 128),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[1.0], [3.0], [5.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3], [0.5, 0.5, 0.4, 0.2]]),
    }


def _model(loss):
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo import CFG_DIR

    d = yaml.safe_load((CFG_DIR / "models" / "dsmoe-yolov8.yaml").read_text())
    d["scale"] = "n"
    if loss is None:
        d.pop("loss")
    else:
        d["loss"] = loss
    torch.manual_seed(0)
    m = DetectionModel(d, verbose=False)
    m.args = get_cfg()
    m.model[8].bind(torch.randn(6, 384), {"names": list("abcdef")})
    return m


def test_yaml_without_loss_key_keeps_the_stock_loss_exactly(batch):
    from ultralytics.utils.loss import v8DetectionLoss

    model = _model(None)
    criterion = model.init_criterion()
    assert type(criterion) is v8DetectionLoss
    model.train()
    preds = model(batch["img"])
    total, items = criterion(preds, batch)
    ref_total, ref_items = v8DetectionLoss(model)(preds, batch)
    torch.testing.assert_close(total, ref_total)
    assert list(items) == ["box_loss", "cls_loss", "dfl_loss"]


def test_dsmoe_loss_changes_only_classification_and_adds_named_terms(batch):
    from ultralytics.utils.loss import v8DetectionLoss

    model = _model({"type": "qfocal_ciou", "align": 0.1, "hyp_angle": 0.05})
    criterion = model.init_criterion()
    assert isinstance(criterion, DSMoEDetectionLoss)
    assert criterion.loss_names == ("box_loss", "cls_loss", "dfl_loss", "moe_loss", "align_loss", "hyp_loss")
    model.train()
    preds = model(batch["img"])
    total, items = criterion(preds, batch)
    assert list(items) == list(criterion.loss_names) and total.shape == (6,)
    assert all(torch.isfinite(v) for v in items.values()) and items["moe_loss"] > 0
    stock = v8DetectionLoss(model)
    _, stock_det, _ = stock.get_assigned_targets_and_loss(preds, batch)
    _, ours_det, _ = criterion.get_assigned_targets_and_loss(preds, batch)
    torch.testing.assert_close(ours_det[[0, 2]], stock_det[[0, 2]])  # CIoU box and DFL identical
    stock.bce = QualityFocalLoss(0.25, 1.5, loss_weight=16.0)
    _, qf_det, _ = stock.get_assigned_targets_and_loss(preds, batch)
    torch.testing.assert_close(ours_det[1], qf_det[1])  # cls = QFocal x cls_scale on the same TAL soft targets
    assert not torch.isclose(ours_det[1], stock_det[1])
    unit = _model({"type": "qfocal_ciou", "cls_scale": 1.0, "align": 0.1, "hyp_angle": 0.05}).init_criterion()
    unit_total, unit_items = unit(preds, batch)
    assert criterion.cls_scale == 16.0 and unit.cls_scale == 1.0
    torch.testing.assert_close(total[1], 16.0 * unit_total[1])  # cls_scale multiplies only the QFocal term
    torch.testing.assert_close(items["cls_loss"], 16.0 * unit_items["cls_loss"])
    torch.testing.assert_close(total[[0, 2]], unit_total[[0, 2]])


def test_bce_iou_is_stock_bce_plus_plain_iou_and_keeps_dfl(batch):
    """Ablation rows A-E: cls = stock BCE, box = 1 - IoU (not CIoU) with the stock weighting, DFL unchanged."""
    from ultralytics.utils.loss import v8DetectionLoss
    from ultralytics.utils.metrics import bbox_iou

    from dsmoe_yolo.loss import BCEIoUDetectionLoss

    model = _model("bce_iou")
    criterion = model.init_criterion()
    assert isinstance(criterion, BCEIoUDetectionLoss) and criterion.cls_scale == 1.0
    assert criterion.loss_names == ("box_loss", "cls_loss", "dfl_loss", "moe_loss", "align_loss")
    model.train()
    preds = model(batch["img"])
    stock = v8DetectionLoss(model)
    _, stock_det, _ = stock.get_assigned_targets_and_loss(preds, batch)
    _, ours_det, _ = criterion.get_assigned_targets_and_loss(preds, batch)
    torch.testing.assert_close(ours_det[[1, 2]], stock_det[[1, 2]])  # BCE classification and DFL identical
    assert not torch.isclose(ours_det[0], stock_det[0])  # the box term is not CIoU
    calls = []
    original = bbox_iou

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    import dsmoe_yolo.loss as loss_module

    loss_module.bbox_iou = spy
    try:
        criterion.get_assigned_targets_and_loss(preds, batch)
    finally:
        loss_module.bbox_iou = original
    assert calls and not any(c.get("CIoU") or c.get("GIoU") or c.get("DIoU") for c in calls)  # plain IoU
    for row in "abcde":
        import yaml

        from dsmoe_yolo import CFG_DIR

        doc = yaml.safe_load((CFG_DIR / "models" / "ablation" / f"dsmoe-abl-{row}-yolov8.yaml").read_text())
        assert doc.get("loss") == "bce_iou", f"ablation row {row.upper()} must train with the paper's CE + IoU"


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("focal", "unknown"),
        ({"type": "qfocal_ciou", "moee": 1}, "unknown settings"),
        ({"type": "qfocal_ciou", "moe": -1}, "non-negative"),
        ({"type": "qfocal_ciou", "cls_scale": "x"}, "cls_scale.*non-negative"),
        ({"type": "qfocal_ciou", "balance": "gini"}, "cv2, switch or both"),
        ({"type": "bce_iou", "alpha": 0.25}, "bce_iou.*unknown settings"),
    ],
)
def test_bad_loss_config(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        loss_config({"loss": spec})
    assert loss_config({}) is None
    assert loss_config({"loss": "qfocal_ciou"})["gamma"] == 1.5


# gamma transform --------------------------------------------------------------------------------------------------------
def test_gamma_transform_changes_pixels_as_specified_and_keeps_labels():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    bboxes = np.array([[0.1, 0.2, 0.3, 0.4]])
    t = GammaTransform(p=1.0, gamma=1.5, gain=1.0)
    random.seed(3)
    out = t({"img": img.copy(), "cls": np.array([[2]]), "bboxes": bboxes.copy()})
    e = t.last_exponent
    assert 1 / 1.5 <= e <= 1.5 and e != 1.0
    expected = np.clip(1.0 * (img / 255.0) ** e * 255.0 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out["img"], expected)
    assert (out["img"] != img).any()
    np.testing.assert_array_equal(out["bboxes"], bboxes)
    assert out["cls"].tolist() == [[2]]
    untouched = GammaTransform(p=0.0)({"img": img.copy()})
    np.testing.assert_array_equal(untouched["img"], img)


def test_gamma_transform_is_in_the_stock_train_pipeline(tiny_data):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.augment import RandomHSV
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(tiny_data))
    for p, expected in ((0.0, False), (1.0, True)):
        cfg = get_cfg(overrides={"gamma_p": p, "imgsz": 128})
        ds = build_yolo_dataset(cfg, data["train"], 4, data, mode="train")
        kinds = [type(t) for t in ds.transforms.transforms]
        assert (GammaTransform in kinds) == expected
        if expected:
            assert kinds.index(GammaTransform) == kinds.index(RandomHSV) + 1
            ds.close_mosaic(cfg)  # rebuilds the transforms: the gamma transform must survive
            assert GammaTransform in [type(t) for t in ds.transforms.transforms]
            sample = ds[0]
            assert sample["img"].shape[0] == 3


def test_insert_gamma_is_a_no_op_when_off():
    from ultralytics.data.augment import Compose, RandomHSV

    comp = Compose([RandomHSV()])
    assert insert_gamma_transform(comp, type("H", (), {"gamma_p": 0.0})()) is comp and len(comp.transforms) == 1
