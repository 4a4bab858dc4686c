"""k-shot prompts on classes a checkpoint never saw: text vs example boxes vs both, AP on the full val split.

    python examples/few_shot_prompts.py model=union-pretrained.pt data=/path/to/neu-det/data.yaml shots=1,5 \\
        draws=3 imgsz=224 out=few-shot.md

No training: the open-vocabulary checkpoint's classes are set to the dataset's, then validated on its whole ``val``
split under each prompt kind (issue "Visual prompts", item 3):

- ``text``: the dataset's class descriptions (its prompt file in ``cfg/prompts``, found by class names);
- ``visual k``: per class, k ``train`` images that show it, drawn at random (``draws`` draws, seeds 0, 1, ...), their
  boxes of that class as the class's prompt (prototype pooled from the model's own features, ``visual_prompts``);
- ``both k``: the descriptions and the same boxes (``set_classes`` with ``prompts=`` and ``visual=``).

Rows give mAP50 and mAP50-95 (mean ± std over the draws) and each class's AP50 (mean). The example images come from
the train split, so no val image is its own prompt.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

from dsmoe_yolo.names import ordered_names

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_swap import table_main  # noqa: E402
from visual_prompt_check import _labels  # noqa: E402


def examples(images: list[Path], n_classes: int, k: int, seed: int) -> dict[int, list[tuple[Path, list]]]:
    """Per class: ``k`` random images showing it (seeded), with their boxes of that class (pixels, xyxy)."""
    labelled = [(p, _labels(p)) for p in images]
    rng = random.Random(seed)
    out = {}
    for c in range(n_classes):
        own = [(p, [b for k_, b in lab if k_ == c]) for p, lab in labelled if any(k_ == c for k_, _ in lab)]
        out[c] = rng.sample(own, min(k, len(own)))
    return out


def _row(label: str, results: list) -> str:
    """One Markdown row: mAP50 / mAP50-95 mean ± std over ``results`` and the mean per-class AP50."""

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    n = len(results[0].names)
    per_class = []
    for i in range(n):
        aps = [dict(zip(r.box.ap_class_index.tolist(), r.box.ap50.tolist())).get(i, 0.0) for r in results]
        per_class.append(f"{statistics.mean(aps):.3f}")
    return (
        f"| {label} | {len(results)} | {ms([r.box.map50 for r in results])} | {ms([r.box.map for r in results])} | "
        + " | ".join(per_class)
        + " |"
    )


def few_shot_table(model: str, data: str, shots=(1, 5), draws: int = 3, imgsz: int = 640, **val_args) -> str:
    """The Markdown table of the module docstring."""
    from ultralytics import YOLO
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import is_open_vocabulary, set_classes
    from dsmoe_yolo.text.embed import resolve_prompts

    if not is_open_vocabulary(YOLO(model).model):
        raise SystemExit(f"{model} is not an open-vocabulary DS-MoE model (dsmoe-ov-*.yaml): it takes no prompts")
    info = check_det_dataset(data)
    names = ordered_names(info["names"])
    described, _ = resolve_prompts(info, names, LOGGER.info)
    train = sorted(p for p in Path(info["train"]).rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)

    def val(visual=None, text=True):
        m = YOLO(model)
        if visual is None:
            set_classes(m, names, prompts=described)
        elif text:
            set_classes(m, names, prompts=described, visual=visual, imgsz=imgsz)
        else:  # boxes only: {name: example boxes}
            set_classes(m, visual, imgsz=imgsz)
        return m.val(data=data, imgsz=imgsz, plots=False, verbose=False, **val_args)

    header = ["prompts", "draws", "mAP50", "mAP50-95", *(f"AP50 {c}" for c in names)]
    rows = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1), _row("text", [val()])]
    for k in shots:
        drawn = [examples(train, len(names), k, seed) for seed in range(draws)]
        visual = [{names[c]: [{"image": str(p), "boxes": b} for p, b in ex] for c, ex in d.items()} for d in drawn]
        if any(not entries for v in visual for entries in v.values()):
            raise SystemExit(f"{data}: a class has no train image to draw {k} example(s) from")
        rows.append(_row(f"visual {k}-shot", [val(v, text=False) for v in visual]))
        rows.append(_row(f"both {k}-shot", [val(v) for v in visual]))
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    def table(model, data, shots="1,5", draws=3, imgsz=640, **val_args):
        ks = tuple(int(k) for k in str(shots).split(","))
        return few_shot_table(model, data, ks, int(draws), int(imgsz), **val_args)

    table_main(argv, table)


if __name__ == "__main__":
    main(sys.argv[1:])
