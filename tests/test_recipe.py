"""cfg=paper.yaml: what reaches Ultralytics' trainer (optimizer, effective batch, warm-up, augmentations, gamma)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsmoe_yolo.augment import GammaTransform, install_input_gamma
from dsmoe_yolo.nn.gamma import InputGamma


def _walk(transform):
    """Every transform inside Ultralytics' nested Compose / MixUp pre_transform."""
    yield transform
    for child in getattr(transform, "transforms", []) or []:
        yield from _walk(child)
    pre = getattr(transform, "pre_transform", None)
    if pre is not None:
        yield from _walk(pre)


@pytest.mark.slow
def test_paper_recipe_reaches_the_trainer(tiny_data, tmp_path):
    from ultralytics import YOLO
    from ultralytics.data.augment import MixUp, Mosaic, RandomFlip, RandomHSV, RandomPerspective

    lrs = []
    model = YOLO("dsmoe-yolov8n.yaml")
    model.add_callback("on_train_batch_end", lambda tr: lrs.append([g["lr"] for g in tr.optimizer.param_groups]))
    model.train(
        cfg="paper.yaml",
        data=str(tiny_data),
        epochs=1,
        imgsz=64,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name="paper",
        plots=False,
        verbose=False,
    )
    trainer = model.trainer

    # effective batch: 8 images per optimizer step (nbs = batch), weight decay not rescaled
    assert trainer.batch_size == 8 and trainer.accumulate == 1
    opt = trainer.optimizer
    assert type(opt).__name__ == "Adam" and opt.param_groups[0]["betas"][0] == pytest.approx(0.9)
    assert max(g["weight_decay"] for g in opt.param_groups) == pytest.approx(0.001)
    # no warm-up: every parameter group trains at lr0 from the first batch (warm-up would start biases at 0.1)
    assert lrs and all(lr == pytest.approx(0.001) for step in lrs for lr in step)

    # augmentations the training set actually applies
    ts = list(_walk(trainer.train_loader.dataset.transforms))
    kinds = {type(t) for t in ts}
    assert GammaTransform not in kinds, "the paper's gamma is a fixed preprocessing, not a random augmentation"
    assert [t.p for t in ts if isinstance(t, Mosaic)] and all(t.p == 0 for t in ts if isinstance(t, Mosaic))
    assert [t.p for t in ts if isinstance(t, MixUp)] == [0.5]
    persp = [t for t in ts if isinstance(t, RandomPerspective)]
    assert persp and all((t.degrees, t.translate, t.scale, t.shear, t.perspective) == (0, 0, 0, 0, 0) for t in persp)
    hsv = [t for t in ts if isinstance(t, RandomHSV)]
    assert hsv and all((t.hgain, t.sgain, t.vgain) == (0, 0, 0) for t in hsv)
    flips = [t for t in ts if isinstance(t, RandomFlip)]
    assert flips and all(t.p == 0 for t in flips)

    # the fixed gamma travels with the model: trained model, EMA (validation) and the saved checkpoint
    for net in (trainer.model, trainer.ema.ema):
        hook = InputGamma.find(net)
        assert hook is not None and (hook.gamma, hook.gain) == (1.5, 1.0)
    saved = YOLO(str(tmp_path / "paper" / "weights" / "last.pt"))
    seen = []
    saved.model.model[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone())
    )  # after the gamma
    saved.predict(np.full((64, 64, 3), 128, np.uint8), imgsz=64, device="cpu", verbose=False)
    assert seen and torch.allclose(seen[0].float(), torch.full_like(seen[0].float(), (128 / 255) ** 1.5), atol=2e-3)


def test_gamma_modes_are_exclusive(tiny_data):
    """augment: a random transform in the train pipeline, model untouched; preprocess: the model hook, no transform."""
    from types import SimpleNamespace

    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.nn.tasks import DetectionModel

    data = check_det_dataset(str(tiny_data))
    model = DetectionModel("yolov8n.yaml", nc=6, verbose=False)
    for mode, random_in_pipeline in (("augment", True), ("preprocess", False)):
        cfg = get_cfg(overrides={"gamma_p": 0.5, "gamma_mode": mode, "imgsz": 64})
        ds = build_yolo_dataset(cfg, data["train"], 4, data, mode="train")
        assert (GammaTransform in {type(t) for t in _walk(ds.transforms)}) == random_in_pipeline
        assert install_input_gamma(model, cfg) == (not random_in_pipeline)
    assert InputGamma.find(model) is not None
    install_input_gamma(model, SimpleNamespace(gamma_mode="preprocess", gamma=2.0, gamma_gain=1.0))
    hooks = [h for h in model.model[0]._forward_pre_hooks.values() if isinstance(h, InputGamma)]
    assert len(hooks) == 1 and hooks[0].gamma == 2.0, "re-installing replaces the hook"
    with pytest.raises(ValueError, match="gamma_mode='sometimes' is unknown"):
        install_input_gamma(model, SimpleNamespace(gamma_mode="sometimes"))


def test_input_gamma_exports_to_onnx_and_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (extra 'export') is needed for export tests")
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval()
    InputGamma(1.5).attach(model)
    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "g.onnx"
    torch.onnx.export(model.model[0], (x,), str(path), opset_version=19, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model.model[0](x)
        plain = model.model[0].forward(x)  # bypasses the hook
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(expected, plain)
