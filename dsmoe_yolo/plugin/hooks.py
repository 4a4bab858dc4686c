"""The individual Ultralytics hooks installed by ``dsmoe_yolo.plugin.register`` (see that module's table)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from dsmoe_yolo.model_kind import is_dsmoe_source
from dsmoe_yolo.plugin import internals
from dsmoe_yolo.plugin.config import DEFAULT_DATA, DefaultData, install_config  # noqa: F401 - re-exported


def _classes_of(module) -> set[type]:
    return {
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    }


def _allow(classes) -> None:
    torch.serialization.add_safe_globals(sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"))


def _allow_encoder_classes() -> None:
    """Allow the encoder classes our layers hold in weights-only loads: TinyViT's (``ultralytics.models.sam``, once
    ``ultralytics.models`` is fully imported) and torchvision's ResNet (ablation rows A/B). Called by the checkpoint
    loader, never at registration: importing torchvision takes seconds that stock ``yolo`` commands must not pay."""
    import torchvision.models.resnet as resnet

    _allow({resnet.ResNet, resnet.Bottleneck, resnet.BasicBlock})
    try:
        import ultralytics.models.sam.modules.tiny_encoder as tiny
    except ImportError:  # ultralytics.models still initialising: nothing can be loaded yet anyway
        return
    _allow(_classes_of(tiny))


def allow_layer_classes() -> None:
    """Allow every DS-MoE class in weights-only loads (encoder classes: ``_allow_encoder_classes``)."""
    import dsmoe_yolo.nn as dnn

    classes = set()
    for module in dnn.submodules():
        classes |= _classes_of(module)
    _allow(classes)


def install_safe_load(tasks) -> None:
    """Wrap ``tasks.torch_safe_load``: allow TinyViT's classes (and ours), check DS-MoE compatibility first and the
    loaded DS-MoE model afterwards (finite tensors, class text for its classes).

    TinyViT lives under ``ultralytics.models``, which is mid-import while the plugin registers, so its classes can
    only be allowed lazily, by the loader behind every checkpoint load.
    """
    stock = tasks.torch_safe_load
    if getattr(stock, "_dsmoe_hook", None):
        return

    def torch_safe_load(weight, *args, **kwargs):
        from dsmoe_yolo.checkpoint import check_compatible, check_loaded
        from dsmoe_yolo.plugin import expose_layers

        expose_layers()
        _allow_encoder_classes()
        if str(weight).endswith(".pt") and Path(str(weight)).is_file():
            check_compatible(weight)
        ckpt, file = stock(weight, *args, **kwargs)
        from dsmoe_yolo.plugin.runs import restore_train_args

        restore_train_args(ckpt)
        check_loaded(ckpt, file)
        return ckpt, file

    torch_safe_load._dsmoe_hook, torch_safe_load.stock = "full", stock
    tasks.torch_safe_load = torch_safe_load


def _default_data(trainer) -> None:
    """on_pretrain_routine_start: a DS-MoE model trained without ``data=`` uses the bundled synthetic set."""
    if isinstance(trainer.args.data, DefaultData) and is_dsmoe_source(trainer.args.model):
        from ultralytics.utils import LOGGER

        LOGGER.info(
            f"DS-MoE: no 'data=' given, training on the bundled synthetic set 'data={DEFAULT_DATA}' "
            f"(not '{trainer.args.data}'). Pass data=your.yaml for your own data."
        )
        trainer.args.data = DEFAULT_DATA
        args_file = Path(getattr(trainer, "save_dir", "") or "") / "args.yaml"
        if args_file.is_file():  # written before this callback; keep it truthful
            from ultralytics.utils import YAML

            YAML.save(args_file, vars(trainer.args))


def _set_epoch(trainer) -> None:
    """on_train_epoch_start: let layers with a ``set_epoch`` (encoder freezing) know the epoch."""
    model = getattr(trainer.model, "module", trainer.model)  # DDP-wrapped or not; the EMA copy has no gradients
    for m in model.modules():
        if hasattr(m, "set_epoch") and hasattr(m, "freeze_epochs"):
            m.set_epoch(trainer.epoch)


_LAZY_CALLBACKS: dict = {}


def _lazy(module: str, name: str):
    """A callback that imports ``module.name`` on first call (the same function object for the same target)."""
    key = (module, name)
    if key not in _LAZY_CALLBACKS:

        def callback(obj):
            return getattr(importlib.import_module(module), name)(obj)

        callback.__name__ = callback.__qualname__ = f"dsmoe_{name}"
        _LAZY_CALLBACKS[key] = callback
    return _LAZY_CALLBACKS[key]


def install_callbacks() -> None:
    """Append the plugin's callbacks to Ultralytics' default callbacks (every trainer/validator copies them)."""
    from ultralytics.utils.callbacks import base

    internals.check_module(base)
    wanted = {
        "on_pretrain_routine_start": [_default_data],
        "on_pretrain_routine_end": [_lazy("dsmoe_yolo.plugin.union", "member_metric_columns")],
        "on_train_epoch_start": [_set_epoch],
        "on_val_start": [_lazy("dsmoe_yolo.routing_report", "on_val_start")],
        "on_val_batch_end": [_lazy("dsmoe_yolo.routing_report", "on_val_batch_end")],
        "on_val_end": [_lazy("dsmoe_yolo.routing_report", "on_val_end")],
        "on_export_start": [_lazy("dsmoe_yolo.export", "on_export_start")],
    }
    for event, fns in wanted.items():
        for fn in fns:
            if fn not in base.default_callbacks[event]:
                base.default_callbacks[event].append(fn)


def install_criterion(tasks) -> None:
    """``DetectionModel.init_criterion``: a YAML with ``loss: qfocal_ciou`` gets the DS-MoE loss, others stock; an
    open-vocabulary head with a trained visual path adds its alignment term (``visual_training``), a SparseMoE row
    with ``balance`` its load-balance term (``routing_balance``), a ClassText row with ``spread`` its class-row spread
    term (``text_spread``)."""
    cls = tasks.DetectionModel
    stock = cls.init_criterion
    if getattr(stock, "_dsmoe_hook", None):
        return

    def init_criterion(self):
        from dsmoe_yolo.loss import criterion_for
        from dsmoe_yolo.plugin.union import masked_criterion
        from dsmoe_yolo.routing_balance import balance_criterion
        from dsmoe_yolo.text_spread import spread_criterion
        from dsmoe_yolo.visual_training import visual_criterion

        inner = balance_criterion(masked_criterion(criterion_for(self) or stock(self)), self)
        return visual_criterion(spread_criterion(inner, self), self)

    init_criterion._dsmoe_hook, init_criterion.stock = "full", stock
    cls.init_criterion = init_criterion


def install_digest(tasks) -> None:
    """``DetectionModel.__getstate__``: a pickled DS-MoE model carries the digest of its weights (``checkpoint.py``)."""
    cls = tasks.DetectionModel
    stock = cls.__getstate__
    if getattr(stock, "_dsmoe_hook", None):
        return

    def __getstate__(self):
        state = stock(self)
        if is_dsmoe_source(self):
            from dsmoe_yolo.checkpoint import DIGEST_ATTR, weights_digest

            state = dict(state)
            state[DIGEST_ATTR] = weights_digest(self)
        return state

    __getstate__._dsmoe_hook, __getstate__.stock = "full", stock
    cls.__getstate__ = __getstate__


def install_weight_transfer(tasks) -> None:
    """``BaseModel.load``: weights transferred from a DS-MoE checkpoint bring their class-text provenance along."""
    cls = tasks.BaseModel
    stock = cls.load
    if getattr(stock, "_dsmoe_hook", None):
        return

    def load(self, weights, verbose=True):
        stock(self, weights, verbose)
        src = (weights.get("ema") or weights.get("model")) if isinstance(weights, dict) else weights
        if isinstance(src, nn.Module):
            from dsmoe_yolo.text.binding import transfer_text_meta

            transfer_text_meta(src, self)

    load._dsmoe_hook, load.stock = "full", stock
    cls.load = load


def install_trainer(module) -> None:
    """``DetectionTrainer.set_model_attributes``: bind class text from the data before the optimizer; hook the gamma."""
    internals.check_module(module)
    cls = module.DetectionTrainer
    stock = cls.set_model_attributes
    if getattr(stock, "_dsmoe_hook", None):
        return

    def set_model_attributes(self):
        stock(self)
        from ultralytics.utils import LOCAL_RANK
        from ultralytics.utils.torch_utils import torch_distributed_zero_first

        from dsmoe_yolo.augment import install_input_gamma
        from dsmoe_yolo.text.binding import bind_for_training

        with torch_distributed_zero_first(LOCAL_RANK):  # DDP: rank 0 embeds and fills the cache, the others read it
            bind_for_training(self)
        install_input_gamma(
            self.model, self.args
        )  # gamma_mode=preprocess: the paper's fixed gamma travels with the model

    set_model_attributes._dsmoe_hook, set_model_attributes.stock = "full", stock
    cls.set_model_attributes = set_model_attributes


def install_transforms(module) -> None:
    """``data.dataset.v8_transforms``: insert the gamma transform after RandomHSV when ``gamma_p > 0``."""
    internals.check_module(module)
    internals.import_checked("ultralytics.data.augment")
    stock = module.v8_transforms
    if getattr(stock, "_dsmoe_hook", None):
        return

    def v8_transforms(dataset, imgsz, hyp, *args, **kwargs):
        transforms = stock(dataset, imgsz, hyp, *args, **kwargs)
        from dsmoe_yolo.augment import insert_gamma_transform

        return insert_gamma_transform(transforms, hyp)

    v8_transforms._dsmoe_hook, v8_transforms.stock = "full", stock
    module.v8_transforms = v8_transforms


def loaded_modules() -> list[str]:
    """Names of the hooked Ultralytics modules already imported (diagnostics)."""
    return [name for name in internals.REQUIRED if name in sys.modules]
