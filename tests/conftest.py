"""Test session setup: an isolated, offline Ultralytics environment and shared fixtures.

Before anything imports Ultralytics, the session points ``YOLO_CONFIG_DIR`` at a temporary folder whose settings put
runs, datasets and weights under it, and switches off every network path (``YOLO_OFFLINE``, ``HF_HUB_OFFLINE``, no
auto-install). Subprocesses (the stock ``yolo`` command) inherit the same environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SESSION = Path(tempfile.mkdtemp(prefix="dsmoe-tests-"))

os.environ.update(
    {
        "YOLO_CONFIG_DIR": str(SESSION / "config"),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DSMOE_CACHE_DIR": str(SESSION / "cache"),
        "MPLBACKEND": "Agg",
        # one thread per worker when pytest-xdist runs two (the default, pyproject.toml), two without it
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"),
        "PYTHONFAULTHANDLER": "1",
    }
)
for var in ("DSMOE_YOLO_AUTOLOAD", "ULTRALYTICS_SAFE_LOAD"):
    os.environ.pop(var, None)

_settings = {"runs_dir": SESSION / "runs", "datasets_dir": SESSION / "datasets", "weights_dir": SESSION / "weights"}
subprocess.run(
    [
        sys.executable,
        "-c",
        f"from ultralytics.utils import SETTINGS; SETTINGS.update({ {k: str(v) for k, v in _settings.items()}!r})",
    ],
    check=True,
    capture_output=True,
)
RUNS, DATASETS = _settings["runs_dir"], _settings["datasets_dir"]


@pytest.fixture(scope="session")
def load_example():
    """``load_example("ablations")``: ``examples/<name>.py`` imported as a module (``examples/`` is not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_example", ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION, ignore_errors=True)


def user_env(extra: dict | None = None) -> dict:
    """The session environment as a user's shell would have it: without pytest's marker variable, which makes
    Ultralytics think it is under test and write runs into its own package folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {**env, **(extra or {})}


def run_cli(
    args: list[str] | str, cwd: Path, env: dict | None = None, timeout: int = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a console command (e.g. the stock ``yolo``) in a subprocess; on failure show its output tail."""
    args = args.split() if isinstance(args, str) else args
    exe = shutil.which(args[0], path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(
        [exe or args[0], *args[1:]], cwd=cwd, env=user_env(env), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- output tail ---\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    return proc


def run_python(
    code: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (fresh imports, fresh plugin state)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd or SESSION,
        env=user_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shared_dataset(name: str) -> Path:
    """Path to ``../shared/data/<name>`` or skip the test with the reason."""
    path = SHARED_DATA / name
    if not (path / "data.yaml").is_file():
        pytest.skip(f"shared dataset '{name}' not found at {path} (only present on the team's machines)")
    return path


@pytest.fixture
def shared_copy(tmp_path):
    """Copy a shared dataset into tmp (Ultralytics writes label caches next to the labels)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(shared_dataset(name), dst)
        return dst / "data.yaml"

    return copy


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    """A tiny synthetic set (16 train / 8 val boards, 128 px) with a data YAML using the bundled prompts."""
    from dsmoe_yolo.data.synth import NAMES, generate

    root = SESSION / "tiny-synth"
    if not (root / "data.yaml").exists():
        generate(root, n_train=16, n_val=8, size=128, seed=1)
        (root / "data.yaml").write_text(
            json.dumps(
                {
                    "path": str(root),
                    "train": "images/train",
                    "val": "images/val",
                    "names": dict(enumerate(NAMES)),
                    "prompts": "dsmoe-synth.yaml",
                }
            )
        )
    return root / "data.yaml"


@pytest.fixture(scope="session")
def text_embeddings():
    """Deterministic stand-in class embeddings (6 x 384) for unit tests that do not exercise the text encoder."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 384, generator=g)
