"""Does the text decide? Validate one open-vocabulary checkpoint with other class texts, no retraining.

    python examples/prompt_swap.py model=best.pt data=/path/to/neu-det/data.yaml imgsz=224

Rows (same weights, same val split; only the class prompts differ, set with the public ``prompts=`` of ``val``):

- ``trained``: the descriptions the model was trained with (kept in the checkpoint);
- ``templates``: one class-name template sentence per class ("a <name> defect on an industrial surface");
- ``rotated``: the trained descriptions rotated by one class (class i gets class i+1's), names unchanged;
- ``names``: the bare class names as the only text.

On an open-vocabulary model the class score is the similarity with the class text, so ``rotated`` should collapse
(each class now looks for another class's defect); how far ``templates`` and ``names`` fall says how much the
descriptions carry beyond the word. Prints a Markdown table; ``out=file.md`` also writes it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def variants(names: list[str], trained: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """The prompt tables of each row, for classes ``names`` in index order."""
    from dsmoe_yolo.text.embed import template_prompts

    n = len(names)
    return {
        "trained": {c: trained[c] for c in names},
        "templates": template_prompts(names),
        "rotated": {names[i]: trained[names[(i + 1) % n]] for i in range(n)},
        "names": {c: [c.replace("_", " ").replace("-", " ")] for c in names},
    }


def swap_table(model: str, data: str, **val_args) -> str:
    """Validate ``model`` on ``data`` under each prompt variant; return the Markdown table."""
    from ultralytics import YOLO

    from dsmoe_yolo.text.binding import class_texts, is_open_vocabulary

    probe = YOLO(model)
    if not is_open_vocabulary(probe.model):
        raise SystemExit(
            f"{model} is not an open-vocabulary DS-MoE model (dsmoe-ov-*.yaml): its text cannot be swapped"
        )
    names = list(probe.names.values())
    trained = class_texts(probe.model)[0].text_meta.get("prompts")
    if not trained:
        from ultralytics.data.utils import check_det_dataset
        from ultralytics.utils import LOGGER

        from dsmoe_yolo.text.embed import resolve_prompts

        trained, _ = resolve_prompts(check_det_dataset(data), names, LOGGER.info)  # older checkpoints: as at training
    rows = ["| prompts | mAP50 | mAP50-95 | P | R |", "|---|---:|---:|---:|---:|"]
    for name, table in variants(names, trained).items():
        m = YOLO(model).val(data=data, prompts=table, plots=False, verbose=False, **val_args)
        p, r, ap50, ap = m.box.mean_results()
        rows.append(f"| {name} | {ap50:.3f} | {ap:.3f} | {p:.3f} | {r:.3f} |")
    return "\n".join(rows)


def table_main(argv: list[str], make_table) -> None:
    """Shared ``main`` of the table scripts: ``model= data= [out=file.md] key=value...`` -> ``make_table(model, data,
    **values)`` printed (and written to ``out``); the other values are Ultralytics val arguments."""
    args = dict(a.split("=", 1) for a in argv)
    out = args.pop("out", None)
    model, data = args.pop("model"), args.pop("data")
    from ultralytics.cfg import smart_value

    table = make_table(model, data, **{k: smart_value(v) for k, v in args.items()})
    print(table)
    if out:
        Path(out).write_text(table + "\n")


def main(argv: list[str]) -> None:
    table_main(argv, swap_table)


if __name__ == "__main__":
    main(sys.argv[1:])
