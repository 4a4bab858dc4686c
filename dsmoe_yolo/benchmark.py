"""Train, evaluate and time several detectors on one dataset with identical settings; write one comparison table.

Usage (the ``dsmoe`` command; values are ``key=value``)::

    dsmoe benchmark data=neu-det.yaml models=dsmoe-yolov8n.yaml,yolov8n.yaml epochs=10 imgsz=640 batch=8 seed=0

or from Python::

    from dsmoe_yolo.benchmark import run_benchmark

    result = run_benchmark(data="neu-det.yaml", models="dsmoe-yolov8n.yaml,yolov8n.yaml", epochs=10)

For every model, in order: train with the stock ``YOLO(model).train`` into ``<run dir>/<model stem>``, validate its
``best.pt`` on the ``val`` split (``<run dir>/<model stem>-val``), count parameters and GFLOPs, and time one image on
the CPU in PyTorch and in ONNX Runtime. The run dir (``project/name``, default ``<runs_dir>/benchmark/benchmark``,
incremented like Ultralytics' own runs unless ``exist_ok=True``) then holds:

- ``benchmark.md``: the main table (model, params M, GFLOPs, latency PyTorch / ORT ms, mAP50, mAP50-95, P, R), the
  per-class AP50-95 table (class x model), the settings and the command that reproduces the run;
- ``benchmark.csv``: the main table;
- ``per_class_ap.csv``: one row per model and class with AP50 and AP50-95.

Notes:
    - Every model gets the same data, seed, epochs, imgsz, batch, nbs, optimizer, lr0, patience and fraction, and trains
      with ``deterministic=True``; pretrained ``.pt`` and from-scratch ``.yaml`` models can be mixed, the table shows
      the model exactly as it was given.
    - Latency is measured on the CPU in this same process for every model, whatever ``device`` trained them: float32,
      batch 1, a fixed ``1x3ximgszximgsz`` input, median of ``latency_runs`` (>= 10) timed calls after 2 warm-ups.
      PyTorch runs the fused model (Conv+BN merged, as Ultralytics predicts and exports) under ``torch.no_grad()``;
      ONNX Runtime runs the opset-19 export of ``best.pt`` with ``CPUExecutionProvider``. Both use
      ``torch.get_num_threads()`` threads as set when the benchmark starts (restored before each timing, since
      Ultralytics' training and export reset it; choose with ``OMP_NUM_THREADS``, e.g. ``OMP_NUM_THREADS=1`` on a
      machine other jobs share: OpenMP threads competing for busy cores make timings erratic and far slower).
      ``onnx=False`` skips the export and the ORT column shows ``-`` (an empty cell in ``benchmark.csv``).
    - GFLOPs come from ``torch.utils.flop_counter`` (``dsmoe_yolo.flops.count_gflops``: counts every aten op actually
      run, including attention matmuls and the deformable convolution); thop's number, as Ultralytics prints it, is
      in the ``GFLOPs (thop)`` column (0.0 where thop fails). Both are for one image at ``imgsz`` on the unfused model.
    - A model that fails (to train, or at a later step) does not stop the others: its row says ``failed: <message>``
      and the returned dict lists it under ``failures``.
"""

from __future__ import annotations

import csv
import shlex
import traceback
from copy import deepcopy
from pathlib import Path
from typing import Any

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.timing import WARMUP, median_ms

__all__ = ("run_benchmark", "MIN_LATENCY_RUNS", "COLUMNS")

MIN_LATENCY_RUNS = 10
OPSET = 19

# (row key, header) of the main table, in order; benchmark.csv uses the same headers.
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
    ("status", "status"),
)
_DIGITS = {"params_M": 2, "GFLOPs": 3, "GFLOPs_thop": 3, "latency_torch_ms": 1, "latency_ort_ms": 1}


# --------------------------------------------------------------------------------------------------------- arguments
def _model_list(models: str | list | tuple) -> list[str]:
    """Split ``models`` (comma-separated string or list) into model names."""
    items = models.split(",") if isinstance(models, str) else list(models or [])
    out = [str(m).strip() for m in items if str(m).strip()]
    if not out:
        raise ConfigError(f"benchmark: models={models!r} names no model; e.g. models=dsmoe-yolov8n.yaml,yolov8n.yaml")
    return out


def _positive_int(value: Any, key: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ConfigError(f"benchmark: {key}={value!r} must be an integer >= {minimum}")
    return int(value)


def _check_args(data: Any, models: Any, epochs: Any, imgsz: Any, batch: Any, latency_runs: Any) -> dict:
    """Validate the arguments before anything is trained; return the normalised ones."""
    if not data:
        raise ConfigError("benchmark: data= is required, e.g. data=neu-det.yaml")
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, (int, float)) or latency_runs < MIN_LATENCY_RUNS:
        raise ConfigError(
            f"benchmark: latency_runs={latency_runs!r} is too few for a stable median latency; "
            f"use latency_runs>={MIN_LATENCY_RUNS}"
        )
    return {
        "models": _model_list(models),
        "epochs": _positive_int(epochs, "epochs"),
        "imgsz": _positive_int(imgsz, "imgsz", 32),
        "batch": _positive_int(batch, "batch") if batch != -1 else -1,
        "latency_runs": _positive_int(latency_runs, "latency_runs", MIN_LATENCY_RUNS),
    }


def _resolve_data(data: str) -> dict:
    """Check the data YAML up front (same resolution as training) so a typo fails before the first model trains."""
    from ultralytics.data.utils import check_det_dataset

    try:
        return check_det_dataset(data)
    except Exception as e:
        raise ConfigError(f"benchmark: data={data!r} could not be loaded: {e}") from e


def _run_dir(project: str | None, name: str, exist_ok: bool) -> Path:
    """``project/name`` (absolute; default project ``<runs_dir>/benchmark``), incremented unless ``exist_ok``."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.files import increment_path

    base = Path(project).expanduser().resolve() if project else Path(SETTINGS["runs_dir"]).resolve() / "benchmark"
    return increment_path(base / str(name or "benchmark"), exist_ok=bool(exist_ok), mkdir=True)


def _stems(models: list[str]) -> list[str]:
    """Folder name per model (the file stem), made unique when two models share a stem."""
    out: list[str] = []
    for m in models:
        stem = Path(m).stem or "model"
        candidate, k = stem, 2
        while candidate in out:
            candidate, k = f"{stem}-{k}", k + 1
        out.append(candidate)
    return out


# ------------------------------------------------------------------------------------------------------- model steps
def _train(model: str, stem: str, run_dir: Path, cfg: dict) -> Path:
    """Train ``model`` into ``run_dir/stem``; return the path of its best (else last) checkpoint."""
    from ultralytics import YOLO

    yolo = YOLO(model)
    yolo.train(**cfg["train"], project=str(run_dir), name=stem, exist_ok=True, deterministic=True, plots=True)
    trainer = yolo.trainer
    for ckpt in (getattr(trainer, "best", None), getattr(trainer, "last", None)):
        if ckpt and Path(ckpt).is_file():
            return Path(ckpt)
    raise RuntimeError(f"training finished without a checkpoint in {run_dir / stem / 'weights'}")


def _evaluate(best: Path, stem: str, run_dir: Path, cfg: dict) -> tuple[dict, list[dict]]:
    """Validate ``best`` on the val split; return the summary metrics and per-class AP rows."""
    from ultralytics import YOLO

    v = cfg["train"]
    metrics = YOLO(str(best)).val(
        data=v["data"], imgsz=v["imgsz"], batch=v["batch"], device=v["device"], workers=v["workers"], split="val",
        project=str(run_dir), name=f"{stem}-val", exist_ok=True, plots=False,
    )
    box = metrics.box
    summary = {"mAP50": float(box.map50), "mAP50-95": float(box.map), "P": float(box.mp), "R": float(box.mr)}
    names = metrics.names
    per_class = [
        {"class_id": int(c), "class": str(names[int(c)]), "AP50": float(box.ap50[i]), "AP50-95": float(box.ap[i])}
        for i, c in enumerate(metrics.ap_class_index)
    ]
    return summary, per_class


def _load_cpu_model(best: Path):
    """The checkpoint's DetectionModel on the CPU, float32, eval mode."""
    from ultralytics import YOLO

    return YOLO(str(best)).model.to("cpu").float().eval()


def _size(model, imgsz: int) -> dict:
    """Parameters (millions) and GFLOPs (flop_counter and thop) for one image at ``imgsz``."""
    from dsmoe_yolo.flops import count_gflops, count_params, thop_gflops

    return {
        "params_M": count_params(model) / 1e6,
        "GFLOPs": count_gflops(model, imgsz),
        "GFLOPs_thop": thop_gflops(model, imgsz),
    }


def _input(imgsz: int):
    """The fixed latency input: 1x3ximgszximgsz uniform noise (seeded), float32."""
    import torch

    return torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))


def _torch_latency(model, imgsz: int, runs: int) -> float:
    """Median PyTorch CPU latency (ms) of the fused model on one image."""
    import torch

    fused = deepcopy(model)
    if hasattr(fused, "fuse"):
        fused = fused.fuse(verbose=False)
    fused.eval()
    x = _input(imgsz)

    def call():
        with torch.no_grad():
            fused(x)

    return median_ms(call, runs)


def _export_onnx(best: Path, imgsz: int) -> Path:
    """Export ``best`` to ONNX (opset 19, static 1x3ximgszximgsz, not simplified) next to it."""
    from ultralytics import YOLO

    out = YOLO(str(best)).export(format="onnx", opset=OPSET, imgsz=imgsz, simplify=False, dynamic=False, device="cpu")
    return Path(out)


def _ort_latency(onnx_path: Path, imgsz: int, runs: int, threads: int) -> float:
    """Median ONNX Runtime CPU latency (ms) on one image with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: _input(imgsz).numpy()}
    return median_ms(lambda: session.run(None, feed), runs)


# --------------------------------------------------------------------------------------------------------- one model
def _failed(row: dict, failures: list, stage: str, error: BaseException) -> None:
    """Record a failure in the row, the failure list and the log."""
    from ultralytics.utils import LOGGER

    message = f"{type(error).__name__}: {error}".strip().replace("\n", " ")
    LOGGER.warning(f"benchmark: {row['model']} failed at {stage}: {message}\n{traceback.format_exc()}")
    row["status"] = f"failed: {stage}: {message}"
    failures.append({"model": row["model"], "stage": stage, "error": message})


def _benchmark_model(
    i: int, n: int, model: str, stem: str, run_dir: Path, cfg: dict, failures: list
) -> tuple[dict, list[dict]]:
    """Train, evaluate, size and time one model; a failing step is recorded in the row and the rest is skipped."""
    import torch
    from ultralytics.utils import LOGGER

    row: dict = {"model": model, "dir": str(run_dir / stem), "weights": None, "status": "ok"}
    per_class: list[dict] = []
    imgsz, runs = cfg["train"]["imgsz"], cfg["latency_runs"]
    LOGGER.info(f"[{i}/{n}] training {model} -> {run_dir / stem} ...")
    try:
        best = _train(model, stem, run_dir, cfg)
    except Exception as e:
        _failed(row, failures, "train", e)
        return row, per_class
    row["weights"] = str(best)
    stage = "val"
    try:
        LOGGER.info(f"[{i}/{n}] evaluating {best} on the val split ...")
        summary, per_class = _evaluate(best, stem, run_dir, cfg)
        row.update(summary)
        stage = "size"
        cpu_model = _load_cpu_model(best)
        row.update(_size(cpu_model, imgsz))
        stage = "PyTorch latency"
        threads = cfg["threads"]
        torch.set_num_threads(threads)  # training / export reset it to Ultralytics' NUM_THREADS
        LOGGER.info(f"[{i}/{n}] timing {model}: PyTorch CPU, {_threads(threads)}, median of {runs} ...")
        row["latency_torch_ms"] = _torch_latency(cpu_model, imgsz, runs)
        if cfg["onnx"]:
            stage = "ONNX export"
            onnx_path = _export_onnx(best, imgsz)
            row["onnx"] = str(onnx_path)
            stage = "ORT latency"
            LOGGER.info(f"[{i}/{n}] timing {model}: ONNX Runtime CPU, {_threads(threads)}, median of {runs} ...")
            row["latency_ort_ms"] = _ort_latency(onnx_path, imgsz, runs, threads)
    except Exception as e:
        _failed(row, failures, stage, e)
    return row, [{"model": model, **r} for r in per_class]


# ------------------------------------------------------------------------------------------------------------ output
def _cell(row: dict, key: str, digits: int = 3) -> str:
    """A table cell: numbers rounded, missing values as ``-``."""
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{_DIGITS.get(key, digits)}f}"
    return str(value).replace("|", "\\|")


def _markdown_table(headers: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _main_table(rows: list[dict]) -> str:
    """The main comparison table in Markdown."""
    headers = [h for _, h in COLUMNS]
    align = ["l" if k in ("model", "status") else "r" for k, _ in COLUMNS]
    return _markdown_table(headers, [[_cell(r, k) for k, _ in COLUMNS] for r in rows], align)


def _class_names(data: dict) -> list[str]:
    """Class names of the dataset, in index order."""
    names = data.get("names", {})
    return [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def _per_class_table(models: list[str], names: list[str], per_class: list[dict]) -> str:
    """Per-class AP50-95 in Markdown: one row per class, one column per model (``-`` where not evaluated)."""
    ap = {(r["model"], r["class"]): r["AP50-95"] for r in per_class}
    rows = [[n.replace("|", "\\|")] + [f"{ap[(m, n)]:.3f}" if (m, n) in ap else "-" for m in models] for n in names]
    return _markdown_table(["class", *models], rows, ["l"] + ["r"] * len(models))


def _command(kwargs: dict) -> str:
    """The ``dsmoe benchmark`` command line that reproduces this run."""
    parts = ["dsmoe", "benchmark"]
    for key, value in kwargs.items():
        if value is None:
            continue
        value = ",".join(value) if isinstance(value, list) else value
        parts.append(shlex.quote(f"{key}={value}"))
    return " ".join(parts)


def _threads(n: int) -> str:
    """``1 thread`` / ``2 threads``."""
    return f"{n} thread{'' if n == 1 else 's'}"


def _settings_line(cfg: dict, threads: int) -> str:
    """The exact settings every model shared, in one line."""
    import torch

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    train = ", ".join(f"{k}={v}" for k, v in cfg["train"].items())
    return (
        f"Settings (identical for every model): {train}, deterministic=True. "
        f"Latency: CPU, float32, batch 1, 1x3x{cfg['train']['imgsz']}x{cfg['train']['imgsz']}, "
        f"median of {cfg['latency_runs']} runs after {WARMUP} warm-ups, {_threads(threads)} "
        f"(torch {torch.__version__}, onnxruntime {ort_version}, ONNX opset {OPSET})."
    )


def _write_csv(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts keyed by ``fieldnames``) to a CSV file."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(v) for k, v in r.items()})


def _csv_value(value: Any) -> Any:
    """A CSV cell: floats rounded to 6 decimals, missing values empty."""
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def _write_outputs(
    run_dir: Path, rows: list[dict], per_class: list[dict], names: list[str], cfg: dict, threads: int
) -> dict:
    """Write benchmark.md, benchmark.csv and per_class_ap.csv; return their paths and the main table."""
    models = [r["model"] for r in rows]
    main = _main_table(rows)
    md = run_dir / "benchmark.md"
    md.write_text(
        f"# DS-MoE benchmark\n\n{main}\n\n"
        f"## Per-class AP50-95 (val)\n\n{_per_class_table(models, names, per_class)}\n\n"
        f"{_settings_line(cfg, threads)}\n\nReproduce: `{cfg['command']}`\n",
        encoding="utf-8",
    )
    main_csv = run_dir / "benchmark.csv"
    _write_csv(main_csv, [h for _, h in COLUMNS], [{h: r.get(k) for k, h in COLUMNS} for r in rows])
    class_csv = run_dir / "per_class_ap.csv"
    _write_csv(class_csv, ["model", "class_id", "class", "AP50", "AP50-95"], per_class)
    return {"markdown": md, "csv": main_csv, "per_class_csv": class_csv, "table": main}


# -------------------------------------------------------------------------------------------------------------- entry
def run_benchmark(
    data: str,
    models: str | list[str] = "dsmoe-yolov8n.yaml,yolov8n.yaml",
    epochs: int = 10,
    imgsz: int = 640,
    batch: int = 8,
    seed: int = 0,
    device: str | int | None = "cpu",
    workers: int = 0,
    project: str | None = None,
    name: str = "benchmark",
    fraction: float = 1.0,
    latency_runs: int = 10,
    optimizer: str = "auto",
    lr0: float | None = None,
    patience: int = 100,
    exist_ok: bool = False,
    onnx: bool = True,
    nbs: int = 64,
) -> dict:
    """Train and evaluate each model on ``data`` with identical settings, time it on the CPU, and write the tables.

    Args:
        data: Dataset YAML (a path or a bundled name such as ``neu-det.yaml``).
        models: Models to compare, comma-separated or a list (``.yaml`` from scratch or ``.pt`` weights).
        epochs: Training epochs for every model.
        imgsz: Train, val, FLOPs and latency image size (square).
        batch: Training and val batch size.
        seed: Training seed (with ``deterministic=True``).
        device: Training / val device (``cpu``, ``0``, ...); latency is always measured on the CPU.
        workers: Dataloader workers.
        project: Parent folder of the run dir (default ``<runs_dir>/benchmark``; relative paths from the CWD).
        name: Run dir name, incremented (``name-2``, ...) unless ``exist_ok``.
        fraction: Fraction of the training set to use.
        latency_runs: Timed forward passes per latency (median), at least 10.
        optimizer: Ultralytics optimizer name (``auto``, ``SGD``, ``AdamW``, ...).
        lr0: Initial learning rate; Ultralytics' default when None.
        patience: Early-stopping patience in epochs.
        exist_ok: Reuse ``project/name`` instead of incrementing it.
        onnx: Export each ``best.pt`` to ONNX and time it in ONNX Runtime.
        nbs: Nominal batch size (Ultralytics accumulates gradients over nbs / batch steps); nbs=batch steps every batch.

    Returns:
        ``{"rows": [...], "per_class": [...], "failures": [...], "save_dir", "markdown", "csv", "per_class_csv"}``:
        one row dict per model (keys as in ``COLUMNS`` plus ``dir``, ``weights``, ``onnx``), per-class AP dicts
        (model, class_id, class, AP50, AP50-95), and ``{"model", "stage", "error"}`` per failed model.

    Raises:
        ConfigError: If an argument is invalid (``latency_runs < 10``, no ``data``, bad ``epochs``/``imgsz``/...)
            or the data YAML cannot be loaded; raised before any training starts.
    """
    import torch
    from ultralytics.utils import LOGGER

    import dsmoe_yolo.plugin as plugin

    checked = _check_args(data, models, epochs, imgsz, batch, latency_runs)
    plugin.register()
    dataset = _resolve_data(str(data))
    model_list, stems = checked["models"], _stems(checked["models"])
    run_dir = _run_dir(project, name, exist_ok)
    train = {
        "data": str(data), "epochs": checked["epochs"], "imgsz": checked["imgsz"], "batch": checked["batch"],
        "seed": int(seed), "device": device, "workers": int(workers), "fraction": float(fraction),
        "optimizer": str(optimizer), "patience": int(patience), "nbs": int(nbs),
    }
    if lr0 is not None:
        train["lr0"] = float(lr0)
    command = _command(
        {"data": data, "models": model_list, "epochs": checked["epochs"], "imgsz": checked["imgsz"],
         "batch": checked["batch"], "seed": seed, "device": device, "workers": workers, "project": str(run_dir.parent),
         "name": name, "fraction": fraction, "latency_runs": checked["latency_runs"], "optimizer": optimizer,
         "lr0": lr0, "patience": patience, "onnx": bool(onnx), "nbs": nbs}
    )
    threads = torch.get_num_threads()  # the caller's setting, before Ultralytics' select_device changes it
    cfg = {"train": train, "latency_runs": checked["latency_runs"], "onnx": bool(onnx), "command": command}
    cfg["threads"] = threads
    LOGGER.info(f"DS-MoE benchmark: {len(model_list)} models on {data} -> {run_dir}")

    rows, per_class, failures = [], [], []
    for i, (model, stem) in enumerate(zip(model_list, stems), 1):
        row, classes = _benchmark_model(i, len(model_list), model, stem, run_dir, cfg, failures)
        rows.append(row)
        per_class += classes

    torch.set_num_threads(threads)
    out = _write_outputs(run_dir, rows, per_class, _class_names(dataset), cfg, threads)
    LOGGER.info(f"\nDS-MoE benchmark results ({run_dir}):\n{out['table']}")
    LOGGER.info(f"Results saved to {out['markdown']}, {out['csv']} and {out['per_class_csv']}")
    if failures:
        failed = "; ".join(f"{f['model']} ({f['stage']}: {f['error']})" for f in failures)
        LOGGER.warning(f"benchmark: {len(failures)} of {len(model_list)} model(s) failed: {failed}")
    paths = {k: v for k, v in out.items() if k != "table"}
    return {"rows": rows, "per_class": per_class, "failures": failures, "save_dir": run_dir, **paths}
