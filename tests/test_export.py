"""Every DS-MoE module exports to ONNX (opset 19, legacy exporter as Ultralytics uses) and matches onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dsmoe_yolo.export import register_onnx_symbolics
from dsmoe_yolo.nn import (
    CBAM,
    ClassText,
    DifferentiableAggregation,
    HeterogeneousEnsemble,
    HyperbolicAlign,
    MobileSAMBackbone,
    PlainTextFusion,
    ResNetBackbone,
    SpaceBroadcast,
    SparseMoE,
)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (extra 'export') is needed for export tests")


class Flat(nn.Module):
    """Give a multi-input / multi-output layer a tensor-in, tensor-out signature for export."""

    def __init__(self, layer, text=None):
        super().__init__()
        self.layer = layer
        self.text = text

    def forward(self, *xs):
        xs = list(xs)
        if self.text is not None:
            xs.insert(self.layer.text_inputs[0], self.text)
        y = self.layer(xs if len(xs) > 1 or getattr(self.layer, "multi_input", False) else xs[0])
        return tuple(y) if isinstance(y, list) else y


def _perturbed(layer: nn.Module, scale: float = 0.3) -> nn.Module:
    """Move every parameter off its initial value: zero-initialised offset/mask convs give non-zero offsets, mask != 0.5."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * scale)
    return layer


def cases():
    torch.manual_seed(0)
    t = torch.randn(5, 16)
    return {
        "CBAM": (CBAM(32), [(32,)]),
        "ClassText": (Flat(ClassText(8, 16, nc=5, embed_dim=12, heads=4)), [(8,)]),
        "HyperbolicAlign": (Flat(HyperbolicAlign([32, 16], 8), t), [(32,)]),
        "SpaceBroadcast": (Flat(_perturbed(SpaceBroadcast([32, 8, 16], 32)), t), [(32,), (8,)]),
        "SparseMoE": (Flat(SparseMoE([32, 16], 32, experts=8), t), [(32,)]),
        "HeterogeneousEnsemble": (Flat(HeterogeneousEnsemble([32, 32, 16], 32), t), [(32,), (32,)]),
        "DifferentiableAggregation": (Flat(DifferentiableAggregation([32, 32], 32)), [(32,), (32,)]),
        "PlainTextFusion": (Flat(PlainTextFusion([32, 16], 32), t), [(32,)]),
        "MobileSAMBackbone": (Flat(MobileSAMBackbone(3, [16, 32, 64])), [(3,)]),
        "ResNetBackbone": (Flat(ResNetBackbone(3, [16, 32, 64], depth=18)), [(3,)]),
    }


FUSED_PATHS = {"HyperbolicAlign", "SpaceBroadcast", "SparseMoE", "HeterogeneousEnsemble"}  # trace differently fused


@pytest.mark.parametrize(
    "name,fused", [(n, False) for n in cases()] + [(n, True) for n in cases() if n in FUSED_PATHS], ids=str
)
def test_module_exports_and_matches_onnxruntime(name, fused, tmp_path):
    register_onnx_symbolics()
    model, specs = cases()[name]
    model.eval()
    if fused:  # as Ultralytics' exporter does (model.fuse()): the layers' inference path is what gets traced
        for m in model.modules():
            if callable(getattr(m, "fuse_inference", None)):
                m.fuse_inference()
    backbone = name.endswith("Backbone")
    sizes = [(64, 96), (96, 64)] if backbone else [(6, 8), (9, 5)]
    inputs = tuple(torch.rand(2, c, *sizes[0]) for (c,) in specs)
    names = [f"x{i}" for i in range(len(inputs))]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs,
            str(path),
            opset_version=19,
            dynamo=False,
            input_names=names,
            dynamic_axes={n: {0: "b", 2: "h", 3: "w"} for n in names},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for hw in sizes:  # the second size checks that H and W stay symbolic
        xs = tuple(torch.rand(2, c, *hw) for (c,) in specs)
        with torch.no_grad():
            expected = model(*xs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        used = {i.name for i in session.get_inputs()}  # ClassText ignores its input: it is not in the graph
        got = session.run(None, {n: x.numpy() for n, x in zip(names, xs) if n in used})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)


def test_traced_moe_equals_eager_sparse():
    torch.manual_seed(0)
    moe = Flat(SparseMoE([16, 8], 16, experts=8, top_k=3), torch.randn(3, 8)).eval()
    x = torch.rand(4, 16, 5, 5)
    with torch.no_grad():
        eager = moe(x)
        traced = torch.jit.trace(moe, (x,), check_trace=False)(x)
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)


def test_opset_below_19_asks_for_19(tmp_path):
    register_onnx_symbolics()
    model = Flat(SpaceBroadcast([8, 8, 8], 8), torch.randn(2, 8)).eval()
    with pytest.raises(Exception, match="opset=19"):
        torch.onnx.export(
            model,
            (torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)),
            str(tmp_path / "x.onnx"),
            opset_version=17,
            dynamo=False,
        )


class DeformOp(nn.Module):
    """``torchvision.ops.deform_conv2d`` with offsets and mask as graph inputs (what SpaceBroadcast calls)."""

    def __init__(self, c1=4, c2=6, k=3, pad=1, stride=1, dilation=1):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(c2, c1, k, k)), nn.Parameter(torch.randn(c2))
        self.pad, self.stride, self.dilation = pad, stride, dilation

    def forward(self, x, offset, mask):
        from torchvision.ops import deform_conv2d

        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.pad, self.dilation, mask)


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_deform_conv_matches_onnxruntime_at_random_offsets_and_masks(tmp_path, stride, dilation):
    """Offsets of several pixels (fractional, some sampling outside the map) and masks in (0, 1): the DeformConv
    symbolic keeps torchvision's offset layout (y before x) and mask semantics."""
    register_onnx_symbolics()
    torch.manual_seed(0)
    op = DeformOp(stride=stride, dilation=dilation, pad=dilation).eval()
    x = torch.randn(2, 4, 9, 11)
    oh, ow = (9 - 1) // stride + 1, (11 - 1) // stride + 1
    offset, mask = torch.randn(2, 18, oh, ow) * 2.5, torch.rand(2, 9, oh, ow)
    path = tmp_path / "deform.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            op, (x, offset, mask), str(path), opset_version=19, dynamo=False, input_names=["x", "offset", "mask"]
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy(), "offset": offset.numpy(), "mask": mask.numpy()})[0]
    with torch.no_grad():
        expected = op(x, offset, mask)
        plain = op(x, torch.zeros_like(offset), torch.ones_like(mask))
    assert (expected - plain).abs().max() > 1.0, (
        "the offsets and mask must change the output for the check to mean anything"
    )
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)


# TensorRT 10's ONNX parser: the operators onnx-tensorrt's docs/operators.md (TensorRT 10.15 edition) marks "Y".
# DeformConv arrived in TensorRT 10.1 (onnx-tensorrt release notes); restrictions checked below where they apply to us.
TENSORRT10_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow
    Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
    GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization
    GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool
    Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow
    PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
    Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)


def tensorrt10_problems(graph) -> list[str]:
    """What TensorRT 10's ONNX parser would reject in ``graph`` (operator support and the restrictions we can hit)."""
    import onnx
    from onnx import numpy_helper

    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    problems = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx") or node.op_type not in TENSORRT10_OPS:
            problems.append(f"{node.op_type} ({node.name}) is not supported")
        elif node.op_type == "DeformConv":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
                problems.append(f"DeformConv ({node.name}) has unequal begin/end pads {pads}")
        elif node.op_type == "TopK":
            if attrs.get("sorted", 1) != 1 or node.input[1] not in constants:
                problems.append(f"TopK ({node.name}) must be sorted with a constant K")
            k = next((numpy_helper.to_array(i) for i in graph.initializer if i.name == node.input[1]), None)
            if k is not None and int(k.reshape(-1)[0]) >= 3840:
                problems.append(f"TopK ({node.name}) K={int(k.reshape(-1)[0])} >= 3840")
        elif node.op_type == "Resize" and attrs.get("mode", b"nearest") not in (b"nearest", b"linear"):
            problems.append(f"Resize ({node.name}) mode {attrs.get('mode')}")
        elif (
            node.op_type.startswith("Reduce")
            and len(node.input) > 1
            and node.input[1]
            and node.input[1] not in constants
        ):
            problems.append(f"{node.op_type} ({node.name}) axes must be an initializer")
    return problems


def test_tensorrt_check_can_fail():
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="unique"),
        helper.make_node("DeformConv", ["x", "w", "o"], ["d"], name="dcn", pads=[1, 1, 0, 0]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [])
    assert tensorrt10_problems(graph) == [
        "Unique (unique) is not supported",
        "DeformConv (dcn) has unequal begin/end pads [1, 1, 0, 0]",
    ]


@pytest.fixture(scope="module")
def dsmoe_checkpoint(tmp_path_factory):
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("export") / "dsmoe-n.pt"
    model = YOLO("dsmoe-yolov8n.yaml")
    model.model.model[8].bind(torch.randn(6, 384), {"names": ["a", "b", "c", "d", "e", "f"]})
    model.save(str(path))
    return path


def test_export_without_opset_picks_19_and_every_op_is_in_tensorrt10(dsmoe_checkpoint, caplog):
    """What users type first, `yolo export model=best.pt format=onnx`: opset 19 is chosen (one info line), and every
    operator of the graph is one TensorRT 10's ONNX parser supports. Before, Ultralytics chose 18 and export failed."""
    import onnx
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger=LOGGER.name):
            f = YOLO(str(dsmoe_checkpoint)).export(format="onnx", imgsz=64, dynamic=True)
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert sum("DS-MoE: ONNX opset 19" in r.getMessage() for r in caplog.records) == 1
    model = onnx.load(f)
    assert {o.domain: o.version for o in model.opset_import}[""] == 19
    assert "DeformConv" in {n.op_type for n in model.graph.node}
    assert tensorrt10_problems(model.graph) == []


def test_explicit_low_opset_is_refused_before_tracing(dsmoe_checkpoint, monkeypatch):
    from ultralytics import YOLO
    from ultralytics.engine.exporter import Exporter

    from dsmoe_yolo.errors import ConfigError

    monkeypatch.setattr(Exporter, "export_onnx", lambda *a, **k: pytest.fail("traced although the opset was refused"))
    with pytest.raises(ConfigError, match=r"^opset=17: .*DeformConv, which needs opset>=19; pass opset=19"):
        YOLO(str(dsmoe_checkpoint)).export(format="onnx", opset=17, imgsz=64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-GPU message")
def test_engine_export_without_gpu_is_one_clear_line(dsmoe_checkpoint):
    from ultralytics import YOLO

    from dsmoe_yolo.errors import ConfigError

    with pytest.raises(ConfigError, match="format=engine builds a TensorRT engine, which needs an NVIDIA GPU") as e:
        YOLO(str(dsmoe_checkpoint)).export(format="engine", imgsz=64)
    assert "trtexec --onnx" in str(e.value) and "\n" not in str(e.value)


def test_stock_model_export_keeps_ultralytics_opset(tmp_path):
    import onnx
    from ultralytics import YOLO
    from ultralytics.utils.export.engine import best_onnx_opset

    model = YOLO("yolov8n.yaml")
    model.save(str(tmp_path / "v8n.pt"))
    f = YOLO(str(tmp_path / "v8n.pt")).export(format="onnx", imgsz=64)
    assert {o.domain: o.version for o in onnx.load(f).opset_import}[""] == best_onnx_opset(onnx)
