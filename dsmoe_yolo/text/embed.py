"""Class embeddings: prompts -> frozen encoder -> one vector per class, cached on disk and reused.

Cache: ``$DSMOE_CACHE_DIR`` (default ``~/.cache/dsmoe_yolo``) ``/embeddings/<sha of (encoder, class names)>.pt``,
holding the embeddings with the hash of the prompts they came from. Edited prompts change that hash: the entry is
detected as stale, recomputed and replaced. A file that cannot be read is reported with the path to delete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from dsmoe_yolo.assets import cache_root
from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.text.encoder import TextEncoder, resolve_encoder_id
from dsmoe_yolo.text.prompts import load_prompts, prompts_for, prompts_hash

__all__ = ("embed_classes", "cache_dir", "load_embeddings_file", "save_embeddings_file", "template_prompts")

FORMAT = 1


def cache_dir() -> Path:
    """Root of the embedding cache: ``embeddings/`` in dsmoe_yolo's user cache (``assets.cache_root``)."""
    return cache_root() / "embeddings"


def _cache_file(encoder_id: str, names: list[str]) -> Path:
    key = hashlib.sha256(json.dumps([FORMAT, encoder_id, names], ensure_ascii=False).encode()).hexdigest()[:24]
    return cache_dir() / f"{key}.pt"


def template_prompts(names: list[str]) -> dict[str, list[str]]:
    """Plain descriptions built from class names (used, with a warning, when a dataset has no prompt file)."""
    return {n: [f"a {n.replace('_', ' ').replace('-', ' ')} defect on an industrial surface"] for n in names}


def save_embeddings_file(path: str | Path, embeddings: torch.Tensor, meta: dict) -> Path:
    """Write embeddings (nc, D) and their provenance to a ``.pt`` file (the format 'dsmoe embed' writes).

    Atomic and safe for concurrent writers (two trainings or DDP ranks filling the same cache entry): each writes its
    own temporary file in the target folder and renames it over ``path``; the last rename wins, readers never see a
    partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "embeddings": embeddings.float().cpu(), **meta}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_embeddings_file(path: str | Path, names: list[str] | None = None) -> tuple[torch.Tensor, dict]:
    """Read an embeddings file, checking it against the data's class names.

    Raises:
        ConfigError: If the file is missing, unreadable, malformed, or its classes differ from ``names``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"embeddings file '{path}' not found; create it with 'dsmoe embed data=...' or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"embeddings file '{path}' is corrupted or not a dsmoe embeddings file ({type(e).__name__}); delete it and run 'dsmoe embed' again"
        ) from None
    emb = payload.get("embeddings") if isinstance(payload, dict) else None
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or not torch.isfinite(emb).all():
        raise ConfigError(
            f"embeddings file '{path}' has no finite (nc, dim) 'embeddings' tensor; delete it and run 'dsmoe embed' again"
        )
    meta = {k: v for k, v in payload.items() if k not in ("embeddings", "format")}
    file_names = list(meta.get("names") or [])
    if names is not None:
        if len(emb) != len(names):
            raise ConfigError(
                f"embeddings file '{path}' has {len(emb)} classes but the data has {len(names)} ({names}); run 'dsmoe embed data=...' for this data"
            )
        if file_names and file_names != list(names):
            raise ConfigError(
                f"embeddings file '{path}' was made for classes {file_names}, the data has {list(names)}; run 'dsmoe embed data=...' for this data"
            )
    return emb.float(), meta


def embed_classes(
    names: list[str],
    prompts: dict[str, list[str]],
    model: str = "auto",
    device: str | None = None,
    cache: bool = True,
    progress: bool = True,
    log=None,
) -> tuple[torch.Tensor, dict]:
    """Embed each class as the mean of its descriptions' embeddings.

    Args:
        names: Class names in class-index order.
        prompts: ``{name: [descriptions]}``; must cover exactly ``names``.
        model: Encoder spec (see ``TextEncoder``).
        device: Encoder device.
        cache: Read and write the on-disk cache.
        progress: Show a progress bar while embedding.
        log: ``callable(str)`` for status lines (default: Ultralytics' LOGGER.info).

    Returns:
        (embeddings (nc, D) float32, meta) with meta ``{"encoder", "prompts_sha", "names", "dim", "prompts"}`` (the
        descriptions per class, kept in the model with the embeddings).
    """
    if log is None:
        from ultralytics.utils import LOGGER

        log = LOGGER.info
    names = [str(n) for n in names]
    texts = prompts_for(names, prompts)
    digest = prompts_hash(names, texts)
    encoder_id = resolve_encoder_id(model)
    file = _cache_file(encoder_id, names)
    if cache and file.exists():
        emb, meta = load_embeddings_file(file, names)
        if meta.get("prompts_sha") == digest and meta.get("encoder") == encoder_id:
            log(f"DS-MoE text: cached class embeddings ({encoder_id}, {len(names)} classes) from {file}")
            return emb, {**meta, "prompts": dict(zip(names, texts))}
        log(
            f"DS-MoE text: prompts changed since {file} was written (hash {meta.get('prompts_sha')} -> {digest}); recomputing"
        )
    encoder = TextEncoder(encoder_id, device=device)
    flat = [t for ts in texts for t in ts]
    log(
        f"DS-MoE text: embedding {len(flat)} descriptions of {len(names)} classes with {encoder_id} on {encoder.device}"
    )
    vectors = encoder.encode(flat, progress=progress)
    emb, start = [], 0
    for ts in texts:
        emb.append(vectors[start : start + len(ts)].mean(0))
        start += len(ts)
    emb = torch.stack(emb)
    meta = {"encoder": encoder_id, "prompts_sha": digest, "names": names, "dim": int(emb.shape[1])}
    if cache:
        save_embeddings_file(file, emb, meta)
    return emb, {**meta, "prompts": dict(zip(names, texts))}  # the descriptions travel with the model


def resolve_prompts(data: dict, names: list[str], log) -> tuple[dict[str, list[str]], str]:
    """Find the prompts for a dataset: its ``prompts:`` key, else the bundled files that know its class names (see
    ``text/bundled.py``), else class-name templates."""
    from dsmoe_yolo.assets import CFG_DIR
    from dsmoe_yolo.text.bundled import match_bundled_prompts

    yaml_file = Path(str(data.get("yaml_file", "")))
    spec = data.get("prompts")
    if isinstance(spec, dict):  # descriptions given in the data dict itself
        return dict(zip(names, prompts_for(names, spec, source="the data's prompts"))), "the data's prompts"
    if data.get("union") and not spec:  # several datasets (multi_dataset.py): each member's own descriptions, joined
        return _joined_prompts(data["union"], names, log), "the datasets' own prompts"
    if spec:
        candidates = [Path(spec).expanduser(), yaml_file.parent / spec, CFG_DIR / "prompts" / str(spec)]
        for c in candidates:
            if c.is_file() and c.resolve() != yaml_file.resolve():  # a bundled prompt file shares the data YAML's name
                table = prompts_for(names, load_prompts(c), source=f"prompt file '{c}'")
                log(f"DS-MoE text: class descriptions from {c} (named by the data YAML's 'prompts:')")
                return dict(zip(names, table)), str(c)
        raise ConfigError(
            f"data YAML '{yaml_file.name}' names prompts '{spec}', which was not found (looked in {', '.join(str(c.parent) for c in candidates)})"
        )
    return match_bundled_prompts(names, CFG_DIR / "prompts", yaml_file.name, template_prompts, log)


def _joined_prompts(members: list[dict], names: list[str], log) -> dict[str, list[str]]:
    """Each union class's descriptions from the first member that has it, found as for that dataset alone (its
    ``prompts:`` key, else the bundled files that know its names, else templates)."""
    from dsmoe_yolo.text.prompts import normalise_name

    keys = {normalise_name(n): n for n in names}
    table, seen = {}, set()
    for member in members:
        info = member["data"]
        if id(info) in seen:
            continue
        seen.add(id(info))
        local, _ = resolve_prompts(info, info["local_names"], log)
        for n, texts in local.items():
            table.setdefault(keys[normalise_name(n)], texts)
    return {n: table[n] for n in names}
