"""Writing a conversion: emptying the split folders, then images (copied, linked, resized or tiled) and labels."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from ultralytics.utils import LOGGER

from dsmoe_yolo.data.converters.geometry import tile_boxes, tile_origins, to_yolo
from dsmoe_yolo.data.converters.output import SPLITS, Output
from dsmoe_yolo.data.converters.samples import Sample
from dsmoe_yolo.data.converters.tally import Tally, log_summary
from dsmoe_yolo.errors import ConfigError

__all__ = ("write_splits", "write_yolo_label")


def write_yolo_label(path: str | Path, rows: Iterable[Sequence[float]]) -> Path:
    """Write a YOLO label file, one ``class cx cy w h`` line per row (6 decimals; empty file for no rows).

    Args:
        path: The ``.txt`` file to write (parents are created).
        rows: ``(class id, cx, cy, w, h)`` with normalised coordinates.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _fresh(path: Path) -> Path:
    """Empty (or create) the folder ``path``."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _place(src: Path, dst: Path, link: bool) -> None:
    """Copy (or hard-link, falling back to a copy) ``src`` to ``dst``."""
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def _imread(path: Path) -> np.ndarray | None:
    """Decode an image file (None if it cannot be decoded)."""
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)  # Unicode-safe, keeps channels


def _imwrite(path: Path, img: np.ndarray) -> None:
    """Encode ``img`` in the format of ``path``'s suffix and write it."""
    cv2.imencode(path.suffix.lower(), img)[1].tofile(str(path))


def _render(s: Sample, folder: Path, out: Output) -> list[tuple[str, list[tuple]]]:
    """Write the sample's image(s) into ``folder``; return ``(stem, normalised rows)`` for each image written."""
    fw, fh = s.frame
    if not out.tile and not out.max_size:
        _place(s.image, folder / f"{s.stem}{s.image.suffix}", out.link)
        return [(s.stem, [(c, *to_yolo(b, fw, fh)) for c, *b in s.boxes])]
    img = _imread(s.image)
    if img is None:
        LOGGER.warning(f"cannot decode '{s.image}', skipped")
        return []
    h, w = img.shape[:2]
    r = min(1.0, out.max_size / max(h, w)) if out.max_size else 1.0
    if r < 1:
        w, h = max(1, round(w * r)), max(1, round(h * r))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    sx, sy = w / fw, h / fh
    boxes = [(c, x1 * sx, y1 * sy, x2 * sx, y2 * sy) for c, x1, y1, x2, y2 in s.boxes]
    if not out.tile:
        _imwrite(folder / f"{s.stem}{s.image.suffix}", img)
        return [(s.stem, [(c, *to_yolo(b, w, h)) for c, *b in boxes])]
    written = []
    for y0 in tile_origins(h, out.tile, out.overlap):
        for x0 in tile_origins(w, out.tile, out.overlap):
            crop = img[y0 : y0 + out.tile, x0 : x0 + out.tile]
            th, tw = crop.shape[:2]
            kept = tile_boxes(boxes, x0, y0, tw, th)
            if kept or out.keep_empty:
                stem = f"{s.stem}_{x0}_{y0}"
                _imwrite(folder / f"{stem}{s.image.suffix}", crop)
                written.append((stem, [(c, *to_yolo(b, tw, th)) for c, *b in kept]))
    return written


def _check_unique(splits: Mapping[str, list[Sample]], dataset: str) -> None:
    """Refuse two samples that would be written under the same output stem."""
    seen = {}
    for s in (s for samples in splits.values() for s in samples):
        if s.stem in seen:
            raise ConfigError(
                f"{dataset}: '{seen[s.stem]}' and '{s.image}' would both be written as '{s.stem}'; rename one, or "
                "convert their folders separately"
            )
        seen[s.stem] = s.image


def write_splits(splits: Mapping[str, list[Sample]], out: Output, tally: Tally) -> dict:
    """Write all splits, log the summary line and return the summary dict.

    Args:
        splits: ``{split: samples}``.
        out: Where and how to write.
        tally: The counts so far; the written images, boxes and backgrounds are added.

    Returns:
        The summary dict (:meth:`Tally.summary`).

    Raises:
        ConfigError: If two samples would be written under the same stem.
    """
    _check_unique(splits, tally.dataset)
    for split in SPLITS:
        img_dir, lbl_dir = _fresh(out.dst / "images" / split), _fresh(out.dst / "labels" / split)
        (out.dst / "labels" / f"{split}.cache").unlink(missing_ok=True)
        tpl_dir = _fresh(out.dst / "templates" / split) if out.templates else None
        for s in sorted(splits.get(split, []), key=lambda s: s.stem):
            for stem, rows in _render(s, img_dir, out):
                write_yolo_label(lbl_dir / f"{stem}.txt", rows)
                tally.images[split] += 1
                tally.background += not rows
                tally.boxes.update(tally.names[r[0]] for r in rows)
            if tpl_dir and s.template:
                _place(s.template, tpl_dir / f"{s.stem}{s.template.suffix}", out.link)
    log_summary(tally, out.dst)
    return tally.summary(out.dst)
