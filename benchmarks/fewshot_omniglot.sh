#!/usr/bin/env bash
# Few-shot Omniglot benchmark on the 242-character labelled subset (../shared/data/omniglot-original):
# alphabet-disjoint split (test: Greek, Latin; validation: Tagalog; training: the other five
# alphabets, with 90-degree rotations as extra training classes), conv4, 600 test tasks.
# Each run has a wall-clock budget (BUDGET seconds, default 3600) and keeps the best validation
# checkpoint reached within the first 600 s as best_600s.pt, so one run reports both budgets.
#   benchmarks/fewshot_omniglot.sh [OUT]       (two runs in parallel, one thread each)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"
OUT="${1:-runs/omni}"
BUDGET="${BUDGET:-3600}"
CLOCK="${CLOCK:-cpu}"    # cpu: each run's own CPU time (one thread each; robust to other jobs); wall: wall time
if [ ! -f "$ROOT/images_background_small1.zip" ]; then
  echo "skipped: Omniglot not found at ROOT=$ROOT (set ROOT to a folder with the official zips)"; exit 0
fi
source benchmarks/omniglot_common.sh
COMMON=(--dataset omniglot --root "$ROOT" --budget-seconds "$BUDGET" --budget-clock "$CLOCK" --snapshot-seconds 600 --threads 1 --no-progress)
mkdir -p "$OUT"
# ProtoNets as Snell et al. trained them on Omniglot (60-way episodes, 5 queries, Adam 1e-3 halved
# every 2,000 episodes); tested with 15 queries below.
$MTL fewshot train "${PROTONET[@]}" --schedule-iterations 6000 "${AUGMENT[@]}" "${COMMON[@]}" \
  --out "$OUT/protonet_1shot" --json "$OUT/protonet_1shot.json" > "$OUT/protonet_1shot.log" 2>&1 &
# MAML: 5 queries per class while training (tested with 15), 16 tasks per meta-batch.
$MTL fewshot train --algo maml --ways 5 --shots 1 --queries 5 --meta-batch 16 \
  "${AUGMENT[@]}" --schedule cosine --schedule-iterations 3500 --validate-every 100 --validation-tasks 100 "${COMMON[@]}" \
  --out "$OUT/maml_5w1s" --json "$OUT/maml_5w1s.json" > "$OUT/maml_5w1s.log" 2>&1 &
wait
# The same trained models tested at other settings (ProtoNets: any ways/shots; MAML: its trained 5 ways).
for ckpt in best_600s best; do
  test_protonet "$OUT/protonet_1shot/$ckpt.pt" "$OUT/eval_protonet_${ckpt}"
  for s in 1 5; do
    $MTL "${EVAL[@]}" --checkpoint "$OUT/maml_5w1s/$ckpt.pt" --shots "$s" --json "$OUT/eval_maml_${ckpt}_5w${s}s.json"
  done
done
