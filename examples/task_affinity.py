"""Tutorial: which tasks help each other? TAG lookahead affinity, a Taskonomy transfer matrix, task grouping.

Four synthetic regression tasks with known relations (t1~t2 correlated at 0.9, t3~t4 at 0.7, the
pairs across unrelated; Ma et al. 2018's construction) are analysed two ways:

1. TAG (Fifty et al. 2021): train one hard-shared network on all tasks and, at every few steps,
   measure how a lookahead step along task i's gradient changes task j's loss.
2. A transfer matrix (Zamir et al. 2018): a frozen encoder per source task, a head per target on
   200 labelled examples, normalised against training from scratch on the same 200.

Both suggest a split into two groups; the split is then trained (one network per group) and
compared with all tasks in one hard-shared network.

    python examples/task_affinity.py --out runs/task_affinity          # about 2 minutes on one CPU core
    python examples/task_affinity.py --smoke --out /tmp/aff             # a few seconds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mtl.affinity import (
    TransferConfig,
    best_grouping,
    correlated_regression,
    plot_affinity,
    tag_affinity,
    train_groups,
    transfer_matrix,
)
from mtl.multitask import MultiTaskConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/task_affinity", help="folder for the heatmaps and result.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    n_train, epochs, every = (600, 2, 2) if args.smoke else (4000, 8, 5)
    problem = correlated_regression(num_train=n_train, num_val=200 if args.smoke else 1000,
                                    num_test=200 if args.smoke else 2000, seed=args.seed)
    backbone, kwargs = "mlp", {"in_features": 100, "hidden": [16]}
    print(f"{problem.name}: tasks {[t.name for t in problem.tasks]}, true correlations (cosines):")
    for row in problem.info["correlations"]:
        print("   ", "  ".join(f"{v:+.1f}" for v in row))

    # 1. TAG: lookahead affinities during joint training
    cfg = MultiTaskConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=args.seed, progress=False)
    tag, _ = tag_affinity(problem, backbone, kwargs, cfg, head_hidden=8, every=every)
    print(f"\nTAG affinity (row i: lookahead on task i, column j: change of task j's loss), "
          f"{tag.info['probes']} probes:")
    for name, row in zip(tag.task_names, tag.matrix):
        print(f"  {name}  " + "  ".join(f"{v:+.2e}" for v in row))
    print("TAG top pairs:", ", ".join(f"{a}~{b}" for a, b, _ in tag.ranked_pairs()[:2]))
    plot_affinity(out / "tag.png", tag.matrix, tag.task_names, "TAG affinity", "lookahead on task i",
                  "loss of task j")

    # 2. Transfer matrix: frozen source encoders, limited target data, normalised against scratch
    tcfg = TransferConfig(source_epochs=epochs, target_samples=100 if args.smoke else 200, val_samples=100,
                          target_epochs=10 if args.smoke else 40, seed=args.seed, progress=False, head_hidden=8)
    tm = transfer_matrix(problem, backbone, kwargs, tcfg)
    print("\nTransfer gain (scratch - transfer) / scratch, rows = source, columns = target:")
    for name, row in zip(tm.task_names, tm.gain):
        print(f"  {name}  " + "  ".join(f"{v:+.3f}" for v in row))
    transfer_aff = tm.affinity()
    print("Transfer top pairs:", ", ".join(f"{a}~{b}" for a, b, _ in transfer_aff.ranked_pairs()[:2]))
    plot_affinity(out / "transfer.png", tm.gain, tm.task_names, "transfer gain", "source task", "target task",
                  value_label="(scratch - transfer) / scratch")

    # 3. Grouping and the comparison with one network for all tasks
    split = best_grouping(tag.matrix, tag.task_names, 2)
    print("\nTAG best split into 2 groups:", " | ".join(", ".join(g) for g in split.groups))
    ccfg = MultiTaskConfig(epochs=epochs, batch_size=64, lr=1e-3, seed=args.seed, progress=False)
    grouped = train_groups(problem, [list(g) for g in split.groups], backbone, kwargs, ccfg, head_hidden=8)
    joint = train_groups(problem, [[t.name for t in problem.tasks]], backbone, kwargs, ccfg, head_hidden=8)
    print(f"Test MSE, groups vs one network: mean {grouped['mean_loss']:.4f} vs {joint['mean_loss']:.4f}")
    for t in problem.tasks:
        print(f"  {t.name}: {grouped['metrics'][t.name]:.4f} vs {joint['metrics'][t.name]:.4f}")
    result = {"tag": tag.to_dict(), "transfer": tm.to_dict(), "best_split": split.to_dict(),
              "groups": grouped, "one_network": joint}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out / 'tag.png'}, {out / 'transfer.png'} and {out / 'result.json'}")


if __name__ == "__main__":
    main()
