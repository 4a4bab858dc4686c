"""Finding things in a raw dataset folder: the folder itself, marker folders, and images indexed by file stem."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dsmoe_yolo.data.converters.output import Output

__all__ = ("IMAGE_SUFFIXES", "find_dirs", "find_root", "image_size", "index_images", "source_dir", "subdirs")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def subdirs(path: Path) -> list[Path]:
    """The sub-folders of ``path`` that are not hidden, sorted."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def source_dir(src: str | Path, dataset: str) -> Path:
    """``src`` resolved, checked to be a folder.

    Args:
        src: The raw dataset folder.
        dataset: The dataset name, for the error message.

    Returns:
        The resolved folder.

    Raises:
        FileNotFoundError: If ``src`` is not a folder.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"{dataset}: source folder '{src}' not found; pass the folder holding the raw files")
    return src


def find_root(src: str | Path, *markers: str, depth: int = 4) -> Path:
    """The first folder at or below ``src`` (breadth-first, sorted) that holds an entry named like a marker.

    Args:
        src: Where to start.
        *markers: File or folder names to look for (case-insensitive).
        depth: How many folder levels below ``src`` to search.

    Returns:
        That folder.

    Raises:
        FileNotFoundError: If no folder within ``depth`` levels holds a marker.
    """
    wanted = {m.lower() for m in markers}
    level = [Path(src)]
    for _ in range(depth + 1):
        for folder in level:
            if any(p.name.lower() in wanted for p in folder.iterdir()):
                return folder
        level = [d for folder in level for d in subdirs(folder)]
    raise FileNotFoundError(f"none of {list(markers)} found within {depth} folder levels of '{src}'")


def find_dirs(src: Path, names: Iterable[str], depth: int = 4) -> list[Path]:
    """Folders named like one of ``names`` (case-insensitive) at or below ``src``, not searching inside a match."""
    wanted = {n.lower() for n in names}
    found, level = [], [src]
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            (found if folder.name.lower() in wanted else nxt).append(folder)
        level = [d for folder in nxt for d in subdirs(folder)]
    return found


def index_images(roots: Iterable[Path], out: Output) -> tuple[dict[str, Path], list[Path]]:
    """``{stem: image}`` over all images below ``roots`` (sorted; the first of equal stems wins) and the losers.

    Images in the output's own folders (when ``dst`` lies inside the source) are left out.
    """
    index, duplicates = {}, []
    excluded = out.managed()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file() or any(e in p.parents for e in excluded):
                continue
            if p.stem in index:
                duplicates.append(p)
            else:
                index[p.stem] = p
    return index, duplicates


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None
