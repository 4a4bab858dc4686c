"""Training-run checkpoints: stock models' checkpoints stay stock, finished DS-MoE runs are not "resumed".

- The plugin adds train args (``gamma_p``, ``gamma``, ``gamma_gain``, ``text_encoder``) to Ultralytics' config, so every
  trainer's args hold them and Ultralytics writes them into ``train_args`` of every checkpoint. Stock Ultralytics
  (plugin off or absent) refuses to resume such a file (``SyntaxError`` naming the unknown keys). For models without
  DS-MoE layers they are left out of ``train_args`` (and the model's ``args``); values other than the defaults ride
  along as the model attribute ``dsmoe_train_args``, which stock code ignores and the plugin's loader merges back.
- ``yolo train resume model=<finished last.pt>`` makes Ultralytics 8.4 start a new training on the task's default
  data; for a DS-MoE model that default is the synthetic set, so it silently trained 100 epochs on it. A DS-MoE
  checkpoint that cannot be resumed now stops with one line saying the training is finished.
"""

from __future__ import annotations

import contextlib

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.plugin import internals
from dsmoe_yolo.plugin.config import CONFIG_KEYS

__all__ = ("install_trainer_saves", "install_resume_guard", "restore_train_args")

STASH = "dsmoe_train_args"


def _is_stock(model) -> bool:
    from dsmoe_yolo.model_kind import is_dsmoe_source

    model = getattr(model, "module", model)  # DDP
    return model is not None and not is_dsmoe_source(model)


@contextlib.contextmanager
def _plugin_args_removed(trainer):
    """While stock ``save_model`` runs: the trainer's and the EMA model's args without the plugin keys."""
    ema = getattr(getattr(trainer, "ema", None), "ema", None)
    spaces = [
        ns if isinstance(ns, dict) else vars(ns)
        for ns in (trainer.args, getattr(ema, "args", None))
        if isinstance(ns, dict) or hasattr(ns, "__dict__")
    ]
    removed = [{k: ns.pop(k) for k in CONFIG_KEYS if k in ns} for ns in spaces]
    changed = {k: v for k, v in (removed[0] if removed else {}).items() if v != CONFIG_KEYS[k][0]}
    if ema is not None and changed:
        setattr(ema, STASH, changed)
    try:
        yield
    finally:
        for ns, keys in zip(spaces, removed):
            ns.update(keys)
        if ema is not None and changed:
            delattr(ema, STASH)


def install_trainer_saves(module) -> None:
    """``BaseTrainer.save_model`` and the trainer's ``strip_optimizer``: no plugin train args in stock checkpoints."""
    internals.check_module(module)
    cls = module.BaseTrainer
    stock_save = cls.save_model
    if not getattr(stock_save, "_dsmoe_hook", None):

        def save_model(self):
            if not _is_stock(self.model):
                return stock_save(self)
            with _plugin_args_removed(self):
                return stock_save(self)

        save_model._dsmoe_hook, save_model.stock = "full", stock_save
        cls.save_model = save_model

    stock_strip = module.strip_optimizer
    if not getattr(stock_strip, "_dsmoe_hook", None):

        def strip_optimizer(f="best.pt", s="", updates=None):
            """Stock ``strip_optimizer`` re-adds every default arg (ours included): drop ours again for stock models."""
            ckpt = stock_strip(f, s, updates)
            args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
            if isinstance(args, dict) and CONFIG_KEYS.keys() & args.keys() and _is_stock(ckpt.get("model")):
                import torch

                for d in (args, getattr(ckpt["model"], "args", None)):
                    if isinstance(d, dict):
                        for k in CONFIG_KEYS:
                            d.pop(k, None)
                torch.save(ckpt, s or f)
            return ckpt

        strip_optimizer._dsmoe_hook, strip_optimizer.stock = "full", stock_strip
        module.strip_optimizer = strip_optimizer


def restore_train_args(ckpt) -> None:
    """Merge a stock model's non-default plugin train args (``dsmoe_train_args``) back into ``train_args`` on load."""
    if not isinstance(ckpt, dict):
        return
    extra = getattr(ckpt.get("ema") or ckpt.get("model"), STASH, None)
    if isinstance(extra, dict) and isinstance(ckpt.get("train_args"), dict):
        ckpt["train_args"] = {**ckpt["train_args"], **{k: v for k, v in extra.items() if k in CONFIG_KEYS}}


def install_resume_guard(module) -> None:
    """``Model.train``: ``resume`` on a finished DS-MoE checkpoint stops with one line instead of training anew."""
    cls = module.Model
    stock = cls.train
    if getattr(stock, "_dsmoe_hook", None):
        return

    def train(self, trainer=None, **kwargs):
        ckpt = getattr(self, "ckpt", None)
        if (
            kwargs.get("resume") is True
            and isinstance(ckpt, dict)
            and ckpt
            and not _is_stock(getattr(self, "model", None))
        ):
            if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
                args = ckpt.get("train_args") or {}
                raise ConfigError(
                    f"{self.ckpt_path} training to {args.get('epochs', '?')} epochs is finished, nothing to resume. Start a "
                    f"new training without resuming, i.e. 'yolo train model={self.ckpt_path} data={args.get('data', '...')}'"
                )
        return stock(self, trainer, **kwargs)

    train._dsmoe_hook, train.stock = "full", stock
    cls.train = train
