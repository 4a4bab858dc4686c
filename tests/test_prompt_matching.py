"""Bundled prompt files are chosen by the data's class names, not by the data YAML's file name (issue: hardening 5)."""

import pytest

from dsmoe_yolo.assets import CFG_DIR
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.text.embed import resolve_prompts, template_prompts
from dsmoe_yolo.text.prompts import load_prompts

NEU = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def _resolve(names, yaml_file, **data):
    lines = []
    prompts, source = resolve_prompts({"yaml_file": str(yaml_file), **data}, names, lines.append)
    return prompts, source, lines


def test_neu_det_classes_get_the_neu_det_descriptions_whatever_the_file_is_called(tmp_path):
    prompts, source, lines = _resolve(NEU, tmp_path / "data.yaml")
    bundled = load_prompts(CFG_DIR / "prompts" / "neu-det.yaml")
    assert source.endswith("neu-det.yaml")
    assert prompts == {n: bundled[n] for n in NEU}
    assert any("neu-det.yaml" in line for line in lines), lines  # the log names the file used


def test_a_file_named_like_a_bundled_set_does_not_get_its_descriptions_for_other_classes(tmp_path):
    names = ["open", "crazing", "dent"]
    prompts, source, lines = _resolve(names, tmp_path / "deeppcb.yaml")
    assert prompts["open"] == load_prompts(CFG_DIR / "prompts" / "deeppcb.yaml")["open"]
    assert prompts["crazing"] == load_prompts(CFG_DIR / "prompts" / "neu-det.yaml")["crazing"]
    assert prompts["dent"] == template_prompts(["dent"])["dent"]
    assert "class-name templates" in source
    assert any(
        "'open' from deeppcb.yaml" in line and "'crazing' from neu-det.yaml" in line and "dent" in line
        for line in lines
    ), lines


def test_names_match_across_case_and_separators(tmp_path):
    prompts, source, _ = _resolve(
        ["Crazing", "inclusion", "patches", "pitted surface", "rolled-in scale", "scratches"], tmp_path / "x.yaml"
    )
    assert source.endswith("neu-det.yaml")
    assert prompts["pitted surface"] == load_prompts(CFG_DIR / "prompts" / "neu-det.yaml")["pitted_surface"]


def test_unknown_classes_fall_back_to_templates_with_a_hint(tmp_path):
    prompts, source, lines = _resolve(["foo", "bar"], tmp_path / "deeppcb.yaml")
    assert source == "class-name templates" and prompts == template_prompts(["foo", "bar"])
    assert any("dsmoe prompts" in line for line in lines)


def test_an_explicit_prompt_file_for_other_classes_is_named_in_the_error(tmp_path):
    (tmp_path / "mine.yaml").write_text("prompts:\n  scratch: [a thin bright line]\n")
    with pytest.raises(ConfigError, match="mine.yaml"):
        _resolve(["scratch", "crack"], tmp_path / "data.yaml", prompts="mine.yaml")


def test_classes_spread_over_two_bundled_files_need_no_templates(tmp_path):
    prompts, source, lines = _resolve(["open", "crazing"], tmp_path / "data.yaml")
    assert "templates" not in source and "deeppcb.yaml" in source and "neu-det.yaml" in source
    assert not any("templates" in line for line in lines), lines
