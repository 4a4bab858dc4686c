"""Binding class-text embeddings to DS-MoE models: automatically at training, and by ``set_classes``.

Training (``bind_for_training``, run by the plugin right after Ultralytics sets the model's names, before the
optimizer and EMA are built): the data YAML's ``embeddings:`` file if it names one, else its prompts embedded with
``text_encoder`` (train arg, default ``auto``), cached. The embeddings, their provenance and the class names then
live in the model, so every checkpoint carries them and ``predict``/``val``/``export`` never need the encoder.
The prompt file's optional ``hierarchy:`` (group -> classes) is bound too (``bind_hierarchy``): it gives the
hyperbolic stage the class groups of its ordering loss (Eq. 12).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.names import ordered_names

__all__ = (
    "bind_for_training",
    "bind_model",
    "bind_hierarchy",
    "class_texts",
    "set_classes",
    "is_open_vocabulary",
    "checkpoint_encoder",
    "resize_head",
    "resolve_embeddings",
    "transfer_text_meta",
)


def class_texts(model: nn.Module) -> list:
    """The ``ClassText`` layers of a model (any wrapper: YOLO, DDP, DetectionModel)."""
    from dsmoe_yolo.nn.text import ClassText

    model = getattr(model, "module", model)  # DDP
    return [m for m in model.modules() if isinstance(m, ClassText)]


def resolve_embeddings(data: dict, names: list[str], encoder: str = "auto", device: str | None = None, log=None):
    """Embeddings (nc, D) and meta for a dataset dict (as returned by ``check_det_dataset``)."""
    from dsmoe_yolo.text.embed import embed_classes, load_embeddings_file, resolve_prompts

    if log is None:
        from ultralytics.utils import LOGGER

        log = LOGGER.info
    if data.get("embeddings"):
        yaml_dir = Path(str(data.get("yaml_file", "."))).parent
        path = Path(str(data["embeddings"])).expanduser()
        path = path if path.is_absolute() or path.exists() else yaml_dir / path
        emb, meta = load_embeddings_file(path, names)
        log(f"DS-MoE text: class embeddings from {path} ({meta.get('encoder', 'unknown encoder')})")
        return emb, {"names": list(names), **meta, "source": str(path)}
    prompts, source = resolve_prompts(data, names, log)
    emb, meta = embed_classes(names, prompts, model=encoder, device=device, log=log)
    return emb, {**meta, "source": source}


def bind_model(model: nn.Module, embeddings: torch.Tensor, meta: dict) -> int:
    """Bind embeddings to every ``ClassText`` of ``model``; return how many were bound.

    Raises:
        ConfigError: If the embedding count differs from a closed-set model's class count (an open-vocabulary head
            takes any count).
    """
    texts = class_texts(model)
    nc = getattr(getattr(model, "model", [None])[-1], "nc", None) if hasattr(model, "model") else None
    if not is_open_vocabulary(model) and nc is not None and len(embeddings) != nc:
        raise ConfigError(
            f"{len(embeddings)} class embeddings for a model with nc={nc}; embed exactly the model's classes"
        )
    for t in texts:
        t.bind(embeddings, meta)
    if isinstance(getattr(model, "yaml", None), dict) and "text_dim" in model.yaml:
        model.yaml["text_dim"] = int(embeddings.shape[1])  # checkpoints rebuild ClassText at the bound width
    return len(texts)


def transfer_text_meta(src: nn.Module, dst: nn.Module) -> None:
    """After a weight transfer, carry each ClassText's provenance over when its embeddings came along unchanged."""
    for a, b in zip(class_texts(src), class_texts(dst)):
        if (
            a.is_bound
            and a.embeddings.shape == b.embeddings.shape
            and torch.equal(a.embeddings.float().cpu(), b.embeddings.float().cpu())
        ):
            b.text_meta = dict(a.text_meta)


def bind_for_training(trainer) -> None:
    """Bind class text from the trainer's data, unless the model already holds embeddings for these names."""
    from ultralytics.utils import LOGGER
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(trainer.model)
    texts = class_texts(model)
    if not texts:
        return
    names = ordered_names(trainer.data["names"])
    data, prompt_file = trainer.data, getattr(trainer.args, "prompts", None)
    if prompt_file:  # train arg prompts=: the prompt file for the data's classes, in place of the data YAML's
        if not isinstance(prompt_file, str) or not prompt_file.endswith((".yaml", ".yml")):
            raise ConfigError(f"train arg prompts={prompt_file!r} must name a prompt file (cfg/prompts/*.yaml shape)")
        data = {**data, "prompts": prompt_file}
    if not prompt_file and all(t.is_bound and t.text_meta.get("names") == names for t in texts):
        LOGGER.info(
            f"DS-MoE text: model already holds class embeddings for {names} ({texts[0].text_meta.get('encoder')})"
        )
        bind_hierarchy(model, texts[0].text_meta.get("source"), names)
        return
    device = str(trainer.device) if getattr(trainer, "device", None) is not None else None
    emb, meta = resolve_embeddings(data, names, getattr(trainer.args, "text_encoder", "auto"), device)
    bind_model(model, emb.to(next(model.parameters()).device), meta)
    bind_hierarchy(model, meta.get("source"), names)


def bind_hierarchy(model: nn.Module, source: str | None, names: list[str], log=None) -> list[int] | None:
    """Give every ``HyperbolicAlign`` the class groups of the prompt file ``source`` (its ``hierarchy:``).

    ``source`` is where the class prompts came from (``resolve_prompts``' second value); anything but a YAML file
    (class-name templates, an embeddings ``.pt``) has no hierarchy and clears the groups. Returns the group index per
    class, or None.

    Raises:
        ConfigError: If the file's hierarchy is malformed or names classes it does not describe.
    """
    from dsmoe_yolo.nn.hyperbolic import HyperbolicAlign
    from dsmoe_yolo.text.prompts import hierarchy_groups, load_hierarchy

    layers = [m for m in getattr(model, "module", model).modules() if isinstance(m, HyperbolicAlign)]
    path = Path(str(source or ""))
    if not layers:
        return None
    is_file = path.suffix in (".yaml", ".yml") and path.is_file()
    hierarchy = load_hierarchy(path) if is_file else None
    groups = hierarchy_groups(hierarchy, names) if hierarchy else None
    for layer in layers:
        layer.set_groups(groups)
    if groups:
        if log is None:
            from ultralytics.utils import LOGGER

            log = LOGGER.info
        log(f"DS-MoE text: class hierarchy from {path.name}: {hierarchy} (hyperbolic ordering loss, Eq. 12)")
    return groups


def is_open_vocabulary(model) -> bool:
    """True if ``model``'s (YOLO wrapper, DetectionModel or DDP) head scores classes by their text (``PromptDetect``)."""
    from dsmoe_yolo.nn.prompt_head import PromptDetect

    net = getattr(model, "module", model)
    net = getattr(net, "model", net)
    net = getattr(net, "model", net)  # YOLO wrapper -> DetectionModel -> Sequential
    return isinstance(net, nn.Sequential) and len(net) > 0 and isinstance(net[-1], PromptDetect)


def set_classes(
    model,
    names,
    embeddings: torch.Tensor | None = None,
    encoder: str | None = None,
    prompts: dict | str | None = None,
    visual: dict | None = None,
    imgsz: int = 640,
) -> None:
    """Change a DS-MoE model's classes: names, class text, and the detection head's class count.

    On an open-vocabulary model (``PromptDetect`` head, ``dsmoe-ov-*.yaml``) the prompts *are* the classifier: the
    new classes are detected at once, no retraining. On a closed-set model (``Detect`` head) rows of the head's class
    convolutions are kept for names the model already knew (matched by name) and initialised fresh for new ones, with
    a warning: those need fine-tuning before their scores mean anything.

    Args:
        model: ``YOLO``/``DSMoE`` wrapper or ``DetectionModel``.
        names: Class names (list), ``{name: description(s)}``, a prompt file (``cfg/prompts`` shape) or a
            comma-separated string of names.
        embeddings: (len(names), D) embeddings; default: embed the descriptions (class-name templates if none).
        encoder: Text encoder; default the one the model's class text was embedded with (``auto`` if unbound).
        prompts: Descriptions per class of a name list (mapping or prompt file).
        visual: ``{name: {"image": ..., "boxes": [[x1, y1, x2, y2], ...]}}`` example boxes (``visual_prompts``;
            open-vocabulary models only). They can also stand in ``names`` as a mapping's values, or under ``visual:``
            in a prompt file. A class with both text and boxes uses both.
        imgsz: Letterbox size of the example images of visual prompts.

    Raises:
        ConfigError: For bad prompts (``class_prompts``), an encoder that is not on this machine, or embeddings of
            another width than the model's.
    """
    from ultralytics.nn.modules import Detect

    from dsmoe_yolo.text.embed import embed_classes, template_prompts

    is_net = isinstance(getattr(model, "model", None), nn.Sequential)  # a DetectionModel, not a YOLO wrapper
    wrapper, net = (None, model) if is_net else (model, model.model)
    names, table, source, visual, only_visual = _text_and_visual(names, prompts, visual)
    if visual and not is_open_vocabulary(net):
        raise ConfigError(
            "visual prompts need an open-vocabulary model (dsmoe-ov-*.yaml): this model's head is closed-set"
        )
    texts = class_texts(net)
    if not texts:
        raise ConfigError("set_classes needs a DS-MoE model with a ClassText layer")
    if embeddings is None:
        table = table or template_prompts(names)
        encoder = encoder or checkpoint_encoder(texts[0])
        embeddings, meta = embed_classes(names, table, model=encoder)
    else:
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(names):
            raise ConfigError(f"set_classes: embeddings must be ({len(names)}, D), got {tuple(embeddings.shape)}")
        meta = {"encoder": "user-provided", "names": names, "dim": int(embeddings.shape[1])}
    meta["names"] = names
    if table is not None:
        meta["prompts"] = {n: list(table[n]) for n in names}

    head = net.model[-1]
    if not isinstance(head, Detect):
        raise ConfigError("set_classes: the model's last layer is not a Detect head")
    if texts[0].is_bound and embeddings.shape[1] != texts[0].embed_dim:  # before anything changes
        raise ConfigError(
            f"set_classes: class embeddings are {embeddings.shape[1]}-dim but this model was trained with "
            f"{texts[0].embed_dim}-dim text from '{texts[0].text_meta.get('encoder')}'; embed them with that encoder"
        )
    open_vocabulary = is_open_vocabulary(net)
    if not open_vocabulary:
        old = [str(v) for v in (net.names.values() if isinstance(net.names, dict) else net.names)]
        new = [n for n in names if n not in old]
        if new:
            from ultralytics.utils import LOGGER

            LOGGER.warning(
                f"set_classes: {new} are new to this model; their detection-head rows are untrained, so their scores "
                f"mean nothing until the model is fine-tuned on data with these classes (the head is a closed-set "
                f"classifier; the open-vocabulary models, dsmoe-ov-*.yaml, detect new classes from their prompts)"
            )
        resize_head(head, old, names)
    saved = [
        (t.embeddings, dict(t.text_meta), getattr(t, "visual", None), getattr(t, "visual_mode", None)) for t in texts
    ]
    from dsmoe_yolo.nn.hyperbolic import HyperbolicAlign

    old_groups = [(m, m.groups) for m in net.modules() if isinstance(m, HyperbolicAlign)]
    bind_model(net, embeddings.to(texts[0].embeddings.device), meta)
    # the hierarchy follows the classes before any forward pass (the visual prototypes' runs one with the new text)
    bind_hierarchy(net, str(source) if source else None, names)
    if open_vocabulary:
        head.nc, head.no = len(names), len(names) + head.reg_max * 4
    if visual:  # prototypes come from the new class text; unreadable images and empty boxes restore the old state
        from dsmoe_yolo.visual_prompts import class_prototypes

        try:
            prototypes = class_prototypes(net, visual, imgsz)
        except ConfigError:
            for t, (emb, m, old_visual, old_mode) in zip(texts, saved):
                t.bind(emb, m)
                t.set_visual(old_visual, old_mode)
            for layer, groups in old_groups:
                layer.set_groups(groups)
            head.nc, head.no = len(saved[0][0]), len(saved[0][0]) + head.reg_max * 4
            raise
        rows = torch.zeros(len(names), texts[0].c2)
        mode = torch.zeros(len(names), dtype=torch.int8)
        for i, n in enumerate(names):
            if n in prototypes:
                rows[i], mode[i] = prototypes[n], 1 if n in only_visual else 2
        for t in texts:
            t.set_visual(rows, mode)
            t.text_meta["visual"] = {n: _visual_summary(v) for n, v in visual.items()}
    net.yaml["nc"] = len(names)
    net.names = dict(enumerate(names))
    net.criterion = None  # rebuilt lazily with the new class count
    if wrapper is not None:
        wrapper.predictor = None


def _text_and_visual(spec, prompts, visual):
    """Names, text table and source (``class_prompts``) plus the visual entries and the classes given only by boxes.

    Classes given only by boxes get class-name template text (it joins the class text's self-attention; their rows
    are replaced by their prototypes).
    """
    from dsmoe_yolo.text.embed import template_prompts
    from dsmoe_yolo.text.prompts import class_prompts
    from dsmoe_yolo.visual_prompts import parse_visual, split_prompts

    text_spec, found = split_prompts(spec)
    found.update(parse_visual(visual))
    if not found:
        names, table, source = class_prompts(spec, prompts)
        return names, table, source, {}, set()
    source = None
    if isinstance(text_spec, dict):
        entries = dict(text_spec)
    elif text_spec in (None, "", []):
        entries = {}
    else:
        listed, table, source = class_prompts(text_spec, prompts)  # a listed name is text, if only its template
        entries = {n: (table[n] if table else template_prompts([n])[n]) for n in listed}
    for n in found:
        entries.setdefault(n, None)
    only_visual = {n for n, v in entries.items() if v is None and n in found}
    filled = {n: (template_prompts([n])[n] if v is None else v) for n, v in entries.items()}
    names, table, _ = class_prompts(filled)
    return names, table, source, found, only_visual


def _visual_summary(entries: list[dict]) -> list[dict]:
    """What a checkpoint records of a class's example boxes (image paths; arrays as their shape)."""
    import numpy as np

    out = []
    for e in entries:
        image = e["image"]
        image = f"array{tuple(image.shape)}" if isinstance(image, np.ndarray) else str(image)
        out.append({"image": image, "boxes": np.asarray(e["boxes"], dtype=float).reshape(-1, 4).tolist()})
    return out


def checkpoint_encoder(text) -> str:
    """The encoder a bound ``ClassText`` was embedded with, checked to be on this machine (``auto`` if unbound).

    Raises:
        ConfigError: If that encoder cannot be found here, naming it and how to get it (at once, no hub time-out).
    """
    from dsmoe_yolo.text.encoder import MINILM, _in_hf_cache, _packaged_minilm, how_to_get_one

    enc = str(text.text_meta.get("encoder") or "") if text.is_bound else ""
    if not enc or enc == "user-provided":
        if enc:
            raise ConfigError(
                "this model's class text came from user-provided embeddings: pass embeddings=(nc, "
                f"{text.embed_dim}) tensor, or encoder=<the encoder that made them>"
            )
        return "auto"
    local = Path(enc).expanduser()
    found = (
        local.is_dir()
        if local.is_absolute()
        else (_packaged_minilm() is not None if enc == MINILM else _in_hf_cache(enc))
    )
    if not found:
        raise ConfigError(
            f"this model's class text was embedded with '{enc}', which is not on this machine, and new prompts must be "
            f"embedded with the same encoder ({text.embed_dim}-dim). {how_to_get_one()}"
        )
    return enc


def resize_head(head, old: list[str], new: list[str]) -> None:
    """Give every class branch of a closed-set ``Detect`` head (DS-MoE's or a plain YOLOv8's) ``len(new)`` outputs:
    rows of names in ``old`` are kept, new names get Ultralytics' bias prior and a fresh conv's weights."""
    import math

    keep = {n: old.index(n) for n in new if n in old}
    for attr in ("cv3", "one2one_cv3"):
        branches = getattr(head, attr, None)
        if branches is None:
            continue
        for i, seq in enumerate(branches):
            conv = seq[-1]
            fresh = nn.Conv2d(conv.in_channels, len(new), 1).to(conv.weight.device, conv.weight.dtype)
            with torch.no_grad():
                stride = float(head.stride[i]) if len(head.stride) > i and float(head.stride[i]) > 0 else 8.0 * 2**i
                fresh.bias.fill_(math.log(5 / len(new) / (640 / stride) ** 2))
                for j, n in enumerate(new):
                    if n in keep:
                        fresh.weight[j] = conv.weight[keep[n]]
                        fresh.bias[j] = conv.bias[keep[n]]
            seq[-1] = fresh
    head.nc = len(new)
    head.no = head.nc + head.reg_max * 4
