"""The lite model's ablations on one dataset (the paper's Table 5 k sweep and the text, hyperbolic, MoE and loss
questions), as model and data variants of one recipe, trained with `dsmoe benchmark` (resumable, `jobs` at a time).

    python examples/ablations.py data=/path/to/neu-det/data.yaml out=campaign/ablations            # write, print
    python examples/ablations.py data=/path/to/neu-det/data.yaml out=campaign/ablations run=True   # and run
    python examples/ablations.py data=... out=... run=True only=dense,nohyp   # some variants (a session's worth)
    python examples/ablations.py out=campaign/ablations report=True      # one table of every variant, so far
    python examples/ablations.py data=... out=campaign/ov-text only=templates,shuffled \
        text_model=dsmoe-ov-lite-yolov8n.yaml run=True      # the text variants on another model (open vocabulary)

Writes under ``out``: ``models/`` (one YAML per model variant, from ``dsmoe-lite-yolov8.yaml`` at ``scale``),
``prompts/`` and ``data/`` (the data YAML with other class texts), then prints, or with ``run=True`` runs (``jobs``
at a time, default 2), one ``dsmoe benchmark`` command per variant into ``out/<variant>/``. Each command trains one
model and validates and times it as soon as it ends, so a campaign stopped half-way keeps every finished row; the
same command again skips finished runs and resumes interrupted ones. The text questions run first, then the model
variants in order of interest (the k sweep last).

``k5=<training folder>`` reuses a finished run of the shipped lite model with the same recipe and seed (e.g. the main
campaign's ``dsmoe-lite-yolov8n-seed0``) as the ``k5`` row instead of training the same model again: it is copied in
as ``k5/dsmoe-lite-k5-yolov8n-seed<seed>``, and ``dsmoe benchmark`` checks its recorded recipe like any other run.

Model variants (curated class descriptions): ``k1 k2 k5 k8 k32`` top-k of 32 experts (k5 is the shipped model),
``nohyp`` stage 5 replaced by a 1x1 Conv of the same width (no Poincare ball; the deformable conv's dilation then
reads a Euclidean norm), ``dense`` the sparse MoE replaced by one dense text-conditioned layer of the same width
(``PlainTextFusion``), ``qfocal`` the paper's QFocal + CIoU loss (``cls_scale`` 16, its default) instead of
Ultralytics' stock BCE loss, ``qfocal-cls8`` / ``qfocal-cls32`` the same with ``cls_scale`` 8 / 32.
Data variants (shipped model, k5): ``templates`` class-name templates instead of descriptions, ``shuffled`` the
curated descriptions rotated by one class (class i gets class i+1's), so the text no longer matches the class.
``text_model=<model YAML>`` trains the data variants on that model instead (e.g. the open-vocabulary lite-n); its
curated row is then that model's own run with the same recipe, outside this script.

``report=True`` gathers every variant into one Markdown table (printed, and written to ``out/ablations.md``): the
numbers of each finished command's ``benchmark.csv`` (best.pt on the val split, latency; also the one ``curated/``
command of the earlier layout), and for runs not in one yet their state (not started, or the epochs done and the best
validation mAP50-95 so far, from ``results.csv``).
"""

from __future__ import annotations

import copy
import csv
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "cfg" / "models" / "dsmoe-lite-yolov8.yaml"
TOP_K = (1, 2, 5, 8, 32)
DATA_VARIANTS = ("shuffled", "templates")  # the shipped model (k5) with other class texts
POLL_S = 5.0  # how often run_commands looks for an ended command
# the model variants (curated text), most telling first (a campaign stopped half-way still answers the main questions)
ORDER = ("dense", "nohyp", "qfocal", "k1", "k32", "k2", "k8", "qfocal-cls8", "qfocal-cls32", "k5")


def _rows(doc: dict, module: str) -> list[int]:
    return [i for i, row in enumerate(doc["head"]) if row[2] == module]


def model_variants(scale: str = "n") -> dict[str, dict]:
    """``{name: model YAML dict}`` of every model variant."""
    base = yaml.safe_load(BASE.read_text())
    out = {}
    for k in TOP_K:
        doc = copy.deepcopy(base)
        (i,) = _rows(doc, "SparseMoE")
        doc["head"][i][3] = [doc["head"][i][3][0], {"experts": 32, "top_k": k}]
        out[f"k{k}"] = doc
    doc = copy.deepcopy(base)
    (i,) = _rows(doc, "HyperbolicAlign")
    visual = doc["head"][i][0][0]
    doc["head"][i] = [visual, 1, "Conv", [doc["head"][i][3][0], 1, 1]]
    out["nohyp"] = doc
    doc = copy.deepcopy(base)
    (i,) = _rows(doc, "SparseMoE")
    doc["head"][i] = [doc["head"][i][0], 1, "PlainTextFusion", [doc["head"][i][3][0]]]
    out["dense"] = doc
    for name, loss in (
        ("qfocal", "qfocal_ciou"),
        ("qfocal-cls8", {"type": "qfocal_ciou", "cls_scale": 8}),
        ("qfocal-cls32", {"type": "qfocal_ciou", "cls_scale": 32}),
    ):
        out[name] = dict(copy.deepcopy(base), loss=loss)
    return {name: dict(doc, default_scale=scale) for name, doc in out.items()}


def model_path(out: str | Path, name: str, scale: str = "n") -> Path:
    """Where ``write`` puts a model variant's YAML (the scale letter in the file name, as Ultralytics reads it)."""
    return Path(out) / "models" / f"dsmoe-lite-{name}-yolov8{scale}.yaml"


def prompt_variants(names: list[str]) -> dict[str, dict]:
    """``{name: prompt file dict}``: class-name templates, and the curated descriptions rotated by one class."""
    from dsmoe_yolo.assets import CFG_DIR
    from dsmoe_yolo.text.bundled import match_bundled_prompts
    from dsmoe_yolo.text.embed import template_prompts

    curated, _ = match_bundled_prompts(names, CFG_DIR / "prompts", "", template_prompts, lambda line: None)
    rotated = {n: curated[names[(i + 1) % len(names)]] for i, n in enumerate(names)}
    return {
        "templates": {"model": "class-name templates", "prompts": template_prompts(names)},
        "shuffled": {"model": "curated, rotated by one class", "prompts": rotated},
    }


def write(data: str, out: str, scale: str = "n") -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the variants under ``out``; return ``({model variant: YAML}, {data variant: data YAML})``."""
    out, data = Path(out), Path(data).resolve()
    doc = yaml.safe_load(data.read_text())
    names = list(doc["names"].values()) if isinstance(doc["names"], dict) else list(doc["names"])
    models = {}
    for name, model in model_variants(scale).items():
        path = model_path(out, name, scale)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(model, sort_keys=False))
        models[name] = path
    datas = {"curated": data}
    for name, prompts in prompt_variants(names).items():
        prompt_file = out / "prompts" / f"{name}.yaml"
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        prompt_file.write_text(yaml.safe_dump(prompts, sort_keys=False))
        variant = dict(doc, path=str(Path(doc.get("path") or data.parent).resolve()), prompts=str(prompt_file))
        data_file = out / "data" / f"{data.stem}-{name}.yaml"
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_text(yaml.safe_dump(variant, sort_keys=False))
        datas[name] = data_file
    return models, datas


def commands(
    data: str,
    out: str,
    scale: str = "n",
    epochs: int = 60,
    imgsz: int = 224,
    batch: int = 16,
    seed: int = 0,
    only: str | list[str] | None = None,
    text_model: str | None = None,
) -> list[list[str]]:
    """Write the variants and return the ``dsmoe benchmark`` command lines, one per variant (``name=<variant>``).

    One training per command, so each variant is validated and timed as soon as its own training ends: a campaign
    stopped half-way (or a machine lost) keeps every finished row. ``only``: the variants to run, in that order
    (default: all)."""
    models, datas = write(data, out, scale)
    chosen = _chosen(only)
    common = [f"epochs={epochs}", f"imgsz={imgsz}", f"batch={batch}", f"seeds={seed}", "exist_ok=True", "jobs=1"]
    project = str(Path(out).resolve())
    runs = {name: (datas[name], text_model or models["k5"]) for name in DATA_VARIANTS}
    runs.update({name: (datas["curated"], models[name]) for name in ORDER})
    return [
        ["dsmoe", "benchmark", f"data={runs[name][0]}", f"models={runs[name][1]}", *common, f"project={project}"]
        + [f"name={name}"]
        for name in chosen
    ]


def _chosen(only: str | list[str] | None) -> list[str]:
    """The variant names of ``only`` (comma-separated or a list), checked; every variant when ``None``."""
    every = [*DATA_VARIANTS, *ORDER]
    if only is None:
        return every
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = sorted(set(names) - set(every))
    if unknown or not names:
        raise ValueError(f"only={only}: unknown variant(s) {unknown or '(none given)'}; choose from {', '.join(every)}")
    return names


def run_commands(lines: list[list[str]], jobs: int = 1) -> None:
    """Run the command lines, ``jobs`` at a time, with this interpreter's CLI (``dsmoe`` may not be on PATH).

    With ``jobs>1`` each runs with ``OMP_NUM_THREADS=1`` (one core each; ``dsmoe benchmark`` flags a latency timed
    beside another training anyway). Raises ``RuntimeError`` naming the variants whose command failed."""
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None
    pending, running, failed = list(lines), [], []
    while pending or running:
        while pending and len(running) < jobs:
            line = pending.pop(0)
            print(("OMP_NUM_THREADS=1 " if env else "") + shlex.join(line), flush=True)
            running.append((line[-1], subprocess.Popen([sys.executable, "-m", "dsmoe_yolo.cli", *line[1:]], env=env)))
        ended = [(name, process) for name, process in running if process.poll() is not None]
        if not ended:  # whichever command ends first frees its core for the next one
            time.sleep(POLL_S)
        for name, process in ended:
            running.remove((name, process))
            if process.returncode != 0:
                failed.append(name.removeprefix("name="))
    if failed:
        raise RuntimeError(f"ablations: the command of {', '.join(failed)} failed (see its output above)")


# (question, variant, model variant, data variant) of each report row; k5 on curated text is the shipped model
REPORT_ROWS = (
    ("text", "curated class descriptions (shipped)", "k5", "curated"),
    ("text", "class-name templates", "k5", "templates"),
    ("text", "descriptions shuffled between classes", "k5", "shuffled"),
    *(("top-k of 32 experts", f"k = {k}", f"k{k}", "curated") for k in TOP_K),
    ("hyperbolic stage 5", "off (a 1x1 Conv of the same width)", "nohyp", "curated"),
    ("sparse MoE", "one dense text-conditioned layer", "dense", "curated"),
    ("loss", "QFocal + CIoU, cls_scale 8", "qfocal-cls8", "curated"),
    ("loss", "QFocal + CIoU, cls_scale 16", "qfocal", "curated"),
    ("loss", "QFocal + CIoU, cls_scale 32", "qfocal-cls32", "curated"),
)
REPORT_COLUMNS = ("mAP50", "mAP50-95", "P", "R", "latency PyTorch ms", "latency ORT ms")


def _run_progress(run: Path) -> str:
    """State of a run that no benchmark.csv reports yet: not started, or its epochs and best val mAP50-95 so far."""
    from dsmoe_yolo.benchmark.runs import read_results  # one row per epoch, also for a resumed run

    rows = read_results(run)
    if not rows:
        return "not started"
    epochs = (yaml.safe_load((run / "args.yaml").read_text()) or {}).get("epochs", "?")
    best = max(r.get("metrics/mAP50-95(B)", float("nan")) for r in rows)
    if isinstance(epochs, int) and len(rows) >= epochs:
        return f"trained ({len(rows)} epochs, best val mAP50-95 {best:.3f}), waiting for its benchmark command to end"
    return f"training: epoch {len(rows)}/{epochs}, best val mAP50-95 so far {best:.3f}"


def _report_cell(value: str | None, column: str) -> str:
    if value in (None, ""):
        return "-"
    return f"{float(value):.1f}" if column.startswith("latency") else f"{float(value):.3f}"


def report(out: str | Path, scale: str = "n", seed: int = 0) -> str:
    """One Markdown table of every ablation row under ``out``, with what is finished and what is not yet."""
    out = Path(out)
    finished = {}
    for table in sorted(out.glob("*/benchmark.csv")):
        for row in csv.DictReader(table.open()):
            run = Path(row["run dir"])
            finished[(table.parent.name, run.name)] = row
    lines = [
        "| question | variant | " + " | ".join(REPORT_COLUMNS) + " | status |",
        "|---|---|" + "---:|" * len(REPORT_COLUMNS) + "---|",
    ]
    for question, label, model, data_variant in REPORT_ROWS:
        stem = f"{model_path(out, model, scale).stem}-seed{seed}"
        # its own command's folder; a model variant may also lie in "curated" (one command for all, before 2026-12)
        folders = [data_variant] if data_variant in DATA_VARIANTS else [model, "curated"]
        row = next((finished[(f, stem)] for f in folders if (f, stem) in finished), None)
        cells = [_report_cell(row.get(c) if row else None, c) for c in REPORT_COLUMNS]
        if row:
            status = row["status"]
        else:
            started = [out / f / stem for f in folders if (out / f / stem).is_dir()]
            status = _run_progress(started[0]) if started else "not started"
        lines.append(f"| {question} | {label} | " + " | ".join(cells) + f" | {status} |")
    return "\n".join(lines) + "\n"


def reuse_k5(run: str, out: str, scale: str = "n", seed: int = 0) -> Path:
    """Copy a finished run of the shipped lite model in as the curated ``k5`` run (once); return where it lies.

    The copy's ``args.yaml`` names the k5 variant's YAML (the same model: top-5 of 32 experts is the shipped default),
    since ``dsmoe benchmark`` matches a run folder to its model by file name; ``REUSED.txt`` says where it came from."""
    source = Path(run)
    if not (source / "weights" / "last.pt").is_file() or not (source / "args.yaml").is_file():
        raise FileNotFoundError(
            f"k5={run}: not a training folder (no weights/last.pt and args.yaml); give a finished "
            f"run of dsmoe-lite-yolov8{scale}.yaml, or drop k5= to train it here"
        )
    args = yaml.safe_load((source / "args.yaml").read_text())
    variant = model_path(out, "k5", scale).resolve()
    if Path(str(args["model"])).name not in (f"dsmoe-lite-yolov8{scale}.yaml", variant.name):
        raise ValueError(f"k5={run} trained {args['model']}, not dsmoe-lite-yolov8{scale}.yaml (the k5 row's model)")
    target = Path(out) / "k5" / f"dsmoe-lite-k5-yolov8{scale}-seed{seed}"
    if not target.exists():
        shutil.copytree(source, target)
        (target / "args.yaml").write_text(yaml.safe_dump({**args, "model": str(variant)}, sort_keys=False))
        (target / "REUSED.txt").write_text(
            f"Copied from {source.resolve()} (model {args['model']}) by examples/ablations.py k5=: the k5 variant is "
            f"that model, so it was not trained again.\n"
        )
    return target


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    run, show = (args.pop(k, "False").lower() in ("1", "true", "yes") for k in ("run", "report"))
    ints = {k: int(args.pop(k)) for k in ("epochs", "imgsz", "batch", "seed", "jobs") if k in args}
    out, scale, only = args.pop("out", "ablations"), args.pop("scale", "n"), args.pop("only", None)
    text_model = args.pop("text_model", None)
    jobs = ints.pop("jobs", 2)
    if show:
        if not Path(out).is_dir():
            raise SystemExit(f"ablations: out={out} does not exist; give the out= of an ablations run")
        table = report(out, scale, ints.get("seed", 0))
        (Path(out) / "ablations.md").write_text(table)
        print(table, end="")
        return
    if "k5" in args:
        print(f"k5: {reuse_k5(args.pop('k5'), out, scale, ints.get('seed', 0))}", flush=True)
    lines = commands(args.pop("data"), out, scale, **ints, only=only, text_model=text_model)
    if run:
        run_commands(lines, jobs)
    else:
        for line in lines:
            print(shlex.join(line))


if __name__ == "__main__":
    main(sys.argv[1:])
