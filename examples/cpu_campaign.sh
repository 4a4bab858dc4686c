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
#    And the text ablation at training time (step 3's data variants, seed 0): the open-vocabulary lite-n trained with
#    class-name templates, and with the descriptions rotated onto the wrong classes; its curated row is seed 0 above.
python "$ROOT/examples/ablations.py" data="$NEU" out="$OUT/ov-text" only=templates,shuffled \
    text_model=dsmoe-ov-lite-yolov8n.yaml run=True jobs=2

# 6. Defect pretraining with NEU-DET held out (issue "Evidence where prompts should matter", step 1): the open-vocabulary
#    lite-n and YOLOv8n, same recipe, on the union of DeepPCB, KolektorSDD and CrackForest (8 classes joined by name;
#    each image's loss masked to its own dataset's classes), side by side. val=False: only the last epoch validates
#    (the union's val split costs as much as an epoch), so best.pt is the final weights. KolektorSDD and CrackForest are
#    non-commercial research data: these checkpoints are for this campaign, never shipped. Resumable: a run whose
#    last.pt is not the final one resumes from it (runs.run_state, as `dsmoe benchmark` decides).
printf 'yolo_data:\n  - %s\n  - %s\n  - %s\n' "$PCB" "$DATA/kolektorsdd/data.yaml" "$DATA/crackforest/data.yaml" \
    > "$OUT/union-no-neu.yaml"
state() { python -c 'import sys; from pathlib import Path; from dsmoe_yolo.benchmark.runs import run_state
print(run_state(Path(sys.argv[1]))[0])' "$1"; }
pretrain() {  # pretrain UNION_NAME: both models on $OUT/UNION_NAME.yaml into $OUT/pretrain-NAME/, side by side
    local tag=${1#union-} model run
    for model in dsmoe-ov-lite-yolov8n yolov8n; do
        run="$OUT/pretrain-$tag/$model"
        case $(state "$run") in
            resume) yolo train resume model="$run/weights/last.pt" > "$OUT/pretrain-$tag-$model.log" 2>&1 & ;;
            restart) yolo train model="$model.yaml" data="$OUT/$1.yaml" epochs=30 imgsz=256 batch=16 seed=0 \
                deterministic=True val=False project="$OUT/pretrain-$tag" name="$model" exist_ok=True \
                > "$OUT/pretrain-$tag-$model.log" 2>&1 & ;;
        esac
    done
    wait
}
pretrain union-no-neu
for model in dsmoe-ov-lite-yolov8n yolov8n; do  # named copies: the benchmark labels a .pt model by its file name
    cp "$OUT/pretrain-no-neu/$model/weights/best.pt" "$OUT/pretrain-no-neu/$model-union.pt"
done
OV_UNION=$OUT/pretrain-no-neu/dsmoe-ov-lite-yolov8n-union.pt
V8_UNION=$OUT/pretrain-no-neu/yolov8n-union.pt

# 7. Classes never seen: zero-shot on the held-out dataset: the union-pretrained open-vocabulary model validated on NEU-DET under NEU-DET's
#    class descriptions, never having seen a steel image (YOLOv8n has no row for an unseen class: no such number).
#    Then k-shot prompts without training: 1 and 5 example boxes per class from NEU-DET's train split (3 random draws)
#    vs the descriptions vs both (issue "Visual prompts", item 3), and the gate's routing per dataset (item 4).
python "$ROOT/examples/zero_shot.py" model="$OV_UNION" data="$NEU" imgsz=224 batch=16 out="$OUT/zero-shot-neu-det.md"
python "$ROOT/examples/few_shot_prompts.py" model="$OV_UNION" data="$NEU" shots=1,5 draws=3 imgsz=224 batch=16 \
    out="$OUT/few-shot-prompts-neu-det.md"
python "$ROOT/examples/routing_by_dataset.py" model="$OV_UNION" imgsz=256 batch=16 out="$OUT/routing-union.md" \
    data="$PCB,$DATA/kolektorsdd/data.yaml,$DATA/crackforest/data.yaml,$NEU"

# 8. Transfer with few labels (step 2): fixed NEU-DET subsets (5 % inside 25 %, lists in examples/results/subsets/),
#    each union-pretrained model fine-tuned and both models trained from scratch on them, two seeds, validated on the full
#    val split; then the pretrained models on all of NEU-DET. val=False as in step 6 (a 50-image epoch is 4 steps,
#    its validation 13); the epochs give each fraction a comparable number of steps (5 %: 400, 25 %: 640).
python "$ROOT/examples/few_label_subsets.py" data="$NEU" fractions=5,25 out="$OUT/subsets"
FEW=(imgsz=224 batch=16 val=False onnx=False seeds=0,1 exist_ok=True "project=$OUT" jobs=2)
FEW_MODELS="$OV_UNION,$V8_UNION,yolov8n.yaml,dsmoe-ov-lite-yolov8n.yaml"  # both starts of both models
dsmoe benchmark data="$OUT/subsets/neu-det-5.yaml" models="$FEW_MODELS" epochs=100 "${FEW[@]}" name=neu-det-5pct
dsmoe benchmark data="$OUT/subsets/neu-det-25.yaml" models="$FEW_MODELS" epochs=40 "${FEW[@]}" name=neu-det-25pct
#    All of NEU-DET from the union starts, with step 1's recipe (60 epochs, validated every epoch), read against step 1
#    and step 5's from-scratch rows.
dsmoe benchmark data="$NEU" models="$OV_UNION,$V8_UNION" "${RECIPE[@]}" seeds=0,1 onnx=False name=neu-det-union-start \
    jobs=2

# 9. Leave-one-class-out (step 3). First the cheaper in-domain form: the open-vocabulary lite-n on NEU-DET alone without
#    any image of one class (30 epochs at 224 px, val=False), then that class asked for zero-shot from its description
#    (its AP50 in zero_shot.py's table, the five trained classes' beside it); two classes at a time.
python "$ROOT/examples/leave_class_out.py" data="$NEU" classes=crazing,patches,scratches out="$OUT/loco"
#    Then k = 1, 5, 10 labelled images of the held-out class (step 3b): held_out_k_shot.py compares the visual prompt
#    (no training) with a text fine-tune of the same model and with YOLOv8n, trained on the same copy, fine-tuned with
#    a new class row; each fine-tune on the k images plus 48 replay images of the other classes, two draws.
loco_neu() {
    local model run
    for model in dsmoe-ov-lite-yolov8n yolov8n; do
        run="$OUT/neu-det-no-$1/$model"
        case $(state "$run") in
            resume) yolo train resume model="$run/weights/last.pt" ;;
            restart) yolo train model="$model.yaml" data="$OUT/loco/neu-det-no-$1/data.yaml" epochs=30 imgsz=224 \
                batch=16 seed=0 deterministic=True val=False project="$OUT/neu-det-no-$1" name="$model" exist_ok=True ;;
        esac > "$OUT/neu-det-no-$1-$model.log" 2>&1
    done
    run="$OUT/neu-det-no-$1"
    python "$ROOT/examples/zero_shot.py" model="$run/dsmoe-ov-lite-yolov8n/weights/best.pt" data="$NEU" imgsz=224 \
        batch=16 out="$OUT/zero-shot-neu-det-no-$1.md"
    python "$ROOT/examples/held_out_k_shot.py" model="$run/dsmoe-ov-lite-yolov8n/weights/best.pt" data="$NEU" \
        held="$1" yolo="$run/yolov8n/weights/best.pt" shots=1,5,10 seeds=0,1 replay=48 epochs=30 imgsz=224 \
        project="$OUT/k-shot-$1" out="$OUT/k-shot-neu-det-$1.md"
}
loco_neu patches &
loco_neu scratches &
wait
loco_neu crazing
#    Then the issue's form: the union of step 6 plus NEU-DET without the class, both models, the same recipe as step 6.
for held in crazing patches scratches; do
    printf 'yolo_data:\n  - %s\n  - %s\n  - %s\n  - %s\n' "$PCB" "$DATA/kolektorsdd/data.yaml" \
        "$DATA/crackforest/data.yaml" "$OUT/loco/neu-det-no-$held/data.yaml" > "$OUT/union-no-$held.yaml"
    pretrain "union-no-$held"
    ov="$OUT/pretrain-no-$held/dsmoe-ov-lite-yolov8n/weights/best.pt"
    python "$ROOT/examples/zero_shot.py" model="$ov" data="$NEU" imgsz=224 batch=16 out="$OUT/zero-shot-no-$held.md"
    python "$ROOT/examples/held_out_k_shot.py" model="$ov" data="$NEU" held="$held" \
        yolo="$OUT/pretrain-no-$held/yolov8n/weights/best.pt" shots=1,5,10 seeds=0,1 replay=48 epochs=30 imgsz=224 \
        project="$OUT/k-shot-$held-union" out="$OUT/k-shot-neu-det-$held-union.md"
    #    where the 5- and 10-image text fine-tunes put the held-out class's row among the six (its most alike pair)
    tuned=("$OUT/k-shot-$held-union"/ov-k{5,10}-seed{0,1}/weights/last.pt)
    python "$ROOT/examples/class_text_similarity.py" start="$ov" models="$(IFS=,; echo "${tuned[*]}")" \
        out="$OUT/class-text-similarity-neu-det-$held-union.md"
done

# 10. The trained visual path (issue "Visual prompts", item 2): the open-vocabulary lite-n with the head's visual
#     projection and training term (PromptDetect visual=0.25), once against the class text rows (visual_target=text) and
#     once against prototypes from the other images of the batch (visual_target=prototypes), on step 9's
#     patches-held-out copy with step 9's recipe; then held_out_k_shot.py's no-training rows: boxes projected by the
#     trained path vs the untrained pooled mean on the same checkpoint, read against step 9's plain checkpoint.
for target in text prototypes; do
    python - "$OUT/dsmoe-ov-lite-vis-$target-yolov8n.yaml" "$target" <<'PY'
import sys, yaml
from pathlib import Path
from dsmoe_yolo.assets import CFG_DIR
doc = yaml.safe_load((CFG_DIR / "models" / "dsmoe-ov-lite-yolov8.yaml").read_text())
doc["head"][-1][3] = ["nc", {"visual": 0.25, "visual_target": sys.argv[2]}]
Path(sys.argv[1]).write_text(yaml.safe_dump(doc, sort_keys=False))
PY
    run="$OUT/neu-det-no-patches/dsmoe-ov-lite-vis-$target-yolov8n"
    case $(state "$run") in
        resume) yolo train resume model="$run/weights/last.pt" ;;
        restart) yolo train model="$OUT/dsmoe-ov-lite-vis-$target-yolov8n.yaml" \
            data="$OUT/loco/neu-det-no-patches/data.yaml" epochs=30 imgsz=224 batch=16 seed=0 deterministic=True \
            val=False project="$OUT/neu-det-no-patches" name="dsmoe-ov-lite-vis-$target-yolov8n" exist_ok=True ;;
    esac > "$OUT/neu-det-no-patches-vis-$target.log" 2>&1
    python "$ROOT/examples/held_out_k_shot.py" model="$run/weights/best.pt" data="$NEU" held=patches shots=1,5,10 \
        seeds=0,1 finetune=False imgsz=224 project="$OUT/k-shot-patches-vis-$target" \
        out="$OUT/k-shot-neu-det-patches-vis-$target.md"
done
python "$ROOT/examples/held_out_k_shot.py" model="$OUT/neu-det-no-patches/dsmoe-ov-lite-yolov8n/weights/best.pt" \
    data="$NEU" held=patches shots=1,5,10 seeds=0,1 finetune=False imgsz=224 project="$OUT/k-shot-patches-plain" \
    out="$OUT/k-shot-neu-det-patches-plain.md"

# 11. Routing (issue 32, item 4): step 6's routing table showed the gate collapsing (the same five experts for every
#     image of a dataset; identical for the two one-class sets, whose 32 text-derived expert keys are one vector).
#     Two variants of the open-vocabulary lite-n pretrained exactly as step 6, side by side: `routed`, the SparseMoE
#     row with image routing (a free key per expert, the query standardised) and a load-balance term on the stock
#     loss ({image_routing: true, balance: 0.05}); `dense`, the sparse MoE replaced by one dense text-conditioned
#     layer (examples/ablations.py's "dense"). Then step 7's routing table for the routed model, and step 8's 5 % and
#     25 % transfer from each (two seeds), read against the plain union start.
for variant in routed dense; do
    python - "$OUT/dsmoe-ov-lite-$variant-yolov8n.yaml" "$variant" <<'PY'
import sys, yaml
from pathlib import Path
from dsmoe_yolo.assets import CFG_DIR
doc = yaml.safe_load((CFG_DIR / "models" / "dsmoe-ov-lite-yolov8.yaml").read_text())
i = next(i for i, row in enumerate(doc["head"]) if row[2] == "SparseMoE")
if sys.argv[2] == "routed":
    doc["head"][i][3] = [doc["head"][i][3][0], {"experts": 32, "image_routing": True, "balance": 0.05}]
else:
    doc["head"][i] = [doc["head"][i][0], 1, "PlainTextFusion", [doc["head"][i][3][0]]]
Path(sys.argv[1]).write_text(yaml.safe_dump(doc, sort_keys=False))
PY
    run="$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n"
    case $(state "$run") in
        resume) yolo train resume model="$run/weights/last.pt" > "$OUT/pretrain-no-neu-$variant.log" 2>&1 & ;;
        restart) yolo train model="$OUT/dsmoe-ov-lite-$variant-yolov8n.yaml" data="$OUT/union-no-neu.yaml" epochs=30 \
            imgsz=256 batch=16 seed=0 deterministic=True val=False project="$OUT/pretrain-no-neu" \
            name="dsmoe-ov-lite-$variant-yolov8n" exist_ok=True > "$OUT/pretrain-no-neu-$variant.log" 2>&1 & ;;
    esac
done
wait
for variant in routed dense; do
    cp "$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n/weights/best.pt" \
        "$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n-union.pt"
done
OV_ROUTED=$OUT/pretrain-no-neu/dsmoe-ov-lite-routed-yolov8n-union.pt
python "$ROOT/examples/routing_by_dataset.py" model="$OV_ROUTED" imgsz=256 batch=16 out="$OUT/routing-routed.md" \
    data="$PCB,$DATA/kolektorsdd/data.yaml,$DATA/crackforest/data.yaml,$NEU"
for variant in routed dense; do
    dsmoe benchmark data="$OUT/subsets/neu-det-5.yaml" models="$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n-union.pt" \
        epochs=100 "${FEW[@]}" name="neu-det-5pct-$variant"
    dsmoe benchmark data="$OUT/subsets/neu-det-25.yaml" models="$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n-union.pt" \
        epochs=40 "${FEW[@]}" name="neu-det-25pct-$variant"
done

# 12. DeepPCB held out (issue 32, items 1 and 2, the second target): both models pretrained exactly as step 6 on the
#     union of NEU-DET, KolektorSDD and CrackForest (8 classes; no PCB image), then step 8's transfer on fixed DeepPCB
#     subsets at DeepPCB's resolution (320 px; 5 %: 40 images, 25 %: 200), two seeds, validated on the full val split,
#     each union start against YOLOv8n from scratch on the same images; the open-vocabulary lite-n from scratch last.
#     Before them, step 7's zero-shot and routing tables for the new union start (DeepPCB never seen).
printf 'yolo_data:\n  - %s\n  - %s\n  - %s\n' "$NEU" "$DATA/kolektorsdd/data.yaml" "$DATA/crackforest/data.yaml" \
    > "$OUT/union-no-pcb.yaml"
pretrain union-no-pcb
for model in dsmoe-ov-lite-yolov8n yolov8n; do
    cp "$OUT/pretrain-no-pcb/$model/weights/best.pt" "$OUT/pretrain-no-pcb/$model-union.pt"
done
python "$ROOT/examples/zero_shot.py" model="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" data="$PCB" imgsz=320 \
    batch=16 out="$OUT/zero-shot-deeppcb.md"
python "$ROOT/examples/routing_by_dataset.py" model="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" imgsz=256 \
    batch=16 out="$OUT/routing-no-pcb.md" data="$NEU,$DATA/kolektorsdd/data.yaml,$DATA/crackforest/data.yaml,$PCB"
PCB_UNION="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt,$OUT/pretrain-no-pcb/yolov8n-union.pt"
PCB_STARTS="$PCB_UNION,yolov8n.yaml"
python "$ROOT/examples/few_label_subsets.py" data="$PCB" fractions=5,25 out="$OUT/subsets"
FEW_PCB=(imgsz=320 batch=16 val=False onnx=False seeds=0,1 exist_ok=True "project=$OUT" jobs=2)
dsmoe benchmark data="$OUT/subsets/deeppcb-5.yaml" models="$PCB_STARTS" epochs=100 "${FEW_PCB[@]}" name=deeppcb-5pct
dsmoe benchmark data="$OUT/subsets/deeppcb-25.yaml" models="$PCB_STARTS" epochs=40 "${FEW_PCB[@]}" name=deeppcb-25pct
dsmoe benchmark data="$OUT/subsets/deeppcb-5.yaml" models=dsmoe-ov-lite-yolov8n.yaml epochs=100 "${FEW_PCB[@]}" \
    name=deeppcb-5pct-ov-scratch
#     All of DeepPCB from the union starts, with step 2's recipe (40 epochs at 320 px, validated every epoch), seed 0,
#     read against steps 2, 4 and 5's from-scratch rows.
dsmoe benchmark data="$PCB" models="$PCB_UNION" epochs=40 imgsz=320 batch=16 seeds=0 onnx=False \
    exist_ok=True "project=$OUT" name=deeppcb-union-start jobs=2

# 13. Why the open-vocabulary start names DeepPCB's classes worse (issue 32): fine-tuning on few labels pulls the six
#     refined class-text rows together (mean pairwise cosine 0.58 from the union start, 0.84 after the 5 % fine-tune).
#     The same transfer as step 12 with the class text frozen (freeze_text=True: Ultralytics freeze= of the ClassText
#     row), read against step 12's rows; then the class rows' similarity before and after every open-vocabulary
#     fine-tune of steps 11-13 (on NEU-DET the fine-tunes pull the rows apart).
for pct_epochs in 5:100 25:40; do
    pct=${pct_epochs%:*}
    dsmoe benchmark data="$OUT/subsets/deeppcb-$pct.yaml" models="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" \
        epochs="${pct_epochs#*:}" "${FEW_PCB[@]}" freeze_text=True name="deeppcb-${pct}pct-frozen-text"
done
#     And on NEU-DET from step 11's dense-layer start (step 6's own start is rebuilt by step 6 on a fresh machine; the
#     dense variant's unfrozen rows are step 11's).
for pct_epochs in 5:100 25:40; do
    pct=${pct_epochs%:*}
    dsmoe benchmark data="$OUT/subsets/neu-det-$pct.yaml" models="$OUT/pretrain-no-neu/dsmoe-ov-lite-dense-yolov8n-union.pt" \
        epochs="${pct_epochs#*:}" "${FEW[@]}" freeze_text=True name="neu-det-${pct}pct-dense-frozen-text"
done
tuned() { printf '%s,' "$OUT"/$1/dsmoe-ov-lite-*-seed[01]/weights/last.pt; }
python "$ROOT/examples/class_text_similarity.py" start="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" \
    models="$(tuned deeppcb-5pct)$(tuned deeppcb-25pct)$(tuned deeppcb-5pct-frozen-text)$(tuned deeppcb-25pct-frozen-text)" \
    out="$OUT/class-text-similarity-deeppcb.md"
for variant in routed dense; do
    python "$ROOT/examples/class_text_similarity.py" start="$OUT/pretrain-no-neu/dsmoe-ov-lite-$variant-yolov8n-union.pt" \
        models="$(tuned neu-det-5pct-$variant)$(tuned neu-det-25pct-$variant)" \
        out="$OUT/class-text-similarity-neu-det-$variant.md"
done

# 14. Keep the class rows apart instead of freezing them (issue 32): copies of the DeepPCB-held-out union start whose
#     ClassText row trains with the spread term (dsmoe_yolo.text_spread: text_loss = weight x mean over class pairs of
#     max(0, cos) of the refined rows), weights 1 and 0.1, the same 5 % transfer as steps 12 and 13, read against
#     their rows; then the class rows' similarity after each of those fine-tunes.
for weight_tag in 1.0: 0.1:0.1; do
    weight=${weight_tag%:*} tag=${weight_tag#*:}
    start="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union-spread$tag.pt"
    python -m dsmoe_yolo.text_spread "$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" "$weight" "$start"
    dsmoe benchmark data="$OUT/subsets/deeppcb-5.yaml" models="$start" epochs=100 "${FEW_PCB[@]}" \
        name="deeppcb-5pct-text-spread${tag:+-$tag}"
done
python "$ROOT/examples/class_text_similarity.py" start="$OUT/pretrain-no-pcb/dsmoe-ov-lite-yolov8n-union.pt" \
    models="$(tuned deeppcb-5pct-text-spread)$(tuned deeppcb-5pct-text-spread-0.1)$(tuned deeppcb-5pct-frozen-text)$(tuned deeppcb-5pct)" \
    out="$OUT/class-text-similarity-deeppcb-spread.md"
