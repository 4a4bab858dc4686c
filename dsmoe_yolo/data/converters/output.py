"""The output tree of a conversion: its split folders and how images are written into them (:class:`Output`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsmoe_yolo.errors import ConfigError

__all__ = ("SPLITS", "Output")

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Output:
    """Where and how images are written: tiling (``tile`` px, ``overlap``, ``keep_empty``), ``max_size``, ``link``.

    Attributes:
        dst: The output dataset root.
        tile: Tile size in px, or None for whole images.
        overlap: Fractional overlap of neighbouring tiles.
        keep_empty: Also write tiles without any box.
        max_size: Downsize images so their longer side is at most this.
        link: Hard-link instead of copying unchanged images.
        templates: Also write ``templates/<split>/`` (DeepPCB's defect-free templates).
    """

    dst: Path
    tile: int | None = None
    overlap: float = 0.2
    keep_empty: bool = False
    max_size: int | None = None
    link: bool = False
    templates: bool = False

    def managed(self) -> list[Path]:
        """The split folders this output empties and writes."""
        dst = self.dst.resolve()
        return [dst / kind / s for kind in ("images", "labels", "templates") for s in SPLITS]

    def check(self, src: Path) -> None:
        """Validate the options and refuse a ``dst`` whose emptied folders would contain ``src``.

        Args:
            src: The raw dataset folder.

        Raises:
            ConfigError: If an option is out of range or ``dst`` would overwrite ``src``.
        """
        if self.tile is not None and self.tile < 32:
            raise ConfigError(f"tile={self.tile} is too small; use a tile size of at least 32 px, e.g. tile=640")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap={self.overlap} must be a fraction in [0, 1), e.g. overlap=0.2")
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError(f"max_size={self.max_size} must be a positive number of pixels, e.g. max_size=1280")
        src, dst = src.resolve(), self.dst.resolve()
        if src == dst or any(src == m or m in src.parents for m in self.managed()):
            raise ConfigError(f"dst '{dst}' would overwrite the source '{src}'; write to another folder")
