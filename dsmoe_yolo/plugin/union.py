"""Hooks that let the stock trainer and validator take several datasets at once (``dsmoe_yolo.multi_dataset``).

==================================================  ===============================================================
hook                                                what it adds for a multi-dataset ``data=`` (nothing otherwise)
==================================================  ===============================================================
``check_det_dataset`` (engine.trainer/validator)    the union's data dict (joined class names, each member's paths)
``build_yolo_dataset`` (detect train/val)           one dataset per member, labels renumbered into the union, joined
``DetectionModel.init_criterion`` (``hooks``)       the class loss masked to the classes of each image's dataset
``DetectionValidator.update_metrics``               predictions of classes the image's dataset does not annotate dropped
``DetectionValidator.get_stats``                    ``metrics/mAP50(<dataset>)`` and ``metrics/mAP50-95(<dataset>)``
``on_pretrain_routine_end`` callback (``hooks``)     the same columns in every ``results.csv`` row, from the first
==================================================  ===============================================================
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dsmoe_yolo.multi_dataset import SPACES, is_union, load_union
from dsmoe_yolo.plugin import internals

__all__ = (
    "install_dataset_check",
    "install_dataset_builder",
    "install_validator",
    "MaskedCriterion",
    "masked_criterion",
    "member_metric_columns",
)


def install_dataset_check(module) -> None:
    """Wrap ``check_det_dataset`` in ``module``'s namespace (``ultralytics.engine.trainer`` / ``.validator``)."""
    internals.check_module(module)
    stock = module.check_det_dataset
    if getattr(stock, "_dsmoe_hook", None):
        return

    def check_det_dataset(dataset, *args, **kwargs):
        if is_union(dataset):
            return load_union(dataset, check=getattr(stock, "stock", stock))
        return stock(dataset, *args, **kwargs)

    check_det_dataset._dsmoe_hook, check_det_dataset.stock = "full", stock
    module.check_det_dataset = check_det_dataset


def install_dataset_builder(module) -> None:
    """Wrap ``build_yolo_dataset`` in ``module``'s namespace (``ultralytics.models.yolo.detect.train`` / ``.val``)."""
    internals.check_module(module)
    stock = module.build_yolo_dataset
    if getattr(stock, "_dsmoe_hook", None):
        return

    def build_yolo_dataset(cfg, img_path, batch, data, mode="train", rect=False, stride=32, **kwargs):
        if not isinstance(data, dict) or "union" not in data:
            return stock(cfg, img_path, batch, data, mode=mode, rect=rect, stride=stride, **kwargs)
        from ultralytics.data.dataset import YOLOConcatDataset
        from ultralytics.utils import LOGGER

        split = "train" if mode == "train" else "val"
        parts = []
        for member in (m for m in data["union"] if m["split"] == split):
            # rect batches would mix members' image shapes at the seams of the joined dataset
            ds = stock(cfg, member["images"], batch, member["data"], mode=mode, rect=False, stride=stride, **kwargs)
            to_union = np.asarray(member["to_union"])
            for label in ds.labels:  # (n, 1) local class ids -> union ids, a new array (the cache is not touched)
                label["cls"] = to_union[label["cls"].astype(int)].astype(label["cls"].dtype)
            SPACES.add(member["name"], ds.im_files, sorted(set(member["to_union"])), data["nc"], split)
            LOGGER.info(
                f"DS-MoE data: {member['name']} {split} ({len(ds)} images): classes {member['data']['local_names']} "
                f"-> union {member['to_union']}"
            )
            parts.append(ds)
        joined = YOLOConcatDataset(parts)
        joined.labels = [label for ds in parts for label in ds.labels]  # what plots and max_det checks read
        return joined

    build_yolo_dataset._dsmoe_hook, build_yolo_dataset.stock = "full", stock
    module.build_yolo_dataset = build_yolo_dataset


class MaskedBCE(nn.Module):
    """A criterion's element-wise class loss, multiplied by ``mask`` (B, nc) when set: other datasets' classes
    contribute neither positives nor negatives."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.mask = inner, None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self.inner(pred, target)  # (B, anchors, nc)
        return out if self.mask is None else out * self.mask[:, None, :].to(out.dtype)

    @property
    def loss_weight(self):  # DSMoEDetectionLoss.cls_scale reads it
        return self.inner.loss_weight


class MaskedCriterion:
    """Wraps a detection criterion: each batch's class loss is masked by the images' datasets (``SPACES``)."""

    def __init__(self, inner):
        self.inner = inner
        inner.bce = MaskedBCE(inner.bce)

    def __call__(self, preds, batch):
        self.inner.bce.mask = SPACES.mask(batch.get("im_file", ()), self.inner.nc, self.inner.device)
        try:
            return self.inner(preds, batch)
        finally:
            self.inner.bce.mask = None

    def __getattr__(self, name):
        if name == "inner":  # unpickling: before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.inner, name)


def masked_criterion(criterion):
    """``criterion`` wrapped in ``MaskedCriterion`` while a multi-dataset training has registered its images."""
    return MaskedCriterion(criterion) if SPACES.training_members() else criterion


def install_validator(module) -> None:
    """Wrap ``DetectionValidator.update_metrics`` and ``get_stats`` of ``ultralytics.models.yolo.detect.val``."""
    internals.check_module(module)
    cls = module.DetectionValidator
    stock_update, stock_stats = cls.update_metrics, cls.get_stats
    if getattr(stock_update, "_dsmoe_hook", None):
        return

    def update_metrics(self, preds, batch):
        mask = SPACES.mask(batch.get("im_file", ()), int(self.nc)) if SPACES.members("val") else None
        if mask is not None:
            mask = mask.bool()
            kept = []
            for i, p in enumerate(preds):
                keep = mask[i].to(p["cls"].device)[p["cls"].long()]
                kept.append({k: v[keep] if torch.is_tensor(v) and len(v) == len(keep) else v for k, v in p.items()})
            preds = kept
        return stock_update(self, preds, batch)

    def get_stats(self):
        stats = stock_stats(self)
        members = SPACES.members("val")
        if not members:
            return stats
        from ultralytics.utils import LOGGER

        box = self.metrics.box
        index = {int(c): i for i, c in enumerate(box.ap_class_index)}
        for name, mask in members:
            rows = [index[c] for c in mask.nonzero()[0].tolist() if c in index]
            ap50 = float(box.all_ap[rows, 0].mean()) if rows else 0.0
            ap = float(box.all_ap[rows].mean()) if rows else 0.0
            key50, key = member_metric_keys(name)
            stats[key50], stats[key] = ap50, ap
            LOGGER.info(f"DS-MoE data: {name}: mAP50 {ap50:.3f}, mAP50-95 {ap:.3f} ({len(rows)} classes with labels)")
        return stats

    update_metrics._dsmoe_hook, update_metrics.stock = "full", stock_update
    get_stats._dsmoe_hook, get_stats.stock = "full", stock_stats
    cls.update_metrics, cls.get_stats = update_metrics, get_stats


def member_metric_columns(trainer) -> None:
    """Callback ``on_pretrain_routine_end``: the per-dataset columns (0 until a validation fills them) in the trainer's
    metrics, where ``get_stats`` puts them (after the stock metrics, before the val losses).

    Without them an epoch that does not validate (``val=False``: every epoch but the last) writes fewer columns than
    the validated last one, and ``results.csv`` gets a ragged last row that ``results.png`` fails to plot.
    """
    members = SPACES.members("val")
    if not members or not isinstance(getattr(trainer, "metrics", None), dict):
        return
    items = list(trainer.metrics.items())
    cut = next((i for i, (k, _) in enumerate(items) if k.startswith("val/")), len(items))
    extra = [(k, 0.0) for name, _ in members for k in member_metric_keys(name) if k not in trainer.metrics]
    trainer.metrics = dict(items[:cut] + extra + items[cut:])


def member_metric_keys(name: str) -> tuple[str, str]:
    """The metric names of one member dataset's mAP50 and mAP50-95 (``get_stats`` and ``results.csv``)."""
    return f"metrics/mAP50({name})", f"metrics/mAP50-95({name})"
