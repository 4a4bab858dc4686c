"""Stage 5 numerics: geoopt vs the export mirror, finite outputs and gradients at the edges, autocast islands."""

from __future__ import annotations

import math

import pytest
import torch
from geoopt.manifolds.stereographic import math as gmath

from dsmoe_yolo.nn import HyperbolicAlign
from dsmoe_yolo.nn import poincare as ball
from dsmoe_yolo.nn.base import aux_outputs


@pytest.mark.parametrize("c", [0.01, 0.7, 10.0])
def test_export_mirror_matches_geoopt(c):
    torch.manual_seed(0)
    c = torch.tensor(c)
    u, v = torch.randn(7, 16) * 3, torch.randn(7, 16)
    x, y = gmath.project(gmath.expmap0(u, k=-c), k=-c), gmath.project(gmath.expmap0(v, k=-c), k=-c)
    r = torch.tensor(0.37)
    pairs = [
        (gmath.expmap0(u, k=-c), ball._torch_expmap0(u, c)),
        (gmath.logmap0(x, k=-c), ball._torch_logmap0(x, c)),
        (gmath.mobius_add(x, y, k=-c), ball._torch_mobius_add(x, y, c)),
        (gmath.mobius_scalar_mul(r, x, k=-c), ball._torch_mobius_scalar_mul(r, x, c)),
        (gmath.dist(x, y, k=-c), ball._torch_dist(x, y, c)),
        (gmath.project(x * 50, k=-c, eps=4e-3), ball._torch_project(x * 50, c, 4e-3)),
    ]
    for expected, mirrored in pairs:
        torch.testing.assert_close(mirrored, expected, atol=1e-5, rtol=1e-5)


def layer_with(scale: float | None = None, seed=0):
    torch.manual_seed(seed)
    layer = HyperbolicAlign([16, 8], 12, hierarchy=[-1, 0, 0, 1])
    return layer


EDGE_INPUTS = {
    "zero": lambda: torch.zeros(2, 16, 4, 4),
    "1e-8": lambda: torch.randn(2, 16, 4, 4) * 1e-8,
    "1e4": lambda: torch.randn(2, 16, 4, 4) * 1e4,
    "boundary": lambda: torch.randn(2, 16, 4, 4) * 1e3,  # tanh saturates: points sit on the clamp at the boundary
}


@pytest.mark.parametrize("name", list(EDGE_INPUTS))
@pytest.mark.parametrize("log_c", [math.log(1e-2), 0.0, math.log(10.0), -50.0, 50.0])
def test_finite_forward_and_backward_at_the_edges(name, log_c):
    layer = layer_with()
    with torch.no_grad():
        layer.log_c.fill_(log_c)  # -50 / 50 drive the curvature to its clamps
    f = EDGE_INPUTS[name]().requires_grad_(True)
    t = torch.randn(4, 8, requires_grad=True)
    out = layer([f, t])
    assert torch.isfinite(out).all()
    aux = aux_outputs(layer)
    loss = out.pow(2).mean() + aux["hyp_angle"] + aux["hyp_order"]
    loss.backward()
    for g in (f.grad, t.grad, *(p.grad for p in layer.parameters())):
        assert g is not None and torch.isfinite(g).all()
    assert 1e-2 - 1e-6 <= layer.curvature.item() <= 10 + 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_island_under_autocast(dtype):
    layer = layer_with()
    f, t = torch.randn(2, 16, 5, 5, dtype=dtype) * 100, torch.randn(4, 8)
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = layer([f, t])
    except RuntimeError as e:  # pragma: no cover - older torch without CPU fp16 autocast
        pytest.skip(f"CPU autocast {dtype} unsupported: {e}")
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    ref = layer([f.float(), t])
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def test_alignment_weights_prefer_the_nearest_anchor():
    """Run the layer: at a low temperature each pixel's weights pick its nearest anchor, so its output is the Mobius
    fusion of the pixel with that anchor; with the sign of the distance flipped it would fuse the farthest one."""
    layer = layer_with()
    with torch.no_grad():
        layer.visual.weight.zero_(), layer.visual.bias.zero_(), layer.text.bias.zero_()
        layer.text.weight.copy_(torch.eye(12, 8))
        layer.visual.weight[:8, :8, 0, 0] = torch.eye(8)
        layer.log_tau.fill_(math.log(1e-2))  # near one-hot weights
        layer.fusion_scale.fill_(1.0)
    t = torch.eye(8)[:4] * 0.8
    f = torch.zeros(1, 16, 1, 4)
    f[0, :8, 0, :] = t.T * 0.9  # pixel j sits near class j's anchor
    with torch.no_grad():
        out = layer([f, t])[0, :, 0, :].T  # (4 pixels, 12)
        c = layer.curvature
        alpha_v, alpha_t = layer.input_scales()
        z = ball.project(
            ball.expmap0(ball.clamp_tangent(layer.visual(f).flatten(2).transpose(1, 2)[0] * alpha_v, c), c), c
        )  # (4, 12)
        anchors = ball.project(ball.expmap0(ball.clamp_tangent(layer.text(t) * alpha_t, c), c), c)  # (4, 12)
        ctx = ball.project(ball.expmap0(ball.clamp_tangent(ball.logmap0(anchors, c), c), c), c)
        fused_with = torch.stack(
            [ball.logmap0(ball.project(ball.mobius_add(z, ctx[k].expand_as(z), c), c), c) for k in range(4)], 1
        )  # (pixel, k, 12)
    err = (fused_with - out[:, None]).norm(dim=-1)  # (pixel, k)
    assert err.argmin(-1).tolist() == [0, 1, 2, 3]
    assert err.min(-1).values.max() < 1e-3 < err.max(-1).values.min()


def test_hierarchy_loss_orders_parents_closer_to_origin():
    """hyp_order is the hinge mean of d(0, a_parent) + margin - d(0, a_child); minimising it alone moves every parent
    closer to the origin than each of its children (hierarchy: 0 root, 1 and 2 under 0, 3 under 1)."""
    layer = layer_with()
    with torch.no_grad():
        layer.text.weight.copy_(torch.eye(12, 8)), layer.text.bias.zero_()
    t = torch.eye(8)[:4] * torch.tensor([[2.0], [1.0], [0.6], [0.3]])  # start inverted: the root is farthest out
    parents = {1: 0, 2: 0, 3: 1}

    def origin_distance():
        c = layer.curvature
        a = ball.project(ball.expmap0(ball.clamp_tangent(layer.text(t) * layer.input_scales()[1], c), c), c)
        return ball.dist(torch.zeros_like(a), a, c)

    layer([torch.randn(1, 16, 2, 2), t])
    d0 = origin_distance().detach()
    hinge = [max(float(d0[p] - d0[ch]) + layer.margin, 0.0) for ch, p in parents.items()]
    assert aux_outputs(layer)["hyp_order"].item() == pytest.approx(sum(hinge) / 3, rel=1e-4) and min(hinge) > 0
    opt = torch.optim.Adam(layer.text.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        layer([torch.randn(1, 16, 2, 2), t])
        aux_outputs(layer)["hyp_order"].backward()
        opt.step()
    layer([torch.randn(1, 16, 2, 2), t])
    assert aux_outputs(layer)["hyp_order"].item() == 0.0
    d0 = origin_distance().detach()
    for ch, p in parents.items():
        assert d0[p] + layer.margin <= d0[ch] + 1e-4, (p, ch, d0.tolist())
    with pytest.raises(ValueError, match="hierarchy lists 4 entries but the model has 3 classes"):
        layer([torch.randn(1, 16, 2, 2), torch.randn(3, 8)])


def test_group_ordering_is_the_hinge_against_the_group_centre():
    """Eq. 12 with groups: relu(2|mean_k log0 a_k| - 2|log0 a_child| + margin), mean over members of groups of >= 2."""
    torch.manual_seed(0)
    layer = HyperbolicAlign([16, 8], 12, groups=[0, 0, 1, 0, -1], margin=5.0)
    t = torch.randn(5, 8)
    layer([torch.randn(1, 16, 2, 2), t])
    c = layer.curvature
    u = ball.logmap0(
        ball.project(ball.expmap0(ball.clamp_tangent(layer.text(t) * layer.input_scales()[1], c), c), c), c
    )
    members = [0, 1, 3]  # group 1 has one class: skipped; class 4 has no group
    centre = 2 * u[members].mean(0).norm()
    expected = torch.relu(centre - 2 * u[members].norm(dim=-1) + 5.0).mean()  # large margin: every hinge active
    got = aux_outputs(layer)["hyp_order"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    got.backward()
    assert layer.text.weight.grad is not None and layer.text.weight.grad.abs().sum() > 0
    single = HyperbolicAlign([16, 8], 12, groups=[0, 1, -1])
    assert not single.has_hierarchy or single([torch.randn(1, 16, 2, 2), torch.randn(3, 8)]) is not None
    assert "hyp_order" not in aux_outputs(single)  # only singleton groups: nothing to order
    with pytest.raises(ValueError, match="groups lists 5 entries but the model has 3 classes"):
        layer([torch.randn(1, 16, 2, 2), torch.randn(3, 8)])


def test_default_scales_keep_points_off_the_ball_margin():
    """Regression: without MERU's input scales, unit-variance text of width 256 put every anchor at the projection
    margin from the first step (sqrt(c)|W_t T| ~ 4.6, tanh ~ 0.9998 > 1 - 4e-3), where the ordering loss and the
    curvature get no gradient. With the default scales (1/sqrt(D)) anchors and pixels start inside, and c, tau, lambda
    and the ordering term all receive gradients."""
    torch.manual_seed(0)
    layer = HyperbolicAlign([64, 256], 64, hierarchy=[-1, 0, 0, -1, 3, 3])
    text = torch.nn.functional.layer_norm(torch.randn(6, 256), (256,))  # as ClassText's LayerNorm output
    feats = torch.nn.functional.silu(torch.randn(2, 64, 7, 7))
    out = layer([feats, text])
    c = layer.curvature
    anchors, _ = layer.anchors(text, c)
    radius = (anchors.norm(dim=-1) * c.sqrt()).detach()
    assert radius.max() < 0.9, radius.tolist()  # margin at 1 - 4e-3
    v = torch.nn.functional.conv2d(feats, *layer.visual_projection()).flatten(2).transpose(1, 2)
    pixel_radius = torch.tanh(v.norm(dim=-1) * c.sqrt()).detach()
    assert (pixel_radius < 0.99).float().mean() > 0.95
    (out.square().mean() + aux_outputs(layer)["hyp_order"]).backward()
    for name in ("log_c", "log_tau", "fusion_scale", "log_scale"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 1e-6, name
    assert layer.text.weight.grad.abs().sum() > 0


def test_layer_from_before_the_scales_computes_as_before():
    """A layer unpickled from a checkpoint that predates ``log_scale`` has no such parameter: it runs unscaled, i.e.
    exactly like a current layer whose scales are 1, in eval and on the fused inference path."""
    torch.manual_seed(0)
    old, new = HyperbolicAlign([16, 8], 12), HyperbolicAlign([16, 8], 12)
    new.load_state_dict(old.state_dict())
    del old.log_scale  # what unpickling a module saved before the parameter existed gives
    with torch.no_grad():
        new.log_scale.zero_()
    assert old.input_scales() == (1.0, 1.0) and "log_scale" not in old.state_dict()
    f, t = torch.randn(2, 16, 5, 5), torch.randn(4, 8)
    torch.testing.assert_close(old([f, t]), new([f, t]))
    for layer in (old, new):
        layer.eval().fuse_inference()
    with torch.inference_mode():
        torch.testing.assert_close(old([f, t]), new([f, t]))
