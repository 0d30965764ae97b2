"""Greedy layer-wise unsupervised pre-training against random initialisation, with few labels, on Omniglot.

Pre-training (Hinton, Osindero and Teh 2006; Bengio et al. 2007) uses a subset of the unlabelled
28x28 evaluation sheet of Omniglot (its 20 alphabets are disjoint from the labelled ones). The
labelled task is the 50 Greek and Latin characters of the small background subsets, with 1 or 10
labelled drawings per character (drawers 1-10) and drawers 11-20 for testing. Compared, each
followed by the same supervised fine-tuning of the whole network (SGD momentum 0.9, StepLR):

- conv4: random init vs a denoising convolutional auto-encoder per block;
- mlp 784-256-128: random init vs an auto-encoder per layer vs an RBM per layer (CD-1).

    python benchmarks/transfer_pretraining.py --seeds 0,1,2 --out runs/transfer_pretraining

Prints a Markdown table and writes ``transfer_pretraining.json``. Skips when the data are absent.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from bench_stats import mean_std

from mtl.backbones import create_backbone
from mtl.cli import int_list_arg
from mtl.data import load_omniglot_sprites
from mtl.training import evaluate_classifier
from mtl.transfer import FineTuneRecipe, PretrainConfig, fine_tune, greedy_pretrain
from mtl.transfer.problems import make_transfer_problem

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def build(kind: str, seed: int, args) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "conv4":
        return create_backbone("conv4", hidden=args.hidden, num_classes=50)
    return create_backbone("mlp", in_features=784, hidden=[256, 128], num_classes=50)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA), help="the shared data folder")
    p.add_argument("--shots", type=int_list_arg, default=[1, 10])
    p.add_argument("--seeds", type=int_list_arg, default=[0, 1, 2])
    p.add_argument("--unlabelled", type=int, default=6000, help="sheet images used for pre-training")
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--out", default="runs/transfer_pretraining")
    args = p.parse_args()
    root = Path(args.data)
    if not (root / "omniglot-original" / "images_background_small1.zip").is_file() or \
            not (root / "omniglot28" / "images_evaluation.png").is_file():
        print(f"skipped: Omniglot data not found under {root} (see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/transfer_pretraining.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    sheet = load_omniglot_sprites(root / "omniglot28", "evaluation")
    pool = sheet[torch.randperm(len(sheet), generator=torch.Generator().manual_seed(0))[:args.unlabelled]]
    print(f"unlabelled: {len(pool)} of {len(sheet)} evaluation-sheet images", flush=True)
    variants = [("conv4", "random"), ("conv4", "autoencoder"), ("mlp", "random"), ("mlp", "autoencoder"),
                ("mlp", "rbm")]
    pretrained, layer_reports = {}, {}
    for kind, init in variants:
        if init == "random":
            continue
        model = build(kind, 0, args)
        cfg = PretrainConfig(method=init, epochs=args.pretrain_epochs, lr=1e-3, noise=0.25 if init == "autoencoder"
                             else 0.0, rbm_lr=0.05)
        start = time.process_time()
        reports = greedy_pretrain(model, pool, cfg)
        layer_reports[f"{kind}/{init}"] = [r.as_dict() for r in reports]
        pretrained[(kind, init)] = {k: v.clone() for k, v in model.state_dict().items()}
        print(f"pre-trained {kind} with {init} in {time.process_time() - start:.0f} CPU s: "
              + ", ".join(f"{r.layer} {r.first_loss:.4f}->{r.final_loss:.4f}" for r in reports), flush=True)
    runs, table = [], {}
    for shots in args.shots:
        for kind, init in variants:
            accs = []
            for seed in args.seeds:
                problem = make_transfer_problem("omniglot", shots=shots, root=root / "omniglot-original", seed=seed)
                model = build(kind, 1000 + seed, args)
                if init != "random":
                    model.load_state_dict(pretrained[(kind, init)])
                recipe = FineTuneRecipe(epochs=args.epochs, lr=args.lr, batch_size=min(32, 50 * shots))
                fine_tune(model, problem.target_train, "full", recipe=recipe, seed=seed)
                acc = evaluate_classifier(model, problem.target_test)["accuracy"]
                accs.append(acc)
                runs.append({"model": kind, "init": init, "shots": shots, "seed": seed, "accuracy": acc})
            table[f"{kind}/{init}/{shots}"] = mean_std(accs)
            print(f"  {kind} {init} {shots}-shot: {100 * table[f'{kind}/{init}/{shots}'][0]:.1f} +- "
                  f"{100 * table[f'{kind}/{init}/{shots}'][1]:.1f}", flush=True)
    lines = ["| model | initialisation | " + " | ".join(f"{s} drawing(s) / char" for s in args.shots) + " |",
             "|---|---|" + "---|" * len(args.shots)]
    for kind, init in variants:
        cells = []
        for s in args.shots:
            m, sd = table[f"{kind}/{init}/{s}"]
            base = table[f"{kind}/random/{s}"][0]
            delta = "" if init == "random" else f" ({100 * (m - base):+.1f})"
            cells.append(f"{100 * m:.1f} +- {100 * sd:.1f}{delta}")
        lines.append(f"| {kind} | {init} | " + " | ".join(cells) + " |")
    total = time.process_time() - t0
    print("\n" + "\n".join(lines) + f"\n\n{command}\ntotal {total:.0f} CPU s")
    (out / "transfer_pretraining.json").write_text(json.dumps(
        {"command": command, "args": vars(args), "layers": layer_reports, "table": table, "runs": runs,
         "cpu_seconds": total}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
