"""Visual prompts (``dsmoe_yolo.visual_prompts``): classes given by example boxes on example images.

Unit tests on freshly built open-vocabulary models: what is checked holds for any weights (where the prototype goes,
how it is scored, saved and exported, and the bad inputs). "Another image" is the example image shifted by a multiple
of the largest stride: convolutional features move with it, so the boxed defect is found at its new place.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsmoe_yolo.errors import ConfigError

SIZE = 128


@pytest.fixture
def ov_model():
    from ultralytics import YOLO

    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes(["open", "short"])  # MiniLM, as a training binds them
    return model


@pytest.fixture
def example():
    """A textured image with one bright blob (class A) and one dark bar (class B), and its shifted copy."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, (SIZE, SIZE, 3), dtype=np.uint8)
    image[16:40, 16:40] = 250  # A
    image[80:88, 64:120] = 5  # B
    shifted = np.roll(image, (32, 0), axis=(0, 1))
    return image, shifted, [16, 16, 40, 40], [64, 80, 120, 88]


def test_a_visual_class_row_is_its_prototype_scaled_like_the_text_rows(ov_model, example):
    from dsmoe_yolo.text.binding import class_texts

    image, _, box_a, _ = example
    ov_model.set_classes({"open": "a gap in a copper trace", "blob": {"image": image, "boxes": [box_a]}})
    (text,) = class_texts(ov_model.model)
    assert ov_model.names == {0: "open", 1: "blob"} and text.visual_mode.tolist() == [0, 1]
    ov_model.model.eval()
    with torch.no_grad():
        t = text()
    torch.testing.assert_close(torch.nn.functional.normalize(t[1], dim=0), text.visual[1], atol=1e-5, rtol=1e-4)
    assert abs(float(t[1].norm()) - float(t[0].norm())) < 1e-3 * float(t[0].norm())
    assert text.text_meta["visual"]["blob"] == [{"image": f"array{image.shape}", "boxes": [[16.0, 16.0, 40.0, 40.0]]}]


def test_boxes_of_class_a_find_class_a_on_another_image(ov_model, example):
    """YOLOE's call shape: predict(source, visual_prompts=dict(bboxes, cls), refer_image=...)."""
    image, shifted, box_a, box_b = example
    result = ov_model.predict(
        shifted,
        visual_prompts={"bboxes": np.array([box_a, box_b]), "cls": np.array([0, 1]), "names": ["blob", "bar"]},
        refer_image=image,
        imgsz=SIZE,
        conf=0.0,
        verbose=False,
    )[0]
    assert result.names == {0: "blob", 1: "bar"}
    boxes, cls, conf = result.boxes.xyxy.numpy(), result.boxes.cls.int().numpy(), result.boxes.conf.numpy()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    moved_a = np.array([28 + 32, 28])  # box A's centre in the shifted image (x, y)
    near_a = np.linalg.norm(centres - moved_a, axis=1) < 12
    assert near_a.any()
    assert cls[near_a][conf[near_a].argmax()] == 0  # the most confident box at A's new place is class A


def test_text_and_boxes_for_one_class_use_both(ov_model, example):
    from dsmoe_yolo.text.binding import class_texts

    image, _, box_a, _ = example
    ov_model.set_classes("open,short", visual={"open": {"image": image, "boxes": [box_a]}})
    (text,) = class_texts(ov_model.model)
    assert text.visual_mode.tolist() == [2, 0]
    ov_model.model.eval()
    with torch.no_grad():
        t = text()
    assert float(torch.nn.functional.cosine_similarity(t[0], text.visual[0], dim=0)) < 0.999  # not the prototype alone


def test_a_prompt_file_with_visual_examples_works_on_the_cli_shape(ov_model, example, tmp_path):
    import cv2

    image, shifted, box_a, _ = example
    cv2.imwrite(str(tmp_path / "ref.png"), image)
    prompts = tmp_path / "mixed.yaml"
    prompts.write_text(
        "prompts:\n  short: [two traces joined by copper]\n"
        f"visual:\n  blob:\n    - image: ref.png\n      boxes: [{box_a}]\n"
    )
    result = ov_model.predict(shifted, prompts=str(prompts), imgsz=SIZE, conf=0.0, verbose=False)[0]
    assert result.names == {0: "short", 1: "blob"}


def test_visual_prompts_survive_a_checkpoint_and_an_onnx_export(ov_model, example, tmp_path):
    import onnxruntime as ort
    from ultralytics import YOLO

    image, shifted, box_a, box_b = example
    ov_model.set_classes({"blob": {"image": image, "boxes": [box_a]}, "bar": {"image": image, "boxes": [box_b]}})
    path = tmp_path / "vp.pt"
    ov_model.save(str(path))
    loaded = YOLO(str(path))
    x = torch.from_numpy(shifted[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    net = loaded.model.fuse(verbose=False).eval()
    with torch.no_grad():
        expected = net(x)[0].numpy()
    ov_model.model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(ov_model.model(x)[0].numpy(), expected, atol=1e-4, rtol=1e-3)
    assert loaded.names == {0: "blob", 1: "bar"}
    onnx = YOLO(str(path)).export(format="onnx", imgsz=SIZE)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_boxes_outside_the_image_are_clipped_with_a_warning(ov_model, example, caplog):
    from ultralytics.utils import LOGGER

    image, _, _, _ = example
    LOGGER.addHandler(caplog.handler)
    try:
        ov_model.set_classes({"blob": {"image": image, "boxes": [[-20, 100, 60, 400]]}})
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert any("were clipped to it" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "entry,match",
    [
        ({"image": "missing.jpg", "boxes": [[0, 0, 10, 10]]}, "example image 'missing.jpg' cannot be read"),
        ({"boxes": [[0, 0, 10, 10]]}, "needs entries"),
        ({"image": None, "boxes": [[5, 5, 5, 20]]}, "has no area inside the image"),
        ({"image": None, "boxes": [[200, 200, 300, 300]]}, "has no area inside the image"),
    ],
)
def test_bad_visual_prompts_are_one_line_and_change_nothing(ov_model, example, entry, match):
    image = example[0]
    entry = {k: (image if v is None else v) for k, v in entry.items()}
    with pytest.raises(ConfigError, match=match):
        ov_model.set_classes({"blob": entry})
    assert ov_model.names == {0: "open", 1: "short"}


def test_too_many_example_images_is_one_line(ov_model, example, monkeypatch):
    from dsmoe_yolo import visual_prompts

    monkeypatch.setattr(visual_prompts, "MAX_EXAMPLE_IMAGES", 2)
    image, _, box_a, _ = example
    with pytest.raises(ConfigError, match="3 example images in one call"):
        ov_model.set_classes({"blob": [{"image": image, "boxes": [box_a]}] * 3})


def test_visual_prompts_on_a_closed_set_model_are_refused(example):
    from ultralytics import YOLO

    image, _, box_a, _ = example
    model = YOLO("dsmoe-lite-yolov8n.yaml")
    with pytest.raises(ConfigError, match="need an open-vocabulary model"):
        model.set_classes({"blob": {"image": image, "boxes": [box_a]}}, embeddings=None)


def test_a_new_visual_class_on_a_model_with_a_class_hierarchy(example):
    """A model bound to a prompt file's hierarchy (groups for its five classes) takes a sixth class from boxes: the
    groups follow the new classes before the prototypes' forward pass (it raised "groups lists 5 entries" before)."""
    from ultralytics import YOLO

    from dsmoe_yolo.nn.hyperbolic import HyperbolicAlign

    image, _, box_a, _ = example
    seen = ["crazing", "inclusion", "pitted_surface", "rolled-in_scale", "scratches"]
    model = YOLO("dsmoe-ov-lite-yolov8n.yaml")
    model.set_classes(seen, prompts="neu-det.yaml")
    (layer,) = [m for m in model.model.modules() if isinstance(m, HyperbolicAlign)]
    assert layer.groups is not None and len(layer.groups) == 5
    model.set_classes(
        {**{n: None for n in seen}, "patches": None}, visual={"patches": {"image": image, "boxes": [box_a]}}
    )
    assert list(model.names.values()) == [*seen, "patches"] and (layer.groups is None or len(layer.groups) == 6)
    with pytest.raises(ConfigError, match="cannot be read"):  # a failed call restores the old groups
        model.set_classes(seen + ["patches"], visual={"patches": {"image": "missing.jpg", "boxes": [[0, 0, 9, 9]]}})
    assert layer.groups is None or len(layer.groups) == 6
