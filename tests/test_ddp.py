"""A real two-process DDP training of a DS-MoE lite model on CPU, through Ultralytics' own DDP launch.

Ultralytics' multi-GPU path: ``yolo train device=0,1`` -> ``generate_ddp_command`` pickles the trainer with cloudpickle
into a generated script -> ``torch.distributed.run`` starts one worker per device -> each unpickles the trainer,
``_setup_ddp`` joins the process group, ``_setup_train`` wraps the model in ``DistributedDataParallel``
(``find_unused_parameters``), rank 0 alone validates and saves.

Without GPUs, this test patches only the device handling (a ``sitecustomize`` on ``PYTHONPATH``, in the launching
process and in both workers, active only under ``DSMOE_TEST_CPU_DDP=1``): the trainer is built for the CPU but keeps
``device=0,1`` and a world size of 2, ``_setup_ddp`` puts each worker on the CPU with the gloo backend, and
``DistributedDataParallel`` is given no ``device_ids`` (CPU modules take none), and the validator's model is put on the
CPU where a DDP rank would take its current CUDA device. Everything else is Ultralytics' code and
the plugin's. The patch also records, per rank, the writes of the embedding cache and the routing reports.

Not exercised (no GPUs here): NCCL, CUDA device placement and AMP under DDP, multi-node launches.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_python, shared_dataset

SITECUSTOMIZE = """
import os, sys, importlib.abc, importlib.util

if os.environ.get("DSMOE_TEST_CPU_DDP") == "1":
    LOG = os.environ["DSMOE_TEST_DDP_LOG"]

    def record(kind):
        with open(os.path.join(LOG, kind + ".txt"), "a") as f:
            f.write(os.environ.get("RANK", "-1") + "\\n")

    def patch_trainer(mod):
        import torch
        import torch.distributed as dist
        from ultralytics.utils import RANK

        stock_init = mod.BaseTrainer.__init__

        def __init__(self, cfg=mod.DEFAULT_CFG, overrides=None, _callbacks=None):
            overrides = dict(overrides or {})
            devices = str(overrides.get("device", ""))
            overrides["device"] = "cpu"
            stock_init(self, cfg, overrides, _callbacks)
            self.args.device = devices
            self.world_size = len(devices.split(","))
            self.ddp = self.world_size > 1 and os.environ.get("LOCAL_RANK") is None

        def _setup_ddp(self):
            self.device = torch.device("cpu")
            dist.init_process_group("gloo", rank=RANK, world_size=self.world_size)

        mod.BaseTrainer.__init__, mod.BaseTrainer._setup_ddp = __init__, _setup_ddp
        ddp = torch.nn.parallel.DistributedDataParallel

        class CpuDDP(ddp):
            def __init__(self, module, device_ids=None, **kwargs):
                super().__init__(module, device_ids=None, **kwargs)

        torch.nn.parallel.DistributedDataParallel = CpuDDP

    def patch_embed(mod):
        stock = mod.save_embeddings_file

        def save_embeddings_file(*a, **k):
            record("cache_writes")
            return stock(*a, **k)

        mod.save_embeddings_file = save_embeddings_file

    def patch_report(mod):
        stock = mod.on_val_end

        def on_val_end(validator):
            record("routing_reports")
            return stock(validator)

        mod.on_val_end = on_val_end

    def patch_validator(mod):
        import torch

        class NoCuda:
            @staticmethod
            def current_device():
                return 0

        stock_backend = mod.AutoBackend
        mod.get_torch_device_backend = lambda device_type: NoCuda
        mod.AutoBackend = lambda *a, device=None, **k: stock_backend(*a, device=torch.device("cpu"), **k)

    HOOKS = {"ultralytics.engine.trainer": patch_trainer, "ultralytics.engine.validator": patch_validator,
             "dsmoe_yolo.text.embed": patch_embed, "dsmoe_yolo.routing_report": patch_report}

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in HOOKS:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            loader = spec.loader
            exec_module = loader.exec_module

            def run(module):
                exec_module(module)
                HOOKS[name](module)

            loader.exec_module = run
            return spec

    sys.meta_path.insert(0, Finder())
"""

TRAIN = """
import json, os, torch
from ultralytics import YOLO

def on_train_epoch_end(trainer):
    import dsmoe_yolo.plugin as plugin
    from ultralytics.nn import tasks
    from ultralytics.utils.torch_utils import unwrap_model
    model = unwrap_model(trainer.model)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(os.path.join(os.environ["DSMOE_TEST_DDP_LOG"], f"rank{{os.environ.get('RANK', '-1')}}.json"), "w") as f:
        json.dump({{"registered": plugin.is_registered(), "hook": getattr(tasks.parse_model, "_dsmoe_hook", None),
                   "world": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
                   "params": params.double().sum().item(), "abs": params.double().abs().sum().item(),
                   "steps": trainer.epoch, "text_bound": all(t.is_bound for t in __import__("dsmoe_yolo").text.binding.class_texts(model))}}, f)

model = YOLO("dsmoe-lite-yolov8n.yaml")
model.add_callback("on_train_epoch_end", on_train_epoch_end)
model.train(data={data!r}, device="0,1", epochs=1, imgsz=64, batch=8, workers=0, project={project!r}, name="ddp",
            plots=False, val=True, amp=False)
"""


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_the_plugin_in_both_ranks(tmp_path):
    pytest.importorskip("cloudpickle")
    data = shared_dataset("neu-det-mini") / "data.yaml"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    log = tmp_path / "log"
    log.mkdir()
    env = {
        "PYTHONPATH": str(site),
        "DSMOE_TEST_CPU_DDP": "1",
        "DSMOE_TEST_DDP_LOG": str(log),
        "DSMOE_CACHE_DIR": str(tmp_path / "cache"),  # empty: the ranks must share one embedding pass
        "OMP_NUM_THREADS": "1",
    }
    proc = run_python(TRAIN.format(data=str(data), project=str(tmp_path / "runs")), cwd=tmp_path, env=env, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "torch.distributed.run" in out and "--nproc_per_node 2" in out  # Ultralytics' own DDP launch
    ranks = {r: json.loads((log / f"rank{r}.json").read_text()) for r in (0, 1)}
    for r, rec in ranks.items():
        assert rec["registered"] and rec["hook"] == "full", f"plugin not active in rank {r}"
        assert rec["world"] == 2 and rec["text_bound"]
    assert ranks[0]["params"] == ranks[1]["params"] and ranks[0]["abs"] == ranks[1]["abs"]  # weights in lockstep
    assert (log / "cache_writes.txt").read_text().split() == ["0"]  # embedded and cached once, by rank 0
    reports = (log / "routing_reports.txt").read_text().split()
    assert reports and set(reports) == {"0"}  # the routing report comes from rank 0 only
    assert (tmp_path / "runs" / "ddp" / "weights" / "best.pt").is_file()
