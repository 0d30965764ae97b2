#!/usr/bin/env bash
# Few-shot Omniglot benchmark with pseudo-classes: the split, augmentation and tests of
# benchmarks/fewshot_omniglot.sh, plus extra training classes clustered from an unlabelled pool.
#   1. ProtoNet for 10 CPU-minutes (the recipe of fewshot_omniglot.sh);
#   2. its network embeds the pool; k-means makes K clusters; the 20 images nearest each centre
#      form a class, clusters under 6 images are dropped (rotated copies are classes too);
#   3. ProtoNet, MAML 5-way, MAML 20-way and Proto-MAML 20-way (the 20-way runs validated 17-way:
#      Tagalog has 17 characters) train for the remaining 50 CPU-minutes from the stage-1 network
#      on the labelled and the pseudo-classes (four processes, one thread each);
#   4. tests on the usual 600 tasks (15 queries per class): ProtoNet at 5/20-way 1/5-shot, also
#      with test-time shifts, and shifts + rotations (angle chosen on validation); the MAML family with the number of test inner steps that scores
#      best on 400 validation tasks (`fewshot evaluate --split val`), chosen before the test
#      (Proto-MAML, trained 20-way, is also tested 5-way: its head comes from the support set);
#      the 20-way MAML also with test-time shifts of its queries when they score better on
#      validation; the ProtoNet also transductively (soft k-means steps chosen on validation),
#      reported apart from the inductive numbers.
# Pools: POOL is one or more paths (space-separated). The default, the 13,180 28x28 images of
# the Omniglot evaluation alphabets (omniglot28/images_evaluation.png), has none of the test or
# validation alphabets, K=659. The larger pool of the seventh session adds the background sheet
# (its copies of the 4,840 labelled images, Greek, Latin and Tagalog included, are removed by
# the toolkit before clustering):
#   POOL="$D/images_evaluation.png $D/images_background.png" K=1381 benchmarks/fewshot_omniglot_pseudo.sh runs/p2
#   benchmarks/fewshot_omniglot_pseudo.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"
D=../shared/data/omniglot28
read -r -a POOLS <<< "${POOL:-$D/images_evaluation.png}"
K="${K:-659}"
OUT="${1:-runs/omni_pseudo}"
FIRST="${FIRST:-600}"     # stage-1 CPU seconds
REST="${REST:-3000}"      # stage-3 CPU seconds per learner
if [ ! -f "$ROOT/images_background_small1.zip" ] || [ ! -f "${POOLS[0]}" ]; then
  echo "skipped: needs Omniglot at ROOT=$ROOT and the unlabelled sheet POOL=${POOLS[0]}"; exit 0
fi
source benchmarks/omniglot_common.sh
PROTONET+=(--schedule-iterations 6000)
MAML=(--shots 1 --queries 5 "${AUGMENT[@]}" --schedule cosine --validate-every 100
      --validation-tasks 100 --checkpoint-every 100)
PSEUDO=(--pseudo-pool "${POOLS[@]}" --pseudo-classes "$K" --pseudo-size 20)
mkdir -p "$OUT"
$MTL fewshot train "${PROTONET[@]}" "${AUGMENT[@]}" "${DATA[@]}" --budget-seconds "$FIRST" \
  --out "$OUT/stage1" --json "$OUT/stage1.json" > "$OUT/stage1.log" 2>&1
INIT=(--init "$OUT/stage1/best.pt" --budget-seconds "$REST")
$MTL fewshot train "${PROTONET[@]}" "${AUGMENT[@]}" "${DATA[@]}" "${PSEUDO[@]}" "${INIT[@]}" \
  --out "$OUT/protonet" --json "$OUT/protonet.json" > "$OUT/protonet.log" 2>&1 &
$MTL fewshot train --algo maml "${MAML[@]}" --ways 5 --meta-batch 16 --schedule-iterations 3500 "${DATA[@]}" "${PSEUDO[@]}" \
  "${INIT[@]}" --out "$OUT/maml" --json "$OUT/maml.json" > "$OUT/maml.log" 2>&1 &
# 20-way MAML: meta-batch 2 (four times the iterations of 8 in the budget; 86.41 with 4, 87.02 with 2: eleventh session)
$MTL fewshot train --algo maml "${MAML[@]}" --ways 20 --val-ways 17 --meta-batch 2 --schedule-iterations 5400 \
  --validate-every 200 --checkpoint-every 200 "${DATA[@]}" \
  "${PSEUDO[@]}" "${INIT[@]}" --out "$OUT/maml20" --json "$OUT/maml20.json" > "$OUT/maml20.log" 2>&1 &
$MTL fewshot train --algo protomaml "${MAML[@]}" --ways 20 --val-ways 17 --meta-batch 8 --schedule-iterations 1400 \
  "${DATA[@]}" "${PSEUDO[@]}" "${INIT[@]}" --out "$OUT/protomaml20" --json "$OUT/protomaml20.json" \
  > "$OUT/protomaml20.log" 2>&1 &
wait
# best_of PREFIX V...: the value V whose PREFIX<V>.json has the best accuracy at the two decimals
# reported (percent), the smaller value on a tie
best_of() {
  .venv/bin/python -c "import json,sys
r=[(round(json.load(open(f'{sys.argv[1]}{v}.json'))['accuracy'], 4), -float(v), v) for v in sys.argv[2:]]
print(max(r)[2])" "$@"
}
test_protonet "$OUT/protonet/best.pt" "$OUT/eval_protonet"
for w in 5 20; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/protonet/best.pt" --ways "$w" --shots 1 --test-shift 1 \
    --json "$OUT/eval_protonet_${w}w1s_shift1.json"
done
# test-time rotations on top of the shifts (the twelfth session's procedure): the angle with the best
# accuracy on 1,000 validation tasks (17-way 1-shot), the smaller on a tie, then tested once
for r in 0 8 12 16 20 24; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/protonet/best.pt" --split val --ways 17 --test-tasks 1000 \
    --test-shift 1 --test-rotate "$r" --json "$OUT/val_protonet_shift1_rot$r.json"
done
rot=$(best_of "$OUT/val_protonet_shift1_rot" 0 8 12 16 20 24)
for w in 5 20; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/protonet/best.pt" --ways "$w" --shots 1 --test-shift 1 --test-rotate "$rot" \
    --json "$OUT/eval_protonet_${w}w1s_shift1_rot.json"
done
# transductive ProtoNet (Ren et al. 2018 soft k-means with the queries): the fewest steps with the best
# accuracy on 300 validation tasks, at the two decimals reported (percent)
for n in 1 2 3 5 10 20; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/protonet/best.pt" --split val --ways 17 --test-tasks 300 \
    --transductive-steps "$n" --json "$OUT/val_protonet_transductive$n.json"
done
tsteps=$(best_of "$OUT/val_protonet_transductive" 1 2 3 5 10 20)
for w in 5 20; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/protonet/best.pt" --ways "$w" --shots 1 --transductive-steps "$tsteps" \
    --json "$OUT/eval_protonet_${w}w1s_transductive.json"
done
# the number of test steps for each MAML-family run: the fewest with the best validation accuracy
# (400 validation tasks, every count from one adaptation per task)
best_steps() {
  .venv/bin/python -c "import json,sys; r=json.load(open(sys.argv[1]))['by_steps']
best=max(r, key=lambda x: (x['accuracy'], -x['steps'])); print(best['steps'], best['accuracy'])" "$1"
}
declare -A TESTS=([maml]="5:1 5:5" [maml20]="20:1 20:5" [protomaml20]="20:1 5:1 5:5 20:5")
declare -A COUNTS=([maml]="1,3,5,10,20,40" [maml20]="1,3,5,10,20,40,80,120,160" [protomaml20]="1,3,5,10,20,40")
for run in maml maml20 protomaml20; do
  $MTL "${EVAL[@]}" --checkpoint "$OUT/$run/best.pt" --split val --test-tasks 400 --eval-inner-steps "${COUNTS[$run]}" \
    --json "$OUT/val_${run}_steps.json"
  read -r best best_acc < <(best_steps "$OUT/val_${run}_steps.json")
  echo "$run: $best test inner steps chosen on validation ($best_acc)" | tee "$OUT/${run}_steps.txt"
  for ws in ${TESTS[$run]}; do
    w=${ws%:*}; s=${ws#*:}
    $MTL "${EVAL[@]}" --checkpoint "$OUT/$run/best.pt" --ways "$w" --shots "$s" --eval-inner-steps "$best" \
      --json "$OUT/eval_${run}_${w}w${s}s.json"
  done
done
# the 20-way MAML with test-time shifts of its queries (9 views), tested only if validation prefers them
read -r best _ < <(best_steps "$OUT/val_maml20_steps.json")
$MTL "${EVAL[@]}" --checkpoint "$OUT/maml20/best.pt" --split val --test-tasks 400 --eval-inner-steps "$best" --test-shift 1 \
  --json "$OUT/val_maml20_shift1.json"
if .venv/bin/python -c "import json,sys
a=json.load(open(sys.argv[1]))['accuracy']; b={r['steps']: r['accuracy'] for r in json.load(open(sys.argv[2]))['by_steps']}
sys.exit(0 if a > b[int(sys.argv[3])] else 1)" "$OUT/val_maml20_shift1.json" "$OUT/val_maml20_steps.json" "$best"; then
  $MTL "${EVAL[@]}" --checkpoint "$OUT/maml20/best.pt" --ways 20 --shots 1 --eval-inner-steps "$best" --test-shift 1 \
    --json "$OUT/eval_maml20_20w1s_shift1.json"
fi
