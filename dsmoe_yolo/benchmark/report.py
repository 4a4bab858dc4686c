"""Write the benchmark's tables: ``benchmark.md`` (per model, mean ± std over seeds), ``benchmark.csv`` (per run) and
``per_class_ap.csv`` (per run and class)."""

from __future__ import annotations

import csv
import shlex
from pathlib import Path
from typing import Any

from dsmoe_yolo.benchmark.aggregate import per_class_means
from dsmoe_yolo.benchmark.onnx_latency import OPSET, ort_version
from dsmoe_yolo.benchmark.settings import model_label
from dsmoe_yolo.timing import WARMUP

__all__ = (
    "COLUMNS",
    "RUN_COLUMNS",
    "command_line",
    "threads_text",
    "write_outputs",
    "main_table",
    "metrics_table",
    "per_class_table",
)

# (row key, header) of the per-model table in benchmark.md, in order.
COLUMNS = (
    ("model", "model"),
    ("params_M", "params M"),
    ("GFLOPs", "GFLOPs"),
    ("GFLOPs_thop", "GFLOPs (thop)"),
    ("latency_torch_ms", "latency PyTorch ms"),
    ("latency_ort_ms", "latency ORT ms"),
    ("mAP50", "mAP50"),
    ("mAP50-95", "mAP50-95"),
    ("P", "P"),
    ("R", "R"),
    ("seeds", "seeds"),
    ("epochs", "epochs"),
    ("s_per_epoch", "s/epoch"),
    ("status", "status"),
)
# (row key, header) of benchmark.csv: one row per model and seed (params, GFLOPs and latency repeat the model's).
RUN_COLUMNS = (
    *COLUMNS[:1],
    ("seed", "seed"),
    *(c for c in COLUMNS[1:] if c[0] != "seeds"),
    ("dir", "run dir"),
)
_DIGITS = {
    "params_M": 2,
    "GFLOPs": 3,
    "GFLOPs_thop": 3,
    "latency_torch_ms": 1,
    "latency_ort_ms": 1,
    "epochs": 0,
    "s_per_epoch": 1,
}
_TEXT = ("model", "status", "dir")


def _number(value: float, key: str) -> str:
    return f"{value:.{_DIGITS.get(key, 3)}f}"


def _cell(row: dict, key: str) -> str:
    """A Markdown cell: numbers rounded (``mean ± std`` where a std exists), lists comma-joined, missing as ``-``."""
    value = row.get(key)
    if value is None:
        return "-"
    if key == "model":
        value = model_label(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        std = row.get(f"{key}_std")
        if isinstance(value, int) and std is None:
            return str(value)
        text = _number(float(value), key)
        return f"{text} ± {_number(std, key)}" if std is not None else text
    return str(value).replace("|", "\\|")


def _markdown_table(headers: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _table(rows: list[dict], columns: tuple) -> str:
    align = ["l" if k in _TEXT else "r" for k, _ in columns]
    return _markdown_table([h for _, h in columns], [[_cell(r, k) for k, _ in columns] for r in rows], align)


def main_table(rows: list[dict]) -> str:
    """The per-model comparison table in Markdown."""
    return _table(rows, COLUMNS)


def metrics_table(rows: list[dict]) -> str:
    """The accuracy columns of the per-model table (model, seeds, mAP50, mAP50-95, P, R, epochs) in Markdown."""
    keep = ("model", "seeds", "mAP50", "mAP50-95", "P", "R", "epochs")
    return _table(rows, tuple(c for c in COLUMNS if c[0] in keep))


def _runs_table(runs: list[dict]) -> str:
    keep = ("model", "seed", "mAP50", "mAP50-95", "P", "R", "epochs", "s_per_epoch", "status")
    return _table(runs, tuple(c for c in RUN_COLUMNS if c[0] in keep))


def _class_names(data: dict) -> list[str]:
    """Class names of the dataset, in index order."""
    names = data.get("names", {})
    return [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def per_class_table(models: list[str], names: list[str], per_class: list[dict]) -> str:
    """Per-class AP50-95, mean over seeds: one row per class, one column per model (``-`` where not evaluated)."""
    ap = per_class_means(per_class)
    rows = [[n.replace("|", "\\|")] + [f"{ap[(m, n)][0]:.3f}" if (m, n) in ap else "-" for m in models] for n in names]
    return _markdown_table(["class", *map(model_label, models)], rows, ["l"] + ["r"] * len(models))


def command_line(kwargs: dict) -> str:
    """The ``dsmoe benchmark`` command line for ``kwargs`` (None values left out, lists comma-joined)."""
    parts = ["dsmoe", "benchmark"]
    for key, value in kwargs.items():
        if value is None:
            continue
        value = ",".join(str(v) for v in value) if isinstance(value, list) else value
        parts.append(shlex.quote(f"{key}={value}"))
    return " ".join(parts)


def threads_text(n: int) -> str:
    """``1 thread`` / ``2 threads``."""
    return f"{n} thread{'' if n == 1 else 's'}"


def _settings_line(cfg: dict, threads: int) -> str:
    """The exact settings every model shared, in one line."""
    import torch

    train = ", ".join(f"{k}={v}" for k, v in cfg["train"].items())
    seeds = ",".join(str(s) for s in cfg["seeds"])
    imgsz = cfg["train"]["imgsz"]
    frozen = "; ".join(f"{model_label(m)}: rows {rows}" for m, rows in cfg.get("frozen", {}).items() if rows)
    return (
        f"Settings (identical for every model): {train}, seed={seeds} (one run per seed), deterministic=True. "
        + (
            f"Class text frozen while training (freeze_text=True; Ultralytics freeze= of the ClassText rows, {frozen}). "
            if frozen
            else ""
        )
        + f"Latency: CPU, float32, batch 1, 1x3x{imgsz}x{imgsz}, median of {cfg['latency_runs']} runs after {WARMUP} "
        f"warm-ups, {threads_text(threads)} (torch {torch.__version__}, onnxruntime {ort_version()}, "
        f"ONNX opset {OPSET})."
    )


def _csv_value(value: Any) -> Any:
    """A CSV cell: floats rounded to 6 decimals, missing values empty."""
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def _write_csv(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts keyed by ``fieldnames``) to a CSV file."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(v) for k, v in r.items()})


def write_outputs(
    run_dir: Path,
    rows: list[dict],
    runs: list[dict],
    per_class: list[dict],
    data: dict,
    cfg: dict,
    threads: int,
    chart: Path | None,
) -> dict:
    """Write benchmark.md, benchmark.csv and per_class_ap.csv; return their paths and the main table."""
    models = [r["model"] for r in rows]
    main = main_table(rows)
    measured = {r["model"]: r.get("seed") for r in rows}
    note = (
        "mAP50, mAP50-95, P, R (val split, best.pt), epochs trained and wall s/epoch (results.csv; the run's median "
        "epoch, so a paused or interrupted epoch does not count): mean ± sample standard deviation over the seeds "
        "listed (one value where one seed). Params, GFLOPs and latency are per "
        "model, measured once on one seed's best.pt ("
        + ", ".join(f"{m}: seed {s}" for m, s in measured.items() if s is not None)
        + ")."
    )
    warnings = [f"{r['model']}: {r['latency_warning']}" for r in rows if r.get("latency_warning")]
    if warnings:
        note += "\n\n**Latency measured on a busy CPU**: " + "; ".join(warnings) + "."
    chart_md = f"![validation mAP50-95 per epoch]({chart.name})\n\n" if chart else ""
    md = run_dir / "benchmark.md"
    md.write_text(
        f"# DS-MoE benchmark\n\n{main}\n\n{note}\n\n"
        f"## Per-class AP50-95 (val, mean over seeds)\n\n{per_class_table(models, _class_names(data), per_class)}\n\n"
        f"## Runs\n\n{_runs_table(runs)}\n\n{chart_md}"
        f"{_settings_line(cfg, threads)}\n\nReproduce (re-running it skips finished runs and resumes interrupted "
        f"ones): `{cfg['command']}`\n",
        encoding="utf-8",
    )
    by_model = {r["model"]: r for r in rows}
    per_run = [{**{k: by_model[r["model"]].get(k) for k, _ in COLUMNS[1:6]}, **r} for r in runs]
    main_csv = run_dir / "benchmark.csv"
    _write_csv(main_csv, [h for _, h in RUN_COLUMNS], [{h: r.get(k) for k, h in RUN_COLUMNS} for r in per_run])
    class_csv = run_dir / "per_class_ap.csv"
    _write_csv(class_csv, ["model", "seed", "class_id", "class", "AP50", "AP50-95"], per_class)
    return {"markdown": md, "csv": main_csv, "per_class_csv": class_csv, "table": main}
