"""One training over several datasets (``dsmoe_yolo.multi_dataset``, ``dsmoe_yolo.plugin.union``)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import run_cli, shared_dataset

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.multi_dataset import SPACES, LabelSpaces, is_union, load_union


@pytest.fixture
def two_datasets(tmp_path):
    """neu-det-mini and deeppcb-mini, the second with its class 'spur' renamed 'Scratches' (one of NEU-DET's, in
    another spelling): the union must hold it once."""
    neu, pcb = shared_dataset("neu-det-mini"), shared_dataset("deeppcb-mini")
    doc = {"path": str(pcb), "train": "images/train", "val": "images/val"}
    doc["names"] = {0: "open", 1: "short", 2: "mousebite", 3: "Scratches", 4: "copper", 5: "pin-hole"}
    renamed = tmp_path / "pcb-renamed.yaml"
    renamed.write_text(json.dumps(doc))
    return neu / "data.yaml", renamed


def test_a_data_yaml_listing_datasets_joins_their_classes_by_name(two_datasets, tmp_path):
    neu, pcb = two_datasets
    spec = tmp_path / "union.yaml"
    spec.write_text(f"yolo_data: [{neu}, {pcb}]\n")
    assert is_union(str(spec)) and not is_union(str(neu))
    data = load_union(str(spec))
    names = list(data["names"].values())
    assert names[:6] == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert names[6:] == ["open", "short", "mousebite", "copper", "pin-hole"] and data["nc"] == 11
    members = {(m["split"], m["name"]): m["to_union"] for m in data["union"]}
    assert members[("train", "pcb-renamed")] == [6, 7, 8, 5, 9, 10]  # 'Scratches' is NEU-DET's 'scratches'
    from dsmoe_yolo.text.embed import resolve_prompts

    table, source = resolve_prompts(data, names, log=lambda s: None)
    assert set(table) == set(names) and source == "the datasets' own prompts"  # found per dataset, by class name
    assert table["scratches"] == resolve_prompts({"names": {}}, ["scratches"], lambda s: None)[0]["scratches"]


def test_the_python_dict_form_takes_separate_val_datasets(two_datasets):
    neu, pcb = two_datasets
    data = load_union({"train": {"yolo_data": [str(neu), str(pcb)]}, "val": {"yolo_data": [str(neu)]}})
    assert len(data["train"]) == 2 and len(data["val"]) == 1 and data["nc"] == 11


def test_a_dataset_listed_twice_is_refused(two_datasets):
    neu, _ = two_datasets
    with pytest.raises(ConfigError, match="lists a dataset twice"):
        load_union({"train": {"yolo_data": [str(neu), str(neu)]}})


def test_the_class_loss_ignores_classes_the_images_dataset_does_not_annotate(monkeypatch):
    """The loss targets of a multi-dataset batch: an image of dataset A gets no loss (no negative, no gradient) on
    the classes only dataset B annotates, and exactly the stock loss on its own classes."""
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg

    spaces = LabelSpaces()
    monkeypatch.setattr("dsmoe_yolo.plugin.union.SPACES", spaces)
    nc = 5
    spaces.add("a", ["a.jpg"], [0, 1, 2], nc)
    spaces.add("b", ["b.jpg"], [2, 3, 4], nc)
    model = YOLO("dsmoe-ov-lite-yolov8n.yaml").model
    model.set_classes(list("vwxyz"), embeddings=torch.randn(nc, 384))
    model.args = get_cfg()
    model.train()
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[1.0], [3.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]]),
        "im_file": ["a.jpg", "b.jpg"],
    }
    preds = model(batch["img"])
    scores = preds["scores"]
    scores.retain_grad()
    criterion = model.init_criterion()
    loss, _ = criterion(preds, batch)
    loss.sum().backward()
    grad = scores.grad  # (B, nc, anchors)
    per_class = grad.abs().sum(-1)
    assert torch.all(per_class[0, 3:] == 0) and torch.all(per_class[0, :3] > 0)
    assert torch.all(per_class[1, :2] == 0) and torch.all(per_class[1, 2:] > 0)
    # images no member registered (single-dataset training) are not masked at all
    assert spaces.mask(["c.jpg"], nc) is None


@pytest.mark.slow
def test_yolo_train_on_two_datasets_reports_each(two_datasets, tmp_path):
    neu, pcb = two_datasets
    spec = tmp_path / "union.yaml"
    spec.write_text(f"yolo_data: [{neu}, {pcb}]\n")
    out = run_cli(
        f"yolo train model=dsmoe-ov-lite-yolov8n.yaml data={spec} epochs=2 imgsz=64 batch=8 workers=0 val=False "
        f"project={tmp_path} name=u plots=False",
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert (
        "pcb-renamed train (48 images): classes ['open', 'short', 'mousebite', 'Scratches', 'copper', 'pin-hole'] -> union [6, 7, 8, 5, 9, 10]"
        in text
    )
    for name in ("neu-det-mini", "pcb-renamed"):
        assert f"DS-MoE data: {name}: mAP50" in text
    with open(tmp_path / "u" / "results.csv") as f:
        header, *rows = list(csv.reader(f))
    header = [h.strip() for h in header]
    assert {"metrics/mAP50-95(neu-det-mini)", "metrics/mAP50-95(pcb-renamed)"} <= set(header)
    # val=False: epoch 1 is not validated, epoch 2 is; both rows have every column (a ragged row breaks results.png)
    assert len(rows) == 2 and all(len(r) == len(header) for r in rows)
    last = dict(zip(header, (float(v) for v in rows[-1])))
    for name in ("neu-det-mini", "pcb-renamed"):  # the value under each dataset's column is that dataset's
        logged = text.split(f"DS-MoE data: {name}: mAP50 ")[-1].split(",")[0]
        assert f"{last[f'metrics/mAP50({name})']:.3f}" == logged
    ckpt = torch.load(tmp_path / "u" / "weights" / "best.pt", weights_only=False)
    assert list(ckpt["model"].names.values())[5] == "scratches" and len(ckpt["model"].names) == 11
    SPACES.clear()
