"""Model YAMLs through the plugin's parse_model: channels at every scale, scale selection, clear errors."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

import dsmoe_yolo
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn import HyperbolicAlign, MobileSAMBackbone, SparseMoE

BASE = dsmoe_yolo.CFG_DIR / "models" / "dsmoe-yolov8.yaml"


def build(d, verbose=False):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(d, verbose=verbose)


@pytest.fixture(scope="module")
def models():
    from ultralytics.nn.tasks import DetectionModel

    return {s: DetectionModel(f"dsmoe-yolov8{s}.yaml", verbose=False) for s in "nsm"}


@pytest.mark.parametrize("scale", ["n", "s", "m"])
def test_widths_match_stock_conv_scaling(models, scale):
    """Each DS-MoE row gets exactly the width a stock Conv with the same YAML c2 would get."""
    from ultralytics.nn.tasks import parse_model

    d = yaml.safe_load(BASE.read_text())
    d["scale"] = scale
    probe = {
        "nc": 6,
        "scales": d["scales"],
        "scale": scale,
        "backbone": [[-1, 1, "Conv", [c, 1]] for c in (256, 512, 1024)],
        "head": [],
    }
    stock = [m.conv.out_channels for m in parse_model(probe, 3, verbose=False)[0]]
    model = models[scale].model
    bb = model[0]
    assert isinstance(bb, MobileSAMBackbone) and bb.out_channels == stock
    assert [model[i].c2 for i in (1, 3, 5)] == stock  # Pick rows
    assert model[8].c2 == stock[0]  # ClassText [256]
    assert model[11].c2 == stock[1]  # SparseMoE [512]


def test_multi_input_layers_receive_every_input_width(models):
    model = models["s"].model
    moe = model[11]
    assert isinstance(moe, SparseMoE)
    assert moe.gate.visual[0].in_features == 2 * model[10].weight.shape[0]  # visual input = SpaceBroadcast output
    assert moe.gate.textual[0].in_features == model[8].c2  # text input = ClassText width
    hyp = model[9]
    assert isinstance(hyp, HyperbolicAlign) and hyp.text.in_features == model[8].c2
    assert model[9].f == [7, 8] and model[10].f == [7, 9, 8]
    assert {7, 8, 9, 10, 11, 12} <= set(models["s"].save)


def test_dsmoe_yaml_is_scale_s_without_scale_warning(caplog):
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER.name):
            model = DetectionModel("dsmoe.yaml", verbose=True)
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert model.yaml["scale"] == "s"
    assert not any("no model scale" in r.getMessage() for r in caplog.records)
    assert model.model[0].out_channels == [128, 256, 512]


def test_model_table_prints_dsmoe_rows(caplog):
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            build("dsmoe-yolov8n.yaml", verbose=True)
    finally:
        LOGGER.removeHandler(caplog.handler)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dsmoe_yolo.nn.moe.SparseMoE" in text and "ChannelProbe" not in text and ".Index " not in text


def _yaml(**edits):
    d = yaml.safe_load(BASE.read_text())
    d["scale"] = "n"
    for (part, row, field), value in edits.get("rows", {}).items():
        d[part][row][field] = value
    for k, v in edits.get("top", {}).items():
        d[k] = v
    d["yaml_file"] = "dsmoe-yolov8.yaml"
    return d


@pytest.mark.parametrize(
    "edits, pattern",
    [
        ({"rows": {("head", 2, 3): [512, {"experts": 32, "topk": 5}]}}, r"row 11 \(SparseMoE\):.*topk"),
        ({"rows": {("head", 2, 3): [512, {"experts": 32, "top_k": 40}]}}, r"row 11 \(SparseMoE\):.*top_k=40.*32"),
        ({"rows": {("head", 2, 3): [512, {"experts": 2}]}}, r"row 11 \(SparseMoE\):.*N >= 3"),
        ({"rows": {("head", 2, 3): [512, 32, 5, 1, 1, 128, 0.1, 7, 0.5, "extra"]}}, r"row 11 \(SparseMoE\): too many"),
        ({"rows": {("head", 2, 0): -1}}, r"row 11 \(SparseMoE\): 'from' must be a list"),
        ({"rows": {("head", 0, 3): [256, {"curvature": 50}]}}, r"row 9 \(HyperbolicAlign\):.*curvature"),
        ({"top": {"scale": "l"}}, r"scale 'l'.*n, s, m.*dsmoe-yolov8n"),
        ({"rows": {("backbone", 8, 3): [256, "nc", 384, 3]}}, r"row 8 \(ClassText\):.*divisible by heads=3"),
        ({"rows": {("head", 2, 0): [10, 10]}}, r"row 11 \(SparseMoE\): input 2 \(from 10\) must be the ClassText row"),
        ({"rows": {("head", 0, 0): [8, 7]}}, r"row 9 \(HyperbolicAlign\): input 1 \(from 8\) is the ClassText row"),
        (
            {"rows": {("head", 2, 3): [512, {"experts": "eight"}]}},
            r"row 11 \(SparseMoE\): 'experts' must be an integer, got 'eight'",
        ),
        (
            {"rows": {("head", 2, 3): [512, {"experts": 32, "top_k": 2.7}]}},
            r"row 11 \(SparseMoE\): 'top_k' must be an integer or null, got 2.7",
        ),
        (
            {"rows": {("head", 0, 3): [256, {"curvature": "high"}]}},
            r"row 9 \(HyperbolicAlign\): 'curvature' must be a number, got 'high'",
        ),
        ({"rows": {("head", 2, 2): "SparseMOE"}}, r"row 11: unknown layer 'SparseMOE'; did you mean SparseMoE\?$"),
        ({"rows": {("head", 1, 2): "Conv2D"}}, r"row 10: unknown layer 'Conv2D'; did you mean Conv2"),
    ],
)
def test_bad_yaml_args_fail_at_build_with_one_clear_line(edits, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        build(_yaml(**edits))
    assert "\n" not in str(e.value)


def test_scale_typo_in_file_name_names_the_fix():
    with pytest.raises(FileNotFoundError, match="dsmoe-yolov8.yaml"):
        build("dsmoe-yolov8q.yaml")


def test_extends_overrides_top_level_keys(tmp_path):
    (tmp_path / "mine.yaml").write_text("extends: dsmoe-yolov8.yaml\ndefault_scale: n\nnc: 3\nloss: null\n")
    model = build(str(tmp_path / "mine.yaml"))
    assert model.yaml["nc"] == 3 and model.model[-1].nc == 3 and model.model[0].out_channels == [64, 128, 256]
    assert model.yaml.get("loss") is None


def test_stock_yaml_untouched_by_the_wrapper():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel("yolov8n.yaml", verbose=False)
    assert sum(p.numel() for p in m.parameters()) == 3157200


def test_p2_model_builds_detects_on_four_levels_and_trains_a_step():
    """dsmoe-p2-yolov8n.yaml (bare name -> dsmoe-p2-yolov8.yaml at scale n): Detect on P2-P5, one optimizer step."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("dsmoe-p2-yolov8n.yaml", nc=3, verbose=False)
    assert model.yaml["scale"] == "n"
    head = model.model[-1]
    assert head.nl == 4 and model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    bb = model.model[0]
    assert isinstance(bb, MobileSAMBackbone) and bb.out_channels == [32, 64, 128, 256]  # n: width 0.25
    model.model[10].bind(torch.randn(3, 384), {"names": ["a", "b", "c"]})
    model.args = get_cfg()
    model.train()
    x = torch.rand(2, 3, 128, 160)
    feats = model(x)["feats"]
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 40), (16, 20), (8, 10), (4, 5)]
    batch = {
        "img": x,
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.05, 0.05], [0.6, 0.5, 0.3, 0.2]]),
    }
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    p2_weight = bb.p2[0].conv.weight
    before = p2_weight.detach().clone()
    loss, items = model.loss(batch)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and p2_weight.grad is not None and p2_weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, p2_weight.detach())


def test_stock_yaml_typo_keeps_the_stock_error():
    from ultralytics.nn.tasks import yaml_model_load

    d = yaml_model_load("yolov8n.yaml")
    d["backbone"][1][2] = "Convv"  # not like any DS-MoE layer: stock parse_model's own KeyError, as without the plugin
    with pytest.raises(KeyError, match="Convv"):
        build(d)
    d["backbone"][1][2] = "SpaceBroadcst"  # like a DS-MoE layer: the plugin names it
    with pytest.raises(ConfigError, match="unknown layer 'SpaceBroadcst'; did you mean SpaceBroadcast"):
        build(d)


def test_config_error_is_one_line_on_the_yolo_cli(tmp_path):
    """The stock `yolo` command prints the plugin's ConfigError as one line (exit 1), without a traceback."""
    from conftest import run_cli

    text = BASE.read_text().replace("{experts: 32}", "{experts: eight}")
    (tmp_path / "bad.yaml").write_text(text)
    proc = run_cli("yolo train model=bad.yaml epochs=1 imgsz=64", cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "ConfigError: bad.yaml row 11 (SparseMoE): 'experts' must be an integer, got 'eight'" in out.splitlines()
