"""``benchmark.png``: validation mAP50-95 per epoch of every run, one line per model and seed, one colour per model."""

from __future__ import annotations

from pathlib import Path

from dsmoe_yolo.benchmark.settings import model_label

__all__ = ("MAP_COLUMN", "plot_runs")

MAP_COLUMN = "metrics/mAP50-95(B)"
_STYLES = ("-", "--", ":", "-.")


def plot_runs(curves: list[tuple[str, int, list[dict]]], out: Path) -> Path | None:
    """Draw ``[(model, seed, results.csv rows)]`` into ``out``; None (nothing written) when no run has an epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = [(m, s, [r for r in rows if MAP_COLUMN in r]) for m, s, rows in curves]
    curves = [c for c in curves if c[2]]
    if not curves:
        return None
    models = list(dict.fromkeys(m for m, _, _ in curves))
    seeds = list(dict.fromkeys(s for _, s, _ in curves))
    fig = Figure(figsize=(8, 5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(models))]
    for model, seed, rows in curves:
        ax.plot(
            [r["epoch"] for r in rows],
            [r[MAP_COLUMN] for r in rows],
            color=colours[models.index(model)],
            linestyle=_STYLES[seeds.index(seed) % len(_STYLES)],
            linewidth=1.4,
            label=f"{model_label(model)} seed {seed}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP50-95")
    ax.set_title("Validation mAP50-95 per epoch (one line per model and seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return out
