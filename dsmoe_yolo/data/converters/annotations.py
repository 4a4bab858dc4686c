"""Readers of the raw annotation formats (Pascal VOC XML, labelme JSON, DeepPCB txt) into one :class:`Annotation`.

Readers keep labels as written and coordinates in pixels (corners put in order); mapping labels to classes, clipping
and dropping are left to the converters.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsmoe_yolo.errors import ConfigError

__all__ = ("Annotation", "deeppcb_boxes", "labelme_boxes", "voc_boxes")


@dataclass
class Annotation:
    """One raw annotation file, format-independent.

    Attributes:
        file: The annotation file.
        objects: ``(raw label, x1, y1, x2, y2)`` in pixels, corners in order.
        size: ``(width, height)`` the file states, or None when it states none (or zeros).
        image: The image file name or relative path the file states, or None.
    """

    file: Path
    objects: list[tuple[str, float, float, float, float]]
    size: tuple[int, int] | None = None
    image: str | None = None


def _ordered(label: str, xs: Sequence[float], ys: Sequence[float]) -> tuple[str, float, float, float, float]:
    """``(label, x1, y1, x2, y2)`` spanning the given coordinates (an empty list gives a degenerate box)."""
    if not len(xs) or not len(ys):
        return label, 0.0, 0.0, 0.0, 0.0
    return label, float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def voc_boxes(path: str | Path) -> Annotation:
    """Read a Pascal VOC XML file.

    Args:
        path: The ``.xml`` file.

    Returns:
        The file's objects (``<name>`` and ``<bndbox>`` corners), ``<size>`` and ``<filename>``.

    Raises:
        ConfigError: If the file is not valid XML or an object lacks a readable ``<bndbox>``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ConfigError(f"'{path}' is not valid Pascal VOC XML ({e}); fix or delete the file") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            x1, y1, x2, y2 = (float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ConfigError(f"'{path}': object '{name}' has no readable <bndbox>; fix or delete it") from None
        objects.append(_ordered(name, (x1, x2), (y1, y2)))
    size = None
    try:
        w, h = (int(float(root.find("size").findtext(k))) for k in ("width", "height"))
        size = (w, h) if w > 0 and h > 0 else None
    except (AttributeError, TypeError, ValueError):
        pass
    return Annotation(path, objects, size, (root.findtext("filename") or "").strip() or None)


def _labelme_shape(shape: Mapping) -> tuple[str, float, float, float, float]:
    """Bounding box of one labelme shape (rectangle, polygon, circle = centre + rim point, or any point list)."""
    label = str(shape.get("label", "")).strip()
    pts = np.asarray(shape.get("points") or [], dtype=float).reshape(-1, 2)
    if shape.get("shape_type") == "circle" and len(pts) >= 2:
        r = float(np.hypot(*(pts[1] - pts[0])))
        return label, pts[0, 0] - r, pts[0, 1] - r, pts[0, 0] + r, pts[0, 1] + r
    return _ordered(label, pts[:, 0], pts[:, 1])


def labelme_boxes(path: str | Path) -> Annotation:
    """Read a labelme JSON file (UTF-8, UTF-8 with BOM, or GBK as some Chinese tools write).

    Args:
        path: The ``.json`` file.

    Returns:
        The bounding box of each shape, ``imageWidth``/``imageHeight`` and ``imagePath``.

    Raises:
        ConfigError: If the file is not a labelme annotation (no ``shapes`` list).
    """
    path = Path(path)
    raw = path.read_bytes()
    doc = None
    for encoding in ("utf-8-sig", "gbk"):
        try:
            doc = json.loads(raw.decode(encoding))
            break
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise ConfigError(
            f"'{path}' is not a labelme annotation (no 'shapes' list); move non-labelme JSON files out of the source "
            "folder"
        )
    w, h = doc.get("imageWidth") or 0, doc.get("imageHeight") or 0
    size = (int(w), int(h)) if w and h else None
    image = str(doc.get("imagePath") or "").strip() or None
    return Annotation(path, [_labelme_shape(s) for s in doc["shapes"]], size, image)


def deeppcb_boxes(path: str | Path) -> Annotation:
    """Read a DeepPCB annotation file: one ``x1 y1 x2 y2 type`` line per box (spaces and/or commas).

    Args:
        path: The ``.txt`` file.

    Returns:
        The boxes, each labelled with its type as text (``"1"`` .. ``"6"``); no size (DeepPCB states none).

    Raises:
        ConfigError: If a line does not hold five numbers.
    """
    path = Path(path)
    objects = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if not fields:
            continue
        try:
            x1, y1, x2, y2 = (float(f) for f in fields[:4])
            kind = str(int(float(fields[4])))
        except (ValueError, IndexError):
            raise ConfigError(
                f"'{path}' line {i}: expected 'x1 y1 x2 y2 type', got '{line.strip()}'; fix the line"
            ) from None
        objects.append(_ordered(kind, (x1, x2), (y1, y2)))
    return Annotation(path, objects)
