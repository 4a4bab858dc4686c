"""Cost of the model families side by side in one run: YOLOv8, DS-MoE lite and the full MobileSAM DS-MoE.

    dsmoe bench-models                                   # scales n,s; 1 thread; median of 10
    dsmoe bench-models scales=n threads=2 runs=20 onnx=False nc=80

Per model (untrained weights; cost does not depend on them), every model built for the same class count ``nc``
(default 6, as NEU-DET and DeepPCB; the YAMLs' own defaults differ: 80 for yolov8.yaml, and the class count sets the
width of YOLOv8's classification branch): parameters, GFLOPs at 640 (``torch.utils.flop_counter``),
PyTorch CPU latency at 640 and 224 (1 image, eval, fused by ``fuse()`` and run under ``torch.inference_mode()`` as
``yolo predict`` does), ONNX Runtime latency at
640 and 224 (one dynamic-shape export per model, opset 19), one training step (forward + loss + backward, batch 8,
320 px, the model's own criterion) and the peak resident memory of that training step. Each model runs in its own
subprocess so its peak memory is its own; the latencies and the training steps are then measured in one process with
every model loaded, in interleaved rounds (one call of each model per round), so a machine whose speed drifts during
the run affects every model alike. Ratios are against the YOLOv8 of the same scale measured in the same run (a YAML
given by path counts by its file name: ``/x/yolov8n.yaml`` is the baseline of ``/x/my-lite-yolov8n.yaml``).
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import resource
import tempfile
from pathlib import Path
from queue import Empty

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


def _train_step(model, batch: int = 8, imgsz: int = 320):
    """One training step of ``model`` as a function (forward + the model's own loss + backward, on a fake batch of
    ``batch`` images at ``imgsz``); unbound class texts get fixed random embeddings."""
    import torch
    from ultralytics.cfg import get_cfg

    from dsmoe_yolo.text.binding import class_texts

    model.args = get_cfg()  # loss gains (box, cls, dfl) as the trainer sets them
    for t in class_texts(model):
        if not t.is_bound:
            t.bind(torch.randn(t.nc, t.embed_dim, generator=torch.Generator().manual_seed(0)), {"encoder": "bench"})
    model.train()
    data = _fake_batch(batch, imgsz, model.nc if hasattr(model, "nc") else len(model.names))

    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(data)
        loss.sum().backward()

    return step


def _export_onnx(yaml_name: str, nc: int, folder: Path, imgsz: int = 640) -> str:
    """Export the untrained model (dynamic shapes, opset 19) through Ultralytics' exporter; return the file."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.benchmark.onnx_latency import OPSET

    pt = folder / Path(yaml_name).with_suffix(".pt").name
    model = YOLO(yaml_name)
    model.model = DetectionModel(yaml_name, nc=nc, verbose=False)
    model.save(pt)
    return YOLO(str(pt)).export(format="onnx", opset=OPSET, imgsz=imgsz, dynamic=True, simplify=False, device="cpu")


def _measure(yaml_name: str, threads: int, onnx_dir: str | None, nc: int, queue) -> None:
    """Child process: size and the peak memory of a training step of one model (and its ONNX file), sent back as a
    dict. The training step is timed later, side by side with the other models (``_latencies``)."""
    import torch

    import dsmoe_yolo.plugin as plugin

    plugin.register()
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.flops import count_gflops, count_params

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    row = {"model": yaml_name}
    try:
        model = DetectionModel(yaml_name, nc=nc, verbose=False)
        row["params_M"] = count_params(model) / 1e6
        row["gflops_640"] = count_gflops(model, 640)
        step = _train_step(model)
        for _ in range(2):  # the first step allocates; the second reaches the steady peak
            step()
        row["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if onnx_dir:
            try:
                import onnxruntime  # noqa: F401

                row["onnx"] = str(_export_onnx(yaml_name, nc, Path(onnx_dir)))
            except ImportError:
                pass
    except Exception as e:  # one failing model still leaves a table for the others
        row["error"] = f"{type(e).__name__}: {e}"
    queue.put(json.dumps(row))


def _latencies(rows: list[dict], runs: int, threads: int, nc: int, queue) -> None:
    """Child process: PyTorch and ONNX Runtime latency of every model at 640 and 224, and one training step of each,
    measured side by side (``interleaved_median_ms``), so that the ratios do not depend on when each model happened to
    run."""
    import torch

    import dsmoe_yolo.plugin as plugin

    plugin.register()
    from ultralytics.nn.tasks import DetectionModel

    from dsmoe_yolo.benchmark.measure import latency_input
    from dsmoe_yolo.timing import OtherCpuUse, interleaved_median_ms

    torch.set_num_threads(threads)
    out: dict[str, dict] = {r["model"]: {} for r in rows if "error" not in r}
    models = {}
    for name in out:
        torch.manual_seed(0)
        models[name] = DetectionModel(name, nc=nc, verbose=False).eval().fuse(verbose=False)
    sessions = {}
    for r in rows:
        if r.get("onnx"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            sessions[r["model"]] = ort.InferenceSession(
                r["onnx"], sess_options=opts, providers=["CPUExecutionProvider"]
            )

    def run_torch(model, x):
        with torch.inference_mode():  # as Ultralytics' predictor and validator run
            model(x)

    with OtherCpuUse() as busy:
        for s in (640, 224):
            x = latency_input(s)
            timed = interleaved_median_ms({n: functools.partial(run_torch, m, x) for n, m in models.items()}, runs)
            for n, ms in timed.items():
                out[n][f"torch_{s}_ms"] = ms
            feeds = {n: {sess.get_inputs()[0].name: x.numpy()} for n, sess in sessions.items()}
            timed = interleaved_median_ms(
                {n: functools.partial(sessions[n].run, None, feeds[n]) for n in sessions}, runs
            )
            for n, ms in timed.items():
                out[n][f"ort_{s}_ms"] = ms
        models.clear()  # the inference copies; then one training copy of each model
        steps = {}
        for name in out:
            torch.manual_seed(0)
            steps[name] = _train_step(DetectionModel(name, nc=nc, verbose=False))
        for n, ms in interleaved_median_ms(steps, train_runs(runs), settle=1).items():
            out[n]["train_step_ms"] = ms
    queue.put(json.dumps({"latency": out, "warning": busy.warning(threads)}))


def train_runs(runs: int) -> int:
    """Rounds of training steps for ``runs`` latency rounds (a step costs ~50 inferences): half, at least 3. Each
    timed step follows an untimed one of the same model (``settle``)."""
    return max(3, runs // 2)


def display_name(model: str) -> str:
    """A model's name in the tables: its YAML's stem (``/x/dsmoe-lite-k1-yolov8n.yaml`` -> ``dsmoe-lite-k1-yolov8n``)."""
    return Path(model).name.removesuffix(".yaml")


def _in_child(target, *args):
    """Run ``target(*args, queue)`` in a spawned process and return what it put; a child that dies without an answer
    (an uncaught error, a crash) raises instead of leaving this process waiting for ever."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            result = json.loads(queue.get(timeout=2))
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"bench-models: {target.__name__} ended (exit code {proc.exitcode}) without a result"
                ) from None
    proc.join()
    return result


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


def _is_yolov8(model: str) -> bool:
    """True for Ultralytics' YOLOv8 of one scale (``yolov8n.yaml``, ``/x/yolov8s.yaml``): the ratios' baselines."""
    name = display_name(model)
    return name.startswith("yolov8") and len(name) == len("yolov8n")


def _fmt(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    """Markdown: one row per model, then the ratios against the same scale's YOLOv8."""
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS)
    lines = [head] + [
        "| " + display_name(r["model"]) + " | " + " | ".join(_fmt(r.get(k), d) for k, _, d in COLUMNS) + " |"
        for r in rows
    ]
    base = {display_name(r["model"])[-1:]: r for r in rows if _is_yolov8(r["model"])}
    ratio_head = "\n\n| model | " + " | ".join(f"x YOLOv8 {n}" for _, n in RATIOS) + " |\n|---|" + "---:|" * len(RATIOS)
    ratio_lines = []
    for r in rows:
        b = base.get(display_name(r["model"])[-1:])
        if _is_yolov8(r["model"]) or b is None:
            continue
        cells = [_fmt(r[k] / b[k], 2) if r.get(k) and b.get(k) else "n/a" for k, _ in RATIOS]
        ratio_lines.append("| " + display_name(r["model"]) + " | " + " | ".join(cells) + " |")
    errors = [f"\n{r['model']}: {r['error']}" for r in rows if "error" in r]
    return "\n".join(lines) + ratio_head + "\n" + "\n".join(ratio_lines) + "".join(errors)


def run(
    scales: str | list = "n,s",
    runs: int = 10,
    threads: int = 1,
    onnx: bool = True,
    models: str | list | None = None,
    nc: int = 6,
) -> list[dict]:
    """Measure every model (``models``, or the three families at each of ``scales``), print the tables, return rows."""
    scale_list = scales.split(",") if isinstance(scales, str) else list(scales)
    names = (
        (models.split(",") if isinstance(models, str) else list(models))
        if models
        else [f.format(s=s) for s in scale_list for f in FAMILIES]
    )
    rows = []
    with tempfile.TemporaryDirectory() as onnx_dir:
        for name in names:
            print(f"bench-models: {name} (size, train step, export) ...", flush=True)
            rows.append(_in_child(_measure, name, int(threads), onnx_dir if onnx else None, int(nc)))
        print("bench-models: latency of every model, side by side ...", flush=True)
        timed = _in_child(_latencies, rows, int(runs), int(threads), int(nc))
    for r in rows:
        r.pop("onnx", None)
        r.update(timed["latency"].get(r["model"], {}))
    print(
        f"\nModels side by side, CPU, {threads} thread(s), nc={nc}, median of {runs} interleaved rounds "
        f"(train step: median of {train_runs(int(runs))} interleaved rounds, each timed step after an untimed one)\n"
    )
    print(table(rows))
    if timed["warning"]:
        print(f"\nWARNING: latency measured on a busy CPU: {timed['warning']}")
    return rows
