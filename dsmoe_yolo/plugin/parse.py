"""Build DS-MoE rows of a model YAML through Ultralytics' own ``parse_model``, without forking it.

Stock ``parse_model`` only knows channel rules for its own classes: an unknown class gets no input channels, keeps
its input's channel count, and crashes on a list ``from``. The wrapper here swaps every DS-MoE row for a *stand-in*
that stock code handles, lets stock build the whole model (its channel bookkeeping, width/depth scaling, save list,
printout), then builds the real DS-MoE layers in place of the stand-ins:

- a row that declares its output channels becomes ``[f0, 1, Index, [c2, "ch"]]``: stock records exactly ``c2`` (already
  width-scaled here, with stock's own ``make_divisible`` rule);
- a channel-preserving row becomes ``[f, 1, _DSMoEChannelProbe, ["ch"]]``: stock records ``ch[f]``.

Both stand-ins receive parse_model's live channel list (the string arg ``"ch"`` resolves to it), which gives each
DS-MoE layer its input channels afterwards, including every input of a list ``from``. The stock model table is
captured while stock builds and printed with the DS-MoE rows filled in.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import inspect
import logging
import math
import typing
from copy import deepcopy
from pathlib import Path

from torch import nn

from dsmoe_yolo.errors import ConfigError

PROBE_NAME = "_DSMoEChannelProbe"
YAML_SCALAR_NAMES = ("nc", "width", "depth", "max_channels", "scale")


class ChannelProbe(nn.Module):
    """Stand-in for a channel-preserving DS-MoE row while stock ``parse_model`` runs; never left in a model."""

    def __init__(self, ch=None):
        super().__init__()
        self.ch = ch

    def forward(self, x):  # pragma: no cover - replaced before any forward
        return x


def scaling(d: dict) -> tuple[float, float, float, str]:
    """Return ``(depth, width, max_channels, scale)`` exactly as stock ``parse_model`` derives them.

    Raises:
        ConfigError: If the requested scale is not one the YAML defines.
    """
    depth, width = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    max_channels, scale, scales = float("inf"), d.get("scale"), d.get("scales")
    if scales:
        if not scale:
            scale = next(iter(scales))
        if scale not in scales:
            name = Path(str(d.get("yaml_file", "model.yaml"))).name
            raise ConfigError(
                f"{name} asks for scale '{scale}' but its YAML defines scales {', '.join(scales)}: "
                f"use one of {', '.join(_scaled_name(name, s) for s in scales)}"
            )
        try:
            depth, width, max_channels = scales[scale]
        except (TypeError, ValueError):
            raise ConfigError(f"scales.{scale} must be [depth, width, max_channels], got {scales[scale]}") from None
    return depth, width, max_channels, scale or ""


def _scaled_name(name: str, scale: str) -> str:
    stem, dot, suffix = name.partition(".")
    stem = stem.rstrip("nslmx") if stem[-1:] in "nslmx" and stem[-2:-1].isdigit() else stem
    return f"{stem}{scale}.{suffix or 'yaml'}"


def _make_divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor  # == ultralytics.utils.ops.make_divisible


class _RowBuilder:
    """Turn one DS-MoE YAML row into constructor arguments and, once channels are known, a module."""

    def __init__(self, i: int, row: list, cls: type, d: dict, depth: float, width: float, max_channels: float):
        self.i, (self.f, self.n, self.name, raw_args) = i, row
        self.cls, self.yaml_name = cls, Path(str(d.get("yaml_file", "model.yaml"))).name
        names = {
            "nc": d.get("nc"),
            "width": width,
            "depth": depth,
            "max_channels": max_channels,
            "scale": d.get("scale"),
        }
        names.update({k: v for k, v in d.items() if isinstance(k, str) and k not in ("backbone", "head", "scales")})
        args = [self._resolve(a, names) for a in (raw_args or [])]
        self.kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        self.args = args
        if not isinstance(self.n, int) or self.n < 1:
            self.fail(f"repeat count n must be a positive integer, got {self.n!r}")
        self.n = max(round(self.n * depth), 1) if self.n > 1 else self.n
        if cls.multi_input != isinstance(self.f, list):
            want = "a list of inputs, e.g. [-1, 6]" if cls.multi_input else "a single input index, e.g. -1"
            self.fail(f"'from' must be {want}, got {self.f!r}")
        scale = lambda c: _make_divisible(min(c, max_channels) * width, 8)  # noqa: E731 - stock's Conv rule
        self.c2 = None
        if cls.yaml_channels in ("declared", "declared_list"):
            if not self.args:
                self.fail("the first arg must be the output channels c2")
            c2 = self.args.pop(0)
            try:
                self.c2 = [scale(c) for c in c2] if cls.yaml_channels == "declared_list" else scale(c2)
            except TypeError:
                self.fail(f"the first arg must be the output channels c2, got {c2!r}")
            widths = c2 if isinstance(c2, (list, tuple)) else [c2]
            if any(isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0 for c in widths):
                self.fail(f"the output channels c2 must be positive, got {c2!r}")

    @staticmethod
    def _resolve(a, names):
        if isinstance(a, str):
            if a in names:
                return names[a]
            with contextlib.suppress(ValueError, SyntaxError):
                return ast.literal_eval(a)
        return a

    def fail(self, why: str):
        raise ConfigError(f"{self.yaml_name} row {self.i} ({self.name}): {why}")

    def check_types(self, arguments: dict, skip: int) -> None:
        """Each YAML-given argument must match the constructor's annotation (``int``, ``float``, ``str``, list, None)."""
        try:
            hints = typing.get_type_hints(self.cls.__init__)
        except Exception:  # an annotation that does not evaluate: nothing to check against
            return
        for key, value in list(arguments.items())[skip:]:
            allowed = _allowed_types(hints.get(key))
            if allowed and not any(_matches(value, t) for t in allowed):
                self.fail(f"'{key}' must be {' or '.join(_TYPE_WORDS[t] for t in allowed)}, got {value!r}")

    def check_text_wiring(self, rows: list, layers: dict) -> None:
        """Inputs listed in ``text_inputs`` must come from a text node, the others must not."""
        if not self.cls.multi_input:
            return
        for pos, src in enumerate(self.f):
            j = self.i + src if src < 0 else src
            cls = layers.get(rows[j][2]) if 0 <= j < len(rows) and isinstance(rows[j][2], str) else None
            is_text = bool(cls and cls.produces_text)
            if pos in self.cls.text_inputs and not is_text:
                self.fail(
                    f"input {pos + 1} (from {src}) must be the ClassText row (class text), got {rows[j][2] if 0 <= j < len(rows) else src}"
                )
            if pos not in self.cls.text_inputs and is_text:
                self.fail(
                    f"input {pos + 1} (from {src}) is the ClassText row, but this input takes a visual map; text goes at position {[p + 1 for p in self.cls.text_inputs]}"
                )

    def standin(self) -> list:
        """The stock row standing in for this one while stock ``parse_model`` runs."""
        f0 = self.f[0] if isinstance(self.f, list) else self.f
        if self.c2 is None:
            return [f0, 1, PROBE_NAME, ["ch"]]
        return [f0, 1, "Index", [self.c2[-1] if isinstance(self.c2, list) else self.c2, "ch"]]

    def build(self, live_ch: list[int]) -> tuple[nn.Module, list]:
        """Build the layer given parse_model's channel list; return it and its printed args."""
        sources = self.f if isinstance(self.f, list) else [self.f]
        c1s = [live_ch[x] if self.i == 0 or x >= 0 else live_ch[self.i + x] for x in sources]
        c1 = c1s if self.cls.multi_input else c1s[0]
        args = [c1, *([] if self.c2 is None else [self.c2]), *self.args]
        kwargs = dict(self.kwargs)
        params = inspect.signature(self.cls).parameters
        if "n" in params and self.cls.yaml_channels != "same":
            kwargs.setdefault("n", self.n)
        elif self.n > 1 and self.cls.yaml_channels != "same":
            self.fail(f"n={self.n} repeats are only supported for channel-preserving layers")
        try:
            bound = inspect.signature(self.cls).bind(*args, **kwargs)
        except TypeError as e:
            self.fail(f"{e}; signature {self.name}{inspect.signature(self.cls)}")
        self.check_types(bound.arguments, skip=2 if self.c2 is not None else 1)
        try:
            make = lambda: self.cls(*args, **kwargs)  # noqa: E731
            module = (
                nn.Sequential(*(make() for _ in range(self.n)))
                if self.cls.yaml_channels == "same" and self.n > 1
                else make()
            )
        except (ValueError, TypeError, FileNotFoundError) as e:
            if isinstance(e, ConfigError):
                raise
            self.fail(str(e))
        printed = [*args, *([kwargs] if kwargs else [])]
        return module, printed


_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    type(None): "null",
}


def _allowed_types(hint) -> tuple:
    """The plain types an annotation allows (``int | None`` -> ``(int, NoneType)``); () if it is not that simple."""
    if hint is None:
        return ()
    args = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        else (hint,)
    )
    plain = tuple(list if typing.get_origin(a) in (list, tuple) or a in (list, tuple) else a for a in args)
    return plain if all(t in _TYPE_WORDS for t in plain) else ()


def _matches(value, t) -> bool:
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, (list, tuple)) if t is list else isinstance(value, t)


def check_layer_names(d: dict, rows: list, tasks, layers: dict, only_close_to_ours: bool) -> None:
    """Raise ``ConfigError`` for a row naming a layer that neither the plugin nor Ultralytics defines.

    Names with ``nn.`` / ``torchvision.ops.`` prefixes are left to stock code. With ``only_close_to_ours`` (a YAML with
    no DS-MoE row), only a name resembling a DS-MoE layer is reported, so stock YAMLs keep stock errors.
    """
    stock = {
        n for n, o in vars(tasks).items() if isinstance(o, type) and issubclass(o, nn.Module) and not n.startswith("_")
    }
    known = set(layers) | stock
    layer_like = known - {n for n in stock if issubclass(getattr(tasks, n), tasks.BaseModel)}  # not whole models
    lower = {n.lower(): n for n in layer_like}
    for i, row in enumerate(rows):
        name = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 else None
        if not isinstance(name, str) or "nn." in name or "torchvision.ops." in name or name in known:
            continue
        close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.7)]
        if only_close_to_ours and not any(c in layers for c in close):
            continue
        yaml_name = Path(str(d.get("yaml_file", "model.yaml"))).name
        hint = f"did you mean {' or '.join(close)}?" if close else f"DS-MoE layers are {', '.join(layers)}"
        raise ConfigError(f"{yaml_name} row {i}: unknown layer '{name}'; {hint}")


class _CaptureLog(logging.Filter):
    """Hold back every record of a logger while stock code runs, to re-emit them edited afterwards."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger, self.records = logger, []

    def filter(self, record):
        self.records.append(record)
        return False

    def __enter__(self):
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeFilter(self)


def make_parse_model(stock_parse):
    """Return a ``parse_model`` that builds DS-MoE rows and leaves every other YAML to ``stock_parse`` untouched."""
    from ultralytics.utils import LOGGER

    def parse_model(d, ch, verbose=True):
        from ultralytics.nn import tasks

        from dsmoe_yolo.nn import LAYERS as layers
        from dsmoe_yolo.plugin import expose_layers

        expose_layers()  # layer names in ultralytics.nn.tasks, safe globals (idempotent)

        rows = [*d["backbone"], *d["head"]]
        ours = {i for i, r in enumerate(rows) if isinstance(r[2], str) and r[2] in layers}
        check_layer_names(d, rows, tasks, layers, only_close_to_ours=not ours)
        if not ours:
            return stock_parse(d, ch, verbose)
        depth, width, max_channels, scale = scaling(d)
        d = deepcopy(d)
        d["scale"] = scale
        builders = {}
        nb = len(d["backbone"])
        for i in sorted(ours):
            builders[i] = b = _RowBuilder(i, rows[i], layers[rows[i][2]], d, depth, width, max_channels)
            b.check_text_wiring(rows, layers)
            part, j = ("backbone", i) if i < nb else ("head", i - nb)
            d[part][j] = b.standin()
        with _CaptureLog(LOGGER) as log:
            model, save = stock_parse(d, ch, verbose)
        lines = {}
        for i, b in builders.items():
            standin = model[i]
            live_ch = standin.ch if isinstance(standin, ChannelProbe) else standin.index
            module, printed = b.build(live_ch)
            module.np = sum(x.numel() for x in module.parameters())
            module.i, module.f, module.type = i, b.f, f"{b.cls.__module__}.{b.cls.__name__}"
            model[i] = module
            if isinstance(b.f, list):
                save = sorted(set(save) | {x % i for x in b.f if x != -1})
            lines[i] = f"{i:>3}{b.f!s:>20}{b.n:>3}{module.np:10.0f}  {module.type:<45}{printed!s:<30}"
        for record in log.records:
            msg = record.getMessage()
            head = msg[:3].strip()
            if (
                head.isdigit()
                and int(head) in lines
                and msg[3:23].strip()
                and ("ChannelProbe" in msg or ".Index" in msg)
            ):
                record.msg, record.args = lines[int(head)], ()
            LOGGER.handle(record)
        return model, save

    parse_model._dsmoe_hook = "full"
    parse_model.stock = stock_parse
    return parse_model


def make_yaml_model_load(stock_load):
    """Return a ``yaml_model_load`` that also understands ``extends:`` and ``default_scale:``.

    ``dsmoe.yaml`` is ``extends: dsmoe-yolov8.yaml`` plus ``default_scale: s``: it builds the s model without stock's
    "no model scale passed" warning, and any other top-level key it sets (``nc``, ``loss``, ...) overrides the base.
    """

    def yaml_model_load(path):
        d = stock_load(path)
        base = d.pop("extends", None)
        if base:
            own = Path(str(d.get("yaml_file", path)))
            sibling = own.parent / str(base)
            merged = stock_load(sibling if sibling.is_file() else base)
            merged.update({k: v for k, v in d.items() if k not in ("scale", "yaml_file")})
            merged["scale"], merged["yaml_file"] = d.get("scale"), d.get("yaml_file")
            d = merged
        if not d.get("scale") and d.get("default_scale"):
            d["scale"] = d["default_scale"]
        return d

    yaml_model_load._dsmoe_hook = "full"
    yaml_model_load.stock = stock_load
    return yaml_model_load
