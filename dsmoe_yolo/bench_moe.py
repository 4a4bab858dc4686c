"""CPU benchmark of the sparse MoE and of whole models, measured side by side in one run.

    dsmoe bench-moe                       # or: python examples/bench_moe.py
    dsmoe bench-moe batch=8 imgsz=640 runs=10 threads=2 models=n,s

Table 1: the SparseMoE layer at the widths the s model uses (visual 256, text 128, 20x20 = P5 of a 640 image),
batch 8: top-5 of 32 experts (sparse dispatch) against the same layer with top-k = 32 (every expert runs), and the
export path (dense compute with a top-5 mask). Target: sparse <= 0.35x dense.

Table 2: full models at 1x3x640x640, median latency of ``runs`` forward passes (after warm-up), parameters, and GFLOPs
from ``torch.utils.flop_counter`` beside thop's number. DS-MoE-n/s against YOLOv8n/s, same process, same threads.
"""

from __future__ import annotations

import torch

from dsmoe_yolo.timing import median_ms

__all__ = ("run",)


def _moe_rows(batch: int, runs: int, experts: int, top_k: int, c: int = 256, d: int = 128, hw: int = 20) -> list[tuple]:
    from dsmoe_yolo.nn import SparseMoE
    from dsmoe_yolo.nn.base import pop_aux_outputs

    torch.manual_seed(0)
    moe = SparseMoE([c, d], c, experts=experts, top_k=top_k).eval()
    x, t = torch.randn(batch, c, hw, hw), torch.randn(6, d)
    rows = []

    def call():
        with torch.no_grad():
            moe([x, t])
        pop_aux_outputs(moe)

    sparse = median_ms(call, runs)
    moe.gate.top_k = experts
    dense_all = median_ms(call, runs)
    moe.gate.top_k, moe.dense = top_k, True
    dense_mask = median_ms(call, runs)
    rows.append((f"sparse top-{top_k} of {experts}", sparse, sparse / dense_all))
    rows.append((f"dense: top-{experts} of {experts} (all experts)", dense_all, 1.0))
    rows.append((f"export path: all experts, top-{top_k} mask", dense_mask, dense_mask / dense_all))
    return rows


def _model_rows(models: list[str], imgsz: int, runs: int) -> list[tuple]:
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.flops import count_gflops, count_params, thop_gflops

    rows = []
    for name in models:
        torch.manual_seed(0)
        model = DetectionModel(name, verbose=False).eval()
        x = torch.zeros(1, 3, imgsz, imgsz)

        def call(model=model, x=x):
            with torch.no_grad():
                model(x)

        ms = median_ms(call, runs)
        rows.append((name, ms, count_params(model) / 1e6, count_gflops(model, imgsz), thop_gflops(model, imgsz)))
    return rows


def run(
    batch: int = 8,
    imgsz: int = 640,
    runs: int = 10,
    threads: int = 2,
    models: str | list = "n,s",
    experts: int = 32,
    top_k: int = 5,
) -> dict:
    """Print both tables (Markdown) and return them."""
    import dsmoe_yolo.plugin as plugin

    plugin.register()
    torch.set_num_threads(int(threads))
    scales = models.split(",") if isinstance(models, str) else list(models)
    moe = _moe_rows(int(batch), int(runs), int(experts), int(top_k))
    print(
        f"\nSparseMoE, batch {batch}, visual 256 / text 128 at 20x20 (s model, 640 px), {threads} threads, median of {runs}"
    )
    print("| variant | ms | x dense |\n|---|---:|---:|")
    for name, ms, ratio in moe:
        print(f"| {name} | {ms:.1f} | {ratio:.2f} |")
    names = [n for s in scales for n in (f"dsmoe-yolov8{s}.yaml", f"yolov8{s}.yaml")]
    full = _model_rows(names, int(imgsz), int(runs))
    print(f"\nFull models, 1x3x{imgsz}x{imgsz}, PyTorch CPU, {threads} threads, median of {runs}")
    print("| model | latency ms | params M | GFLOPs (flop_counter) | GFLOPs (thop) |\n|---|---:|---:|---:|---:|")
    for name, ms, params, gf, tg in full:
        print(f"| {name} | {ms:.0f} | {params:.2f} | {gf:.1f} | {tg:.1f} |")
    return {"moe": moe, "models": full}
