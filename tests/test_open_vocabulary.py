"""Open-vocabulary DS-MoE models (``dsmoe-ov-*.yaml``, ``PromptDetect`` head): the prompts are the classifier.

Unit tests on freshly built models (random weights, eval mode): what is checked is how outputs follow the prompts,
which holds for any weights. The end-to-end test trains one epoch through the stock ``yolo`` command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from dsmoe_yolo.errors import ConfigError

IMG = 96


@pytest.fixture
def ov_model():
    from ultralytics import YOLO

    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.model.eval()
    return model


def outputs(model, x):
    with torch.no_grad():
        return model.model(x)[0]  # (B, 4 + nc, anchors)


def test_ov_yaml_builds_a_prompt_head_fed_by_the_class_text(ov_model):
    from dsmoe_yolo.nn import ClassText, PromptDetect

    head = ov_model.model.model[-1]
    assert isinstance(head, PromptDetect)
    texts = [m for m in ov_model.model.modules() if isinstance(m, ClassText)]
    assert len(texts) == 1 and not texts[0].index_encoding and not hasattr(texts[0], "pos_scale")
    assert head.f[-1] == texts[0].i  # the head reads the same class text as the DS-MoE stages


def test_closed_set_yaml_keeps_its_detect_head_and_index_encoding():
    from ultralytics import YOLO
    from ultralytics.nn.modules import Detect

    from dsmoe_yolo.nn import ClassText, PromptDetect

    model = YOLO("dsmoe-lite-yolov8n.yaml").model
    assert type(model.model[-1]) is Detect and not isinstance(model.model[-1], PromptDetect)
    (text,) = [m for m in model.modules() if isinstance(m, ClassText)]
    assert text.index_encoding and isinstance(text.pos_scale, torch.nn.Parameter)


def test_head_weights_do_not_depend_on_the_class_count():
    from ultralytics import YOLO

    a = YOLO("dsmoe-ov-lite-yolov8n.yaml").model.model[-1].state_dict()
    from ultralytics.nn.tasks import DetectionModel

    b = DetectionModel("dsmoe-ov-lite-yolov8n.yaml", nc=80, verbose=False).model[-1].state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_class_count_follows_the_prompts_without_untrained_rows_warning(ov_model, caplog):
    from ultralytics.utils import LOGGER

    x = torch.rand(1, 3, IMG, IMG)
    ov_model.set_classes(list("abcdef"), embeddings=torch.randn(6, 384))
    assert outputs(ov_model, x).shape[1] == 4 + 6
    LOGGER.addHandler(caplog.handler)
    try:
        ov_model.set_classes(["crack", "hole"], embeddings=torch.randn(2, 384))
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert outputs(ov_model, x).shape[1] == 4 + 2
    assert ov_model.names == {0: "crack", 1: "hole"}
    assert not any("untrained" in r.getMessage() for r in caplog.records)


def test_prompts_in_another_order_give_the_same_boxes_under_the_new_indices(ov_model):
    """Every DS-MoE stage and the head treat the class text as a set: permuting the prompts permutes the scores."""
    torch.manual_seed(0)
    emb, x = torch.randn(5, 384), torch.rand(2, 3, IMG, IMG)
    ov_model.set_classes(list("abcde"), embeddings=emb)
    before = outputs(ov_model, x)
    perm = [3, 0, 4, 1, 2]
    ov_model.set_classes([list("abcde")[i] for i in perm], embeddings=emb[perm])
    after = outputs(ov_model, x)
    torch.testing.assert_close(after[:, :4], before[:, :4], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after[:, 4:], before[:, 4:][:, perm], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(after[:, 4:], before[:, 4:], atol=1e-6)  # the scores did move with their classes


def test_a_renamed_class_keeps_its_detections_when_its_description_is_kept(ov_model):
    x = torch.rand(1, 3, IMG, IMG)
    described = {"crack": "a thin dark line across the steel", "hole": "a small round dark pit"}
    ov_model.set_classes(described)
    before = outputs(ov_model, x)
    ov_model.set_classes({"fissure": described["crack"], "hole": described["hole"]})
    torch.testing.assert_close(outputs(ov_model, x), before)
    assert ov_model.names == {0: "fissure", 1: "hole"}
    ov_model.set_classes({"fissure": "a large bright patch", "hole": described["hole"]})
    assert not torch.allclose(outputs(ov_model, x)[:, 4], before[:, 4])  # the description, not the name, decides


def test_a_checkpoint_round_trip_keeps_the_prompts(ov_model, tmp_path):
    from ultralytics import YOLO

    prompts = {"scratch": ["a long thin bright line"], "pit": ["a small dark round spot", "a tiny crater"]}
    ov_model.set_classes(prompts)
    x = torch.rand(1, 3, IMG, IMG)
    expected = outputs(ov_model, x)
    path = tmp_path / "ov.pt"
    ov_model.save(str(path))
    loaded = YOLO(str(path))
    loaded.model.eval()
    assert loaded.names == {0: "scratch", 1: "pit"}
    from dsmoe_yolo.text.binding import class_texts

    meta = class_texts(loaded.model)[0].text_meta
    assert meta["prompts"] == prompts and meta["names"] == ["scratch", "pit"]
    torch.testing.assert_close(outputs(loaded, x), expected)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
def test_export_bakes_the_current_prompts_and_matches_pytorch(ov_model, tmp_path, fmt):
    from ultralytics import YOLO

    if fmt == "openvino":
        pytest.importorskip("openvino", reason="openvino is in the [export] extra")
    # 128 px: OpenVINO's shape inference rejects the pyramid expert's 4x4 pooling on the 2x2 P5 map of a 64 px input
    imgsz = 128 if fmt == "openvino" else 64
    ov_model.set_classes(["crack", "hole", "stain"], embeddings=torch.randn(3, 384))
    path = tmp_path / "ov.pt"
    ov_model.save(str(path))
    model = YOLO(str(path))
    exported = model.export(format=fmt, imgsz=imgsz)
    x = torch.rand(1, 3, imgsz, imgsz)
    net = YOLO(str(path)).model.fuse(verbose=False).eval()
    with torch.no_grad():
        expected = net(x)[0].numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    elif fmt == "openvino":
        import openvino as ov

        core = ov.Core()
        got = core.compile_model(core.read_model(next(Path(exported).glob("*.xml"))), "CPU")(x.numpy())[0]
        assert YOLO(exported, task="detect").predict(x, imgsz=imgsz, verbose=False)[0].names == {
            0: "crack",
            1: "hole",
            2: "stain",
        }
    else:
        got = torch.jit.load(exported)(x)
        got = (got[0] if isinstance(got, (tuple, list)) else got).numpy()
    assert got.shape == expected.shape == (1, 4 + 3, expected.shape[-1])
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


# --- bad input: one clear line each -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names,match",
    [
        ([], "no class prompts given"),
        (["crack", "  "], "empty or whitespace-only names"),
        (["crack", "crack"], r"\['crack'\] more than once"),
        ({"crack": "   "}, "empty or whitespace-only description"),
        ("missing-prompts.yaml", "prompt file 'missing-prompts.yaml' not found"),
    ],
)
def test_bad_prompts_are_refused_with_one_line(ov_model, names, match):
    with pytest.raises(ConfigError, match=match):
        ov_model.set_classes(names)


def test_a_prompt_longer_than_the_encoder_context_is_truncated_with_a_warning(ov_model, caplog):
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    try:
        ov_model.set_classes({"crack": "a long thin dark line " * 60})
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert any("tokens, more than the 128" in r.getMessage() for r in caplog.records)
    assert ov_model.names == {0: "crack"}


def test_new_prompts_for_a_checkpoint_whose_encoder_is_missing_name_the_encoder(ov_model):
    from dsmoe_yolo.text.binding import class_texts

    ov_model.set_classes(["a", "b"], embeddings=torch.randn(2, 384))
    class_texts(ov_model.model)[0].text_meta["encoder"] = "some-org/encoder-not-here"
    with pytest.raises(ConfigError, match=r"embedded with 'some-org/encoder-not-here', which is not on this machine"):
        ov_model.set_classes(["crack"])
    assert ov_model.names == {0: "a", 1: "b"}  # nothing changed


def test_prompts_of_another_width_than_the_checkpoint_are_refused_before_anything_changes(ov_model):
    ov_model.set_classes(["a", "b"], embeddings=torch.randn(2, 384))
    with pytest.raises(ConfigError, match="1536-dim but this model was trained with 384-dim text"):
        ov_model.set_classes(["crack"], embeddings=torch.randn(1, 1536))
    assert ov_model.names == {0: "a", 1: "b"}


def test_prompts_argument_predicts_the_prompted_classes(ov_model):
    ov_model.set_classes(["open", "short", "spur"])  # embedded with MiniLM, as at training
    image = np.random.default_rng(0).integers(0, 255, (IMG, IMG, 3), dtype=np.uint8)
    result = ov_model.predict(image, prompts="crack,hole", imgsz=IMG, conf=0.0, verbose=False)[0]
    assert result.names == {0: "crack", 1: "hole"}
    assert len(result.boxes) and set(result.boxes.cls.int().tolist()) <= {0, 1}


def test_prompts_argument_on_a_closed_set_model_is_one_line():
    from ultralytics import YOLO

    model = YOLO("dsmoe-lite-yolov8n.yaml")
    with pytest.raises(ConfigError, match="head is closed-set"):
        model.predict(np.zeros((64, 64, 3), np.uint8), prompts="crack")


@pytest.mark.slow
def test_train_then_predict_and_val_with_prompts_through_the_yolo_command(tmp_path, tiny_data):
    """``yolo train`` an open-vocabulary model, then ``prompts=`` on ``yolo predict`` (a prompt file) and ``yolo val``
    on data with other class names (the data's names become the prompts, said in the log)."""
    run_cli(
        f"yolo train model=dsmoe-ov-lite-yolov8n.yaml data={tiny_data} epochs=1 imgsz=64 batch=4 workers=0 "
        f"project={tmp_path} name=t plots=False",
        cwd=tmp_path,
    )
    best = tmp_path / "t" / "weights" / "best.pt"
    prompts = tmp_path / "two.yaml"
    prompts.write_text("prompts:\n  crack: [a thin dark line]\n  hole: [a small round pit]\n")
    out = run_cli(
        f"yolo predict model={best} source={tiny_data.parent / 'images' / 'val'} imgsz=64 conf=0.0 "
        f"prompts={prompts} save_txt=True project={tmp_path} name=p",
        cwd=tmp_path,
    )
    labels = list((tmp_path / "p" / "labels").glob("*.txt"))
    assert labels, out.stdout[-2000:]
    classes = {int(line.split()[0]) for f in labels for line in f.read_text().splitlines()}
    assert classes <= {0, 1}
    doc = json.loads(tiny_data.read_text())
    doc["names"] = {k: ("fissure" if v == "open" else v) for k, v in doc["names"].items()}
    doc.pop("prompts")  # the renamed class has no bundled description: templates, as at training
    other = tmp_path / "other.yaml"
    other.write_text(json.dumps(doc))
    out = run_cli(f"yolo val model={best} data={other} imgsz=64 project={tmp_path} name=v", cwd=tmp_path, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "open-vocabulary model validated on the data's classes" in text, text[-3000:]
    assert "fissure" in text


@pytest.mark.parametrize("closed", ["dsmoe-lite-yolov8.yaml", "dsmoe-yolov8.yaml"])
def test_ov_yamls_are_the_closed_set_ones_but_for_the_text_code_and_the_head(closed):
    """The open-vocabulary YAMLs cannot drift from the closed-set ones they extend by two rows."""
    import yaml

    import dsmoe_yolo

    folder = dsmoe_yolo.CFG_DIR / "models"
    a = yaml.safe_load((folder / closed).read_text())
    b = yaml.safe_load((folder / closed.replace("dsmoe-", "dsmoe-ov-", 1)).read_text())
    assert {k: v for k, v in a.items() if k not in ("backbone", "head")} == {
        k: v for k, v in b.items() if k not in ("backbone", "head")
    }
    rows_a, rows_b = a["backbone"] + a["head"], b["backbone"] + b["head"]
    changed = [i for i, (x, y) in enumerate(zip(rows_a, rows_b)) if x != y]
    text = next(i for i, r in enumerate(rows_a) if r[2] == "ClassText")
    assert changed == [text, len(rows_a) - 1] and len(rows_a) == len(rows_b)
    assert rows_b[text][3] == [*rows_a[text][3], {"index_encoding": False}]
    assert rows_b[-1] == [[*rows_a[-1][0], text], 1, "PromptDetect", ["nc"]]


def test_set_classes_after_a_predict_reaches_the_next_predict(ov_model):
    """``YOLO.set_classes`` went to the DetectionModel only, so the wrapper's cached predictor kept the old names."""
    image = np.zeros((IMG, IMG, 3), np.uint8)
    ov_model.set_classes(["open", "short", "spur"])
    ov_model.predict(image, imgsz=IMG, verbose=False)
    ov_model.set_classes(["crack", "hole"])
    assert ov_model.predict(image, imgsz=IMG, verbose=False)[0].names == {0: "crack", 1: "hole"}


def test_stock_yolo_still_has_no_set_classes():
    from ultralytics import YOLO

    assert not hasattr(YOLO("yolov8n.yaml"), "set_classes")
