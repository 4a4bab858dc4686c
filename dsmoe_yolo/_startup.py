"""Interpreter-start hook that lets the stock ``yolo`` command see the DS-MoE plugin.

Standard library only: ``dsmoe_yolo_autoload.pth`` loads this file at every interpreter start (through the top-level
stub ``dsmoe_yolo_startup``, see ``_autoload_stub.py``), so it must stay cheap and must not import torch.

It installs a one-shot ``sys.meta_path`` finder that runs callbacks right after chosen modules finish importing. The
main callback registers the plugin right after ``ultralytics.nn.tasks`` is imported.

Switch: ``DSMOE_YOLO_AUTOLOAD=0`` (also ``false``/``no``/``off``) turns the start-up registration off. The hook then
only installs a *guard* that turns the stock ``KeyError: 'SparseMoE'`` / ``'dsmoe.yaml' does not exist`` failures into
one clear message naming the switch. ``import dsmoe_yolo`` always registers fully, whatever the switch says.
"""

from __future__ import annotations

import os
import sys

ENV_SWITCH = "DSMOE_YOLO_AUTOLOAD"
TASKS_MODULE = "ultralytics.nn.tasks"

# Layer names a DS-MoE model YAML may use (kept in sync with dsmoe_yolo.nn.LAYERS by a test).
LAYER_NAMES = (
    "MobileSAMBackbone",
    "ResNetBackbone",
    "Pick",
    "CBAM",
    "ClassText",
    "HyperbolicAlign",
    "SpaceBroadcast",
    "SparseMoE",
    "HeterogeneousEnsemble",
    "DifferentiableAggregation",
    "PlainTextFusion",
    "ZeroInitResidual",
    "PromptDetect",
)


def autoload_enabled() -> bool:
    """Return False when the ``DSMOE_YOLO_AUTOLOAD`` switch is set to 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def _importhook():
    """``dsmoe_yolo/importhook.py``: imported normally inside the package, else (start-up, the package not imported)
    loaded by path beside this file, so interpreter start never imports ``dsmoe_yolo`` itself."""
    if __package__ == "dsmoe_yolo":
        from dsmoe_yolo import importhook

        return importhook
    module = sys.modules.get("dsmoe_yolo_importhook_impl")
    if module is None:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "importhook.py")
        spec = importlib.util.spec_from_file_location("dsmoe_yolo_importhook_impl", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def after_import(name: str, fn) -> None:
    """See ``importhook.after_import``."""
    _importhook().after_import(name, fn)


def _register(_module=None):
    """Full registration, imported lazily (torch is already loaded once ``ultralytics.nn.tasks`` is)."""
    try:
        __import__("dsmoe_yolo.plugin", fromlist=["register"]).register()
    except Exception as e:  # never break `import ultralytics` for users of the stock models
        sys.stderr.write(
            f"WARNING dsmoe_yolo: plugin registration failed ({type(e).__name__}: {e}). DS-MoE models are "
            f"unavailable in this process; set {ENV_SWITCH}=0 to silence this, or reinstall a supported version.\n"
        )


def _resolve_bundled_names(checks):
    """Make bundled YAMLs (``paper.yaml``, ``dsmoe-synth.yaml``) resolvable as soon as Ultralytics' checks load: the CLI
    reads ``cfg=`` files before it imports any model code."""
    try:
        resolve = __import__("dsmoe_yolo.plugin.resolve", fromlist=["make_check_file"])
        if getattr(checks.check_file, "_dsmoe_hook", None) != "full":
            checks.check_file = resolve.make_check_file(checks.check_file)
    except Exception as e:  # never break `import ultralytics`
        sys.stderr.write(f"WARNING dsmoe_yolo: bundled-file lookup not installed ({type(e).__name__}: {e})\n")


def _configure(cfg):
    """Add the DS-MoE train args (``gamma_p``, ``text_encoder``...) as soon as ``ultralytics.cfg`` loads: the CLI
    validates arguments before it imports any model code."""
    try:
        __import__("dsmoe_yolo.plugin.config", fromlist=["install_config"]).install_config()
    except Exception as e:  # never break `import ultralytics`
        sys.stderr.write(f"WARNING dsmoe_yolo: train arguments not installed ({type(e).__name__}: {e})\n")


def _install_guard(tasks):
    """Off-switch mode: only translate the stock failures for DS-MoE names into a clear message."""
    if getattr(tasks.parse_model, "_dsmoe_hook", None):  # already guarded or fully registered
        return
    stock_parse = tasks.parse_model

    def parse_model(d, ch, verbose=True):
        try:
            return stock_parse(d, ch, verbose)
        except KeyError as e:
            name = e.args[0] if e.args else ""
            if name in LAYER_NAMES:
                raise RuntimeError(_off_message(f"the model YAML uses the DS-MoE layer '{name}'")) from None
            raise

    parse_model._dsmoe_hook = "guard"
    tasks.parse_model = parse_model

    stock_load = tasks.torch_safe_load

    def torch_safe_load(weight, *args, **kwargs):
        try:
            return stock_load(weight, *args, **kwargs)
        except Exception as e:
            if isinstance(e, ModuleNotFoundError) and str(e.name or "").startswith("dsmoe_yolo"):
                raise  # the plugin is missing, not switched off: Ultralytics' own message says so
            if _is_dsmoe_checkpoint(weight):
                raise RuntimeError(_off_message(f"'{weight}' is a DS-MoE checkpoint")) from None
            raise

    torch_safe_load._dsmoe_hook = "guard"
    tasks.torch_safe_load = torch_safe_load

    checks = sys.modules["ultralytics.utils.checks"]
    stock_check_file = checks.check_file

    def check_file(file, *args, **kwargs):
        try:
            return stock_check_file(file, *args, **kwargs)
        except FileNotFoundError:
            if os.path.basename(str(file)).lower().startswith("dsmoe"):
                raise FileNotFoundError(_off_message(f"'{file}' is a bundled DS-MoE file")) from None
            raise

    check_file._dsmoe_hook = "guard"
    checks.check_file = check_file


def _is_dsmoe_checkpoint(weight) -> bool:
    """True if the file ``weight`` pickles DS-MoE classes (looked for only after a load failed)."""
    path = str(weight)
    if not (path.endswith(".pt") and os.path.isfile(path)):
        return False
    with open(path, "rb") as f:
        return b"dsmoe_yolo" in f.read()


def _off_message(what: str) -> str:
    return (
        f"{what}, but the dsmoe_yolo plugin is switched off ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)}). "
        f"Unset {ENV_SWITCH} (or set it to 1), or run through Python after `import dsmoe_yolo`."
    )


def install(full: bool = True) -> None:
    """Register the plugin right after ``ultralytics.nn.tasks`` is imported (``full``), or only the off-switch guard."""
    if full:
        after_import("ultralytics.utils.checks", _resolve_bundled_names)
        after_import("ultralytics.cfg", _configure)
    after_import(TASKS_MODULE, _register if full else _install_guard)


def autoload() -> None:
    """Entry point of the ``.pth`` file: full registration unless the switch is off."""
    install(full=autoload_enabled())
