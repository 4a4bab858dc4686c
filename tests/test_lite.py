"""Lite family: DS-MoE stages on the stock YOLOv8 (rows 0-21 identical), Ultralytics' own weight transfer, zero start."""

from pathlib import Path

import pytest
import torch
import yaml
from ultralytics import YOLO

import dsmoe_yolo  # noqa: F401 - registers the plugin
from dsmoe_yolo.nn.deform import deform_conv2d
from dsmoe_yolo.nn.residual import ZeroInitResidual

STOCK_ROWS = 22  # yolov8.yaml: backbone rows 0-9 and neck rows 10-21, then Detect


def _stock_yaml() -> dict:
    import ultralytics

    return yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml").read_text())


@pytest.mark.parametrize("scale", ["n", "s", "m"])
def test_rows_0_to_21_are_ultralytics_yolov8(scale):
    lite, stock = YOLO(f"dsmoe-lite-yolov8{scale}.yaml").model, YOLO(f"yolov8{scale}.yaml").model
    stock_rows = [*_stock_yaml()["backbone"], *_stock_yaml()["head"]][:STOCK_ROWS]
    lite_rows = [*lite.yaml["backbone"], *lite.yaml["head"]][:STOCK_ROWS]
    assert lite_rows == stock_rows
    for i in range(STOCK_ROWS):
        shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
        assert shapes(lite.model[i]) == shapes(stock.model[i]), f"row {i}"
    assert type(lite.model[-1]).__name__ == "Detect" and lite.model[-1].f == [15, 18, 29]


def test_dsmoe_lite_yaml_is_scale_s():
    assert YOLO("dsmoe-lite.yaml").model.yaml["scale"] == "s"


def _yolov8n_checkpoint(tmp_path) -> tuple[Path, dict]:
    """A YOLOv8n checkpoint saved by the test (nothing downloads), and its tensors as stored (fp16 -> fp32)."""
    path = tmp_path / "yolov8n-local.pt"
    YOLO("yolov8n.yaml").save(path)
    ckpt = torch.load(path, weights_only=False)
    return path, {k: v.float() for k, v in ckpt["model"].state_dict().items()}


def test_yolov8_weights_transfer_row_for_row(tmp_path):
    path, src = _yolov8n_checkpoint(tmp_path)
    lite = YOLO("dsmoe-lite-yolov8n.yaml")
    before = {k: v.clone() for k, v in lite.model.state_dict().items()}
    lite.load(str(path))
    after = lite.model.state_dict()
    stock_keys = [k for k in src if int(k.split(".")[1]) < STOCK_ROWS]
    assert len(stock_keys) == len([k for k in after if int(k.split(".")[1]) < STOCK_ROWS]) == 270
    for k in stock_keys:  # every backbone and neck tensor arrives
        assert torch.equal(after[k], src[k]), k
    head = f"model.{len(lite.model.model) - 1}."
    for k, v in after.items():  # nothing lands elsewhere: DS-MoE rows keep their init; the head only gets stock's own
        if k.startswith(head) or int(k.split(".")[1]) < STOCK_ROWS:
            continue
        assert torch.equal(v, before[k]), f"{k} changed by the transfer"


def test_lite_loaded_with_yolov8_starts_as_yolov8(tmp_path):
    path, _ = _yolov8n_checkpoint(tmp_path)
    stock = YOLO(str(path)).model.float().eval()
    lite = YOLO("dsmoe-lite-yolov8n.yaml")
    lite.load(str(path))
    lite = lite.model.eval()
    outs = {}
    lite.model[21].register_forward_hook(lambda m, i, o: outs.__setitem__("lite21", o))
    lite.model[29].register_forward_hook(lambda m, i, o: outs.__setitem__("lite29", o))
    stock.model[21].register_forward_hook(lambda m, i, o: outs.__setitem__("stock21", o))
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lite(x), stock(x)
    assert torch.allclose(outs["lite21"], outs["stock21"], atol=1e-5)
    assert torch.equal(outs["lite29"], outs["lite21"])  # the DS-MoE branch adds exactly zero at the start


def test_zero_init_residual_is_identity_and_learns():
    r = ZeroInitResidual([8, 4])
    x, y = torch.randn(2, 8, 5, 5), torch.randn(2, 4, 5, 5, requires_grad=True)
    out = r([x, y])
    assert torch.equal(out, x)
    out.square().sum().backward()
    assert r.proj.weight.grad.abs().sum() > 0  # the projection leaves zero at the first step
    with pytest.raises(ValueError, match="two inputs"):
        ZeroInitResidual([8])


@pytest.mark.parametrize("b,c,h,w,o,stride,dil", [(2, 12, 9, 7, 5, 1, 1), (1, 6, 8, 8, 4, 2, 2), (2, 3, 5, 1, 2, 1, 1)])
def test_deform_conv_matches_torchvision(b, c, h, w, o, stride, dil):
    from torchvision.ops import deform_conv2d as tv

    g = torch.Generator().manual_seed(0)
    pad = dil
    h_out, w_out = (h + 2 * pad - dil * 2 - 1) // stride + 1, (w + 2 * pad - dil * 2 - 1) // stride + 1
    x = torch.randn(b, c, h, w, generator=g, requires_grad=True)
    off = (3 * torch.randn(b, 18, h_out, w_out, generator=g)).requires_grad_()  # many taps fall outside the map
    mask = torch.rand(b, 9, h_out, w_out, generator=g, requires_grad=True)
    weight = torch.randn(o, c, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(o, generator=g, requires_grad=True)
    ref = tv(x, off, weight, bias, stride=stride, padding=pad, dilation=dil, mask=mask)
    out = deform_conv2d(x, off, weight, bias, stride=stride, padding=pad, dilation=dil, mask=mask)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, off, mask, weight, bias])
    g_out = torch.autograd.grad(out.square().sum(), [x, off, mask, weight, bias])
    for a, e in zip(g_out, g_ref):
        assert torch.allclose(a, e, atol=1e-4, rtol=1e-3)


def test_lite_p2_keeps_yolov8_p2_rows_and_detects_on_four_levels():
    import ultralytics

    lite = YOLO("dsmoe-lite-p2-yolov8n.yaml").model
    stock = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8-p2.yaml").read_text())
    rows = 28  # yolov8-p2.yaml rows 0-27, then Detect
    assert [*lite.yaml["backbone"], *lite.yaml["head"]][:rows] == [*stock["backbone"], *stock["head"]][:rows]
    head = lite.model[-1]
    assert head.nl == 4 and lite.stride.tolist() == [4.0, 8.0, 16.0, 32.0] and head.f == [18, 21, 24, 35]
