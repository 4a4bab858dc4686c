"""examples/cpu_campaign.sh (the commands of docs/results.md): run with stand-ins for `dsmoe` and `python` that only record
their arguments, then check every recorded `dsmoe benchmark` line against the real CLI parser and argument checks."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dsmoe_yolo.benchmark import run_benchmark
from dsmoe_yolo.benchmark.settings import check_args
from dsmoe_yolo.cli import COMMANDS, parse_args

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cpu_campaign.sh"
RECORDER = '#!/usr/bin/env bash\nprintf "%s\\n" "$(basename "$0") $*" >> "$CALLS"\n'
# `python -c` asks a training folder's state (runs.run_state): a fresh campaign has none, so every training starts.
STATE = 'if [ "$1" = "-c" ]; then echo restart; fi\n'
PRETRAINED = ("dsmoe-ov-lite-yolov8n", "yolov8n")  # step 6
VARIANTS = ("dsmoe-ov-lite-routed-yolov8n", "dsmoe-ov-lite-dense-yolov8n")  # step 11


@pytest.fixture
def calls(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dsmoe", "python", "yolo"):
        (bin_dir / name).write_text(RECORDER + (STATE if name == "python" else ""))
        (bin_dir / name).chmod(0o755)
    # what steps 6, 11 and 12 leave behind (the stand-in `yolo` trains nothing)
    for held, model in [*(("neu", m) for m in (*PRETRAINED, *VARIANTS)), *(("pcb", m) for m in PRETRAINED)]:
        (tmp_path / "out" / f"pretrain-no-{held}" / model / "weights").mkdir(parents=True)
        (tmp_path / "out" / f"pretrain-no-{held}" / model / "weights" / "best.pt").write_bytes(b"")
    data = tmp_path / "data"
    for name in ("neu-det", "deeppcb", "kolektorsdd", "crackforest"):
        (data / name).mkdir(parents=True)
    log = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(log))
    subprocess.run(["bash", str(SCRIPT), str(data), str(tmp_path / "out")], env=env, check=True, timeout=60)
    return data, tmp_path / "out", log.read_text().splitlines()


def benchmarks_by_name(lines: list[str]) -> dict[str, dict]:
    """Every recorded `dsmoe benchmark` line, parsed by the real CLI parser, by its ``name=``."""
    parsed = (
        parse_args(x.split()[2:], COMMANDS["benchmark"], "benchmark") for x in lines if x.startswith("dsmoe benchmark ")
    )
    return {args["name"]: args for args in parsed}


def test_every_benchmark_line_parses_and_checks(calls):
    data, out, lines = calls
    benchmarks = [line.split()[2:] for line in lines if line.startswith("dsmoe benchmark ")]
    assert len(benchmarks) == 23
    parsed = [parse_args(tokens, COMMANDS["benchmark"], "benchmark") for tokens in benchmarks]
    defaults = {k: p.default for k, p in inspect.signature(run_benchmark).parameters.items()}
    for args in parsed:
        check_args(**{k: args.get(k, defaults[k]) for k in inspect.signature(check_args).parameters})
        assert args["project"] == str(out) and args["exist_ok"] is True
    by_name = {args["name"]: args for args in parsed}
    assert set(by_name) == {
        "neu-det",
        "deeppcb",
        "neu-det-dsmoe",
        "deeppcb-seed1",
        "neu-det-ov",
        "deeppcb-ov",
        "neu-det-5pct",
        "neu-det-25pct",
        "neu-det-union-start",
        "neu-det-5pct-routed",
        "neu-det-5pct-dense",
        "neu-det-25pct-routed",
        "neu-det-25pct-dense",
        "deeppcb-5pct",
        "deeppcb-25pct",
        "deeppcb-5pct-ov-scratch",
        "deeppcb-union-start",
        "deeppcb-5pct-frozen-text",
        "deeppcb-25pct-frozen-text",
        "neu-det-5pct-dense-frozen-text",
        "neu-det-25pct-dense-frozen-text",
        "deeppcb-5pct-text-spread",
        "deeppcb-5pct-text-spread-0.1",
    }
    for closed, ov in (("neu-det", "neu-det-ov"), ("deeppcb", "deeppcb-ov")):  # step 5: steps 1 and 2's recipes
        same = {k: v for k, v in by_name[ov].items() if k not in ("models", "name", "seeds")}
        assert same == {k: v for k, v in by_name[closed].items() if k not in ("models", "name", "seeds")}
        assert by_name[ov]["models"] == "dsmoe-ov-lite-yolov8n.yaml" and by_name[ov]["seeds"] == "0,1"
    neu, pcb, full = by_name["neu-det"], by_name["deeppcb"], by_name["neu-det-dsmoe"]
    pcb1 = by_name["deeppcb-seed1"]  # DeepPCB's second seed: step 2's recipe with seed 1
    assert (pcb["seeds"], pcb1["seeds"]) == (0, 1)
    assert {k: v for k, v in pcb1.items() if k not in ("seeds", "name")} == {
        k: v for k, v in pcb.items() if k not in ("seeds", "name")
    }
    assert neu["data"] == full["data"] == str(data / "neu-det" / "data.yaml")
    assert pcb["data"] == str(data / "deeppcb" / "data.yaml")
    assert neu["models"] == pcb["models"] == "yolov8n.yaml,dsmoe-lite-yolov8n.yaml" and neu["seeds"] == "0,1"
    assert full["models"] == "dsmoe-yolov8n.yaml"
    assert (neu["epochs"], neu["imgsz"]) == (full["epochs"], full["imgsz"]) == (60, 224)  # one NEU-DET recipe
    assert pcb["epochs"] >= 40 and pcb["imgsz"] >= 320  # issue 14's floor for DeepPCB


def test_ablations_reuse_the_seed0_lite_run(calls):
    data, out, lines = calls
    ablation, ov_text = [line.split()[1:] for line in lines if line.startswith("python ") and "ablations.py" in line]
    assert ablation[0].endswith("examples/ablations.py") and "run=True" in ablation
    assert f"k5={out}/neu-det/dsmoe-lite-yolov8n-seed0" in ablation
    assert f"data={data}/neu-det/data.yaml" in ablation
    # step 5: the text variants trained on the open-vocabulary model, with step 3's recipe (the script's defaults)
    assert {"only=templates,shuffled", "text_model=dsmoe-ov-lite-yolov8n.yaml", "run=True"} <= set(ov_text)
    assert f"data={data}/neu-det/data.yaml" in ov_text and f"out={out}/ov-text" in ov_text


def test_deeppcb_seeds_are_combined(calls):
    _, out, lines = calls
    (combine,) = [line.split()[1:] for line in lines if line.startswith("python ") and "combine_seeds.py" in line]
    assert combine[0].endswith("examples/combine_seeds.py")
    assert combine[1:] == [f"{out}/deeppcb/benchmark.csv", f"{out}/deeppcb-seed1/benchmark.csv"]


def test_each_open_vocabulary_neu_det_checkpoint_is_validated_under_other_texts(calls):
    data, out, lines = calls
    swaps = [line.split()[1:] for line in lines if line.startswith("python ") and "prompt_swap.py" in line]
    assert [s[1] for s in swaps] == [
        f"model={out}/neu-det-ov/dsmoe-ov-lite-yolov8n-seed{seed}/weights/best.pt" for seed in (0, 1)
    ]
    assert all(f"data={data}/neu-det/data.yaml" in s and "imgsz=224" in s for s in swaps)


def test_defect_pretraining_holds_neu_det_out_and_trains_both_models_alike(calls):
    data, out, lines = calls
    union = (out / "union-no-neu.yaml").read_text()
    assert f"{data}/neu-det/" not in union
    assert all(f"{data}/{d}/data.yaml" in union for d in ("deeppcb", "kolektorsdd", "crackforest"))
    trains = sorted(
        (t for t in (line.split()[2:] for line in lines if line.startswith("yolo train ")) if "union-no-neu" in t[1]),
        key=lambda t: t[0],
    )
    trains = [t for t in trains if not t[0].startswith(f"model={out}")]  # step 11's variants: their own test
    assert [t[0] for t in trains] == ["model=dsmoe-ov-lite-yolov8n.yaml", "model=yolov8n.yaml"]
    assert trains[0][1:] == [
        a.replace("yolov8n", "dsmoe-ov-lite-yolov8n") if a.startswith("name=") else a for a in trains[1][1:]
    ]
    assert f"data={out}/union-no-neu.yaml" in trains[0]


def test_few_label_transfer_uses_the_pretrained_copies_and_the_same_recipe_for_every_start(calls):
    data, out, lines = calls
    parsed = benchmarks_by_name(lines)
    starts = [str(out / "pretrain-no-neu" / f"{m}-union.pt") for m in PRETRAINED]
    for pct in (5, 25):
        run = parsed[f"neu-det-{pct}pct"]
        assert run["data"] == str(out / "subsets" / f"neu-det-{pct}.yaml")
        assert run["models"] == ",".join([*starts, "yolov8n.yaml", "dsmoe-ov-lite-yolov8n.yaml"])
        assert (run["seeds"], run["imgsz"], run["val"]) == ("0,1", 224, False)
    assert all((out / "pretrain-no-neu" / f"{m}-union.pt").is_file() for m in PRETRAINED)
    subsets, _ = [line.split()[1:] for line in lines if "few_label_subsets.py" in line]  # NEU-DET's, then step 12's
    assert f"data={data}/neu-det/data.yaml" in subsets and "fractions=5,25" in subsets


def test_unseen_classes_are_measured_on_the_union_model_and_left_out_one_at_a_time(calls):
    data, out, lines = calls
    ov = f"model={out}/pretrain-no-neu/dsmoe-ov-lite-yolov8n-union.pt"
    runs = {
        script: [x.split()[1:] for x in lines if x.startswith("python ") and x.split()[1].endswith(script)]
        for script in ("zero_shot.py", "few_shot_prompts.py", "routing_by_dataset.py")
    }
    # zero-shot: NEU-DET held out, each left-out class twice, DeepPCB held out (step 12); routing: steps 7, 11, 12
    assert [len(v) for v in runs.values()] == [8, 1, 3]
    assert all(ov in v[0] for v in runs.values())
    for held in ("crazing", "patches", "scratches"):
        union = (out / f"union-no-{held}.yaml").read_text()
        assert f"{out}/loco/neu-det-no-{held}/data.yaml" in union and f"{data}/neu-det/data.yaml" not in union
        trains = [x for x in lines if x.startswith("yolo train ") and f"union-no-{held}.yaml" in x]
        assert len(trains) == 2
        alone = [
            x.split()[2:]
            for x in lines
            if x.startswith("yolo train ") and f"loco/neu-det-no-{held}/" in x and "-vis-" not in x  # step 10's
        ]
        ov_run, v8_run = sorted(alone)  # both models, the same recipe
        assert (ov_run[0], v8_run[0]) == ("model=dsmoe-ov-lite-yolov8n.yaml", "model=yolov8n.yaml")
        renamed = [a.replace("yolov8n", "dsmoe-ov-lite-yolov8n") if a.startswith("name=") else a for a in v8_run]
        assert ov_run[1:] == renamed[1:] and "imgsz=224" in ov_run
        k_shots = [
            x.split()[1:] for x in lines if "held_out_k_shot.py" in x and f"held={held}" in x and "finetune=" not in x
        ]
        assert len(k_shots) == 2  # the in-domain start, then the union start
        for k_shot, start in zip(k_shots, (f"neu-det-no-{held}", f"pretrain-no-{held}")):
            assert f"model={out}/{start}/dsmoe-ov-lite-yolov8n/weights/best.pt" in k_shot
            assert f"yolo={out}/{start}/yolov8n/weights/best.pt" in k_shot and "shots=1,5,10" in k_shot
        assert f"model={out}/pretrain-no-{held}/dsmoe-ov-lite-yolov8n/weights/best.pt" in sum(runs["zero_shot.py"], [])


def test_the_trained_visual_path_is_trained_like_step_9_and_compared_with_the_plain_model(calls):
    data, out, lines = calls
    (plain,) = [
        x.split()[2:]
        for x in lines
        if x.startswith("yolo train model=dsmoe-ov-lite-yolov8n.yaml") and "no-patches/" in x
    ]
    tables = [x.split()[1:] for x in lines if "held_out_k_shot.py" in x and "finetune=False" in x]
    for target in ("text", "prototypes"):
        (vis,) = [x.split()[2:] for x in lines if x.startswith("yolo train ") and f"-vis-{target}-yolov8n.yaml" in x]
        assert vis[0] == f"model={out}/dsmoe-ov-lite-vis-{target}-yolov8n.yaml"
        assert vis[1:-2] == plain[1:-2]  # the same data and recipe; other model, name (and exist_ok after it)
    assert [t[1] for t in tables] == [
        f"model={out}/neu-det-no-patches/dsmoe-ov-lite-vis-text-yolov8n/weights/best.pt",
        f"model={out}/neu-det-no-patches/dsmoe-ov-lite-vis-prototypes-yolov8n/weights/best.pt",
        f"model={out}/neu-det-no-patches/dsmoe-ov-lite-yolov8n/weights/best.pt",
    ]
    assert all(
        {"held=patches", "shots=1,5,10", "seeds=0,1", f"data={data}/neu-det/data.yaml"} <= set(t) for t in tables
    )


def test_the_routing_variants_are_pretrained_like_step_6_and_transferred_like_step_8(calls):
    data, out, lines = calls
    trains = [x.split()[2:] for x in lines if x.startswith("yolo train ") and "union-no-neu.yaml" in x]
    (plain,) = [t for t in trains if t[0] == "model=dsmoe-ov-lite-yolov8n.yaml"]
    for variant in ("routed", "dense"):
        (run,) = [t for t in trains if t[0] == f"model={out}/dsmoe-ov-lite-{variant}-yolov8n.yaml"]
        assert run[1:-2] == plain[1:-2]  # the same union and recipe; other model, name (and exist_ok after it)
    routed = f"{out}/pretrain-no-neu/dsmoe-ov-lite-routed-yolov8n-union.pt"
    (table,) = [x.split()[1:] for x in lines if "routing-routed.md" in x]
    assert table[0].endswith("routing_by_dataset.py") and f"model={routed}" in table
    few = benchmarks_by_name(lines)
    same = ("data", "epochs", "imgsz", "batch", "val", "seeds")
    for variant in ("routed", "dense"):
        for pct in (5, 25):
            run = few[f"neu-det-{pct}pct-{variant}"]
            assert run["models"] == f"{out}/pretrain-no-neu/dsmoe-ov-lite-{variant}-yolov8n-union.pt"
            assert {k: run[k] for k in same} == {k: few[f"neu-det-{pct}pct"][k] for k in same}


def test_deeppcb_held_out_is_pretrained_like_step_6_and_transferred_at_deeppcb_resolution(calls):
    data, out, lines = calls
    union = (out / "union-no-pcb.yaml").read_text()
    assert f"{data}/deeppcb/" not in union
    assert all(f"{data}/{d}/data.yaml" in union for d in ("neu-det", "kolektorsdd", "crackforest"))
    trains = {
        held: sorted(x.split()[2:] for x in lines if x.startswith("yolo train ") and f"union-{held}.yaml" in x)
        for held in ("no-neu", "no-pcb")
    }
    trains["no-neu"] = [t for t in trains["no-neu"] if not t[0].startswith(f"model={out}")]  # step 11's variants
    for neu_run, pcb_run in zip(*trains.values(), strict=True):  # the same models, the same recipe, other data
        assert pcb_run == [a.replace("no-neu", "no-pcb") for a in neu_run]
    parsed = benchmarks_by_name(lines)
    starts = [str(out / "pretrain-no-pcb" / f"{m}-union.pt") for m in PRETRAINED]
    for pct in (5, 25):
        run = parsed[f"deeppcb-{pct}pct"]
        assert run["data"] == str(out / "subsets" / f"deeppcb-{pct}.yaml")
        assert run["models"] == ",".join([*starts, "yolov8n.yaml"])
        assert (run["seeds"], run["imgsz"], run["val"]) == ("0,1", 320, False)
        assert run["epochs"] == parsed[f"neu-det-{pct}pct"]["epochs"]  # step 8's epochs per fraction
    scratch = parsed["deeppcb-5pct-ov-scratch"]
    assert {k: v for k, v in scratch.items() if k not in ("models", "name")} == {
        k: v for k, v in parsed["deeppcb-5pct"].items() if k not in ("models", "name")
    }
    assert all((out / "pretrain-no-pcb" / f"{m}-union.pt").is_file() for m in PRETRAINED)
    full, pcb = parsed["deeppcb-union-start"], parsed["deeppcb"]  # all of DeepPCB: step 2's recipe, the union starts
    assert full["models"] == ",".join(starts) and full["data"] == pcb["data"]
    assert (full["epochs"], full["imgsz"], full.get("val", True)) == (pcb["epochs"], pcb["imgsz"], True)
    (zero_shot,) = [x.split()[1:] for x in lines if "zero_shot.py" in x and "pretrain-no-pcb" in x]
    assert f"data={data}/deeppcb/data.yaml" in zero_shot and "imgsz=320" in zero_shot


def test_the_frozen_text_transfers_repeat_steps_11_and_12_for_the_open_vocabulary_starts(calls):
    _, out, lines = calls
    parsed = benchmarks_by_name(lines)
    for pct in (5, 25):
        frozen, step12 = parsed[f"deeppcb-{pct}pct-frozen-text"], parsed[f"deeppcb-{pct}pct"]
        assert frozen["freeze_text"] is True and "freeze_text" not in step12
        assert frozen["models"] == str(out / "pretrain-no-pcb" / "dsmoe-ov-lite-yolov8n-union.pt")
        differs = ("models", "name", "freeze_text")
        assert {k: v for k, v in frozen.items() if k not in differs} == {
            k: v for k, v in step12.items() if k not in differs
        }
        neu, step11 = parsed[f"neu-det-{pct}pct-dense-frozen-text"], parsed[f"neu-det-{pct}pct-dense"]
        assert neu["freeze_text"] is True and neu["models"] == step11["models"]
        assert {k: v for k, v in neu.items() if k not in differs} == {
            k: v for k, v in step11.items() if k not in differs
        }
    similarity = [x for x in lines if "class_text_similarity.py" in x and "spread" not in x and "k-shot-" not in x]
    assert [x.split("start=")[1].split()[0] for x in similarity] == [
        str(out / f"pretrain-no-{held}" / f"{model}-union.pt")
        for held, model in [("pcb", PRETRAINED[0]), *(("neu", v) for v in VARIANTS)]
    ]
    assert all(
        f"{out}/deeppcb-{p}/" in similarity[0] for p in ("5pct", "25pct", "5pct-frozen-text", "25pct-frozen-text")
    )


def test_the_text_spread_transfers_repeat_step_12_from_copies_of_its_start(calls):
    _, out, lines = calls
    start = out / "pretrain-no-pcb" / "dsmoe-ov-lite-yolov8n-union.pt"
    parsed = benchmarks_by_name(lines)
    step12 = parsed["deeppcb-5pct"]
    for weight, tag, name in (("1.0", "", "deeppcb-5pct-text-spread"), ("0.1", "0.1", "deeppcb-5pct-text-spread-0.1")):
        copy = out / "pretrain-no-pcb" / f"dsmoe-ov-lite-yolov8n-union-spread{tag}.pt"
        assert f"python -m dsmoe_yolo.text_spread {start} {weight} {copy}" in lines
        assert parsed[name]["models"] == str(copy)
        assert {k: v for k, v in parsed[name].items() if k not in ("models", "name")} == {
            k: v for k, v in step12.items() if k not in ("models", "name")
        }
    similarity = [x for x in lines if "class_text_similarity.py" in x][-1]
    assert all(f"{out}/deeppcb-5pct-text-spread{t}/" in similarity for t in ("", "-0.1"))
    assert similarity.endswith("class-text-similarity-deeppcb-spread.md")


def test_each_union_class_held_out_gets_its_k_shot_rows_compared_with_the_start(calls):
    """Step 9's union loop: after the k-shot table, the class-text similarity of the held-out class's fine-tunes."""
    _, out, lines = calls
    similarity = [x for x in lines if "class_text_similarity.py" in x and "k-shot-" in x]
    assert len(similarity) == 3
    for held, line in zip(("crazing", "patches", "scratches"), similarity):
        assert f"start={out}/pretrain-no-{held}/dsmoe-ov-lite-yolov8n/weights/best.pt" in line
        runs = [f"{out}/k-shot-{held}-union/ov-k{k}-seed{s}/weights/last.pt" for k in (5, 10) for s in (0, 1)]
        assert line.split("models=")[1].split()[0].split(",") == runs
        assert line.endswith(f"class-text-similarity-neu-det-{held}-union.md")
