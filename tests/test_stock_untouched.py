"""Stock models with the plugin installed: identical training, and checkpoints stock Ultralytics can resume."""

from __future__ import annotations

import csv
from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli

PLUGIN_KEYS = ("gamma_p", "gamma", "gamma_gain", "text_encoder")
TRAIN = "yolo train model=yolov8n.yaml data={data} epochs=2 save_period=1 imgsz=64 batch=4 workers=0 device=cpu plots=False seed=0 deterministic=True project={project} name={name}"


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    """yolov8n trained twice from the same seed: plugin switched off, plugin on. Snapshots taken before any resume."""
    project = tmp_path_factory.mktemp("stock")
    out = {}
    for name, switch in (("off", "0"), ("on", "1")):
        run_cli(
            TRAIN.format(data=tiny_data, project=project, name=name), cwd=project, env={"DSMOE_YOLO_AUTOLOAD": switch}
        )
        run = project / name
        out[name] = SimpleNamespace(
            run=run,
            rows=[
                {k.strip(): v for k, v in r.items() if k.strip() != "time"}
                for r in csv.DictReader(open(run / "results.csv"))
            ],
            last=_load(run / "weights" / "last.pt"),
            epoch0=run / "weights" / "epoch0.pt",
        )
    return out


@pytest.mark.slow
def test_stock_yolov8n_trains_identically_with_the_plugin_on_and_off(two_runs):
    off, on = two_runs["off"], two_runs["on"]
    assert len(off.rows) == len(on.rows) == 2
    assert float(off.rows[-1]["train/box_loss"]) > 0
    assert on.rows == off.rows, "losses and metrics differ with the plugin on"
    sd_off, sd_on = off.last["model"].state_dict(), on.last["model"].state_dict()
    assert sd_off.keys() == sd_on.keys()
    for k in sd_off:
        assert torch.equal(sd_off[k], sd_on[k]), f"{k} differs with the plugin on"


@pytest.mark.slow
def test_stock_checkpoints_carry_no_plugin_args_and_resume_without_the_plugin(two_runs, tmp_path):
    """Trained with the plugin on, a stock model's checkpoints (each epoch's and the final ones) hold no plugin train
    args: stock Ultralytics (plugin off) resumes them. Before, it refused with a SyntaxError naming gamma_p, ..."""
    on = two_runs["on"]
    for ckpt in (_load(on.epoch0), on.last):
        assert not set(PLUGIN_KEYS) & set(ckpt["train_args"]), sorted(set(PLUGIN_KEYS) & set(ckpt["train_args"]))
        model = ckpt["ema"] or ckpt["model"]  # epoch checkpoints hold the EMA, final ones the model
        model_args = model.args if isinstance(model.args, dict) else vars(model.args)
        assert not set(PLUGIN_KEYS) & set(model_args)
    proc = run_cli(f"yolo train resume model={on.epoch0}", cwd=tmp_path, env={"DSMOE_YOLO_AUTOLOAD": "0"})
    assert "Resuming training" in proc.stdout + proc.stderr


def test_non_default_plugin_args_ride_along_for_the_plugin_only():
    """gamma_p=0.3 on a stock model: kept out of train_args (stock can load it) but restored when the plugin loads it."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.plugin.runs import _plugin_args_removed, restore_train_args

    args = get_cfg(overrides={"gamma_p": 0.3})
    ema = DetectionModel("yolov8n.yaml", verbose=False)
    ema.args = deepcopy(args)
    trainer = SimpleNamespace(args=args, ema=SimpleNamespace(ema=ema))
    with _plugin_args_removed(trainer):
        ckpt = {"ema": deepcopy(ema), "train_args": dict(vars(trainer.args))}  # what stock save_model writes
    assert not set(PLUGIN_KEYS) & set(ckpt["train_args"]) and not set(PLUGIN_KEYS) & set(vars(ckpt["ema"].args))
    assert trainer.args.gamma_p == 0.3 and ema.args.gamma_p == 0.3 and not hasattr(ema, "dsmoe_train_args"), (
        "restored after"
    )
    restore_train_args(ckpt)
    assert ckpt["train_args"]["gamma_p"] == 0.3 and "gamma" not in ckpt["train_args"], (
        "only non-default values ride along"
    )
