"""`dsmoe bench-models`: the side-by-side cost table (a benchmark; these tests check its arithmetic, not speed)."""

import pytest

from dsmoe_yolo.bench_models import FAMILIES, run, table


def test_ratios_are_against_the_yolov8_of_the_same_scale():
    rows = [
        {"model": "yolov8n.yaml", "torch_640_ms": 100.0, "train_step_ms": 1000.0, "params_M": 3.2},
        {"model": "dsmoe-lite-yolov8n.yaml", "torch_640_ms": 110.0, "train_step_ms": 1250.0, "params_M": 5.0},
        {"model": "yolov8s.yaml", "torch_640_ms": 300.0, "train_step_ms": 2000.0},
        {"model": "dsmoe-yolov8s.yaml", "torch_640_ms": 900.0, "train_step_ms": 5000.0, "error": None},
    ]
    rows[3].pop("error")
    text = table(rows)
    lite = next(line for line in text.splitlines() if line.startswith("| dsmoe-lite-yolov8n |") and "1.10" in line)
    assert "1.25" in lite  # train step 1250 / 1000
    full = next(line for line in text.splitlines() if line.startswith("| dsmoe-yolov8s |") and "3.00" in line)
    assert "2.50" in full and "n/a" in full  # no ORT numbers -> n/a, not a made-up ratio
    # YAMLs given by path: named by file, and /x/yolov8n.yaml is the baseline of the n-scale variants beside it
    text = table(
        [
            {"model": "/x/yolov8n.yaml", "torch_640_ms": 100.0},
            {"model": "/x/dsmoe-lite-k1-yolov8n.yaml", "torch_640_ms": 130.0},
        ]
    )
    assert "| yolov8n | " in text and "/x/" not in text
    assert next(line for line in text.splitlines() if line.startswith("| dsmoe-lite-k1-yolov8n |") and "1.30" in line)
    assert [f.format(s="n") for f in FAMILIES] == ["yolov8n.yaml", "dsmoe-lite-yolov8n.yaml", "dsmoe-yolov8n.yaml"]


@pytest.mark.slow
def test_one_model_measured_in_its_own_process(capsys):
    rows = run(models="yolov8n.yaml", runs=1, onnx=False, nc=80)  # Ultralytics' own yolov8n: 3.157 M at 80 classes
    row = rows[0]
    assert "error" not in row, row
    assert row["params_M"] == pytest.approx(3.157, abs=0.01) and row["gflops_640"] > 5
    assert row["torch_640_ms"] > 0 and row["train_step_ms"] > 0 and row["peak_rss_MB"] > 100
    out = capsys.readouterr().out
    assert "| yolov8n | 3.16 |" in out and "nc=80" in out


def test_latencies_are_timed_in_interleaved_rounds():
    from dsmoe_yolo.timing import interleaved_median_ms

    calls = []
    result = interleaved_median_ms({k: (lambda k=k: calls.append(k)) for k in "abc"}, runs=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # one call each per round, order rotating
    assert set(result) == {"a", "b", "c"} and all(v >= 0 for v in result.values())
    calls.clear()
    interleaved_median_ms({k: (lambda k=k: calls.append(k)) for k in "ab"}, runs=2, warmup=0, settle=1)
    assert calls == ["a", "a", "b", "b", "b", "b", "a", "a"]  # an untimed call right before each timed one


def test_timing_beside_a_busy_process_is_flagged():
    """Other processes' CPU use is measured (a spinning child counts) and a timing with more threads than the cores
    they leave free gets a warning that names the fix."""
    import subprocess
    import sys
    import time

    from dsmoe_yolo.timing import OtherCpuUse

    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 4\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.5)
        with OtherCpuUse() as use:
            time.sleep(1.5)
    finally:
        child.kill()
        child.wait()
    assert use.cores > 0.5  # the spinning child, about one core (more if other tests run meanwhile)
    assert use.warning(threads=2, cpus=2) is not None
    use.cores = 0.9
    assert use.warning(threads=1, cpus=2) is None  # one thread beside one busy core: fine
    assert "OMP_NUM_THREADS=1 beside the other jobs" in use.warning(threads=2, cpus=2)
    use.cores = 2.0
    assert "OMP_NUM_THREADS" not in use.warning(threads=1, cpus=2)  # no core free: only an idle machine helps


def test_a_child_that_dies_is_an_error_not_a_hang():
    from dsmoe_yolo.bench_models import _in_child

    with pytest.raises(RuntimeError, match="without a result"):
        _in_child(_exit_without_answer)
    from dsmoe_yolo.timing import interleaved_median_ms

    assert interleaved_median_ms({}) == {}  # no ONNX Runtime: nothing to time


def _exit_without_answer(queue):
    raise SystemExit(3)
