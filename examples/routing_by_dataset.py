"""Routing per dataset: does the gate send PCB, commutator, road and steel images to different experts?

    python examples/routing_by_dataset.py model=union-pretrained.pt data=a.yaml,b.yaml,c.yaml imgsz=256 out=routing.md

Validates ``model`` on each dataset (an open-vocabulary model under that dataset's own class prompts) with the routing
report on (``dsmoe_yolo.routing_report``: the k experts each image is sent to, per MoE layer, in that run's
``expert_usage.csv``), then tabulates per dataset and MoE layer: how many experts any image used, the busiest experts
with their share of the dataset's images (100 % for every one of k experts: all images went to the same k). A last table
gives, per pair of datasets, the overlap (Jaccard) of the experts they use. Prints Markdown; ``out=file.md`` writes it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_swap import table_main  # noqa: E402


def usage(csv_path: Path) -> dict[str, dict]:
    """Per MoE layer: ``{"images": entries, "load": {expert: entries routed to it}}`` from one ``expert_usage.csv``.

    The file has one row per (layer, class): an image counts once under each class it shows (``background`` if none),
    so the sums are over class-image entries; an expert's share is the fraction of entries sent to it (the shares of
    one layer add up to k).
    """
    layers: dict[str, dict] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            layer = layers.setdefault(row["layer"], {"images": 0, "load": {}})
            layer["images"] += int(row["images"])
            for key, value in row.items():
                if key.startswith("e") and "_" in key:
                    layer["load"][key] = layer["load"].get(key, 0) + int(value)
    return layers


def routing_tables(model: str, datasets: list[str], top: int = 6, **val_args) -> str:
    """Validate ``model`` on each dataset and return the Markdown tables."""
    from ultralytics import YOLO

    per_dataset = {}
    for data in datasets:
        m = YOLO(model).val(data=data, plots=False, verbose=False, **val_args)
        per_dataset[Path(data).parent.name] = (usage(Path(m.save_dir) / "expert_usage.csv"), m.box.map50)
    lines = [
        "| dataset | val mAP50 | MoE layer | experts used | busiest experts (share of class-image entries) |",
        "|---|---:|---|---:|---|",
    ]
    used: dict[tuple[str, str], set[str]] = {}
    for name, (layers, map50) in per_dataset.items():
        for layer, info in layers.items():
            load = {e: n for e, n in info["load"].items() if n}
            total = max(1, info["images"])
            used[(name, layer)] = set(load)
            busiest = sorted(load.items(), key=lambda kv: -kv[1])[:top]
            text = ", ".join(f"{e} {n / total:.0%}" for e, n in busiest)
            lines.append(f"| {name} | {map50:.3f} | {layer} | {len(load)} | {text} |")
    names = list(per_dataset)
    layer_ids = sorted({layer for _, layer in used})
    lines += [
        "",
        "| datasets | " + " | ".join(f"layer {x} overlap" for x in layer_ids) + " |",
        "|---|" + "---:|" * len(layer_ids),
    ]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cells = []
            for x in layer_ids:
                sa, sb = used.get((a, x), set()), used.get((b, x), set())
                cells.append(f"{len(sa & sb) / max(1, len(sa | sb)):.2f}")
            lines.append(f"| {a} / {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    table_main(argv, lambda model, data, **kw: routing_tables(model, data.split(","), **kw))


if __name__ == "__main__":
    main(sys.argv[1:])
