"""``BaseModel.fuse`` (called by ``yolo predict``/``val``/``export`` before inference) also fuses DS-MoE layers.

Stock ``fuse`` folds BatchNorm into Ultralytics' own ``Conv`` modules only. Every DS-MoE layer offers
``fuse_inference()`` (``nn/base.py``): it switches the layer to its inference path (text-only results computed once
per class text, normalisations and projections folded, chosen experts as one gathered product; MobileSAM's TinyViT
folds its ``Conv2d_BN`` pairs and goes channels-last). The wrapper calls it on every such layer first, then runs
stock ``fuse`` unchanged. Stock models have no such layer and are untouched.
"""

from __future__ import annotations

__all__ = ("install_fuse",)


def install_fuse(tasks) -> None:
    """Wrap ``tasks.BaseModel.fuse`` (idempotent)."""
    cls = tasks.BaseModel
    stock = cls.fuse
    if getattr(stock, "_dsmoe_hook", None):
        return

    def fuse(self, *args, **kwargs):
        for m in self.modules():
            if callable(getattr(m, "fuse_inference", None)):
                m.fuse_inference()
        return stock(self, *args, **kwargs)

    fuse._dsmoe_hook, fuse.stock = "full", stock
    cls.fuse = fuse
