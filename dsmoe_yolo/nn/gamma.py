"""The paper's deterministic gamma preprocessing, carried by the model so train, val, predict and export agree.

    x' = clip(alpha * x ** gamma, 0, 1)        x: the model input (B, 3, H, W) in [0, 1]; paper: alpha = 1, gamma = 1.5

The paper applies its gamma transform (alpha = 1, gamma = 1.5) to every image before loading. Here it runs as a
forward pre-hook on the model's first layer (``InputGamma.attach``), installed at training when the train arg
``gamma_mode`` is ``preprocess``: the hook is pickled with the model, so validation, ``predict``, checkpoints and
exported graphs (ONNX, TorchScript) all apply it, with no extra step for the user. Departure: it acts on the
letterboxed, augmented batch rather than on the raw file, so letterbox padding (grey 114) and MixUp blends are
transformed too; for a pointwise transform the image content is the same. The random per-image variant is
``dsmoe_yolo.augment.GammaTransform`` (``gamma_mode: augment``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ("InputGamma",)


class InputGamma(nn.Module):
    """Fixed gamma correction of the network input, used as a forward pre-hook (no parameters, no state-dict keys).

    Args:
        gamma (float): Exponent (> 0); the paper's 1.5 darkens mid-tones.
        gain (float): alpha.

    Examples:
        >>> InputGamma(2.0)(None, (torch.full((1, 3, 2, 2), 0.5),))[0].flatten()[0].item()
        0.25
    """

    def __init__(self, gamma: float = 1.5, gain: float = 1.0):
        super().__init__()
        if gamma <= 0 or gain <= 0:
            raise ValueError(
                f"gamma preprocessing needs gamma > 0 and gamma_gain > 0, got gamma={gamma}, gamma_gain={gain}"
            )
        self.gamma, self.gain = float(gamma), float(gain)

    def forward(self, module: nn.Module | None, args: tuple) -> tuple:
        """Pre-hook body: transform the first positional input (B, 3, H, W) in [0, 1], keep the rest."""
        x = args[0]
        if isinstance(x, torch.Tensor):
            x = (self.gain * x.clamp(0, 1).pow(self.gamma)).clamp(0, 1)
        return (x, *args[1:])

    @staticmethod
    def find(model: nn.Module) -> InputGamma | None:
        """The ``InputGamma`` hooked on ``model``'s first layer (a ``DetectionModel``), or None."""
        first = model.model[0]
        return next((h for h in first._forward_pre_hooks.values() if isinstance(h, InputGamma)), None)

    def attach(self, model: nn.Module) -> InputGamma:
        """Hook this transform on the first layer of ``model`` (a ``DetectionModel``), replacing one already there."""
        first = model.model[0]
        for key, hook in list(first._forward_pre_hooks.items()):
            if isinstance(hook, InputGamma):
                del first._forward_pre_hooks[key]
        first.register_forward_pre_hook(self)
        return self

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, gain={self.gain}"
