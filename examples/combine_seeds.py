"""Combine the per-run rows of several ``dsmoe benchmark`` commands into one mean ± std table per model, e.g. a second
seed trained later (or on another machine) beside the first command's results:

    python examples/combine_seeds.py examples/results/deeppcb/benchmark.csv examples/results/deeppcb-seed1/benchmark.csv

Reads each ``benchmark.csv`` (one row per model and seed) and the ``per_class_ap.csv`` beside it, and prints the
accuracy columns of ``benchmark.md`` (mAP50, mAP50-95, P, R, epochs: mean ± sample std over the seeds, best.pt on the
val split, as each command measured them) and the per-class AP50-95 (mean over seeds). Params, GFLOPs and latency are
left out: each command timed its models under its own load, so they do not average. The same (model, seed) in two
files is an error, not a double count; a run whose status is not ``ok`` counts as failed, as in ``benchmark.md``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from dsmoe_yolo.benchmark.aggregate import model_rows
from dsmoe_yolo.benchmark.report import metrics_table, per_class_table

# benchmark.csv header -> the run key of dsmoe_yolo.benchmark.aggregate.SEED_METRICS
CSV_KEYS = {"mAP50": "mAP50", "mAP50-95": "mAP50-95", "P": "P", "R": "R", "epochs": "epochs", "s/epoch": "s_per_epoch"}


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def read_runs(tables: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """``(runs, per_class)`` from ``benchmark.csv`` files and the ``per_class_ap.csv`` beside each (when present)."""
    runs, per_class, seen = [], [], {}
    for table in map(Path, tables):
        if not table.is_file():
            raise SystemExit(f"combine_seeds: {table} not found; give the benchmark.csv files of dsmoe benchmark runs")
        for row in csv.DictReader(table.open(encoding="utf-8")):
            key = (row["model"], int(row["seed"]))
            if key in seen:
                raise SystemExit(f"combine_seeds: {key[0]} seed {key[1]} is in both {seen[key]} and {table}")
            seen[key] = table
            run = {"model": key[0], "seed": key[1], "status": row["status"]}
            runs.append(run | {k: _number(row.get(h, "")) for h, k in CSV_KEYS.items()})
        classes = table.with_name("per_class_ap.csv")
        if classes.is_file():
            per_class += list(csv.DictReader(classes.open(encoding="utf-8")))
    return runs, per_class


def combine(tables: list[str | Path]) -> str:
    """Markdown: the per-model accuracy table over all seeds of ``tables``, then the per-class AP50-95 table."""
    runs, per_class = read_runs(tables)
    models = list(dict.fromkeys(r["model"] for r in runs))
    names = list(dict.fromkeys(r["class"] for r in sorted(per_class, key=lambda r: int(r["class_id"]))))
    text = metrics_table(model_rows(models, runs, {})) + "\n"
    if per_class:
        text += "\nPer-class AP50-95 (mean over seeds):\n\n" + per_class_table(models, names, per_class) + "\n"
    return text


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(combine(sys.argv[1:]), end="")
