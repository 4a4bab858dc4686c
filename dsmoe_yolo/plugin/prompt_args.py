"""The ``prompts=`` argument of ``yolo predict`` / ``val`` / ``export`` (and ``Model.predict/val/export``).

``prompts=`` takes a prompt file of the ``cfg/prompts/*.yaml`` shape (a bare name is looked up there), a
comma-separated list of class names (``prompts="crack,hole"``), or in Python a list or ``{name: descriptions}``
mapping. On an open-vocabulary DS-MoE model (``PromptDetect`` head) it calls ``set_classes`` before the run, so the
prompts are what is detected, validated or baked into the export. On a closed-set or stock model it is refused with
one line: such a head cannot detect classes it was not trained on.

Validation of an open-vocabulary model without ``prompts=`` on data whose class names differ from the model's uses the
data's names as prompts (descriptions found as at training: the data YAML's ``prompts:``, else a bundled prompt file
that knows the names, else templates) and says so in the log.

For ``train``, ``prompts=`` names the prompt file for the data's classes (in place of the data YAML's ``prompts:``).
"""

from __future__ import annotations

from dsmoe_yolo.errors import ConfigError

__all__ = ("install_prompt_args", "apply_prompts")


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
    names, table, _ = class_prompts(spec)
    meta = class_texts(net)[0].text_meta
    if meta.get("names") == names and (table is None or meta.get("prompts") == table):
        return
    set_classes(model, spec)


def _data_prompts(model, data) -> None:
    """Validation of an open-vocabulary model on data with other class names: the data's names become the prompts."""
    from ultralytics.utils import LOGGER

    from dsmoe_yolo.text.binding import class_texts, is_open_vocabulary, set_classes

    net = getattr(model, "model", None)
    if not data or isinstance(net, (str, type(None))) or not is_open_vocabulary(net):
        return
    try:
        from ultralytics.data.utils import check_det_dataset
        from ultralytics.utils.checks import check_file

        info = check_det_dataset(check_file(str(data)))
    except Exception:  # a data argument stock validation will report on its own terms
        return
    names = [str(info["names"][i]) for i in range(len(info["names"]))]
    if class_texts(net)[0].text_meta.get("names") == names:
        return
    from dsmoe_yolo.text.embed import resolve_prompts

    table, source = resolve_prompts(info, names, LOGGER.info)
    LOGGER.info(
        f"DS-MoE: open-vocabulary model validated on the data's classes {names} (model's were "
        f"{list(net.names.values())}); prompts from {source}"
    )
    set_classes(model, names, prompts=table)


def install_prompt_args(module) -> None:
    """Wrap ``Model.predict``, ``Model.val`` and ``Model.export`` of ``ultralytics.engine.model`` (idempotent)."""
    cls = module.Model
    for name in ("predict", "val", "export"):
        stock = getattr(cls, name)
        if getattr(stock, "_dsmoe_hook", None):
            continue

        def make(stock, mode):
            def run(self, *args, **kwargs):
                spec = kwargs.get("prompts")
                if _given(spec):
                    apply_prompts(self, spec, mode)
                elif mode == "val":
                    _data_prompts(self, kwargs.get("data") or self.overrides.get("data"))
                return stock(self, *args, **kwargs)

            run.__name__ = run.__qualname__ = mode
            run.__doc__ = stock.__doc__
            run._dsmoe_hook, run.stock = "full", stock
            return run

        setattr(cls, name, make(stock, name))
