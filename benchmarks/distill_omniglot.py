"""Knowledge distillation and Born-Again Networks on Omniglot character classification.

Hinton et al. 2015 (distillation) and Furlanello et al. 2018 (Born-Again Networks) on the 242
characters of the two small background subsets of Omniglot (Lake et al. 2015), at 28x28: drawers
1-15 of every character are the training set, drawers 16-20 the test set (new people drawing
known characters). Per seed:

1. a larger teacher (default ResNet-12 with widths 16-32-64-128) trained on the labels;
2. a small student (default conv4 with 16 filters) trained on the labels (from scratch);
3. the same student (same initialisation, shuffling and shifts) distilled from the teacher;
4. Born-Again Networks of the student's architecture: generation 0 is the student of step 2,
   generations 1-3 are each taught by the previous one; and the ensemble of generations 1..k.

    python benchmarks/distill_omniglot.py --seeds 0,1,2 --out runs/distill_omniglot

Prints a Markdown table (mean +- std over seeds) and writes ``distill_omniglot.json`` and
``distill_omniglot.png``. Skips with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from mtl.data import drawer_split, load_omniglot
from mtl.distill import DistillConfig, born_again, distill, train_from_scratch

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
SUBSETS = ("background_small1", "background_small2")


def _ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def run_seed(seed: int, train, test, args) -> dict:
    """Teacher, scratch student, distilled student and BAN generations for one seed."""
    start_cpu = time.process_time()
    teacher_kw = json.loads(args.teacher_kwargs)
    student_kw = json.loads(args.student_kwargs)
    base = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, shift=args.shift,
                         temperature=args.temperature, alpha=args.alpha, seed=seed)
    t0 = time.process_time()
    teacher = train_from_scratch(args.teacher, train, replace(base, epochs=args.teacher_epochs, seed=seed * 1000 + 99),
                                 backbone_kwargs=teacher_kw, test=test)
    teacher_cpu = time.process_time() - t0
    scratch = train_from_scratch(args.student, train, base, backbone_kwargs=student_kw, test=test,
                                 reference=teacher.model)
    taught = distill(teacher.model, args.student, train, base, backbone_kwargs=student_kw, test=test)
    ban_cfg = replace(base, temperature=args.ban_temperature, alpha=args.ban_alpha)
    ban = born_again(args.student, train, args.generations, ban_cfg, teacher=scratch.model,
                     backbone_kwargs=student_kw, test=test, log=None)
    out = {
        "seed": seed,
        "teacher": teacher.accuracy,
        "scratch": scratch.accuracy, "scratch_agreement": scratch.agreement,
        "distilled": taught.accuracy, "distilled_agreement": taught.agreement,
        "ban": [g.accuracy for g in ban.generations],
        "ban_ensemble": [g.ensemble_accuracy for g in ban.generations],
        "ban_ensemble_with_gen0": ban.ensemble_with_teacher_accuracy,
        "teacher_parameters": sum(p.numel() for p in teacher.model.parameters()),
        "student_parameters": sum(p.numel() for p in scratch.model.parameters()),
        "teacher_cpu_seconds": teacher_cpu,
        "cpu_seconds": time.process_time() - start_cpu,
    }
    print(f"  seed {seed}: teacher {100 * out['teacher']:.1f}%, scratch {100 * out['scratch']:.1f}%, "
          f"distilled {100 * out['distilled']:.1f}%, BAN " + " / ".join(f"{100 * a:.1f}" for a in out["ban"])
          + f", BAN ensemble {100 * out['ban_ensemble'][-1]:.1f}% ({out['cpu_seconds']:.0f} CPU s, "
          f"teacher {teacher_cpu:.0f})", flush=True)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def _pm(values: list[float], signed: bool = False) -> str:
    m, s = mean_std([100 * v for v in values])
    return f"{'+' if signed and m >= 0 else ''}{m:.1f} +- {s:.1f}"


def markdown(runs: list[dict], args) -> str:
    """The results table in Markdown (accuracy and teacher agreement on the test drawers)."""
    t_kw, s_kw = json.loads(args.teacher_kwargs), json.loads(args.student_kwargs)
    t_name = f"{args.teacher} {t_kw}" if t_kw else args.teacher
    s_name = f"{args.student} {s_kw}" if s_kw else args.student
    scratch = [r["scratch"] for r in runs]
    lines = ["| model | parameters | test accuracy % | vs scratch student (pts) | agreement with teacher % |",
             "|---|---:|---|---|---|",
             f"| teacher: {t_name}, {args.teacher_epochs} epochs | {runs[0]['teacher_parameters']:,} | "
             f"{_pm([r['teacher'] for r in runs])} | | |",
             f"| student from scratch: {s_name}, {args.epochs} epochs | {runs[0]['student_parameters']:,} | "
             f"{_pm(scratch)} | | {_pm([r['scratch_agreement'] for r in runs])} |",
             f"| student distilled (T={args.temperature:g}, alpha={args.alpha:g}) | "
             f"{runs[0]['student_parameters']:,} | "
             f"{_pm([r['distilled'] for r in runs])} | "
             f"{_pm([r['distilled'] - r['scratch'] for r in runs], signed=True)} | "
             f"{_pm([r['distilled_agreement'] for r in runs])} |"]
    for k in range(1, args.generations + 1):
        lines.append(f"| BAN generation {k} (T={args.ban_temperature:g}, alpha={args.ban_alpha:g}) | "
                     f"{runs[0]['student_parameters']:,} | {_pm([r['ban'][k] for r in runs])} | "
                     f"{_pm([r['ban'][k] - r['scratch'] for r in runs], signed=True)} | |")
    for k in range(2, args.generations + 1):
        lines.append(f"| BAN ensemble of generations 1-{k} | {k} x {runs[0]['student_parameters']:,} | "
                     f"{_pm([r['ban_ensemble'][k] for r in runs])} | "
                     f"{_pm([r['ban_ensemble'][k] - r['scratch'] for r in runs], signed=True)} | |")
    lines.append(f"| ensemble of generations 0-{args.generations} | {args.generations + 1} x "
                 f"{runs[0]['student_parameters']:,} | {_pm([r['ban_ensemble_with_gen0'] for r in runs])} | "
                 f"{_pm([r['ban_ensemble_with_gen0'] - r['scratch'] for r in runs], signed=True)} | |")
    return "\n".join(lines)


def plot(runs: list[dict], args, path: Path) -> None:
    """Left: teacher, scratch and distilled student; right: BAN accuracy per generation and ensembles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["teacher", "scratch", "distilled"]
    stats = [mean_std([100 * r[n] for r in runs]) for n in names]
    axes[0].bar(["teacher\n" + args.teacher, "student\nfrom scratch", f"student\ndistilled (T={args.temperature:g})"],
                [s[0] for s in stats], yerr=[s[1] for s in stats], color=["C7", "C0", "C1"], capsize=4)
    low = min(s[0] - s[1] for s in stats)
    axes[0].set(ylim=(max(0, low - 10), 100), ylabel="test accuracy %", title="distillation (mean +- std over seeds)")
    gens = list(range(args.generations + 1))
    for key, label, start in (("ban", "generation k", 0), ("ban_ensemble", "ensemble of generations 1..k", 1)):
        ms = [mean_std([100 * r[key][k] for r in runs]) for k in gens[start:]]
        xs = gens[start:]
        axes[1].errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=label)
    axes[1].axhline(mean_std([100 * r["teacher"] for r in runs])[0], color="C7", ls=":", label="teacher")
    axes[1].set(xlabel="generation (0 = student from scratch)", ylabel="test accuracy %",
                title="born-again networks (student architecture)")
    axes[1].set_xticks(gens)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder with images_background_small{1,2}.zip")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--test-drawers", type=_ints, default=[16, 17, 18, 19, 20])
    p.add_argument("--teacher", default="resnet12")
    p.add_argument("--teacher-kwargs", default='{"widths": [16, 32, 64, 128]}')
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--student", default="conv4")
    p.add_argument("--student-kwargs", default='{"hidden": 16}')
    p.add_argument("--epochs", type=int, default=15, help="epochs of every student")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--ban-temperature", type=float, default=4.0)
    p.add_argument("--ban-alpha", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--shift", type=int, default=2, help="random translation (pixels) of training images")
    p.add_argument("--out", default="runs/distill_omniglot")
    args = p.parse_args()
    root = Path(args.root)
    if not all((root / f"images_{s}.zip").is_file() or (root / f"images_{s}").is_dir() for s in SUBSETS):
        print(f"skipped: Omniglot small background subsets not found in {root} "
              "(expected images_background_small1.zip and images_background_small2.zip; see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/distill_omniglot.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data = load_omniglot(root, subsets=SUBSETS)
    masks = drawer_split(data, test_drawers=args.test_drawers)
    train, test = data.select(~masks["test"]), data.select(masks["test"])
    print(f"{data.num_classes} characters; train: {len(train)} drawings, test: {len(test)} "
          f"(drawers {args.test_drawers})")
    start = time.perf_counter()
    runs = [run_seed(seed, train, test, args) for seed in args.seeds]
    md = markdown(runs, args)
    cpu = sum(r["cpu_seconds"] for r in runs)
    print(f"\n`{command}`\n\n{md}\n\n{len(runs)} seeds, {cpu:.0f} CPU s in total, "
          f"{time.perf_counter() - start:.0f} s wall, 1 thread")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, args, out / "distill_omniglot.png")
    (out / "distill_omniglot.json").write_text(json.dumps(
        {"command": command, "options": vars(args), "markdown": md, "cpu_seconds": cpu, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out / 'distill_omniglot.png'} and {out / 'distill_omniglot.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
