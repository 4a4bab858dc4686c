"""``dsmoe benchmark``: train + evaluate + time several models with identical settings, one comparison table.

The end-to-end run (1 epoch of YOLOv8n and DS-MoE-YOLOv8n at 64 px on the tiny synthetic set) is marked slow; the
argument checks and the failure path train nothing and run in the quick suite. Every call passes an absolute
``project=`` (under pytest, Ultralytics would otherwise write relative projects into its package folder).
"""

from __future__ import annotations

import csv
import math

import pytest

from dsmoe_yolo.benchmark import run_benchmark
from dsmoe_yolo.errors import ConfigError

NAMES = ("open", "short", "mousebite", "spur", "spurious_copper", "pinhole")
MODELS = ("yolov8n.yaml", "dsmoe-yolov8n.yaml")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything starts an Ultralytics training run."""

    def boom(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr("ultralytics.engine.model.Model.train", boom)


@pytest.fixture
def one_thread():
    """Time with one thread: on a shared 2-core runner, 2 OpenMP threads beside another busy process are ~50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_benchmark_two_models_end_to_end(tiny_data, tmp_path, one_thread):
    result = run_benchmark(
        data=str(tiny_data),
        models=",".join(MODELS),
        epochs=1,
        imgsz=64,
        batch=4,
        latency_runs=10,
        project=str(tmp_path),
        name="b",
    )
    run = tmp_path / "b"
    assert result["save_dir"] == run
    assert result["failures"] == []

    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == list(MODELS)
    for model, row in rows.items():
        assert row["status"] == "ok", row
        for key in ("params_M", "GFLOPs", "GFLOPs_thop", "latency_torch_ms", "latency_ort_ms"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (model, key, row[key])
        for key in ("mAP50", "mAP50-95", "P", "R"):
            assert 0.0 <= row[key] <= 1.0, (model, key, row[key])
        assert (run / f"{model.removesuffix('.yaml')}-seed0" / "weights" / "best.pt").is_file()
        assert (run / f"{model.removesuffix('.yaml')}-seed0" / "weights" / "best.onnx").is_file()
    assert rows["dsmoe-yolov8n.yaml"]["params_M"] > rows["yolov8n.yaml"]["params_M"]

    md = (run / "benchmark.md").read_text()
    assert result["markdown"] == run / "benchmark.md"
    assert "| model | params M | GFLOPs |" in md and "latency PyTorch ms" in md and "latency ORT ms" in md
    for model in MODELS:
        assert f"| {model} |" in md
    assert "## Per-class AP50-95" in md and "| class | yolov8n.yaml | dsmoe-yolov8n.yaml |" in md
    for name in NAMES:
        assert f"| {name} |" in md
    assert "Settings (identical for every model)" in md and "seed=0" in md and "epochs=1" in md
    assert "`dsmoe benchmark data=" in md and "latency_runs=10" in md and "1 thread (" in md

    with open(run / "benchmark.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == list(MODELS)
    for r in table:
        assert float(r["params M"]) > 0 and float(r["latency PyTorch ms"]) > 0 and float(r["latency ORT ms"]) > 0
        assert 0.0 <= float(r["mAP50-95"]) <= 1.0

    with open(run / "per_class_ap.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    assert {r["class"] for r in per_class} <= set(NAMES) and {r["model"] for r in per_class} == set(MODELS)
    assert all(0.0 <= float(r["AP50-95"]) <= float(r["AP50"]) + 1e-9 <= 1.0 + 1e-9 for r in per_class)


@pytest.mark.slow
def test_freeze_text_keeps_the_class_text_of_a_start_and_trains_the_rest(tiny_data, tmp_path, one_thread):
    """``freeze_text=True``: the open-vocabulary start's ClassText rows are frozen (recorded in args.yaml) and come out
    of fine-tuning unchanged while its head moves; YOLOv8n, which has no class text, trains whole."""
    import torch
    import yaml
    from ultralytics import YOLO

    from dsmoe_yolo.benchmark.settings import class_text_layers

    start = tmp_path / "ov-start.pt"
    YOLO("dsmoe-ov-lite-yolov8n.yaml").save(str(start))
    assert class_text_layers(str(start)) == [22] and class_text_layers("yolov8n.yaml") == []
    result = run_benchmark(
        data=str(tiny_data),
        models=f"{start},yolov8n.yaml",
        epochs=1,
        imgsz=64,
        batch=4,
        onnx=False,
        val=False,
        freeze_text=True,
        project=str(tmp_path),
        name="ft",
    )
    assert result["failures"] == []
    run = tmp_path / "ft"
    recorded = {
        m: yaml.safe_load((run / f"{m}-seed0" / "args.yaml").read_text())["freeze"] for m in ("ov-start", "yolov8n")
    }
    assert recorded == {"ov-start": [22], "yolov8n": None}
    assert "freeze_text=True" in (run / "benchmark.md").read_text()

    def params(path, prefix):
        state = torch.load(path, map_location="cpu", weights_only=False)["model"].float().state_dict()
        return {k: v for k, v in state.items() if k.startswith(prefix) and "embeddings" not in k}

    tuned = run / "ov-start-seed0" / "weights" / "best.pt"
    before, after = params(start, "model.22."), params(tuned, "model.22.")
    assert before and all(torch.allclose(before[k], after[k], atol=1e-3) for k in before)
    head_before, head_after = params(start, "model.30.cv3"), params(tuned, "model.30.cv3")
    assert max((head_before[k] - head_after[k]).abs().max().item() for k in head_before) > 1e-3


def test_too_few_latency_runs_is_a_config_error(tiny_data, tmp_path, no_training):
    with pytest.raises(ConfigError, match=r"latency_runs>=10"):
        run_benchmark(data=str(tiny_data), epochs=1, imgsz=64, latency_runs=5, project=str(tmp_path), name="x")
    with pytest.raises(ConfigError, match="data= is required"):
        run_benchmark(data=None, project=str(tmp_path))
    with pytest.raises(ConfigError, match="could not be loaded"):
        run_benchmark(data=str(tmp_path / "missing.yaml"), project=str(tmp_path))
    assert not (tmp_path / "x").exists()


def test_cli_reports_config_error_before_training(tiny_data, tmp_path, no_training, capsys):
    from dsmoe_yolo.cli import main

    assert main(["benchmark", f"data={tiny_data}", "latency_runs=3", f"project={tmp_path}"]) == 2
    assert "latency_runs" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_failed_model_is_reported_and_run_dirs_increment(tiny_data, tmp_path):
    kwargs = dict(data=str(tiny_data), models="no-such-model.yaml", epochs=1, imgsz=64, onnx=False)
    first = run_benchmark(**kwargs, project=str(tmp_path), name="f")
    assert first["save_dir"] == tmp_path / "f"
    (row,) = first["rows"]
    assert row["status"].startswith("failed: train:")
    assert first["failures"][0]["model"] == "no-such-model.yaml" and first["failures"][0]["stage"] == "train"
    md = (tmp_path / "f" / "benchmark.md").read_text()
    assert "failed: train:" in md and "| no-such-model.yaml | - |" in md
    with open(tmp_path / "f" / "benchmark.csv", newline="") as f:
        assert next(csv.DictReader(f))["status"].startswith("failed")

    second = run_benchmark(**kwargs, project=str(tmp_path), name="f")
    assert second["save_dir"] == tmp_path / "f-2"
