"""Cost of the model families side by side in one run: YOLOv8, DS-MoE lite and the full MobileSAM DS-MoE.

    dsmoe bench-models                                   # scales n,s; 1 thread; median of 10
    dsmoe bench-models scales=n threads=2 runs=20 onnx=False

Per model (untrained weights; cost does not depend on them): parameters, GFLOPs at 640 (``torch.utils.flop_counter``),
PyTorch CPU latency at 640 and 224 (1 image, eval, Conv+BN fused as ``yolo predict`` does), ONNX Runtime latency at
640 and 224 (one dynamic-shape export per model, opset 19), one training step (forward + loss + backward, batch 8,
320 px, the model's own criterion) and the peak resident memory of that training step. Each model runs in its own
subprocess so its peak memory is its own. Ratios are against the YOLOv8 of the same scale measured in the same run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import tempfile
from pathlib import Path

from dsmoe_yolo.timing import median_ms

__all__ = ("run", "FAMILIES")

FAMILIES = ("yolov8{s}.yaml", "dsmoe-lite-yolov8{s}.yaml", "dsmoe-yolov8{s}.yaml")


def _fake_batch(batch: int, imgsz: int, nc: int):
    """A training batch: uniform-noise images, two boxes per image (Ultralytics' batch dict)."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = 2 * batch
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.2 + 0.05
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(batch).repeat_interleave(2).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }


def _train_step_ms(model, runs: int, batch: int = 8, imgsz: int = 320) -> float:
    from ultralytics.cfg import get_cfg

    from dsmoe_yolo.text.binding import class_texts

    model.args = get_cfg()  # loss gains (box, cls, dfl) as the trainer sets them
    for t in class_texts(model):
        if not t.is_bound:
            import torch

            t.bind(torch.randn(t.nc, t.embed_dim, generator=torch.Generator().manual_seed(0)), {"encoder": "bench"})
    model.train()
    data = _fake_batch(batch, imgsz, model.nc if hasattr(model, "nc") else len(model.names))

    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(data)
        loss.sum().backward()

    return median_ms(step, runs)


def _onnx_ms(yaml_name: str, sizes: tuple[int, ...], runs: int, threads: int) -> list[float | None]:
    """Export once (dynamic shapes) through Ultralytics' exporter and time ONNX Runtime at each size."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return [None for _ in sizes]
    from ultralytics import YOLO

    from dsmoe_yolo.benchmark.onnx_latency import OPSET, ort_latency

    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(tmp) / Path(yaml_name).with_suffix(".pt").name
        YOLO(yaml_name).save(pt)
        out = YOLO(str(pt)).export(
            format="onnx", opset=OPSET, imgsz=max(sizes), dynamic=True, simplify=False, device="cpu"
        )
        return [ort_latency(Path(out), s, runs, threads) for s in sizes]


def _measure(yaml_name: str, runs: int, threads: int, onnx: bool, queue) -> None:
    """Child process: every number for one model, sent back as a dict."""
    import torch

    import dsmoe_yolo.plugin as plugin

    plugin.register()
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.benchmark.measure import torch_latency
    from dsmoe_yolo.flops import count_gflops, count_params

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    row = {"model": yaml_name}
    try:
        model = DetectionModel(yaml_name, verbose=False)
        row["params_M"] = count_params(model) / 1e6
        row["gflops_640"] = count_gflops(model, 640)
        row["train_step_ms"] = _train_step_ms(model, max(3, runs // 2))
        row["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        infer = DetectionModel(yaml_name, verbose=False)  # fresh: the train steps above moved BatchNorm statistics
        for s in (640, 224):
            row[f"torch_{s}_ms"] = torch_latency(infer, s, runs)
        if onnx:
            row["ort_640_ms"], row["ort_224_ms"] = _onnx_ms(yaml_name, (640, 224), runs, threads)
    except Exception as e:  # one failing model still leaves a table for the others
        row["error"] = f"{type(e).__name__}: {e}"
    queue.put(json.dumps(row))


def _one(yaml_name: str, runs: int, threads: int, onnx: bool) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(yaml_name, runs, threads, onnx, queue))
    proc.start()
    row = json.loads(queue.get())
    proc.join()
    return row


COLUMNS = (
    ("params_M", "params M", 2),
    ("gflops_640", "GFLOPs @640", 1),
    ("torch_640_ms", "PyTorch 640 ms", 0),
    ("torch_224_ms", "PyTorch 224 ms", 1),
    ("ort_640_ms", "ORT 640 ms", 0),
    ("ort_224_ms", "ORT 224 ms", 1),
    ("train_step_ms", "train step ms", 0),
    ("peak_rss_MB", "peak RSS MB", 0),
)
RATIOS = (
    ("torch_640_ms", "PyTorch 640"),
    ("torch_224_ms", "PyTorch 224"),
    ("ort_640_ms", "ORT 640"),
    ("ort_224_ms", "ORT 224"),
    ("train_step_ms", "train step"),
)


def _fmt(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    """Markdown: one row per model, then the ratios against the same scale's YOLOv8."""
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS)
    lines = [head] + [
        "| " + r["model"].removesuffix(".yaml") + " | " + " | ".join(_fmt(r.get(k), d) for k, _, d in COLUMNS) + " |"
        for r in rows
    ]
    base = {r["model"].removeprefix("yolov8")[:1]: r for r in rows if r["model"].startswith("yolov8")}
    ratio_head = "\n\n| model | " + " | ".join(f"x YOLOv8 {n}" for _, n in RATIOS) + " |\n|---|" + "---:|" * len(RATIOS)
    ratio_lines = []
    for r in rows:
        scale = r["model"].removesuffix(".yaml")[-1:]
        b = base.get(scale)
        if r["model"].startswith("yolov8") or b is None:
            continue
        cells = [_fmt(r[k] / b[k], 2) if r.get(k) and b.get(k) else "n/a" for k, _ in RATIOS]
        ratio_lines.append("| " + r["model"].removesuffix(".yaml") + " | " + " | ".join(cells) + " |")
    errors = [f"\n{r['model']}: {r['error']}" for r in rows if "error" in r]
    return "\n".join(lines) + ratio_head + "\n" + "\n".join(ratio_lines) + "".join(errors)


def run(
    scales: str | list = "n,s", runs: int = 10, threads: int = 1, onnx: bool = True, models: str | list | None = None
) -> list[dict]:
    """Measure every model (``models``, or the three families at each of ``scales``), print the tables, return rows."""
    scale_list = scales.split(",") if isinstance(scales, str) else list(scales)
    names = (
        (models.split(",") if isinstance(models, str) else list(models))
        if models
        else [f.format(s=s) for s in scale_list for f in FAMILIES]
    )
    rows = []
    for name in names:
        print(f"bench-models: {name} ...", flush=True)
        rows.append(_one(name, int(runs), int(threads), bool(onnx)))
    print(
        f"\nModels side by side, CPU, {threads} thread(s), median of {runs} (train step: median of {max(3, int(runs) // 2)})\n"
    )
    print(table(rows))
    return rows
