"""Export support: ONNX symbolics the DS-MoE layers need, registered when an Ultralytics export starts.

Ultralytics exports ONNX with the legacy TorchScript-based exporter (``torch.onnx.export(dynamo=False)``), and builds
TensorRT engines from that ONNX. Two DS-MoE operations need help there:

- ``torchvision::deform_conv2d`` (SpaceBroadcast) has no symbolic: it is mapped to ONNX ``DeformConv`` (opset 19+,
  run by onnxruntime >= 1.20 and TensorRT >= 10.1, whose parser needs equal begin/end pads: ours are). Ultralytics
  picks opset 18 when none is given: for a model with a SpaceBroadcast the plugin raises it to 19 (one info line) and
  refuses an explicit ``opset`` below 19 in one line, before tracing (``prepare_export``).
- geoopt's hyperbolic functions (HyperbolicAlign) use ``aten::isclose`` and TorchScript branches; while tracing the
  layers switch to the pure-torch mirror in ``dsmoe_yolo.nn.poincare`` instead, so nothing needs registering.

The SparseMoE computes densely with a top-k mask while tracing (same output, static graph).

``format=engine`` for a DS-MoE model on a machine without a CUDA GPU (or without the ``tensorrt`` package and with
auto-install off) stops in one line saying so and how to build the engine elsewhere from the ONNX file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ("register_onnx_symbolics", "on_export_start", "prepare_export", "install_exporter", "MIN_OPSET")

MIN_OPSET = 19
_registered = False


def _deform_conv2d_symbolic(
    g,
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    n_weight_grps,
    n_offset_grps,
    use_mask,
):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (same offset layout: (N, 2*G*kh*kw, oh, ow), y before x)."""
    from torch.onnx import symbolic_helper as sh

    kh, kw = sh._get_tensor_sizes(weight)[-2:]
    args = [input, weight, offset, bias]
    if sh._maybe_get_const(use_mask, "b"):
        args.append(mask)
    return g.op(
        "DeformConv",
        *args,
        dilations_i=[sh._get_const(dil_h, "i", "dil_h"), sh._get_const(dil_w, "i", "dil_w")],
        group_i=sh._get_const(n_weight_grps, "i", "n_weight_grps"),
        offset_group_i=sh._get_const(n_offset_grps, "i", "n_offset_grps"),
        kernel_shape_i=[kh, kw],
        pads_i=[sh._get_const(pad_h, "i", "pad_h"), sh._get_const(pad_w, "i", "pad_w")] * 2,
        strides_i=[sh._get_const(stride_h, "i", "stride_h"), sh._get_const(stride_w, "i", "stride_w")],
    )


def _too_old_opset(g, *args):
    raise RuntimeError(
        f"DS-MoE's SpaceBroadcast uses a deformable convolution, which ONNX has from opset {MIN_OPSET}: "
        f"export with opset={MIN_OPSET} or higher (e.g. model.export(format='onnx', opset={MIN_OPSET}))"
    )


def register_onnx_symbolics() -> None:
    """Register the DS-MoE ONNX symbolics (idempotent)."""
    global _registered
    if _registered:
        return
    import torch
    import torchvision  # noqa: F401 - registers torchvision::deform_conv2d

    for opset in range(7, MIN_OPSET):
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _too_old_opset, opset)
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, MIN_OPSET)
    _registered = True


def on_export_start(exporter) -> None:
    """Ultralytics callback: register symbolics before any DS-MoE model is exported; record in a DS-MoE export's
    metadata the plugin version and the data it was trained on (``yolo val model=best.onnx`` without ``data=``)."""
    register_onnx_symbolics()
    from dsmoe_yolo.model_kind import is_dsmoe_source

    model, metadata = getattr(exporter, "model", None), getattr(exporter, "metadata", None)
    if model is not None and is_dsmoe_source(model):
        # torch's legacy exporter skips constant folding of strided slices (the sinusoidal codes, the anisotropic
        # kernels) and says so once per slice: the graph is still exact (ORT parity tests), so the lines are noise
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded")
    if isinstance(metadata, dict) and model is not None and is_dsmoe_source(model):
        from dsmoe_yolo._version import __version__

        args = getattr(model, "args", None)
        data = args.get("data") if isinstance(args, dict) else getattr(args, "data", None)
        metadata["dsmoe"] = {"version": __version__, "data": str(data) if isinstance(data, (str, Path)) else None}


def needs_deform_conv(model) -> bool:
    """True if ``model`` holds a layer exported as ONNX ``DeformConv`` (SpaceBroadcast)."""
    from dsmoe_yolo.nn import SpaceBroadcast

    return any(isinstance(m, SpaceBroadcast) for m in model.modules())


def _opset_formats() -> set[str]:
    from ultralytics.engine.exporter import export_formats

    f = export_formats()
    return {fmt for fmt, keys in zip(f["Argument"], f["Arguments"]) if "opset" in keys}


def prepare_export(exporter, model) -> None:
    """Before Ultralytics exports a DS-MoE ``model``: check ``format=engine`` can work here and set the ONNX opset.

    Raises:
        ConfigError: ``format=engine`` without a CUDA GPU (or without TensorRT and auto-install off), or an explicit
            ``opset`` below 19 for a model with a deformable convolution.
    """
    from ultralytics.utils import AUTOINSTALL, LOGGER

    from dsmoe_yolo.errors import ConfigError
    from dsmoe_yolo.model_kind import is_dsmoe_source

    if not is_dsmoe_source(model):
        return
    args = exporter.args
    fmt = str(args.format).lower()
    fmt = "engine" if fmt in {"tensorrt", "trt"} else fmt
    if fmt == "engine":
        import importlib.util

        import torch

        build = f"export format=onnx here (opset {MIN_OPSET}) and build the engine on the GPU machine: trtexec --onnx=best.onnx --saveEngine=best.engine"
        if not torch.cuda.is_available():
            raise ConfigError(
                f"format=engine builds a TensorRT engine, which needs an NVIDIA GPU and none is visible here; {build}"
            )
        if importlib.util.find_spec("tensorrt") is None and not AUTOINSTALL:
            raise ConfigError(
                f"format=engine needs the 'tensorrt' package (>= 10.1 for DeformConv), which is not installed and YOLO_AUTOINSTALL is off: pip install tensorrt, or {build}"
            )
    if not needs_deform_conv(model) or fmt not in _opset_formats():
        return
    if args.opset is None:
        args.opset = MIN_OPSET
        LOGGER.info(
            f"DS-MoE: ONNX opset {MIN_OPSET} (SpaceBroadcast's deformable convolution is ONNX DeformConv, which needs opset {MIN_OPSET})"
        )
    elif int(args.opset) < MIN_OPSET:
        raise ConfigError(
            f"opset={args.opset}: DS-MoE's SpaceBroadcast exports as ONNX DeformConv, which needs opset>={MIN_OPSET}; pass opset={MIN_OPSET} or leave opset unset"
        )


def install_exporter(module) -> None:
    """``Exporter.__call__``: run ``prepare_export`` first (stock models are left to stock code)."""
    cls = module.Exporter
    stock = cls.__call__
    if getattr(stock, "_dsmoe_hook", None):
        return

    def __call__(self, model=None, *args, **kwargs):
        if model is not None:
            prepare_export(self, model)
        return stock(self, model, *args, **kwargs)

    __call__._dsmoe_hook, __call__.stock = "full", stock
    cls.__call__ = __call__
