"""Fused inference (``fuse()`` before predict/val/export): the DS-MoE layers' cheaper inference path computes what
their eval-mode forward computes, reuses text results only while the class text is unchanged, and stays out of
training and autograd."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dsmoe_yolo.plugin as plugin
from dsmoe_yolo.nn import (
    ClassText,
    DifferentiableAggregation,
    HeterogeneousEnsemble,
    HyperbolicAlign,
    SpaceBroadcast,
    SparseMoE,
)
from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, pop_aux_outputs


def _randomised(layer: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter and normalisation statistic off its initial value (zero-initialised offsets, unit
    running variances and zero running means would hide folding mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in layer.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return layer.eval()


def _fused(layer: nn.Module) -> nn.Module:
    """A copy with every DS-MoE layer fused and Ultralytics' Conv+BN folded, as ``DetectionModel.fuse`` does."""
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    out = copy.deepcopy(layer)
    for m in out.modules():
        if isinstance(m, YAMLLayer):
            m.fuse_inference()
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    return out


TEXT = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))


def _inputs(*channels, b=3, h=7, w=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h, w, generator=g) for c in channels]


LAYERS = {
    "HyperbolicAlign": (lambda: HyperbolicAlign([32, 16], 8), lambda: [_inputs(32)[0] * 0.1, TEXT]),  # inside the ball
    "SpaceBroadcast": (lambda: SpaceBroadcast([32, 8, 16], 32), lambda: [*_inputs(32, 8), TEXT]),
    "SparseMoE": (lambda: SparseMoE([32, 16], 24, experts=8, top_k=8), lambda: [*_inputs(32, b=6), TEXT]),
    "SparseMoE-all-kinds": (lambda: SparseMoE([32, 16], 24, experts=3, top_k=3), lambda: [*_inputs(32), TEXT]),
    "HeterogeneousEnsemble": (lambda: HeterogeneousEnsemble([32, 24, 16], 32), lambda: [*_inputs(32, 24), TEXT]),
    "DifferentiableAggregation": (lambda: DifferentiableAggregation([16, 16], 16), lambda: _inputs(16, 16)),
}


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layer_computes_the_eval_forward(name, mode):
    make, inputs = LAYERS[name]
    torch.manual_seed(0)
    layer = _randomised(make())
    fused = _fused(layer)
    x = inputs()
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        expected = layer(x)
        for _ in range(2):  # the second call reuses the cached text results
            got = fused(x)
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_fused_moe_chooses_the_same_experts():
    """Top-3 of 8: wherever the 3rd and 4th choice are not a near tie (which float rounding may flip, as between
    PyTorch and ONNX Runtime), the fused gate picks the same experts and the layer gives the same output."""
    torch.manual_seed(0)
    moe = _randomised(SparseMoE([32, 16], 24, experts=8, top_k=3))
    fused = _fused(moe)
    x = _inputs(32, b=16)[0]
    with torch.no_grad():
        _, idx, _ = moe.gate(x, TEXT)
        _, idx_fused, _ = fused.gate(x, TEXT, fused.gate.folded(TEXT))
        top4 = (moe.gate.logits(x, TEXT) / moe.gate.tau).topk(4, dim=-1).values
        clear = (top4[:, 2] - top4[:, 3]) > 1e-3
        assert clear.sum() >= 12, "the test needs mostly clear choices"
        assert torch.equal(idx[clear], idx_fused[clear])
        torch.testing.assert_close(fused([x, TEXT])[clear], moe([x, TEXT])[clear], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("expert", [0, 1, 2])  # local, global, cross-modal
def test_fused_moe_runs_each_expert_kind_when_chosen(expert):
    torch.manual_seed(0)
    moe = _randomised(SparseMoE([16, 16], 16, experts=3, top_k=1))
    fused = _fused(moe)
    x = _inputs(16, b=4)[0]
    logits = torch.full((4, 3), -5.0)
    logits[:, expert] = 5.0
    logits[1:3] = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])  # two images choose otherwise
    moe.gate.logits = lambda feats, text, side=None: logits
    fused.gate.folded_logits = lambda feats, side: logits / fused.gate.tau
    with torch.no_grad():
        expected, got = moe([x, TEXT]), fused([x, TEXT])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_fused_hyperbolic_align_near_the_boundary():
    """Points clamped to the ball's edge (sqrt(c)|z| = 1 - 4e-3, where artanh is steep): the plain-torch mirror that
    the fused path and the ONNX export share departs from geoopt by float32 rounding amplified ~100x there."""
    torch.manual_seed(0)
    layer = _randomised(HyperbolicAlign([32, 16], 8))
    x = [*_inputs(32), TEXT]
    with torch.no_grad():
        torch.testing.assert_close(_fused(layer)(x), layer(x), atol=2e-3, rtol=1e-3)


def _drop_text_cache(module: nn.Module) -> None:
    from dsmoe_yolo.nn.base import _TEXT_CACHE

    for m in module.modules():
        _TEXT_CACHE.pop(m, None)


def test_fused_path_is_off_in_training_and_with_autograd():
    torch.manual_seed(0)
    layer = _fused(_randomised(HyperbolicAlign([32, 16], 8)))
    x = [*_inputs(32), TEXT]
    pop_aux_outputs(layer)
    with torch.no_grad():
        layer(x)
    assert not aux_outputs(layer), "fused inference records no auxiliary losses"
    layer.train()
    layer(x)
    assert "hyp_angle" in pop_aux_outputs(layer), "training takes the full path"
    layer.eval()
    out = layer([x[0], TEXT.clone().requires_grad_()])
    assert out.grad_fn is not None and "hyp_angle" in pop_aux_outputs(layer), "autograd takes the full path"


def test_class_text_cache_follows_new_embeddings():
    text = ClassText(8, 16, nc=3, embed_dim=12, heads=4).eval()
    text.bind(torch.randn(3, 12), {"names": ["a", "b", "c"]})
    fused = _fused(text)
    with torch.no_grad():
        first = fused()
        assert fused() is first, "the fused class text is computed once"
        fused.bind(torch.randn(4, 12), {"names": ["a", "b", "c", "d"]})
        text.bind(fused.embeddings.clone(), {"names": ["a", "b", "c", "d"]})
        second = fused()
        assert second.shape == (4, 16)
        torch.testing.assert_close(second, text())
        fused.embeddings.mul_(2)  # an in-place change is seen too
        text.embeddings.mul_(2)
        torch.testing.assert_close(fused(), text())


def test_fused_lite_model_matches_unfused_and_follows_set_classes():
    plugin.register()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("dsmoe-lite-yolov8n.yaml", nc=3, verbose=False)
    text = next(m for m in model.modules() if isinstance(m, ClassText))
    text.bind(torch.randn(3, text.embed_dim), {"names": ["a", "b", "c"]})
    for i, m in enumerate(m for m in model.modules() if isinstance(m, YAMLLayer)):  # the DS-MoE rows, residual included
        _randomised(m, seed=i)
        if isinstance(m, SparseMoE):  # every expert weighted: no near-tie choice that rounding could flip
            m.gate.top_k = m.gate.n_experts
    model.eval()
    fused = copy.deepcopy(model).fuse(verbose=False)
    assert all(m.fused for m in fused.modules() if isinstance(m, YAMLLayer))
    x = torch.rand(2, 3, 160, 128, generator=torch.Generator().manual_seed(4))

    def check():
        with torch.inference_mode():
            expected, got = model(x)[0], fused(x)[0]
        # boxes in pixels, then class scores; the slack is the ball's edge (test above), where random weights put P5
        torch.testing.assert_close(got[:, :4], expected[:, :4], atol=0.05, rtol=1e-3)
        torch.testing.assert_close(got[:, 4:], expected[:, 4:], atol=1e-3, rtol=1e-3)

    check()
    check()
    new = torch.randn(3, text.embed_dim)
    for m in (model, fused):
        next(t for t in m.modules() if isinstance(t, ClassText)).bind(new.clone(), {"names": ["x", "y", "z"]})
    check()
