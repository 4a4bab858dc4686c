"""Poincare-ball operations with positive curvature magnitude ``c`` (geoopt curvature ``k = -c``).

Training and eager inference use geoopt (``geoopt.manifolds.stereographic.math``): the math is taken from geoopt,
not rewritten. Export cannot: legacy ONNX export fails on geoopt's ``aten::isclose`` and TorchScript-compiled
branches. While tracing, or when called with ``plain=True`` (``expmap0``, ``logmap0``, ``project``: the fused
inference path's text anchors), each function takes ``_torch_*``, a line-by-line mirror of geoopt's ``k < 0`` branch
(same clamps, ``artanh`` as ``0.5 * (log(1 + x) - log(1 - x))``), checked against geoopt to 1e-5 by the tests.
The clamps are named here (``TANH_CLAMP``, ``ARTANH_EDGE``, ``EPS_FP32``) for the closed form of
``HyperbolicAlign._fuse_radial`` too.

All functions reduce over the last dimension. Numerics live here in one place: ``project`` keeps points inside the
ball; ``clamp_tangent`` clamps tangent vectors *before* ``tanh`` (MERU's habit) so huge inputs stay finite.
"""

from __future__ import annotations

import functools
import warnings

import torch

from dsmoe_yolo.nn.base import is_tracing

__all__ = ("expmap0", "logmap0", "mobius_add", "mobius_scalar_mul", "dist", "project", "clamp_tangent")


@functools.cache
def _gmath():
    """geoopt's stereographic math, imported on first use: importing geoopt compiles TorchScript (slow, and a
    ``torch.jit.script`` deprecation warning), which stock Ultralytics commands must not pay for."""
    with warnings.catch_warnings():  # geoopt's own use of torch.jit.script, not actionable by our users
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
        from geoopt.manifolds.stereographic import math

    return math


MAX_TANGENT = 15.0  # sqrt(c) * |u| beyond this makes tanh(...) == 1 in fp32 anyway
TANH_CLAMP = 15.0  # geoopt clamps tanh's argument to +-15
ARTANH_EDGE = 1 - 1e-7  # geoopt clamps artanh's argument to +-(1 - 1e-7)
EPS_FP32 = 4e-3  # geoopt's project margin in float32 (1e-5 otherwise): |x| <= (1 - eps) / sqrt(c)


def _k(c: torch.Tensor) -> torch.Tensor:
    return -c


def clamp_tangent(u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Scale tangent vectors so that ``sqrt(c) * |u| <= MAX_TANGENT`` (direction kept)."""
    limit = MAX_TANGENT / c.sqrt()
    norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return u * (limit / norm).clamp(max=1.0)


# Pure-torch mirror of geoopt (k < 0), used while tracing for export --------------------------------------------------
def _tanh(x):
    return x.clamp(-TANH_CLAMP, TANH_CLAMP).tanh()


def artanh_exportable(x):
    """artanh written with ``log`` (ONNX export has no ``aten::atanh`` symbolic), for |x| < 1."""
    return (torch.log(1 + x) - torch.log(1 - x)) * 0.5


def _artanh(x):
    return artanh_exportable(x.clamp(-ARTANH_EDGE, ARTANH_EDGE))


def _tan_k(x, c):
    s = (c + 1e-15).sqrt()
    return _tanh(x * s) / s


def _artan_k(x, c):
    s = (c + 1e-15).sqrt()
    return _artanh(x * s) / s


def _torch_expmap0(u, c):
    n = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return _tan_k(n, c) * (u / n)


def _torch_logmap0(y, c):
    n = y.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return (y / n) * _artan_k(n, c)


def _torch_mobius_add(x, y, c):
    k = -c
    x2, y2, xy = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1, keepdim=True), (x * y).sum(-1, keepdim=True)
    num = (1 - 2 * k * xy - k * y2) * x + (1 + k * x2) * y
    denom = 1 - 2 * k * xy + k**2 * x2 * y2
    return num / denom.clamp_min(1e-15)


def _torch_mobius_scalar_mul(r, x, c):
    n = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return _tan_k(r * _artan_k(n, c), c) * (x / n)


def _torch_dist(x, y, c):
    return 2.0 * _artan_k(_torch_mobius_add(-x, y, c).norm(dim=-1), c)


def _torch_project(x, c, eps):
    maxnorm = (1 - eps) / (c + 1e-15).sqrt()
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


# Public API ----------------------------------------------------------------------------------------------------------
def expmap0(u: torch.Tensor, c: torch.Tensor, plain: bool = False) -> torch.Tensor:
    """Exponential map at the origin: tangent vectors (..., D) to ball points (..., D)."""
    return _torch_expmap0(u, c) if plain or is_tracing() else _gmath().expmap0(u, k=_k(c))


def logmap0(y: torch.Tensor, c: torch.Tensor, plain: bool = False) -> torch.Tensor:
    """Logarithmic map at the origin: ball points (..., D) to tangent vectors (..., D)."""
    return _torch_logmap0(y, c) if plain or is_tracing() else _gmath().logmap0(y, k=_k(c))


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Mobius addition x (+) y, broadcasting over leading dimensions."""
    return _torch_mobius_add(x, y, c) if is_tracing() else _gmath().mobius_add(x, y, k=_k(c))


def mobius_scalar_mul(r: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Mobius scalar multiplication r (x) x."""
    return _torch_mobius_scalar_mul(r, x, c) if is_tracing() else _gmath().mobius_scalar_mul(r, x, k=_k(c))


def dist(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Geodesic distance (...,) between ball points x and y (..., D)."""
    return _torch_dist(x, y, c) if is_tracing() else _gmath().dist(x, y, k=_k(c))


def project(x: torch.Tensor, c: torch.Tensor, eps: float | None = None, plain: bool = False) -> torch.Tensor:
    """Pull points at or beyond the boundary back inside the ball (geoopt's eps: 4e-3 in fp32, 1e-5 otherwise)."""
    eps = (EPS_FP32 if x.dtype == torch.float32 else 1e-5) if eps is None else eps
    return _torch_project(x, c, eps) if plain or is_tracing() else _gmath().project(x, k=_k(c), eps=eps)
