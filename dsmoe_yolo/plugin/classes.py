"""``YOLO("best.pt").set_classes([...])`` for DS-MoE checkpoints loaded through the stock ``YOLO`` class.

``YOLO`` forwards unknown attributes to its ``DetectionModel``. The hook gives ``DetectionModel`` a ``set_classes``
attribute that exists only on models with a ``ClassText`` layer: for stock models the lookup still fails with
Python's usual ``AttributeError`` (and ``hasattr(model, "set_classes")``, which Ultralytics' ``load`` consults for
YOLO-World models, stays False), so stock models are untouched.
"""

from __future__ import annotations

import functools

__all__ = ("install_set_classes",)


def install_set_classes(tasks) -> None:
    """Add the DS-MoE-only ``set_classes`` attribute to ``tasks.DetectionModel`` (idempotent)."""
    cls = tasks.DetectionModel
    if "set_classes" in vars(cls):
        return

    def set_classes(self):
        from dsmoe_yolo.text.binding import class_texts, set_classes

        if not class_texts(self):
            raise AttributeError("set_classes")  # nn.Module.__getattr__ then raises the stock message
        return functools.partial(set_classes, self)

    cls.set_classes = property(set_classes, doc="DS-MoE models: change classes and class text (dsmoe_yolo.set_classes)")


def install_wrapper_set_classes(module) -> None:
    """Add the same DS-MoE-only ``set_classes`` to ``ultralytics.engine.model.Model`` (the ``YOLO`` wrapper), bound to
    the wrapper, so that its cached predictor is dropped and the next ``predict`` sees the new classes (through the
    ``DetectionModel`` attribute alone, the predictor kept the old names). Subclasses with their own ``set_classes``
    (``YOLOWorld``, ``YOLOE``) keep theirs; for stock models the lookup falls through to ``DetectionModel`` and fails
    as before."""
    cls = module.Model
    if "set_classes" in vars(cls):
        return

    def set_classes(self):
        from dsmoe_yolo.text.binding import class_texts, set_classes

        net = getattr(self, "_modules", {}).get("model")
        if isinstance(net, str) or net is None or not class_texts(net):
            raise AttributeError("set_classes")  # Model.__getattr__ then asks the DetectionModel, as stock
        return functools.partial(set_classes, self)

    cls.set_classes = property(set_classes, doc="DS-MoE models: change classes and class text (dsmoe_yolo.set_classes)")
