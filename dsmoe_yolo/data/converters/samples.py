"""Samples: the images to write with their cleaned boxes, built from annotations, and their train/val split."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dsmoe_yolo.data.converters.annotations import Annotation
from dsmoe_yolo.data.converters.classes import normalise_name
from dsmoe_yolo.data.converters.geometry import Box, clip_box
from dsmoe_yolo.data.converters.output import SPLITS
from dsmoe_yolo.data.converters.sources import image_size
from dsmoe_yolo.data.converters.tally import Tally
from dsmoe_yolo.errors import ConfigError

__all__ = ("Sample", "annotated", "backgrounds", "make_sample", "split_samples", "split_stems")


@dataclass
class Sample:
    """One output image: its source, output stem, clean boxes in ``frame`` pixels, split group, optional template."""

    image: Path
    stem: str
    boxes: list[Box]
    frame: tuple[int, int]
    group: str = ""
    template: Path | None = None


def _dominant(boxes: Sequence[Box], names: Sequence[str]) -> str:
    """The most frequent class name among ``boxes`` (ties: lowest id), or ``"background"``."""
    counts = Counter(b[0] for b in boxes)
    return names[min(counts, key=lambda c: (-counts[c], c))] if counts else "background"


def make_sample(ann: Annotation, image: Path, stem: str, lookup: Mapping[str, int], tally: Tally) -> Sample | None:
    """Clean ``ann``'s boxes for ``image``: class ids, clipping, dropping degenerate boxes (counted in ``tally``).

    Args:
        ann: The annotation.
        image: Its image file.
        stem: The output file stem.
        lookup: ``{normalised raw name: class id}``.
        tally: The counts to update.

    Returns:
        The sample (split group: its most frequent class), or None if the image is unreadable or was left without a
        box by unknown class names.
    """
    size = image_size(image)
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
    return Sample(image, stem, boxes, frame, _dominant(boxes, tally.names))


def annotated(
    files: Iterable[Path],
    read: Callable[[Path], Annotation],
    locate: Callable[[Annotation, Mapping[str, Path]], Path | None],
    index: Mapping[str, Path],
    lookup: Mapping[str, int],
    tally: Tally,
) -> tuple[list[Sample], set[Path]]:
    """Samples of annotation files, each output under its image's stem; a file whose image is missing is skipped.

    Args:
        files: The annotation files, in order.
        read: Reads one file.
        locate: The image of an annotation given ``index``, or None.
        index: ``{stem: image}`` of the source's images.
        lookup: ``{normalised raw name: class id}``.
        tally: The counts to update.

    Returns:
        The samples, and every image an annotation was matched to (also those that gave no sample).
    """
    samples, used = [], set()
    for file in files:
        ann = read(file)
        image = locate(ann, index)
        if image is None:
            tally.skipped.append(str(file))
            continue
        used.add(image)
        sample = make_sample(ann, image, image.stem, lookup, tally)
        samples += [sample] if sample is not None else []
    return samples, used


def backgrounds(images: Iterable[Path], tally: Tally) -> list[Sample]:
    """Record images without annotation; return them as empty samples when ``tally.keep_unlabeled``."""
    out = []
    for image in images:
        tally.unlabeled.append(str(image))
        size = image_size(image) if tally.keep_unlabeled else None
        if size is not None:
            out.append(Sample(image, image.stem, [], size, "background"))
    return out


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


def split_samples(samples: list[Sample], val: float, seed: int) -> dict[str, list[Sample]]:
    """``{split: samples}`` by :func:`split_stems` over the samples' stems and groups."""
    splits = split_stems({s.stem: s.group for s in samples}, val, seed)
    return {name: [s for s in samples if splits[s.stem] == name] for name in SPLITS}
