"""Benchmark arguments: checked and normalised before anything trains; the run dir and the per-run folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsmoe_yolo.errors import ConfigError

__all__ = (
    "MIN_LATENCY_RUNS",
    "Run",
    "check_args",
    "class_text_layers",
    "resolve_data",
    "make_run_dir",
    "make_runs",
    "model_label",
    "train_args",
)

MIN_LATENCY_RUNS = 10


@dataclass(frozen=True)
class Run:
    """One training: ``model`` with ``seed``, trained by Ultralytics into ``dir`` (``<run dir>/<stem>-seed<seed>``)."""

    model: str
    stem: str
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        """The Ultralytics ``name=`` of this training (its folder name)."""
        return self.dir.name


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


def _seed_list(seed: Any, seeds: Any) -> list[int]:
    """``seeds`` (``0,1,2``, an int or a list) if given, else ``[seed]``; distinct integers >= 0, in the given order."""
    if seeds is None or seeds == "":
        items = [seed]
    elif isinstance(seeds, str):
        items = [s.strip() for s in seeds.split(",") if s.strip()]
    elif isinstance(seeds, (list, tuple)):
        items = list(seeds)
    else:
        items = [seeds]
    out = []
    for s in items:
        try:
            value = int(s) if not isinstance(s, bool) and float(s) == int(float(s)) else None
        except (TypeError, ValueError):
            value = None
        if value is None or value < 0:
            raise ConfigError(f"benchmark: seeds={seeds!r} must list integers >= 0, e.g. seeds=0,1,2")
        out.append(value)
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"benchmark: seeds={seeds!r} must list distinct seeds, e.g. seeds=0,1,2")
    if seeds not in (None, "") and seed not in (None, 0) and out != [int(seed)]:
        raise ConfigError(f"benchmark: seed={seed!r} and seeds={seeds!r} disagree; pass only seeds=")
    return out


def check_args(
    data: Any, models: Any, epochs: Any, imgsz: Any, batch: Any, latency_runs: Any, seed: Any, seeds: Any, jobs: Any
) -> dict:
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
        "seeds": _seed_list(seed, seeds),
        "jobs": _positive_int(jobs, "jobs"),
    }


def resolve_data(data: str) -> dict:
    """Check the data YAML up front (same resolution as training) so a typo fails before the first model trains."""
    from ultralytics.data.utils import check_det_dataset

    try:
        return check_det_dataset(data)
    except Exception as e:
        raise ConfigError(f"benchmark: data={data!r} could not be loaded: {e}") from e


def make_run_dir(project: str | None, name: str, exist_ok: bool) -> Path:
    """``project/name`` (absolute; default project ``<runs_dir>/benchmark``), incremented unless ``exist_ok``."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.files import increment_path

    base = Path(project).expanduser().resolve() if project else Path(SETTINGS["runs_dir"]).resolve() / "benchmark"
    return increment_path(base / str(name or "benchmark"), exist_ok=bool(exist_ok), mkdir=True)


def model_label(model: str) -> str:
    """How tables and the chart name a model: its file name (``/x/models/dsmoe-lite-k1-yolov8n.yaml`` ->
    ``dsmoe-lite-k1-yolov8n.yaml``); benchmark.csv keeps the model as given."""
    return Path(str(model)).name


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


def make_runs(models: list[str], seeds: list[int], run_dir: Path) -> list[Run]:
    """Every (model, seed) training, seed-major: all models with the first seed come first."""
    stems = _stems(models)
    return [Run(m, s, seed, run_dir / f"{s}-seed{seed}") for seed in seeds for m, s in zip(models, stems)]


def class_text_layers(model: str) -> list[int]:
    """Row indices of ``model``'s ``ClassText`` layers (``.yaml`` or ``.pt``); empty for a model without class text
    (YOLOv8n). ``freeze_text=True`` hands them to Ultralytics' ``freeze`` so fine-tuning keeps the class text fixed."""
    from ultralytics import YOLO

    from dsmoe_yolo.nn.text import ClassText

    try:
        layers = YOLO(model).model.model
    except Exception as e:
        raise ConfigError(f"benchmark: model {model!r} could not be loaded to find its ClassText rows: {e}") from e
    return [i for i, m in enumerate(layers) if isinstance(m, ClassText)]


def train_args(checked: dict, data: Any, **kw: Any) -> dict:
    """The Ultralytics train arguments every run shares (without ``seed``, which each run sets)."""
    out = {
        "data": str(data),
        "epochs": checked["epochs"],
        "imgsz": checked["imgsz"],
        "batch": checked["batch"],
        "device": kw["device"],
        "workers": int(kw["workers"]),
        "fraction": float(kw["fraction"]),
        "optimizer": str(kw["optimizer"]),
        "patience": int(kw["patience"]),
        "nbs": int(kw["nbs"]),
        "val": bool(kw.get("val", True)),
    }
    if kw.get("lr0") is not None:
        out["lr0"] = float(kw["lr0"])
    return out
