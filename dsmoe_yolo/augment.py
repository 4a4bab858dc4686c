"""The paper's gamma photometric transform: a random train-time augmentation, or the paper's fixed preprocessing.

Train arg ``gamma_mode`` picks which:

- ``augment`` (default): ``GammaTransform`` below, a random exponent per image with probability ``gamma_p``, at train
  time only (a common augmentation; not what the paper describes).
- ``preprocess``: the paper's transform, out = alpha * in ** gamma with the exponent fixed at ``gamma`` (1.5), on every
  image at train, val, predict and export alike (``dsmoe_yolo.nn.gamma.InputGamma``, installed on the model by
  ``install_input_gamma``); ``gamma_p`` is ignored and no random transform is added.

The random augmentation:

    out = clip(alpha * (img / 255) ** g * 255),   g = gamma ** u,  u ~ U(-1, 1)   (applied with probability p)

The paper's setting is alpha = 1, gamma = 1.5 (so g spans [1/1.5, 1.5]: darker and brighter mid-tones). Train args
(added to Ultralytics' config by the plugin): ``gamma_p`` (probability, 0 = off, the default), ``gamma``,
``gamma_gain``. The plugin inserts it right after ``RandomHSV`` in Ultralytics' ``v8_transforms``, so the stock
trainer applies it (also after mosaic is closed); labels are untouched (a photometric transform).
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ("GammaTransform", "insert_gamma_transform", "install_input_gamma", "GAMMA_MODES")

GAMMA_MODES = ("augment", "preprocess")


class GammaTransform:
    """Random gamma correction of ``labels["img"]`` (uint8 HxWxC), labels unchanged.

    Args:
        p (float): Probability of applying it.
        gamma (float): Exponent bound (>= 1): g = gamma ** U(-1, 1).
        gain (float): alpha, multiplies the corrected image.

    Examples:
        >>> t = GammaTransform(p=1.0, gamma=1.5)
        >>> out = t({"img": np.full((2, 2, 3), 64, np.uint8)})
        >>> out["img"].dtype
        dtype('uint8')
    """

    def __init__(self, p: float = 0.5, gamma: float = 1.5, gain: float = 1.0):
        if not 0 <= p <= 1:
            raise ValueError(f"gamma_p={p} must be in [0, 1]")
        if gamma < 1:
            raise ValueError(f"gamma={gamma} must be >= 1 (the exponent is drawn from [1/gamma, gamma])")
        if gain <= 0:
            raise ValueError(f"gamma_gain={gain} must be > 0")
        self.p, self.gamma, self.gain = p, gamma, gain
        self.last_exponent = None

    def __call__(self, labels: dict) -> dict:
        """Apply to an Ultralytics labels dict (in place on ``img``); return it."""
        if self.p > 0 and random.random() < self.p:
            g = self.gamma ** random.uniform(-1.0, 1.0)
            self.last_exponent = g
            lut = np.clip(self.gain * (np.arange(256) / 255.0) ** g * 255.0 + 0.5, 0, 255).astype(np.uint8)
            img = labels["img"]
            labels["img"] = (
                lut[img]
                if img.dtype == np.uint8
                else np.clip(self.gain * (img / 255.0) ** g * 255.0, 0, 255).astype(img.dtype)
            )
        return labels

    def __repr__(self) -> str:
        return f"GammaTransform(p={self.p}, gamma={self.gamma}, gain={self.gain})"


def insert_gamma_transform(transforms, hyp):
    """Insert ``GammaTransform`` after ``RandomHSV`` in a ``Compose`` when ``hyp.gamma_p > 0`` in ``augment`` mode."""
    p = float(getattr(hyp, "gamma_p", 0.0) or 0.0)
    if p <= 0 or _mode(hyp) != "augment":
        return transforms
    from ultralytics.data.augment import RandomHSV

    t = GammaTransform(p, float(getattr(hyp, "gamma", 1.5)), float(getattr(hyp, "gamma_gain", 1.0)))
    items = transforms.transforms
    at = next((i + 1 for i, x in enumerate(items) if isinstance(x, RandomHSV)), len(items))
    items.insert(at, t)
    return transforms


def _mode(hyp) -> str:
    mode = str(getattr(hyp, "gamma_mode", "augment") or "augment")
    if mode not in GAMMA_MODES:
        raise ValueError(
            f"gamma_mode={mode!r} is unknown; use 'augment' (random, train only) or 'preprocess' (the paper's)"
        )
    return mode


def install_input_gamma(model, args) -> bool:
    """Hook the fixed gamma on ``model`` (a ``DetectionModel``) when ``args.gamma_mode == 'preprocess'``; True if so.

    Idempotent (a resumed model keeps one hook). In ``augment`` mode the model is left as it is.
    """
    if _mode(args) != "preprocess":
        return False
    from dsmoe_yolo.nn.gamma import InputGamma

    InputGamma(float(getattr(args, "gamma", 1.5)), float(getattr(args, "gamma_gain", 1.0))).attach(model)
    return True
