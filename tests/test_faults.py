"""Reliability: bad data, bad config, numerics, interruption, loading, concurrency, distributed static graphs."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli, run_python

from dsmoe_yolo.checkpoint import CheckpointError, check_compatible, inspect_checkpoint
from dsmoe_yolo.data.synth import NAMES, make_image
from dsmoe_yolo.errors import ConfigError


# data ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty_data(tmp_path_factory) -> Path:
    """A 6-class set with every kind of bad file next to good ones."""
    root = tmp_path_factory.mktemp("faulty")
    img_dir, lbl_dir = root / "images" / "train", root / "labels" / "train"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    good_label = "0 0.5 0.5 0.2 0.2\n"

    def board(i):
        return make_image(7, i, 128)[0]

    for i in range(8):
        cv2.imwrite(str(img_dir / f"good_{i}.png"), board(i))
        (lbl_dir / f"good_{i}.txt").write_text(good_label)
    cv2.imwrite(str(img_dir / "truncated.jpg"), board(20))
    data = (img_dir / "truncated.jpg").read_bytes()
    (img_dir / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (img_dir / "zero.jpg").write_bytes(b"")
    cv2.imwrite(str(img_dir / "gray.png"), cv2.cvtColor(board(21), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(img_dir / "deep16.png"), board(22).astype(np.uint16) * 257)
    for name in ("truncated", "zero", "gray", "deep16"):
        (lbl_dir / f"{name}.txt").write_text(good_label)
    bad_labels = {
        "class9": "9 0.5 0.5 0.2 0.2\n",
        "nanbox": "0 nan 0.5 0.1 0.1\n",
        "negbox": "0 -0.5 0.5 0.1 0.1\n",
        "empty": "",
    }
    for i, (name, text) in enumerate(bad_labels.items()):
        cv2.imwrite(str(img_dir / f"{name}.png"), board(30 + i))
        (lbl_dir / f"{name}.txt").write_text(text)
    cv2.imwrite(str(img_dir / "nolabel.png"), board(40))
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/train\nnames: {dict(enumerate(NAMES))}\nprompts: dsmoe-synth.yaml\n"
    )
    return root / "data.yaml"


def test_bad_files_are_skipped_with_warnings_as_ultralytics_does(faulty_data, caplog):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER

    info = check_det_dataset(str(faulty_data))
    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):  # Ultralytics lists skipped files at INFO
            ds = build_yolo_dataset(get_cfg(overrides={"imgsz": 128}), info["train"], 4, info, mode="val")
    finally:
        LOGGER.removeHandler(caplog.handler)
    log = "\n".join(r.getMessage() for r in caplog.records)
    kept = {Path(x["im_file"]).stem for x in ds.labels}
    for corrupt in ("zero", "class9", "nanbox", "negbox"):
        assert corrupt not in kept and f"{corrupt}." in log, f"{corrupt} must be skipped with a warning"
    for ok in ("gray", "deep16", "empty", "nolabel", "good_0"):
        assert ok in kept
    assert {Path(x["im_file"]).stem: len(x["cls"]) for x in ds.labels}["empty"] == 0  # background image
    sample = ds[[Path(x["im_file"]).stem for x in ds.labels].index("deep16")]
    assert sample["img"].dtype == torch.uint8 and sample["img"].shape[0] == 3
    assert "truncated" in kept or "truncated." in log  # Ultralytics restores a truncated JPEG or skips it, loudly


@pytest.mark.slow
def test_training_continues_over_bad_files(faulty_data, tmp_path):
    proc = run_cli(
        f"yolo train model=dsmoe-yolov8n.yaml data={faulty_data} epochs=1 imgsz=64 batch=4 workers=0 device=cpu plots=False project={tmp_path}",
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "class9" in log and (tmp_path / "train" / "weights" / "last.pt").is_file()


# config ----------------------------------------------------------------------------------------------------------------
def test_embedding_class_count_mismatch_fails_before_training(tiny_data, tmp_path):
    from dsmoe_yolo.text.embed import save_embeddings_file

    emb = save_embeddings_file(tmp_path / "five.pt", torch.randn(5, 384), {"names": list("abcde"), "encoder": "x"})
    data = tmp_path / "data.yaml"
    data.write_text(tiny_data.read_text().rstrip("}") + f', "embeddings": "{emb}"}}')
    proc = run_cli(
        f"yolo train model=dsmoe-yolov8n.yaml data={data} epochs=1 imgsz=64 workers=0 device=cpu project={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "has 5 classes but the data has 6" in (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert not list(tmp_path.glob("train*/weights/*.pt")), "it fails before the first epoch"


def test_trained_text_width_mismatch_is_refused():
    from ultralytics import YOLO

    from dsmoe_yolo.text.binding import set_classes

    model = YOLO("dsmoe-yolov8n.yaml")
    set_classes(model, list("ab"), torch.randn(2, 384))
    with pytest.raises(ConfigError, match="trained with 384-dim text"):
        set_classes(model, list("ab"), torch.randn(2, 1536))


# numerics --------------------------------------------------------------------------------------------------------------
def test_full_model_forward_backward_finite_under_bf16_autocast():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("dsmoe-yolov8n.yaml", verbose=False).train()
    model.model[8].bind(torch.randn(6, 384), {"names": NAMES})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 128, 128))
        loss = sum(o.float().pow(2).mean() for o in out["feats"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# interruption -----------------------------------------------------------------------------------------------------------
KILL_MID_EPOCH = """
import os, signal, sys
from ultralytics import YOLO
m = YOLO('dsmoe-yolov8n.yaml')
def bang(trainer):
    if trainer.epoch == 1 and getattr(trainer, '_dsmoe_batches', 0) == 1:  # second epoch, second batch
        os.kill(os.getpid(), signal.SIGKILL)
    trainer._dsmoe_batches = getattr(trainer, '_dsmoe_batches', 0) + 1 if trainer.epoch == 1 else 0
m.add_callback('on_train_batch_end', bang)
m.train(**ARGS)
"""


def _final_metrics(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "results.csv")))
    return {k.strip(): float(v) for k, v in rows[-1].items()} | {"epochs": len(rows)}


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_one(tiny_data, tmp_path):
    args = dict(
        data=str(tiny_data),
        epochs=2,
        imgsz=128,
        batch=4,
        workers=0,
        device="cpu",
        seed=0,
        deterministic=True,
        plots=False,
        project=str(tmp_path),
    )
    killed = run_python(KILL_MID_EPOCH.replace("**ARGS", f"**{ {**args, 'name': 'killed'}!r}"), cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "killed"
    assert len(list(csv.DictReader(open(run / "results.csv")))) == 1, "killed during epoch 2, after epoch 1 was saved"
    run_cli(f"yolo train resume model={run / 'weights' / 'last.pt'}", cwd=tmp_path)
    full = run_python(
        f"from ultralytics import YOLO\nYOLO('dsmoe-yolov8n.yaml').train(**{ {**args, 'name': 'full'}!r})", cwd=tmp_path
    )
    assert full.returncode == 0, full.stderr[-2000:]
    resumed, reference = _final_metrics(run), _final_metrics(tmp_path / "full")
    assert resumed["epochs"] == reference["epochs"] == 2
    keys = ("val/box_loss", "val/dfl_loss", "val/cls_loss", "train/box_loss", "metrics/mAP50-95(B)")
    print("resume vs uninterrupted:", {k: (resumed[k], reference[k]) for k in keys})  # shown with pytest -s
    # Ultralytics' resume restores weights, EMA and optimizer but not the RNG, so the resumed epoch sees other
    # augmentations and batch order: its training loss (4 batches of tiny boxes) is noise, not a check. The
    # validation losses of the final weights are the comparison (measured: 0.761 vs 0.759 box, 0.443 vs 0.442 dfl).
    for key in ("val/box_loss", "val/dfl_loss"):
        assert reference[key] > 0.05, f"{key}={reference[key]}: too small for the comparison to mean anything"
        assert abs(resumed[key] - reference[key]) <= 0.03 * reference[key], (key, resumed[key], reference[key])
    assert abs(resumed["val/cls_loss"] - reference["val/cls_loss"]) <= 0.1 * reference["val/cls_loss"] + 1e-3
    assert abs(resumed["metrics/mAP50-95(B)"] - reference["metrics/mAP50-95(B)"]) <= 0.02


# loading -----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("ckpt") / "nano.pt"
    model = YOLO("dsmoe-yolov8n.yaml")
    model.model.model[8].bind(torch.randn(6, 384), {"names": NAMES})
    model.save(str(path))
    return path


def test_checkpoint_records_the_plugin_version(small_checkpoint):
    import dsmoe_yolo

    info = inspect_checkpoint(small_checkpoint)
    assert info["dsmoe_version"] == dsmoe_yolo.__version__
    assert "dsmoe_yolo.nn.moe.SparseMoE" in info["dsmoe_classes"]
    assert check_compatible(small_checkpoint)["dsmoe_classes"]


def test_checkpoint_from_a_newer_plugin_warns(small_checkpoint, monkeypatch):
    import dsmoe_yolo.checkpoint as ck

    monkeypatch.setattr(ck, "__version__", "0.0.1")  # pretend the installed plugin is older than the one that wrote it
    messages = []
    check_compatible(small_checkpoint, log=messages.append)
    assert messages and "newer than the installed 0.0.1" in messages[0] and "pip install -U" in messages[0]


def test_checkpoint_needing_a_missing_class_is_one_clear_error(tmp_path):
    import dsmoe_yolo.nn.moe as moe_module
    from dsmoe_yolo.nn.base import YAMLLayer

    class FutureExpertLayer(YAMLLayer):
        pass

    FutureExpertLayer.__module__, FutureExpertLayer.__qualname__ = moe_module.__name__, "FutureExpertLayer"
    moe_module.FutureExpertLayer = FutureExpertLayer
    path = tmp_path / "future.pt"
    try:
        torch.save({"model": torch.nn.Sequential(FutureExpertLayer())}, path)
    finally:
        del moe_module.FutureExpertLayer
    with pytest.raises(CheckpointError, match=r"needs dsmoe_yolo\.nn\.moe\.FutureExpertLayer.*pip install -U"):
        check_compatible(path)
    from ultralytics import YOLO

    with pytest.raises(CheckpointError, match="FutureExpertLayer"):
        YOLO(str(path))


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    edit(ckpt["model"])
    torch.save(ckpt, dst)
    return dst


def test_checkpoint_with_non_finite_weights_is_refused_at_load(small_checkpoint, tmp_path):
    """A flipped exponent bit turns an fp16 weight into Inf/NaN; stock Ultralytics loads such a file silently."""
    from ultralytics import YOLO

    def flip(model):
        next(model.model[11].parameters()).data.view(-1)[3] = float("inf")

    bad = _edited_copy(small_checkpoint, tmp_path / "flipped.pt", flip)
    with pytest.raises(
        CheckpointError,
        match=r"^flipped\.pt is damaged: 'model' tensor model\.11\..* holds NaN/Inf values; use another checkpoint",
    ):
        YOLO(str(bad))
    YOLO(str(small_checkpoint))  # the intact file loads


def test_checkpoint_whose_class_text_disagrees_with_its_names_is_refused(small_checkpoint, tmp_path):
    from ultralytics import YOLO

    def rename(model):
        model.names = {i: n for i, n in enumerate(["a", "b", "c", "d", "e", "f"])}

    bad = _edited_copy(small_checkpoint, tmp_path / "renamed.pt", rename)
    with pytest.raises(
        CheckpointError,
        match=r"renamed\.pt: the class text was embedded for \['open'.* but the model's classes are \['a'",
    ):
        YOLO(str(bad))

    def drop_row(model):
        model.model[8].embeddings = model.model[8].embeddings[:5]
        model.names = {i: n for i, n in enumerate(NAMES)}

    bad = _edited_copy(small_checkpoint, tmp_path / "five.pt", drop_row)
    with pytest.raises(CheckpointError, match=r"five\.pt: .*\(5 rows\)"):
        YOLO(str(bad))


def test_resuming_a_finished_dsmoe_checkpoint_starts_nothing(small_checkpoint):
    """`yolo train resume model=<finished .pt>`: one line saying the training is finished. Before, Ultralytics' "not
    resumable, starting new training" path met the default-data marker and trained 100 epochs on the synthetic set."""
    from ultralytics import YOLO

    model = YOLO(str(small_checkpoint))

    def started(trainer):
        raise RuntimeError(f"a new training started on {trainer.args.data}")

    model.add_callback("on_pretrain_routine_start", started)
    with pytest.raises(ConfigError, match=r"nano\.pt training to .* epochs is finished, nothing to resume"):
        model.train(resume=True)


def test_missing_plugin_is_not_pip_installed(small_checkpoint):
    """With the plugin absent, Ultralytics would pip-install a package named after the module; YOLO_AUTOINSTALL=false stops it.

    The subprocess simulates a machine without the plugin: its modules cannot be imported and its distribution
    metadata is not found (which is what Ultralytics' requirement check looks at).
    """
    code = (
        "import sys, importlib.metadata as md\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dsmoe_yolo' or name.startswith('dsmoe_yolo.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "real_version = md.version\n"
        "def version(name):\n"
        "    if name.replace('-', '_').lower() == 'dsmoe_yolo':\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return real_version(name)\n"
        "md.version = version\n"
        "from ultralytics import YOLO\n"
        f"YOLO({str(small_checkpoint)!r})\n"
    )
    proc = run_python(code, env={"YOLO_AUTOINSTALL": "false", "DSMOE_YOLO_AUTOLOAD": "0"})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "AutoUpdate disabled by YOLO_AUTOINSTALL=False" in log and "attempting AutoUpdate" not in log
    assert "No module named 'dsmoe_yolo" in log


# distributed -------------------------------------------------------------------------------------------------------------
def test_static_graph_ddp_tolerates_idle_experts(tmp_path):
    """DDP with find_unused_parameters=False (what Ultralytics uses with compile=True) needs every parameter in every
    step: the layer keeps idle experts in the graph at zero cost under torch.distributed."""
    code = f"""
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
dist.init_process_group('gloo', init_method='file://{tmp_path / "rendezvous"}', rank=0, world_size=1)
from dsmoe_yolo.nn import SparseMoE
torch.manual_seed(0)
moe = SparseMoE([8, 4], 8, experts=8, top_k=2)
model = DDP(moe, find_unused_parameters=False, static_graph=True)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(3):
    x, t = torch.randn(2, 8, 4, 4), torch.randn(3, 4)
    y = model([x, t])
    y.pow(2).mean().backward()
    opt.step(); opt.zero_grad()
print('ok')
dist.destroy_process_group()
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")
