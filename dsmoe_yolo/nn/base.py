"""What every DS-MoE layer shares: how a model-YAML row builds it, and a side channel for auxiliary outputs.

A DS-MoE layer is an ``nn.Module`` whose constructor takes ``(c1, c2, *yaml_args)`` like Ultralytics' own layers.
Two class attributes tell the plugin's ``parse_model`` wrapper how to fill ``c1`` and ``c2``:

- ``yaml_channels``: ``"same"`` (the layer keeps its input's channels; no ``c2`` in the row), ``"declared"`` (the
  row's first arg is ``c2``, width-scaled like ``Conv``'s), or ``"declared_list"`` (the first arg is a list of output
  widths, each scaled; multi-output backbones).
- ``multi_input``: the row's ``from`` is a list and ``c1`` is the list of its inputs' channels.
- ``text_inputs``: positions in ``from`` that must be the ``ClassText`` row (checked at build time, so miswired text
  fails with a clear error instead of a shape error at the first forward).

A trailing mapping in a YAML row's args is passed as keyword arguments, e.g. ``[256, {experts: 32, top_k: 5}]``.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn


class YAMLLayer(nn.Module):
    """Base class of DS-MoE layers: declares how a YAML row maps to constructor channels.

    Each instance records the plugin version that built it (``dsmoe_version``), saved with checkpoints.
    """

    yaml_channels: str = "same"  # "same" | "declared" | "declared_list"
    multi_input: bool = False
    text_inputs: tuple[int, ...] = ()
    produces_text: bool = False

    def __init__(self):
        super().__init__()
        from dsmoe_yolo._version import __version__

        self.dsmoe_version = __version__


_AUX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def aux_outputs(module: nn.Module) -> dict:
    """Return the dict of ``module``'s latest auxiliary outputs (routing statistics, alignment terms).

    The detection loss reads and clears it after each forward (``pop_aux_outputs``). It lives outside the module, in a
    weak-keyed table, so ``deepcopy`` (the EMA copy), pickling (checkpoints) and ``state_dict`` never see it and no
    autograd graph is ever copied or saved.

    Examples:
        >>> layer = nn.Identity()
        >>> aux_outputs(layer)["balance"] = torch.tensor(0.5)
        >>> pop_aux_outputs(layer)
        {'balance': tensor(0.5000)}
    """
    return _AUX.setdefault(module, {})


def pop_aux_outputs(module: nn.Module) -> dict:
    """Return and clear ``module``'s auxiliary outputs (empty dict if it has none)."""
    return _AUX.pop(module, {})


_ROUTING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ROUTING_ON = [False]


def record_routing(module: nn.Module, indices: torch.Tensor) -> None:
    """Log a MoE layer's chosen experts (B, k) for the routing report, only while a report is collecting."""
    if _ROUTING_ON[0]:
        _ROUTING.setdefault(module, []).append(indices.detach().cpu())


def set_routing_capture(on: bool) -> None:
    """Start or stop logging routing decisions (the validation report turns it on)."""
    _ROUTING_ON[0] = bool(on)
    if not on:
        _ROUTING.clear()


def pop_routing() -> dict:
    """Return and clear ``{module: [indices (B, k), ...]}`` logged since the last call."""
    out = dict(_ROUTING.items())
    _ROUTING.clear()
    return out


def is_tracing() -> bool:
    """True while exporting (ONNX / TorchScript tracing / scripting): layers then take their static-graph path."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
