"""How alike an open-vocabulary model's class-text rows are, before and after fine-tuning on a target's classes.

    python examples/class_text_similarity.py start=union.pt models=run-a/weights/last.pt,run-b/weights/last.pt \
        out=similarity.md

For each fine-tuned checkpoint in ``models``: the mean pairwise cosine between its classes' raw frozen text embeddings
(``ClassText.embeddings``), between the refined rows ``T`` the head scores with as ``start`` makes them for the same
prompts (before fine-tuning), and as the checkpoint makes them (after); and the most alike pair after. Rows near each
other (cosine toward 1) give the contrastive head nearly the same classifier for those classes: it can find a defect
but hardly say which class it is. Prints Markdown; ``out=file.md`` writes it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def mean_pairwise_cosine(rows: torch.Tensor) -> float:
    """Mean cosine over the distinct pairs of rows of (n, d) ``rows`` (n >= 2)."""
    if len(rows) < 2:
        raise ValueError(f"need at least two class rows to compare, got {len(rows)}")
    from dsmoe_yolo.nn.text import pair_cosines

    return float(pair_cosines(rows).mean())


def class_text(model: str):
    """The ``ClassText`` layer of an open-vocabulary checkpoint, in float32 eval mode."""
    from ultralytics import YOLO

    from dsmoe_yolo.nn.text import ClassText

    found = [m for m in YOLO(model).model.float().eval().modules() if isinstance(m, ClassText)]
    if not found:
        raise ValueError(f"{model} has no ClassText layer: class-text similarity needs an open-vocabulary model")
    return found[0]


@torch.no_grad()
def similarity_row(start_text, tuned: str) -> dict:
    """Raw / start / tuned mean pairwise cosines and the most alike pair of ``tuned``'s classes."""
    after = class_text(tuned)
    before = copy.deepcopy(start_text)
    before.bind(after.embeddings.float().clone(), dict(after.text_meta))
    rows = F.normalize(after(None), dim=1)
    sim = rows @ rows.T - 2 * torch.eye(len(rows))
    i, j = divmod(int(sim.argmax()), len(rows))
    names = list(after.text_meta.get("names") or range(len(rows)))
    return {
        "model": tuned,
        "classes": len(rows),
        "raw": mean_pairwise_cosine(after.embeddings),
        "start": mean_pairwise_cosine(before(None)),
        "tuned": mean_pairwise_cosine(rows),
        "pair": f"{names[i]} / {names[j]} {float(sim[i, j]):.2f}",
    }


def run_label(model: str) -> str:
    """``<benchmark>/<run>`` for a training's ``.../<benchmark>/<run>/weights/<file>.pt``, else the path as given."""
    path = Path(model)
    return f"{path.parents[2].name}/{path.parents[1].name}" if path.parent.name == "weights" else model


def similarity_table(start: str, models: list[str]) -> str:
    """Markdown table: one row per fine-tuned checkpoint."""
    start_text = class_text(start)
    lines = [
        f"Mean pairwise cosine of the class rows (start: `{Path(start).parent.name}/{Path(start).name}`).",
        "",
        "| checkpoint | classes | raw text embeddings | refined rows, start | refined rows, fine-tuned | most alike pair |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for model in models:
        r = similarity_row(start_text, model)
        lines.append(
            f"| {run_label(r['model'])} | {r['classes']} | {r['raw']:.2f} | {r['start']:.2f} | {r['tuned']:.2f} | {r['pair']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    table = similarity_table(args["start"], [m for m in args["models"].split(",") if m])
    print(table)
    if args.get("out"):
        Path(args["out"]).write_text(table + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
