"""Bundled prompt files (``cfg/prompts/*.yaml``) chosen by the data's class names, never by the data YAML's file name.

A data YAML that names no ``prompts:`` file gets descriptions from the bundled files that know its classes:

- one bundled file holds every class -> that file (ties: the one named like the data YAML, then the smallest file);
- some classes are found -> their descriptions (each from the bundled file that covers most of the data's classes),
  class-name templates for the rest, logged class by class;
- none -> class-name templates, with a hint on writing a prompt file.

Names match after normalisation (case, ``-``/``_``/space), so ``rolled-in scale`` finds ``rolled-in_scale``.
"""

from __future__ import annotations

from pathlib import Path

from dsmoe_yolo.text.prompts import load_prompts, normalise_name

__all__ = ("match_bundled_prompts",)


def _bundled_files(folder: Path) -> list[tuple[Path, dict[str, list[str]]]]:
    return [(p, load_prompts(p)) for p in sorted(folder.glob("*.yaml"))]


def match_bundled_prompts(
    names: list[str], folder: Path, data_name: str, templates, log
) -> tuple[dict[str, list[str]], str]:
    """Descriptions for ``names`` from the prompt files in ``folder``.

    Args:
        names: Data class names in class-index order.
        folder: Folder of bundled prompt files.
        data_name: The data YAML's file name (only breaks ties between files that cover every class).
        templates: ``callable(names) -> {name: [text]}`` for classes no file knows.
        log: ``callable(str)`` for the status lines.

    Returns:
        (``{name: [descriptions]}`` for exactly ``names``, source string naming the file(s) used).
    """
    files = _bundled_files(folder)
    keyed = [(p, {normalise_name(k): v for k, v in table.items()}) for p, table in files]
    wanted = [normalise_name(n) for n in names]
    found = [(sum(w in table for w in wanted), p, table) for p, table in keyed]
    full = [(p, table) for hits, p, table in found if hits == len(wanted)]
    if full:
        path, table = min(full, key=lambda f: (f[0].name != data_name, len(f[1]), f[0].name))
        log(f"DS-MoE text: class descriptions from {path} (all {len(names)} classes match its class names)")
        return {n: table[w] for n, w in zip(names, wanted)}, str(path)
    ranked = sorted(((hits, p, t) for hits, p, t in found if hits), key=lambda f: (-f[0], f[1].name))
    out, used, missing = {}, [], []
    for n, w in zip(names, wanted):
        source = next(((p, t) for _, p, t in ranked if w in t), None)
        if source is None:
            missing.append(n)
            continue
        out[n] = source[1][w]
        used.append((n, source[0]))
    if missing:
        out.update(templates(missing))
    if not used:
        log(
            f"DS-MoE text: no bundled prompt file knows the classes {list(names)}; using class-name templates. Write "
            f"better ones with 'dsmoe prompts data=...' and name the file under 'prompts:' in the data YAML."
        )
        return out, "class-name templates"
    per_class = ", ".join(f"'{n}' from {p.name}" for n, p in used)
    rest = f"; class-name templates for {missing}" if missing else ""
    log(f"DS-MoE text: bundled descriptions for {len(used)} of {len(names)} classes ({per_class}, in {folder}){rest}")
    sources = sorted({str(p) for _, p in used}) + (["class-name templates"] if missing else [])
    return {n: out[n] for n in names}, " + ".join(sources)
