"""A first look at visual prompts: k-shot example boxes vs text prompts vs both, on one checkpoint's val images.

    python examples/visual_prompt_check.py model=best.pt data=/path/to/neu-det/data.yaml shots=1 per_class=20 imgsz=224

For each class, the first ``shots`` val images of that class (by file name, NEU-DET names its files ``<class>_<n>``;
for other data, the first val images whose labels contain the class) give their labelled boxes as the class's visual
prompt; the next ``per_class`` images of the class are the probes. Per prompt kind (``text``: the checkpoint's own
prompts; ``visual``: the example boxes only; ``both``: text and boxes), it counts the probes whose most confident box
has the probe's class. A quick proxy on images of one class each, not AP, and not the held-out-class protocol of the
evidence campaign (the classes here were trained on).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dsmoe_yolo.names import ordered_names


def _labels(image: Path) -> list[tuple[int, list[float]]]:
    import cv2
    from ultralytics.data.utils import img2label_paths

    h, w = cv2.imread(str(image)).shape[:2]
    label = Path(img2label_paths([str(image)])[0])
    out = []
    for line in label.read_text().splitlines() if label.is_file() else []:
        c, x, y, bw, bh = map(float, line.split()[:5])
        out.append((int(c), [(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h]))
    return out


def split(images: list[Path], names: list[str], shots: int, per_class: int) -> dict[int, tuple[list, list]]:
    """Per class index: (example images with their boxes of that class, probe images), images of one class only."""
    out = {}
    for c in range(len(names)):
        own = [p for p in images if {k for k, _ in _labels(p)} == {c}]
        out[c] = ([(p, [b for k, b in _labels(p) if k == c]) for p in own[:shots]], own[shots : shots + per_class])
    return out


def check(model: str, data: str, shots: int = 1, per_class: int = 20, imgsz: int = 640) -> str:
    """Markdown table of the three prompt kinds (module docstring)."""
    from ultralytics import YOLO
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset

    info = check_det_dataset(data)
    names = ordered_names(info["names"])
    val = Path(info["val"])
    images = sorted(p for p in val.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)
    groups = split(images, names, shots, per_class)
    visual = {names[c]: [{"image": str(p), "boxes": b} for p, b in ex] for c, (ex, _) in groups.items() if ex}
    rows = ["| prompts | probes whose most confident box has their class | of |", "|---|---:|---:|"]
    for kind in ("text", "visual", "both"):
        m = YOLO(model)
        if kind == "visual":
            m.set_classes(visual)
        elif kind == "both":
            m.set_classes(names, prompts=_trained_prompts(m, names, info), visual=visual)
        hits = total = 0
        for c, (_, probes) in groups.items():
            for p in probes:
                r = m.predict(str(p), imgsz=imgsz, conf=0.001, verbose=False)[0]
                if len(r.boxes):
                    hits += int(r.boxes.cls[r.boxes.conf.argmax()]) == c
                total += 1
        rows.append(f"| {kind} | {hits} | {total} |")
    return "\n".join(rows) + f"\n\nchance: {total / max(len(names), 1):.0f} of {total}; {shots}-shot"


def _trained_prompts(model, names: list[str], info: dict) -> dict[str, list[str]]:
    """The descriptions the checkpoint was trained with (older checkpoints: found from the data, as at training)."""
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import class_texts
    from dsmoe_yolo.text.embed import resolve_prompts

    trained = class_texts(model.model)[0].text_meta.get("prompts")
    if trained and all(n in trained for n in names):
        return {n: trained[n] for n in names}
    return resolve_prompts(info, names, LOGGER.info)[0]


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    ints = {k: int(args.pop(k)) for k in ("shots", "per_class", "imgsz") if k in args}
    print(check(args.pop("model"), args.pop("data"), **ints))


if __name__ == "__main__":
    main(sys.argv[1:])
