"""Ultralytics configuration additions: the DS-MoE train args, the "no data= given" marker, one-line CLI errors.

Installed as soon as ``ultralytics.cfg`` is imported (from the start-up hook), because the ``yolo`` command checks
arguments and reads ``cfg=`` files before it imports any model code. Light: no torch import.
"""

from __future__ import annotations

import yaml

from dsmoe_yolo.importhook import after_import
from dsmoe_yolo.plugin import internals

__all__ = ("CONFIG_KEYS", "DEFAULT_DATA", "DefaultData", "install_config", "one_line_error")

DEFAULT_DATA = "dsmoe-synth.yaml"
# Train args added to Ultralytics' config (valid on the CLI and in cfg= files); inert at their defaults.
CONFIG_KEYS = {
    "gamma_p": (0.0, "fraction", "(float) probability of the DS-MoE gamma photometric transform (0 = off)"),
    "gamma": (1.5, "float", "(float) gamma transform exponent bound: gamma' ~ gamma**U(-1, 1)"),
    "gamma_gain": (1.0, "float", "(float) gamma transform gain alpha: out = alpha * in**gamma'"),
    "gamma_mode": (
        "augment",
        "str",
        "(str) gamma: 'augment' (random, train only) or 'preprocess' (paper: every image, gamma fixed)",
    ),
    "text_encoder": ("auto", "str", "(str) DS-MoE text encoder: auto, minilm, deepseek, a hub id or a local folder"),
    "prompts": (
        None,
        "any",  # a list or mapping from Python, a string on the CLI: no type table
        "(str) open-vocabulary DS-MoE classes: a prompt file (cfg/prompts shape) or comma-separated names",
    ),
}


class DefaultData(str):
    """The task's default dataset name, marked so the plugin can tell "no data= given" from an explicit choice."""


def _represent_default_data(dumper, data):
    return dumper.represent_str(str(data))


for _dumper in (
    getattr(yaml, "CSafeDumper", None),
    yaml.SafeDumper,
    yaml.Dumper,
):  # args.yaml: saved before our callbacks run
    if _dumper is not None:
        _dumper.add_representer(DefaultData, _represent_default_data)


def install_config() -> None:
    """Add the DS-MoE train args to Ultralytics' default config and its type tables."""

    def add(cfg):
        internals.check_module(cfg)
        for key, (default, kind, _) in CONFIG_KEYS.items():
            if key in cfg.DEFAULT_CFG_DICT and not hasattr(cfg, "_dsmoe_config"):
                raise RuntimeError(f"dsmoe_yolo: ultralytics now defines the train arg '{key}'; refusing to shadow it")
            cfg.DEFAULT_CFG_DICT[key] = default
            setattr(cfg.DEFAULT_CFG, key, default)
            table = {"fraction": "CFG_FRACTION_KEYS", "float": "CFG_FLOAT_KEYS", "str": "CFG_STR_KEYS"}.get(kind)
            if table:
                setattr(cfg, table, frozenset(getattr(cfg, table)) | {key})
        for task, name in list(cfg.TASK2DATA.items()):
            if not isinstance(name, DefaultData):
                cfg.TASK2DATA[task] = DefaultData(name)
        cfg._dsmoe_config = True
        install_cli_errors(cfg)

    after_import("ultralytics.cfg", add)


def one_line_error(exc: BaseException) -> BaseException | None:
    """The plugin's own error behind ``exc`` (itself or an explicit ``raise ... from`` cause), or None."""
    from dsmoe_yolo.checkpoint import CheckpointError
    from dsmoe_yolo.errors import ConfigError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (ConfigError, CheckpointError)):
            return exc
        exc, seen = exc.__cause__, seen + 1
    return None


def install_cli_errors(cfg) -> None:
    """``cfg.entrypoint`` (the ``yolo`` command): the plugin's ``ConfigError`` / ``CheckpointError`` print as one line
    and exit 1 instead of a traceback; every other exception keeps its traceback."""
    stock = cfg.entrypoint
    if getattr(stock, "_dsmoe_hook", None):
        return

    def entrypoint(*args, **kwargs):
        try:
            return stock(*args, **kwargs)
        except Exception as e:
            ours = one_line_error(e)
            if ours is None:
                raise
            raise SystemExit(f"{type(ours).__name__}: {' '.join(str(ours).split())}") from None

    entrypoint._dsmoe_hook, entrypoint.stock = "full", stock
    cfg.entrypoint = entrypoint
