"""Converters from five public defect datasets' raw formats to the Ultralytics YOLO layout.

- :func:`convert_pku_pcb`: PKU PCB (HRIPCB), Pascal VOC ``Annotations/<Class>/*.xml`` + ``images/<Class>/*.jpg``,
  ~3000x2000 px photos (optional tiling / resizing). Classes: missing_hole, mouse_bite, open_circuit, short, spur,
  spurious_copper.
- :func:`convert_aluminum`: Tianchi / Baidu aluminium sets, labelme JSON per image with Chinese or pinyin labels.
  Classes (the paper's 4): pinhole, scratch, contamination, crease.
- :func:`convert_deeppcb`: DeepPCB, ``PCBData/groupN/N/<id>_test.jpg`` with ``groupN/N_not/<id>.txt`` boxes
  (``x1 y1 x2 y2 type``) and the official lists ``trainval.txt`` / ``test.txt``. Classes: open, short, mousebite,
  spur, copper, pin-hole.
- :func:`convert_neu_det`: NEU-DET, ``IMAGES/*.jpg`` + ``ANNOTATIONS/*.xml`` (VOC), 200x200. Classes: crazing,
  inclusion, patches, pitted_surface, rolled-in_scale, scratches.
- :func:`convert_gc10_det`: GC10-DET, ``lable/*.xml`` (VOC, names like ``1_chongkong``), images in folders
  ``1``..``10`` or flat. Classes: punching_hole, welding_line, crescent_gap, water_spot, oil_spot, silk_spot,
  inclusion, rolled_pit, crease, waist_folding.

Class ids follow the order of these lists (the ``*_NAMES`` tuples).

Rules shared by every converter (each is a pure function of ``src``, ``dst`` and its arguments):

- Output: ``dst/images/{train,val}/`` and ``dst/labels/{train,val}/*.txt`` with ``class cx cy w h`` normalised to
  6 decimals. Those split folders (and stale ``labels/<split>.cache`` files) are emptied first, so a re-run gives the
  same tree. Images are copied byte-for-byte (``link=True``: hard-linked) unless tiling or resizing was asked.
- Boxes: corners are used as written (VOC's 1-based pixel convention is not shifted), put in order, clipped to the
  image (``clipped`` counts the kept boxes that needed it) and dropped when narrower or shorter than 1 px after
  clipping (``dropped``).
- Class names are matched case-, space-, ``_``- and ``-``-insensitively against the class names and the dataset's
  aliases. Unknown names raise :class:`~dsmoe_yolo.errors.ConfigError` naming them, a file and the fix, before anything
  is written; ``ignore_unknown=True`` skips those boxes with a counted warning instead, and an image left with no box
  by that is skipped (it shows a defect of another kind, so it is no clean background).
- An annotation whose image is missing or unreadable is skipped with a warning (``skipped``).
- An image without any annotation file is skipped by default (``unlabeled``): the raw sets store defect images, and an
  unannotated one is not a confirmed defect-free sample. ``background=True`` keeps such images as background images
  with an empty label file. An annotation file that exists but lists no object is always kept as a background image.
- Sets without an official split are split deterministically and stratified (:func:`split_stems`).
- Each converter logs one summary line through Ultralytics' ``LOGGER`` and returns the summary as a dict.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from ultralytics.utils import LOGGER

from dsmoe_yolo.errors import ConfigError

__all__ = (
    "PKU_PCB_NAMES",
    "ALUMINUM_NAMES",
    "ALUMINUM_ALIASES",
    "DEEPPCB_NAMES",
    "NEU_DET_NAMES",
    "GC10_DET_NAMES",
    "GC10_DET_ALIASES",
    "Annotation",
    "normalise_name",
    "class_lookup",
    "clip_box",
    "to_yolo",
    "write_yolo_label",
    "voc_boxes",
    "labelme_boxes",
    "deeppcb_boxes",
    "split_stems",
    "tile_origins",
    "tile_boxes",
    "find_root",
    "convert_pku_pcb",
    "convert_aluminum",
    "convert_deeppcb",
    "convert_neu_det",
    "convert_gc10_det",
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")

PKU_PCB_NAMES = ("missing_hole", "mouse_bite", "open_circuit", "short", "spur", "spurious_copper")
ALUMINUM_NAMES = ("pinhole", "scratch", "contamination", "crease")
DEEPPCB_NAMES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
NEU_DET_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
GC10_DET_NAMES = (
    "punching_hole",
    "welding_line",
    "crescent_gap",
    "water_spot",
    "oil_spot",
    "silk_spot",
    "inclusion",
    "rolled_pit",
    "crease",
    "waist_folding",
)

# Raw label -> class name. The paper's pinyin forms, the Tianchi pinyin spellings and the Chinese labels.
ALUMINUM_ALIASES = {
    "针孔": "pinhole",
    "zhen_kong": "pinhole",
    "擦花": "scratch",
    "擦伤": "scratch",
    "ca_hua": "scratch",
    "ca_shang": "scratch",
    "脏点": "contamination",
    "脏污": "contamination",
    "zang_dian": "contamination",
    "zang_wu": "contamination",
    "褶皱": "crease",
    "折皱": "crease",
    "zhe_zhou": "crease",
}
_GC10_PINYIN = ("chongkong", "hanfeng", "yueyawan", "shuiban", "youban", "siban", "yiwu", "yahen", "zhehen", "yaozhe")
_GC10_SHORT = ("pu", "wl", "cg", "ws", "os", "ss", "in", "rp", "cr", "wf")  # abbreviations used by some mirrors
# Raw GC10 names ("1_chongkong"), bare pinyin, bare folder numbers, two-letter abbreviations, and the misspelling
# "10_yaozhed" found in the distributed XML.
GC10_DET_ALIASES = {
    **{f"{i + 1}_{py}": GC10_DET_NAMES[i] for i, py in enumerate(_GC10_PINYIN)},
    **{py: GC10_DET_NAMES[i] for i, py in enumerate(_GC10_PINYIN)},
    **{str(i + 1): GC10_DET_NAMES[i] for i in range(len(GC10_DET_NAMES))},
    **{ab: GC10_DET_NAMES[i] for i, ab in enumerate(_GC10_SHORT)},
    "10_yaozhed": "waist_folding",
}
_DEEPPCB_TYPES = {str(i + 1): n for i, n in enumerate(DEEPPCB_NAMES)}  # type 1..6 in the txt files

Box = tuple[int, float, float, float, float]  # (class id, x1, y1, x2, y2): pixels of the annotation's frame


# ----------------------------------------------------------------------------------------------------------------------
# Raw annotations
# ----------------------------------------------------------------------------------------------------------------------
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
            raise ConfigError(f"'{path}' line {i}: expected 'x1 y1 x2 y2 type', got '{line.strip()}'; fix the line")
        objects.append(_ordered(kind, (x1, x2), (y1, y2)))
    return Annotation(path, objects)


# ----------------------------------------------------------------------------------------------------------------------
# Boxes, labels, splits, tiles
# ----------------------------------------------------------------------------------------------------------------------
def normalise_name(name: str) -> str:
    """Lower-case a raw class name and remove spaces, ``_`` and ``-`` (``Missing_hole`` -> ``missinghole``)."""
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def class_lookup(names: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, int]:
    """Map normalised raw class names to class ids.

    Args:
        names: The dataset's class names, in id order.
        aliases: Extra ``{raw name: class name}`` entries.

    Returns:
        ``{normalise_name(raw): class id}`` covering every class name and alias.

    Raises:
        ConfigError: If an alias points to a name that is not a class.
    """
    lookup = {normalise_name(n): i for i, n in enumerate(names)}
    for raw, target in (aliases or {}).items():
        if target not in names:
            raise ConfigError(f"alias '{raw}' -> '{target}': '{target}' is not a class; use one of {list(names)}")
        lookup[normalise_name(raw)] = names.index(target)
    return lookup


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


def split_stems(groups: Mapping[str, str], val: float = 0.2, seed: int = 0) -> dict[str, str]:
    """Deterministic stratified train/val split.

    Within each group, keys are sorted, shuffled with ``random.Random(f"{seed}:{group}")`` and the first
    ``round(n * val)`` (half rounded up) go to val. Seeding per group keeps a group's split unchanged when other
    groups change.

    Args:
        groups: ``{key (output stem): group (e.g. category)}``.
        val: Fraction of each group for val, in ``[0, 1)``.
        seed: Random seed.

    Returns:
        ``{key: "train" | "val"}``.

    Raises:
        ConfigError: If ``val`` is outside ``[0, 1)``.
    """
    if not 0 <= val < 1:
        raise ConfigError(f"val={val} must be a fraction in [0, 1), e.g. val=0.2")
    by_group = defaultdict(list)
    for key, group in groups.items():
        by_group[group].append(key)
    out = {}
    for group in sorted(by_group):
        keys = sorted(by_group[group])
        random.Random(f"{seed}:{group}").shuffle(keys)
        n_val = math.floor(len(keys) * val + 0.5)
        out.update({k: ("val" if i < n_val else "train") for i, k in enumerate(keys)})
    return out


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


# ----------------------------------------------------------------------------------------------------------------------
# Source discovery
# ----------------------------------------------------------------------------------------------------------------------
def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _source(src: str | Path, dataset: str) -> Path:
    """``src`` resolved, checked to be a folder."""
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
        level = [d for folder in level for d in _subdirs(folder)]
    raise FileNotFoundError(f"none of {list(markers)} found within {depth} folder levels of '{src}'")


def _find_dirs(src: Path, names: Iterable[str], depth: int = 4) -> list[Path]:
    """Folders named like one of ``names`` (case-insensitive) at or below ``src``, not searching inside a match."""
    wanted = {n.lower() for n in names}
    found, level = [], [src]
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            (found if folder.name.lower() in wanted else nxt).append(folder)
        level = [d for folder in nxt for d in _subdirs(folder)]
    return found


def _index_images(roots: Iterable[Path], out: _Output) -> tuple[dict[str, Path], list[Path]]:
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


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------------------
# Samples and bookkeeping
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _Sample:
    """One output image: its source, output stem, clean boxes in ``frame`` pixels, split group, optional template."""

    image: Path
    stem: str
    boxes: list[Box]
    frame: tuple[int, int]
    group: str = ""
    template: Path | None = None


@dataclass
class _Tally:
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


def _dominant(boxes: Sequence[Box], names: Sequence[str]) -> str:
    """The most frequent class name among ``boxes`` (ties: lowest id), or ``"background"``."""
    counts = Counter(b[0] for b in boxes)
    return names[min(counts, key=lambda c: (-counts[c], c))] if counts else "background"


def _sample(ann: Annotation, image: Path, stem: str, lookup: Mapping[str, int], tally: _Tally) -> _Sample | None:
    """Clean ``ann``'s boxes for ``image`` (class ids, clipping, degenerate drop); None if the image is unreadable."""
    size = _image_size(image)
    if size is None:
        tally.skipped.append(str(ann.file))
        return None
    frame = ann.size or size
    if frame != size:
        tally.rescaled.append(str(image))
    boxes, unknown = [], 0
    for label, *xyxy in ann.objects:
        cls = lookup.get(normalise_name(label))
        if cls is None:
            tally.unknown.setdefault(label, []).append(str(ann.file))
            unknown += 1
            continue
        (x1, y1, x2, y2), clipped = clip_box(xyxy, *frame)
        if x2 - x1 < 1 or y2 - y1 < 1:
            tally.dropped += 1
            continue
        tally.clipped += clipped
        boxes.append((cls, x1, y1, x2, y2))
    if unknown and not boxes:
        tally.ignored_images += 1
        return None
    return _Sample(image, stem, boxes, frame, _dominant(boxes, tally.names))


def _backgrounds(images: Iterable[Path], tally: _Tally) -> list[_Sample]:
    """Record images without annotation; return them as empty samples when ``tally.keep_unlabeled``."""
    out = []
    for image in images:
        tally.unlabeled.append(str(image))
        size = _image_size(image) if tally.keep_unlabeled else None
        if size is not None:
            out.append(_Sample(image, image.stem, [], size, "background"))
    return out


def _check_unknown(tally: _Tally, ignore_unknown: bool, fix: str) -> None:
    """Raise for unknown class names (default) or warn that their boxes were skipped (``ignore_unknown``)."""
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


def _split(samples: list[_Sample], val: float, seed: int) -> dict[str, list[_Sample]]:
    splits = split_stems({s.stem: s.group for s in samples}, val, seed)
    return {name: [s for s in samples if splits[s.stem] == name] for name in SPLITS}


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Output:
    """Where and how images are written: tiling (``tile`` px, ``overlap``, ``keep_empty``), ``max_size``, ``link``."""

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
        """Validate the options and refuse a ``dst`` whose emptied folders would contain ``src``."""
        if self.tile is not None and self.tile < 32:
            raise ConfigError(f"tile={self.tile} is too small; use a tile size of at least 32 px, e.g. tile=640")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap={self.overlap} must be a fraction in [0, 1), e.g. overlap=0.2")
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError(f"max_size={self.max_size} must be a positive number of pixels, e.g. max_size=1280")
        src, dst = src.resolve(), self.dst.resolve()
        if src == dst or any(src == m or m in src.parents for m in self.managed()):
            raise ConfigError(f"dst '{dst}' would overwrite the source '{src}'; write to another folder")


def _fresh(path: Path) -> Path:
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
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)  # Unicode-safe, keeps channels


def _imwrite(path: Path, img: np.ndarray) -> None:
    cv2.imencode(path.suffix.lower(), img)[1].tofile(str(path))


def _render(s: _Sample, folder: Path, out: _Output) -> list[tuple[str, list[tuple]]]:
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


def _check_unique(splits: Mapping[str, list[_Sample]], dataset: str) -> None:
    seen = {}
    for s in (s for samples in splits.values() for s in samples):
        if s.stem in seen:
            raise ConfigError(
                f"{dataset}: '{seen[s.stem]}' and '{s.image}' would both be written as '{s.stem}'; rename one, or "
                "convert their folders separately"
            )
        seen[s.stem] = s.image


def _write(splits: Mapping[str, list[_Sample]], out: _Output, tally: _Tally) -> dict:
    """Write all splits, log the summary line and return the summary dict."""
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
    _log(tally, out.dst)
    return tally.summary(out.dst)


def _warn_list(tally: _Tally, items: list, what: str) -> None:
    if items:
        LOGGER.warning(f"{tally.dataset}: {len(items)} {what}, e.g. {items[0]}")


def _log(tally: _Tally, dst: Path) -> None:
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


# ----------------------------------------------------------------------------------------------------------------------
# Converters
# ----------------------------------------------------------------------------------------------------------------------
_ALIAS_FIX = "pass aliases={'<raw name>': '<class>'} to map a name, or ignore_unknown=True to skip those boxes"


# ----------------------------------------------------------------------------------------------------------------------
# Converters
# ----------------------------------------------------------------------------------------------------------------------
_ALIAS_FIX = "pass aliases={'<raw name>': '<class>'} to map a name, or ignore_unknown=True to skip those boxes"


def _start(src: str | Path, out: _Output, dataset: str, names: Sequence[str], background: bool) -> tuple[Path, _Tally]:
    """Check the source and options; a fresh tally."""
    src = _source(src, dataset)
    out.check(src)
    return src, _Tally(dataset, names, keep_unlabeled=background)


def _voc_samples(
    src: Path, folders: tuple[Sequence[str], Sequence[str]], lookup: Mapping[str, int], tally: _Tally, out: _Output
) -> list[_Sample]:
    """Samples from VOC folders.

    Every folder named like ``folders[0]`` below ``src`` holds XML files; its images are in a sibling folder named
    like ``folders[1]``, else anywhere below its parent. An image in a sub-folder of that image root gets the
    sub-folder's name as split group (class folders), otherwise its most frequent class.
    """
    ann_dirs = _find_dirs(src, folders[0])
    if not ann_dirs:
        raise FileNotFoundError(f"{tally.dataset}: no annotation folder named {list(folders[0])} under '{src}'")
    wanted = {n.lower() for n in folders[1]}
    roots = [next((d for d in _subdirs(a.parent) if d.name.lower() in wanted), a.parent) for a in ann_dirs]
    roots = list(dict.fromkeys(roots))
    index, tally.duplicates = _index_images(roots, out)
    samples, used = [], set()
    for xml in sorted(p for a in ann_dirs for p in a.rglob("*.xml")):
        ann = voc_boxes(xml)
        image = index.get(xml.stem) or (index.get(Path(ann.image).stem) if ann.image else None)
        if image is None:
            tally.skipped.append(str(xml))
            continue
        used.add(image)
        sample = _sample(ann, image, image.stem, lookup, tally)
        samples += [sample] if sample is not None else []
    samples += _backgrounds([p for p in index.values() if p not in used], tally)
    for s in samples:
        s.group = s.group if s.image.parent in roots else s.image.parent.name
    return samples


def _convert_voc(
    src: str | Path,
    out: _Output,
    names: tuple[str, Sequence[str]],
    aliases: Mapping[str, str],
    folders: tuple[Sequence[str], Sequence[str]],
    group: Callable[[_Sample], str] | None,
    opts: Mapping,
) -> dict:
    """Shared body of the VOC converters: ``names`` is ``(dataset, class names)``; ``opts`` their keyword args."""
    src, tally = _start(src, out, *names, opts["background"])
    lookup = class_lookup(names[1], {**aliases, **(opts["aliases"] or {})})
    samples = _voc_samples(src, folders, lookup, tally, out)
    _check_unknown(tally, opts["ignore_unknown"], _ALIAS_FIX)
    if group is not None:
        for s in samples:
            s.group = group(s)
    return _write(_split(samples, opts["val"], opts["seed"]), out, tally)


def convert_pku_pcb(
    src: str | Path,
    dst: str | Path,
    *,
    val: float = 0.2,
    seed: int = 0,
    tile: int | None = None,
    overlap: float = 0.2,
    keep_empty: bool = False,
    max_size: int | None = None,
    background: bool = False,
    ignore_unknown: bool = False,
    aliases: Mapping[str, str] | None = None,
    link: bool = False,
) -> dict:
    """Convert the PKU PCB defect set (HRIPCB, Pascal VOC) to YOLO format.

    ``src`` (or a folder below it, e.g. ``PCB_DATASET``) holds ``Annotations/<Class_Folder>/*.xml`` and
    ``images/<Class_Folder>/*.jpg``. The split is stratified by class folder. The ~3000x2000 px images are copied
    unchanged by default; ``max_size`` downsizes them (longer side) and ``tile`` cuts them into overlapping tiles
    named ``<stem>_<x0>_<y0>``, boxes cut to each tile (kept where >= 25 % of a box's area is inside).

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each class folder for val.
        seed: Split seed.
        tile: Tile size in px (e.g. 640), or None for whole images.
        overlap: Fractional overlap of neighbouring tiles.
        keep_empty: Also write tiles without any box (as background tiles).
        max_size: Downsize images so their longer side is at most this (applied before tiling).
        background: Keep images without an annotation file as background images.
        ignore_unknown: Skip boxes with unknown class names (warning) instead of raising.
        aliases: Extra ``{raw name: class name}`` mappings.
        link: Hard-link instead of copying unchanged images.

    Returns:
        Summary: ``images`` written per split (tiles when tiling), ``boxes`` per class, ``background`` (images with an
        empty label), ``clipped``, ``dropped``, ``skipped`` (annotations without image), ``unlabeled`` (images
        without annotation), ``ignored`` (boxes skipped by ``ignore_unknown``), ``dataset`` and ``dst``.
    """
    out = _Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    opts = {"val": val, "seed": seed, "background": background, "ignore_unknown": ignore_unknown, "aliases": aliases}
    return _convert_voc(src, out, ("pku-pcb", PKU_PCB_NAMES), {}, (("Annotations",), ("images",)), None, opts)


def _neu_category(sample: _Sample) -> str:
    """NEU-DET split group: the file-name category (``crazing_12`` -> ``crazing``), else the dominant class."""
    m = re.fullmatch(r"(.+)_\d+", sample.stem)
    return m.group(1) if m else sample.group


def convert_neu_det(
    src: str | Path,
    dst: str | Path,
    *,
    val: float = 0.2,
    seed: int = 0,
    max_size: int | None = None,
    background: bool = False,
    ignore_unknown: bool = False,
    aliases: Mapping[str, str] | None = None,
    link: bool = False,
) -> dict:
    """Convert NEU-DET (hot-rolled steel, 200x200, Pascal VOC) to YOLO format.

    ``src`` (or a folder below it) holds ``ANNOTATIONS/*.xml`` and ``IMAGES/*.jpg``; the Kaggle layout
    (``train|validation/annotations`` + ``images/<class>/``) works too and is re-split. The split is stratified by
    file-name category (``crazing_12`` -> ``crazing``); a box's class is its XML ``<name>``. Boxes are normalised by
    the XML ``<size>``, so copies whose images were upscaled (416x416 images, 200x200 XML) still get correct labels;
    ``max_size=200`` also restores the images' native size.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each category for val.
        seed: Split seed.
        max_size: Downsize images so their longer side is at most this.
        background: Keep images without an annotation file as background images.
        ignore_unknown: Skip boxes with unknown class names (warning) instead of raising.
        aliases: Extra ``{raw name: class name}`` mappings.
        link: Hard-link instead of copying unchanged images.

    Returns:
        Summary dict as :func:`convert_pku_pcb`.
    """
    out = _Output(Path(dst), max_size=max_size, link=link)
    opts = {"val": val, "seed": seed, "background": background, "ignore_unknown": ignore_unknown, "aliases": aliases}
    folders = (("ANNOTATIONS",), ("IMAGES",))
    return _convert_voc(src, out, ("neu-det", NEU_DET_NAMES), {}, folders, _neu_category, opts)


def convert_gc10_det(
    src: str | Path,
    dst: str | Path,
    *,
    val: float = 0.2,
    seed: int = 0,
    tile: int | None = None,
    overlap: float = 0.2,
    keep_empty: bool = False,
    max_size: int | None = None,
    background: bool = False,
    ignore_unknown: bool = False,
    aliases: Mapping[str, str] | None = None,
    link: bool = False,
) -> dict:
    """Convert GC10-DET (steel strip, 10 classes, Pascal VOC) to YOLO format.

    ``src`` (or a folder below it) holds ``lable/*.xml`` (sic; ``label``, ``labels``, ``Annotations`` also work) and
    the images in class-number folders ``1``..``10`` beside it, or flat. XML names ``1_chongkong`` .. ``10_yaozhe``
    (and the misspelt ``10_yaozhed``), bare pinyin, folder numbers, two-letter abbreviations and the English names
    all map to the classes (:data:`GC10_DET_ALIASES`). An image file name found in two folders is used once
    (warning). The split is stratified by image folder, or by each image's most frequent class when the images are
    flat. Tiling and resizing work as in :func:`convert_pku_pcb`.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each group for val.
        seed: Split seed.
        tile: Tile size in px, or None for whole images.
        overlap: Fractional overlap of neighbouring tiles.
        keep_empty: Also write tiles without any box.
        max_size: Downsize images so their longer side is at most this.
        background: Keep images without an annotation file as background images.
        ignore_unknown: Skip boxes with unknown class names (warning) instead of raising.
        aliases: Extra ``{raw name: class name}`` mappings.
        link: Hard-link instead of copying unchanged images.

    Returns:
        Summary dict as :func:`convert_pku_pcb`.
    """
    out = _Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    opts = {"val": val, "seed": seed, "background": background, "ignore_unknown": ignore_unknown, "aliases": aliases}
    folders = (("lable", "label", "labels", "Annotations"), ("images",))
    return _convert_voc(src, out, ("gc10-det", GC10_DET_NAMES), GC10_DET_ALIASES, folders, None, opts)


def _labelme_image(ann: Annotation, index: Mapping[str, Path]) -> Path | None:
    """The image of a labelme file: its ``imagePath`` (relative to the JSON), a same-stem sibling, or by stem."""
    named = Path(ann.image.replace("\\", "/")) if ann.image else None
    candidates = [ann.file.parent / named] if named else []
    candidates += [ann.file.with_suffix(s) for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
    for p in candidates:
        if p.is_file():
            return Path(os.path.normpath(p))
    return index.get(ann.file.stem) or (index.get(named.stem) if named else None)


def convert_aluminum(
    src: str | Path,
    dst: str | Path,
    *,
    val: float = 0.2,
    seed: int = 0,
    tile: int | None = None,
    overlap: float = 0.2,
    keep_empty: bool = False,
    max_size: int | None = None,
    background: bool = False,
    ignore_unknown: bool = False,
    aliases: Mapping[str, str] | None = None,
    link: bool = False,
) -> dict:
    """Convert the Tianchi / Baidu aluminium surface-defect sets (labelme JSON) to the paper's 4 classes.

    Every ``*.json`` below ``src`` is read; its image is ``imagePath`` (relative to the JSON), else a same-stem image
    beside it, else a same-stem image anywhere below ``src``. Labels map by :data:`ALUMINUM_ALIASES` (针孔 pinhole,
    擦花/擦伤 scratch, 脏点/脏污 contamination, 褶皱/折皱 crease, and the pinyin ``zhen_kong``, ``ca_shang``/``ca_hua``,
    ``zang_wu``/``zang_dian``, ``zhe_zhou``). The raw sets' other defect kinds (不导电, 桔皮, 漏底, 碰伤, 起坑, 凸粉,
    涂层开裂, 喷流, 漆泡, 杂色, ...) raise unless ``ignore_unknown=True``. Images without a JSON (e.g. the
    defect-free samples) are kept only with ``background=True``. The split is stratified by each image's most
    frequent class. Tiling and resizing (the raw images are up to 2560x1920) work as in :func:`convert_pku_pcb`.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each group for val.
        seed: Split seed.
        tile: Tile size in px, or None for whole images.
        overlap: Fractional overlap of neighbouring tiles.
        keep_empty: Also write tiles without any box.
        max_size: Downsize images so their longer side is at most this.
        background: Keep images without a JSON as background images.
        ignore_unknown: Skip boxes of other defect kinds (warning) instead of raising.
        aliases: Extra ``{raw label: class name}`` mappings (e.g. ``{"碰伤": "scratch"}``).
        link: Hard-link instead of copying unchanged images.

    Returns:
        Summary dict as :func:`convert_pku_pcb`.
    """
    out = _Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    src, tally = _start(src, out, "aluminum", ALUMINUM_NAMES, background)
    lookup = class_lookup(ALUMINUM_NAMES, {**ALUMINUM_ALIASES, **(aliases or {})})
    index, tally.duplicates = _index_images([src], out)
    samples, used = [], set()
    for js in sorted(src.rglob("*.json")):
        ann = labelme_boxes(js)
        image = _labelme_image(ann, index)
        if image is None:
            tally.skipped.append(str(js))
            continue
        used.add(image)
        sample = _sample(ann, image, image.stem, lookup, tally)
        samples += [sample] if sample is not None else []
    _check_unknown(tally, ignore_unknown, _ALIAS_FIX)
    samples += _backgrounds([p for p in index.values() if p not in used], tally)
    return _write(_split(samples, val, seed), out, tally)


def convert_deeppcb(
    src: str | Path,
    dst: str | Path,
    *,
    templates: bool = False,
    background: bool = False,
    ignore_unknown: bool = False,
    link: bool = False,
) -> dict:
    """Convert DeepPCB to YOLO format with its official split: train = ``trainval.txt``, val = ``test.txt``.

    ``src`` is ``PCBData`` or any folder above it (e.g. the unpacked repository). Each list line
    ``groupN/N/<id>.jpg groupN/N_not/<id>.txt`` names the defective image ``groupN/N/<id>_test.jpg`` and its boxes
    (``x1 y1 x2 y2 type``, spaces or commas, type 1..6 -> class 0..5). Output files are named ``<id>``; images are
    copied unchanged.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        templates: Also copy each defect-free template ``<id>_temp.jpg`` to ``templates/<split>/<id>.jpg``.
        background: Keep listed images whose annotation file is missing as background images.
        ignore_unknown: Skip boxes with a type outside 1..6 (warning) instead of raising.
        link: Hard-link instead of copying.

    Returns:
        Summary dict as :func:`convert_pku_pcb`.
    """
    out = _Output(Path(dst), link=link, templates=templates)
    src, tally = _start(src, out, "deeppcb", DEEPPCB_NAMES, background)
    root = find_root(src, "trainval.txt")
    lookup = class_lookup(DEEPPCB_NAMES, _DEEPPCB_TYPES)
    splits = {}
    for split, listed in (("train", "trainval.txt"), ("val", "test.txt")):
        if not (root / listed).is_file():
            raise FileNotFoundError(f"deeppcb: split list '{root / listed}' not found; use an unmodified PCBData copy")
        splits[split] = _deeppcb_split(root, root / listed, lookup, tally)
    fix = "DeepPCB types are 1..6 (open .. pin-hole); correct those lines, or pass ignore_unknown=True to skip them"
    _check_unknown(tally, ignore_unknown, fix)
    return _write(splits, out, tally)


def _deeppcb_split(root: Path, listing: Path, lookup: Mapping[str, int], tally: _Tally) -> list[_Sample]:
    """Samples of one DeepPCB split list (lines ``groupN/N/<id>.jpg groupN/N_not/<id>.txt``)."""
    samples = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        listed, txt = root / fields[0], root / fields[1]
        image = listed.with_name(f"{listed.stem}_test{listed.suffix}")
        image = image if image.is_file() else listed
        if not image.is_file():
            tally.skipped.append(str(txt))
            continue
        if not txt.is_file():
            for s in _backgrounds([image], tally):
                samples.append(_Sample(image, listed.stem, [], s.frame))
            continue
        sample = _sample(deeppcb_boxes(txt), image, listed.stem, lookup, tally)
        if sample is not None:
            template = listed.with_name(f"{listed.stem}_temp{listed.suffix}")
            sample.template = template if template.is_file() else None
            samples.append(sample)
    return samples
