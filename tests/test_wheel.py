"""A built wheel carries cfg/, datasets/ and the start-up hook, and works from wherever it is installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT, run_python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (dev extra)")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("dsmoe_yolo-*.whl"))


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "dsmoe_yolo_autoload.pth",
        "dsmoe_yolo_startup.py",
        "dsmoe_yolo/_startup.py",
        "dsmoe_yolo/cfg/models/dsmoe-yolov8.yaml",
        "dsmoe_yolo/cfg/models/dsmoe.yaml",
        "dsmoe_yolo/cfg/models/ablation/dsmoe-abl-a-yolov8.yaml",
        "dsmoe_yolo/cfg/train/paper.yaml",
        "dsmoe_yolo/cfg/prompts/dsmoe-synth.yaml",
        "dsmoe_yolo/datasets/dsmoe-synth.yaml",
        "dsmoe_yolo/nn/moe.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "cfg/", "datasets/")) for n in names)


def test_installed_wheel_finds_its_bundled_files(wheel, tmp_path):
    site_dir = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site_dir), str(wheel), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = (
        f"import sys, site; sys.path.insert(0, {str(site_dir)!r}); site.addsitedir({str(site_dir)!r})\n"
        "import dsmoe_yolo\n"
        "print(dsmoe_yolo.__file__); print(dsmoe_yolo.CFG_DIR); print(dsmoe_yolo.DATASETS_DIR)\n"
        "from ultralytics.utils.checks import check_yaml\n"
        "print(check_yaml('dsmoe.yaml')); print(check_yaml('paper.yaml')); print(check_yaml('dsmoe-synth.yaml'))\n"
        "from ultralytics.nn.tasks import DetectionModel\n"
        "print(type(DetectionModel('dsmoe-yolov8n.yaml', verbose=False).model[11]).__name__)\n"
    )
    proc = run_python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith(str(site_dir)) for line in lines[:6]), lines
    assert lines[-1] == "SparseMoE"
