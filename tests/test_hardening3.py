"""Issue "Hardening 3": silent wrong answers and slow wrong advice, each reproduced, then answered with one line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import dsmoe_yolo
from dsmoe_yolo.errors import ConfigError

NEU = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


@pytest.fixture
def log_records(caplog):
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    yield caplog
    LOGGER.removeHandler(caplog.handler)


def _renamed_neu(shared_copy, tmp_path):
    data = shared_copy("neu-det-mini")
    doc = yaml.safe_load(data.read_text())
    doc["names"] = {**doc["names"], 0: "cracks", 5: "lines"}
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(json.dumps({**doc, "path": str(data.parent)}))
    return renamed


def test_closed_set_val_on_data_with_other_class_names_warns_naming_them(shared_copy, tmp_path, log_records):
    """Case 1: a closed-set model validated on data whose classes 0 and 5 are renamed said nothing."""
    from ultralytics import YOLO

    model = YOLO("dsmoe-lite-yolov8n.yaml")
    model.set_classes(NEU, embeddings=torch.randn(6, 384))
    model.val(data=str(_renamed_neu(shared_copy, tmp_path)), imgsz=64, batch=8, plots=False)
    (warning,) = [r.getMessage() for r in log_records.records if "differ from this closed-set model" in r.getMessage()]
    assert "0: 'crazing' vs 'cracks'" in warning and "5: 'scratches' vs 'lines'" in warning


def test_open_vocabulary_val_takes_the_data_names_as_prompts(shared_copy, tmp_path, log_records):
    from ultralytics import YOLO

    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes("neu-det.yaml")
    model.val(data=str(_renamed_neu(shared_copy, tmp_path)), imgsz=64, batch=8, plots=False)
    assert any("validated on the data's classes" in r.getMessage() for r in log_records.records)
    assert model.names[0] == "cracks" and model.names[5] == "lines"


def test_an_unknown_encoder_name_is_refused_at_once_naming_the_accepted_ones():
    """Case 3: text_encoder=nonexistent tried the hub (~60 s offline), then advised reinstalling MiniLM."""
    from dsmoe_yolo.text.encoder import resolve_encoder_id

    with pytest.raises(
        ConfigError,
        match=r"text_encoder='nonexistent' is not an encoder: use auto, .*minilm.*local model folder \(none at .*nonexistent\)",
    ):
        resolve_encoder_id("nonexistent")


def test_a_negative_width_names_its_row_in_one_line(tmp_path):
    """Case 4: `SpaceBroadcast, [-256]` gave a 35-line traceback ("negative dimension -64")."""
    from ultralytics.nn.tasks import DetectionModel

    doc = yaml.safe_load((dsmoe_yolo.CFG_DIR / "models" / "dsmoe-lite-yolov8.yaml").read_text())
    rows = doc["backbone"] + doc["head"]
    i = next(i for i, r in enumerate(rows) if r[2] == "SpaceBroadcast")
    doc["head"][i - len(doc["backbone"])][3] = [-256]
    bad = tmp_path / "bad-yolov8n.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(
        ConfigError, match=rf"row {i} \(SpaceBroadcast\): the output channels c2 must be positive, got -256"
    ):
        DetectionModel(str(bad), verbose=False)


@pytest.fixture
def exported(tmp_path):
    """An ONNX export of a DS-MoE model that records the data it was trained on (``args.data``)."""
    from ultralytics import YOLO

    def export(data: str):
        model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
        model.set_classes(NEU, embeddings=torch.randn(6, 384))
        path = tmp_path / "m.pt"
        model.save(str(path))
        ckpt = torch.load(path, weights_only=False)
        ckpt["train_args"] = {"data": data, "imgsz": 64, "task": "detect"}  # as a training writes it
        torch.save(ckpt, path)
        return YOLO(str(path)).export(format="onnx", imgsz=64)

    return export


def test_val_of_an_export_without_data_asks_for_it_in_one_line(exported, tmp_path):
    """Case 5: `yolo val model=best.onnx` without data= fell back to coco8 and a 99-line ConnectionError offline."""
    from ultralytics import YOLO

    onnx = exported(str(tmp_path / "gone" / "data.yaml"))
    with pytest.raises(
        ConfigError, match=r"needs data=your.yaml \(it was trained on .*gone/data.yaml, not found here\)"
    ):
        YOLO(onnx).val(imgsz=64)


def test_val_of_an_export_without_data_uses_its_training_data_when_here(exported, shared_copy, log_records):
    from ultralytics import YOLO

    data = shared_copy("neu-det-mini")
    metrics = YOLO(exported(str(data))).val(imgsz=64, batch=1, plots=False)
    assert any(
        f"validating on the data this model was trained on, {data}" in r.getMessage() for r in log_records.records
    )
    assert metrics.box.map50 >= 0


def test_the_synthetic_set_log_line_names_where_it_went(monkeypatch, tmp_path, log_records):
    """Case 6: after "the synthetic set goes to ~/.cache/dsmoe_yolo/datasets", Ultralytics said it was saved to
    <cwd>/datasets. The line after the generator ran now names the folder it wrote."""
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.data import synth

    monkeypatch.setattr(synth, "generate", lambda root, **kw: tmp_path / "dsmoe-synth")
    synth.generate_bundled(tmp_path / "dsmoe-synth")
    LOGGER.info("Dataset download success ✅ (3.2s), saved to /somewhere/else/datasets\n")
    LOGGER.info("Dataset download success ✅ (1.0s), saved to /another/one\n")  # one-shot: later lines untouched
    lines = [r.getMessage() for r in log_records.records if "saved to" in r.getMessage()]
    assert lines[0].strip() == f"dsmoe-synth: generated (3.2s), saved to {tmp_path / 'dsmoe-synth'}"
    assert "/another/one" in lines[1]


def test_onnx_export_of_a_dsmoe_model_prints_no_constant_folding_warnings(tmp_path):
    import warnings

    from ultralytics import YOLO

    model = YOLO("dsmoe-lite-yolov8n.yaml")
    model.set_classes(NEU, embeddings=torch.randn(6, 384))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.export(format="onnx", imgsz=64)
    assert not [w for w in seen if "Constant folding" in str(w.message)]


def _flip_weight_bytes(path, n: int = 41) -> None:
    """Flip ``n`` low mantissa bits a third of the way into the largest tensor of a checkpoint, in place (the zip's
    CRC is not checked by torch.load, as with the damaged file of the issue)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        start = info.header_offset + 30 + name_len + extra_len + (info.file_size // 3) // 2 * 2
        for k in range(n):
            f.seek(start + 2 * k)  # the low byte of a float16: the value stays finite
            b = f.read(1)[0]
            f.seek(start + 2 * k)
            f.write(bytes([b ^ 0x01]))


def test_a_bit_flipped_checkpoint_is_refused_in_one_line_naming_the_file(tmp_path, monkeypatch):
    """Case 2: a best.pt with 41 bytes flipped loaded and predicted differently, with no warning (the NaN/Inf check
    does not see finite corruption). The digest written at save time catches it; DSMOE_IGNORE_DIGEST=1 loads it."""
    from ultralytics import YOLO

    from dsmoe_yolo.checkpoint import CheckpointError

    model = YOLO("dsmoe-lite-yolov8n.yaml")
    model.set_classes(NEU, embeddings=torch.randn(6, 384))
    path = tmp_path / "best.pt"
    model.save(str(path))
    YOLO(str(path))  # intact: loads
    _flip_weight_bytes(path)
    with pytest.raises(
        CheckpointError, match=r"best.pt: the 'model' weights do not match the integrity digest.*DSMOE_IGNORE_DIGEST=1"
    ):
        YOLO(str(path))
    monkeypatch.setenv("DSMOE_IGNORE_DIGEST", "1")
    assert YOLO(str(path)).names[0] == "crazing"


def test_stock_models_carry_no_digest(tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "stock.pt"
    YOLO("yolov8n.yaml").save(str(path))
    assert "dsmoe_digest" not in vars(torch.load(path, weights_only=False)["model"])
