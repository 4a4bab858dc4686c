"""Registration of the DS-MoE plugin with Ultralytics: one idempotent ``register()``.

Every hook is listed here with the Ultralytics internal it relies on (``internals.REQUIRED`` names them all and a
test fails if one is gone). Each hook leaves stock models exactly as they were, but for the multi-dataset ones, which act
only on a ``data=`` that lists several datasets (for any model):

==========================================  ==========================================================================
hook                                        what it adds
==========================================  ==========================================================================
``tasks.<LayerName>``                       DS-MoE layer classes resolvable by name in model YAMLs
``tasks.parse_model``                       channel plumbing for DS-MoE rows (``plugin.parse``); other YAMLs untouched
``tasks/engine.model.yaml_model_load``      ``extends:`` / ``default_scale:`` (``dsmoe.yaml`` = scale s, no warning)
``checks.check_file``, ``data.utils``       bundled YAMLs by bare name from any directory (``plugin.resolve``)
safe globals, ``tasks.torch_safe_load``     DS-MoE checkpoints load under ``ULTRALYTICS_SAFE_LOAD=1``
``cfg.TASK2DATA`` + trainer callback        a DS-MoE model trained without ``data=`` uses ``dsmoe-synth.yaml``, not COCO
``DEFAULT_CFG`` keys                        ``gamma_p``/``gamma``/``gamma_alpha`` train args (gamma transform)
``data.dataset.v8_transforms``              inserts the gamma transform when ``gamma_p > 0``
``DetectionModel.init_criterion``           ``loss: qfocal_ciou`` selects the DS-MoE loss; + ``vis_loss`` (``visual_training``), + ``moe_loss`` (``routing_balance``), + ``text_loss`` (``text_spread``)
``BaseModel.load``                          fine-tuning keeps the class-text provenance of transferred weights
``DetectionModel.__getstate__``             every pickled DS-MoE model carries its weights' digest, checked at load
``DetectionModel/Model.set_classes``        ``YOLO("best.pt").set_classes([...])`` for DS-MoE models only (``plugin.classes``)
``BaseModel.fuse``                          also puts DS-MoE layers on their inference path (``fuse_inference``, ``plugin.fuse``)
``DetectionTrainer.set_model_attributes``   binds class-text embeddings from the data's names before training
``trainer.save_model/strip_optimizer``      stock models' checkpoints carry no plugin train args (``plugin.runs``)
``Model.train``                             ``resume`` of a finished DS-MoE checkpoint: one line, nothing started
``Model.predict/val/export``                ``prompts=`` (open-vocabulary classes from words), val data checks (``plugin.run_args``)
dataset check and builder (train, val)      several datasets in one ``data=``, label spaces joined (``plugin.union``)
``DetectionValidator`` metrics              per-dataset mAP of a multi-dataset validation (``plugin.union``)
``Exporter.__call__``                       ONNX opset 19 for DeformConv; ``format=engine`` without GPU/TensorRT: one line
default callbacks                           encoder freezing by epoch, expert-usage report in ``val``, ONNX symbolics, union CSV columns
==========================================  ==========================================================================
"""

from __future__ import annotations

import threading

from dsmoe_yolo.importhook import after_import

__all__ = ("register", "is_registered", "expose_layers")

_lock = threading.RLock()
_done = False
_exposed = False


def is_registered() -> bool:
    """Return True once ``register()`` has completed in this process."""
    return _done


def register() -> None:
    """Register every DS-MoE layer and hook with Ultralytics (idempotent, thread-safe).

    Raises:
        RuntimeError: If an Ultralytics internal the plugin hooks is missing (unsupported Ultralytics version).
    """
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        from ultralytics.nn import tasks

        from dsmoe_yolo.plugin import classes, fuse, hooks, internals, parse, resolve, run_args, runs, union

        internals.check_module(tasks)
        setattr(tasks, parse.PROBE_NAME, parse.ChannelProbe)
        if getattr(tasks.parse_model, "_dsmoe_hook", None) != "full":  # a "guard" wrapper (switch off) stays inside
            tasks.parse_model = parse.make_parse_model(tasks.parse_model)
        if getattr(tasks.yaml_model_load, "_dsmoe_hook", None) != "full":
            tasks.yaml_model_load = parse.make_yaml_model_load(tasks.yaml_model_load)

        checks = internals.import_checked("ultralytics.utils.checks")
        if getattr(checks.check_file, "_dsmoe_hook", None) != "full":
            checks.check_file = resolve.make_check_file(checks.check_file)

        hooks.install_safe_load(tasks)
        hooks.install_config()
        hooks.install_callbacks()
        hooks.install_criterion(tasks)
        hooks.install_weight_transfer(tasks)
        hooks.install_digest(tasks)
        classes.install_set_classes(tasks)
        fuse.install_fuse(tasks)

        def engine_model(mod):
            internals.check_module(mod)
            if getattr(mod.yaml_model_load, "_dsmoe_hook", None) != "full":
                mod.yaml_model_load = tasks.yaml_model_load
            runs.install_resume_guard(mod)
            run_args.install_run_args(mod)
            classes.install_wrapper_set_classes(mod)

        def data_utils(mod):
            internals.check_module(mod)
            if getattr(mod.check_file, "_dsmoe_hook", None) != "full":
                mod.check_file = checks.check_file

        after_import("ultralytics.engine.model", engine_model)
        after_import("ultralytics.data.utils", data_utils)
        after_import("ultralytics.data.dataset", hooks.install_transforms)
        after_import("ultralytics.models.yolo.detect.train", hooks.install_trainer)
        after_import("ultralytics.engine.trainer", runs.install_trainer_saves)
        after_import("ultralytics.engine.exporter", _install_exporter)
        after_import("ultralytics.engine.trainer", union.install_dataset_check)
        after_import("ultralytics.engine.validator", union.install_dataset_check)
        after_import("ultralytics.models.yolo.detect.train", union.install_dataset_builder)
        after_import("ultralytics.models.yolo.detect.val", union.install_dataset_builder)
        after_import("ultralytics.models.yolo.detect.val", union.install_validator)
        _done = True
        # Registration often runs while dsmoe_yolo.nn itself is mid-import (its `import ultralytics.nn.modules` imports
        # ultralytics.nn.tasks, which triggers registration): expose the layers once it has finished.
        after_import("dsmoe_yolo.nn", lambda _: expose_layers())


def _install_exporter(module) -> None:
    from dsmoe_yolo.export import install_exporter
    from dsmoe_yolo.plugin import internals

    internals.check_module(module)
    install_exporter(module)


def expose_layers() -> None:
    """Put every DS-MoE layer class into ``ultralytics.nn.tasks`` and the weights-only allow-list (idempotent).

    Separate from ``register()`` because registration can run while ``dsmoe_yolo.nn`` itself is being imported
    (importing ``ultralytics.nn.modules`` imports ``ultralytics.nn.tasks``, which triggers registration); ``register``
    schedules it for when ``dsmoe_yolo.nn`` has finished, and the model builder and checkpoint loader call it too.
    """
    global _exposed
    if _exposed or not _done:
        return
    with _lock:
        if _exposed:
            return
        from ultralytics.nn import tasks

        from dsmoe_yolo.nn import LAYERS
        from dsmoe_yolo.plugin import hooks

        for name, cls in LAYERS.items():
            existing = getattr(tasks, name, None)
            if (
                existing is not None
                and existing is not cls
                and not getattr(existing, "__module__", "").startswith("dsmoe_yolo")
            ):
                raise RuntimeError(f"dsmoe_yolo: ultralytics.nn.tasks already defines '{name}'; refusing to shadow it")
            setattr(tasks, name, cls)
        hooks.allow_layer_classes()
        _exposed = True
