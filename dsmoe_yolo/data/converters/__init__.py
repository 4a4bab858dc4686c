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

Keyword arguments (each converter takes those that apply to its dataset; its docstring says what differs):

- ``val``: Fraction of each split group for val (the group is per dataset, e.g. PKU-PCB's class folders).
- ``seed``: Split seed.
- ``tile``: Tile size in px (e.g. 640), or None for whole images. Tiles overlap, are named ``<stem>_<x0>_<y0>`` and
  get the boxes cut to them (a box is kept where >= 25 % of its area is inside).
- ``overlap``: Fractional overlap of neighbouring tiles.
- ``keep_empty``: Also write tiles without any box (as background tiles).
- ``max_size``: Downsize images so their longer side is at most this (applied before tiling).
- ``background``: Keep images without an annotation file as background images.
- ``ignore_unknown``: Skip boxes with unknown class names (warning) instead of raising.
- ``aliases``: Extra ``{raw name: class name}`` mappings.
- ``link``: Hard-link instead of copying unchanged images.

Every converter returns the summary dict: ``images`` written per split (tiles when tiling), ``boxes`` per class,
``background`` (images with an empty label), ``clipped``, ``dropped``, ``skipped`` (annotations without image),
``unlabeled`` (images without annotation), ``ignored`` (boxes skipped by ``ignore_unknown``), ``dataset`` and ``dst``.

Modules: :mod:`.annotations` (raw formats -> :class:`Annotation`), :mod:`.classes` (class names, aliases, lookup),
:mod:`.geometry` (boxes and tiles), :mod:`.sources` (finding raw files), :mod:`.samples` (cleaned boxes, splits),
:mod:`.tally` (counts, summary, log), :mod:`.output` and :mod:`.writer` (the output tree), :mod:`.readers` (raw
layouts -> samples), :mod:`.datasets` (the table of datasets and the converters made from it). Besides ``__all__``,
the ``Box`` type and the ``SPLITS`` and ``IMAGE_SUFFIXES`` constants are importable from here.
"""

from __future__ import annotations

from dsmoe_yolo.data.converters.annotations import Annotation, deeppcb_boxes, labelme_boxes, voc_boxes
from dsmoe_yolo.data.converters.classes import (
    ALUMINUM_ALIASES,
    ALUMINUM_NAMES,
    DEEPPCB_NAMES,
    GC10_DET_ALIASES,
    GC10_DET_NAMES,
    NEU_DET_NAMES,
    PKU_PCB_NAMES,
    class_lookup,
    normalise_name,
)
from dsmoe_yolo.data.converters.datasets import (
    convert_aluminum,
    convert_deeppcb,
    convert_gc10_det,
    convert_neu_det,
    convert_pku_pcb,
)
from dsmoe_yolo.data.converters.geometry import Box as Box
from dsmoe_yolo.data.converters.geometry import clip_box, tile_boxes, tile_origins, to_yolo
from dsmoe_yolo.data.converters.output import SPLITS as SPLITS
from dsmoe_yolo.data.converters.samples import split_stems
from dsmoe_yolo.data.converters.sources import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from dsmoe_yolo.data.converters.sources import find_root
from dsmoe_yolo.data.converters.writer import write_yolo_label

__all__ = (
    "ALUMINUM_ALIASES",
    "ALUMINUM_NAMES",
    "DEEPPCB_NAMES",
    "GC10_DET_ALIASES",
    "GC10_DET_NAMES",
    "NEU_DET_NAMES",
    "PKU_PCB_NAMES",
    "Annotation",
    "class_lookup",
    "clip_box",
    "convert_aluminum",
    "convert_deeppcb",
    "convert_gc10_det",
    "convert_neu_det",
    "convert_pku_pcb",
    "deeppcb_boxes",
    "find_root",
    "labelme_boxes",
    "normalise_name",
    "split_stems",
    "tile_boxes",
    "tile_origins",
    "to_yolo",
    "voc_boxes",
    "write_yolo_label",
)
