"""Routing you can see: which experts each class activates, recorded during ``yolo val`` (and each training epoch).

For every SparseMoE layer it counts, per image, the k experts the gate chose, and files them under each ground-truth
class present in the image (images without labels under ``background``). At the end of validation it writes to the
run folder:

- ``expert_usage.csv``: one row per (layer, class) with the number of that class's images routed to each expert;
- ``expert_usage.png``: a class x expert heat-map per MoE layer (row-normalised: share of the class's images);

and prints one line per layer: experts used, busiest and idlest expert, and the CV of the load.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dsmoe_yolo.names import ordered_names
from dsmoe_yolo.nn.base import pop_routing, set_routing_capture

__all__ = ("on_val_start", "on_val_batch_end", "on_val_end", "RoutingStats")


class RoutingStats:
    """Class x expert counts for one MoE layer.

    Args:
        names (list[str]): Class names; a final ``background`` row collects images without labels.
        n_experts (int): N.
        kinds (list[str]): Kind of each expert (local / global / cross).
    """

    def __init__(self, names: list[str], n_experts: int, kinds: list[str]):
        self.names = [*names, "background"]
        self.kinds = kinds
        self.counts = np.zeros((len(self.names), n_experts), dtype=np.int64)
        self.class_images = np.zeros(len(self.names), dtype=np.int64)
        self.load = np.zeros(n_experts, dtype=np.int64)
        self.images = 0

    def add(self, indices: np.ndarray, classes: list[np.ndarray]) -> None:
        """Add one batch: chosen experts (B, k) and each image's ground-truth class ids."""
        for chosen, cls in zip(indices, classes):
            rows = np.unique(cls.astype(int)) if len(cls) else np.array([len(self.names) - 1])
            for r in rows:
                self.counts[r, chosen] += 1
                self.class_images[r] += 1
            self.load[chosen] += 1
            self.images += 1

    def summary(self, layer: int, k: int) -> str:
        """One line: experts used, busiest and idlest expert, CV of the load."""
        share = self.load / max(self.load.sum(), 1)
        used = int((self.load > 0).sum())
        cv = float(self.load.std() / max(self.load.mean(), 1e-9))
        busy, idle = int(share.argmax()), int(share.argmin())
        return (
            f"DS-MoE routing, layer {layer} (top-{k} of {len(self.load)}, {self.images} images): {used}/{len(self.load)} "
            f"experts used, busiest e{busy} ({self.kinds[busy]}) {share[busy]:.1%}, idlest e{idle} {share[idle]:.1%}, load CV {cv:.2f}"
        )


_state: dict = {}


def on_val_start(validator) -> None:
    """Start logging routing decisions."""
    _state.clear()
    _state["stats"] = {}
    pop_routing()
    set_routing_capture(True)


def _batch_classes(validator, batch_size: int) -> list[np.ndarray] | None:
    dataset = getattr(validator.dataloader, "dataset", None)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    start = validator.batch_i * validator.dataloader.batch_size
    return [np.asarray(labels[i]["cls"]).reshape(-1) for i in range(start, min(start + batch_size, len(labels)))]


def on_val_batch_end(validator) -> None:
    """File this batch's routing under the classes of its images."""
    logged = pop_routing()
    if not logged:
        return
    names = (
        validator.names
        if isinstance(getattr(validator, "names", None), dict)
        else dict(enumerate(getattr(validator, "names", []) or []))
    )
    for module, batches in logged.items():
        indices = batches[-1].numpy()  # one forward per batch
        classes = _batch_classes(validator, len(indices))
        if classes is None or len(classes) != len(indices):
            continue
        key = getattr(module, "i", id(module))
        if key not in _state["stats"]:
            kinds = [getattr(e, "kind", "?") for e in module.experts]
            _state["stats"][key] = (
                RoutingStats(ordered_names(names), len(module.experts), kinds),
                module.top_k,
            )
        _state["stats"][key][0].add(indices, classes)


def on_val_end(validator) -> None:
    """Write expert_usage.csv / .png to the run folder and print one summary line per MoE layer."""
    set_routing_capture(False)
    stats = _state.get("stats") or {}
    if not stats:
        return
    from ultralytics.utils import LOGGER

    save_dir = Path(validator.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    with open(save_dir / "expert_usage.csv", "w", newline="", encoding="utf-8") as f:
        writer = None
        for layer, (s, _k) in sorted(stats.items(), key=lambda kv: str(kv[0])):
            if writer is None:
                writer = csv.writer(f)
                writer.writerow(["layer", "class", "images", *[f"e{e}_{kind}" for e, kind in enumerate(s.kinds)]])
            for name, images, row in zip(s.names, s.class_images, s.counts):
                writer.writerow([layer, name, int(images), *row.tolist()])
            writer.writerow([layer, "all", s.images, *s.load.tolist()])
    if getattr(validator.args, "plots", True):
        _plot(stats, save_dir / "expert_usage.png")
    for layer, (s, k) in sorted(stats.items(), key=lambda kv: str(kv[0])):
        LOGGER.info(s.summary(layer, k))
    LOGGER.info(f"DS-MoE routing report saved to {save_dir / 'expert_usage.csv'}")


def _plot(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(stats.items(), key=lambda kv: str(kv[0]))
    fig, axes = plt.subplots(
        len(layers),
        1,
        figsize=(
            max(8, 0.3 * layers[0][1][0].counts.shape[1] + 3),
            1 + 0.45 * len(layers[0][1][0].names) * len(layers),
        ),
        squeeze=False,
    )
    for ax, (layer, (s, k)) in zip(axes[:, 0], layers):
        share = s.counts / np.maximum(s.class_images[:, None], 1)
        im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(s.names)), s.names, fontsize=8)
        ax.set_xticks(range(len(s.kinds)), [f"{e}{kind[0]}" for e, kind in enumerate(s.kinds)], fontsize=6, rotation=90)
        ax.set_xlabel("expert (l=local, g=global, c=cross-modal)")
        ax.set_title(f"Expert usage, MoE layer {layer}: share of each class's images routed to each expert (top-{k})")
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
