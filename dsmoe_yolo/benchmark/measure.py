"""Measure one trained model: validation metrics per run, and per model its size and PyTorch CPU latency."""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path

from dsmoe_yolo.timing import median_ms

__all__ = ("evaluate", "load_cpu_model", "size", "latency_input", "torch_latency")


def _val(weights: Path, out: Path, args: dict) -> tuple[dict, list[dict]]:
    """Validate ``weights`` on the val split into ``out``; return the summary metrics and per-class AP rows."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=args["data"],
        imgsz=args["imgsz"],
        batch=args["batch"],
        device=args["device"],
        workers=args["workers"],
        split="val",
        project=str(out.parent),
        name=out.name,
        exist_ok=True,
        plots=False,
    )
    box, names = metrics.box, metrics.names
    summary = {"mAP50": float(box.map50), "mAP50-95": float(box.map), "P": float(box.mp), "R": float(box.mr)}
    per_class = [
        {"class_id": int(c), "class": str(names[int(c)]), "AP50": float(box.ap50[i]), "AP50-95": float(box.ap[i])}
        for i, c in enumerate(metrics.ap_class_index)
    ]
    return summary, per_class


def evaluate(weights: Path, out: Path, args: dict) -> tuple[dict, list[dict]]:
    """Validation metrics of ``weights``, reused from ``out/metrics.json`` while the weights file is unchanged.

    Re-running a finished benchmark then re-evaluates only runs whose checkpoint changed.
    """
    stat = weights.stat()
    key = {
        "weights": str(weights),
        "mtime_ns": stat.st_mtime_ns,
        "size": stat.st_size,
        "data": args["data"],
        "imgsz": args["imgsz"],
        "batch": args["batch"],
    }
    cache = out / "metrics.json"
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                return saved["summary"], saved["per_class"]
        except (ValueError, KeyError):
            pass
    summary, per_class = _val(weights, out, args)
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "summary": summary, "per_class": per_class}, indent=1), encoding="utf-8")
    return summary, per_class


def load_cpu_model(weights: Path):
    """The checkpoint's DetectionModel on the CPU, float32, eval mode."""
    from ultralytics import YOLO

    return YOLO(str(weights)).model.to("cpu").float().eval()


def size(model, imgsz: int) -> dict:
    """Parameters (millions) and GFLOPs (flop_counter and thop) for one image at ``imgsz``."""
    from dsmoe_yolo.flops import count_gflops, count_params, thop_gflops

    return {
        "params_M": count_params(model) / 1e6,
        "GFLOPs": count_gflops(model, imgsz),
        "GFLOPs_thop": thop_gflops(model, imgsz),
    }


def latency_input(imgsz: int):
    """The fixed latency input: 1x3ximgszximgsz uniform noise (seeded), float32."""
    import torch

    return torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))


def torch_latency(model, imgsz: int, runs: int) -> float:
    """Median PyTorch CPU latency (ms) of the fused model on one image, under ``torch.inference_mode()`` as Ultralytics'
    predictor and validator run it."""
    import torch

    fused = deepcopy(model)
    if hasattr(fused, "fuse"):
        fused = fused.fuse(verbose=False)
    fused.eval()
    x = latency_input(imgsz)

    def call():
        with torch.inference_mode():
            fused(x)

    return median_ms(call, runs)
