"""The five dataset converters (:func:`convert_pku_pcb`, :func:`convert_neu_det`, :func:`convert_gc10_det`,
:func:`convert_aluminum`, :func:`convert_deeppcb`): a table of what differs between the datasets, and one conversion
path.

Each converter is made from its :class:`_Dataset` entry by :func:`_converter`: its signature is ``(src, dst, *,
<keywords>)`` with the keywords its entry names, their defaults those of :class:`Output` and :class:`_Options`; its
docstring is the entry's description and argument notes. Their shared keyword arguments, rules and summary dict are
described once, in the :mod:`dsmoe_yolo.data.converters` package docstring.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import partial
from inspect import Parameter, Signature
from pathlib import Path
from typing import Union

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
from dsmoe_yolo.data.converters.readers import deeppcb_splits, labelme_samples, voc_samples
from dsmoe_yolo.data.converters.samples import Sample, split_samples
from dsmoe_yolo.data.converters.sources import source_dir
from dsmoe_yolo.data.converters.tally import Tally, check_unknown
from dsmoe_yolo.data.converters.writer import write_splits

__all__ = ("convert_aluminum", "convert_deeppcb", "convert_gc10_det", "convert_neu_det", "convert_pku_pcb")

Samples = Union[list[Sample], dict[str, list[Sample]]]
"""What a reader returns: the samples to split, or ``{split: samples}`` for an official split."""

_ALIAS_FIX = "pass aliases={'<raw name>': '<class>'} to map a name, or ignore_unknown=True to skip those boxes"
_SHARED = 'As described under "Keyword arguments" in :mod:`dsmoe_yolo.data.converters`.'
_RETURNS = "The summary dict described in :mod:`dsmoe_yolo.data.converters`."


@dataclass(frozen=True)
class _Options:
    """A converter's split and class-name keyword arguments (the image ones go to :class:`Output`)."""

    val: float = 0.2
    seed: int = 0
    background: bool = False
    ignore_unknown: bool = False
    aliases: Mapping[str, str] | None = None


_KEYWORDS = {f.name: f for f in fields(_Options) + fields(Output) if f.default is not MISSING}
"""Every converter keyword argument: ``{name: dataclass field}`` (its default and type)."""

_IMAGE = ("tile", "overlap", "keep_empty", "max_size")
_CLASSES = ("background", "ignore_unknown", "aliases")


@dataclass(frozen=True)
class _Dataset:
    """What differs between the converters.

    Attributes:
        name: Dataset name, for messages and the summary.
        names: Class names in id order.
        read: Reader ``(src, lookup, tally, out) -> samples or {split: samples}`` (see :mod:`.readers`).
        keywords: The keyword arguments the converter takes, in signature order (names in :data:`_KEYWORDS`).
        about: Docstring: the title line and the paragraph on the raw layout and split.
        notes: Docstring: ``{argument: note}`` for arguments whose meaning is particular to this dataset; the others
            refer to the package docstring.
        aliases: Built-in ``{raw name: class name}`` entries (the user's ``aliases`` are added to them).
        fix: How to fix unknown class names, for the error message.
    """

    name: str
    names: tuple[str, ...]
    read: Callable[[Path, Mapping[str, int], Tally, Output], Samples]
    keywords: tuple[str, ...]
    about: str
    notes: Mapping[str, str]
    aliases: Mapping[str, str] = field(default_factory=dict)
    fix: str = _ALIAS_FIX


def _convert(dataset: _Dataset, src: str | Path, dst: str | Path, **keywords) -> dict:
    """The one conversion path: check, read, check class names, split (unless official), write and summarise."""
    out = Output(Path(dst), **{k: v for k, v in keywords.items() if k in Output.__dataclass_fields__})
    opts = _Options(**{k: v for k, v in keywords.items() if k in _Options.__dataclass_fields__})
    src = source_dir(src, dataset.name)
    out.check(src)
    tally = Tally(dataset.name, dataset.names, keep_unlabeled=opts.background)
    lookup = class_lookup(dataset.names, {**dataset.aliases, **(opts.aliases or {})})
    found = dataset.read(src, lookup, tally, out)
    check_unknown(tally, opts.ignore_unknown, dataset.fix)
    splits = found if isinstance(found, dict) else split_samples(found, opts.val, opts.seed)
    return write_splits(splits, out, tally)


def _docstring(dataset: _Dataset) -> str:
    """The converter's docstring: ``about``, then Args (``notes``, the rest by reference) and Returns."""
    args = ["src: Raw dataset folder.", "dst: Output dataset root."]
    args += [f"{k}: {note}" for k, note in dataset.notes.items()]
    shared = [k for k in dataset.keywords if k not in dataset.notes]
    args += [f"{', '.join(shared)}: {_SHARED}"] if shared else []
    args = [textwrap.fill(a, 112, initial_indent=" " * 4, subsequent_indent=" " * 8) for a in args]
    return f"{dataset.about}\n\nArgs:\n" + "\n".join(args) + f"\n\nReturns:\n    {_RETURNS}\n"


def _converter(function: str, dataset: _Dataset) -> Callable[..., dict]:
    """The public converter ``function`` of ``dataset``: ``(src, dst, *, <dataset.keywords>) -> summary dict``."""
    path = Parameter.POSITIONAL_OR_KEYWORD
    params = [Parameter("src", path, annotation="str | Path"), Parameter("dst", path, annotation="str | Path")]
    for k in dataset.keywords:
        params.append(Parameter(k, Parameter.KEYWORD_ONLY, default=_KEYWORDS[k].default, annotation=_KEYWORDS[k].type))
    signature = Signature(params, return_annotation="dict")

    def convert(*args, **kwargs) -> dict:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{function}() {e}") from None
        bound.apply_defaults()
        return _convert(dataset, **bound.arguments)

    convert.__name__ = convert.__qualname__ = function
    convert.__signature__ = signature
    convert.__doc__ = _docstring(dataset)
    return convert


def _neu_category(sample: Sample) -> str:
    """NEU-DET split group: the file-name category (``crazing_12`` -> ``crazing``), else the dominant class."""
    m = re.fullmatch(r"(.+)_\d+", sample.stem)
    return m.group(1) if m else sample.group


# ----------------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------------
_PKU_PCB = _Dataset(
    "pku-pcb",
    PKU_PCB_NAMES,
    partial(voc_samples, ("Annotations",), ("images",)),
    ("val", "seed", *_IMAGE, *_CLASSES, "link"),
    about="""Convert the PKU PCB defect set (HRIPCB, Pascal VOC) to YOLO format.

``src`` (or a folder below it, e.g. ``PCB_DATASET``) holds ``Annotations/<Class_Folder>/*.xml`` and
``images/<Class_Folder>/*.jpg``. The split is stratified by class folder. The ~3000x2000 px images are copied
unchanged by default; ``max_size`` downsizes them (longer side) and ``tile`` cuts them into overlapping tiles.""",
    notes={"val": "Fraction of each class folder for val."},
)
_NEU_DET = _Dataset(
    "neu-det",
    NEU_DET_NAMES,
    partial(voc_samples, ("ANNOTATIONS",), ("IMAGES",), group=_neu_category),
    ("val", "seed", "max_size", *_CLASSES, "link"),
    about="""Convert NEU-DET (hot-rolled steel, 200x200, Pascal VOC) to YOLO format.

``src`` (or a folder below it) holds ``ANNOTATIONS/*.xml`` and ``IMAGES/*.jpg``; the Kaggle layout
(``train|validation/annotations`` + ``images/<class>/``) works too and is re-split. The split is stratified by
file-name category (``crazing_12`` -> ``crazing``); a box's class is its XML ``<name>``. Boxes are normalised by
the XML ``<size>``, so copies whose images were upscaled (416x416 images, 200x200 XML) still get correct labels;
``max_size=200`` also restores the images' native size.""",
    notes={"val": "Fraction of each category for val."},
)
_GC10_DET = _Dataset(
    "gc10-det",
    GC10_DET_NAMES,
    partial(voc_samples, ("lable", "label", "labels", "Annotations"), ("images",)),
    ("val", "seed", *_IMAGE, *_CLASSES, "link"),
    about="""Convert GC10-DET (steel strip, 10 classes, Pascal VOC) to YOLO format.

``src`` (or a folder below it) holds ``lable/*.xml`` (sic; ``label``, ``labels``, ``Annotations`` also work) and
the images in class-number folders ``1``..``10`` beside it, or flat. XML names ``1_chongkong`` .. ``10_yaozhe``
(and the misspelt ``10_yaozhed``), bare pinyin, folder numbers, two-letter abbreviations and the English names
all map to the classes (:data:`GC10_DET_ALIASES`). An image file name found in two folders is used once
(warning). The split is stratified by image folder, or by each image's most frequent class when the images are
flat.""",
    notes={"val": "Fraction of each group (image folder or most frequent class) for val."},
    aliases=GC10_DET_ALIASES,
)
_ALUMINUM = _Dataset(
    "aluminum",
    ALUMINUM_NAMES,
    labelme_samples,
    ("val", "seed", *_IMAGE, *_CLASSES, "link"),
    about="""Convert the Tianchi / Baidu aluminium surface-defect sets (labelme JSON) to the paper's 4 classes.

Every ``*.json`` below ``src`` is read; its image is ``imagePath`` (relative to the JSON), else a same-stem image
beside it, else a same-stem image anywhere below ``src``. Labels map by :data:`ALUMINUM_ALIASES` (针孔 pinhole,
擦花/擦伤 scratch, 脏点/脏污 contamination, 褶皱/折皱 crease, and the pinyin ``zhen_kong``, ``ca_shang``/``ca_hua``,
``zang_wu``/``zang_dian``, ``zhe_zhou``). The raw sets' other defect kinds (不导电, 桔皮, 漏底, 碰伤, 起坑, 凸粉,
涂层开裂, 喷流, 漆泡, 杂色, ...) raise unless ``ignore_unknown=True``. Images without a JSON (e.g. the
defect-free samples) are kept only with ``background=True``. The split is stratified by each image's most
frequent class. The raw images are up to 2560x1920 px (see ``tile`` and ``max_size``).""",
    notes={
        "val": "Fraction of each group (most frequent class) for val.",
        "background": "Keep images without a JSON as background images.",
        "ignore_unknown": "Skip boxes of other defect kinds (warning) instead of raising.",
        "aliases": 'Extra ``{raw label: class name}`` mappings (e.g. ``{"碰伤": "scratch"}``).',
    },
    aliases=ALUMINUM_ALIASES,
)
_DEEPPCB = _Dataset(
    "deeppcb",
    DEEPPCB_NAMES,
    deeppcb_splits,
    ("templates", "background", "ignore_unknown", "link"),
    about="""Convert DeepPCB to YOLO format with its official split: train = ``trainval.txt``, val = ``test.txt``.

``src`` is ``PCBData`` or any folder above it (e.g. the unpacked repository). Each list line
``groupN/N/<id>.jpg groupN/N_not/<id>.txt`` names the defective image ``groupN/N/<id>_test.jpg`` and its boxes
(``x1 y1 x2 y2 type``, spaces or commas, type 1..6 -> class 0..5). Output files are named ``<id>``; images are
copied unchanged.""",
    notes={
        "templates": "Also copy each defect-free template ``<id>_temp.jpg`` to ``templates/<split>/<id>.jpg``.",
        "background": "Keep listed images whose annotation file is missing as background images.",
        "ignore_unknown": "Skip boxes with a type outside 1..6 (warning) instead of raising.",
        "link": "Hard-link instead of copying.",
    },
    aliases=DEEPPCB_TYPES,
    fix="DeepPCB types are 1..6 (open .. pin-hole); correct those lines, or pass ignore_unknown=True to skip them",
)

convert_pku_pcb = _converter("convert_pku_pcb", _PKU_PCB)
convert_neu_det = _converter("convert_neu_det", _NEU_DET)
convert_gc10_det = _converter("convert_gc10_det", _GC10_DET)
convert_aluminum = _converter("convert_aluminum", _ALUMINUM)
convert_deeppcb = _converter("convert_deeppcb", _DEEPPCB)
