"""One chart of ``held_out_k_shot.py`` tables: the held-out class's AP50 against k labelled images of it.

    python examples/k_shot_chart.py out=k-shot.png \\
        panels=k-shot-neu-det-patches.md,k-shot-neu-det-patches-union.md+k-shot-neu-det-patches-union-yolov8n.md

One panel per comma-separated entry (files joined by ``+`` share a panel: a table made in two runs); in each, the
description fine-tune of the open-vocabulary model and YOLOv8n's new class row, mean ± std over the draws, k = 0 from
the no-training rows (the description alone; YOLOv8n before its new row). The panel is titled by the held-out class
and how many classes the start was trained on (5: NEU-DET's others, in-domain; 13: the union).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SERIES = {  # label in the chart: (row at k = 0, row prefix at k > 0)
    "OV, description fine-tuned": ("text, zero-shot (k = 0)", "text fine-tune "),
    "YOLOv8n, new class row": ("YOLOv8n, no row (k = 0)", "YOLOv8n new row, fine-tune "),
}


def _mean_std(cell: str) -> tuple[float, float]:
    """``'0.270 ± 0.120'`` -> (0.27, 0.12); a single number has std 0."""
    mean, _, std = cell.partition("±")
    return float(mean), float(std or 0)


def read_panel(paths: list[Path]) -> tuple[str, dict[str, list[tuple[int, float, float]]]]:
    """``(title, {series: [(k, AP50 mean, std)]})`` from one or more k-shot tables of the same held-out class."""
    title, series = "", {name: [] for name in SERIES}
    for path in paths:
        lines = path.read_text().splitlines()
        head = re.match(r"Held out: (\S+); .* trained on \[(.*?)\]", lines[0]) if lines else None
        if not head:
            raise SystemExit(f"{path}: not a held_out_k_shot.py table (no 'Held out: ...' first line)")
        held, trained = head.group(1), head.group(2).count(",") + 1
        title = title or f"{held} held out, start trained on {trained} classes"
        for line in lines:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            for name, (zero, prefix) in SERIES.items():
                if cells[0] == zero:
                    series[name].append((0, *_mean_std(cells[1])))
                elif cells[0].startswith(prefix) and cells[0].endswith("-shot"):
                    series[name].append((int(cells[0][len(prefix) : -len("-shot")]), *_mean_std(cells[1])))
    return title, {name: sorted(points) for name, points in series.items() if points}


def draw(panels: list[list[Path]], out: Path) -> Path:
    """Every panel, three to a row (shared AP50 axis), into ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).flatten()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, paths in zip(axes, panels):
        title, series = read_panel(paths)
        for i, (name, points) in enumerate(series.items()):
            k, mean, std = zip(*points)
            ax.errorbar(k, mean, yerr=std, marker="o", capsize=3, color=f"C{i}", label=name)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("labelled images of the class (k)")
        ax.grid(alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel("held-out class AP50\n(mean ± std of the draws)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    return out


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    if "panels" not in args:
        raise SystemExit("usage: python examples/k_shot_chart.py panels=a.md,b.md+c.md [out=k-shot.png]")
    panels = [[Path(p) for p in entry.split("+")] for entry in args["panels"].split(",")]
    print(draw(panels, Path(args.get("out", "k-shot.png"))))


if __name__ == "__main__":
    main(sys.argv[1:])
