"""examples/ablations.py: the lite model's ablation variants build, differ where they should, and the commands run
every variant through `dsmoe benchmark` with one recipe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

import dsmoe_yolo.plugin as plugin
from dsmoe_yolo.text.prompts import load_prompts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ablations.py"
NAMES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("ablations_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "neu" / "data.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": dict(enumerate(NAMES))}))
    return path


def test_variants_build_and_differ_where_they_should(ablations, data, tmp_path):
    plugin.register()
    from ultralytics.nn.tasks import DetectionModel

    models, datas = ablations.write(str(data), str(tmp_path / "out"))
    assert set(models) == {"k1", "k2", "k5", "k8", "k32", "nohyp", "dense", "qfocal", "qfocal-cls8", "qfocal-cls32"}
    kinds = {}
    for name in ("k1", "k32", "nohyp", "dense"):  # k5 = the shipped YAML; the loss variants differ in one key
        model = DetectionModel(str(models[name]), nc=6, verbose=False)
        kinds[name] = [type(m).__name__ for m in model.model]
        moe = [m for m in model.model if type(m).__name__ == "SparseMoE"]
        if name.startswith("k"):
            assert moe[0].top_k == int(name[1:]) and len(moe[0].experts) == 32
    assert "HyperbolicAlign" in kinds["k1"] and "HyperbolicAlign" not in kinds["nohyp"]
    assert "SparseMoE" not in kinds["dense"] and "PlainTextFusion" in kinds["dense"]
    loss = {n: yaml.safe_load(models[n].read_text()).get("loss") for n in ("k5", "qfocal", "qfocal-cls8")}
    assert loss == {"k5": None, "qfocal": "qfocal_ciou", "qfocal-cls8": {"type": "qfocal_ciou", "cls_scale": 8}}
    templates = load_prompts(yaml.safe_load(datas["templates"].read_text())["prompts"])
    shuffled = load_prompts(yaml.safe_load(datas["shuffled"].read_text())["prompts"])
    assert list(templates) == NAMES and all(len(t) == 1 for t in templates.values())
    assert shuffled["crazing"] == load_prompts(Path(ablations.ROOT) / "cfg/prompts/neu-det.yaml")["inclusion"]
    assert Path(yaml.safe_load(datas["shuffled"].read_text())["path"]) == data.parent


def test_commands_share_one_recipe(ablations, data, tmp_path):
    lines = ablations.commands(str(data), str(tmp_path / "out"), epochs=3, jobs=1)
    assert [line[:2] for line in lines] == [["dsmoe", "benchmark"]] * 3
    for line in lines:
        assert {"epochs=3", "imgsz=224", "batch=16", "seeds=0", "exist_ok=True", "jobs=1"} <= set(line)
    assert lines[0][3].endswith("dsmoe-lite-k5-yolov8n.yaml") and lines[1][3].endswith("dsmoe-lite-k5-yolov8n.yaml")
    curated = [Path(p).name for p in lines[2][3].removeprefix("models=").split(",")]
    assert len(set(curated)) == 10 and curated[0] == "dsmoe-lite-dense-yolov8n.yaml"
    assert curated[-1] == "dsmoe-lite-k5-yolov8n.yaml"  # the shipped model, often reused (k5=), last
    assert [line[-1] for line in lines] == ["name=shuffled", "name=templates", "name=curated"]


def _train_dir(path: Path, model: str) -> Path:
    (path / "weights").mkdir(parents=True)
    (path / "weights" / "last.pt").write_bytes(b"checkpoint")
    (path / "args.yaml").write_text(yaml.safe_dump({"model": model, "epochs": 60}))
    return path


def test_k5_reuses_a_finished_shipped_run_once(ablations, tmp_path):
    run = _train_dir(tmp_path / "campaign" / "dsmoe-lite-yolov8n-seed0", "dsmoe-lite-yolov8n.yaml")
    target = ablations.reuse_k5(str(run), str(tmp_path / "out"), "n", 0)
    assert target == tmp_path / "out" / "curated" / "dsmoe-lite-k5-yolov8n-seed0"
    assert (target / "weights" / "last.pt").read_bytes() == b"checkpoint"
    args = yaml.safe_load((target / "args.yaml").read_text())
    assert args == {"model": str((tmp_path / "out" / "models" / "dsmoe-lite-k5-yolov8n.yaml").resolve()), "epochs": 60}
    assert str(run.resolve()) in (target / "REUSED.txt").read_text()
    (target / "weights" / "last.pt").write_bytes(b"resumed here")  # a second call must not overwrite it
    ablations.reuse_k5(str(run), str(tmp_path / "out"), "n", 0)
    assert (target / "weights" / "last.pt").read_bytes() == b"resumed here"


def test_k5_refuses_another_model_or_no_run(ablations, tmp_path):
    other = _train_dir(tmp_path / "yolov8n-seed0", "yolov8n.yaml")
    with pytest.raises(ValueError, match="yolov8n.yaml, not dsmoe-lite-yolov8n.yaml"):
        ablations.reuse_k5(str(other), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="not a training folder"):
        ablations.reuse_k5(str(tmp_path / "nothing"), str(tmp_path / "out"))


def test_run_uses_this_interpreters_cli_not_path(ablations, data, tmp_path, monkeypatch):
    """`python examples/ablations.py ... run=True` with a venv's python called by its path (no `dsmoe` on PATH)."""
    import subprocess
    import sys

    calls, real_run = [], subprocess.run
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dsmoe` anywhere
    monkeypatch.setattr(ablations.subprocess, "run", lambda argv, check: calls.append(argv))
    ablations.main([f"data={data}", f"out={tmp_path / 'out'}", "epochs=1", "run=True"])
    assert len(calls) == 3 and all(c[:4] == [sys.executable, "-m", "dsmoe_yolo.cli", "benchmark"] for c in calls)
    help_ = real_run([*calls[0][:4], "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: dsmoe benchmark"), help_.stderr


def test_report_gathers_finished_rows_and_the_state_of_the_others(ablations, tmp_path, capsys):
    out = tmp_path / "out"
    k1 = out / "curated" / "dsmoe-lite-k1-yolov8n-seed0"
    k1.mkdir(parents=True)
    header = "model,seed,mAP50,mAP50-95,P,R,latency PyTorch ms,latency ORT ms,status,run dir\n"
    (out / "curated" / "benchmark.csv").write_text(
        header + f"dsmoe-lite-k1-yolov8n.yaml,0,0.6,0.31,0.7,0.55,31.25,,ok,{k1}\n"
    )
    shuffled = _train_dir(out / "shuffled" / "dsmoe-lite-k5-yolov8n-seed0", "dsmoe-lite-k5-yolov8n.yaml")
    (shuffled / "results.csv").write_text("  epoch,  metrics/mAP50-95(B)\n1,0.05\n2,0.125\n3,0.1\n")
    ablations.main([f"out={out}", "report=True"])
    rows = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert len(rows) == len(ablations.REPORT_ROWS) == 13
    assert rows["k = 1"].endswith("| 0.600 | 0.310 | 0.700 | 0.550 | 31.2 | - | ok |")
    assert rows["descriptions shuffled between classes"].endswith(
        "training: epoch 3/60, best val mAP50-95 so far 0.125 |"
    )
    assert rows["class-name templates"].endswith("| - | not started |")
    assert (out / "ablations.md").read_text().count("\n") == 15
    with pytest.raises(SystemExit, match="out=.*missing.*does not exist"):
        ablations.main([f"out={tmp_path / 'missing'}", "report=True"])
