"""Sinusoid regression (Finn et al. 2017, Sec. 5.1): MAML versus a pretrained-then-fine-tuned baseline.

Both use the 1-40-40-1 ReLU MLP from the registry and the same number of outer iterations on
the same task distribution. MAML meta-trains with one inner SGD step (step size 0.01) on K
support points; the baseline is trained on all tasks jointly (plain regression), the paper's
"pretrained" comparison. At test time both are fine-tuned by plain SGD on the K support points
of each of 600 fixed held-out tasks, and the MSE on 100 query points is reported after 0..10
steps (the baseline's fine-tuning step size is chosen on validation tasks).

    python benchmarks/fewshot_sinusoid.py --iterations 10000 --out runs/sinusoid

Prints a table and writes ``sinusoid_mse.png`` (MSE against gradient steps, and one example
task) and ``sinusoid.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from meta import MAML, MetaTrainer, MetaTrainerConfig
from meta.evaluation import mean_confidence_interval
from mtl.backbones import create_backbone
from mtl.data import SinusoidTasks
from mtl.utils import Budget, load_checkpoint, save_checkpoint, seed_everything

STEPS = list(range(11))


def mse_after_steps(model, lr, tasks, steps=STEPS):
    """Mean query MSE (with 95% CI) after each number of plain SGD fine-tuning steps, over ``tasks``."""
    per_step = {k: [] for k in steps}
    start = {n: p.detach() for n, p in model.named_parameters()}
    for i in range(tasks.num_tasks):
        sx, sy, qx, qy = tasks.support_x[i], tasks.support_y[i], tasks.query_x[i], tasks.query_y[i]
        params = {n: p.clone().requires_grad_() for n, p in start.items()}
        for k in range(max(steps) + 1):
            if k in per_step:
                with torch.no_grad():
                    per_step[k].append(float(F.mse_loss(functional_call(model, params, (qx,)), qy)))
            loss = F.mse_loss(functional_call(model, params, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(params.values()))
            params = {n: (p - lr * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
    return {k: mean_confidence_interval(v) for k, v in per_step.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=10_000, help="outer iterations for both models")
    p.add_argument("--shots", type=int, default=10, help="K support points (paper: 5, 10, 20)")
    p.add_argument("--meta-batch", type=int, default=25)
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/sinusoid")
    p.add_argument("--reuse", action="store_true", help="load the models trained by a previous run from --out")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k, b = args.shots, args.meta_batch
    train_tasks, val_tasks = SinusoidTasks(seed=args.seed), SinusoidTasks(seed=args.seed + 1)
    test = SinusoidTasks(seed=12345).tasks(range(args.test_tasks), k, 100)
    val = val_tasks.tasks(range(100), k, 100)

    seed_everything(args.seed)
    maml = MAML(create_backbone("mlp"), inner_lr=0.01, inner_steps=1, loss="mse")
    pretrained = create_backbone("mlp")
    saved = out / "models.pt"
    if args.reuse and saved.is_file():
        state = load_checkpoint(saved)
        maml.model.load_state_dict(state["maml"])
        pretrained.load_state_dict(state["pretrained"])
        maml_seconds, pre_seconds = state["maml_seconds"], state["pretrained_seconds"]
    else:
        trainer = MetaTrainer(
            maml, lambda i: train_tasks.tasks(range(i * b, (i + 1) * b), k, k), None,
            MetaTrainerConfig(meta_lr=1e-3, grad_clip=None, progress=True),
        )
        start = time.perf_counter()
        trainer.fit(Budget(iterations=args.iterations))
        maml_seconds = time.perf_counter() - start

        seed_everything(args.seed)
        opt = torch.optim.Adam(pretrained.parameters(), lr=1e-3)
        start = time.perf_counter()
        for i in range(args.iterations):  # joint regression on the same tasks and points
            batch = train_tasks.tasks(range(i * b, (i + 1) * b), k, k)
            x = torch.cat([batch.support_x, batch.query_x], 1).reshape(-1, 1)
            y = torch.cat([batch.support_y, batch.query_y], 1).reshape(-1, 1)
            loss = F.mse_loss(pretrained(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pre_seconds = time.perf_counter() - start
        save_checkpoint(saved, {"maml": maml.model.state_dict(), "pretrained": pretrained.state_dict(),
                                "maml_seconds": maml_seconds, "pretrained_seconds": pre_seconds})

    lrs = [0.001, 0.003, 0.01, 0.02, 0.05]
    val_mse = {lr: mse_after_steps(pretrained, lr, val, [1, 10])[10][0] for lr in lrs}
    best_lr = min(val_mse, key=val_mse.get)

    results = {
        "maml": mse_after_steps(maml.model, 0.01, test),
        f"pretrained (fine-tune lr {best_lr})": mse_after_steps(pretrained, best_lr, test),
    }
    print(f"\nSinusoid {k}-shot, {args.iterations} outer iterations each, {args.test_tasks} test tasks "
          f"(MAML {maml_seconds:.0f}s, pretrained {pre_seconds:.0f}s)")
    print("| model | " + " | ".join(f"{s} steps" for s in (0, 1, 10)) + " |")
    print("|---|---:|---:|---:|")
    for name, res in results.items():
        print(f"| {name} | " + " | ".join(f"{res[s][0]:.3f} +- {res[s][1]:.3f}" for s in (0, 1, 10)) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, res in results.items():
        ax1.errorbar(STEPS, [res[s][0] for s in STEPS], yerr=[res[s][1] for s in STEPS], marker="o",
                     capsize=3, label=name)
    ax1.set_xlabel("gradient steps on the K support points")
    ax1.set_ylabel("query MSE (95% CI)")
    ax1.set_yscale("log")
    ax1.set_title(f"{args.test_tasks} held-out tasks, K={k}")
    ax1.grid(alpha=0.3)
    ax1.legend()
    task = SinusoidTasks(seed=12345).tasks([0], k, 1)
    xs = torch.linspace(-5, 5, 200).unsqueeze(1)
    amp, ph = float(task.amplitude[0]), float(task.phase[0])
    ax2.plot(xs, amp * torch.sin(xs - ph), "k", label="true function")
    sx, sy = task.support_x[0], task.support_y[0]
    ax2.scatter(sx, sy, c="k", marker="^", zorder=5, label=f"{k} support points")
    for name, model, lr in (("maml", maml.model, 0.01), ("pretrained", pretrained, best_lr)):
        algo = MAML(model, inner_lr=lr, inner_steps=1, loss="mse").eval()
        ax2.plot(xs, algo.adapt(sx, sy, steps=10)(xs).detach(), "--", label=f"{name}, 10 steps")
    ax2.set_title("one test task")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sinusoid_mse.png", dpi=110)
    (out / "sinusoid.json").write_text(json.dumps(
        {n: {str(s): {"mse": r[s][0], "ci95": r[s][1]} for s in STEPS} for n, r in results.items()}, indent=2))
    print(f"plot: {out / 'sinusoid_mse.png'}")


if __name__ == "__main__":
    main()
