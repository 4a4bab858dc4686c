"""k labelled images of a class the models never saw: visual prompt vs text fine-tune vs YOLOv8n with a new row.

    python examples/held_out_k_shot.py data=../shared/data/neu-det/data.yaml held=patches \\
        model=campaign/neu-det-no-patches/dsmoe-ov-lite-yolov8n/weights/best.pt \\
        yolo=campaign/neu-det-no-patches/yolov8n/weights/best.pt shots=1,5,10 seeds=0 replay=48 epochs=30 \\
        imgsz=224 project=campaign/k-shot-patches out=k-shot-patches.md

Both checkpoints were trained on ``data`` without any image that shows ``held`` (``examples/leave_class_out.py``):
``model`` an open-vocabulary DS-MoE model, ``yolo`` a closed-set one (YOLOv8n) with a row per trained class. Per seed,
the ``train`` images showing ``held`` are shuffled once and the first k taken (so 1 of 5 of 10), with ``replay``
images of the other classes (drawn once per seed, the same for every k and model) against forgetting; that set, in
the full dataset's class numbering, is what the fine-tuned rows train on (``epochs``, no warm-up, ``val=False``).
Every row is validated on the full ``val`` split with all classes:

- ``text, zero-shot``: ``model`` under the dataset's class descriptions (k = 0);
- ``visual k``: ``model``, no training; ``held`` prompted by the boxes of the k images only, the others by their text;
  on a model with a trained visual path (``PromptDetect(visual > 0)``) the boxes are projected, and ``visual k,
  pooled`` / ``text + visual k, pooled`` give the same rows with the projection skipped (the untrained pooled mean);
- ``text + visual k``: ``model``, no training; ``held`` by its description and the boxes;
- ``text fine-tune k``: ``model`` fine-tuned on the set (every class by its description);
- ``YOLOv8n new row k``: ``yolo`` given a row for ``held`` (the trained rows kept, ``binding.resize_head``), fine-tuned
  on the same set; ``YOLOv8n, no row`` (k = 0) is its score before (``held`` AP 0 by construction).

``finetune=False`` leaves out the fine-tuned rows (the no-training rows take minutes, the fine-tunes hours). With
``model=`` left out (or empty) only the YOLOv8n rows are made: a closed-set start added to a table made before.

Columns: ``held``'s AP50 and AP50-95, the other classes' mean AP50 (forgetting: read against the k = 0 rows) and
mAP50, each mean ± std over the seeds. Finished fine-tunes are reused when the script runs again.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import yaml

from dsmoe_yolo.names import ordered_names

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_swap import table_main  # noqa: E402
from visual_prompt_check import _labels  # noqa: E402


def draw(train: list[Path], held: int, replay: int, seed: int) -> tuple[list[Path], list[Path]]:
    """``(held_images, replay_images)``: every train image showing class ``held`` in a seeded order, and ``replay``
    seeded images showing no ``held`` box."""
    rng = random.Random(seed)
    labelled = [(p, {c for c, _ in _labels(p)}) for p in train]
    shows = [p for p, classes in labelled if held in classes]
    rest = [p for p, classes in labelled if held not in classes]
    rng.shuffle(shows)
    return shows, rng.sample(rest, min(replay, len(rest)))


def write_set(folder: Path, images: list[Path], info: dict) -> Path:
    """A data YAML training on ``images`` (a list file: their labels are found beside them) and validating on
    ``info``'s val split, with ``info``'s class names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("".join(f"{p}\n" for p in images))
    spec = {"train": str(folder / "train.txt"), "val": str(info["val"]), "names": dict(info["names"])}
    (folder / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "data.yaml"


def with_new_row(checkpoint: str, names: list[str], out: Path) -> Path:
    """``checkpoint`` (a closed-set model) saved to ``out`` with one class row per name: known rows kept, new ones
    initialised as Ultralytics initialises them (``binding.resize_head``)."""
    from ultralytics import YOLO

    from dsmoe_yolo.text.binding import resize_head

    model = YOLO(checkpoint)
    net = model.model
    resize_head(net.model[-1], [str(n) for n in net.names.values()], names)
    net.names, net.yaml["nc"] = dict(enumerate(names)), len(names)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def fine_tune(start: str | Path, data: Path, run: Path, seed: int, epochs: int, imgsz: int, batch: int) -> Path:
    """``start`` fine-tuned on ``data`` into ``run``; its final weights (a finished run is reused)."""
    from ultralytics import YOLO

    from dsmoe_yolo.benchmark.runs import run_state

    if run_state(run)[0] != "done":
        YOLO(str(start)).train(
            data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed, deterministic=True, val=False,
            warmup_epochs=0, project=str(run.parent), name=run.name, exist_ok=True, plots=False, verbose=False,
        )  # fmt: skip
    return run / "weights" / "last.pt"


def _row(label: str, results: list, held: int) -> str:
    """One Markdown row: held-out AP50 / AP50-95, other classes' mean AP50, mAP50 (mean ± std over ``results``)."""

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    def ap(r, attr: str) -> dict[int, float]:
        return dict(zip(r.box.ap_class_index.tolist(), getattr(r.box, attr).tolist()))

    n = len(results[0].names)
    held50 = [ap(r, "ap50").get(held, 0.0) for r in results]
    held5095 = [ap(r, "ap").get(held, 0.0) for r in results]
    others = [statistics.mean(ap(r, "ap50").get(i, 0.0) for i in range(n) if i != held) for r in results]
    # ultralytics' map50 averages only classes with val boxes, which here are all of them
    return f"| {label} | {ms(held50)} | {ms(held5095)} | {ms(others)} | {ms([r.box.map50 for r in results])} |"


def k_shot_table(
    data: str, held: str, ov: str | None, yolo: str | None = None, shots=(1, 5, 10), seeds=(0,), replay: int = 48,
    epochs: int = 30, imgsz: int = 224, batch: int = 16, project: str = "k-shot", finetune: bool = True, **val_args,
) -> str:  # fmt: skip
    """The Markdown table of the module docstring."""
    from ultralytics import YOLO
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import is_open_vocabulary, set_classes
    from dsmoe_yolo.text.embed import resolve_prompts

    if not (ov or yolo):
        raise SystemExit("give model= (an open-vocabulary DS-MoE checkpoint) and/or yolo= (a closed-set one)")
    starts = {start: YOLO(start) for start in filter(None, (ov, yolo))}  # each checkpoint loaded once for the checks
    if ov and not is_open_vocabulary(starts[ov].model):
        raise SystemExit(f"{ov} is not an open-vocabulary DS-MoE model (dsmoe-ov-*.yaml)")
    info = check_det_dataset(data)
    names = ordered_names(info["names"])
    if held not in names:
        raise SystemExit(f"held={held!r} is not a class of {data} ({names})")
    trained = {start: sorted(map(str, model.names.values())) for start, model in starts.items()}
    for start, classes in trained.items():
        if held in classes:
            raise SystemExit(
                f"{start} was trained on {held!r}: it is not held out (train it on leave_class_out.py's copy)"
            )
    h, project_dir = names.index(held), Path(project).expanduser().resolve()
    described, _ = resolve_prompts(info, names, LOGGER.info)
    train = sorted(p for p in Path(info["train"]).rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)
    draws = {s: draw(train, h, replay, s) for s in seeds}
    if min(len(shows) for shows, _ in draws.values()) < max(shots):
        raise SystemExit(f"{data}: fewer than {max(shots)} train images show {held!r}")

    def val(model, pooled: bool = False, **prompts):
        m = YOLO(str(model))
        if pooled:  # the untrained prototype: the trained visual path's projection skipped
            m.model.model[-1].visual_proj = None
        if prompts:
            set_classes(m, **prompts, imgsz=imgsz)
        return m.val(data=data, imgsz=imgsz, batch=batch, plots=False, verbose=False, **val_args)

    projected = bool(ov) and getattr(starts[ov].model.model[-1], "visual_proj", None) is not None

    text_only = {"names": names, "prompts": described}
    poolings = (False, True) if projected else ((False,) if ov else ())  # the no-training visual rows
    rows = [
        f"Held out: {held}; {ov or yolo} trained on {trained[ov or yolo]}. Fine-tunes: k images of {held} + {replay} "
        f"replay images, {epochs} epochs at {imgsz} px; seeds {list(seeds)}.",
        "",
        f"| prompts / start | AP50 {held} | AP50-95 {held} | AP50 other classes | mAP50 |",
        "|---|---:|---:|---:|---:|",
    ]
    if ov:
        rows.append(_row("text, zero-shot (k = 0)", [val(ov, **text_only)], h))
    if yolo:
        rows.append(
            _row("YOLOv8n, no row (k = 0)", [val(with_new_row(yolo, names, project_dir / "yolov8n-new-row.pt"))], h)
        )
    for k in shots:
        got = {label: [] for label in ("visual", "both", "visual-pooled", "both-pooled", "text-ft", "yolo-ft")}
        for s, (shows, rest) in draws.items():
            boxes = [{"image": str(p), "boxes": [b for c, b in _labels(p) if c == h]} for p in shows[:k]]
            only_boxes = {n: (None if n == held else described[n]) for n in names}
            for pooled in poolings:
                tag = "-pooled" if pooled else ""
                got["visual" + tag].append(val(ov, pooled, names=only_boxes, visual={held: boxes}))
                got["both" + tag].append(val(ov, pooled, **text_only, visual={held: boxes}))
            if not finetune:
                continue
            subset = write_set(project_dir / f"k{k}-seed{s}", shows[:k] + rest, info)
            if ov:
                run = project_dir / f"ov-k{k}-seed{s}"
                got["text-ft"].append(val(fine_tune(ov, subset, run, s, epochs, imgsz, batch)))
            if yolo:
                start = project_dir / "yolov8n-new-row.pt"
                run = project_dir / f"yolov8n-k{k}-seed{s}"
                got["yolo-ft"].append(val(fine_tune(start, subset, run, s, epochs, imgsz, batch)))
        if ov:
            rows.append(_row(f"visual {k}-shot (no training)", got["visual"], h))
            rows.append(_row(f"text + visual {k}-shot (no training)", got["both"], h))
        if projected:
            rows.append(_row(f"visual {k}-shot, pooled (no training)", got["visual-pooled"], h))
            rows.append(_row(f"text + visual {k}-shot, pooled (no training)", got["both-pooled"], h))
        if ov and finetune:
            rows.append(_row(f"text fine-tune {k}-shot", got["text-ft"], h))
        if yolo and finetune:
            rows.append(_row(f"YOLOv8n new row, fine-tune {k}-shot", got["yolo-ft"], h))
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    def table(
        ov, data, held, yolo=None, shots="1,5,10", seeds="0", replay=48, epochs=30, imgsz=224, batch=16,
        finetune=True, **kw,
    ):  # fmt: skip
        # key=value parsing turns "1,5,10" into a tuple and "0" into an int
        ks, ss = (
            tuple(int(v) for v in (x if isinstance(x, (tuple, list)) else str(x).split(","))) for x in (shots, seeds)
        )
        return k_shot_table(
            data, held, ov or None, yolo, ks, ss, int(replay), int(epochs), int(imgsz), int(batch),
            finetune=bool(finetune), **kw,
        )  # fmt: skip

    model_given = any(a.startswith("model=") for a in argv)
    table_main(argv if model_given else [*argv, "model="], table)


if __name__ == "__main__":
    main(sys.argv[1:])
