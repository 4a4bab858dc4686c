"""Checkpoint compatibility, checked before a DS-MoE checkpoint is unpickled.

Every DS-MoE layer records the plugin version that built it (``dsmoe_version``). Before Ultralytics loads a ``.pt``,
the plugin lists the DS-MoE classes the checkpoint references and the recorded version, both read from the pickle's
opcodes without running it:

- a DS-MoE class the installed plugin lacks -> one error naming the classes and the upgrade command;
- a checkpoint written by a newer plugin -> a warning (it may still load).

After unpickling (``check_loaded``), a DS-MoE model must hold only finite parameters and buffers, and its class text
must have been embedded for its class names; otherwise one error names the file and what is wrong (a damaged file
loads silently in stock Ultralytics). Bit flips that leave values finite are caught by the integrity digest: every
DS-MoE model pickled (each checkpoint a training writes, ``strip_optimizer``, ``YOLO.save``, a plain ``torch.save``)
carries the SHA-256 of its weights (``dsmoe_digest``, written by the plugin's ``DetectionModel.__getstate__`` hook),
recomputed at load; ``DSMOE_IGNORE_DIGEST=1`` loads a mismatching file anyway, with a warning.
"""

from __future__ import annotations

import importlib
import pickletools
import zipfile
from pathlib import Path

from dsmoe_yolo._version import __version__

__all__ = (
    "inspect_checkpoint",
    "check_compatible",
    "check_loaded",
    "check_digest",
    "weights_digest",
    "CheckpointError",
    "DIGEST_ATTR",
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded by the installed plugin; the message says why and how to fix it."""


def _version_tuple(v: str) -> tuple:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _scan_pickle(path: Path) -> tuple[set[str], list[str]]:
    """Read the checkpoint's pickle opcodes (never executing them): the DS-MoE globals it references and every
    ``dsmoe_version`` value it stores. Weights-only tools cannot list our classes: they skip allow-listed globals."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            data = z.read(name) if name else b""
    except (zipfile.BadZipFile, OSError):
        return set(), []
    if b"dsmoe_yolo" not in data:
        return set(), []
    classes, versions, strings = set(), [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):  # protocol <= 3: "module name"
                module, _, attr = arg.partition(" ")
                if module.startswith("dsmoe_yolo"):
                    classes.add(f"{module}.{attr}")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4+: module, name pushed before
                if strings[-2].startswith("dsmoe_yolo"):
                    classes.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                if strings and strings[-1] == "dsmoe_version":
                    versions.append(arg)
                strings.append(arg)
    except Exception:  # a truncated pickle: the loader reports it
        pass
    return classes, versions


def _resolvable(qualified: str) -> bool:
    module, _, name = qualified.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def inspect_checkpoint(path: str | Path) -> dict:
    """Return ``{"dsmoe_classes": [...], "dsmoe_version": str | None}`` for a ``.pt`` file (empty for non-zip files)."""
    classes, versions = _scan_pickle(Path(path))
    return {"dsmoe_classes": sorted(classes), "dsmoe_version": max(versions, key=_version_tuple) if versions else None}


def check_compatible(path: str | Path, log=None) -> dict:
    """Raise ``CheckpointError`` if the checkpoint needs DS-MoE classes the plugin lacks; warn if it is newer.

    Returns the inspection result.
    """
    info = inspect_checkpoint(path)
    if not info["dsmoe_classes"]:
        return info
    written = info["dsmoe_version"]
    missing = [c for c in info["dsmoe_classes"] if not _resolvable(c)]
    if missing:
        by = f"dsmoe_yolo {written}" if written else "another dsmoe_yolo version"
        raise CheckpointError(
            f"{Path(path).name} was saved by {by} and needs {', '.join(missing)}, which the installed dsmoe_yolo "
            f"{__version__} does not have. Upgrade: pip install -U 'dsmoe-yolo{'>=' + written if written else ''}'"
        )
    if written and _version_tuple(written) > _version_tuple(__version__):
        if log is None:
            from ultralytics.utils import LOGGER

            log = LOGGER.warning
        log(
            f"{Path(path).name} was saved by dsmoe_yolo {written}, newer than the installed {__version__}; it loads, but "
            f"layers may behave differently. Upgrade: pip install -U 'dsmoe-yolo>={written}'"
        )
    return info


DIGEST_ATTR = "dsmoe_digest"
IGNORE_DIGEST = "DSMOE_IGNORE_DIGEST"


def weights_digest(model) -> str:
    """SHA-256 of a model's state dict (names, shapes, values; floats as float16, the dtype checkpoints store)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu()
        t = t.to(torch.float16) if t.is_floating_point() else t
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_digest(model, name: str, key: str) -> None:
    """Compare a loaded DS-MoE model's weights with the digest written when it was saved (none: nothing to check).

    Raises:
        CheckpointError: On a mismatch, unless ``DSMOE_IGNORE_DIGEST=1`` (then one warning and the file loads).
    """
    import os

    stored = vars(model).get(DIGEST_ATTR)
    if not isinstance(stored, str) or weights_digest(model) == stored:
        return
    message = (
        f"{name}: the '{key}' weights do not match the integrity digest written when the file was saved: the file "
        f"is damaged (a disk or copy error). Use another checkpoint of the run (last.pt, best.pt, epoch*.pt), or set "
        f"{IGNORE_DIGEST}=1 to load it anyway"
    )
    if os.environ.get(IGNORE_DIGEST, "").strip().lower() in ("1", "true", "yes", "on"):
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"{message} ({IGNORE_DIGEST} is set: loading it)")
        return
    raise CheckpointError(message)


def check_loaded(ckpt, path: str | Path) -> None:
    """Raise ``CheckpointError`` if a loaded DS-MoE checkpoint holds NaN/Inf tensors or class text for other classes."""
    import torch

    from dsmoe_yolo.nn.base import YAMLLayer
    from dsmoe_yolo.text.binding import class_texts

    if not isinstance(ckpt, dict):
        return
    name = Path(str(path)).name
    for key in ("ema", "model"):
        model = ckpt.get(key)
        if not isinstance(model, torch.nn.Module) or not any(isinstance(m, YAMLLayer) for m in model.modules()):
            continue
        tensors = [*model.named_parameters(), *model.named_buffers()]
        bad = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise CheckpointError(
                f"{name} is damaged: '{key}' tensor {bad[0]}{more} holds NaN/Inf values; use another checkpoint "
                f"(last.pt, best.pt or an epoch*.pt of the run) or train again"
            )
        check_digest(model, name, key)
        names = getattr(model, "names", None)
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
        placeholder = names == [str(i) for i in range(len(names))]  # Ultralytics' names before any data was seen
        for text in class_texts(model):
            embedded = list(text.text_meta.get("names") or [])
            if names and embedded and (len(text.embeddings) != len(names) or (embedded != names and not placeholder)):
                raise CheckpointError(
                    f"{name}: the class text was embedded for {embedded} ({len(text.embeddings)} rows) but the model's "
                    f"classes are {names}; the file is damaged or was edited: use another checkpoint of the run"
                )
