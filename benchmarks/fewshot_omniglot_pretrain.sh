#!/usr/bin/env bash
# Few-shot Omniglot benchmark, pre-training variant: the same split, augmentation and tests as
# benchmarks/fewshot_omniglot.sh, but each learner's budget is split in two halves of CPU time:
# first the conv4 trunk is trained as a 700-way classifier (`fewshot pretrain`), then ProtoNets
# and MAML are meta-trained from that trunk (`fewshot train --init`). BUDGET (default 3600 s) is
# the total per learner, so the rows compare with the episodic-only runs at the same budget.
#   benchmarks/fewshot_omniglot_pretrain.sh [OUT]     (one thread per run)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"
OUT="${1:-runs/omni_pre}"
BUDGET="${BUDGET:-3600}"
HALF=$((BUDGET / 2))
if [ ! -f "$ROOT/images_background_small1.zip" ]; then
  echo "skipped: Omniglot not found at ROOT=$ROOT (set ROOT to a folder with the official zips)"; exit 0
fi
source benchmarks/omniglot_common.sh
mkdir -p "$OUT"
# 1. classifier pre-training: batches of 128, Adam 1e-3 with a cosine to 0 over the half budget
$MTL fewshot pretrain "${DATA[@]}" "${AUGMENT[@]}" --budget-seconds "$HALF" --validate-every 500 \
  --validation-tasks 200 --queries 15 --out "$OUT/pretrain" --json "$OUT/pretrain.json" > "$OUT/pretrain.log" 2>&1
# 2. episodic training from the pre-trained trunk (the recipes of fewshot_omniglot.sh; MAML's cosine
#    schedule shortened to the iterations its half budget allows, about 1,650)
$MTL fewshot train "${PROTONET[@]}" --schedule-iterations 6000 --init "$OUT/pretrain/backbone.pt" \
  "${AUGMENT[@]}" "${DATA[@]}" --budget-seconds "$HALF" \
  --out "$OUT/protonet_1shot" --json "$OUT/protonet_1shot.json" > "$OUT/protonet_1shot.log" 2>&1 &
$MTL fewshot train --algo maml --init "$OUT/pretrain/backbone.pt" --ways 5 --shots 1 --queries 5 --meta-batch 16 \
  "${AUGMENT[@]}" --schedule cosine --schedule-iterations $((HALF * 1650 / 1800)) --validate-every 100 \
  --validation-tasks 100 "${DATA[@]}" --budget-seconds "$HALF" \
  --out "$OUT/maml_5w1s" --json "$OUT/maml_5w1s.json" > "$OUT/maml_5w1s.log" 2>&1 &
wait
test_protonet "$OUT/protonet_1shot/best.pt" "$OUT/eval_protonet"
for s in 1 5; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/maml_5w1s/best.pt" --shots "$s" --json "$OUT/eval_maml_5w${s}s.json"
done
