"""examples/visual_prompt_check.py: k-shot example boxes vs text vs both on one checkpoint."""

from __future__ import annotations


def test_examples_and_probes_are_disjoint_single_class_images(load_example, shared_copy):
    check = load_example("visual_prompt_check")
    data = shared_copy("neu-det-mini")
    images = sorted((data.parent / "images" / "val").glob("*.jpg"))
    groups = check.split(images, [str(i) for i in range(6)], shots=1, per_class=2)
    for c, (examples, probes) in groups.items():
        shown = [p for p, _ in examples]
        assert not set(shown) & set(probes) and len(shown) <= 1 and len(probes) <= 2
        for p in [*shown, *probes]:
            assert {k for k, _ in check._labels(p)} == {c}
        assert all(len(b) >= 1 and len(b[0]) == 4 for _, b in examples)


def test_check_prints_the_three_prompt_kinds(load_example, shared_copy, tmp_path):
    from ultralytics import YOLO

    data = shared_copy("neu-det-mini")
    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes("neu-det.yaml")
    path = tmp_path / "ov.pt"
    model.save(str(path))
    table = load_example("visual_prompt_check").check(str(path), str(data), shots=1, per_class=1, imgsz=64)
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["text", "visual", "both"]
