"""Export support: ONNX symbolics the DS-MoE layers need, registered when an Ultralytics export starts.

Ultralytics exports ONNX with the legacy TorchScript-based exporter (``torch.onnx.export(dynamo=False)``), and builds
TensorRT engines from that ONNX. Two DS-MoE operations need help there:

- ``torchvision::deform_conv2d`` (SpaceBroadcast) has no symbolic: it is mapped to ONNX ``DeformConv`` (opset 19+,
  run by onnxruntime >= 1.20 and TensorRT >= 10). Lower opsets fail with a message asking for ``opset>=19``.
- geoopt's hyperbolic functions (HyperbolicAlign) use ``aten::isclose`` and TorchScript branches; while tracing the
  layers switch to the pure-torch mirror in ``dsmoe_yolo.nn.poincare`` instead, so nothing needs registering.

The SparseMoE computes densely with a top-k mask while tracing (same output, static graph).
"""

from __future__ import annotations

__all__ = ("register_onnx_symbolics", "on_export_start", "MIN_OPSET")

MIN_OPSET = 19
_registered = False


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, n_weight_grps, n_offset_grps, use_mask):
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
    """Ultralytics callback: register symbolics before any DS-MoE model is exported."""
    register_onnx_symbolics()
