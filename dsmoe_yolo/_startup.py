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
)


def autoload_enabled() -> bool:
    """Return False when the ``DSMOE_YOLO_AUTOLOAD`` switch is set to 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


class _AfterImportFinder:
    """Meta-path finder that wraps the loader of watched modules so callbacks run after the module executes.

    This file may be loaded twice (as ``dsmoe_yolo_startup_impl`` by the start-up stub and as ``dsmoe_yolo._startup``), so the
    callback table lives on the one installed finder, found through its ``marker``, never in a module global.
    """

    marker = "dsmoe_yolo_after_import_finder"

    def __init__(self):
        self.callbacks: dict[str, list] = {}  # module name -> callables run right after it is imported
        self.executed: set[str] = set()  # watched modules whose code has run (still "initialising" during callbacks)

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        if fullname not in self.callbacks:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "marker", None) == self.marker or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _CallbackLoader(spec.loader, fullname, self)
                return spec
        return None


class _CallbackLoader:
    """Loader wrapper: delegate to the real loader, then run the callbacks watching this module."""

    def __init__(self, loader, name, finder):
        self.loader, self.name, self.finder = loader, name, finder

    def create_module(self, spec):  # noqa: D102
        return self.loader.create_module(spec)

    def exec_module(self, module):  # noqa: D102
        self.loader.exec_module(module)
        self.finder.executed.add(self.name)
        for fn in self.finder.callbacks.pop(self.name, []):  # callbacks may add callbacks for this module: they run now
            fn(module)

    def __getattr__(self, item):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self.loader, item)


def _finder() -> _AfterImportFinder:
    """Return the installed after-import finder, installing one first if there is none."""
    for f in sys.meta_path:
        if getattr(f, "marker", None) == _AfterImportFinder.marker:
            return f
    finder = _AfterImportFinder()
    sys.meta_path.insert(0, finder)
    return finder


def after_import(name: str, fn) -> None:
    """Run ``fn(module)`` once module ``name`` is imported: now if it already is, else right after its import.

    A function already waiting for ``name`` under the same qualified name is not added twice (this file may run as two
    modules, whose functions are distinct objects doing the same thing).
    """
    finder = _finder()
    module = sys.modules.get(name)
    initialising = getattr(getattr(module, "__spec__", None), "_initializing", False)
    if module is not None and (not initialising or name in getattr(finder, "executed", ())):
        fn(module)
        return
    waiting = finder.callbacks.setdefault(name, [])
    if not any(getattr(f, "__qualname__", None) == getattr(fn, "__qualname__", "") for f in waiting):
        waiting.append(fn)


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
