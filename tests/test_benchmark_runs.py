"""``dsmoe benchmark`` over seeds and re-runs: folder states, recorded args, scheduling, aggregation and the report.

Everything here works on fake run folders (``args.yaml``, ``results.csv``, a ``last.pt`` holding only the keys
Ultralytics' resume reads) and trains nothing, except the slow test at the end, which kills a real worker mid-run and
lets the benchmark resume it.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dsmoe_yolo.benchmark import run_benchmark
from dsmoe_yolo.benchmark.aggregate import mean_std, model_rows, per_class_means
from dsmoe_yolo.benchmark.report import write_outputs
from dsmoe_yolo.benchmark.runs import (
    check_recorded_args,
    epoch_times,
    live_train_dirs,
    read_results,
    run_state,
    train_dirs_in_argv,
)
from dsmoe_yolo.benchmark.schedule import train_all
from dsmoe_yolo.benchmark.settings import Run, check_args, make_runs
from dsmoe_yolo.benchmark.train import worker_command
from dsmoe_yolo.errors import ConfigError

# The lead's hand-started run: `yolo train model=yolov8n.yaml data=... epochs=60 imgsz=224 batch=16 seed=0 ...`.
LEAD = dict(
    model="yolov8n.yaml",
    epochs=60,
    imgsz=224,
    batch=16,
    seed=0,
    deterministic=True,
    workers=0,
    device="cpu",
    nbs=64,
    optimizer="auto",
    patience=100,
    fraction=1.0,
    exist_ok=True,
    plots=True,
)


def requested(data: str, **kw) -> dict:
    """The train args ``run_benchmark`` requests for one run with the lead's settings."""
    out = dict(
        data=data,
        epochs=60,
        imgsz=224,
        batch=16,
        device="cpu",
        workers=0,
        fraction=1.0,
        optimizer="auto",
        patience=100,
        nbs=64,
        seed=0,
        deterministic=True,
    )
    return {**out, **kw}


def fake_run(folder: Path, data: str, epoch: int | None = None, epochs: int = 60, rows: int = 0, **args) -> Path:
    """A training folder as ``yolo train ... project=<parent> name=<folder name>`` leaves it.

    ``args.yaml`` is Ultralytics' full config (``get_cfg``) with the lead's overrides; ``weights/last.pt`` (when
    ``epoch`` is given) holds ``epoch`` and ``train_args`` as ``BaseTrainer.save_model`` / ``strip_optimizer`` write
    them; ``results.csv`` has ``rows`` epochs at 10 s each.
    """
    import torch
    from ultralytics.cfg import get_cfg

    cfg = {**LEAD, "epochs": epochs, **args, "data": data, "project": str(folder.parent), "name": folder.name}
    folder.mkdir(parents=True, exist_ok=True)
    recorded = {k: v for k, v in vars(get_cfg(overrides=cfg)).items()}
    (folder / "args.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    if epoch is not None:
        (folder / "weights").mkdir(exist_ok=True)
        torch.save({"epoch": epoch, "train_args": recorded, "model": None}, folder / "weights" / "last.pt")
    if rows:
        lines = ["epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)"]
        lines += [f"{e},{10.0 * e},{0.1 + 0.01 * e},{0.05 + 0.01 * e}" for e in range(1, rows + 1)]
        (folder / "results.csv").write_text("\n".join(lines) + "\n")
    return folder


def ultralytics_says_finished(epoch: int, epochs: int) -> bool:
    """Whether Ultralytics' own ``BaseTrainer.resume_training`` refuses this checkpoint as finished."""
    from ultralytics.engine.trainer import BaseTrainer

    fake = SimpleNamespace(resume=True, epochs=epochs, args=SimpleNamespace(model="last.pt"))
    try:
        BaseTrainer.resume_training(fake, {"epoch": epoch})
    except AssertionError as e:
        assert "is finished" in str(e)
        return True
    except Exception:  # it went on to load the optimizer state: a resumable checkpoint
        return False
    return False


@pytest.mark.parametrize(
    "epoch, expected",
    [(-1, "done"), (59, "done"), (0, "resume"), (30, "resume"), (58, "resume")],
)
def test_checkpoint_state_matches_ultralytics_resume(tmp_path, epoch, expected):
    folder = fake_run(tmp_path / "yolov8n-seed0", "d.yaml", epoch=epoch, epochs=60)
    state, reason = run_state(folder)
    assert state == expected, reason
    assert (state == "done") == ultralytics_says_finished(epoch, 60)


def test_folders_without_a_usable_checkpoint_restart_and_live_ones_wait(tmp_path):
    assert run_state(tmp_path / "absent") == ("restart", "new")
    folder = fake_run(tmp_path / "yolov8n-seed0", "d.yaml", rows=3)  # killed before its first save: no last.pt
    assert run_state(folder) == ("restart", "no weights/last.pt")
    (folder / "weights").mkdir()
    (folder / "weights" / "last.pt").write_bytes(b"PK\x03\x04 truncated while writing")
    state, reason = run_state(folder)
    assert state == "restart" and "cannot be read" in reason
    assert run_state(folder, live=True)[0] == "running"


def test_recorded_args_of_the_leads_run_match_and_differences_are_named(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("names: {0: a}\n")
    folder = fake_run(tmp_path / "neu-det" / "yolov8n-seed0", str(data), epoch=10)
    check_recorded_args(folder, "yolov8n.yaml", requested(str(data)))  # the lead's command: no error
    check_recorded_args(folder, "yolov8n.yaml", requested(str(tmp_path / "." / "data.yaml")))  # same file
    check_recorded_args(folder, "yolov8n.yaml", requested(str(data), device="0", workers=4))  # may differ on resume

    with pytest.raises(ConfigError) as e:
        check_recorded_args(folder, "yolov8n.yaml", requested(str(data), epochs=100, imgsz=320, seed=1))
    message = str(e.value)
    assert str(folder) in message
    assert "epochs: recorded 60, requested 100" in message and "imgsz" in message and "seed" in message
    assert "batch" not in message and "data" not in message
    with pytest.raises(ConfigError, match="lr0: recorded 0.01, requested 0.02"):
        check_recorded_args(folder, "yolov8n.yaml", requested(str(data), optimizer="SGD", lr0=0.02))
    with pytest.raises(ConfigError, match="optimizer: recorded 'auto', requested 'SGD'"):
        check_recorded_args(folder, "yolov8n.yaml", requested(str(data), optimizer="SGD"))
    check_recorded_args(folder, "yolov8n.yaml", requested(str(data), lr0=0.02))  # optimizer=auto ignores lr0
    with pytest.raises(ConfigError, match=r"model: recorded 'yolov8n.yaml', requested 'dsmoe-yolov8n.yaml'"):
        check_recorded_args(folder, "dsmoe-yolov8n.yaml", requested(str(data)))
    with pytest.raises(ConfigError, match="data: recorded"):
        check_recorded_args(folder, "yolov8n.yaml", requested(str(tmp_path / "other.yaml")))
    with pytest.raises(ConfigError, match="val: recorded True, requested False"):  # val=False: best.pt = last epoch
        check_recorded_args(folder, "yolov8n.yaml", requested(str(data), val=False))
    with pytest.raises(ConfigError, match=r"freeze: recorded None, requested \[22\]"):  # freeze_text=True's rows
        check_recorded_args(folder, "yolov8n.yaml", requested(str(data), freeze=[22]))

    resumed = fake_run(tmp_path / "neu-det" / "yolov8s-seed0", str(data), model=str(folder / "weights" / "last.pt"))
    check_recorded_args(resumed, "yolov8s.yaml", requested(str(data)))  # a resumed run records its last.pt
    # ... and what optimizer=auto chose (BaseTrainer.build_optimizer writes it into the checkpoint's args)
    auto = fake_run(
        tmp_path / "neu-det" / "lite-seed0",
        str(data),
        model=str(folder / "weights" / "last.pt"),
        resume=str(folder / "weights" / "last.pt"),
        optimizer="AdamW",
        lr0=0.001,
    )
    check_recorded_args(auto, "lite.yaml", requested(str(data)))
    with pytest.raises(ConfigError, match="optimizer: recorded 'AdamW', requested 'SGD'"):
        check_recorded_args(auto, "lite.yaml", requested(str(data), optimizer="SGD", lr0=0.001))
    check_recorded_args(tmp_path / "nothing-yet", "yolov8n.yaml", requested(str(data)))


def test_results_csv_rows_and_wall_time_per_epoch_across_a_resume(tmp_path):
    # Ultralytics pads headers in older versions; a resumed run repeats the epoch it was killed in (metrics saved,
    # checkpoint not), and its `time` restarts from 0.
    (tmp_path / "results.csv").write_text(
        "                  epoch,      time,  metrics/mAP50-95(B)\n"
        "1,100,0.10\n2,210,0.20\n3,330,0.25\n"  # killed in epoch 3 after its metrics row, before last.pt
        "3,115,0.26\n4,230,0.30\n"  # resumed from epoch 3: time counts from the resume
    )
    rows = read_results(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["metrics/mAP50-95(B)"] == 0.26
    assert epoch_times(rows) == [100, 110, 115, 115]
    assert read_results(tmp_path / "missing") == [] and epoch_times([]) == []


def test_wall_time_per_epoch_is_the_median_epoch(tmp_path):
    """A run paused for an hour in one epoch (a stopped process, a closed laptop) keeps its typical epoch time."""
    from dsmoe_yolo.benchmark.core import _evaluate_run

    run = Run("yolov8n.yaml", "yolov8n", 0, tmp_path / "yolov8n-seed0")
    run.dir.mkdir()
    (run.dir / "results.csv").write_text("epoch,time\n1,70\n2,3740\n3,3810\n4,75\n5,145\n")  # resumed at 4
    failures = []
    row, classes, history = _evaluate_run(run, "killed", {}, failures)
    assert row["s_per_epoch"] == 70 and row["epochs"] == 5 and row["status"] == "failed: train: killed"
    assert classes == [] and len(history) == 5 and failures[0]["stage"] == "train"


def test_training_folders_are_found_on_command_lines(tmp_path):
    lead = [
        "/work/venv/bin/python",
        "/work/venv/bin/yolo",
        "train",
        "model=yolov8n.yaml",
        "seed=0",
        "project=/work/campaign/neu-det",
        "name=yolov8n-seed0",
        "exist_ok=True",
    ]
    assert train_dirs_in_argv(lead, Path("/")) == {Path("/work/campaign/neu-det/yolov8n-seed0")}
    relative = ["yolo", "train", "project=campaign/neu-det", "name=lite-seed1"]
    assert train_dirs_in_argv(relative, Path("/home/u")) == {Path("/home/u/campaign/neu-det/lite-seed1")}
    resume = ["yolo", "train", "resume", "model=/c/neu-det/yolov8n-seed1/weights/last.pt"]
    assert train_dirs_in_argv(resume, Path("/")) == {Path("/c/neu-det/yolov8n-seed1")}
    assert train_dirs_in_argv(["yolo", "val", "model=/c/best.pt", "project=/c"], Path("/")) == set()
    ours = worker_command("yolov8n.yaml", tmp_path / "b" / "yolov8n-seed2", {"data": "d.yaml", "epochs": 3}, False)
    assert train_dirs_in_argv(ours, Path("/")) == {(tmp_path / "b" / "yolov8n-seed2").resolve()}


def test_worker_arguments_round_trip():
    from dsmoe_yolo.benchmark.train import _parse

    args = {
        "data": "/d/data.yaml",
        "epochs": 60,
        "imgsz": 224,
        "batch": 16,
        "device": "cpu",
        "workers": 0,
        "fraction": 1.0,
        "optimizer": "auto",
        "patience": 100,
        "nbs": 64,
        "val": False,
        "seed": 1,
        "lr0": 0.005,
    }
    cmd = worker_command("dsmoe-lite-yolov8n.yaml", Path("/c/neu-det/dsmoe-lite-yolov8n-seed1"), args, True)
    assert cmd[1:3] == ["-m", "dsmoe_yolo.benchmark.train"]
    parsed = _parse(cmd[3:])
    assert parsed == {
        "model": "dsmoe-lite-yolov8n.yaml",
        "project": "/c/neu-det",
        "name": "dsmoe-lite-yolov8n-seed1",
        "resume": True,
        **args,
    }
    assert "device" not in _parse(worker_command("m.yaml", Path("/c/r/m-seed0"), {**args, "device": None}, False)[3:])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="live-process detection reads Linux /proc")
def test_a_live_training_process_is_detected(tmp_path):
    folder = tmp_path / "neu-det" / "yolov8n-seed0"
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
            "train",
            f"project={folder.parent}",
            f"name={folder.name}",
        ]
    )
    try:
        deadline = time.time() + 10
        while folder.resolve() not in live_train_dirs() and time.time() < deadline:
            time.sleep(0.1)
        assert live_train_dirs().get(folder.resolve()) == p.pid
        assert folder.resolve() not in live_train_dirs(exclude=[p.pid])
    finally:
        p.kill()
        p.wait()
    assert folder.resolve() not in live_train_dirs()


class FakeTraining:
    """A training handle that runs for ``polls`` polls, then reports ``outcome``; counts the trainings at once."""

    active = 0
    peak = 0

    def __init__(self, outcome: str = "", polls: int = 2):
        self.outcome, self.left = outcome, polls
        FakeTraining.active += 1
        FakeTraining.peak = max(FakeTraining.peak, FakeTraining.active)

    def poll(self):
        self.left -= 1
        if self.left > 0:
            return None
        FakeTraining.active -= 1
        return self.outcome


def test_scheduler_skips_finished_resumes_interrupted_restarts_empty_and_waits_for_live_runs(tmp_path):
    FakeTraining.active = FakeTraining.peak = 0
    runs = make_runs(["yolov8n.yaml", "lite.yaml", "dsmoe.yaml"], [0, 1], tmp_path)
    by_name = {r.name: r for r in runs}
    fake_run(by_name["yolov8n-seed0"].dir, "d.yaml", epoch=-1)  # finished
    fake_run(by_name["lite-seed0"].dir, "d.yaml", epoch=59)  # all epochs saved, final val not run: finished
    fake_run(by_name["dsmoe-seed0"].dir, "d.yaml", epoch=12)  # interrupted
    fake_run(by_name["yolov8n-seed1"].dir, "d.yaml", rows=1)  # killed before its first last.pt
    fake_run(by_name["lite-seed1"].dir, "d.yaml", epoch=5)  # being trained by someone else for 3 looks
    live_looks = {"n": 0}

    def live():
        live_looks["n"] += 1
        return {by_name["lite-seed1"].dir.resolve(): 4242} if live_looks["n"] <= 3 else {}

    started, sleeps, log = [], [], []

    def start(run: Run, resume: bool):
        elsewhere = 1 if live_looks["n"] <= 3 else 0  # pid 4242 still training lite-seed1
        assert FakeTraining.active + elsewhere < 2, "more than jobs=2 trainings at once"
        started.append((run.name, resume))
        return FakeTraining("boom: out of memory" if run.name == "dsmoe-seed1" else "")

    errors = train_all(runs, start, jobs=2, poll_s=7, live=live, sleep=sleeps.append, log=log.append)
    # finished seed-0 runs skipped; lite-seed1 resumed only once pid 4242 was gone
    assert started == [("dsmoe-seed0", True), ("yolov8n-seed1", False), ("lite-seed1", True), ("dsmoe-seed1", False)]
    assert FakeTraining.peak == 2 and FakeTraining.active == 0
    assert errors == {by_name["dsmoe-seed1"]: "boom: out of memory"}
    assert sleeps and set(sleeps) == {7}
    assert sum("waiting for" in x and "pid 4242" in x for x in log) == 1
    assert sum("is finished" in x and "skipped" in x for x in log) == 2

    FakeTraining.active = FakeTraining.peak = 0
    started.clear()
    train_all(runs[:3], start, jobs=1, poll_s=7, live=dict, sleep=sleeps.append, log=log.append)
    assert FakeTraining.peak == 1


def test_seeds_and_jobs_arguments():
    base = dict(data="d.yaml", models="a.yaml", epochs=1, imgsz=64, batch=2, latency_runs=10)
    assert check_args(**base, seed=0, seeds=None, jobs=1)["seeds"] == [0]
    assert check_args(**base, seed=3, seeds=None, jobs=1)["seeds"] == [3]
    assert check_args(**base, seed=0, seeds="0,1,2", jobs=2)["seeds"] == [0, 1, 2]
    assert check_args(**base, seed=0, seeds=4, jobs=2)["seeds"] == [4]
    assert check_args(**base, seed=0, seeds=[2, 1], jobs=2)["seeds"] == [2, 1]
    for bad in ("0,0", "0,x", "-1", "1.5"):
        with pytest.raises(ConfigError, match="seeds="):
            check_args(**base, seed=0, seeds=bad, jobs=1)
    with pytest.raises(ConfigError, match="disagree"):
        check_args(**base, seed=3, seeds="0,1", jobs=1)
    with pytest.raises(ConfigError, match="jobs=0"):
        check_args(**base, seed=0, seeds=None, jobs=0)
    runs = make_runs(["m/yolov8n.yaml", "x/yolov8n.yaml"], [0, 1], Path("/r"))
    assert [r.dir for r in runs] == [
        Path(p) for p in ("/r/yolov8n-seed0", "/r/yolov8n-2-seed0", "/r/yolov8n-seed1", "/r/yolov8n-2-seed1")
    ]


def test_mean_and_sample_std_over_seeds_and_per_class_means():
    assert mean_std([]) == (None, None) and mean_std([0.25]) == (0.25, None)
    mean, std = mean_std([0.2, 0.4, 0.3])
    assert math.isclose(mean, 0.3) and math.isclose(std, 0.1)  # sample std (n - 1)
    runs = [
        {
            "model": "a",
            "seed": 0,
            "status": "ok",
            "mAP50": 0.5,
            "mAP50-95": 0.2,
            "P": 0.6,
            "R": 0.4,
            "epochs": 60,
            "s_per_epoch": 50.0,
        },
        {
            "model": "a",
            "seed": 1,
            "status": "ok",
            "mAP50": 0.7,
            "mAP50-95": 0.4,
            "P": 0.6,
            "R": 0.5,
            "epochs": 40,
            "s_per_epoch": 70.0,
        },
        {"model": "a", "seed": 2, "status": "failed: train: killed", "mAP50": None},
        {"model": "b", "seed": 0, "status": "failed: train: no such file"},
    ]
    a, b = model_rows(["a", "b"], runs, {"a": {"params_M": 3.0, "seed": 0}})
    assert a["seeds"] == [0, 1] and a["params_M"] == 3.0 and a["seed"] == 0
    assert math.isclose(a["mAP50"], 0.6) and math.isclose(a["mAP50_std"], math.sqrt(0.02))
    assert math.isclose(a["mAP50-95"], 0.3) and math.isclose(a["epochs"], 50) and math.isclose(a["s_per_epoch"], 60)
    assert a["P_std"] == 0.0
    assert a["status"] == "2 of 3 seeds ok; seed 2 failed: train: killed"
    assert b["status"] == "failed: train: no such file" and b["mAP50"] is None and b["seeds"] == []
    assert model_rows(["a"], runs[:2], {"a": {"error": "ONNX export: x"}})[0]["status"] == "failed: ONNX export: x"

    classes = [
        {"model": "a", "seed": 0, "class": "crazing", "AP50-95": 0.1},
        {"model": "a", "seed": 1, "class": "crazing", "AP50-95": 0.3},
        {"model": "b", "seed": 0, "class": "crazing", "AP50-95": 0.5},
    ]
    means = per_class_means(classes)
    assert math.isclose(means[("a", "crazing")][0], 0.2) and means[("a", "crazing")][2] == 2
    assert means[("b", "crazing")] == (0.5, None, 1)


def test_report_shows_mean_std_per_model_and_one_csv_row_per_seed(tmp_path):
    runs = [
        {
            "model": "a.yaml",
            "seed": 0,
            "status": "ok",
            "mAP50": 0.5,
            "mAP50-95": 0.2,
            "P": 0.6,
            "R": 0.4,
            "epochs": 60,
            "s_per_epoch": 50.0,
            "dir": "/r/a-seed0",
        },
        {
            "model": "a.yaml",
            "seed": 1,
            "status": "ok",
            "mAP50": 0.7,
            "mAP50-95": 0.4,
            "P": 0.6,
            "R": 0.5,
            "epochs": 60,
            "s_per_epoch": 70.0,
            "dir": "/r/a-seed1",
        },
    ]
    rows = model_rows(
        ["a.yaml"], runs, {"a.yaml": {"params_M": 3.01, "GFLOPs": 2.0, "latency_torch_ms": 15.3, "seed": 0}}
    )
    classes = [
        {"model": "a.yaml", "seed": s, "class_id": 0, "class": "crazing", "AP50": 0.5, "AP50-95": ap}
        for s, ap in ((0, 0.1), (1, 0.3))
    ]
    cfg = {
        "train": {"data": "d.yaml", "epochs": 60, "imgsz": 224},
        "seeds": [0, 1],
        "latency_runs": 10,
        "command": "dsmoe x",
    }
    out = write_outputs(tmp_path, rows, runs, classes, {"names": {0: "crazing"}}, cfg, 1, tmp_path / "benchmark.png")
    md = out["markdown"].read_text()
    assert "| a.yaml | 3.01 | 2.000 | - | 15.3 | - | 0.600 ± 0.141 | 0.300 ± 0.141 | 0.600 ± 0.000 |" in md
    assert "| 0,1 | 60 ± 0 | 60.0 ± 14.1 | ok |" in md
    assert "| crazing | 0.200 |" in md and "seed=0,1 (one run per seed)" in md
    assert "![validation mAP50-95 per epoch](benchmark.png)" in md and "busy CPU" not in md
    rows[0]["latency_warning"] = "other processes kept 1.0 of 2 CPU cores busy"
    md = write_outputs(tmp_path, rows, runs, classes, {"names": {0: "crazing"}}, cfg, 1, None)["markdown"].read_text()
    assert "**Latency measured on a busy CPU**: a.yaml: other processes kept 1.0 of 2 CPU cores busy." in md
    with open(out["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["seed"], r["mAP50"], r["params M"]) for r in table] == [
        ("a.yaml", "0", "0.5", "3.01"),
        ("a.yaml", "1", "0.7", "3.01"),
    ]
    with open(out["per_class_csv"], newline="") as f:
        assert [(r["seed"], r["AP50-95"]) for r in csv.DictReader(f)] == [("0", "0.1"), ("1", "0.3")]


def test_tables_name_a_model_given_by_path_by_its_file(tmp_path):
    """``models=/x/models/v.yaml``: the tables show ``v.yaml``; benchmark.csv keeps the path as given."""
    from dsmoe_yolo.benchmark.report import main_table, per_class_table

    model = str(tmp_path / "models" / "dsmoe-lite-k1-yolov8n.yaml")
    assert main_table([{"model": model, "status": "ok"}]).splitlines()[2].startswith("| dsmoe-lite-k1-yolov8n.yaml |")
    classes = [{"model": model, "seed": 0, "class": "crazing", "AP50-95": 0.25}]
    table = per_class_table([model], ["crazing"], classes)
    assert table.splitlines()[0] == "| class | dsmoe-lite-k1-yolov8n.yaml |" and "| crazing | 0.250 |" in table


def test_chart_has_one_line_per_model_and_seed(tmp_path):
    from dsmoe_yolo.benchmark.plot import plot_runs

    a = fake_run(tmp_path / "a-seed0", "d.yaml", rows=5)
    b = fake_run(tmp_path / "b-seed0", "d.yaml", rows=3)
    curves = [("a", 0, read_results(a)), ("a", 1, read_results(a)), ("b", 0, read_results(b)), ("c", 0, [])]
    out = plot_runs(curves, tmp_path / "benchmark.png")
    assert out == tmp_path / "benchmark.png" and out.stat().st_size > 10_000
    assert plot_runs([("c", 0, [])], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_existing_run_with_other_settings_stops_before_training(tiny_data, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("training started although a run folder records other settings")

    monkeypatch.setattr("ultralytics.engine.model.Model.train", boom)
    fake_run(tmp_path / "c" / "yolov8n-seed1", str(tiny_data), epoch=3, epochs=60, imgsz=224, batch=16, seed=1)
    with pytest.raises(ConfigError) as e:
        run_benchmark(
            data=str(tiny_data),
            models="yolov8n.yaml",
            seeds="0,1",
            epochs=60,
            imgsz=224,
            batch=8,
            project=str(tmp_path),
            name="c",
            exist_ok=True,
            onnx=False,
        )
    assert str(tmp_path / "c" / "yolov8n-seed1") in str(e.value) and "batch: recorded 16, requested 8" in str(e.value)
    assert not (tmp_path / "c" / "yolov8n-seed0").exists()


@pytest.mark.slow
def test_hand_started_runs_are_picked_up_finished_skipped_interrupted_resumed(tiny_data, tmp_path):
    """The lead's layout: seed 0 trained to the end by hand with `yolo train ... project=<run dir>
    name=yolov8n-seed0`, seed 1 stopped after its first epoch's checkpoint (as a kill would leave it). The benchmark
    command then skips seed 0, resumes seed 1 in a worker, and reports both; other settings stop it."""
    from ultralytics import YOLO

    from dsmoe_yolo.cli import main

    run_dir = tmp_path / "neu-det"
    settings = dict(
        data=str(tiny_data),
        epochs=2,
        imgsz=64,
        batch=4,
        deterministic=True,
        workers=0,
        device="cpu",
        nbs=64,
        optimizer="auto",
        patience=100,
        fraction=1.0,
        project=str(run_dir),
        exist_ok=True,
        plots=True,
    )
    yolo = [sys.executable, "-c", "from ultralytics.cfg import entrypoint; entrypoint()"]
    cmd = [
        *yolo,
        "train",
        "model=yolov8n.yaml",
        "seed=0",
        "name=yolov8n-seed0",
        *(f"{k}={v}" for k, v in settings.items()),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    seed0, seed1 = run_dir / "yolov8n-seed0", run_dir / "yolov8n-seed1"
    assert run_state(seed0) == ("done", "final checkpoint")
    finished = (seed0 / "weights" / "last.pt").stat().st_mtime_ns

    def kill_after_first_epoch(trainer):  # on_fit_epoch_end runs after save_model wrote last.pt
        raise RuntimeError("simulated kill")

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_fit_epoch_end", kill_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated kill"):
        model.train(**settings, seed=1, name="yolov8n-seed1")
    assert run_state(seed1) == ("resume", "epoch 1 of 2 saved")

    assert (
        main(
            [
                "benchmark",
                f"data={tiny_data}",
                "models=yolov8n.yaml",
                "seeds=0,1",
                "epochs=2",
                "imgsz=64",
                "batch=4",
                f"project={tmp_path}",
                "name=neu-det",
                "exist_ok=True",
                "jobs=2",
                "onnx=False",
            ]
        )
        == 0
    )
    assert (seed0 / "weights" / "last.pt").stat().st_mtime_ns == finished  # not trained again
    assert run_state(seed1)[0] == "done" and [r["epoch"] for r in read_results(seed1)] == [1, 2]
    assert "Resuming training" in (run_dir / "logs" / "yolov8n-seed1.log").read_text()
    assert not (run_dir / "logs" / "yolov8n-seed0.log").exists()
    with open(run_dir / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"], r["status"], r["epochs"]) for r in rows] == [
        ("yolov8n.yaml", "0", "ok", "2"),
        ("yolov8n.yaml", "1", "ok", "2"),
    ]
    assert "| yolov8n.yaml |" in (run_dir / "benchmark.md").read_text() and (run_dir / "benchmark.png").is_file()
    with pytest.raises(ConfigError, match="epochs: recorded 2, requested 3"):
        run_benchmark(
            data=str(tiny_data),
            models="yolov8n.yaml",
            seeds="0,1",
            epochs=3,
            imgsz=64,
            batch=4,
            project=str(tmp_path),
            name="neu-det",
            exist_ok=True,
            onnx=False,
        )


@pytest.mark.slow
def test_a_failing_worker_reports_its_error_line(tiny_data, tmp_path):
    from dsmoe_yolo.benchmark.train import Worker

    args = dict(data=str(tiny_data), epochs=1, imgsz=64, batch=4, device="cpu", workers=0, seed=0)
    worker = Worker("no-such-model.yaml", tmp_path / "r" / "no-such-model-seed0", args, False, tmp_path / "w.log")
    deadline = time.time() + 300
    while (outcome := worker.poll()) is None and time.time() < deadline:
        time.sleep(0.2)
    assert outcome and "no-such-model.yaml" in outcome and not outcome.startswith("worker exited"), outcome


def test_gpu_protocol_script_parses_and_names_the_protocol():
    """The H200 script is not run here (it needs CUDA and carried wheels); check it parses and keeps its protocol."""
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = Path(__file__).parents[1] / "examples" / "gpu_protocol.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for needle in (
        "dsmoe-yolov8s.yaml,dsmoe-lite-yolov8s.yaml,yolov8s.yaml",
        "IMGSZ=${IMGSZ:-640}",
        "EPOCHS=${EPOCHS:-",
        "dsmoe embed data=gpu/deeppcb/data.yaml",
        "embeddings: embeddings.pt",
        'timeout "$BUDGET_S"',
        "jobs=3",
        '"$OUT/',
        "DATA=gpu/neu-det/data.yaml NAME=neu-det IMGSZ=224 EPOCHS=60",  # the CPU campaign's NEU-DET recipe
        "MODELS=dsmoe-yolov8n.yaml,dsmoe-lite-yolov8n.yaml,yolov8n.yaml",
        'name="$NAME"',
    ):
        assert needle in text, needle
