"""Run code right after a given module finishes importing: the one mechanism the plugin uses to hook Ultralytics.

Standard library only, and imports nothing of dsmoe_yolo: the start-up hook (``_startup.py``, loaded at every
interpreter start) and the plugin (``plugin/``) both use it, so it sits below both.

A one-shot ``sys.meta_path`` finder wraps the loader of each watched module so its callbacks run as soon as the module
has executed. A module that is already half-imported when a callback is added cannot be wrapped any more; its
callbacks wait in ``deferred`` and run at the next import statement after it has finished.
"""

from __future__ import annotations

import sys

__all__ = ("after_import",)


class _AfterImportFinder:
    """Meta-path finder that wraps the loader of watched modules so callbacks run after the module executes.

    This file may be loaded twice (by path from the start-up hook, and as ``dsmoe_yolo.importhook``), so the callback
    tables live on the one installed finder, found through its ``marker``, never in a module global.
    """

    marker = "dsmoe_yolo_after_import_finder"

    def __init__(self):
        self.callbacks: dict[str, list] = {}  # module name -> callables run right after it is imported
        self.executed: set[str] = set()  # watched modules whose code has run (still "initialising" during callbacks)
        self.deferred: dict[str, list] = {}  # half-imported modules (not wrappable) -> callables, run once finished

    def run_deferred(self) -> None:
        """Run the callbacks of deferred modules that have finished importing."""
        for name in list(self.deferred):
            module = sys.modules.get(name)
            if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
                for fn in self.deferred.pop(name, []):
                    fn(module)

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        if self.deferred:
            self.run_deferred()
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

    A function already waiting for ``name`` under the same qualified name is not added twice (the callers may run as two
    modules, whose functions are distinct objects doing the same thing).
    """
    finder = _finder()
    module = sys.modules.get(name)
    initialising = getattr(getattr(module, "__spec__", None), "_initializing", False)
    if module is not None and (not initialising or name in getattr(finder, "executed", ())):
        fn(module)
        return
    table = finder.deferred if module is not None else finder.callbacks  # half-imported: its loader is already running
    waiting = table.setdefault(name, [])
    if not any(getattr(f, "__qualname__", None) == getattr(fn, "__qualname__", "") for f in waiting):
        waiting.append(fn)
