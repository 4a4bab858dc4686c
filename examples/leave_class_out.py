"""Leave-one-class-out copies of a YOLO dataset, for training on the union without ever seeing one class (issue 32).

    python examples/leave_class_out.py data=../shared/data/neu-det/data.yaml classes=crazing,patches,scratches \\
        out=campaign/loco

For each held-out class ``c`` it writes ``out/<dataset>-no-<c>/``: ``images/<split>/`` links to every train and val
image that shows no ``c`` box (an image with ``c`` anywhere is dropped whole, so no ``c`` pixels are trained on as
background), ``labels/<split>/`` their labels renumbered to the remaining classes, and a ``data.yaml`` naming them.
The held-out class is then measured on the *original* val split (all classes prompted; ``examples/zero_shot.py``
reports each class's AP50: the held-out one is zero-shot, the others show what was kept). Images are links, not
copies. Prints the images kept per split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def without_class(root: Path, spec: dict, names: list[str], held_out: str, out: Path) -> dict[str, int]:
    """Write the copy of the dataset at ``root`` without ``held_out`` into ``out``; images kept per split."""
    from ultralytics.data.utils import IMG_FORMATS, img2label_paths

    drop = names.index(held_out)
    remap = {old: new for new, old in enumerate(i for i in range(len(names)) if i != drop)}
    kept = {}
    for split in ("train", "val"):
        source = root / str(spec[split])
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        kept[split] = 0
        for image in sorted(p for p in source.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS):
            label = Path(img2label_paths([str(image)])[0])
            rows = [r.split() for r in label.read_text().splitlines() if r.strip()] if label.is_file() else []
            if any(int(r[0]) == drop for r in rows):
                continue
            link = out / "images" / split / image.name
            if not link.is_symlink():
                link.symlink_to(image.resolve())
            lines = [" ".join([str(remap[int(r[0])]), *r[1:]]) for r in rows]
            (out / "labels" / split / f"{image.stem}.txt").write_text("".join(f"{x}\n" for x in lines))
            kept[split] += 1
    kept_names = [n for n in names if n != held_out]
    data = {"train": "images/train", "val": "images/val", "names": dict(enumerate(kept_names))}
    (out / "data.yaml").write_text(
        f"# {root.name} without any image showing '{held_out}' (examples/leave_class_out.py)\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    return kept


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    data = Path(args["data"]).expanduser().resolve()
    spec = yaml.safe_load(data.read_text())
    root = (data.parent / spec["path"]).resolve() if spec.get("path") else data.parent
    raw = spec["names"]
    names = [str(raw[i]) for i in range(len(raw))]
    out = Path(args.get("out", "loco")).expanduser().resolve()
    for held_out in (c.strip() for c in args["classes"].split(",") if c.strip()):
        if held_out not in names:
            raise SystemExit(f"leave_class_out: {held_out!r} is not a class of {data} ({names})")
        kept = without_class(root, spec, names, held_out, out / f"{root.name}-no-{held_out}")
        print(f"{root.name} without {held_out}: {kept['train']} train, {kept['val']} val images kept")


if __name__ == "__main__":
    main(sys.argv[1:])
