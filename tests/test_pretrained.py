"""Pretrained MobileSAM by default: bare name through Ultralytics' asset lookup, offline warning, clear errors."""

import pytest
import torch

import dsmoe_yolo  # noqa: F401 - registers the plugin
from dsmoe_yolo.nn import mobilesam
from dsmoe_yolo.nn.mobilesam import MobileSAMBackbone, build_tinyvit_5m, resolve_mobilesam_weights


@pytest.fixture
def weights_dir(monkeypatch, tmp_path):
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "weights_dir", str(tmp_path / "weights"))
    monkeypatch.setattr(mobilesam, "_warned", set())
    (tmp_path / "weights").mkdir()
    return tmp_path / "weights"


def _sam_state(seed=0) -> dict:
    torch.manual_seed(seed)
    return {f"image_encoder.{k}": v for k, v in build_tinyvit_5m().state_dict().items()}


def test_offline_without_the_file_warns_once_and_starts_random(weights_dir, capsys, caplog, monkeypatch):
    monkeypatch.chdir(weights_dir.parent)
    assert resolve_mobilesam_weights("mobile_sam.pt") is None
    assert resolve_mobilesam_weights("mobile_sam.pt") is None
    out = caplog.text or capsys.readouterr().out  # Ultralytics' logger reaches one or the other, by handler setup
    assert (
        out.count("MobileSAM weights 'mobile_sam.pt' unavailable") == 1 and "RANDOM" in out and str(weights_dir) in out
    )
    assert MobileSAMBackbone(3, [16, 32, 64], "mobile_sam.pt").weights is None


def test_bare_name_found_in_ultralytics_weights_dir(weights_dir):
    state = _sam_state(seed=1)
    torch.save(state, weights_dir / "mobile_sam.pt")
    layer = MobileSAMBackbone(3, [16, 32, 64], "mobile_sam.pt")
    assert layer.weights == str(weights_dir / "mobile_sam.pt")
    key = "patch_embed.seq.0.c.weight"
    assert torch.equal(layer.encoder.state_dict()[key], state[f"image_encoder.{key}"])


def test_the_dsmoe_yaml_names_mobile_sam_by_default(weights_dir):
    from ultralytics import YOLO

    torch.save(_sam_state(seed=2), weights_dir / "mobile_sam.pt")
    assert YOLO("dsmoe-yolov8n.yaml").model.model[0].weights == str(weights_dir / "mobile_sam.pt")


def test_corrupt_or_foreign_weights_fail_naming_the_file(tmp_path):
    bad = tmp_path / "mobile_sam.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="mobile_sam.pt"):
        MobileSAMBackbone(3, [16, 32, 64], str(bad))
    state = _sam_state()
    state.pop("image_encoder.patch_embed.seq.0.c.weight")
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"mobile_sam.pt.*missing keys 1 \(patch_embed.seq.0.c.weight\)"):
        MobileSAMBackbone(3, [16, 32, 64], str(bad))
    with pytest.raises(FileNotFoundError, match="nowhere/mobile_sam.pt"):
        MobileSAMBackbone(3, [16, 32, 64], str(tmp_path / "nowhere" / "mobile_sam.pt"))


def test_fuse_folds_the_encoder_batchnorm_with_outputs_unchanged():
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("dsmoe-yolov8n.yaml", verbose=False).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.rand(1, 3, 128, 160, generator=g)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse(verbose=False)
        after = model(x)[0]
    assert not any(type(m).__name__ == "Conv2d_BN" for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-3)
    stock = DetectionModel("yolov8n.yaml", verbose=False).eval().fuse(verbose=False)
    assert not any(callable(getattr(m, "fuse_inference", None)) for m in stock.modules())
