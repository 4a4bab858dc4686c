"""examples/prompt_swap.py: one open-vocabulary checkpoint validated under other class texts."""

from __future__ import annotations

import pytest


def test_variants_rotate_the_trained_descriptions_by_one_class(load_example):
    swap = load_example("prompt_swap")
    trained = {"a": ["alpha"], "b": ["beta", "bravo"], "c": ["gamma"]}
    rows = swap.variants(["a", "b", "c"], trained)
    assert rows["trained"] == trained
    assert rows["rotated"] == {"a": ["beta", "bravo"], "b": ["gamma"], "c": ["alpha"]}
    assert rows["names"] == {"a": ["a"], "b": ["b"], "c": ["c"]}
    assert set(rows["templates"]) == {"a", "b", "c"}


def test_swap_table_validates_each_variant(load_example, shared_copy, tmp_path):
    from ultralytics import YOLO

    data = shared_copy("neu-det-mini")
    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes("neu-det.yaml")  # the bundled descriptions, embedded with MiniLM
    path = tmp_path / "ov.pt"
    model.save(str(path))
    table = load_example("prompt_swap").swap_table(str(path), str(data), imgsz=64, batch=8)
    lines = table.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["trained", "templates", "rotated", "names"]


def test_a_closed_set_checkpoint_is_refused(load_example, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "closed.pt"
    YOLO("dsmoe-lite-yolov8n.yaml").save(str(path))
    with pytest.raises(SystemExit, match="not an open-vocabulary"):
        load_example("prompt_swap").swap_table(str(path), "unused.yaml")
