"""Registration with Ultralytics: idempotence, bare-name resolution, start-up hook, off switch, hooked internals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_python

import dsmoe_yolo
from dsmoe_yolo import _startup
from dsmoe_yolo.plugin import internals, register


def test_register_is_idempotent_and_exposes_every_layer():
    from ultralytics.nn import tasks

    from dsmoe_yolo.nn import LAYERS

    register()
    parse = tasks.parse_model
    register()
    assert tasks.parse_model is parse, "a second register() must not wrap parse_model again"
    for name, cls in LAYERS.items():
        assert getattr(tasks, name) is cls
    assert set(LAYERS) == set(_startup.LAYER_NAMES), "the off-switch guard must know every layer name"


def test_hooked_internals_exist():
    """Fails loudly when an Ultralytics upgrade removes or renames something the plugin hooks."""
    assert internals.check_all() == []


def test_check_module_names_missing_internals():
    import types

    fake = types.ModuleType("ultralytics.nn.tasks")
    with pytest.raises(RuntimeError, match=r"lacks ultralytics\.nn\.tasks\.parse_model.*pip install"):
        internals.check_module(fake)


def test_bundled_yamls_resolve_by_bare_name_from_any_directory(tmp_path, monkeypatch):
    from ultralytics.utils.checks import check_yaml

    monkeypatch.chdir(tmp_path)
    assert Path(check_yaml("dsmoe.yaml")) == dsmoe_yolo.CFG_DIR / "models" / "dsmoe.yaml"
    assert Path(check_yaml("dsmoe-synth.yaml")) == dsmoe_yolo.DATASETS_DIR / "dsmoe-synth.yaml"
    (tmp_path / "dsmoe.yaml").write_text("nc: 1\n")  # a local file of the same name wins
    assert Path(check_yaml("dsmoe.yaml")).resolve() == (tmp_path / "dsmoe.yaml").resolve()


def test_unknown_bundled_name_lists_what_exists():
    from ultralytics.utils.checks import check_yaml

    with pytest.raises(FileNotFoundError, match="dsmoe-synth.yaml"):
        check_yaml("dsmoe-typo.yaml")


def test_interpreter_start_imports_no_torch():
    """The .pth hook must keep start-up cheap: no torch (nor ultralytics) until ultralytics.nn.tasks is imported."""
    proc = run_python(
        "import sys; print('torch' in sys.modules, 'ultralytics' in sys.modules, any(getattr(f, 'marker', '') == 'dsmoe_yolo_after_import_finder' for f in sys.meta_path))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"], proc.stdout


def test_startup_hook_registers_without_importing_dsmoe():
    """The .pth hook registers as soon as ultralytics.nn.tasks loads; layer names reach tasks once dsmoe_yolo.nn has
    finished importing (at the next import of a new module, or when a model is built or a checkpoint loaded)."""
    code = (
        "import sys; from ultralytics.nn import tasks; print(getattr(tasks.parse_model, '_dsmoe_hook', None), 'dsmoe_yolo' in sys.modules)\n"
        "tasks.DetectionModel('dsmoe-lite-yolov8n.yaml', verbose=False); print(hasattr(tasks, 'SparseMoE'))"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["full", "True", "True"]


def test_off_switch_keeps_stock_behaviour_and_explains_dsmoe_names():
    code = (
        "from ultralytics.nn import tasks; print(tasks.parse_model._dsmoe_hook, hasattr(tasks, 'SparseMoE'))\n"
        "from ultralytics.nn.tasks import DetectionModel\n"
        f"DetectionModel({str(ROOT / 'cfg/models/dsmoe-yolov8.yaml')!r})"
    )
    proc = run_python(code, env={"DSMOE_YOLO_AUTOLOAD": "0"})
    assert proc.stdout.split()[:2] == ["guard", "False"]
    assert proc.returncode != 0
    assert "DSMOE_YOLO_AUTOLOAD" in proc.stderr and "KeyError" not in proc.stderr


def test_explicit_import_registers_even_with_the_switch_off():
    proc = run_python(
        "import dsmoe_yolo\nfrom ultralytics import YOLO\nm = YOLO('dsmoe-yolov8n.yaml')\nprint(type(m.model.model[11]).__name__)",
        env={"DSMOE_YOLO_AUTOLOAD": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("SparseMoE")


def test_train_args_added_to_config_and_inert_by_default():
    from ultralytics.cfg import CFG_FRACTION_KEYS, DEFAULT_CFG_DICT, get_cfg

    assert DEFAULT_CFG_DICT["gamma_p"] == 0.0 and "gamma_p" in CFG_FRACTION_KEYS
    cfg = get_cfg(overrides={"gamma_p": 0.5, "gamma": 1.5, "text_encoder": "minilm"})
    assert cfg.gamma_p == 0.5
    with pytest.raises(ValueError, match="gamma_p"):
        get_cfg(overrides={"gamma_p": 1.5})


def test_default_data_is_marked_so_dsmoe_models_do_not_fetch_coco(tmp_path):
    from types import SimpleNamespace

    from ultralytics.cfg import TASK2DATA

    from dsmoe_yolo.plugin.hooks import DefaultData, _default_data

    assert isinstance(TASK2DATA["detect"], DefaultData) and TASK2DATA["detect"] == "coco8.yaml"
    trainer = SimpleNamespace(args=SimpleNamespace(data=TASK2DATA["detect"], model="dsmoe-yolov8n.yaml"))
    _default_data(trainer)
    assert trainer.args.data == "dsmoe-synth.yaml"
    stock = SimpleNamespace(args=SimpleNamespace(data=TASK2DATA["detect"], model="yolov8n.yaml"))
    _default_data(stock)
    assert stock.args.data == "coco8.yaml", "stock models keep Ultralytics' default"
    explicit = SimpleNamespace(args=SimpleNamespace(data="coco8.yaml", model="dsmoe-yolov8n.yaml"))
    _default_data(explicit)
    assert explicit.args.data == "coco8.yaml", "an explicit data= is never replaced"


def test_layer_classes_are_safe_globals():
    import torch

    from dsmoe_yolo.nn import LAYERS

    allowed = {
        f"{c.__module__}.{c.__qualname__}" for c in torch.serialization.get_safe_globals() if isinstance(c, type)
    }
    assert {f"{c.__module__}.{c.__qualname__}" for c in LAYERS.values()} <= allowed


def test_assets_found_from_source_tree():
    assert (dsmoe_yolo.CFG_DIR / "models" / "dsmoe-yolov8.yaml").is_file()
    assert (dsmoe_yolo.DATASETS_DIR / "dsmoe-synth.yaml").is_file()


def test_off_switch_with_safe_load_names_the_dsmoe_checkpoint(tmp_path):
    """DSMOE_YOLO_AUTOLOAD=0 + ULTRALYTICS_SAFE_LOAD=1: the restricted unpickler refuses our classes before anything
    imports the plugin; the error says in one line that the file is a DS-MoE checkpoint and how to switch it on."""
    from ultralytics import YOLO

    path = tmp_path / "lite.pt"
    YOLO("dsmoe-lite-yolov8n.yaml").save(path)
    proc = run_python(
        f"from ultralytics import YOLO; YOLO({str(path)!r})",
        env={"DSMOE_YOLO_AUTOLOAD": "0", "ULTRALYTICS_SAFE_LOAD": "1"},
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "is a DS-MoE checkpoint" in last and "DSMOE_YOLO_AUTOLOAD" in last, proc.stderr[-2000:]
