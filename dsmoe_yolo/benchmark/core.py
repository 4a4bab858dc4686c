"""``run_benchmark``: train every model with every seed, evaluate each run, measure each model once, write the report."""

from __future__ import annotations

import statistics
import traceback
from pathlib import Path

from dsmoe_yolo.benchmark import measure, onnx_latency, report, runs, schedule, settings, train
from dsmoe_yolo.benchmark.aggregate import model_rows
from dsmoe_yolo.benchmark.plot import plot_runs
from dsmoe_yolo.benchmark.settings import Run
from dsmoe_yolo.timing import OtherCpuUse

__all__ = ("run_benchmark",)


def _weights(run: Run) -> Path | None:
    """The run's best checkpoint, else its last one, else None."""
    for name in ("best.pt", "last.pt"):
        path = run.dir / "weights" / name
        if path.is_file():
            return path
    return None


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().replace("\n", " ")


def _evaluate_run(run: Run, error: str | None, cfg: dict, failures: list) -> tuple[dict, list[dict], list[dict]]:
    """The run's row (validation metrics, epochs, s/epoch, status), its per-class rows and its results.csv rows."""
    from ultralytics.utils import LOGGER

    history = runs.read_results(run.dir)
    times = runs.epoch_times(history)
    row = {
        "model": run.model,
        "seed": run.seed,
        "dir": str(run.dir),
        "weights": None,
        "status": "ok",
        "epochs": len(history) or None,
        "s_per_epoch": statistics.median(times) if times else None,  # a paused or shared epoch does not move it
    }
    weights = _weights(run)
    if error is None and weights is None:
        error = f"no checkpoint in {run.dir / 'weights'}"
    if error is not None:
        row["status"] = f"failed: train: {error}"
        failures.append({"model": run.model, "seed": run.seed, "stage": "train", "error": error})
        return row, [], history
    row["weights"] = str(weights)
    try:
        LOGGER.info(f"benchmark: evaluating {weights} on the val split ...")
        summary, classes = measure.evaluate(weights, run.dir.parent / f"{run.name}-val", cfg["train"])
    except Exception as e:
        LOGGER.warning(f"benchmark: {run.dir} failed at val: {_message(e)}\n{traceback.format_exc()}")
        row["status"] = f"failed: val: {_message(e)}"
        failures.append({"model": run.model, "seed": run.seed, "stage": "val", "error": _message(e)})
        return row, [], history
    row.update(summary)
    return row, [{"model": run.model, "seed": run.seed, **c} for c in classes], history


def _measure_model(run: Run, weights: Path, cfg: dict, failures: list) -> dict:
    """Params, GFLOPs, PyTorch and (``onnx``) ORT CPU latency of one run's checkpoint; ``error`` if a step failed."""
    import torch
    from ultralytics.utils import LOGGER

    out: dict = {"seed": run.seed, "dir": str(run.dir), "weights": str(weights)}
    imgsz, n, threads = cfg["train"]["imgsz"], cfg["latency_runs"], cfg["threads"]
    stage = "size"
    busy = []  # other processes' CPU use during each timing
    try:
        model = measure.load_cpu_model(weights)
        out.update(measure.size(model, imgsz))
        stage = "PyTorch latency"
        torch.set_num_threads(threads)  # training / export reset it to Ultralytics' NUM_THREADS
        LOGGER.info(f"benchmark: timing {run.model}: PyTorch CPU, {report.threads_text(threads)}, median of {n} ...")
        with OtherCpuUse() as use:
            out["latency_torch_ms"] = measure.torch_latency(model, imgsz, n)
        busy.append(use)
        if cfg["onnx"]:
            stage = "ONNX export"
            out["onnx"] = str(onnx_latency.export_onnx(weights, imgsz))
            stage = "ORT latency"
            torch.set_num_threads(threads)
            LOGGER.info(
                f"benchmark: timing {run.model}: ONNX Runtime CPU, {report.threads_text(threads)}, median of {n}"
            )
            with OtherCpuUse() as use:
                out["latency_ort_ms"] = onnx_latency.ort_latency(Path(out["onnx"]), imgsz, n, threads)
            busy.append(use)
    except Exception as e:
        message = _message(e)
        LOGGER.warning(f"benchmark: {run.model} failed at {stage}: {message}\n{traceback.format_exc()}")
        out["error"] = f"{stage}: {message}"
        failures.append({"model": run.model, "seed": run.seed, "stage": stage, "error": message})
    if busy and (warning := max(busy, key=lambda u: u.cores).warning(threads)):
        LOGGER.warning(f"benchmark: {run.model}: {warning}")
        out["latency_warning"] = warning
    return out


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
    seeds: str | int | list[int] | None = None,
    jobs: int = 1,
    val: bool = True,
    freeze_text: bool = False,
) -> dict:
    """Train each model with each seed on ``data`` with identical settings, evaluate, time on the CPU, write tables.

    Args:
        data: Dataset YAML (a path or a bundled name such as ``neu-det.yaml``).
        models: Models to compare, comma-separated or a list (``.yaml`` from scratch or ``.pt`` weights).
        epochs: Training epochs for every model.
        imgsz: Train, val, FLOPs and latency image size (square).
        batch: Training and val batch size.
        seed: Training seed (with ``deterministic=True``) when ``seeds`` is not given.
        device: Training / val device (``cpu``, ``0``, ...); latency is always measured on the CPU.
        workers: Dataloader workers.
        project: Parent folder of the run dir (default ``<runs_dir>/benchmark``; relative paths from the CWD).
        name: Run dir name, incremented (``name-2``, ...) unless ``exist_ok``.
        fraction: Fraction of the training set to use.
        latency_runs: Timed forward passes per latency (median), at least 10.
        optimizer: Ultralytics optimizer name (``auto``, ``SGD``, ``AdamW``, ...).
        lr0: Initial learning rate; Ultralytics' default when None.
        patience: Early-stopping patience in epochs.
        exist_ok: Reuse ``project/name`` instead of incrementing it: finished runs there are skipped, interrupted ones
            resumed.
        onnx: Export each model's measured ``best.pt`` to ONNX and time it in ONNX Runtime.
        nbs: Nominal batch size (Ultralytics accumulates gradients over nbs / batch steps); nbs=batch steps every batch.
        seeds: Seeds, comma-separated or a list (``0,1,2``); one training per model and seed.
        jobs: Trainings at once (``jobs>1``: each in a worker subprocess, log in ``<run dir>/logs/``).
        val: Validate after every epoch (Ultralytics' ``val``); ``False`` validates only after the last one, so
            ``best.pt`` is the final epoch's weights: much cheaper when the training set is small beside the val split.
        freeze_text: Keep each model's class text fixed while it trains (Ultralytics ``freeze=`` with the model's
            ``ClassText`` rows, recorded in its ``args.yaml``); models without class text (YOLOv8n) train whole.

    Returns:
        ``{"rows", "runs", "per_class", "failures", "save_dir", "markdown", "csv", "per_class_csv", "chart"}``: one row
        per model (keys as in ``report.COLUMNS``, mean over seeds, ``<key>_std`` the sample std, plus ``dir``,
        ``weights``, ``onnx`` of the measured run), one row per run (model, seed, metrics, ``epochs``,
        ``s_per_epoch``, ``status``), per-class AP dicts (model, seed, class_id, class, AP50, AP50-95),
        ``{"model", "seed", "stage", "error"}`` per failure, and the chart's path (None without epochs).

    Raises:
        ConfigError: If an argument is invalid, the data YAML cannot be loaded, or an existing run folder was trained
            with other settings; raised before any training starts.
    """
    import torch
    from ultralytics.utils import LOGGER

    import dsmoe_yolo.plugin as plugin

    checked = settings.check_args(data, models, epochs, imgsz, batch, latency_runs, seed, seeds, jobs)
    plugin.register()
    dataset = settings.resolve_data(str(data))
    model_list, seed_list = checked["models"], checked["seeds"]
    run_dir = settings.make_run_dir(project, name, exist_ok)
    train_args = settings.train_args(
        checked,
        data,
        device=device,
        workers=workers,
        fraction=fraction,
        optimizer=optimizer,
        patience=patience,
        nbs=nbs,
        lr0=lr0,
        val=val,
    )
    all_runs = settings.make_runs(model_list, seed_list, run_dir)
    frozen = {m: settings.class_text_layers(m) for m in model_list} if freeze_text else {}

    def run_args(run: Run) -> dict:
        """One run's train args: the shared ones, its seed, and its frozen ClassText rows (``freeze_text``)."""
        return {**train_args, "seed": run.seed, **({"freeze": frozen[run.model]} if frozen.get(run.model) else {})}

    for run in all_runs:  # before anything trains: an existing folder must hold the same experiment
        runs.check_recorded_args(run.dir, run.model, {**run_args(run), "deterministic": True})
    seed_arg = {"seeds": seed_list} if seeds not in (None, "") else {"seed": seed_list[0]}
    command = report.command_line(
        {
            "data": data,
            "models": model_list,
            "epochs": checked["epochs"],
            "imgsz": checked["imgsz"],
            "batch": checked["batch"],
            **seed_arg,
            "device": device,
            "workers": workers,
            "project": str(run_dir.parent),
            "name": run_dir.name,
            "exist_ok": True,
            "fraction": fraction,
            "latency_runs": checked["latency_runs"],
            "optimizer": optimizer,
            "lr0": lr0,
            "patience": patience,
            "onnx": bool(onnx),
            "nbs": nbs,
            "jobs": checked["jobs"],
            "val": bool(val),
            "freeze_text": True if freeze_text else None,
        }
    )
    threads = torch.get_num_threads()  # the caller's setting, before Ultralytics' select_device changes it
    cfg = {
        "train": train_args,
        "frozen": frozen,
        "seeds": seed_list,
        "latency_runs": checked["latency_runs"],
        "onnx": bool(onnx),
        "command": command,
        "threads": threads,
    }
    LOGGER.info(f"DS-MoE benchmark: {len(model_list)} models x {len(seed_list)} seeds on {data} -> {run_dir}")

    jobs = checked["jobs"]

    def start(run: Run, resume: bool):
        args = run_args(run)
        if jobs == 1:
            return train.InProcess(run.model, run.dir, args, resume)
        return train.Worker(run.model, run.dir, args, resume, run_dir / "logs" / f"{run.name}.log")

    errors = schedule.train_all(all_runs, start, jobs=jobs)
    torch.set_num_threads(threads)

    run_rows, per_class, failures, curves, measured = [], [], [], [], {}
    for run in all_runs:
        row, classes, history = _evaluate_run(run, errors.get(run), cfg, failures)
        run_rows.append(row)
        per_class += classes
        curves.append((run.model, run.seed, history))
    for (
        model
    ) in model_list:  # size and latency once per model, from its first seed that trained (one that validated first)
        mine = [(run, row) for run, row in zip(all_runs, run_rows) if run.model == model and row["weights"]]
        mine.sort(key=lambda pair: pair[1]["status"] != "ok")
        if mine:
            run = mine[0][0]
            measured[model] = _measure_model(run, Path(mine[0][1]["weights"]), cfg, failures)
    rows = model_rows(model_list, run_rows, measured)

    torch.set_num_threads(threads)
    chart = plot_runs(curves, run_dir / "benchmark.png")
    out = report.write_outputs(run_dir, rows, run_rows, per_class, dataset, cfg, threads, chart)
    LOGGER.info(f"\nDS-MoE benchmark results ({run_dir}):\n{out['table']}")
    LOGGER.info(
        f"Results saved to {out['markdown']}, {out['csv']}, {out['per_class_csv']}" + (f" and {chart}" if chart else "")
    )
    if failures:
        failed = "; ".join(f"{f['model']} seed {f['seed']} ({f['stage']}: {f['error']})" for f in failures)
        LOGGER.warning(f"benchmark: {len(failures)} failure(s): {failed}")
    paths = {k: v for k, v in out.items() if k != "table"}
    return {
        "rows": rows,
        "runs": run_rows,
        "per_class": per_class,
        "failures": failures,
        "save_dir": run_dir,
        "chart": chart,
        **paths,
    }
