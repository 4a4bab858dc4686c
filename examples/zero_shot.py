"""Zero-shot: an open-vocabulary checkpoint validated on a dataset whose classes it never saw, from text alone.

    python examples/zero_shot.py model=union-pretrained.pt data=/path/to/neu-det/data.yaml imgsz=224 out=zero-shot.md

The model's classes are replaced by the dataset's (``val`` does this for open-vocabulary DS-MoE models), each under
four prompt tables (``prompt_swap.variants``): ``described`` (the dataset's prompt file in ``cfg/prompts``, found by
class names, as training would use), ``templates``, ``rotated`` (class i gets class i+1's descriptions) and ``names``.
If the words carry anything, ``described`` must beat ``rotated``; a detector that only finds "some defect" scores
the same under all four. A last row scores the ``described`` boxes class-agnostically (``single_cls=True``):
does it find the defects at all, whatever it calls them? Prints mAP50, mAP50-95 and each class's AP50 per row; ``out=file.md`` also writes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_swap import table_main, variants  # noqa: E402


def zero_shot_table(model: str, data: str, **val_args) -> str:
    """Validate ``model`` on ``data`` under each prompt variant of the data's classes; the Markdown table."""
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import is_open_vocabulary
    from dsmoe_yolo.text.embed import resolve_prompts

    probe = YOLO(model)
    if not is_open_vocabulary(probe.model):
        raise SystemExit(f"{model} is not an open-vocabulary DS-MoE model (dsmoe-ov-*.yaml): it has no unseen classes")
    dataset = check_det_dataset(data)
    names = [str(n) for n in dataset["names"].values()]
    seen = set(map(str, probe.names.values()))
    described, _ = resolve_prompts(dataset, names, LOGGER.info)
    header = ["prompts", "mAP50", "mAP50-95", *(f"AP50 {c}" for c in names)]
    rows = [
        f"Classes the model was trained on: {sorted(seen)}; asked for: {names} "
        f"({len(set(names) & seen)} of them seen).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for label, table in variants(names, described).items():
        m = YOLO(model).val(data=data, prompts=table, plots=False, verbose=False, **val_args)
        ap50 = dict(zip(m.box.ap_class_index.tolist(), m.box.ap50.tolist()))
        per_class = [f"{ap50.get(i, 0.0):.3f}" for i in range(len(names))]
        label = "described" if label == "trained" else label
        rows.append(f"| {label} | {m.box.map50:.3f} | {m.box.map:.3f} | " + " | ".join(per_class) + " |")
    m = YOLO(model).val(data=data, prompts=described, single_cls=True, plots=False, verbose=False, **val_args)
    rows.append(f"| described, class-agnostic (single_cls) | {m.box.map50:.3f} | {m.box.map:.3f} |" + " |" * len(names))
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    table_main(argv, zero_shot_table)


if __name__ == "__main__":
    main(sys.argv[1:])
