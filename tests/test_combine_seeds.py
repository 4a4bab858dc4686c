"""examples/combine_seeds.py: seeds from separate `dsmoe benchmark` commands combine into the same mean ± std rows
that one command over all the seeds writes, and a run counted twice or a missing file is refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEU_DET = ROOT / "examples" / "results" / "neu-det"  # one command, seeds 0 and 1 (its benchmark.md is the reference)


@pytest.fixture(scope="module")
def combine_seeds(load_example):
    return load_example("combine_seeds")


def _split_by_seed(tmp_path: Path) -> list[Path]:
    """The NEU-DET command's two CSVs, rewritten as if each seed had been its own command."""
    tables = []
    for seed in ("0", "1"):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        for name in ("benchmark.csv", "per_class_ap.csv"):
            with open(NEU_DET / name, encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if r["seed"] == seed]
                fields = reader.fieldnames
            with open(folder / name, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        tables.append(folder / "benchmark.csv")
    return tables


def _cells(markdown: str, first: str) -> list[str]:
    """The cells of the first Markdown table row starting with ``first``."""
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_two_commands_give_the_one_command_rows(combine_seeds, tmp_path):
    if not (NEU_DET / "benchmark.md").is_file():
        pytest.skip("examples/results/neu-det/benchmark.md is not in this checkout")
    text = combine_seeds.combine(_split_by_seed(tmp_path))
    reference = (NEU_DET / "benchmark.md").read_text(encoding="utf-8")
    for model in ("yolov8n.yaml", "dsmoe-lite-yolov8n.yaml"):
        mine, theirs = _cells(text, model), _cells(reference, model)
        # reference columns: model, params, GFLOPs x2, latency x2, mAP50, mAP50-95, P, R, seeds, epochs, ...
        assert mine == [theirs[0], *theirs[6:12]], (mine, theirs)
        assert "±" in mine[1]  # two seeds: a standard deviation, not one run's value
    for cls in ("crazing", "scratches"):
        assert _cells(text, cls) == _cells(reference, cls)


def test_one_seed_has_no_std(combine_seeds, tmp_path):
    if not (NEU_DET / "benchmark.csv").is_file():
        pytest.skip("examples/results/neu-det/benchmark.csv is not in this checkout")
    seed0, _ = _split_by_seed(tmp_path)
    cells = _cells(combine_seeds.combine([seed0]), "yolov8n.yaml")
    assert cells[1:5] == ["0.671", "0.338", "0.681", "0.582"] and cells[5] == "0"


def test_same_run_twice_and_missing_file_are_refused(combine_seeds, tmp_path):
    if not (NEU_DET / "benchmark.csv").is_file():
        pytest.skip("examples/results/neu-det/benchmark.csv is not in this checkout")
    seed0, _ = _split_by_seed(tmp_path)
    with pytest.raises(SystemExit, match="seed 0 is in both"):
        combine_seeds.combine([seed0, NEU_DET / "benchmark.csv"])
    with pytest.raises(SystemExit, match="not found"):
        combine_seeds.combine([tmp_path / "nowhere" / "benchmark.csv"])
