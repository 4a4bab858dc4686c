"""examples/ablations.py: the lite model's ablation variants build, differ where they should, and the commands run
every variant through `dsmoe benchmark` with one recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import dsmoe_yolo.plugin as plugin
from dsmoe_yolo.text.prompts import load_prompts

NAMES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


@pytest.fixture(scope="module")
def ablations(load_example):
    return load_example("ablations")


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


def test_commands_share_one_recipe_one_variant_each(ablations, data, tmp_path):
    lines = ablations.commands(str(data), str(tmp_path / "out"), epochs=3)
    assert [line[:2] for line in lines] == [["dsmoe", "benchmark"]] * 12
    for line in lines:
        assert {"epochs=3", "imgsz=224", "batch=16", "seeds=0", "exist_ok=True", "jobs=1"} <= set(line)
    names = [line[-1].removeprefix("name=") for line in lines]
    assert names[:3] == ["shuffled", "templates", "dense"] and names[-1] == "k5"  # the shipped model, often reused
    assert len(set(names)) == 12
    models = {name: Path(line[3].removeprefix("models=")).name for name, line in zip(names, lines)}
    assert models["shuffled"] == models["templates"] == models["k5"] == "dsmoe-lite-k5-yolov8n.yaml"
    assert all(models[n] == f"dsmoe-lite-{n}-yolov8n.yaml" for n in ablations.ORDER)
    assert all(line[2] == f"data={data.resolve()}" for name, line in zip(names, lines) if name in ablations.ORDER)
    picked = ablations.commands(str(data), str(tmp_path / "out"), only="nohyp, dense")
    assert [line[-1] for line in picked] == ["name=nohyp", "name=dense"]  # in the order asked
    with pytest.raises(ValueError, match=r"only=dense,k3: unknown variant\(s\) \['k3'\]; choose from shuffled"):
        ablations.commands(str(data), str(tmp_path / "out"), only="dense,k3")
    ov = ablations.commands(str(data), str(tmp_path / "out"), only="templates,dense", text_model="dsmoe-ov.yaml")
    assert [line[3] for line in ov] == [
        "models=dsmoe-ov.yaml",
        f"models={models_dir(tmp_path)}/dsmoe-lite-dense-yolov8n.yaml",
    ]
    assert ov[0][2].endswith("-templates.yaml")  # the text variant's data, on the open-vocabulary model


def models_dir(tmp_path: Path) -> Path:
    return (tmp_path / "out" / "models").resolve()


def _train_dir(path: Path, model: str) -> Path:
    (path / "weights").mkdir(parents=True)
    (path / "weights" / "last.pt").write_bytes(b"checkpoint")
    (path / "args.yaml").write_text(yaml.safe_dump({"model": model, "epochs": 60}))
    return path


def test_k5_reuses_a_finished_shipped_run_once(ablations, tmp_path):
    run = _train_dir(tmp_path / "campaign" / "dsmoe-lite-yolov8n-seed0", "dsmoe-lite-yolov8n.yaml")
    target = ablations.reuse_k5(str(run), str(tmp_path / "out"), "n", 0)
    assert target == tmp_path / "out" / "k5" / "dsmoe-lite-k5-yolov8n-seed0"
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


class _FakeProcess:
    """A command that ends after `polls` looks (dense runs longest; nohyp fails)."""

    def __init__(self, argv, env, log):
        self.argv, self.code, self.returncode = argv, 1 if "name=nohyp" in argv else 0, None
        self.polls = 3 if "name=dense" in argv else 1
        log.append(("start", argv[-1], (env or {}).get("OMP_NUM_THREADS")))
        self.log = log

    def poll(self):
        self.polls -= 1
        if self.polls == 0:
            self.log.append(("end", self.argv[-1]))
            self.returncode = self.code
        return self.returncode


def test_run_uses_this_interpreters_cli_jobs_at_a_time(ablations, data, tmp_path, monkeypatch):
    """`python examples/ablations.py ... run=True` with a venv's python called by its path (no `dsmoe` on PATH)."""
    import subprocess
    import sys

    log, argvs = [], []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dsmoe` anywhere
    monkeypatch.setattr(
        ablations.subprocess, "Popen", lambda argv, env: argvs.append(argv) or _FakeProcess(argv, env, log)
    )
    monkeypatch.setattr(ablations.time, "sleep", lambda s: None)
    ablations.main([f"data={data}", f"out={tmp_path / 'out'}", "epochs=1", "run=True", "jobs=1", "only=dense,k1"])
    assert log == [("start", "name=dense", None), ("end", "name=dense"), ("start", "name=k1", None), ("end", "name=k1")]
    assert all(a[:4] == [sys.executable, "-m", "dsmoe_yolo.cli", "benchmark"] for a in argvs)
    log.clear()
    with pytest.raises(RuntimeError, match="the command of nohyp failed"):  # the others still ran
        ablations.main([f"data={data}", f"out={tmp_path / 'out'}", "run=True", "jobs=2", "only=dense,nohyp,k1"])
    starts = [(e[1], e[2]) for e in log if e[0] == "start"]
    assert starts == [("name=dense", "1"), ("name=nohyp", "1"), ("name=k1", "1")]
    # two at a time, never three; k1 takes the core of whichever ends first (nohyp), not of the first started
    assert log.index(("end", "name=nohyp")) < log.index(("start", "name=k1", "1")) < log.index(("end", "name=dense"))
    monkeypatch.undo()  # the real Popen (subprocess.run uses it) for the CLI check
    help_ = subprocess.run([*argvs[0][:4], "--help"], capture_output=True, text=True, timeout=120)
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
    dense = out / "dense" / "dsmoe-lite-dense-yolov8n-seed0"
    dense.mkdir(parents=True)
    (out / "dense" / "benchmark.csv").write_text(header + f"dsmoe-lite-dense-yolov8n.yaml,0,0.64,0.33,,,,,ok,{dense}\n")
    ablations.main([f"out={out}", "report=True"])
    rows = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert len(rows) == len(ablations.REPORT_ROWS) == 13
    assert rows["k = 1"].endswith("| 0.600 | 0.310 | 0.700 | 0.550 | 31.2 | - | ok |")  # the earlier one-folder layout
    assert rows["one dense text-conditioned layer"].endswith("| 0.640 | 0.330 | - | - | - | - | ok |")
    assert rows["k = 2"].endswith("| - | not started |")
    assert rows["descriptions shuffled between classes"].endswith(
        "training: epoch 3/60, best val mAP50-95 so far 0.125 |"
    )
    assert rows["class-name templates"].endswith("| - | not started |")
    assert (out / "ablations.md").read_text().count("\n") == 15
    with pytest.raises(SystemExit, match="out=.*missing.*does not exist"):
        ablations.main([f"out={tmp_path / 'missing'}", "report=True"])
