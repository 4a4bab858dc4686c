"""Readers of the three raw layouts (Pascal VOC folders, labelme JSON, DeepPCB lists) into :class:`Sample` lists.

Each reader takes ``(src, lookup, tally, out)`` (``src`` checked to be a folder, ``lookup`` the class lookup, ``tally``
the counts to update, ``out`` the output tree) and returns the samples to split, or ``{split: samples}`` for a set with
an official split. A dataset's particulars (folder names, split groups) are bound with :func:`functools.partial` in
:mod:`.datasets`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from dsmoe_yolo.data.converters.annotations import Annotation, deeppcb_boxes, labelme_boxes, voc_boxes
from dsmoe_yolo.data.converters.output import Output
from dsmoe_yolo.data.converters.samples import Sample, annotated, backgrounds, make_sample
from dsmoe_yolo.data.converters.sources import IMAGE_SUFFIXES, find_dirs, find_root, index_images, subdirs
from dsmoe_yolo.data.converters.tally import Tally

__all__ = ("deeppcb_splits", "labelme_samples", "voc_samples")


# ----------------------------------------------------------------------------------------------------------------------
# Pascal VOC folders
# ----------------------------------------------------------------------------------------------------------------------
def _voc_image(ann: Annotation, index: Mapping[str, Path]) -> Path | None:
    """The image of a VOC file: by the XML file's stem, else by its ``<filename>``'s stem."""
    return index.get(ann.file.stem) or (index.get(Path(ann.image).stem) if ann.image else None)


def voc_samples(
    annotations: tuple[str, ...],
    images: tuple[str, ...],
    src: Path,
    lookup: Mapping[str, int],
    tally: Tally,
    out: Output,
    group: Callable[[Sample], str] | None = None,
) -> list[Sample]:
    """Samples from VOC folders.

    Every folder named like ``annotations`` below ``src`` holds XML files; its images are in a sibling folder named like
    ``images``, else anywhere below its parent. An image in a sub-folder of that image root gets the sub-folder's name
    as split group (class folders), otherwise its most frequent class; ``group``, if given, then sets every sample's
    group (it sees the one found so far).
    """
    ann_dirs = find_dirs(src, annotations)
    if not ann_dirs:
        raise FileNotFoundError(f"{tally.dataset}: no annotation folder named {list(annotations)} under '{src}'")
    wanted = {n.lower() for n in images}
    roots = [next((d for d in subdirs(a.parent) if d.name.lower() in wanted), a.parent) for a in ann_dirs]
    roots = list(dict.fromkeys(roots))
    index, tally.duplicates = index_images(roots, out)
    xmls = sorted(p for a in ann_dirs for p in a.rglob("*.xml"))
    samples, used = annotated(xmls, voc_boxes, _voc_image, index, lookup, tally)
    samples += backgrounds([p for p in index.values() if p not in used], tally)
    for s in samples:
        s.group = s.group if s.image.parent in roots else s.image.parent.name
        s.group = group(s) if group is not None else s.group
    return samples


# ----------------------------------------------------------------------------------------------------------------------
# labelme JSON
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


def labelme_samples(src: Path, lookup: Mapping[str, int], tally: Tally, out: Output) -> list[Sample]:
    """Samples of every ``*.json`` below ``src``, then the images below ``src`` that no JSON names (backgrounds)."""
    index, tally.duplicates = index_images([src], out)
    samples, used = annotated(sorted(src.rglob("*.json")), labelme_boxes, _labelme_image, index, lookup, tally)
    return samples + backgrounds([p for p in index.values() if p not in used], tally)


# ----------------------------------------------------------------------------------------------------------------------
# DeepPCB (txt boxes, official split lists)
# ----------------------------------------------------------------------------------------------------------------------
def deeppcb_splits(src: Path, lookup: Mapping[str, int], tally: Tally, out: Output) -> dict[str, list[Sample]]:
    """``{split: samples}`` from the official lists below ``src``: train = ``trainval.txt``, val = ``test.txt``."""
    root = find_root(src, "trainval.txt")
    splits = {}
    for split, listed in (("train", "trainval.txt"), ("val", "test.txt")):
        if not (root / listed).is_file():
            raise FileNotFoundError(f"deeppcb: split list '{root / listed}' not found; use an unmodified PCBData copy")
        splits[split] = _deeppcb_split(root, root / listed, lookup, tally)
    return splits


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
