"""Visual prompts: a class given by a few example boxes on example images instead of (or beside) words.

The prototype of a class is computed from the model's own features, in the space its classifier compares: for each
example image (letterboxed as ``predict`` does) the open-vocabulary head's per-anchor class embeddings
``norm_l(cv3_l(P_l))`` (``PromptDetect``) are read at every anchor whose centre lies inside a box, on every level,
averaged per box and L2-normalised; a class's prototype is the normalised mean over its boxes. ``ClassText.set_visual``
then makes it that class's row of the class text ``T``, which every DS-MoE stage and the head read, so a visual class
is scored exactly like a text class (and saved, and baked into exports, the same way).

Forms (``set_classes``, ``prompts=`` files, ``predict(visual_prompts=...)``)::

    {"spur": {"image": "pcb_01.jpg", "boxes": [[x1, y1, x2, y2], ...]}}               # pixels of that image, xyxy
    {"spur": [{"image": "a.jpg", "boxes": [[...]]}, {"image": "b.jpg", "boxes": [[...]]}]}
    # prompt file: `visual:` beside (or instead of) `prompts:`, image paths relative to the file
    visual:
      spur: [{image: pcb_01.jpg, boxes: [[10, 20, 42, 61]]}]

A class given both as text and as boxes uses both: its row is the normalised sum of its text row and its prototype.
A class given only by boxes is also embedded from a class-name template, which only takes part in the class text's
self-attention (its own row is replaced). Subtracting the image's mean embedding first (a "contrast" prototype) was
tried and scored lower (docs/prompts.md).

Trained visual path: a head built with ``visual > 0`` (``PromptDetect``) holds a projection ``visual_proj`` learnt
during training (``dsmoe_yolo.visual_training``: each ground-truth box's pooled embedding, projected, must pick its
class among the class text rows, or its class's boxes in other images). On such a model each box's pooled embedding
is projected before the mean; on other models the prototype is the untrained pooled mean. The shipped YAMLs have no
visual path: on a NEU-DET class held out of training both trained variants found it worse from boxes than the pooled
mean and cost the trained classes 4-8 AP50 points (docs/results.md, "The trained visual path").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dsmoe_yolo.errors import ConfigError

__all__ = ("is_visual", "split_prompts", "parse_visual", "class_prototypes", "pool_boxes", "MAX_EXAMPLE_IMAGES")

MAX_EXAMPLE_IMAGES = 256  # example images per call: each is one forward pass, run one at a time


def is_visual(value) -> bool:
    """True for a visual prompt entry: ``{"image", "boxes"}`` or a list of them."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, dict) and "boxes" in v for v in items)


def split_prompts(spec, base: Path | None = None) -> tuple[object, dict]:
    """Split a prompt spec into its text part (what ``class_prompts`` takes) and its visual entries.

    A prompt file's ``visual:`` section is read here (paths relative to the file); text classes come first, in file
    order, then the classes given only by boxes. Returns ``(text spec or the spec unchanged, {name: [entries]})``.
    """
    from dsmoe_yolo.assets import CFG_DIR

    if isinstance(spec, (str, Path)) and str(spec).endswith((".yaml", ".yml")):
        path = next((p for p in (Path(spec).expanduser(), CFG_DIR / "prompts" / str(spec)) if p.is_file()), None)
        if path is None:
            return spec, {}  # class_prompts reports the missing file
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"prompt file '{path}' is not valid YAML: {e}") from None
        visual = doc.get("visual") if isinstance(doc, dict) else None
        if not visual:
            return spec, {}
        if not isinstance(visual, dict):
            raise ConfigError(f"prompt file '{path}': 'visual:' must map class names to example images and boxes")
        text = dict((doc.get("prompts") or {}).items())
        return text, {str(k): _entries(str(k), v, path.parent) for k, v in visual.items()}
    if isinstance(spec, dict):
        text = {k: v for k, v in spec.items() if not is_visual(v)}
        visual = {str(k): _entries(str(k), v, base) for k, v in spec.items() if is_visual(v)}
        return {**text, **{k: None for k in visual if k not in text}}, visual
    return spec, {}


def _entries(name: str, value, base: Path | None) -> list[dict]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, dict) or "boxes" not in item or "image" not in item:
            raise ConfigError(f"visual prompt of '{name}' needs entries {{image: ..., boxes: [[x1, y1, x2, y2], ...]}}")
        image = item["image"]
        if isinstance(image, (str, Path)) and base is not None and not Path(image).is_absolute():
            image = base / image
        out.append({"image": image, "boxes": item["boxes"]})
    return out


def parse_visual(visual: dict) -> dict[str, list[dict]]:
    """Check a ``{name: entries}`` mapping (``set_classes(visual=...)``)."""
    return {str(k): _entries(str(k), v, None) for k, v in (visual or {}).items()}


def _read(image, name: str) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"visual prompt of '{name}': an example image array must be (H, W, 3) BGR")
        return image
    import cv2

    im = cv2.imread(str(image)) if Path(str(image)).is_file() else None
    if im is None:
        raise ConfigError(
            f"visual prompt of '{name}': example image '{image}' cannot be read (missing or not an image)"
        )
    return im


def _boxes(boxes, w: int, h: int, name: str, image, log) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if len(np.asarray(boxes).reshape(-1)) else None
    if b is None or not np.isfinite(b).all():
        raise ConfigError(
            f"visual prompt of '{name}' on '{image}': give finite boxes as [[x1, y1, x2, y2], ...] pixels"
        )
    clipped = b.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    if not np.array_equal(clipped, b):
        log(f"visual prompt of '{name}': boxes outside the {w}x{h} image '{image}' were clipped to it")
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        raise ConfigError(
            f"visual prompt of '{name}' on '{image}': box {b[empty][0].tolist()} has no area inside the image "
            f"(x2 > x1 and y2 > y1, in pixels of that image)"
        )
    return clipped


def _letterbox(im: np.ndarray, size: int) -> tuple[torch.Tensor, float, tuple[float, float]]:
    """As ``predict``: resize keeping the aspect ratio, pad to ``size`` x ``size`` (grey), BGR -> RGB, [0, 1]."""
    import cv2

    h, w = im.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    return x, r, (left, top)


@torch.no_grad()
def class_prototypes(net, visual: dict[str, list[dict]], imgsz: int = 640, log=None) -> dict[str, torch.Tensor]:
    """Prototype (c_text,) unit vector per class from its example boxes (module docstring).

    Args:
        net: An open-vocabulary ``DetectionModel`` (``PromptDetect`` head).
        visual: ``{name: [{"image": path or (H, W, 3) BGR array, "boxes": [[x1, y1, x2, y2], ...]}]}``.
        imgsz: Letterbox size of the example images (a multiple of 32).

    Raises:
        ConfigError: Unreadable image, a box with no area inside its image, too many example images.
    """
    from dsmoe_yolo.nn.prompt_head import PromptDetect, captured_outputs

    if log is None:
        from ultralytics.utils import LOGGER

        log = LOGGER.warning
    head = net.model[-1]
    if not isinstance(head, PromptDetect):
        raise ConfigError(
            "visual prompts need an open-vocabulary model (dsmoe-ov-*.yaml): this model's head is closed-set"
        )
    n_images = sum(len(v) for v in visual.values())
    if n_images > MAX_EXAMPLE_IMAGES:
        raise ConfigError(
            f"{n_images} example images in one call (at most {MAX_EXAMPLE_IMAGES}); a few boxes per class are enough, "
            f"pick fewer examples"
        )
    imgsz = max(32, int(imgsz) // 32 * 32)
    was_training = net.training
    net.eval()
    out = {}
    try:
        with captured_outputs(list(head.cv3)) as feats:
            for name, entries in visual.items():
                vectors = [_example_vectors(net, feats, entry, name, imgsz, log) for entry in entries]
                out[name] = F.normalize(torch.cat(vectors).mean(0), dim=0).float().cpu()
    finally:
        net.train(was_training)
    return out


def _example_vectors(net, feats: dict, entry: dict, name: str, imgsz: int, log) -> torch.Tensor:
    """(n_boxes, c_text) unit vectors of one example image's boxes: the head embeddings pooled inside each box (the
    centre anchor for a box smaller than every cell), projected by ``visual_proj`` when the model has one."""
    im = _read(entry["image"], name)
    h, w = im.shape[:2]
    source = entry["image"] if not isinstance(entry["image"], np.ndarray) else "array"
    boxes = _boxes(entry["boxes"], w, h, name, source, log)
    x, r, (left, top) = _letterbox(im, imgsz)
    weight = next(net.parameters())
    net(x.to(weight.device, weight.dtype))  # fills feats through the hooks on head.cv3
    head = net.model[-1]
    levels = [_embedding(head, i, feats[i]) for i in range(head.nl)]
    letterboxed = torch.from_numpy(boxes * r + np.array([left, top, left, top], dtype=np.float32))
    sums, counts = pool_boxes(levels, letterboxed.to(levels[0].device), head.stride.tolist())
    pooled = torch.stack(
        [s / c if c > 0 else _centre_anchor(levels[0], b, imgsz) for s, c, b in zip(sums, counts, letterboxed)]
    )
    pooled = F.normalize(pooled, dim=1)
    proj = getattr(head, "visual_proj", None)  # a trained projection (PromptDetect(visual > 0)), else None
    return F.normalize(proj(pooled.to(proj.weight.dtype)).float(), dim=1) if proj else pooled


def _embedding(head, i: int, e: torch.Tensor) -> torch.Tensor:
    """The per-anchor embedding the contrastive head compares with the class text: BN'd (BNContrastiveHead) or
    L2-normalised (ContrastiveHead); (c_text, H, W)."""
    contrast = head.cv4[i]
    e = contrast.norm(e) if hasattr(contrast, "norm") else F.normalize(e, dim=1)
    return e[0].float()


def pool_boxes(
    levels: list[torch.Tensor], boxes: torch.Tensor, strides: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the per-anchor embeddings whose anchor centres lie inside each box, over every level, and their count.

    Args:
        levels: Per level, one image's embeddings (C, H_l, W_l).
        boxes: (n, 4) xyxy boxes in pixels of the (letterboxed) network input.
        strides: Per level, pixels per anchor.

    Returns:
        ``(sums (n, C), counts (n,))``; a box narrower than every stride may cover no anchor centre (count 0).
    """
    sums = boxes.new_zeros(len(boxes), levels[0].shape[0], dtype=levels[0].dtype)
    counts = boxes.new_zeros(len(boxes))
    for e, s in zip(levels, strides):
        _, gh, gw = e.shape
        cx = (torch.arange(gw, device=e.device, dtype=boxes.dtype) + 0.5) * s
        cy = (torch.arange(gh, device=e.device, dtype=boxes.dtype) + 0.5) * s
        x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
        inside = ((cy >= y1) & (cy <= y2))[:, :, None] & ((cx >= x1) & (cx <= x2))[:, None, :]  # (n, H, W)
        inside = inside.flatten(1).to(e.dtype)
        sums = sums + inside @ e.flatten(1).T
        counts = counts + inside.sum(1).to(counts.dtype)
    return sums, counts


def _centre_anchor(e: torch.Tensor, box: torch.Tensor, imgsz: int) -> torch.Tensor:
    """The finest level's embedding (C,) under the centre of a box that covers no anchor centre."""
    s = imgsz / e.shape[1]
    x1, y1, x2, y2 = box.tolist()
    j = min(int((y1 + y2) / 2 / s), e.shape[1] - 1)
    i = min(int((x1 + x2) / 2 / s), e.shape[2] - 1)
    return e[:, j, i]
