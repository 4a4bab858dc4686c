"""Model size and compute: parameters and GFLOPs counted with ``torch.utils.flop_counter`` (not only thop).

thop returns 0.0 on any error and skips attention matmuls; ``FlopCounterMode`` counts the aten ops actually run.
torchvision's deformable convolution has no formula there, so one is registered: 2 * B * Cout * Hout * Wout *
(Cin / groups) * kh * kw for the products, plus 4 bilinear taps (7 ops) per sampled input value.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ("count_gflops", "count_params", "thop_gflops")

_registered = False


def _register_deform_formula() -> None:
    global _registered
    if _registered:
        return
    import torchvision  # noqa: F401 - registers torch.ops.torchvision.deform_conv2d
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.torchvision.deform_conv2d)
    def _deform_flops(input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *args, out_shape=None, **kwargs):
        b, c_out, h, w = out_shape
        _, c_in_g, kh, kw = weight_shape
        products = 2 * b * c_out * h * w * c_in_g * kh * kw
        sampling = 7 * b * input_shape[1] * h * w * kh * kw
        return products + sampling

    _registered = True


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640, batch: int = 1) -> float:
    """GFLOPs of one forward pass at ``imgsz`` with ``torch.utils.flop_counter`` (eval mode, float32)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_deform_formula()
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    x = torch.zeros(batch, 3, h, w, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def thop_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs as Ultralytics reports them (thop; 0.0 when thop fails)."""
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(model, imgsz))
