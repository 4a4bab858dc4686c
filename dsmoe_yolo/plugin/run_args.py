"""Arguments of DS-MoE runs: ``prompts=`` of ``yolo predict`` / ``val`` / ``export`` and the data of ``val``.

``prompts=`` takes a prompt file of the ``cfg/prompts/*.yaml`` shape (a bare name is looked up there), a
comma-separated list of class names (``prompts="crack,hole"``), or in Python a list or ``{name: descriptions}``
mapping. On an open-vocabulary DS-MoE model (``PromptDetect`` head) it calls ``set_classes`` before the run, so the
prompts are what is detected, validated or baked into the export. On a closed-set or stock model it is refused with
one line: such a head cannot detect classes it was not trained on.

Validation of an open-vocabulary model without ``prompts=`` on data whose class names differ from the model's uses the
data's names as prompts (descriptions found as at training: the data YAML's ``prompts:``, else a bundled prompt file
that knows the names, else templates) and says so in the log.

Validation of a closed-set DS-MoE model on data with other class names warns, naming the classes that differ (its
scores would be printed under the data's labels of other classes). ``yolo val model=best.onnx`` (an exported DS-MoE
model) without ``data=`` uses the data the model was trained on, recorded in the export's metadata, if it is on this
machine, and otherwise stops with one line asking for ``data=`` (stock Ultralytics would fall back to COCO8 and try to
download it). Stock models are untouched.

For ``train``, ``prompts=`` names the prompt file for the data's classes (in place of the data YAML's ``prompts:``).
"""

from __future__ import annotations

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.names import ordered_names

__all__ = ("install_run_args", "apply_prompts", "apply_visual_prompts", "exported_metadata")


def _given(spec) -> bool:
    return spec is not None and not (isinstance(spec, str) and not spec.strip())


def apply_prompts(model, spec, mode: str) -> None:
    """``set_classes(spec)`` on ``model`` (a ``YOLO`` wrapper) for ``mode``, unless it already holds these prompts.

    Raises:
        ConfigError: If the model is not an open-vocabulary DS-MoE model, or the prompts are bad.
    """
    from dsmoe_yolo.text.binding import class_texts, is_open_vocabulary, set_classes
    from dsmoe_yolo.text.prompts import class_prompts

    net = getattr(model, "model", None)
    if isinstance(net, (str, type(None))) or not class_texts(net):
        raise ConfigError(
            f"prompts= needs a DS-MoE open-vocabulary model (trained from dsmoe-ov-*.yaml); '{getattr(model, 'ckpt_path', None) or net}' "
            f"is not a DS-MoE model. Leave prompts= out for {mode}"
        )
    if not is_open_vocabulary(net):
        raise ConfigError(
            f"prompts= needs an open-vocabulary model (dsmoe-ov-*.yaml): this model's head is closed-set, its classes "
            f"{list(net.names.values())} are fixed by training. Leave prompts= out, or train dsmoe-ov-lite-yolov8n.yaml"
        )
    from dsmoe_yolo.visual_prompts import split_prompts

    if split_prompts(spec)[1]:  # example boxes: prototypes are recomputed
        set_classes(model, spec)
        return
    names, table, _ = class_prompts(spec)
    meta = class_texts(net)[0].text_meta
    if meta.get("names") == names and (table is None or meta.get("prompts") == table):
        return
    set_classes(model, spec)


def apply_visual_prompts(model, prompts: dict, refer_image=None, source=None) -> None:
    """``predict(visual_prompts=dict(bboxes=..., cls=...), refer_image=...)`` in YOLOE's shape.

    ``bboxes`` (N, 4) xyxy pixels of ``refer_image`` (default: the source, one image) and ``cls`` (N,) class indices,
    or lists of both, one per reference image. The model then detects exactly those classes, named by ``names`` in
    the prompts, else the model's current name of that index, else ``object<i>`` (as YOLOE).

    Raises:
        ConfigError: Malformed prompts, or no reference image.
    """
    import numpy as np

    if not isinstance(prompts, dict) or "bboxes" not in prompts or "cls" not in prompts:
        raise ConfigError("visual_prompts must be dict(bboxes=[[x1, y1, x2, y2], ...], cls=[0, ...])")
    images = refer_image if refer_image is not None else source
    if images is None:
        raise ConfigError(
            "visual_prompts need refer_image= (the image the boxes are drawn on) or a single source image"
        )
    many = isinstance(images, (list, tuple))
    images = list(images) if many else [images]
    bboxes = prompts["bboxes"] if many else [prompts["bboxes"]]
    classes = prompts["cls"] if many else [prompts["cls"]]
    if len(bboxes) != len(images) or len(classes) != len(images):
        raise ConfigError(f"visual_prompts: {len(images)} reference images need as many bboxes and cls lists")
    current = list(getattr(model, "names", {}).values()) if isinstance(getattr(model, "names", None), dict) else []
    given = list(prompts.get("names") or [])
    entries: dict[int, list] = {}
    for image, boxes, cls in zip(images, bboxes, classes):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        cls = np.asarray(cls).reshape(-1).astype(int)
        if len(cls) != len(boxes):
            raise ConfigError(f"visual_prompts: {len(boxes)} boxes but {len(cls)} class indices on one image")
        for c in sorted(set(cls.tolist())):
            entries.setdefault(c, []).append({"image": image, "boxes": boxes[cls == c]})
    if any(c < 0 for c in entries):
        raise ConfigError("visual_prompts: class indices must be >= 0")

    def name(c: int) -> str:
        return given[c] if c < len(given) else current[c] if c < len(current) else f"object{c}"

    from dsmoe_yolo.text.binding import set_classes

    set_classes(model, {name(c): entries[c] for c in sorted(entries)})


def _data_names(data) -> tuple[list[str], dict] | None:
    """The class names of a data argument, or None if it cannot be read here (stock validation reports it)."""
    try:
        from ultralytics.data.utils import check_det_dataset
        from ultralytics.utils.checks import check_file

        from dsmoe_yolo.multi_dataset import is_union, load_union

        info = load_union(data) if is_union(data) else check_det_dataset(check_file(str(data)))
    except Exception:
        return None
    return ordered_names(info["names"]), info


def _val_data_names(model, data) -> None:
    """Validation on data whose class names differ from the model's: open-vocabulary models take the data's names as
    prompts (said in the log); closed-set DS-MoE models warn, naming the differing classes."""
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import class_texts, is_open_vocabulary, set_classes

    net = getattr(model, "model", None)
    if not data or isinstance(net, (str, type(None))) or not class_texts(net):
        return
    found = _data_names(data)
    if found is None:
        return
    names, info = found
    own = [str(v) for v in net.names.values()]
    if own == names:
        return
    if not is_open_vocabulary(net):
        differ = [f"{i}: '{a}' vs '{b}'" for i, (a, b) in enumerate(zip(own, names)) if a != b]
        if len(own) != len(names):
            differ.append(f"{len(own)} model classes vs {len(names)} data classes")
        LOGGER.warning(
            f"DS-MoE: the data's class names differ from this closed-set model's ({', '.join(differ)}): its scores for "
            f"a class are counted against the data's labels of that index. Validate on data with the model's classes, or "
            f"use an open-vocabulary model (dsmoe-ov-*.yaml), which takes the data's names as prompts"
        )
        return
    from dsmoe_yolo.text.embed import resolve_prompts

    table, source = resolve_prompts(info, names, LOGGER.info)
    LOGGER.info(
        f"DS-MoE: open-vocabulary model validated on the data's classes {names} (model's were {own}); prompts from "
        f"{source}"
    )
    set_classes(model, names, prompts=table)


def exported_metadata(path) -> dict:
    """Ultralytics' metadata of an exported ONNX model (``{}`` for other formats or files it cannot read)."""
    import ast
    from pathlib import Path

    if not str(path).endswith(".onnx") or not Path(str(path)).is_file():
        return {}
    try:
        import onnx

        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:
        return {}
    out = {}
    for p in props:
        try:
            out[p.key] = ast.literal_eval(p.value)
        except (ValueError, SyntaxError):
            out[p.key] = p.value
    return out


def _exported_val_data(model, kwargs: dict) -> None:
    """``yolo val model=best.onnx`` of a DS-MoE export without ``data=``: its training data, or one line asking."""
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.plugin.config import DefaultData

    given = kwargs.get("data") or model.overrides.get("data")
    if given and not isinstance(given, DefaultData):
        return
    meta = exported_metadata(getattr(model, "model", None))
    dsmoe = meta.get("dsmoe") if isinstance(meta.get("dsmoe"), dict) else None
    if dsmoe is None and "dsmoe" not in str(meta.get("description", "")).lower():
        return  # a stock export: stock behaviour
    trained = (dsmoe or {}).get("data")
    if trained and _data_names(trained) is not None:
        LOGGER.info(f"DS-MoE: no data= given; validating on the data this model was trained on, {trained}")
        kwargs["data"] = trained
        return
    where = f" (it was trained on {trained}, not found here)" if trained else ""
    raise ConfigError(
        f"yolo val of the exported model {model.model} needs data=your.yaml{where}: an export does not carry its "
        f"validation data, e.g. 'yolo val model={model.model} data=your.yaml'"
    )


def install_run_args(module) -> None:
    """Wrap ``Model.predict``, ``Model.val`` and ``Model.export`` of ``ultralytics.engine.model`` (idempotent)."""
    cls = module.Model
    for name in ("predict", "val", "export"):
        stock = getattr(cls, name)
        if getattr(stock, "_dsmoe_hook", None):
            continue

        def make(stock, mode):
            def run(self, *args, **kwargs):
                if mode == "predict" and kwargs.get("visual_prompts") is not None:
                    source = kwargs.get("source", args[0] if args else None)
                    apply_visual_prompts(self, kwargs.pop("visual_prompts"), kwargs.pop("refer_image", None), source)
                kwargs.pop("refer_image", None)
                spec = kwargs.get("prompts")
                if mode == "val" and isinstance(getattr(self, "model", None), str):
                    _exported_val_data(self, kwargs)
                if _given(spec):
                    apply_prompts(self, spec, mode)
                elif mode == "val":
                    _val_data_names(self, kwargs.get("data") or self.overrides.get("data"))
                return stock(self, *args, **kwargs)

            run.__name__ = run.__qualname__ = mode
            run.__doc__ = stock.__doc__
            run._dsmoe_hook, run.stock = "full", stock
            return run

        setattr(cls, name, make(stock, name))
