#!/usr/bin/env bash
# Few-shot Omniglot: two ProtoNets for the price of one. The split, augmentation, pool and tests of
# benchmarks/fewshot_omniglot_pseudo.sh; the 50 CPU-minutes after the 10-minute stage 1 are split
# between two members (seeds 1 and 2, so their episodes and pseudo-classes differ), each trained
# for REST/2 seconds from the stage-1 network with the step schedule shortened to match, and
# tested as one model (`fewshot evaluate --checkpoint A B`: embeddings concatenated, logits summed).
# Total training: FIRST + 2 * REST/2 CPU-seconds, the same as one 60-minute network.
#   benchmarks/fewshot_omniglot_ensemble.sh [OUT]
#   STAGE1=runs/omni3/protonet_1shot/best_600s.pt benchmarks/fewshot_omniglot_ensemble.sh runs/ens  (reuse a stage 1)
# Tests: each member alone and the ensemble at 5/20-way 1-shot; test-time shifts (P) chosen on 400
# validation tasks among 0 and 1 for the ensemble (2 costs 25 embeddings per image per member), then tested once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"
D=../shared/data/omniglot28
read -r -a POOLS <<< "${POOL:-$D/images_evaluation.png $D/images_background.png}"
K="${K:-1381}"
OUT="${1:-runs/omni_ensemble}"
FIRST="${FIRST:-600}"
REST="${REST:-3000}"
if [ ! -f "$ROOT/images_background_small1.zip" ] || [ ! -f "${POOLS[0]}" ]; then
  echo "skipped: needs Omniglot at ROOT=$ROOT and the unlabelled sheet POOL=${POOLS[0]}"; exit 0
fi
source benchmarks/omniglot_common.sh
mkdir -p "$OUT"
STAGE1="${STAGE1:-}"
if [ -z "$STAGE1" ]; then
  $MTL fewshot train "${PROTONET[@]}" --schedule-iterations 6000 "${AUGMENT[@]}" "${DATA[@]}" \
    --budget-seconds "$FIRST" --out "$OUT/stage1" --json "$OUT/stage1.json" > "$OUT/stage1.log" 2>&1
  STAGE1="$OUT/stage1/best.pt"
fi
HALF=$((REST / 2))
for seed in 1 2; do
  $MTL fewshot train "${PROTONET[@]}" --schedule-iterations 3000 "${AUGMENT[@]}" "${DATA[@]}" \
    --pseudo-pool "${POOLS[@]}" --pseudo-classes "$K" --pseudo-size 20 --init "$STAGE1" --seed "$seed" \
    --budget-seconds "$HALF" --out "$OUT/member$seed" --json "$OUT/member$seed.json" > "$OUT/member$seed.log" 2>&1 &
done
wait
EVAL+=(--shots 1)
MEMBERS=("$OUT/member1/best.pt" "$OUT/member2/best.pt")
for w in 5 20; do
  for seed in 1 2; do
    $MTL "${EVAL[@]}" --checkpoint "$OUT/member$seed/best.pt" --ways "$w" --json "$OUT/eval_member${seed}_${w}w1s.json"
  done
  $MTL "${EVAL[@]}" --checkpoint "${MEMBERS[@]}" --ways "$w" --json "$OUT/eval_ensemble_${w}w1s.json"
done
accuracy() { .venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$1"; }
best=0; best_acc=-1
for p in 0 1; do
  $MTL "${EVAL[@]}" --checkpoint "${MEMBERS[@]}" --split val --test-tasks 400 --ways 5 --test-shift "$p" \
    --json "$OUT/val_ensemble_shift$p.json"
  acc=$(accuracy "$OUT/val_ensemble_shift$p.json")
  if .venv/bin/python -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$acc" "$best_acc"; then
    best=$p; best_acc=$acc
  fi
done
echo "test-time shift chosen on validation: $best ($best_acc)" | tee "$OUT/shift.txt"
if [ "$best" != 0 ]; then
  for w in 5 20; do
    $MTL "${EVAL[@]}" --checkpoint "${MEMBERS[@]}" --ways "$w" --test-shift "$best" \
      --json "$OUT/eval_ensemble_${w}w1s_shift$best.json"
  done
fi
