"""Installed as the top-level module ``dsmoe_yolo_startup``, which ``dsmoe_yolo_autoload.pth`` imports at every
interpreter start (see pyproject.toml's force-include).

It loads ``dsmoe_yolo/_startup.py`` by file path and runs its ``autoload()``, so the ``dsmoe_yolo`` package itself is
not imported at start-up (``import dsmoe_yolo`` always registers fully, while the start-up hook honours the
``DSMOE_YOLO_AUTOLOAD`` switch). Standard library only; a broken install prints one line instead of failing start-up.
"""

import importlib.util
import os
import sys


def _load_startup():
    spec = importlib.util.find_spec("dsmoe_yolo")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "_startup.py")
    startup_spec = importlib.util.spec_from_file_location("dsmoe_yolo_startup_impl", path)
    module = importlib.util.module_from_spec(startup_spec)
    sys.modules["dsmoe_yolo_startup_impl"] = module
    startup_spec.loader.exec_module(module)
    return module


try:
    _impl = _load_startup()
    if _impl is not None:
        _impl.autoload()
except Exception as e:  # never break interpreter start-up
    sys.stderr.write(f"WARNING dsmoe_yolo start-up hook skipped ({type(e).__name__}: {e})\n")
