"""What a conversion counted (:class:`Tally`), its summary dict, and the warnings and summary line it logs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ultralytics.utils import LOGGER

from dsmoe_yolo.data.converters.output import SPLITS
from dsmoe_yolo.errors import ConfigError

__all__ = ("Tally", "check_unknown", "log_summary")


@dataclass
class Tally:
    """Counts for the summary; lists keep example files for the warnings."""

    dataset: str
    names: Sequence[str]
    images: Counter = field(default_factory=Counter)
    boxes: Counter = field(default_factory=Counter)
    background: int = 0
    clipped: int = 0
    dropped: int = 0
    skipped: list = field(default_factory=list)  # annotations whose image is missing / unreadable
    unlabeled: list = field(default_factory=list)  # images without an annotation file
    duplicates: list = field(default_factory=list)  # images ignored because another one has the same name
    rescaled: list = field(default_factory=list)  # images whose size differs from the annotation's
    unknown: dict = field(default_factory=dict)  # raw label -> [annotation files]
    ignored_images: int = 0  # images left without boxes by ignore_unknown
    keep_unlabeled: bool = False  # background=True

    def summary(self, dst: Path) -> dict:
        """The summary dict a converter returns (see the ``dsmoe_yolo.data.converters`` docstring)."""
        return {
            "dataset": self.dataset,
            "dst": str(dst),
            "images": {s: self.images[s] for s in SPLITS},
            "boxes": {n: self.boxes[n] for n in self.names},
            "background": self.background,
            "clipped": self.clipped,
            "dropped": self.dropped,
            "skipped": len(self.skipped),
            "unlabeled": len(self.unlabeled),
            "ignored": sum(len(v) for v in self.unknown.values()),
        }


def check_unknown(tally: Tally, ignore_unknown: bool, fix: str) -> None:
    """Raise for unknown class names (default) or warn that their boxes were skipped (``ignore_unknown``).

    Args:
        tally: The tally holding the unknown names found.
        ignore_unknown: Warn instead of raising.
        fix: How to fix the error, for its message.

    Raises:
        ConfigError: If unknown names were found and ``ignore_unknown`` is False.
    """
    if not tally.unknown:
        return
    found = {name: len(files) for name, files in sorted(tally.unknown.items())}
    if ignore_unknown:
        LOGGER.warning(
            f"{tally.dataset}: ignore_unknown=True: skipped {sum(found.values())} box(es) of classes outside "
            f"{list(tally.names)}: {found}; {tally.ignored_images} image(s) left without a box were skipped"
        )
        return
    examples = "; ".join(f"'{name}' in {files[0]}" for name, files in sorted(tally.unknown.items())[:5])
    raise ConfigError(
        f"{tally.dataset}: unknown class name(s) {list(found)} (box counts {found}), e.g. {examples}. Known classes: "
        f"{list(tally.names)}. Fix: {fix}"
    )


def _warn_list(tally: Tally, items: list, what: str) -> None:
    """Warn ``"<dataset>: <count> <what>, e.g. <first item>"`` when ``items`` is not empty."""
    if items:
        LOGGER.warning(f"{tally.dataset}: {len(items)} {what}, e.g. {items[0]}")


def log_summary(tally: Tally, dst: Path) -> None:
    """Warnings for skipped / unlabeled / duplicate / rescaled items, then the one-line summary."""
    _warn_list(tally, tally.skipped, "annotation(s) whose image is missing or unreadable were skipped")
    _warn_list(tally, tally.duplicates, "image(s) share a file name with an earlier one and were ignored")
    _warn_list(tally, tally.rescaled, "image(s) differ in size from their annotation; boxes were scaled to them")
    fate = "kept as background images" if tally.keep_unlabeled else "skipped (background=True keeps them)"
    _warn_list(tally, tally.unlabeled, f"image(s) without an annotation file were {fate}")
    s = tally.summary(dst)
    per_class = ", ".join(f"{n} {c}" for n, c in s["boxes"].items())
    LOGGER.info(
        f"{tally.dataset}: {s['images']['train']} train / {s['images']['val']} val images, "
        f"{sum(s['boxes'].values())} boxes ({per_class}), {s['background']} background, clipped {s['clipped']}, "
        f"dropped {s['dropped']}, skipped {s['skipped']}, unlabeled {s['unlabeled']}, ignored {s['ignored']} -> {dst}"
    )
