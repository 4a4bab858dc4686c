"""Training runs through the Python API: the ablation rows A-F, and the full model on real PCB data."""

from __future__ import annotations

import csv

import pytest
import torch

pytestmark = pytest.mark.slow


def _results(run) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("row, text", [("a", False), ("b", True), ("c", True), ("d", True), ("e", True), ("f", True)])
def test_ablation_rows_build_and_train(row, text, tiny_data, tmp_path):
    from ultralytics import YOLO

    model = YOLO(f"dsmoe-abl-{row}-yolov8n.yaml")
    model.train(
        data=str(tiny_data),
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name=row,
        plots=False,
        verbose=False,
    )
    run = tmp_path / row
    rows = _results(run)
    assert len(rows) == 1 and all(v == v for v in rows[0].values()), "finite losses and metrics"
    columns = set(rows[0])
    assert ("train/moe_loss" in columns) == (row in "ef"), "rows with experts carry the MoE balance term"
    assert ("train/hyp_loss" in columns) == (row in "def"), "rows with the hyperbolic stage order the prompt hierarchy"
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=False)
    texts = [m for m in (ckpt.get("ema") or ckpt["model"]).modules() if type(m).__name__ == "ClassText"]
    assert bool(texts) == text
    if text:
        assert texts[0].text_meta["names"] == ["open", "short", "mousebite", "spur", "spurious_copper", "pinhole"]


class _FrozenAssigner:
    """Replays the first assignment it computed, so two models are scored against the very same targets."""

    def __init__(self, assigner):
        self.assigner, self.out = assigner, None

    def __call__(self, *args, **kwargs):
        if self.out is None:
            self.out = self.assigner(*args, **kwargs)
        return self.out


def test_full_model_trains_on_deeppcb_mini_and_box_loss_goes_down(shared_copy, tmp_path):
    """DS-MoE-n trains 10 epochs on real PCB images (24 of deeppcb-mini's 48); its box losses on training images drop.

    The loss the trainer prints is not comparable across early epochs: TAL's targets are IoU-aware and the loss is
    normalised by their sum, so as boxes improve the targets grow and the printed loss rises (stock YOLOv8 does the
    same here). So the objective is compared at one fixed assignment (the trained model's), before and after training,
    on its localisation terms. The classification term is not a stable signal over 30 steps: the trajectory depends on
    float noise (top-k routing turns it into other expert choices); the same seeded run gave cls 10.0 -> 9.1 in a
    fresh process but 10.2 -> 22.5 in CI's order, after other tests had run in the same worker (the per-process
    state that changes the floats is not pinned down; geoopt's TorchScript functions are a suspect). Box+DFL fell in
    both, 0.57x and 0.49x (torch 2.14.1, CPU, last.pt = EMA), so cls is only required finite.
    """
    import copy

    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    from dsmoe_yolo.loss import DSMoEDetectionLoss

    data = shared_copy("deeppcb-mini")
    model = YOLO("dsmoe-yolov8n.yaml")
    initial = {}
    model.add_callback("on_pretrain_routine_end", lambda t: initial.update(model=copy.deepcopy(t.model).eval()))
    no_aug = dict(mosaic=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, translate=0.0, scale=0.0, erasing=0.0)
    model.train(
        data=str(data),
        epochs=10,
        imgsz=256,
        batch=8,
        nbs=8,
        fraction=0.5,
        workers=0,
        device="cpu",
        seed=0,
        deterministic=True,
        optimizer="AdamW",
        lr0=0.001,
        warmup_epochs=0,
        project=str(tmp_path),
        name="deeppcb",
        plots=False,
        val=False,
        **no_aug,
    )
    rows = _results(tmp_path / "deeppcb")
    assert len(rows) == 10 and all(v == v for r in rows for v in r.values())

    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    trained = YOLO(str(tmp_path / "deeppcb" / "weights" / "last.pt")).model.float().train()
    info = check_det_dataset(str(data))
    ds = build_yolo_dataset(
        get_cfg(overrides={"imgsz": 256, **no_aug}), info["train"], 16, info, mode="val", rect=False
    )
    batch = ds.collate_fn([ds[i] for i in range(16)])
    batch["img"] = batch["img"].float() / 255
    trained.args = get_cfg()  # loss gains (box/cls/dfl) as the trainer uses them
    criterion = DSMoEDetectionLoss(trained)
    criterion.assigner = _FrozenAssigner(criterion.assigner)
    before_model = initial["model"].float().train()
    with torch.no_grad():
        after, after_items = criterion(trained(batch["img"]), batch)
        before, before_items = criterion(before_model(batch["img"]), batch)
    terms = {k: f"{float(before_items[k]):.3f} -> {float(after_items[k]):.3f}" for k in after_items}
    assert torch.isfinite(after).all() and torch.isfinite(before).all(), terms
    loc_after, loc_before = (float(items["box_loss"] + items["dfl_loss"]) for items in (after_items, before_items))
    assert loc_after < 0.7 * loc_before, f"box+DFL at a fixed assignment: {loc_before:.3f} -> {loc_after:.3f} ({terms})"
