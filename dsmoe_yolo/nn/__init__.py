"""DS-MoE layers, one concept a file, each usable by name in an Ultralytics model YAML once the plugin is registered.

==========================  =====  ============================================================
layer                       stage  file
==========================  =====  ============================================================
``MobileSAMBackbone``       3      ``mobilesam.py`` (TinyViT-5M encoder, P3/P4/P5 adapters)
``ResNetBackbone``          abl.   ``resnet.py`` (ablation rows A/B)
``Pick``                    -      ``pick.py`` (select one map of a multi-output backbone)
``CBAM``                    4      ``cbam.py``
``ClassText``               2      ``text.py`` (class embeddings + self-attention refinement)
``HyperbolicAlign``         5      ``hyperbolic.py`` (Poincare-ball alignment, geoopt)
``SpaceBroadcast``          6      ``broadcast.py`` (text-modulated deformable conv)
``SparseMoE``               7+8    ``moe.py`` (gate in ``gate.py``, experts in ``experts.py``)
``HeterogeneousEnsemble``   9      ``ensemble.py``
``DifferentiableAggregation`` 10   ``aggregation.py``
``PlainTextFusion``         abl.   ``fusion.py`` (ablation row B: text without hyperbolic/MoE)
``ZeroInitResidual``        lite   ``residual.py`` (DS-MoE branch added to a YOLOv8 at zero)
``PromptDetect``            head   ``prompt_head.py`` (open-vocabulary head: class scores = text similarity)
==========================  =====  ============================================================
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dsmoe_yolo.nn.aggregation import DifferentiableAggregation
from dsmoe_yolo.nn.base import YAMLLayer, aux_outputs, pop_aux_outputs
from dsmoe_yolo.nn.broadcast import SpaceBroadcast
from dsmoe_yolo.nn.cbam import CBAM
from dsmoe_yolo.nn.ensemble import HeterogeneousEnsemble
from dsmoe_yolo.nn.fusion import PlainTextFusion
from dsmoe_yolo.nn.hyperbolic import HyperbolicAlign
from dsmoe_yolo.nn.mobilesam import MobileSAMBackbone
from dsmoe_yolo.nn.moe import SparseMoE
from dsmoe_yolo.nn.pick import Pick
from dsmoe_yolo.nn.prompt_head import PromptDetect
from dsmoe_yolo.nn.residual import ZeroInitResidual
from dsmoe_yolo.nn.resnet import ResNetBackbone
from dsmoe_yolo.nn.text import ClassText

LAYERS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        MobileSAMBackbone,
        ResNetBackbone,
        Pick,
        CBAM,
        ClassText,
        HyperbolicAlign,
        SpaceBroadcast,
        SparseMoE,
        HeterogeneousEnsemble,
        DifferentiableAggregation,
        PlainTextFusion,
        ZeroInitResidual,
        PromptDetect,
    )
}

__all__ = ("LAYERS", "YAMLLayer", "aux_outputs", "pop_aux_outputs", *LAYERS)

_SUBMODULES = (
    "aggregation",
    "base",
    "broadcast",
    "cbam",
    "ensemble",
    "experts",
    "fusion",
    "gamma",
    "gate",
    "hyperbolic",
    "mobilesam",
    "moe",
    "pick",
    "prompt_head",
    "residual",
    "resnet",
    "text",
)


def submodules() -> list[ModuleType]:
    """The modules defining DS-MoE classes (for the weights-only allow-list)."""
    return [importlib.import_module(f"dsmoe_yolo.nn.{name}") for name in _SUBMODULES]
