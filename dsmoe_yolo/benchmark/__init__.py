"""Train, evaluate and time several detectors on one dataset with identical settings, over seeds; one report.

Usage (the ``dsmoe`` command; values are ``key=value``)::

    dsmoe benchmark data=neu-det.yaml models=dsmoe-yolov8n.yaml,yolov8n.yaml epochs=60 imgsz=224 batch=16 \\
        seeds=0,1 project=campaign name=neu-det exist_ok=True jobs=2

or from Python::

    from dsmoe_yolo.benchmark import run_benchmark

    result = run_benchmark(data="neu-det.yaml", models="dsmoe-yolov8n.yaml,yolov8n.yaml", epochs=10, seeds="0,1")

Each (model, seed) trains with the stock Ultralytics trainer into ``<run dir>/<model stem>-seed<k>`` (exactly what
``yolo train model=M ... seed=k deterministic=True project=<run dir> name=<stem>-seed<k> exist_ok=True plots=True``
makes), ``jobs`` at a time. The run dir is ``project/name`` (default ``<runs_dir>/benchmark/benchmark``, incremented
like Ultralytics' runs unless ``exist_ok=True``). The same command again, with ``exist_ok=True``, skips finished runs,
resumes interrupted ones from ``weights/last.pt``, restarts those without one, waits for folders a live process is
training, and stops before training anything if a folder's ``args.yaml`` records other settings (``runs.py``).
Then every run's ``best.pt`` is validated on the ``val`` split (``<run dir>/<stem>-seed<k>-val``), and each model is
sized and timed once. The run dir holds:

- ``benchmark.md``: per model (mean ± sample std over seeds) params M, GFLOPs, latency PyTorch / ORT ms, mAP50,
  mAP50-95, P, R, epochs trained, wall s/epoch; per-class AP50-95 (mean over seeds); per-run rows; the chart; the
  settings and the command that reproduces (and continues) the run;
- ``benchmark.csv``: one row per model and seed; ``per_class_ap.csv``: one row per model, seed and class;
- ``benchmark.png``: validation mAP50-95 per epoch of every run (from each run's ``results.csv``).

Notes:
    - Every run gets the same data, epochs, imgsz, batch, nbs, optimizer, lr0, patience, fraction and val, and trains
      with ``deterministic=True``; pretrained ``.pt`` and from-scratch ``.yaml`` models can be mixed. ``val=False``
      validates only after the last epoch, so ``best.pt`` is the final weights. ``freeze_text=True`` keeps each
      model's class text (its ``ClassText`` rows, via Ultralytics' ``freeze``) fixed while it trains; a model
      without class text trains whole.
    - ``jobs>1`` trains in worker subprocesses (``train.py``; logs in ``<run dir>/logs/``). Ultralytics trains with
      (cores - 1) threads, capped at 8.
    - Latency is measured on the CPU in this same process for every model, whatever ``device`` trained them: float32,
      batch 1, a fixed ``1x3ximgszximgsz`` input, median of ``latency_runs`` (>= 10) timed calls after 2 warm-ups.
      PyTorch runs the fused model under ``torch.no_grad()``; ONNX Runtime runs the opset-19 export of ``best.pt``
      with ``CPUExecutionProvider``. Both use ``torch.get_num_threads()`` threads as set when the benchmark starts
      (choose with ``OMP_NUM_THREADS``; ``OMP_NUM_THREADS=1`` on a machine other jobs share); when other processes
      leave fewer cores free than that during the timing (``timing.OtherCpuUse``), the log and ``benchmark.md`` say
      so. ``onnx=False`` skips the export. Params, GFLOPs and latency come from one seed's ``best.pt`` per model (the
      first that trained).
    - GFLOPs come from ``torch.utils.flop_counter`` (``dsmoe_yolo.flops.count_gflops``); thop's number, as
      Ultralytics prints it, is in the ``GFLOPs (thop)`` column (0.0 where thop fails).
    - A run that fails (to train, or at a later step) does not stop the others: its row says ``failed: <stage>:
      <message>`` and the returned dict lists it under ``failures``.

Modules: ``settings`` (arguments, run folders), ``runs`` (a folder's state, recorded args, results.csv), ``train`` (one
training, in process or as a worker), ``schedule`` (skip / resume / restart / wait, ``jobs`` at a time), ``measure``
(validation, size, PyTorch latency), ``onnx_latency``, ``aggregate`` (mean ± std over seeds), ``report``, ``plot``,
``core`` (``run_benchmark``).
"""

from dsmoe_yolo.benchmark.core import run_benchmark
from dsmoe_yolo.benchmark.report import COLUMNS
from dsmoe_yolo.benchmark.settings import MIN_LATENCY_RUNS

__all__ = ("run_benchmark", "MIN_LATENCY_RUNS", "COLUMNS")
