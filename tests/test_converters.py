"""Dataset converters (dsmoe_yolo/data/converters.py), bundled dataset YAMLs and their prompt files.

Each converter test writes a tiny fixture in the raw format into ``tmp_path`` and checks the YOLO tree, hand-computed
labels, class mapping, clipping / dropping counts, the unknown-class error, the missing-image skip and determinism.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from ultralytics.utils import LOGGER

from dsmoe_yolo.data import converters as cv
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.text.prompts import load_prompts, prompts_for

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "pku-pcb": cv.PKU_PCB_NAMES,
    "aluminum": cv.ALUMINUM_NAMES,
    "deeppcb": cv.DEEPPCB_NAMES,
    "neu-det": cv.NEU_DET_NAMES,
    "gc10-det": cv.GC10_DET_NAMES,
}


# ----------------------------------------------------------------------------------------------------------------------
# Fixture writers
# ----------------------------------------------------------------------------------------------------------------------
def image(path: Path, w: int = 100, h: int = 80, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = 255 - value  # some structure so tiles differ
    assert cv2.imwrite(str(path), img)
    return path


def voc(path: Path, objects, w: int = 100, h: int = 80, filename: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox>"
        "</object>"
        for n, a, b, c, d in objects
    )
    name = filename or path.with_suffix(".jpg").name
    path.write_text(
        f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"{objs}</annotation>",
        encoding="utf-8",
    )
    return path


def labelme(path: Path, shapes, w: int = 100, h: int = 80, image_path: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": "4.5.6",
        "shapes": [{"label": lb, "points": pts, "shape_type": kind} for lb, pts, kind in shapes],
        "imagePath": image_path or path.with_suffix(".jpg").name,
        "imageHeight": h,
        "imageWidth": w,
        "imageData": None,
    }
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def labels(dst: Path, split: str, stem: str) -> list[str]:
    return (dst / "labels" / split / f"{stem}.txt").read_text().splitlines()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def split_of(dst: Path, stem: str) -> str:
    (hit,) = [s for s in ("train", "val") if (dst / "labels" / s / f"{stem}.txt").is_file()]
    return hit


@pytest.fixture
def logs():
    """Messages logged through Ultralytics' LOGGER (which does not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    yield records
    LOGGER.removeHandler(handler)


def warnings_of(records) -> str:
    return "\n".join(r.getMessage() for r in records if r.levelno >= logging.WARNING)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def test_box_helpers(tmp_path):
    assert cv.clip_box((-5, 10, 50, 90), 100, 80) == ((0.0, 10.0, 50.0, 80.0), True)
    assert cv.clip_box((1, 2, 3, 4), 100, 80) == ((1.0, 2.0, 3.0, 4.0), False)
    assert cv.to_yolo((10, 20, 30, 40), 100, 80) == pytest.approx((0.2, 0.375, 0.2, 0.25))
    p = cv.write_yolo_label(tmp_path / "a" / "x.txt", [(2, 0.2, 0.375, 0.2, 0.25), (0, 1 / 3, 0.5, 0.1, 0.1)])
    assert p.read_text() == "2 0.200000 0.375000 0.200000 0.250000\n0 0.333333 0.500000 0.100000 0.100000\n"
    assert cv.write_yolo_label(tmp_path / "e.txt", []).read_text() == ""
    assert cv.normalise_name("Rolled-in Scale") == cv.normalise_name("rolled_in_scale")
    assert cv.tile_origins(200, 64, 0.25) == [0, 48, 96, 136]
    assert cv.tile_origins(50, 64) == [0]
    with pytest.raises(ConfigError, match="not a class"):
        cv.class_lookup(("a", "b"), {"x": "c"})


def test_split_stems_stratified_and_deterministic():
    groups = {f"{g}_{i}": g for g in ("a", "b") for i in range(10)}
    s1, s2 = cv.split_stems(groups, 0.2, seed=3), cv.split_stems(groups, 0.2, seed=3)
    assert s1 == s2
    for g in ("a", "b"):
        assert sum(s1[k] == "val" for k in groups if groups[k] == g) == 2
    assert cv.split_stems({"x": "a"}, 0.0) == {"x": "train"}
    with pytest.raises(ConfigError, match="val="):
        cv.split_stems(groups, 1.5)


# ----------------------------------------------------------------------------------------------------------------------
# PKU-PCB (VOC, class folders)
# ----------------------------------------------------------------------------------------------------------------------
def pku_fixture(src: Path) -> Path:
    root = src / "PCB_DATASET"
    ann, img = root / "Annotations", root / "images"
    objects = [
        ("missing_hole", 10, 20, 30, 40),  # -> 0 0.2 0.375 0.2 0.25
        ("spur", 90, 70, 120, 90),  # out of frame -> clipped to (90, 70, 100, 80)
        ("short", 50, 50, 50.5, 60),  # 0.5 px wide -> dropped
    ]
    voc(ann / "Missing_hole" / "01_missing_hole_01.xml", objects)
    image(img / "Missing_hole" / "01_missing_hole_01.jpg")
    for i in range(1, 4):
        voc(ann / "Spur" / f"01_spur_0{i}.xml", [("Spur", 5, 5, 25, 25)])
        image(img / "Spur" / f"01_spur_0{i}.jpg")
    voc(ann / "Mouse_bite" / "01_mouse_bite_01.xml", [("Mouse_bite", 0, 0, 10, 10), ("open_circuit", 1, 1, 9, 9)])
    image(img / "Mouse_bite" / "01_mouse_bite_01.jpg")
    voc(ann / "Spur" / "01_spur_04.xml", [("spur", 5, 5, 25, 25)])  # image missing -> skipped
    image(img / "Spur" / "01_spur_05.jpg")  # no annotation -> unlabeled
    return src


def test_pku_pcb(tmp_path, logs):
    src = pku_fixture(tmp_path / "raw")
    dst = tmp_path / "out"
    summary = cv.convert_pku_pcb(src, dst)
    assert summary["images"] == {"train": 4, "val": 1}  # Spur folder: 3 images -> 1 val
    assert summary["clipped"] == 1 and summary["dropped"] == 1
    assert summary["skipped"] == 1 and summary["unlabeled"] == 1
    assert summary["boxes"] == {
        "missing_hole": 1, "mouse_bite": 1, "open_circuit": 1, "short": 0, "spur": 4, "spurious_copper": 0
    }  # fmt: skip
    split = split_of(dst, "01_missing_hole_01")
    assert labels(dst, split, "01_missing_hole_01") == [
        "0 0.200000 0.375000 0.200000 0.250000",
        "4 0.950000 0.937500 0.100000 0.125000",
    ]
    assert labels(dst, split_of(dst, "01_mouse_bite_01"), "01_mouse_bite_01")[0].startswith("1 ")
    assert (dst / "images" / split / "01_missing_hole_01.jpg").read_bytes() == (
        src / "PCB_DATASET/images/Missing_hole/01_missing_hole_01.jpg"
    ).read_bytes()  # copied unchanged
    assert not any("01_spur_05" in f for f in tree(dst))  # unlabeled image skipped by default
    warned = warnings_of(logs)
    assert "01_spur_04.xml" in warned and "image is missing" in warned
    assert any("pku-pcb: 4 train / 1 val images" in r.getMessage() for r in logs)

    linked = tmp_path / "linked"
    cv.convert_pku_pcb(src, linked, link=True)
    src_img = src / "PCB_DATASET/images/Spur/01_spur_01.jpg"
    assert (
        linked / "images" / split_of(linked, "01_spur_01") / "01_spur_01.jpg"
    ).stat().st_ino == src_img.stat().st_ino

    again = tmp_path / "again"
    cv.convert_pku_pcb(src, again)
    assert tree(again) == tree(dst)  # deterministic split
    assert cv.convert_pku_pcb(src, dst) == summary  # re-run into the same folder gives the same tree
    assert tree(dst) == tree(again)


def test_pku_pcb_background_and_unknown(tmp_path):
    src = pku_fixture(tmp_path / "raw")
    summary = cv.convert_pku_pcb(src, tmp_path / "bg", background=True)
    assert summary["background"] == 1 and sum(summary["images"].values()) == 6
    assert labels(tmp_path / "bg", split_of(tmp_path / "bg", "01_spur_05"), "01_spur_05") == []

    voc(src / "PCB_DATASET/Annotations/Spur/01_spur_01.xml", [("scratch", 5, 5, 25, 25)])
    with pytest.raises(ConfigError) as e:
        cv.convert_pku_pcb(src, tmp_path / "bad")
    assert "'scratch'" in str(e.value) and "01_spur_01.xml" in str(e.value) and "aliases=" in str(e.value)
    assert not (tmp_path / "bad").exists()  # nothing written before the error
    summary = cv.convert_pku_pcb(src, tmp_path / "alias", aliases={"scratch": "spur"})
    assert summary["boxes"]["spur"] == 4


def test_pku_pcb_tiling_and_resize(tmp_path):
    src = tmp_path / "raw"
    voc(src / "Annotations/Short/a.xml", [("short", 150, 40, 170, 60)], w=200, h=100)
    image(src / "images/Short/a.jpg", 200, 100)
    dst = tmp_path / "tiles"
    summary = cv.convert_pku_pcb(src, dst, val=0.0, tile=64, overlap=0.25)
    # x origins 0, 48, 96, 136; y origins 0, 36: the box lies in x tiles 96 (half inside) and 136, both y tiles
    assert sorted(p.name for p in (dst / "images/train").iterdir()) == [
        "a_136_0.jpg", "a_136_36.jpg", "a_96_0.jpg", "a_96_36.jpg"
    ]  # fmt: skip
    assert summary["images"]["train"] == 4
    assert labels(dst, "train", "a_136_0") == ["3 0.375000 0.781250 0.312500 0.312500"]
    assert cv2.imread(str(dst / "images/train/a_136_0.jpg")).shape[:2] == (64, 64)
    empty = cv.convert_pku_pcb(src, tmp_path / "all", val=0.0, tile=64, overlap=0.25, keep_empty=True)
    assert empty["images"]["train"] == 8 and empty["background"] == 4

    small = tmp_path / "small"
    cv.convert_pku_pcb(src, small, val=0.0, max_size=100)
    assert cv2.imread(str(small / "images/train/a.jpg")).shape[:2] == (50, 100)
    assert labels(small, "train", "a") == ["3 0.800000 0.500000 0.100000 0.200000"]
    with pytest.raises(ConfigError, match="tile="):
        cv.convert_pku_pcb(src, tmp_path / "x", tile=8)


# ----------------------------------------------------------------------------------------------------------------------
# Aluminium (labelme JSON, Chinese / pinyin labels)
# ----------------------------------------------------------------------------------------------------------------------
def aluminum_fixture(src: Path) -> Path:
    folder = src / "铝型材" / "擦花"
    rect = "rectangle"
    labelme(folder / "a1.json", [
        ("擦花", [[30, 40], [10, 20]], rect),  # scratch, corners in reverse order -> 1 0.2 0.375 0.2 0.25
        ("针孔", [[50, 50], [52, 50], [52, 53]], "polygon"),  # pinhole
        ("脏点", [[-10, 60], [20, 70]], rect),  # contamination, clipped
        ("折皱", [[40, 10], [40.4, 30]], rect),  # crease, 0.4 px wide -> dropped
    ])  # fmt: skip
    image(folder / "a1.jpg")
    labelme(folder / "a2.json", [("zhe_zhou", [[0, 0], [20, 10]], rect), ("ca_shang", [[5, 5], [9, 30]], rect)])
    image(folder / "a2.jpg")
    labelme(folder / "a3.json", [("zang_wu", [[1, 1], [8, 8]], rect), ("褶皱", [[10, 10], [30, 12]], rect)])
    image(folder / "a3.jpg")
    labelme(folder / "a4.json", [("zhen_kong", [[3, 3], [6, 6]], rect)], image_path="..\\missing\\a4.jpg")
    image(src / "无瑕疵样本" / "n1.jpg")  # defect-free, no JSON
    return src


def test_aluminum(tmp_path, logs):
    src = aluminum_fixture(tmp_path / "raw")
    dst = tmp_path / "out"
    summary = cv.convert_aluminum(src, dst)
    assert sum(summary["images"].values()) == 3
    assert summary["boxes"] == {"pinhole": 1, "scratch": 2, "contamination": 2, "crease": 2}
    assert summary["clipped"] == 1 and summary["dropped"] == 1
    assert summary["skipped"] == 1 and summary["unlabeled"] == 1
    assert labels(dst, split_of(dst, "a1"), "a1") == [
        "1 0.200000 0.375000 0.200000 0.250000",
        "0 0.510000 0.643750 0.020000 0.037500",
        "2 0.100000 0.812500 0.200000 0.125000",
    ]
    assert "a4.json" in warnings_of(logs)
    cv.convert_aluminum(src, tmp_path / "again")
    assert tree(tmp_path / "again") == tree(dst)
    assert cv.convert_aluminum(src, tmp_path / "bg", background=True)["background"] == 1


def test_aluminum_unknown_labels(tmp_path, logs):
    src = aluminum_fixture(tmp_path / "raw")
    labelme(src / "其他" / "b1.json", [("不导电", [[1, 1], [9, 9]], "rectangle")])
    image(src / "其他" / "b1.jpg")
    labelme(
        src / "其他" / "b2.json", [("桔皮", [[1, 1], [9, 9]], "rectangle"), ("针孔", [[2, 2], [4, 4]], "rectangle")]
    )
    image(src / "其他" / "b2.jpg")
    with pytest.raises(ConfigError) as e:
        cv.convert_aluminum(src, tmp_path / "bad")
    msg = str(e.value)
    assert "不导电" in msg and "桔皮" in msg and "b1.json" in msg and "ignore_unknown=True" in msg
    dst = tmp_path / "out"
    summary = cv.convert_aluminum(src, dst, ignore_unknown=True)
    assert summary["ignored"] == 2
    assert sum(summary["images"].values()) == 4  # b1 (only an unknown box) skipped, b2 kept with its pinhole
    assert labels(dst, split_of(dst, "b2"), "b2") == ["0 0.030000 0.037500 0.020000 0.025000"]
    assert "ignore_unknown=True: skipped 2 box(es)" in warnings_of(logs)


# ----------------------------------------------------------------------------------------------------------------------
# DeepPCB (txt boxes, official split lists)
# ----------------------------------------------------------------------------------------------------------------------
def deeppcb_fixture(src: Path) -> Path:
    data = src / "DeepPCB-master" / "PCBData"
    group, boxes = data / "group00041", data / "group00041" / "00041_not"
    rows = {
        "00041000": "10,20,30,40,1\n5 5 70 20 2\n20 20 20 30 3\n",  # commas; clipped (x2 70 > 64); degenerate
        "00041001": "1 1 9 9 4\n2 2 12 12 5\n",
        "00041002": "3 3 13 13 6\n",
        "00041003": "3 3 13 13 1\n",  # image missing -> skipped
    }
    for i, text in rows.items():
        boxes.mkdir(parents=True, exist_ok=True)
        (boxes / f"{i}.txt").write_text(text)
        if i != "00041003":
            image(group / "00041" / f"{i}_test.jpg", 64, 64, 255)
            image(group / "00041" / f"{i}_temp.jpg", 64, 64, 200)
    line = "group00041/00041/{0}.jpg group00041/00041_not/{0}.txt\n".format
    (data / "trainval.txt").write_text(line("00041000") + line("00041001"))
    (data / "test.txt").write_text(line("00041002") + line("00041003"))
    return src


def test_deeppcb(tmp_path, logs):
    src = deeppcb_fixture(tmp_path / "raw")
    dst = tmp_path / "out"
    summary = cv.convert_deeppcb(src, dst, templates=True)
    assert summary["images"] == {"train": 2, "val": 1}
    assert summary["boxes"] == {"open": 1, "short": 1, "mousebite": 0, "spur": 1, "copper": 1, "pin-hole": 1}
    assert summary["clipped"] == 1 and summary["dropped"] == 1 and summary["skipped"] == 1
    assert tree(dst) == [
        "images/train/00041000.jpg", "images/train/00041001.jpg", "images/val/00041002.jpg",
        "labels/train/00041000.txt", "labels/train/00041001.txt", "labels/val/00041002.txt",
        "templates/train/00041000.jpg", "templates/train/00041001.jpg", "templates/val/00041002.jpg",
    ]  # fmt: skip
    assert labels(dst, "train", "00041000") == [
        "0 0.312500 0.468750 0.312500 0.312500",
        "1 0.539062 0.195312 0.921875 0.234375",
    ]
    assert labels(dst, "val", "00041002") == ["5 0.125000 0.125000 0.156250 0.156250"]
    assert "00041003.txt" in warnings_of(logs)
    cv.convert_deeppcb(src / "DeepPCB-master" / "PCBData", tmp_path / "again", templates=True)
    assert tree(tmp_path / "again") == tree(dst)


def test_deeppcb_unknown_type(tmp_path):
    src = deeppcb_fixture(tmp_path / "raw")
    (src / "DeepPCB-master/PCBData/group00041/00041_not/00041001.txt").write_text("1 1 9 9 7\n")
    with pytest.raises(ConfigError, match=r"\['7'\].*00041001\.txt.*1\.\.6"):
        cv.convert_deeppcb(src, tmp_path / "bad")
    assert cv.convert_deeppcb(src, tmp_path / "ok", ignore_unknown=True)["images"]["train"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# NEU-DET (VOC, file-name categories)
# ----------------------------------------------------------------------------------------------------------------------
def neu_fixture(src: Path) -> Path:
    root = src / "NEU-DET"
    for cat in ("crazing", "rolled-in_scale"):
        for i in range(1, 6):
            voc(root / "ANNOTATIONS" / f"{cat}_{i}.xml", [(cat, 2, 4, 12, 14)], w=20, h=20)
            image(root / "IMAGES" / f"{cat}_{i}.jpg", 20, 20)
    voc(root / "ANNOTATIONS" / "scratches_1.xml", [("scratches", 0, 0, 5, 5)], w=20, h=20)  # image missing
    return src


def test_neu_det(tmp_path, logs):
    src = neu_fixture(tmp_path / "raw")
    root = src / "NEU-DET"
    image(root / "IMAGES" / "crazing_1.jpg", 40, 40)  # upscaled copy: XML keeps the 20x20 frame
    voc(root / "ANNOTATIONS" / "crazing_1.xml", [("crazing", 2, 4, 12, 14), ("patches", 15, 15, 25, 25)], w=20, h=20)
    dst = tmp_path / "out"
    summary = cv.convert_neu_det(src, dst)
    assert summary["images"] == {"train": 8, "val": 2}
    assert summary["skipped"] == 1 and summary["clipped"] == 1
    for cat in ("crazing", "rolled-in_scale"):  # stratified by file-name category: 1 of 5 each in val
        assert sum(split_of(dst, f"{cat}_{i}") == "val" for i in range(1, 6)) == 1
    assert labels(dst, split_of(dst, "rolled-in_scale_2"), "rolled-in_scale_2") == [
        "4 0.350000 0.450000 0.500000 0.500000"
    ]
    assert labels(dst, split_of(dst, "crazing_1"), "crazing_1") == [
        "0 0.350000 0.450000 0.500000 0.500000",
        "2 0.875000 0.875000 0.250000 0.250000",
    ]  # normalised by the XML size, second box clipped to 20x20
    warned = warnings_of(logs)
    assert "scratches_1.xml" in warned and "differ in size" in warned
    cv.convert_neu_det(src, tmp_path / "again")
    assert tree(tmp_path / "again") == tree(dst)
    restored = cv.convert_neu_det(src, tmp_path / "small", max_size=20)
    assert restored == {**summary, "dst": str(tmp_path / "small")}
    small = tmp_path / "small" / "images" / split_of(tmp_path / "small", "crazing_1") / "crazing_1.jpg"
    assert cv2.imread(str(small)).shape[:2] == (20, 20)

    voc(root / "ANNOTATIONS" / "crazing_2.xml", [("crack", 2, 4, 12, 14)], w=20, h=20)
    with pytest.raises(ConfigError, match=r"\['crack'\].*crazing_2\.xml"):
        cv.convert_neu_det(src, tmp_path / "bad")


# ----------------------------------------------------------------------------------------------------------------------
# GC10-DET (VOC in lable/, class-number folders)
# ----------------------------------------------------------------------------------------------------------------------
def gc10_fixture(src: Path) -> Path:
    voc(src / "lable" / "img_01.xml", [("1_chongkong", 10, 20, 30, 40)])
    image(src / "1" / "img_01.jpg")
    image(src / "2" / "img_01.jpg")  # the same file name in another folder -> used once
    voc(src / "lable" / "img_02.xml", [("welding_line", 0, 0, 100, 10), ("hanfeng", 0, 70, 100, 90)])
    image(src / "2" / "img_02.jpg")
    voc(src / "lable" / "img_03.xml", [("4_shuiban", 1, 1, 5, 5), ("10_yaozhed", 2, 2, 9, 9), ("8", 3, 3, 6, 6)])
    image(src / "4" / "img_03.jpg")
    voc(src / "lable" / "img_04.xml", [("oil_spot", 1, 1, 5, 5), ("7_yiwu", 1, 1, 1.5, 5)])
    image(src / "5" / "img_04.jpg")
    voc(src / "lable" / "img_05.xml", [("6_siban", 1, 1, 5, 5)])  # image missing
    image(src / "9" / "img_06.jpg")  # no XML
    return src


def test_gc10_det(tmp_path, logs):
    src = gc10_fixture(tmp_path / "raw")
    dst = tmp_path / "out"
    summary = cv.convert_gc10_det(src, dst)
    assert sum(summary["images"].values()) == 4
    assert summary["clipped"] == 1 and summary["dropped"] == 1
    assert summary["skipped"] == 1 and summary["unlabeled"] == 1
    assert {k: v for k, v in summary["boxes"].items() if v} == {
        "punching_hole": 1, "welding_line": 2, "water_spot": 1, "oil_spot": 1, "rolled_pit": 1, "waist_folding": 1
    }  # fmt: skip
    assert labels(dst, split_of(dst, "img_01"), "img_01") == ["0 0.200000 0.375000 0.200000 0.250000"]
    assert [r.split()[0] for r in labels(dst, split_of(dst, "img_03"), "img_03")] == ["3", "9", "7"]
    assert labels(dst, split_of(dst, "img_02"), "img_02")[1] == "1 0.500000 0.937500 1.000000 0.125000"
    warned = warnings_of(logs)
    assert "img_05.xml" in warned and "share a file name" in warned
    cv.convert_gc10_det(src, tmp_path / "again")
    assert tree(tmp_path / "again") == tree(dst)

    voc(src / "lable" / "img_04.xml", [("d", 1, 1, 5, 5)])
    with pytest.raises(ConfigError, match=r"\['d'\].*img_04\.xml"):
        cv.convert_gc10_det(src, tmp_path / "bad")


def test_refuses_to_overwrite_source(tmp_path):
    src = gc10_fixture(tmp_path / "raw")
    with pytest.raises(ConfigError, match="overwrite the source"):
        cv.convert_gc10_det(src, src)
    with pytest.raises(FileNotFoundError, match="not found"):
        cv.convert_gc10_det(tmp_path / "nope", tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------------------
# Dataset YAMLs and prompt files
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_yaml(name):
    data = yaml.safe_load((ROOT / "datasets" / f"{name}.yaml").read_text(encoding="utf-8"))
    for key in ("path", "train", "val", "names", "download", "prompts"):
        assert data.get(key), f"{name}.yaml lacks '{key}'"
    assert data["path"] == name and (data["train"], data["val"]) == ("images/train", "images/val")
    names = [data["names"][i] for i in range(len(data["names"]))]
    assert tuple(names) == DATASETS[name]
    compile(data["download"], f"{name}.yaml:download", "exec")
    assert "from dsmoe_yolo.data.converters import convert_" in data["download"]
    prompts = load_prompts(ROOT / "cfg" / "prompts" / data["prompts"])
    texts = prompts_for(names, prompts, source=data["prompts"])
    assert all(len(t) == 4 for t in texts)


@pytest.mark.parametrize("name", ["pku-pcb", "aluminum", "gc10-det"])
def test_download_without_raw_explains(name, tmp_path):
    data = yaml.safe_load((ROOT / "datasets" / f"{name}.yaml").read_text(encoding="utf-8"))
    with pytest.raises(FileNotFoundError, match="no stable direct download") as e:
        exec(data["download"], {"yaml": {"path": tmp_path / name}})  # noqa: S102 - as Ultralytics runs it
    assert str(tmp_path / name / "raw") in str(e.value)


@pytest.mark.parametrize(
    "name, fixture",
    [("deeppcb", deeppcb_fixture), ("pku-pcb", pku_fixture), ("neu-det", neu_fixture), ("gc10-det", gc10_fixture)],
)
def test_download_block_converts_existing_raw(name, fixture, tmp_path):
    """With the raw files already in <root>/raw the block downloads nothing and converts them in place."""
    data = yaml.safe_load((ROOT / "datasets" / f"{name}.yaml").read_text(encoding="utf-8"))
    root = tmp_path / name
    fixture(root / "raw")
    exec(data["download"], {"yaml": {"path": root}})  # noqa: S102 - as Ultralytics runs it
    assert any((root / "images" / "train").iterdir()) and any((root / "labels" / "train").iterdir())
