"""Fixed few-label training subsets of a YOLO dataset, chosen once with a seed, written to files (issue 32, item 2).

    python examples/few_label_subsets.py data=../shared/data/neu-det/data.yaml fractions=5,25 out=campaign/subsets

The images of the ``train`` split are sorted by name, shuffled once with ``seed`` and each fraction takes a prefix,
so the subsets are nested (5 % is inside 25 %). The lists, relative to the dataset folder, live in
``examples/results/subsets/<dataset>-<pct>.txt``: committed, so every model and every machine trains on the same
images; a list that is already there is reused (and checked against the dataset), never redrawn (``lists=`` names
another folder for them). For each fraction,
``out`` gets what Ultralytics trains from:

- ``<dataset>-<pct>.txt``: the subset's images as absolute paths (Ultralytics finds each label by swapping
  ``images`` for ``labels`` in the path, as for any list file);
- ``<dataset>-<pct>.yaml``: a data YAML with ``train:`` that list, the full ``val`` split and the dataset's names.

Prints, per fraction, the number of images and of labelled boxes per class.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import yaml

LISTS = Path(__file__).resolve().parent / "results" / "subsets"


def _args(argv: list[str]) -> dict:
    """``key=value`` arguments with defaults."""
    out = {"data": None, "fractions": "5,25", "seed": "0", "out": "subsets", "lists": str(LISTS)}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in out:
            raise SystemExit(f"few_label_subsets: unknown argument {a!r}; expected key=value with keys {sorted(out)}")
        out[key] = value
    if not out["data"]:
        raise SystemExit("few_label_subsets: data= is required, e.g. data=../shared/data/neu-det/data.yaml")
    return out


def _train_images(root: Path, spec: dict) -> list[str]:
    """The train split's image paths relative to ``root``, sorted (a folder split only)."""
    folder = root / str(spec["train"])
    if not folder.is_dir():
        raise SystemExit(f"few_label_subsets: train split {folder} is not a folder of images")
    from ultralytics.data.utils import IMG_FORMATS

    return sorted(str(p.relative_to(root)) for p in folder.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)


def _label_counts(root: Path, images: list[str], names: dict) -> dict[str, int]:
    """Boxes per class name over ``images`` (labels next to them, Ultralytics' images -> labels rule)."""
    from ultralytics.data.utils import img2label_paths

    counts = {str(n): 0 for n in names.values()}
    for label in map(Path, img2label_paths([str(root / rel) for rel in images])):
        if label.is_file():
            for line in label.read_text().splitlines():
                if line.strip():
                    counts[str(names[int(line.split()[0])])] += 1
    return counts


def subset(images: list[str], pct: int, seed: int) -> list[str]:
    """The first ``pct`` % (at least one image) of ``images`` shuffled with ``seed``: nested over ``pct``."""
    order = list(images)
    random.Random(seed).shuffle(order)
    return sorted(order[: max(1, round(len(order) * pct / 100))])


def main(argv: list[str]) -> None:
    args = _args(argv)
    data = Path(args["data"]).expanduser().resolve()
    spec = yaml.safe_load(data.read_text())
    root = (data.parent / spec["path"]).resolve() if spec.get("path") else data.parent
    names = spec["names"] if isinstance(spec["names"], dict) else dict(enumerate(spec["names"]))
    images = _train_images(root, spec)
    out = Path(args["out"]).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    lists = Path(args["lists"]).expanduser().resolve()
    lists.mkdir(parents=True, exist_ok=True)
    dataset = root.name
    for pct in (int(p) for p in args["fractions"].split(",") if p.strip()):
        listed = lists / f"{dataset}-{pct}.txt"
        if listed.is_file():
            chosen = [line for line in listed.read_text().splitlines() if line.strip()]
            missing = [rel for rel in chosen if not (root / rel).is_file()]
            if missing:
                raise SystemExit(
                    f"few_label_subsets: {listed} names {len(missing)} image(s) not in {root} (first: {missing[0]}); "
                    "is this the same dataset? Delete the list to draw a new subset."
                )
        else:
            chosen = subset(images, pct, int(args["seed"]))
            listed.write_text("\n".join(chosen) + "\n")
        absolute = out / f"{dataset}-{pct}.txt"
        absolute.write_text("\n".join(str(root / rel) for rel in chosen) + "\n")
        subset_yaml = {"train": str(absolute), "val": str(root / spec["val"]), "names": names}
        (out / f"{dataset}-{pct}.yaml").write_text(yaml.safe_dump(subset_yaml, sort_keys=False))
        counts = _label_counts(root, chosen, names)
        print(f"{dataset} {pct}%: {len(chosen)} of {len(images)} images ({listed}); boxes per class: {counts}")


if __name__ == "__main__":
    main(sys.argv[1:])
