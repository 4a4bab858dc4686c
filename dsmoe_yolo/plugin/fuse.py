"""``BaseModel.fuse`` (called by ``yolo predict``/``val``/``export`` before inference) also fuses DS-MoE layers.

Stock ``fuse`` folds BatchNorm into Ultralytics' own ``Conv`` modules only. A DS-MoE layer that holds other
conv + BatchNorm pairs (MobileSAM's TinyViT uses ``Conv2d_BN``) offers ``fuse_inference()``; the wrapper calls it on
every such layer first, then runs stock ``fuse`` unchanged. Stock models have no such layer and are untouched.
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
