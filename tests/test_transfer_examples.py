"""The evidence-campaign helpers in examples/ (issue 32): few-label subsets, leave-one-class-out copies, zero-shot,
k-shot prompts and routing per dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_subsets_are_seeded_nested_and_sized(load_example):
    subsets = load_example("few_label_subsets")
    images = [f"images/train/{i:04d}.jpg" for i in range(200)]
    five, quarter = subsets.subset(images, 5, 0), subsets.subset(images, 25, 0)
    assert (len(five), len(quarter)) == (10, 50)
    assert set(five) <= set(quarter)  # one shuffle, prefixes
    assert subsets.subset(images, 5, 0) == five and subsets.subset(images, 5, 1) != five
    assert subsets.subset(images[:3], 5, 0) != []  # at least one image


def test_subset_files_are_written_once_and_reused(load_example, shared_copy, tmp_path):
    data = shared_copy("neu-det-mini")
    subsets, lists, out = load_example("few_label_subsets"), tmp_path / "lists", tmp_path / "out"
    subsets.main([f"data={data}", "fractions=25", f"out={out}", f"lists={lists}"])
    listed = (lists / "neu-det-mini-25.txt").read_text().splitlines()
    assert len(listed) == 12  # 25 % of 48
    spec = yaml.safe_load((out / "neu-det-mini-25.yaml").read_text())
    assert [Path(p) for p in Path(spec["train"]).read_text().splitlines()] == [data.parent / p for p in listed]
    assert spec["val"] == str(data.parent / "images" / "val") and len(spec["names"]) == 6
    subsets.main([f"data={data}", "fractions=25", f"out={out}", f"lists={lists}", "seed=7"])  # reused, not redrawn
    assert (lists / "neu-det-mini-25.txt").read_text().splitlines() == listed
    (lists / "neu-det-mini-25.txt").write_text("images/train/not-there.jpg\n")
    with pytest.raises(SystemExit, match="not-there.jpg"):
        subsets.main([f"data={data}", "fractions=25", f"out={out}", f"lists={lists}"])


def test_the_committed_neu_det_subsets_name_real_images():
    from conftest import SHARED_DATA

    root = SHARED_DATA / "neu-det"
    if not root.is_dir():
        pytest.skip(f"shared dataset 'neu-det' not found at {root}")
    five = (ROOT / "examples" / "results" / "subsets" / "neu-det-5.txt").read_text().split()
    quarter = (ROOT / "examples" / "results" / "subsets" / "neu-det-25.txt").read_text().split()
    assert (len(five), len(quarter)) == (50, 250) and set(five) <= set(quarter)
    assert all((root / p).is_file() for p in quarter)


def test_leaving_a_class_out_drops_its_images_and_renumbers_the_rest(load_example, shared_copy, tmp_path):
    data = shared_copy("neu-det-mini")
    loco = load_example("leave_class_out")
    loco.main([f"data={data}", "classes=patches", f"out={tmp_path / 'loco'}"])
    out = tmp_path / "loco" / "neu-det-mini-no-patches"
    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert list(spec["names"].values()) == ["crazing", "inclusion", "pitted_surface", "rolled-in_scale", "scratches"]
    for split in ("train", "val"):
        kept = sorted(p.name for p in (out / "images" / split).iterdir())
        source = data.parent / "labels" / split
        expected = sorted(
            f"{f.stem}.jpg"
            for f in source.glob("*.txt")
            if all(r.split()[0] != "2" for r in f.read_text().splitlines())
        )
        assert kept == expected and kept
        for f in (out / "labels" / split).glob("*.txt"):
            old = [r.split() for r in (source / f.name).read_text().splitlines() if r.strip()]
            new = [r.split() for r in f.read_text().splitlines() if r.strip()]
            assert [int(r[0]) for r in new] == [int(r[0]) - (int(r[0]) > 2) for r in old]
            assert [r[1:] for r in new] == [r[1:] for r in old]
    with pytest.raises(SystemExit, match="not a class"):
        loco.main([f"data={data}", "classes=rust", f"out={tmp_path / 'loco'}"])


@pytest.fixture
def pcb_checkpoint(tmp_path):
    """An (untrained) open-vocabulary checkpoint whose classes are DeepPCB's, none of NEU-DET's."""
    from ultralytics import YOLO

    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes("deeppcb.yaml")
    path = tmp_path / "pcb.pt"
    model.save(str(path))
    return path


def test_zero_shot_asks_for_the_data_classes_under_each_prompt_kind(load_example, shared_copy, pcb_checkpoint):
    data = shared_copy("neu-det-mini")
    table = load_example("zero_shot").zero_shot_table(str(pcb_checkpoint), str(data), imgsz=64, batch=8)
    lines = table.splitlines()
    assert "(0 of them seen)" in lines[0] and "crazing" in lines[0]
    assert lines[2].split("|")[4].strip() == "AP50 crazing"
    assert [line.split("|")[1].strip() for line in lines[4:]] == [
        "described",
        "templates",
        "rotated",
        "names",
        "described, class-agnostic (single_cls)",
    ]


def test_few_shot_prompts_draw_train_images_showing_each_class(load_example, shared_copy, pcb_checkpoint):
    few = load_example("few_shot_prompts")
    data = shared_copy("neu-det-mini")
    train = sorted((data.parent / "images" / "train").glob("*.jpg"))
    drawn = few.examples(train, 6, 2, seed=0)
    assert few.examples(train, 6, 2, seed=0) == drawn and few.examples(train, 6, 2, seed=1) != drawn
    for c, picked in drawn.items():
        assert len(picked) == 2
        for image, boxes in picked:
            assert boxes and all(len(b) == 4 for b in boxes)
            assert any(k == c for k, _ in load_example("visual_prompt_check")._labels(image))
    table = few.few_shot_table(str(pcb_checkpoint), str(data), shots=(1,), draws=2, imgsz=64, batch=8)
    rows = [line.split("|") for line in table.splitlines()[2:]]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("text", "1"), ("visual 1-shot", "2"), ("both 1-shot", "2")]


def test_routing_is_tabulated_per_dataset_with_pairwise_overlap(load_example, shared_copy, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "ov.pt"
    YOLO("dsmoe-ov-lite-yolov8n.yaml").save(str(path))
    datasets = [str(shared_copy("neu-det-mini")), str(shared_copy("deeppcb-mini"))]
    table = load_example("routing_by_dataset").routing_tables(str(path), datasets, imgsz=64, batch=8)
    assert "| neu-det-mini |" in table and "| deeppcb-mini |" in table
    assert "| neu-det-mini / deeppcb-mini |" in table


def test_resize_head_keeps_known_rows_of_a_plain_yolov8_head():
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.text.binding import resize_head

    head = DetectionModel("yolov8n.yaml", nc=2, verbose=False).model[-1]
    old = [seq[-1].weight.detach().clone() for seq in head.cv3]
    resize_head(head, ["a", "b"], ["a", "new", "b"])
    assert (head.nc, head.no) == (3, 3 + 4 * head.reg_max)
    for before, seq in zip(old, head.cv3):
        assert seq[-1].out_channels == 3
        assert torch.equal(seq[-1].weight[0], before[0]) and torch.equal(seq[-1].weight[2], before[1])


@pytest.mark.slow
def test_held_out_k_shot_draws_nested_sets_and_fine_tunes_both_models(load_example, shared_copy, tmp_path):
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    data = shared_copy("neu-det-mini")
    kept = ["crazing", "inclusion", "pitted_surface", "rolled-in_scale", "scratches"]  # patches held out
    ov = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    ov.set_classes(kept)
    ov.save(str(tmp_path / "ov.pt"))
    v8 = YOLO("yolov8n.yaml")
    v8.model = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    v8.model.names = dict(enumerate(kept))
    v8.save(str(tmp_path / "v8.pt"))

    k_shot = load_example("held_out_k_shot")
    train = sorted((data.parent / "images" / "train").glob("*.jpg"))
    shows, rest = k_shot.draw(train, 2, replay=4, seed=0)
    assert shows and len(rest) == 4 and k_shot.draw(train, 2, replay=4, seed=0) == (shows, rest)
    labels = load_example("visual_prompt_check")._labels
    assert all(any(c == 2 for c, _ in labels(p)) for p in shows) and not any(c == 2 for p in rest for c, _ in labels(p))

    project = tmp_path / "k-shot"
    args = f"held=patches yolo={tmp_path / 'v8.pt'} shots=1,2 seeds=0 replay=4 epochs=1 imgsz=64 batch=4"
    k_shot.main(
        [f"model={tmp_path / 'ov.pt'}", f"data={data}", *args.split(), f"project={project}", f"out={tmp_path / 't.md'}"]
    )
    table = (tmp_path / "t.md").read_text()
    labels_ = [line.split("|")[1].strip() for line in table.splitlines()[4:]]
    assert labels_ == [
        "text, zero-shot (k = 0)",
        "YOLOv8n, no row (k = 0)",
        *(
            f"{kind} {k}-shot{suffix}"
            for k in (1, 2)
            for kind, suffix in (
                ("visual", " (no training)"),
                ("text + visual", " (no training)"),
                ("text fine-tune", ""),
                ("YOLOv8n new row, fine-tune", ""),
            )
        ),
    ]
    listed = (project / "k2-seed0" / "train.txt").read_text().split()
    assert listed == [str(p) for p in shows[:2] + rest]
    widened = YOLO(str(project / "yolov8n-new-row.pt")).model
    assert list(widened.names.values())[2] == "patches" and widened.model[-1].nc == 6
    for run in ("ov-k1-seed0", "ov-k2-seed0", "yolov8n-k1-seed0", "yolov8n-k2-seed0"):
        assert (project / run / "weights" / "last.pt").is_file()
    with pytest.raises(SystemExit, match="not held out"):
        k_shot.k_shot_table(str(data), "crazing", str(tmp_path / "ov.pt"), shots=(1,), project=str(project))

    # no model=: the YOLOv8n rows alone, for a closed-set start added to an earlier table (its fine-tunes reused)
    k_shot.main([f"data={data}", *args.split(), f"project={project}", f"out={tmp_path / 'y.md'}"])
    rows = [line.split("|")[1].strip() for line in (tmp_path / "y.md").read_text().splitlines()[4:]]
    assert rows == ["YOLOv8n, no row (k = 0)", *(f"YOLOv8n new row, fine-tune {k}-shot" for k in (1, 2))]
    assert str(tmp_path / "v8.pt") in (tmp_path / "y.md").read_text().splitlines()[0]
    with pytest.raises(SystemExit, match="not held out"):
        k_shot.k_shot_table(str(data), "crazing", None, str(tmp_path / "v8.pt"), shots=(1,), project=str(project))
    with pytest.raises(SystemExit, match="and/or yolo="):
        k_shot.k_shot_table(str(data), "patches", None, shots=(1,), project=str(project))


def test_held_out_k_shot_on_a_trained_visual_path_adds_pooled_rows_and_can_skip_fine_tunes(
    load_example, shared_copy, tmp_path
):
    from ultralytics import YOLO

    from dsmoe_yolo.assets import CFG_DIR

    data = shared_copy("neu-det-mini")
    doc = yaml.safe_load((CFG_DIR / "models" / "dsmoe-ov-lite-yolov8.yaml").read_text())
    doc["head"][-1][3] = ["nc", {"visual": 0.25}]
    (tmp_path / "dsmoe-ov-lite-vis-yolov8n.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    ov = YOLO(str(tmp_path / "dsmoe-ov-lite-vis-yolov8n.yaml"))
    ov.set_classes(["crazing", "inclusion", "pitted_surface", "rolled-in_scale", "scratches"])
    ov.save(str(tmp_path / "ov.pt"))
    table = load_example("held_out_k_shot").k_shot_table(
        str(data), "patches", str(tmp_path / "ov.pt"), shots=(1,), imgsz=64, batch=4, project=str(tmp_path / "k"),
        finetune=False,
    )  # fmt: skip
    labels = [line.split("|")[1].strip() for line in table.splitlines()[4:]]
    assert labels == [
        "text, zero-shot (k = 0)",
        "visual 1-shot (no training)",
        "text + visual 1-shot (no training)",
        "visual 1-shot, pooled (no training)",
        "text + visual 1-shot, pooled (no training)",
    ]
    assert not (tmp_path / "k").exists()  # nothing trained


def test_k_shot_chart_reads_a_table_made_in_two_runs_and_draws_one_panel_per_entry(load_example, tmp_path):
    chart = load_example("k_shot_chart")
    head = "Held out: patches; {} trained on ['a', 'b', 'c']. Fine-tunes: ...\n\n| prompts / start | AP50 patches |\n|---|\n"
    (tmp_path / "ov.md").write_text(
        head.format("ov.pt") + "| text, zero-shot (k = 0) | 0.042 |\n| visual 5-shot (no training) | 0.011 ± 0.002 |\n"
        "| text fine-tune 10-shot | 0.440 ± 0.139 |\n| text fine-tune 5-shot | 0.270 ± 0.120 |\n"
    )  # fmt: skip
    (tmp_path / "v8.md").write_text(
        head.format("v8.pt") + "| YOLOv8n, no row (k = 0) | 0.000 |\n| YOLOv8n new row, fine-tune 5-shot | 0.167 ± 0.140 |\n"
    )  # fmt: skip
    title, series = chart.read_panel([tmp_path / "ov.md", tmp_path / "v8.md"])
    assert title == "patches held out, start trained on 3 classes"
    assert series == {
        "OV, description fine-tuned": [(0, 0.042, 0.0), (5, 0.27, 0.12), (10, 0.44, 0.139)],
        "YOLOv8n, new class row": [(0, 0.0, 0.0), (5, 0.167, 0.14)],
    }
    out = chart.draw([[tmp_path / "ov.md"], [tmp_path / "ov.md", tmp_path / "v8.md"]], tmp_path / "k.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "other.md").write_text("| a | b |\n")
    with pytest.raises(SystemExit, match="not a held_out_k_shot.py table"):
        chart.read_panel([tmp_path / "other.md"])
    with pytest.raises(SystemExit, match="usage: .*panels="):
        chart.main([f"out={tmp_path / 'k.png'}"])


def test_mean_pairwise_cosine_is_one_for_equal_rows_and_zero_for_orthogonal_ones(load_example):
    cosine = load_example("class_text_similarity").mean_pairwise_cosine
    assert cosine(torch.ones(3, 4)) == pytest.approx(1.0)
    assert cosine(torch.eye(4)) == pytest.approx(0.0)
    assert cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least two"):
        cosine(torch.ones(1, 4))


def test_a_training_checkpoint_is_named_by_its_benchmark_and_run_folders(load_example):
    label = load_example("class_text_similarity").run_label
    assert label("/c/deeppcb-5pct/ov-seed0/weights/last.pt") == "deeppcb-5pct/ov-seed0" and label("a.pt") == "a.pt"


def test_class_text_similarity_compares_a_start_and_its_fine_tuned_rows(load_example, pcb_checkpoint, tmp_path):
    from ultralytics import YOLO

    module = load_example("class_text_similarity")
    start = tmp_path / "start.pt"  # the checkpoint's own weights, bound to other prompts (NEU-DET's)
    model = YOLO(str(pcb_checkpoint))
    model.set_classes("neu-det.yaml")
    model.save(str(start))
    start_text = module.class_text(str(start))
    row = module.similarity_row(start_text, str(pcb_checkpoint))
    assert row["classes"] == 6  # DeepPCB's classes, not the start's
    assert row["start"] == pytest.approx(row["tuned"], abs=1e-5)  # same weights, same prompts: the same rows
    with torch.no_grad():
        assert module.mean_pairwise_cosine(start_text(None)) != pytest.approx(row["start"], abs=1e-5)  # not its own
    assert -1.0 <= row["raw"] <= 1.0 and row["pair"].count(" / ") == 1

    out = tmp_path / "similarity.md"
    module.main([f"start={start}", f"models={pcb_checkpoint}", f"out={out}"])
    (line,) = [x for x in out.read_text().splitlines() if x.startswith(f"| {pcb_checkpoint} |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "6"
    assert all(abs(float(c) - row[k]) <= 0.005 + 1e-5 for c, k in zip(cells[2:5], ("raw", "start", "tuned")))
    with pytest.raises(ValueError, match="no ClassText"):
        module.class_text("yolov8n.yaml")
