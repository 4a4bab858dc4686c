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


def cases():
    torch.manual_seed(0)
    t = torch.randn(5, 16)
    return {
        "CBAM": (CBAM(32), [(32,)]),
        "ClassText": (Flat(ClassText(8, 16, nc=5, embed_dim=12, heads=4)), [(8,)]),
        "HyperbolicAlign": (Flat(HyperbolicAlign([32, 16], 8), t), [(32,)]),
        "SpaceBroadcast": (Flat(SpaceBroadcast([32, 8, 16], 32), t), [(32,), (8,)]),
        "SparseMoE": (Flat(SparseMoE([32, 16], 32, experts=8), t), [(32,)]),
        "HeterogeneousEnsemble": (Flat(HeterogeneousEnsemble([32, 32, 16], 32), t), [(32,), (32,)]),
        "DifferentiableAggregation": (Flat(DifferentiableAggregation([32, 32], 32)), [(32,), (32,)]),
        "PlainTextFusion": (Flat(PlainTextFusion([32, 16], 32), t), [(32,)]),
        "MobileSAMBackbone": (Flat(MobileSAMBackbone(3, [16, 32, 64])), [(3,)]),
        "ResNetBackbone": (Flat(ResNetBackbone(3, [16, 32, 64], depth=18)), [(3,)]),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_module_exports_and_matches_onnxruntime(name, tmp_path):
    register_onnx_symbolics()
    model, specs = cases()[name]
    model.eval()
    backbone = name.endswith("Backbone")
    sizes = [(64, 96), (96, 64)] if backbone else [(6, 8), (9, 5)]
    inputs = tuple(torch.rand(2, c, *sizes[0]) for (c,) in specs)
    names = [f"x{i}" for i in range(len(inputs))]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, inputs, str(path), opset_version=19, dynamo=False, input_names=names,
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
        torch.onnx.export(model, (torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)), str(tmp_path / "x.onnx"), opset_version=17, dynamo=False)
