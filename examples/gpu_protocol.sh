#!/usr/bin/env bash
# GPU protocol (issue 14 item 6): DS-MoE-s, lite DS-MoE-s and YOLOv8s on DeepPCB (800 train / 200 val) at 640 px on
# one H200, CUDA with AMP (Ultralytics' default on a GPU), the same recipe and EPOCHS for all, seed 0, the three
# trained at once (`dsmoe benchmark ... jobs=3`), in one command of at most 10 minutes.
#
# EPOCHS=30 is an estimate, not a measurement (no GPU run yet): ~40 s start-up, the slowest model (DS-MoE-s, twice
# YOLOv8s' FLOPs plus MobileSAM attention and the expert loop, launch-bound) guessed at <= 15 s per epoch with
# validation while sharing the GPU, ~40 s for the final validation, sizes and CPU latency. benchmark.md reports the
# measured s/epoch per model: set EPOCHS from it for the next run. Past BUDGET_S (540 s) the benchmark is stopped and
# the per-epoch results.csv of every run still come back.
#
# Preparation, on a CPU machine, from the repository root (once; nothing is downloaded on the GPU machine):
#   mkdir -p gpu                                      # gpu/ and .whl/ are git-ignored (.gitignore)
#   cp -r --no-preserve=mode ../shared/data/deeppcb gpu/deeppcb                    # 36 MB, YOLO format
#   dsmoe embed data=gpu/deeppcb/data.yaml out=gpu/deeppcb/embeddings.pt            # packaged MiniLM on the CPU
#   echo "embeddings: embeddings.pt" >> gpu/deeppcb/data.yaml                       # so training loads no encoder
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 geoopt==0.5.1 \
#     polars==2.1.0 polars-runtime-32==2.1.0
# The H200 image has torch, torchvision, opencv, numpy, matplotlib, scipy, psutil; the wheels are what it lacks
# (56 MB, 54 of them polars' runtime, which Ultralytics' trainer imports). Wheels and data together exceed the 64 MiB
# a call may carry, so it takes two calls on one warm machine (a machine stays warm 30 s after a call):
#   1. carry [".whl"]: bash examples/gpu_protocol.sh install       # into .whl/site, which stays for the next call
#   2. carry ["gpu"]:  EPOCHS=30 bash examples/gpu_protocol.sh     # timeout_s=600
# Outputs under $OUT: benchmark.md, gpu.txt (nvidia-smi), benchmark.log, gpu_protocol.tar.gz (benchmark.md/.csv/.png,
# per_class_ap.csv, every run's results.csv and args.yaml, worker logs; no weights).
#
# Second preset, NEU-DET at 224 px: the CPU campaign's NEU-DET recipe (60 epochs, batch 16, seed 0) for DS-MoE-n,
# lite-n and YOLOv8n, on the GPU with AMP. DS-MoE-n's 60 epochs take 4-6.5 h on one core of the CPU machine, more than
# one working session there, so this is the way to its NEU-DET row when a GPU is lent (its numbers then belong in a
# GPU row of their own, beside the two other models of the same call). Time per epoch on the H200 is not measured
# yet: if benchmark.md does not come back, set EPOCHS from the results.csv files in the tarball. Preparation as above,
# with neu-det (20 MB) in place of deeppcb, then in call 2:
#   carry ["gpu"]: DATA=gpu/neu-det/data.yaml NAME=neu-det IMGSZ=224 EPOCHS=60 \
#                  MODELS=dsmoe-yolov8n.yaml,dsmoe-lite-yolov8n.yaml,yolov8n.yaml bash examples/gpu_protocol.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-30}
BUDGET_S=${BUDGET_S:-540}
BATCH=${BATCH:-16}
WORKERS=${WORKERS:-4}
DEVICE=${DEVICE:-0}
IMGSZ=${IMGSZ:-640}
DATA=${DATA:-gpu/deeppcb/data.yaml}
NAME=${NAME:-deeppcb}
MODELS=${MODELS:-dsmoe-yolov8s.yaml,dsmoe-lite-yolov8s.yaml,yolov8s.yaml}
SITE=${SITE:-.whl/site}
OUT=${OUT:-/tmp/gpu_protocol_out}
RUN=${RUN:-/tmp/gpu_protocol}

if [[ "${1:-}" == install ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  echo "gpu_protocol: wheels installed into $SITE"
  exit 0
fi
if [[ ! -f $DATA ]] || ! grep -q '^embeddings:' "$DATA"; then
  echo "gpu_protocol: $DATA with an 'embeddings:' line is missing; do the preparation in this script's header" >&2
  exit 2
fi
if [[ ! -d $SITE ]]; then
  echo "gpu_protocol: $SITE is missing; run 'bash examples/gpu_protocol.sh install' first (carry .whl)" >&2
  exit 2
fi

[[ $SITE == /* ]] || SITE=$PWD/$SITE
export PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1 MPLBACKEND=Agg YOLO_CONFIG_DIR=/tmp/gpu_protocol_cfg \
  YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT" "$RUN"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; nproc
  python3 -c "import torch, ultralytics; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__)"
} | tee "$OUT/gpu.txt"

status=0
timeout "$BUDGET_S" python3 -m dsmoe_yolo.cli benchmark data="$DATA" models="$MODELS" epochs="$EPOCHS" \
  imgsz="$IMGSZ" batch="$BATCH" seed=0 device="$DEVICE" workers="$WORKERS" jobs=3 onnx=False \
  project="$RUN" name="$NAME" exist_ok=True >"$OUT/benchmark.log" 2>&1 || status=$?

if [[ -d $RUN/$NAME ]]; then
  tar czf "$OUT/gpu_protocol.tar.gz" -C "$RUN" --exclude='*.pt' --exclude='*.jpg' --exclude="$NAME/*/*.png" "$NAME"
fi
if [[ -f $RUN/$NAME/benchmark.md ]]; then
  cp "$RUN/$NAME/benchmark.md" "$OUT/"
  cat "$OUT/benchmark.md"
else
  echo "gpu_protocol: no benchmark.md (exit $status; 124 = stopped at ${BUDGET_S}s); per-epoch results are in the tarball"
  tail -n 20 "$OUT/benchmark.log"
fi
exit "$status"
