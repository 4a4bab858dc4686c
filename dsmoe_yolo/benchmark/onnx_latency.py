"""ONNX export of a benchmarked checkpoint and its ONNX Runtime CPU latency."""

from __future__ import annotations

from pathlib import Path

from dsmoe_yolo.benchmark.measure import latency_input
from dsmoe_yolo.timing import median_ms

__all__ = ("OPSET", "export_onnx", "ort_latency", "ort_version")

OPSET = 19


def export_onnx(weights: Path, imgsz: int) -> Path:
    """Export ``weights`` to ONNX (opset 19, static 1x3ximgszximgsz, not simplified) next to it."""
    from ultralytics import YOLO

    out = YOLO(str(weights)).export(
        format="onnx", opset=OPSET, imgsz=imgsz, simplify=False, dynamic=False, device="cpu"
    )
    return Path(out)


def ort_latency(onnx_path: Path, imgsz: int, runs: int, threads: int) -> float:
    """Median ONNX Runtime CPU latency (ms) on one image with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: latency_input(imgsz).numpy()}
    return median_ms(lambda: session.run(None, feed), runs)


def ort_version() -> str:
    """The installed onnxruntime version, or ``not installed``."""
    try:
        import onnxruntime as ort

        return ort.__version__
    except ImportError:
        return "not installed"
