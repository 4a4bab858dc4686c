"""Stage 1 prompts: per-class visual descriptions, read from ``cfg/prompts/<dataset>.yaml`` or written by an LLM.

Prompt files map each class name to several precise visual descriptions::

    model: deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B   # who wrote them (informational)
    prompts:
      open:
        - a copper trace interrupted by a narrow gap of bare substrate
      short:
        - ...
    hierarchy:                    # optional: group -> classes, for the hyperbolic ordering loss (Eq. 12)
      missing_copper: [open, mousebite]
      excess_copper: [short, spur]

``generate_prompts`` asks a causal LLM through transformers (chat template, ``<think>`` reasoning stripped) for
descriptions of new class names; the file it writes is meant to be read and edited by the user.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from dsmoe_yolo.errors import ConfigError

__all__ = (
    "load_prompts",
    "load_hierarchy",
    "hierarchy_groups",
    "prompts_for",
    "prompts_hash",
    "strip_reasoning",
    "parse_descriptions",
    "generate_prompts",
    "class_prompts",
)

THINK = re.compile(r"<think>.*?(</think>|$)", flags=re.S | re.I)
SYSTEM = (
    "You write short, precise visual descriptions of industrial surface defects for a vision model. "
    "Describe shape, size, texture, contrast and location, and what distinguishes the defect from look-alike classes."
)
REQUEST = (
    "Defect classes in this inspection task: {all}.\nWrite {n} different one-sentence visual descriptions of the "
    "defect class '{name}'. Make each one separate '{name}' from the other classes. Answer with one description per "
    "line, no numbering, no extra text."
)


def load_prompts(path: str | Path) -> dict[str, list[str]]:
    """Read a prompt file and return ``{class name: [descriptions]}``.

    Raises:
        ConfigError: If the file is missing, unreadable, or a class has no descriptions.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"prompt file '{path}' not found; write one (see cfg/prompts/) or run 'dsmoe prompts data=...'"
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"prompt file '{path}' is not valid YAML: {e}") from None
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, dict) or not prompts:
        raise ConfigError(f"prompt file '{path}' needs a 'prompts:' mapping of class name -> list of descriptions")
    out = {}
    for name, texts in prompts.items():
        texts = [texts] if isinstance(texts, str) else texts
        texts = [str(t).strip() for t in (texts or []) if str(t).strip()]
        if not texts:
            raise ConfigError(f"prompt file '{path}': class '{name}' has no descriptions; add at least one")
        out[str(name)] = texts
    return out


def load_hierarchy(path: str | Path) -> dict[str, list[str]] | None:
    """Read a prompt file's optional ``hierarchy:`` (group name -> class names); None if it has none.

    Raises:
        ConfigError: If the mapping is malformed, a group is empty, a class is in two groups, or a class is not one
            of the file's ``prompts:`` classes (each error names the file).
    """
    path = Path(path)
    prompts = load_prompts(path)  # also checks the file exists and parses
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    spec = doc.get("hierarchy")
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"prompt file '{path}': 'hierarchy:' must map group names to lists of class names")
    out, seen = {}, {}
    for group, members in spec.items():
        members = [members] if isinstance(members, str) else members
        if not isinstance(members, list) or not members:
            raise ConfigError(f"prompt file '{path}': hierarchy group '{group}' needs a non-empty list of class names")
        for name in map(str, members):
            if name not in prompts:
                raise ConfigError(
                    f"prompt file '{path}': hierarchy group '{group}' names unknown class '{name}'; use the file's "
                    f"prompt classes {list(prompts)}"
                )
            if name in seen:
                raise ConfigError(
                    f"prompt file '{path}': class '{name}' is in hierarchy groups '{seen[name]}' and '{group}'; keep it in one"
                )
            seen[name] = str(group)
        out[str(group)] = [str(m) for m in members]
    return out


def normalise_name(name: str) -> str:
    """Class name key for matching: lower case, runs of ``-``, ``_`` and spaces folded to one space."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def hierarchy_groups(hierarchy: dict[str, list[str]], names: list[str]) -> list[int]:
    """Group index per class of ``names`` (-1 for a class in no group), groups numbered in file order; names match as
    in the bundled-prompt lookup (``normalise_name``)."""
    index = {normalise_name(name): g for g, members in enumerate(hierarchy.values()) for name in members}
    return [index.get(normalise_name(n), -1) for n in names]


def prompts_for(names: list[str], prompts: dict[str, list[str]], source: str = "prompts") -> list[list[str]]:
    """Return the descriptions of each class in ``names`` order.

    Raises:
        ConfigError: If a class has no prompts or the prompts name classes the data does not have.
    """
    missing = [n for n in names if n not in prompts]
    extra = [n for n in prompts if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no descriptions for data classes {missing}")
        if extra:
            parts.append(f"descriptions for classes the data does not have {extra}")
        raise ConfigError(
            f"{source}: {'; '.join(parts)} ({len(names)} data classes, {len(prompts)} prompt classes). Make the prompt "
            f"file's class names match the data YAML's names, or regenerate it with 'dsmoe prompts data=...'"
        )
    return [prompts[n] for n in names]


def prompts_hash(names: list[str], texts: list[list[str]]) -> str:
    """Stable hash of the class names and their descriptions (detects edited prompts)."""
    return hashlib.sha256(json.dumps([names, texts], ensure_ascii=False).encode()).hexdigest()[:16]


def strip_reasoning(text: str) -> str:
    """Remove ``<think>...</think>`` reasoning (also an unterminated one) from an LLM answer."""
    return THINK.sub("", text).strip()


def parse_descriptions(answer: str, n: int) -> list[str]:
    """Turn an LLM answer into at most ``n`` clean one-line descriptions (numbering and bullets removed)."""
    lines = []
    for line in strip_reasoning(answer).splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip('"').strip()
        if len(line.split()) >= 3 and not line.endswith(":"):
            lines.append(line)
    return lines[:n]


def generate_prompts(
    names: list[str],
    model: str,
    n: int = 4,
    device: str | None = None,
    max_new_tokens: int = 512,
    seed: int = 0,
) -> tuple[dict[str, list[str]], list[str]]:
    """Ask a causal LLM for ``n`` descriptions per class.

    Returns:
        (prompts, fallbacks): descriptions per class, and the classes for which the LLM gave nothing usable (those
        get a plain template description, flagged in the written file for the user to edit).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from dsmoe_yolo.text.encoder import load_tokenizer, resolve_model_path

    path = resolve_model_path(model)
    tokenizer = load_tokenizer(path)
    llm = AutoModelForCausalLM.from_pretrained(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    llm = llm.to(device).eval()
    torch.manual_seed(seed)
    prompts, fallbacks = {}, []
    for name in names:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": REQUEST.format(all=", ".join(names), n=n, name=name)},
        ]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(device) for k, v in ids.items()}
        with torch.no_grad():
            out = llm.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        texts = parse_descriptions(answer, n)
        if not texts:
            fallbacks.append(name)
            texts = [f"a {name.replace('_', ' ')} defect on an industrial surface"]
        prompts[name] = texts
    return prompts, fallbacks


def write_prompts(path: str | Path, prompts: dict[str, list[str]], model: str, fallbacks: list[str] = ()) -> Path:
    """Write a prompt file (with a header telling the user to review it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [
        f"# Class descriptions written by {model} with 'dsmoe prompts'. Review and edit them: they drive text guidance.",
    ]
    if fallbacks:
        header.append(
            f"# The model gave no usable description for {', '.join(fallbacks)}: their entries are templates. EDIT THEM."
        )
    body = yaml.safe_dump({"model": model, "prompts": prompts}, sort_keys=False, allow_unicode=True, width=120)
    path.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    return path


def class_prompts(spec, prompts=None) -> tuple[list[str], dict[str, list[str]] | None, Path | None]:
    """Class names and descriptions from any prompt form ``set_classes`` and ``prompts=`` accept.

    ``spec`` is a list of names, a ``{name: description or [descriptions]}`` mapping, a prompt file (``cfg/prompts``
    shape; a bare name is looked up there too), or, from the command line, a comma-separated string of names.
    ``prompts`` (a mapping or a prompt file) gives descriptions for the names of a list. Returns
    ``(names, {name: [descriptions]}, prompt file or None)``, the table None when only names were given (the caller
    templates them).

    Raises:
        ConfigError: For no classes, an empty or whitespace-only name or description, or a duplicate name.
    """
    from dsmoe_yolo.assets import CFG_DIR

    def as_file(x) -> Path | None:
        if not isinstance(x, (str, Path)) or not str(x).endswith((".yaml", ".yml")):
            return None
        for c in (Path(x).expanduser(), CFG_DIR / "prompts" / str(x)):
            if c.is_file():
                return c
        raise ConfigError(f"prompt file '{x}' not found (looked in the working folder and {CFG_DIR / 'prompts'})")

    table, source = None, None
    if (file := as_file(spec)) is not None:
        source = file
        table = load_prompts(file)
        names = list(table)
    elif isinstance(spec, dict):
        table = {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in spec.items()}
        names = list(table)
    else:
        names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [str(n) for n in names]
    if not names:
        raise ConfigError("no class prompts given: pass at least one class name, e.g. set_classes(['scratch'])")
    blank = [repr(n) for n in names if not n.strip()]
    if blank:
        raise ConfigError(f"class prompts {names} include empty or whitespace-only names {blank}; remove them")
    names = [n.strip() for n in names]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(f"class prompts name {dups} more than once; class names must be unique")
    if prompts is not None:
        source = as_file(prompts) or source
        table = load_prompts(source) if as_file(prompts) is not None else dict(prompts)
        table = {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in table.items()}
        missing = [n for n in names if n not in table]
        if missing:
            raise ConfigError(f"prompts give no descriptions for classes {missing}; add them or leave prompts out")
        table = {n: table[n] for n in names}
    if table is not None:
        table = {str(k).strip(): [str(t) for t in v] for k, v in table.items()}
        empty = [n for n, texts in table.items() if not texts or any(not t.strip() for t in texts)]
        if empty:
            raise ConfigError(
                f"class prompts: {empty} have an empty or whitespace-only description; write one or drop it"
            )
    return names, table, source
