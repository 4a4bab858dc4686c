"""One training over several YOLO-format datasets, their label spaces joined through the class names (the prompts).

Given as Ultralytics' multi-dataset form, ``data=dict(train=dict(yolo_data=[a.yaml, b.yaml]), val=dict(yolo_data=[...]))``
(``val`` defaults to ``train``'s list), or as a data YAML listing the datasets::

    # defects-union.yaml
    yolo_data: [neu-det.yaml, deeppcb.yaml, ../kolektorsdd/data.yaml]     # or train: {yolo_data: [...]}, val: {...}

The union's classes are the members' class names in order of first appearance; a name in two datasets (compared as
the prompt lookup does: case, ``_``/``-``/spaces folded) is one class. Each member keeps its own label files; its labels
are renumbered into the union when its dataset is built, and each image carries its dataset's class set
(``LabelSpaces``), so training never penalises an image for a class its own dataset does not annotate (the loss
masks the other classes, ``LabelSpaces.mask``) and validation only scores the classes the image's dataset annotates.
Validation runs over every member's val split and reports each dataset's mAP beside the union's.

Not Ultralytics' ``WorldTrainerFromScratch`` path: that one samples text per image for a CLIP text model and
validates on one dataset; DS-MoE's text path is shared by the whole batch (the gate, the hyperbolic stage and the
space broadcasting read the class text), so here every image sees the union's prompts and the masks do the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.names import ordered_names
from dsmoe_yolo.text.prompts import normalise_name

__all__ = ("is_union", "union_spec", "load_union", "LabelSpaces", "SPACES")


def _yaml(spec) -> dict | None:
    if isinstance(spec, dict):
        return spec
    if not isinstance(spec, (str, Path)) or not str(spec).endswith((".yaml", ".yml")):
        return None
    try:
        from ultralytics.utils import YAML
        from ultralytics.utils.checks import check_file

        return YAML.load(check_file(str(spec)))
    except Exception:  # not found / not a mapping: stock dataset checks report it
        return None


def union_spec(spec) -> dict | None:
    """``{"train": [member, ...], "val": [member, ...], "yaml_file": ...}`` if ``spec`` lists datasets, else None."""
    doc = _yaml(spec)
    if not isinstance(doc, dict):
        return None
    if "yolo_data" in doc:
        members = {"train": doc["yolo_data"], "val": doc.get("val_data", doc["yolo_data"])}
    elif isinstance(doc.get("train"), dict) and "yolo_data" in doc["train"]:
        val = doc.get("val") if isinstance(doc.get("val"), dict) else doc["train"]
        members = {"train": doc["train"]["yolo_data"], "val": val.get("yolo_data", doc["train"]["yolo_data"])}
    else:
        return None
    base = Path(str(spec)).parent if not isinstance(spec, dict) else Path.cwd()
    for split, items in members.items():
        items = [items] if isinstance(items, str) else list(items or [])
        if not items:
            raise ConfigError(f"multi-dataset data: '{split}' lists no datasets; give yolo_data: [a.yaml, b.yaml]")
        members[split] = [str(base / i) if (base / str(i)).is_file() else str(i) for i in items]
    members["yaml_file"] = None if isinstance(spec, dict) else str(spec)
    return members


def is_union(spec) -> bool:
    """True if ``spec`` (a data argument) lists several datasets."""
    return union_spec(spec) is not None


def load_union(spec, check=None) -> dict:
    """The data dict of a multi-dataset spec, shaped like ``check_det_dataset``'s, plus ``union`` (one entry a member).

    Args:
        spec: A multi-dataset data argument (``union_spec``).
        check: ``check_det_dataset`` (Ultralytics'; given by the hook that calls this).

    Raises:
        ConfigError: If a member is listed twice or has no names.
    """
    if check is None:
        from ultralytics.data.utils import check_det_dataset as check
    members = union_spec(spec)
    if members is None:
        raise ConfigError(f"data={spec!r} does not list datasets (yolo_data: [a.yaml, b.yaml])")
    names, keys, infos = [], {}, {}
    for split in ("train", "val"):
        for item in members[split]:
            if item in infos:
                continue
            info = check(item)
            local = ordered_names(info["names"])
            for n in local:
                if normalise_name(n) not in keys:
                    keys[normalise_name(n)] = len(names)
                    names.append(n)
            infos[item] = {**info, "local_names": local, "to_union": [keys[normalise_name(n)] for n in local]}
    union = []
    for split in ("train", "val"):
        if len(set(members[split])) != len(members[split]):
            raise ConfigError(f"multi-dataset data: '{split}' lists a dataset twice: {members[split]}")
        for item in members[split]:
            info = infos[item]
            label = Path(str(info.get("yaml_file") or item)).stem
            label = info["path"].name if label == "data" and isinstance(info.get("path"), Path) else label
            union.append(
                {"split": split, "name": label, "data": info, "images": info[split], "to_union": info["to_union"]}
            )
    first = infos[members["train"][0]]
    return {
        "train": [u["images"] for u in union if u["split"] == "train"],
        "val": [u["images"] for u in union if u["split"] == "val"],
        "names": dict(enumerate(names)),
        "nc": len(names),
        "channels": first.get("channels", 3),
        "path": first.get("path"),
        "yaml_file": members["yaml_file"],
        "union": union,
    }


class LabelSpaces:
    """Which union classes each image's dataset annotates: ``im_file -> member``, ``member -> (nc,) bool``.

    Filled when the union's datasets are built (the plugin's ``build_yolo_dataset`` hook), read by the loss
    (``mask``) and the validator. Images it does not know (any single-dataset training) get an all-ones mask.
    """

    def __init__(self):
        self.member_of: dict[str, int] = {}
        self.entries: list[tuple[str, str, np.ndarray]] = []  # (split, dataset name, (nc,) bool)

    def add(self, name: str, im_files: list[str], classes: list[int], nc: int, split: str = "train") -> None:
        """Register one member dataset's images and the union classes it annotates."""
        mask = np.zeros(nc, dtype=bool)
        mask[classes] = True
        same = [i for i, (s, n, k) in enumerate(self.entries) if (s, n) == (split, name) and np.array_equal(k, mask)]
        if same:  # the same member built again (the final validation rebuilds nothing, a new run may)
            m = same[0]
        else:
            self.entries.append((split, name, mask))
            m = len(self.entries) - 1
        self.member_of.update({str(f): m for f in im_files})

    def members(self, split: str) -> list[tuple[str, np.ndarray]]:
        """``(dataset name, class mask)`` of the members registered for ``split``."""
        return [(name, mask) for s, name, mask in self.entries if s == split]

    def training_members(self) -> list[tuple[str, np.ndarray]]:
        return self.members("train")

    def clear(self) -> None:
        self.member_of.clear()
        self.entries.clear()

    def mask(self, im_files, nc: int, device=None) -> torch.Tensor | None:
        """(B, nc) float mask of the classes each image's dataset annotates, or None if no image is a union member."""
        rows = [self.member_of.get(str(f)) for f in im_files]
        if all(r is None for r in rows):
            return None
        out = np.ones((len(rows), nc), dtype=np.float32)
        for i, r in enumerate(rows):
            if r is not None and len(self.entries[r][2]) == nc:
                out[i] = self.entries[r][2]
        return torch.from_numpy(out).to(device)


SPACES = LabelSpaces()  # one training per process: filled by the dataset builder, read by the loss and validator
