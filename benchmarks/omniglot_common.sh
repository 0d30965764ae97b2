# Sourced by the benchmarks/fewshot_omniglot*.sh scripts (not run by itself): the tool, the data
# options, the training augmentation and the ProtoNet recipe they share, and the ProtoNet tests.
# Expects ROOT (the folder with the official Omniglot zips); MTL may point to another mtlmeta.
MTL="${MTL:-.venv/bin/mtlmeta}"
# one thread per run, budgets in each process's own CPU time (robust to other jobs on the machine)
DATA=(--dataset omniglot --root "$ROOT" --threads 1 --no-progress --budget-clock cpu)
# training images distorted (rotation up to 15 degrees, x/y stretch up to 20%, shear up to 15
# degrees) and shifted by up to 2 pixels
AUGMENT=(--augment-shift 2 --augment-rotate 15 --augment-scale 0.2 --augment-shear 15)
# ProtoNets as Snell et al. trained them on Omniglot: 60-way episodes, 5 queries, Adam 1e-3 on a
# step schedule (add --schedule-iterations N: halved every N/3 episodes)
PROTONET=(--algo protonet --train-ways 60 --ways 5 --shots 1 --queries 5 --schedule step
          --validate-every 200 --validation-tasks 200 --checkpoint-every 200)
# tests one at a time on both cores: MAML-family tasks two at a time, one thread each (the results of
# one thread); ProtoNets embed each test image once and need no more
EVAL=(fewshot evaluate --queries 15 --threads 2 --task-workers 2 --no-progress --overwrite)

# test_protonet CHECKPOINT PREFIX: the 600 test tasks (15 queries per class) at 5/20-way 1/5-shot,
# results in PREFIX_5w1s.json, PREFIX_5w5s.json, PREFIX_20w1s.json, PREFIX_20w5s.json
test_protonet() {
  local ws w s
  for ws in 5:1 5:5 20:1 20:5; do
    w=${ws%:*}; s=${ws#*:}
    $MTL "${EVAL[@]}" --checkpoint "$1" --ways "$w" --shots "$s" --json "${2}_${w}w${s}s.json"
  done
}
