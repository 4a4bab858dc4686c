"""The five dataset converters (:func:`convert_pku_pcb`, :func:`convert_neu_det`, :func:`convert_gc10_det`,
:func:`convert_aluminum`, :func:`convert_deeppcb`) and the steps they share.

Their shared keyword arguments, rules and summary dict are described once, in the :mod:`dsmoe_yolo.data.converters`
package docstring; each converter's docstring adds what is particular to its dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dsmoe_yolo.data.converters.annotations import Annotation, deeppcb_boxes, labelme_boxes, voc_boxes
from dsmoe_yolo.data.converters.classes import (
    ALUMINUM_ALIASES,
    ALUMINUM_NAMES,
    DEEPPCB_NAMES,
    DEEPPCB_TYPES,
    GC10_DET_ALIASES,
    GC10_DET_NAMES,
    NEU_DET_NAMES,
    PKU_PCB_NAMES,
    class_lookup,
)
from dsmoe_yolo.data.converters.output import Output
from dsmoe_yolo.data.converters.samples import Sample, annotated, backgrounds, make_sample, split_samples
from dsmoe_yolo.data.converters.sources import IMAGE_SUFFIXES, find_dirs, find_root, index_images, source_dir, subdirs
from dsmoe_yolo.data.converters.tally import Tally, check_unknown
from dsmoe_yolo.data.converters.writer import write_splits

__all__ = ("convert_aluminum", "convert_deeppcb", "convert_gc10_det", "convert_neu_det", "convert_pku_pcb")

_ALIAS_FIX = "pass aliases={'<raw name>': '<class>'} to map a name, or ignore_unknown=True to skip those boxes"


# ----------------------------------------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """A converter's split and class-name keyword arguments (the image ones go to :class:`Output`)."""

    val: float = 0.2
    seed: int = 0
    background: bool = False
    ignore_unknown: bool = False
    aliases: Mapping[str, str] | None = None


@dataclass(frozen=True)
class _Dataset:
    """What a converter knows of its dataset.

    Attributes:
        name: Dataset name, for messages and the summary.
        names: Class names in id order.
        aliases: Built-in ``{raw name: class name}`` entries (the user's ``aliases`` are added to them).
        annotations: VOC sets: names of the annotation folders.
        images: VOC sets: names of the image folders beside them.
        group: VOC sets: the split group of a sample, or None to keep its folder / dominant class.
    """

    name: str
    names: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    annotations: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    group: Callable[[Sample], str] | None = None


def _start(src: str | Path, out: Output, dataset: _Dataset, opts: _Options) -> tuple[Path, Tally, dict[str, int]]:
    """Check the source and options; a fresh tally and the class lookup (built-in plus user aliases)."""
    src = source_dir(src, dataset.name)
    out.check(src)
    tally = Tally(dataset.name, dataset.names, keep_unlabeled=opts.background)
    return src, tally, class_lookup(dataset.names, {**dataset.aliases, **(opts.aliases or {})})


def _voc_image(ann: Annotation, index: Mapping[str, Path]) -> Path | None:
    """The image of a VOC file: by the XML file's stem, else by its ``<filename>``'s stem."""
    return index.get(ann.file.stem) or (index.get(Path(ann.image).stem) if ann.image else None)


def _voc_samples(src: Path, dataset: _Dataset, lookup: Mapping[str, int], tally: Tally, out: Output) -> list[Sample]:
    """Samples from VOC folders.

    Every folder named like ``dataset.annotations`` below ``src`` holds XML files; its images are in a sibling folder
    named like ``dataset.images``, else anywhere below its parent. An image in a sub-folder of that image root gets
    the sub-folder's name as split group (class folders), otherwise its most frequent class.
    """
    ann_dirs = find_dirs(src, dataset.annotations)
    if not ann_dirs:
        raise FileNotFoundError(
            f"{tally.dataset}: no annotation folder named {list(dataset.annotations)} under '{src}'"
        )
    wanted = {n.lower() for n in dataset.images}
    roots = [next((d for d in subdirs(a.parent) if d.name.lower() in wanted), a.parent) for a in ann_dirs]
    roots = list(dict.fromkeys(roots))
    index, tally.duplicates = index_images(roots, out)
    xmls = sorted(p for a in ann_dirs for p in a.rglob("*.xml"))
    samples, used = annotated(xmls, voc_boxes, _voc_image, index, lookup, tally)
    samples += backgrounds([p for p in index.values() if p not in used], tally)
    for s in samples:
        s.group = s.group if s.image.parent in roots else s.image.parent.name
    return samples


def _convert_voc(src: str | Path, out: Output, dataset: _Dataset, opts: _Options) -> dict:
    """Shared body of the VOC converters (PKU-PCB, NEU-DET, GC10-DET)."""
    src, tally, lookup = _start(src, out, dataset, opts)
    samples = _voc_samples(src, dataset, lookup, tally, out)
    check_unknown(tally, opts.ignore_unknown, _ALIAS_FIX)
    if dataset.group is not None:
        for s in samples:
            s.group = dataset.group(s)
    return write_splits(split_samples(samples, opts.val, opts.seed), out, tally)


# ----------------------------------------------------------------------------------------------------------------------
# Pascal VOC sets
# ----------------------------------------------------------------------------------------------------------------------
def _neu_category(sample: Sample) -> str:
    """NEU-DET split group: the file-name category (``crazing_12`` -> ``crazing``), else the dominant class."""
    m = re.fullmatch(r"(.+)_\d+", sample.stem)
    return m.group(1) if m else sample.group


_PKU_PCB = _Dataset("pku-pcb", PKU_PCB_NAMES, annotations=("Annotations",), images=("images",))
_NEU_DET = _Dataset("neu-det", NEU_DET_NAMES, annotations=("ANNOTATIONS",), images=("IMAGES",), group=_neu_category)
_GC10_DET = _Dataset(
    "gc10-det",
    GC10_DET_NAMES,
    GC10_DET_ALIASES,
    annotations=("lable", "label", "labels", "Annotations"),
    images=("images",),
)


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
    unchanged by default; ``max_size`` downsizes them (longer side) and ``tile`` cuts them into overlapping tiles.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each class folder for val.
        seed, tile, overlap, keep_empty, max_size, background, ignore_unknown, aliases, link: As described under
            "Keyword arguments" in :mod:`dsmoe_yolo.data.converters`.

    Returns:
        The summary dict described in :mod:`dsmoe_yolo.data.converters`.
    """
    out = Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    return _convert_voc(src, out, _PKU_PCB, _Options(val, seed, background, ignore_unknown, aliases))


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
        seed, max_size, background, ignore_unknown, aliases, link: As described under "Keyword arguments" in
            :mod:`dsmoe_yolo.data.converters`.

    Returns:
        The summary dict described in :mod:`dsmoe_yolo.data.converters`.
    """
    out = Output(Path(dst), max_size=max_size, link=link)
    return _convert_voc(src, out, _NEU_DET, _Options(val, seed, background, ignore_unknown, aliases))


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
    flat.

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each group (image folder or most frequent class) for val.
        seed, tile, overlap, keep_empty, max_size, background, ignore_unknown, aliases, link: As described under
            "Keyword arguments" in :mod:`dsmoe_yolo.data.converters`.

    Returns:
        The summary dict described in :mod:`dsmoe_yolo.data.converters`.
    """
    out = Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    return _convert_voc(src, out, _GC10_DET, _Options(val, seed, background, ignore_unknown, aliases))


# ----------------------------------------------------------------------------------------------------------------------
# Aluminium (labelme JSON)
# ----------------------------------------------------------------------------------------------------------------------
def _labelme_image(ann: Annotation, index: Mapping[str, Path]) -> Path | None:
    """The image of a labelme file: its ``imagePath`` (relative to the JSON), a same-stem sibling, or by stem."""
    named = Path(ann.image.replace("\\", "/")) if ann.image else None
    candidates = [ann.file.parent / named] if named else []
    candidates += [ann.file.with_suffix(s) for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
    for p in candidates:
        if p.is_file():
            return Path(os.path.normpath(p))
    return index.get(ann.file.stem) or (index.get(named.stem) if named else None)


_ALUMINUM = _Dataset("aluminum", ALUMINUM_NAMES, ALUMINUM_ALIASES)


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
    frequent class. The raw images are up to 2560x1920 px (see ``tile`` and ``max_size``).

    Args:
        src: Raw dataset folder.
        dst: Output dataset root.
        val: Fraction of each group (most frequent class) for val.
        background: Keep images without a JSON as background images.
        ignore_unknown: Skip boxes of other defect kinds (warning) instead of raising.
        aliases: Extra ``{raw label: class name}`` mappings (e.g. ``{"碰伤": "scratch"}``).
        seed, tile, overlap, keep_empty, max_size, link: As described under "Keyword arguments" in
            :mod:`dsmoe_yolo.data.converters`.

    Returns:
        The summary dict described in :mod:`dsmoe_yolo.data.converters`.
    """
    out = Output(Path(dst), tile, overlap, keep_empty, max_size, link)
    opts = _Options(val, seed, background, ignore_unknown, aliases)
    src, tally, lookup = _start(src, out, _ALUMINUM, opts)
    index, tally.duplicates = index_images([src], out)
    samples, used = annotated(sorted(src.rglob("*.json")), labelme_boxes, _labelme_image, index, lookup, tally)
    check_unknown(tally, opts.ignore_unknown, _ALIAS_FIX)
    samples += backgrounds([p for p in index.values() if p not in used], tally)
    return write_splits(split_samples(samples, opts.val, opts.seed), out, tally)


# ----------------------------------------------------------------------------------------------------------------------
# DeepPCB (txt boxes, official split lists)
# ----------------------------------------------------------------------------------------------------------------------
_DEEPPCB = _Dataset("deeppcb", DEEPPCB_NAMES, DEEPPCB_TYPES)
_DEEPPCB_FIX = (
    "DeepPCB types are 1..6 (open .. pin-hole); correct those lines, or pass ignore_unknown=True to skip them"
)


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
        The summary dict described in :mod:`dsmoe_yolo.data.converters`.
    """
    out = Output(Path(dst), link=link, templates=templates)
    opts = _Options(background=background, ignore_unknown=ignore_unknown)
    src, tally, lookup = _start(src, out, _DEEPPCB, opts)
    root = find_root(src, "trainval.txt")
    splits = {}
    for split, listed in (("train", "trainval.txt"), ("val", "test.txt")):
        if not (root / listed).is_file():
            raise FileNotFoundError(f"deeppcb: split list '{root / listed}' not found; use an unmodified PCBData copy")
        splits[split] = _deeppcb_split(root, root / listed, lookup, tally)
    check_unknown(tally, opts.ignore_unknown, _DEEPPCB_FIX)
    return write_splits(splits, out, tally)


def _deeppcb_split(root: Path, listing: Path, lookup: Mapping[str, int], tally: Tally) -> list[Sample]:
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
            for s in backgrounds([image], tally):
                samples.append(Sample(image, listed.stem, [], s.frame))
            continue
        sample = make_sample(deeppcb_boxes(txt), image, listed.stem, lookup, tally)
        if sample is not None:
            template = listed.with_name(f"{listed.stem}_temp{listed.suffix}")
            sample.template = template if template.is_file() else None
            samples.append(sample)
    return samples
