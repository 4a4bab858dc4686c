#!/usr/bin/env bash
# The CPU evidence campaign behind docs/results.md (issues 14, 30, 32), as the commands that produce it. Every step is
# resumable: run the script again and each `dsmoe benchmark` skips finished runs and resumes interrupted ones.
#
#   bash examples/cpu_campaign.sh /path/to/shared/data campaign      # data root (neu-det/, deeppcb/), output folder
#
# On 2 cores this is days of training (NEU-DET at 224 px: ~1 min/epoch for YOLOv8n, ~1.2 for lite-n, ~5.5 for
# DS-MoE-n; DeepPCB at 320 px ~1.6x that), so run it in the background:
#   setsid nohup bash examples/cpu_campaign.sh ../shared/data campaign > campaign.log 2>&1 &
# Ultralytics trains with (cores - 1) threads, one here, so two trainings at once (jobs=2) cost each little.
set -euo pipefail
DATA=$(cd "${1:?usage: cpu_campaign.sh DATA_ROOT [OUT]}" && pwd)
OUT=$(mkdir -p "${2:-campaign}" && cd "${2:-campaign}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NEU=$DATA/neu-det/data.yaml
PCB=$DATA/deeppcb/data.yaml
RECIPE=(imgsz=224 batch=16 epochs=60 exist_ok=True "project=$OUT")

# 1. NEU-DET: YOLOv8n and lite-n, two seeds each, side by side.
dsmoe benchmark data="$NEU" models=yolov8n.yaml,dsmoe-lite-yolov8n.yaml seeds=0,1 "${RECIPE[@]}" name=neu-det jobs=2

# 2. DeepPCB at 320 px: YOLOv8n and lite-n, one seed.
dsmoe benchmark data="$PCB" models=yolov8n.yaml,dsmoe-lite-yolov8n.yaml seeds=0 epochs=40 imgsz=320 batch=16 \
    exist_ok=True "project=$OUT" name=deeppcb jobs=2

# 3. Side by side: the full DS-MoE-n on NEU-DET (one seed, ~5.5 h) and the lite-n ablations (one training at a time;
#    the k5 row is the shipped lite model, so step 1's seed-0 run is reused for it instead of trained again).
#    OMP_NUM_THREADS=1: each times its latency beside the other's training, so with one thread on its own core.
OMP_NUM_THREADS=1 dsmoe benchmark data="$NEU" models=dsmoe-yolov8n.yaml seeds=0 "${RECIPE[@]}" name=neu-det-dsmoe \
    jobs=1 &
full=$!
OMP_NUM_THREADS=1 python "$ROOT/examples/ablations.py" data="$NEU" out="$OUT/ablations" run=True jobs=1 \
    k5="$OUT/neu-det/dsmoe-lite-yolov8n-seed0" &
ablations=$!
wait "$full"
wait "$ablations"

# 4. DeepPCB, a second seed (trained after step 3, by its own command), then both seeds' mean ± std in one table.
dsmoe benchmark data="$PCB" models=yolov8n.yaml,dsmoe-lite-yolov8n.yaml seeds=1 epochs=40 imgsz=320 batch=16 \
    exist_ok=True "project=$OUT" name=deeppcb-seed1 jobs=2
python "$ROOT/examples/combine_seeds.py" "$OUT/deeppcb/benchmark.csv" "$OUT/deeppcb-seed1/benchmark.csv" \
    > "$OUT/deeppcb-seeds.md"

# 5. The open-vocabulary lite-n (dsmoe-ov-lite-yolov8n.yaml: the class prompts are the classifier) with steps 1 and 2's
#    recipes and seeds, then each NEU-DET checkpoint validated under other class texts, no retraining (does the text
#    decide now?). The closed-set rows it is read against are steps 1, 2 and 4's.
dsmoe benchmark data="$NEU" models=dsmoe-ov-lite-yolov8n.yaml seeds=0,1 "${RECIPE[@]}" name=neu-det-ov jobs=2
dsmoe benchmark data="$PCB" models=dsmoe-ov-lite-yolov8n.yaml seeds=0,1 epochs=40 imgsz=320 batch=16 \
    exist_ok=True "project=$OUT" name=deeppcb-ov jobs=2
for seed in 0 1; do
    python "$ROOT/examples/prompt_swap.py" model="$OUT/neu-det-ov/dsmoe-ov-lite-yolov8n-seed$seed/weights/best.pt" \
        data="$NEU" imgsz=224 batch=16 out="$OUT/neu-det-ov/prompt-swap-seed$seed.md"
done

# 6. Defect pretraining with NEU-DET held out (issue "Evidence where prompts should matter", step 1): the open-vocabulary
#    lite-n and YOLOv8n, same recipe, on the union of DeepPCB, KolektorSDD and CrackForest (8 classes joined by name;
#    each image's loss masked to its own dataset's classes). KolektorSDD and CrackForest are non-commercial research
#    data: these checkpoints are for this campaign, never shipped. Resumable: the same lines resume from last.pt.
printf 'yolo_data:\n  - %s\n  - %s\n  - %s\n' "$PCB" "$DATA/kolektorsdd/data.yaml" "$DATA/crackforest/data.yaml" \
    > "$OUT/union-no-neu.yaml"
for model in dsmoe-ov-lite-yolov8n yolov8n; do
    run="$OUT/pretrain-no-neu/$model"
    if [ -f "$run/weights/last.pt" ] && [ ! -f "$run/weights/best.pt" ]; then
        yolo train resume model="$run/weights/last.pt"
    elif [ ! -f "$run/weights/best.pt" ]; then
        yolo train model="$model.yaml" data="$OUT/union-no-neu.yaml" epochs=40 imgsz=320 batch=16 seed=0 \
            deterministic=True project="$OUT/pretrain-no-neu" name="$model" exist_ok=True &
    fi
done
wait
