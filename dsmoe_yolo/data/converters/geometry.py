"""Box geometry shared by the converters: clipping, YOLO normalisation and tiling.

Boxes are pixel corners ``(x1, y1, x2, y2)``; :data:`Box` adds the class id in front.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ("Box", "clip_box", "tile_boxes", "tile_origins", "to_yolo")

Box = tuple[int, float, float, float, float]  # (class id, x1, y1, x2, y2): pixels of the annotation's frame


def clip_box(box: Sequence[float], width: float, height: float) -> tuple[tuple[float, float, float, float], bool]:
    """Clip ``(x1, y1, x2, y2)`` to a ``width`` x ``height`` image.

    Returns:
        The clipped box, and whether clipping changed it.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    out = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    return out, out != (x1, y1, x2, y2)


def to_yolo(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    """Turn pixel corners ``(x1, y1, x2, y2)`` into normalised ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height


def tile_origins(length: int, tile: int, overlap: float = 0.2) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` px with at least ``overlap`` fractional overlap.

    The last tile is aligned with the end; a side shorter than ``tile`` gets one (smaller) tile at 0.
    """
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1 - overlap)))
    starts = list(range(0, length - tile + 1, stride))
    return starts if starts[-1] == length - tile else [*starts, length - tile]


def tile_boxes(boxes: Iterable[Box], x0: int, y0: int, width: int, height: int, min_visible: float = 0.25) -> list[Box]:
    """Boxes cut to the tile ``[x0, x0 + width) x [y0, y0 + height)``, in tile pixels.

    Args:
        boxes: ``(class id, x1, y1, x2, y2)`` in image pixels.
        x0: Tile left edge.
        y0: Tile top edge.
        width: Tile width.
        height: Tile height.
        min_visible: A box is kept in the tile when at least this fraction of its area is inside and its cut part is
            at least 1 px wide and high.

    Returns:
        The kept boxes, shifted to the tile.
    """
    out = []
    for c, x1, y1, x2, y2 in boxes:
        (a, b, d, e), _ = clip_box((x1 - x0, y1 - y0, x2 - x0, y2 - y0), width, height)
        if d - a >= 1 and e - b >= 1 and (d - a) * (e - b) >= min_visible * (x2 - x1) * (y2 - y1):
            out.append((c, a, b, d, e))
    return out
