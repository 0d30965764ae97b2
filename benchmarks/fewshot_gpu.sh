#!/bin/bash
# The few-shot checks and runs made when a GPU was lent (fourteenth session; docs/benchmarks.md,
# "On a GPU"). Usage: benchmarks/fewshot_gpu.sh [OUT]   (ROOT: folder with the official Omniglot
# zips; MTL: the mtlmeta command; TRAIN_S: wall seconds per training run, default 270)
#  1. benchmarks/cuda_checks.py: meta-gradients and ProtoNet evaluation on the GPU equal the CPU's
#  2. every algorithm through the CLI on the built-in glyphs: 6 bf16 meta-iterations on the GPU,
#     then evaluate with test-time shifts
#  3. the Omniglot split: ProtoNet (60-way episodes), MAML 5-way (meta-batch 32, the paper's) and
#     20-way (meta-batch 16), TRAIN_S wall seconds each, one after another (PARALLEL=1: the three
#     at once, as in the fourteenth session's numbers; that ran ProtoNet 16 times slower than
#     alone), then tested on the 600 test tasks (MAML with 10 inner steps)
set -u
cd "$(dirname "$0")/.."
ROOT="${ROOT:-../shared/data/omniglot-original}"; MTL="${MTL:-mtlmeta}"; TRAIN_S="${TRAIN_S:-270}"
PARALLEL="${PARALLEL:-0}"
bg() { if [ "$PARALLEL" = 1 ]; then "$@" & else "$@"; fi; }
L="${1:-runs/gpu}"; mkdir -p "$L"; W="$L/work"
python3 benchmarks/cuda_checks.py > "$L/checks.log" 2>&1
G=(--dataset glyphs --glyph-classes 12,6,6 --backbone-kwargs '{"hidden": 16}' --queries 3 --validation-tasks 4
   --test-tasks 10 --no-progress --device cuda --budget-iterations 6 --meta-batch 2)
for a in maml fomaml metasgd anil mamlpp protomaml reptile protonet; do
  ( $MTL fewshot train --algo "$a" "${G[@]}" --precision bf16 --out "$W/glyphs_$a" > "$W/glyphs_$a.log" 2>&1
    echo "train $a rc $?"
    if [ "$a" != reptile ]; then V=(--test-shift 1); else V=(); fi
    $MTL fewshot evaluate --checkpoint "$W/glyphs_$a/best.pt" --test-tasks 10 --no-progress --device cuda "${V[@]}" 2>&1 | tail -1
  ) > "$W/smoke_$a.txt" 2>&1 &
done
wait; cat "$W"/smoke_*.txt > "$L/cli_smoke.txt"
C=(--dataset omniglot --root "$ROOT" --device cuda --budget-seconds "$TRAIN_S" --budget-clock wall --no-progress
   --test-tasks 100 --augment-shift 2 --augment-rotate 15 --augment-scale 0.2 --augment-shear 15)
bg $MTL fewshot train --algo protonet --train-ways 60 --ways 5 --shots 1 --queries 5 --schedule step \
  --schedule-iterations 30000 --validate-every 1000 --validation-tasks 200 --checkpoint-every 1000 "${C[@]}" \
  --out "$W/proto" --json "$L/proto_train.json" > "$L/proto_train.log" 2>&1
bg $MTL fewshot train --algo maml --ways 5 --shots 1 --queries 5 --meta-batch 32 --inner-lr 0.4 --schedule cosine \
  --schedule-iterations 20000 --validate-every 250 --validation-tasks 100 --checkpoint-every 250 "${C[@]}" \
  --out "$W/maml5" --json "$L/maml5_train.json" > "$L/maml5_train.log" 2>&1
bg $MTL fewshot train --algo maml --ways 20 --val-ways 17 --shots 1 --queries 5 --meta-batch 16 --inner-lr 0.1 \
  --schedule cosine --schedule-iterations 20000 --validate-every 250 --validation-tasks 100 --checkpoint-every 250 \
  "${C[@]}" --out "$W/maml20" --json "$L/maml20_train.json" > "$L/maml20_train.log" 2>&1
wait
E=(fewshot evaluate --queries 15 --no-progress --overwrite --device cuda)
for ws in 5:1 5:5 20:1 20:5; do
  w=${ws%:*}; s=${ws#*:}
  $MTL "${E[@]}" --checkpoint "$W/proto/best.pt" --ways "$w" --shots "$s" --json "$L/proto_${w}w${s}s.json"
done
$MTL "${E[@]}" --checkpoint "$W/maml5/best.pt" --eval-inner-steps 10 --json "$L/maml5_5w1s.json" &
$MTL "${E[@]}" --checkpoint "$W/maml20/best.pt" --ways 20 --eval-inner-steps 10 --json "$L/maml20_20w1s.json" &
wait
cat "$L/checks.log" "$L/cli_smoke.txt"
