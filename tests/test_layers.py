"""DS-MoE layers (stages 2-10): shapes, gradients, sparse dispatch, formulas, MobileSAM weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.nn import (
    CBAM,
    ClassText,
    DifferentiableAggregation,
    HeterogeneousEnsemble,
    HyperbolicAlign,
    MobileSAMBackbone,
    PlainTextFusion,
    ResNetBackbone,
    SpaceBroadcast,
    SparseMoE,
)
from dsmoe_yolo.nn.base import aux_outputs, pop_aux_outputs
from dsmoe_yolo.nn.gate import ExpertGate, default_top_k, route

SIZES = [(256, 256), (320, 256), (640, 480)]


@pytest.fixture(scope="module")
def nano():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("dsmoe-yolov8n.yaml", verbose=False)


@pytest.mark.parametrize("hw", SIZES)
def test_full_model_shapes(nano, hw):
    nano.eval()
    with torch.no_grad():
        y, preds = nano(torch.rand(2, 3, *hw))
    anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    assert y.shape == (2, 4 + 6, anchors)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("hw", SIZES)
def test_backbone_strides(hw):
    bb = MobileSAMBackbone(3, [32, 64, 128])
    p3, p4, p5 = bb(torch.rand(1, 3, *hw))
    assert p3.shape == (1, 32, hw[0] // 8, hw[1] // 8)
    assert p4.shape == (1, 64, hw[0] // 16, hw[1] // 16)
    assert p5.shape == (1, 128, hw[0] // 32, hw[1] // 32)


@pytest.mark.parametrize("hw", [(8, 8), (10, 8), (20, 15)])
def test_stage_shapes(hw):
    torch.manual_seed(0)
    f, t = torch.randn(2, 32, *hw), torch.randn(5, 16)
    g = HyperbolicAlign([32, 16], 8)([f, t])
    assert g.shape == (2, 8, *hw)
    s = SpaceBroadcast([32, 8, 16], 24)([f, g, t])
    assert s.shape == (2, 24, *hw)
    y = SparseMoE([24, 16], 24, experts=6)([s, t])
    assert y.shape == (2, 24, *hw)
    e = HeterogeneousEnsemble([24, 24, 16], 24)([s, y, t])
    assert e.shape == (2, 24, *hw)
    assert DifferentiableAggregation([24, 24], 24)([e, y]).shape == (2, 24, *hw)
    assert CBAM(32)(f).shape == f.shape
    assert PlainTextFusion([32, 16], 32)([f, t]).shape == f.shape


def test_gradient_reaches_every_stage_and_expert_type(nano):
    """One backward through the full model with all experts active reaches every DS-MoE stage and every expert kind."""
    model = nano.train()
    moe = model.model[11]
    moe.gate.top_k, moe.gate.noise = len(moe.experts), 0.0
    model.model[8].bind(torch.randn(6, 384), {"names": list("abcdef")})
    model.zero_grad()
    out = model(torch.rand(2, 3, 256, 256))
    sum(o.float().pow(2).mean() for o in out["feats"]).backward()
    for i in (0, 2, 4, 6, 8, 9, 10, 11, 12, 13):
        grads = [p.grad for p in model.model[i].parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reached layer {i}"
    for kind in ("local", "global", "cross"):
        experts = [e for e in moe.experts if e.kind == kind]
        assert all(any(p.grad is not None and p.grad.abs().sum() > 0 for p in e.parameters()) for e in experts), kind
    moe.gate.top_k, moe.gate.noise = default_top_k(len(moe.experts)), 0.5
    pop_aux_outputs(moe)


def test_topk_skips_idle_experts_in_eager_mode():
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=32).eval()
    calls = []
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, inp, out, e=e: calls.append((e, inp[0].shape[0])))
    x, t = torch.randn(8, 16, 6, 6), torch.randn(4, 8)
    with torch.no_grad():
        moe([x, t])
    chosen = aux_outputs(moe)["moe_indices"]
    assert chosen.shape == (8, 5)
    used = sorted(chosen.unique().tolist())
    assert sorted(e for e, _ in calls) == used, "only the selected experts may run"
    assert len(calls) < 32
    assert sum(n for _, n in calls) == 8 * 5, "each expert runs on exactly the images that chose it"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_dense_path_equals_sparse_path(mode):
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=12, top_k=3)
    moe.gate.noise = moe.gate.descriptor.momentum = moe.gate.centre.momentum = 0.0  # identical gate on both calls
    getattr(moe, mode)()
    x, t = torch.randn(6, 16, 5, 7), torch.randn(3, 8)
    sparse = moe([x, t])
    moe.dense = True
    dense = moe([x, t])
    torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=1e-5)


def test_route_is_topk_of_tempered_softmax():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 4.0]])
    w, idx, probs = route(logits, 2, 0.5)
    assert idx.tolist() == [[1, 2], [2, 3]]
    torch.testing.assert_close(probs, torch.softmax(logits / 0.5, -1))
    top = probs.gather(1, idx)
    torch.testing.assert_close(w, top / top.sum(1, keepdim=True))
    assert default_top_k(32) == 5 and default_top_k(2) == 1


def test_gate_temperature_is_clamped_and_validated():
    gate = ExpertGate(8, 4, 32)
    assert gate.top_k == 5 and abs(gate.tau.item() - 0.1) < 1e-6
    with torch.no_grad():
        gate.log_tau.fill_(-100.0)
    assert gate.tau.item() == pytest.approx(0.01)
    with torch.no_grad():
        gate.log_tau.fill_(100.0)
    assert gate.tau.item() == pytest.approx(10.0)
    w, i, p = gate(torch.randn(3, 8, 4, 4), torch.randn(2, 4))
    assert torch.isfinite(p).all() and torch.isfinite(w).all()
    for bad in (0, -1, 33):
        with pytest.raises(ValueError, match="top_k"):
            ExpertGate(8, 4, 32, top_k=bad)


def test_routing_does_not_depend_on_the_rest_of_the_batch():
    """An image's experts are a function of that image (and the text), in training as in evaluation."""
    torch.manual_seed(0)
    gate = ExpertGate(16, 8, 16, top_k=4, noise=0.0)
    x, t = torch.randn(6, 16, 5, 5), torch.randn(3, 8)
    for mode in ("train", "eval"):
        getattr(gate, mode)()
        gate.descriptor.momentum = gate.centre.momentum = 0.0
        whole = gate(x, t)[1]
        alone = torch.cat([gate(x[i : i + 1], t)[1] for i in range(6)])
        assert torch.equal(whole, alone), mode


def test_moe_balance_statistics():
    torch.manual_seed(0)
    moe = SparseMoE([16, 8], 16, experts=8, top_k=2).eval()
    with torch.no_grad():
        moe([torch.randn(5, 16, 4, 4), torch.randn(3, 8)])
    aux = pop_aux_outputs(moe)
    assert aux["moe_probs"].shape == (5, 8) and aux["moe_load"].sum() == 5 * 2
    with pytest.raises(ValueError, match="N >= 3"):
        SparseMoE([16, 8], 16, experts=2)


def test_cbam_is_the_original_formulation():
    torch.manual_seed(0)
    cbam = CBAM(16, kernel_size=7, reduction=4).eval()
    x = torch.randn(2, 16, 9, 9)
    mlp = cbam.channel.mlp
    mc = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    xc = x * mc
    ms = torch.sigmoid(
        cbam.spatial.bn(cbam.spatial.conv(torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)))
    )
    torch.testing.assert_close(cbam(x), xc * ms)
    assert len(mlp) == 3 and mlp[0].out_channels == 8  # shared reduction MLP (max(16 // 4, 8))


def test_class_text_binding_and_refinement():
    t = ClassText(8, 32, nc=3, embed_dim=16, heads=4)
    assert not t.is_bound
    emb = torch.randn(5, 24)
    t.bind(emb, {"names": list("abcde"), "encoder": "x"})
    out = t()
    assert out.shape == (5, 32) and t.nc == 5 and t.embed_dim == 24
    # stage 2 formula: LN(T0' + MHA(T0', T0', T0'))
    from dsmoe_yolo.nn.text import sinusoidal_encoding

    t0 = t.proj(t.embeddings) + t.pos_scale * sinusoidal_encoding(5, 32)
    torch.testing.assert_close(out, t.norm(t0 + t.attn(t0[None], t0[None], t0[None])[0][0]))
    with pytest.raises(ConfigError, match="trained with 24-dim text"):
        t.bind(torch.randn(5, 16), {"names": list("abcde")})
    with pytest.raises(ConfigError, match="finite"):
        t.bind(torch.full((5, 24), float("nan")), {})


def test_aggregation_exposes_alignment_term():
    agg = DifferentiableAggregation([8, 8], 8)
    e = torch.randn(3, 8, 4, 4)
    agg([e, e.clone()])
    assert aux_outputs(agg)["align"].item() == pytest.approx(0.0, abs=1e-6)
    agg([e, -e])
    assert aux_outputs(agg)["align"].item() == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="c2=8"):
        DifferentiableAggregation([8, 16], 8)


def test_resnet_backbone_levels():
    bb = ResNetBackbone(3, [16, 32, 64], depth=18)
    assert [f.shape[1:] for f in bb(torch.rand(1, 3, 64, 96))] == [(16, 8, 12), (32, 4, 6), (64, 2, 3)]


# MobileSAM encoder --------------------------------------------------------------------------------------------------
def test_encoder_matches_stock_tinyvit_at_any_size():
    """Our resolution-agnostic forward computes what Ultralytics' TinyViT computes at its configured size."""
    torch.manual_seed(0)
    bb = MobileSAMBackbone(3, [32, 64, 128]).eval()
    from dsmoe_yolo.nn.mobilesam import build_tinyvit_5m

    stock = build_tinyvit_5m().eval()
    missing, unexpected = stock.load_state_dict(bb.encoder.state_dict(), strict=False)
    assert not unexpected and all(k.split(".")[0] in ("neck", "norm_head", "head") for k in missing)
    for hw in [(256, 256), (320, 224)]:
        x = torch.rand(1, 3, *hw)
        stock.set_imgsz(list(hw))
        with torch.no_grad():
            s = stock.patch_embed(x)
            for layer in stock.layers:
                s = layer(s)
            s = s.view(1, hw[0] // 16, hw[1] // 16, -1).permute(0, 3, 1, 2)
            _, ours = bb.encoder_features(x)
        torch.testing.assert_close(ours, s, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def mobile_sam_checkpoint(tmp_path_factory):
    """A checkpoint in MobileSAM's published format, saved from a locally built vit_t (mobile_sam package)."""
    mobile_sam = pytest.importorskip("mobile_sam", reason="the mobile_sam package (dev extra 'sam') is needed")
    torch.manual_seed(1)
    sam = mobile_sam.sam_model_registry["vit_t"]()
    path = tmp_path_factory.mktemp("sam") / "mobile_sam.pt"
    torch.save(sam.state_dict(), path)
    return path, sam.image_encoder.state_dict()


def test_loads_mobile_sam_checkpoint_strictly(mobile_sam_checkpoint):
    path, reference = mobile_sam_checkpoint
    bb = MobileSAMBackbone(3, [32, 64, 128], weights=str(path))
    ours = bb.encoder.state_dict()
    kept = [k for k in reference if k.split(".")[0] not in ("neck", "norm_head", "head")]
    assert set(ours) == set(kept)
    for k in kept:
        torch.testing.assert_close(ours[k], reference[k])


def test_loads_ultralytics_sam_format(mobile_sam_checkpoint, tmp_path):
    path, reference = mobile_sam_checkpoint
    wrapped = tmp_path / "mobile_sam_ultralytics.pt"
    torch.save({"model": torch.load(path, weights_only=True)}, wrapped)
    bb = MobileSAMBackbone(3, [32, 64, 128], weights=str(wrapped))
    torch.testing.assert_close(bb.encoder.patch_embed.seq[0].c.weight, reference["patch_embed.seq.0.c.weight"])


def test_bad_mobile_sam_checkpoint_names_the_keys(mobile_sam_checkpoint, tmp_path):
    path, _ = mobile_sam_checkpoint
    state = torch.load(path, weights_only=True)
    state.pop("image_encoder.layers.1.blocks.0.attn.qkv.weight")
    state["image_encoder.layers.9.extra"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(
        ValueError,
        match=r"missing keys 1 \(layers\.1\.blocks\.0\.attn\.qkv\.weight\).*unexpected keys 1 \(layers\.9\.extra\)",
    ):
        MobileSAMBackbone(3, [32, 64, 128], weights=str(bad))
    with pytest.raises(FileNotFoundError, match="MobileSAM"):
        MobileSAMBackbone(3, [32, 64, 128], weights=str(tmp_path / "nope.pt"))


def test_pretrained_batchnorm_survives_ultralytics_init():
    from ultralytics.utils.torch_utils import initialize_weights

    bb = MobileSAMBackbone(3, [32, 64, 128])
    initialize_weights(bb)
    eps = {m.eps for m in bb.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-5}, "TinyViT keeps MobileSAM's BatchNorm eps"


def test_freeze_epochs():
    bb = MobileSAMBackbone(3, [32, 64, 128], freeze_epochs=2).train()
    bb.set_epoch(0)
    assert not any(p.requires_grad for p in bb.encoder.parameters())
    assert all(p.requires_grad for p in bb.p5.parameters())
    bb.train()
    assert not bb.encoder.training and bb.p3.training
    bb.set_epoch(2)
    assert all(p.requires_grad for p in bb.encoder.parameters()) and bb.encoder.training
    with pytest.raises(ValueError, match="3 input channels"):
        MobileSAMBackbone(1, [32, 64, 128])


def test_space_broadcast_survives_nan_offsets():
    """torchvision's CPU deform kernel segfaults on NaN offsets; the layer keeps them finite."""
    sb = SpaceBroadcast([16, 8, 8], 16)
    with torch.no_grad():
        sb.offset_pw.bias.fill_(float("nan"))
    y = sb([torch.randn(1, 16, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(3, 8)])
    assert y.shape == (1, 16, 6, 6)


def test_space_broadcast_starts_as_plain_conv():
    """Zero-initialised offsets and mask 0.5: with max_dilation=1 the deformable conv equals 0.5 * a plain conv."""
    torch.manual_seed(0)
    sb = SpaceBroadcast([8, 8, 8], 8, max_dilation=1.0).eval()
    f, g = torch.randn(1, 8, 7, 7), torch.randn(1, 8, 7, 7)
    y = F.conv2d(torch.cat([f, sb.compress(g)], 1), sb.weight, padding=1) * 0.5
    expected = sb.act(sb.bn(y)) + f
    t = torch.randn(2, 8)
    torch.testing.assert_close(sb([f, g, t]), expected, atol=1e-5, rtol=1e-5)
    with (
        torch.no_grad()
    ):  # move the offset/mask branch off its zero init: no longer a plain conv, so the check can fail
        for name, p in sb.named_parameters():
            if not name.startswith(("weight", "compress", "bn")):
                p.add_(0.5)
    assert (sb([f, g, t]) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("geo_norm, dilation", [(0.0, 2), (1e4, 1)])
def test_space_broadcast_dilation_follows_the_hyperbolic_radius(geo_norm, dilation):
    """r = 1 + (r_max - 1)(1 - tanh(sqrt(kappa)|G|)): a pixel at the ball's origin gets r_max (here 2), one near the
    boundary a tight kernel; at integer r (zero learned offsets) it is exactly a conv with ``dilation=r``."""
    torch.manual_seed(0)
    sb = SpaceBroadcast([8, 8, 8], 8, max_dilation=2.0).eval()
    f = torch.randn(1, 8, 9, 9)
    direction = F.normalize(torch.randn(1, 8, 9, 9), dim=1)
    g = direction * geo_norm
    y = F.conv2d(torch.cat([f, sb.compress(g)], 1), sb.weight, padding=dilation, dilation=dilation) * 0.5
    # 1e-4: eager deformable conv samples through grid_sample's normalised coordinates (nn/deform.py), ~5e-5 relative
    # rounding on the geometric features of norm 1e4 used here
    torch.testing.assert_close(sb([f, g, torch.randn(2, 8)]), sb.act(sb.bn(y)) + f, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sb.dilation(g), torch.full((1, 1, 9, 9), float(dilation)))


def test_space_broadcast_curvature_sets_the_dilation_and_learns():
    """Larger kappa -> larger relative radius -> smaller dilation; the loss gradient reaches kappa through the offsets."""
    sb = SpaceBroadcast([8, 8, 8], 8, max_dilation=3.0)
    g = F.normalize(torch.randn(2, 8, 6, 6), dim=1) * 0.5
    r_flat = sb.dilation(g).mean().item()
    with torch.no_grad():
        sb.log_c.fill_(math.log(8.0))
    assert sb.dilation(g).mean().item() < r_flat - 0.5
    sb([torch.randn(2, 8, 6, 6), g, torch.randn(3, 8)]).pow(2).mean().backward()
    assert sb.log_c.grad is not None and sb.log_c.grad.abs() > 0
    with pytest.raises(ValueError, match="max_dilation"):
        SpaceBroadcast([8, 8, 8], 8, max_dilation=0.5)
