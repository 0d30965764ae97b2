#!/usr/bin/env bash
# Few-shot Omniglot benchmark with pseudo-classes: the split, augmentation and tests of
# benchmarks/fewshot_omniglot.sh, plus extra training classes clustered from an unlabelled pool,
# the 13,180 28x28 images of the Omniglot evaluation alphabets (omniglot28/images_evaluation.png;
# none of them is Greek, Latin or Tagalog, the test and validation alphabets).
#   1. ProtoNet for 10 CPU-minutes (the recipe of fewshot_omniglot.sh);
#   2. its network embeds the pool; k-means makes 659 clusters (the number of evaluation
#      characters); the 20 images nearest each centre form a class, clusters under 6 images are
#      dropped (about 640 classes, 11,000 images; rotated copies are classes too);
#   3. ProtoNet and MAML train for the remaining 50 CPU-minutes from the stage-1 network on the
#      labelled and the pseudo-classes, then are tested on the usual 600 tasks.
#   benchmarks/fewshot_omniglot_pseudo.sh [OUT]     (one thread per run)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"
POOL="${POOL:-../shared/data/omniglot28/images_evaluation.png}"
OUT="${1:-runs/omni_pseudo}"
FIRST="${FIRST:-600}"     # stage-1 CPU seconds
REST="${REST:-3000}"      # stage-3 CPU seconds per learner
if [ ! -f "$ROOT/images_background_small1.zip" ] || [ ! -f "$POOL" ]; then
  echo "skipped: needs Omniglot at ROOT=$ROOT and the unlabelled sheet POOL=$POOL"; exit 0
fi
MTL=.venv/bin/mtlmeta
DATA=(--dataset omniglot --root "$ROOT" --threads 1 --no-progress --budget-clock cpu)
AUGMENT=(--augment-shift 2 --augment-rotate 15 --augment-scale 0.2 --augment-shear 15)
PROTONET=(--algo protonet --train-ways 60 --ways 5 --shots 1 --queries 5 --schedule step --schedule-iterations 6000
          --validate-every 200 --validation-tasks 200 --checkpoint-every 200)
PSEUDO=(--pseudo-pool "$POOL" --pseudo-classes 659 --pseudo-size 20)
mkdir -p "$OUT"
$MTL fewshot train "${PROTONET[@]}" "${AUGMENT[@]}" "${DATA[@]}" --budget-seconds "$FIRST" \
  --out "$OUT/stage1" --json "$OUT/stage1.json" > "$OUT/stage1.log" 2>&1
$MTL fewshot train "${PROTONET[@]}" "${AUGMENT[@]}" "${DATA[@]}" "${PSEUDO[@]}" --init "$OUT/stage1/best.pt" \
  --budget-seconds "$REST" --out "$OUT/protonet" --json "$OUT/protonet.json" > "$OUT/protonet.log" 2>&1 &
$MTL fewshot train --algo maml --ways 5 --shots 1 --queries 5 --meta-batch 16 "${AUGMENT[@]}" --schedule cosine \
  --schedule-iterations 3500 --validate-every 100 --validation-tasks 100 --checkpoint-every 100 "${DATA[@]}" \
  "${PSEUDO[@]}" --init "$OUT/stage1/best.pt" --budget-seconds "$REST" \
  --out "$OUT/maml" --json "$OUT/maml.json" > "$OUT/maml.log" 2>&1 &
wait
for ws in "5 1" "5 5" "20 1" "20 5"; do
  set -- $ws
  $MTL fewshot evaluate --checkpoint "$OUT/protonet/best.pt" --ways "$1" --shots "$2" --queries 15 --threads 2 \
    --no-progress --json "$OUT/eval_protonet_${1}w${2}s.json" --overwrite
done
for s in 1 5; do
  $MTL fewshot evaluate --checkpoint "$OUT/maml/best.pt" --shots "$s" --queries 15 --threads 2 \
    --no-progress --json "$OUT/eval_maml_5w${s}s.json" --overwrite
done
