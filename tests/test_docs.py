"""README.md and the documentation site (docs/, mkdocs.yml): links resolve, the README stays short, the site builds,
and every `yolo` / `dsmoe` command line shown in a ```bash block names files that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dsmoe_yolo.assets import CFG_DIR, find_bundled
from dsmoe_yolo.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README_MAX_LINES = 250

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
# Files of the reader's own that a command line stands in for (not in this repository by design).
USER_FILES = {
    "your.yaml",
    "other.yaml",
    "mine.yaml",
    "defects.yaml",
    "data.yaml",
    # written by a command shown beside them (the campaign's union and few-label data YAMLs)
    "union-no-neu.yaml",
    "union-no-pcb.yaml",
    "union-no-patches.yaml",
    "union-no-scratches.yaml",
    "union-no-crazing.yaml",
    "neu-det-5.yaml",
    "neu-det-25.yaml",
    "deeppcb-5.yaml",
    "deeppcb-25.yaml",
    # written by step 10 of examples/cpu_campaign.sh (the lite open-vocabulary YAML with PromptDetect visual=0.25)
    "dsmoe-ov-lite-vis-text-yolov8n.yaml",
    "dsmoe-ov-lite-vis-prototypes-yolov8n.yaml",
}
FILE_KEYS = ("model", "models", "data", "cfg", "prompts")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _links(md: Path) -> list[str]:
    """Relative link and image targets of a Markdown file, outside code blocks and inline code, without #anchors."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", md.read_text(encoding="utf-8")))
    out = []
    for target in LINK.findall(text):
        if target.startswith("#") or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # same-page anchor, URL, mailto:
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_there_are_docs_pages():
    assert (ROOT / "mkdocs.yml").is_file() and (DOCS / "index.md").is_file() and len(PAGES) >= 10


@pytest.mark.parametrize("md", [ROOT / "README.md", *PAGES], ids=lambda p: _rel(p))
def test_every_relative_link_and_image_resolves(md):
    missing = [t for t in _links(md) if not (md.parent / t).exists()]
    assert not missing, f"{_rel(md)} links to missing files: {missing}"
    if md.parent.is_relative_to(DOCS):  # mkdocs serves docs/ only: a link out of it is broken on the site
        outside = [t for t in _links(md) if not (md.parent / t).resolve().is_relative_to(DOCS.resolve())]
        assert not outside, f"{_rel(md)} links outside docs/ (name the path in `code` instead): {outside}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_docs_charts_are_the_campaign_charts():
    """docs/assets/<name>-benchmark.png are copies of examples/results/<name>/benchmark.png (mkdocs serves docs/ only)."""
    charts = sorted((DOCS / "assets").glob("*-benchmark.png"))
    assert charts
    for chart in charts:
        source = ROOT / "examples" / "results" / chart.name[: -len("-benchmark.png")] / "benchmark.png"
        assert source.is_file(), f"{_rel(chart)} has no source {_rel(source)}"
        assert chart.read_bytes() == source.read_bytes(), f"{_rel(chart)} is stale: cp {_rel(source)} {_rel(chart)}"


def test_docs_list_every_plugin_hook():
    """Every hook of dsmoe_yolo/plugin/__init__.py's table is in docs/plugin.md's table."""
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / "dsmoe_yolo" / "plugin" / "__init__.py").read_text(encoding="utf-8")))
    rules = [i for i, line in enumerate(doc.splitlines()) if line.startswith("====")]
    rows = doc.splitlines()[rules[1] + 1 : rules[2]]
    hooks = [re.split(r"\s{2,}", row.strip())[0].replace("``", "`") for row in rows if row.strip()]
    page = (DOCS / "plugin.md").read_text(encoding="utf-8")
    missing = [hook for hook in hooks if f"| {hook} |" not in page]
    assert len(hooks) > 10 and not missing, f"docs/plugin.md lacks the hooks {missing}"


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings")),
    reason='mkdocs, mkdocs-material or mkdocstrings is not installed (pip install -e ".[docs]")',
)
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


def _command_lines(md: Path) -> list[list[str]]:
    """Every command (token list) of the ```bash blocks of a Markdown file; `a && b`, `a; b` and `a | b` are two."""
    commands = []
    for block in BASH.findall(md.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", "").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars="&;|")
            lexer.whitespace_split = True
            current = []
            for token in lexer:
                if set(token) <= set("&;|"):
                    commands.append(current)
                    current = []
                else:
                    current.append(token)
            commands.append(current)
    out = []
    for tokens in commands:
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value before the program
            tokens = tokens[1:]
        if tokens and tokens[0] in ("yolo", "dsmoe"):
            out.append(tokens)
    return out


def _stock_yaml(name: str) -> bool:
    """True for a model YAML that Ultralytics itself ships (yolov8n.yaml -> ultralytics/cfg/models/v8/yolov8.yaml)."""
    spec = importlib.util.find_spec("ultralytics")
    cfg = Path(spec.origin).parent / "cfg"
    return any(cfg.rglob(name))


def _resolves(key: str, value: str) -> bool:
    if "/" in value:
        return (ROOT / value).is_file()
    if key == "prompts":
        return (CFG_DIR / "prompts" / value).is_file()
    unscaled = re.sub(
        r"(\d+)([nslmx])(.+)?$", r"\1\3", value
    )  # Ultralytics' scale letter: dsmoe-yolov8n -> dsmoe-yolov8
    return any(find_bundled(n) is not None or _stock_yaml(n) for n in {value, unscaled})


def _named_files(tokens: list[str]) -> list[tuple[str, str]]:
    files = []
    for token in tokens[1:]:
        key, eq, value = token.partition("=")
        if not eq or key not in FILE_KEYS:
            continue
        for item in value.split(",") if key == "models" else [value]:
            placeholder = any(s in item for s in ("$", "<", "/path/to/")) or Path(item).name in USER_FILES
            if item.endswith((".yaml", ".yml")) and not placeholder:
                files.append((key, item))
    return files


@pytest.mark.parametrize("md", [ROOT / "README.md", *PAGES], ids=lambda p: _rel(p))
def test_every_shown_command_names_files_that_exist(md):
    bad = []
    for tokens in _command_lines(md):
        if tokens[0] == "dsmoe":
            command = tokens[1] if len(tokens) > 1 else ""
            if command not in COMMANDS:
                bad.append(f"unknown command: {shlex.join(tokens)}")
                continue
            keys = [t.partition("=")[0] for t in tokens[2:] if t != "--help"]
            bad += [
                f"'{k}' is no key of dsmoe {command}: {shlex.join(tokens)}" for k in keys if k not in COMMANDS[command]
            ]
        bad += [
            f"{key}={item} does not resolve: {shlex.join(tokens)}"
            for key, item in _named_files(tokens)
            if not _resolves(key, item)
        ]
    assert not bad, f"{_rel(md)}:\n" + "\n".join(bad)


def test_the_command_check_sees_the_commands():
    """The parser behind the check above finds the README's commands and tells a missing file from a bundled one."""
    readme = _command_lines(ROOT / "README.md")
    assert any(t[:2] == ["yolo", "train"] and "data=dsmoe-synth.yaml" in t for t in readme)
    assert _resolves("model", "dsmoe-lite-yolov8n.yaml") and _resolves("model", "yolov8n.yaml")
    assert _resolves("data", "neu-det.yaml") and _resolves("prompts", "cfg/prompts/neu-det.yaml")
    assert not _resolves("model", "dsmoe-lite-yolov9z.yaml") and not _resolves("data", "no-such-set.yaml")
    assert _named_files(["yolo", "train", "model=a.yaml", "data=your.yaml", "models=b.yaml,$M/c.yaml"]) == [
        ("model", "a.yaml"),
        ("models", "b.yaml"),
    ]
