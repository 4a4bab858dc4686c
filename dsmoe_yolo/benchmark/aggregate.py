"""Combine per-seed results into per-model rows: mean and sample standard deviation over the seeds that succeeded."""

from __future__ import annotations

import statistics

__all__ = ("SEED_METRICS", "mean_std", "model_rows", "per_class_means", "model_status")

# Per-run values averaged over seeds (``epochs``: epochs trained, fewer after early stopping; ``s_per_epoch``: median
# wall seconds per epoch from results.csv).
SEED_METRICS = ("mAP50", "mAP50-95", "P", "R", "epochs", "s_per_epoch")


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """``(mean, sample std)``: ``(None, None)`` for no value, std None for one value."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def model_status(runs: list[dict], measure_error: str | None) -> str:
    """``ok``; ``failed: ...`` (no seed succeeded, or a per-model measurement failed); else ``k of n seeds ok; ...``."""
    failed = [r for r in runs if r["status"] != "ok"]
    if not failed:
        return f"failed: {measure_error}" if measure_error else "ok"
    if len(failed) == len(runs):
        return failed[0]["status"] if len(runs) == 1 else f"{failed[0]['status']} (seed {failed[0]['seed']}, all seeds)"
    first = failed[0]
    note = f"{len(runs) - len(failed)} of {len(runs)} seeds ok; seed {first['seed']} {first['status']}"
    return f"failed: {measure_error}; {note}" if measure_error else note


def model_rows(models: list[str], runs: list[dict], measured: dict[str, dict]) -> list[dict]:
    """One row per model: ``SEED_METRICS`` as mean (key) and std (``key_std``) over its successful seeds, the
    per-model measurements (``measured[model]``: params, GFLOPs, latencies, ``seed`` measured, ``error``), ``seeds``
    (successful seeds) and ``status``."""
    out = []
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        ok = [r for r in mine if r["status"] == "ok"]
        extra = dict(measured.get(model, {}))
        error = extra.pop("error", None)
        row = {"model": model, "seeds": [r["seed"] for r in ok], **extra}
        for key in SEED_METRICS:
            row[key], row[f"{key}_std"] = mean_std([r.get(key) for r in ok])
        row["status"] = model_status(mine, error)
        out.append(row)
    return out


def per_class_means(per_class: list[dict]) -> dict[tuple[str, str], tuple[float, float | None, int]]:
    """``{(model, class): (mean AP50-95, sample std or None, number of seeds)}`` from per-seed per-class rows."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in per_class:
        groups.setdefault((r["model"], r["class"]), []).append(float(r["AP50-95"]))
    return {k: (*mean_std(v), len(v)) for k, v in groups.items()}
