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

Fused inference: ``BaseModel.fuse`` (``yolo predict``/``val``/``export``, ``plugin.fuse``) calls each layer's
``fuse_inference()``. A fused layer in eval mode without autograd (or while tracing for export) takes its
``inference_path``: text-only results are computed once and reused while the class text is unchanged
(``text_cached``), auxiliary losses are not recorded, and layers may run an equivalent, cheaper form (stacked experts,
folded projections). The outputs are the eval-mode outputs to float rounding (tests/test_fused_inference.py); as with
Ultralytics' BatchNorm folding, a fused model is for inference: weights changed after ``fuse`` are not seen by the
reused text results.
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

    fused: bool = False  # set by fuse_inference(); a class default so checkpoints of older versions load

    def fuse_inference(self) -> None:
        """Prepare for inference (called by ``BaseModel.fuse``); subclasses extend it and call ``super()``."""
        self.fused = True

    @property
    def inference_path(self) -> bool:
        """True when this forward may take the fused inference path: fused, eval mode, and no autograd or tracing."""
        return self.fused and not self.training and (not torch.is_grad_enabled() or is_tracing())


_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_cached(module: YAMLLayer, name: str, text: torch.Tensor, fn):
    """``fn(text)``, computed once and reused while ``module`` takes its inference path and ``text`` is the same,
    unmodified tensor (a fused ``ClassText`` returns one tensor until its embeddings change).

    The cache lives outside the module (weak-keyed, like ``aux_outputs``): never pickled, copied or saved. While
    tracing it is neither read nor written, so an export records the text computation in its graph (ONNX Runtime
    folds it into constants).
    """
    if not module.inference_path or is_tracing():
        return fn(text)
    entries = _TEXT_CACHE.setdefault(module, {})
    version = None if text.is_inference() else text._version  # inference tensors have no version counter
    key = (id(text), version, torch.is_inference_mode_enabled())
    hit = entries.get(name)
    if hit is not None and hit[0] is text and hit[1] == key:
        return hit[2]
    value = fn(text)
    entries[name] = (text, key, value)
    return value


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
