"""Knowledge distillation and Born-Again Networks on Omniglot character classification.

Hinton et al. 2015 (distillation) and Furlanello et al. 2018 (Born-Again Networks) on the 242
characters of the two small background subsets of Omniglot (Lake et al. 2015), at 28x28: drawers
1-15 of every character are the training set, drawers 16-20 the test set (new people drawing
known characters). Per seed:

1. a larger teacher (default ResNet-12 with widths 16-32-64-128) trained on the labels;
2. a small student (default conv4 with 16 filters) trained on the labels (from scratch);
3. the same student (same initialisation, shuffling and shifts) distilled from the teacher, for
   every (T, alpha) of a sweep declared before any run (default T in {1, 4, 8} x alpha in
   {0.1, 0.5});
4. Born-Again Networks of the student's architecture: generation 0 is the student of step 2,
   generations 1-3 are each taught by the previous one; and the ensemble of generations 1..k;
5. the control for the BAN ensemble: as many students trained from scratch as there are BAN
   generations, each with the initialisation, shuffling and shifts of the BAN generation of the
   same number (they differ from it only in having no teacher), and their ensemble;
6. a stronger teacher: the ensemble (mean probabilities) of the teacher and the control students,
   distilled into the student with the selected (T, alpha).

Protocol for (T, alpha), fixed before looking at test numbers: drawers 14-15 of the training
drawers are a validation set; a teacher and the sweep's students are trained on drawers 1-13 for
the ``--val-seeds``; the setting with the best mean validation accuracy (ties: the first in the
sweep's order) is "the selected setting". Its test accuracy (teacher and students retrained on
drawers 1-15) is the headline distillation result; the whole sweep's test accuracies are
reported as well.

    python benchmarks/distill_omniglot.py --seeds 0,1,2 --out runs/distill_omniglot

Every trained model's result (and the teachers' and control students' weights, via
``mtl.utils.checkpoint``) is cached under ``OUT/cache/<options fingerprint>/``, so a rerun with
the same options only trains what is missing. ``--reuse-results OLD.json`` takes the BAN
generations and the T=4/alpha=0.5 student of an earlier run with the same options, but only
for the seeds whose retrained teacher and scratch student reproduce that run's accuracies
exactly (the training is deterministic on one CPU thread).

Prints a Markdown table (mean +- std over seeds) and writes ``distill_omniglot.json`` and
``distill_omniglot.png``. Skips with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from bench_stats import mean_std

from mtl.cli import int_list_arg
from mtl.data import drawer_split, load_omniglot
from mtl.distill import (
    CachedLogits,
    DistillConfig,
    EnsembleTeacher,
    born_again,
    distill,
    ensemble_logits,
    train_from_scratch,
)
from mtl.distill.trainer import build_model
from mtl.training import predict_logits
from mtl.utils.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "omniglot-original"
SUBSETS = ("background_small1", "background_small2")
# Options that change what a cached result means (everything but --seeds, --out, --root and the reuse file).
FINGERPRINT_KEYS = ("test_drawers", "val_drawers", "teacher", "teacher_kwargs", "teacher_epochs", "student",
                    "student_kwargs", "epochs", "generations", "ban_temperature", "ban_alpha", "batch_size", "lr",
                    "shift")
# Options an earlier run must share for --reuse-results.
REUSE_KEYS = ("test_drawers", "teacher", "teacher_kwargs", "teacher_epochs", "student", "student_kwargs", "epochs",
              "generations", "ban_temperature", "ban_alpha", "batch_size", "lr", "shift")


def _floats(text: str) -> list[float]:
    return [float(p) for p in text.split(",") if p.strip()]


def setting_key(t: float, a: float) -> str:
    """Name of one (temperature, alpha) setting, e.g. ``T4_a0.5``."""
    return f"T{t:g}_a{a:g}"


class Store:
    """Results (one JSON file) and model weights (checkpoints) of one options fingerprint, per key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "results.json"
        self.results = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str):
        return self.results.get(key)

    def put(self, key: str, value) -> None:
        self.results[key] = value
        atomic_write_text(self.path, json.dumps(self.results, indent=1, sort_keys=True) + "\n")

    def model(self, key: str, build, train_fn):
        """The module stored under ``key``, else ``train_fn()`` (a module and a result dict), stored."""
        path = self.folder / f"{key.replace('/', '_')}.pt"
        if path.is_file() and self.get(key) is not None:
            net = build()
            net.load_state_dict(load_checkpoint(path)["state_dict"])
            return net.eval(), self.get(key)
        net, result = train_fn()
        save_checkpoint(path, {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}})
        self.put(key, result)
        return net, result


def _acc(logits: torch.Tensor, data) -> float:
    return float((logits.argmax(1) == data.targets).float().mean())


def _timed(label: str, fn):
    t0 = time.process_time()
    out = fn()
    print(f"    {label}: {time.process_time() - t0:.0f} CPU s", flush=True)
    return out


def validation_sweep(seed: int, train, val, args, store: Store) -> dict[str, float]:
    """Teacher and the sweep's students trained on the training drawers minus the validation ones."""
    teacher_kw, student_kw = json.loads(args.teacher_kwargs), json.loads(args.student_kwargs)
    base = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, shift=args.shift, seed=seed)
    tcfg = replace(base, epochs=args.teacher_epochs, seed=seed * 1000 + 99)

    def build_teacher():
        return build_model(args.teacher, train.num_classes, teacher_kw, 0)

    def train_teacher():
        res = train_from_scratch(args.teacher, train, tcfg, backbone_kwargs=teacher_kw, test=val)
        return res.model, {"accuracy": res.accuracy}

    teacher, tres = store.model(f"val/seed{seed}/teacher", build_teacher,
                                lambda: _timed(f"seed {seed} validation teacher", train_teacher))
    out = {"teacher": tres["accuracy"]}
    cached = CachedLogits.from_teacher(teacher, train)  # once for the whole sweep
    for t in args.sweep_temperatures:
        for a in args.sweep_alphas:
            key = f"val/seed{seed}/{setting_key(t, a)}"
            if store.get(key) is None:
                res = _timed(f"seed {seed} validation {setting_key(t, a)}", lambda t=t, a=a: distill(
                    cached, args.student, train, replace(base, temperature=t, alpha=a), backbone_kwargs=student_kw,
                    test=val))
                store.put(key, {"accuracy": res.accuracy})
            out[setting_key(t, a)] = store.get(key)["accuracy"]
    print(f"  seed {seed} validation (drawers {args.val_drawers}): teacher {100 * out['teacher']:.1f}%; "
          + ", ".join(f"{k} {100 * v:.1f}" for k, v in out.items() if k != "teacher"), flush=True)
    return out


def select_setting(val_runs: list[dict], args) -> tuple[float, float]:
    """The (T, alpha) with the best mean validation accuracy; ties go to the first in the sweep's order."""
    best, best_acc = None, -1.0
    for t in args.sweep_temperatures:
        for a in args.sweep_alphas:
            acc = sum(r[setting_key(t, a)] for r in val_runs) / len(val_runs)
            if acc > best_acc + 1e-12:
                best, best_acc = (t, a), acc
    return best


def _reusable(previous: dict | None, seed: int) -> dict | None:
    if previous is None:
        return None
    return next((r for r in previous["runs"] if r["seed"] == seed), None)


def run_seed(seed: int, train, test, args, store: Store, selected: tuple[float, float], previous: dict | None) -> dict:
    """Teacher, scratch student, the (T, alpha) sweep, BAN generations, their control and a stronger teacher."""
    start_cpu = time.process_time()
    teacher_kw = json.loads(args.teacher_kwargs)
    student_kw = json.loads(args.student_kwargs)
    base = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, shift=args.shift, seed=seed)
    p = f"test/seed{seed}"

    def build_student():
        return build_model(args.student, train.num_classes, student_kw, 0)

    def train_teacher():
        t0 = time.process_time()
        res = train_from_scratch(args.teacher, train, replace(base, epochs=args.teacher_epochs, seed=seed * 1000 + 99),
                                 backbone_kwargs=teacher_kw, test=test)
        return res.model, {"accuracy": res.accuracy, "cpu_seconds": time.process_time() - t0}

    teacher, tres = store.model(f"{p}/teacher", lambda: build_model(args.teacher, train.num_classes, teacher_kw, 0),
                                lambda: _timed(f"seed {seed} teacher", train_teacher))
    teacher_logits = predict_logits(teacher, test.images)

    def train_scratch():
        res = train_from_scratch(args.student, train, base, backbone_kwargs=student_kw, test=test,
                                 reference=teacher_logits)
        return res.model, {"accuracy": res.accuracy, "agreement": res.agreement}

    scratch, sres = store.model(f"{p}/scratch", build_student, lambda: _timed(f"seed {seed} scratch", train_scratch))
    scratch_logits = predict_logits(scratch, test.images)

    old = _reusable(previous, seed)
    if old is not None:
        if abs(old["teacher"] - tres["accuracy"]) < 1e-9 and abs(old["scratch"] - sres["accuracy"]) < 1e-9:
            print(f"  seed {seed}: teacher and scratch student reproduce the earlier run exactly; reusing its "
                  f"BAN generations and {setting_key(4, 0.5)} student", flush=True)
            if args.temperature == 4 and args.alpha == 0.5 and 4.0 in args.sweep_temperatures \
                    and 0.5 in args.sweep_alphas and store.get(f"{p}/{setting_key(4, 0.5)}") is None:
                store.put(f"{p}/{setting_key(4, 0.5)}", {"accuracy": old["distilled"],
                                                          "agreement": old["distilled_agreement"], "reused": True})
            if store.get(f"{p}/ban") is None:
                store.put(f"{p}/ban", {"ban": old["ban"], "ban_ensemble": old["ban_ensemble"],
                                       "ban_ensemble_with_gen0": old["ban_ensemble_with_gen0"], "reused": True})
        else:
            print(f"  seed {seed}: the earlier run's teacher/scratch accuracies differ from this run's "
                  f"({old['teacher']:.4f}/{old['scratch']:.4f} vs {tres['accuracy']:.4f}/{sres['accuracy']:.4f}); "
                  "nothing reused", flush=True)

    if store.get(f"{p}/ban") is None:
        ban_cfg = replace(base, temperature=args.ban_temperature, alpha=args.ban_alpha)
        ban = _timed(f"seed {seed} BAN", lambda: born_again(args.student, train, args.generations, ban_cfg,
                                                             teacher=scratch, backbone_kwargs=student_kw, test=test,
                                                             log=None))
        store.put(f"{p}/ban", {"ban": [g.accuracy for g in ban.generations],
                               "ban_ensemble": [g.ensemble_accuracy for g in ban.generations],
                               "ban_ensemble_with_gen0": ban.ensemble_with_teacher_accuracy})
    ban_res = store.get(f"{p}/ban")

    # The control: BAN generation k's initialisation, shuffling and shifts (seed * 1000 + k), no teacher.
    controls, control_logits, control_acc = [], [], [None]
    for k in range(1, args.generations + 1):
        def train_control(k=k):
            res = train_from_scratch(args.student, train, replace(base, seed=seed * 1000 + k),
                                     backbone_kwargs=student_kw, test=test)
            return res.model, {"accuracy": res.accuracy}

        net, cres = store.model(f"{p}/control{k}", build_student, lambda k=k: _timed(f"seed {seed} control {k}",
                                                                                    lambda: train_control(k)))
        controls.append(net)
        control_logits.append(predict_logits(net, test.images))
        control_acc.append(cres["accuracy"])
    control_ens = [None] + [_acc(ensemble_logits(control_logits[:k]), test) for k in range(1, args.generations + 1)]
    control_with_gen0 = _acc(ensemble_logits([scratch_logits] + control_logits), test)

    cached = CachedLogits.from_teacher(teacher, train)  # once for the whole sweep
    sweep = {}
    for t in args.sweep_temperatures:
        for a in args.sweep_alphas:
            key = f"{p}/{setting_key(t, a)}"
            if store.get(key) is None:
                res = _timed(f"seed {seed} {setting_key(t, a)}", lambda t=t, a=a: distill(
                    cached, args.student, train, replace(base, temperature=t, alpha=a), backbone_kwargs=student_kw,
                    test=test, reference=teacher_logits))
                store.put(key, {"accuracy": res.accuracy, "agreement": res.agreement})
            sweep[setting_key(t, a)] = store.get(key)

    strong = EnsembleTeacher([teacher] + controls, combine="probs").eval()
    strong_acc = _acc(predict_logits(strong, test.images), test)
    t_sel, a_sel = selected
    key = f"{p}/strong_{setting_key(t_sel, a_sel)}"
    if store.get(key) is None:
        res = _timed(f"seed {seed} strong teacher {setting_key(t_sel, a_sel)}", lambda: distill(
            strong, args.student, train, replace(base, temperature=t_sel, alpha=a_sel), backbone_kwargs=student_kw,
            test=test))
        store.put(key, {"accuracy": res.accuracy, "agreement": res.agreement})
    strong_res = store.get(key)

    default = sweep.get(setting_key(args.temperature, args.alpha))
    out = {
        "seed": seed,
        "teacher": tres["accuracy"],
        "scratch": sres["accuracy"], "scratch_agreement": sres["agreement"],
        "distilled": default["accuracy"] if default else None,
        "distilled_agreement": default["agreement"] if default else None,
        "sweep": {k: v["accuracy"] for k, v in sweep.items()},
        "sweep_agreement": {k: v["agreement"] for k, v in sweep.items()},
        "selected": setting_key(t_sel, a_sel),
        "ban": ban_res["ban"],
        "ban_ensemble": ban_res["ban_ensemble"],
        "ban_ensemble_with_gen0": ban_res["ban_ensemble_with_gen0"],
        "ban_reused": bool(ban_res.get("reused")),
        "control": control_acc,
        "control_ensemble": control_ens,
        "control_ensemble_with_gen0": control_with_gen0,
        "strong_teacher": strong_acc,
        "strong_distilled": strong_res["accuracy"], "strong_distilled_agreement": strong_res["agreement"],
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "student_parameters": sum(p.numel() for p in scratch.parameters()),
        "teacher_cpu_seconds": tres.get("cpu_seconds"),
        "cpu_seconds_this_run": time.process_time() - start_cpu,
    }
    k = args.generations
    print(f"  seed {seed}: teacher {100 * out['teacher']:.1f}%, scratch {100 * out['scratch']:.1f}%, sweep "
          + ", ".join(f"{n} {100 * v:.1f}" for n, v in out["sweep"].items())
          + f"; BAN ensemble 1-{k} {100 * out['ban_ensemble'][k]:.1f}% vs control ensemble "
          f"{100 * control_ens[k]:.1f}%; stronger teacher {100 * strong_acc:.1f}% -> student "
          f"{100 * out['strong_distilled']:.1f}% ({out['cpu_seconds_this_run']:.0f} CPU s this run)", flush=True)
    return out


def _pm(values: list[float], signed: bool = False) -> str:
    m, s = mean_std([100 * v for v in values])
    return f"{'+' if signed and m >= 0 else ''}{m:.1f} +- {s:.1f}"


def _per_seed(values: list[float], signed: bool = True) -> str:
    return ", ".join(f"{'+' if signed and v >= 0 else ''}{100 * v:.1f}" for v in values)


def markdown(runs: list[dict], val_runs: list[dict], selected: tuple[float, float], args) -> str:
    """The results tables in Markdown (accuracy and teacher agreement on the test drawers)."""
    t_kw, s_kw = json.loads(args.teacher_kwargs), json.loads(args.student_kwargs)
    t_name = f"{args.teacher} {t_kw}" if t_kw else args.teacher
    s_name = f"{args.student} {s_kw}" if s_kw else args.student
    n_s = f"{runs[0]['student_parameters']:,}"
    sel = setting_key(*selected)
    K = args.generations

    def vs(key_fn) -> str:
        d = [key_fn(r) - r["scratch"] for r in runs]
        return f"{_pm(d, signed=True)} ({_per_seed(d)})"

    lines = ["| model | parameters | test accuracy % | vs scratch student, pts (per seed) | agreement with teacher % |",
             "|---|---:|---|---|---|",
             f"| teacher: {t_name}, {args.teacher_epochs} epochs | {runs[0]['teacher_parameters']:,} | "
             f"{_pm([r['teacher'] for r in runs])} | | |",
             f"| student from scratch: {s_name}, {args.epochs} epochs | {n_s} | {_pm([r['scratch'] for r in runs])} "
             f"| | {_pm([r['scratch_agreement'] for r in runs])} |"]
    for name in runs[0]["sweep"]:
        mark = " **(selected on validation)**" if name == sel else ""
        lines.append(f"| student distilled, {name.replace('_a', ', alpha=').replace('T', 'T=')}{mark} | {n_s} | "
                     f"{_pm([r['sweep'][name] for r in runs])} | {vs(lambda r, n=name: r['sweep'][n])} | "
                     f"{_pm([r['sweep_agreement'][name] for r in runs])} |")
    lines.append(f"| stronger teacher: ensemble of the teacher and the {K} control students | | "
                 f"{_pm([r['strong_teacher'] for r in runs])} | | |")
    lines.append(f"| student distilled from it ({sel.replace('_a', ', alpha=').replace('T', 'T=')}) | {n_s} | "
                 f"{_pm([r['strong_distilled'] for r in runs])} | {vs(lambda r: r['strong_distilled'])} | "
                 f"{_pm([r['strong_distilled_agreement'] for r in runs])} (with the ensemble) |")
    for k in range(1, K + 1):
        lines.append(f"| BAN generation {k} (T={args.ban_temperature:g}, alpha={args.ban_alpha:g}) | {n_s} | "
                     f"{_pm([r['ban'][k] for r in runs])} | {vs(lambda r, k=k: r['ban'][k])} | |")
    for k in range(1, K + 1):
        lines.append(f"| control {k}: from scratch with BAN generation {k}'s seed | {n_s} | "
                     f"{_pm([r['control'][k] for r in runs])} | {vs(lambda r, k=k: r['control'][k])} | |")
    lines.append(f"| BAN ensemble of generations 1-{K} | {K} x {n_s} | {_pm([r['ban_ensemble'][K] for r in runs])} | "
                 f"{vs(lambda r: r['ban_ensemble'][K])} | |")
    lines.append(f"| control ensemble of {K} scratch students | {K} x {n_s} | "
                 f"{_pm([r['control_ensemble'][K] for r in runs])} | {vs(lambda r: r['control_ensemble'][K])} | |")
    lines.append(f"| ensemble of BAN generations 0-{K} | {K + 1} x {n_s} | "
                 f"{_pm([r['ban_ensemble_with_gen0'] for r in runs])} | "
                 f"{vs(lambda r: r['ban_ensemble_with_gen0'])} | |")
    lines.append(f"| ensemble of the scratch student and the {K} controls | {K + 1} x {n_s} | "
                 f"{_pm([r['control_ensemble_with_gen0'] for r in runs])} | "
                 f"{vs(lambda r: r['control_ensemble_with_gen0'])} | |")

    diff = [r["ban_ensemble"][K] - r["control_ensemble"][K] for r in runs]
    diff0 = [r["ban_ensemble_with_gen0"] - r["control_ensemble_with_gen0"] for r in runs]
    gen_diff = [[r["ban"][k] - r["control"][k] for r in runs] for k in range(1, K + 1)]
    lines += ["", "BAN minus its control (pts; per seed " + ", ".join(str(r["seed"]) for r in runs) + "):", "",
              f"- ensemble of generations 1-{K} minus the control ensemble: {_pm(diff, signed=True)} "
              f"({_per_seed(diff)})",
              f"- with generation 0 / the scratch student in both: {_pm(diff0, signed=True)} ({_per_seed(diff0)})"]
    for k, d in enumerate(gen_diff, start=1):
        lines.append(f"- generation {k} minus control {k} (same initialisation): {_pm(d, signed=True)} "
                     f"({_per_seed(d)})")
    seeds = ", ".join(str(r["seed"]) for r in val_runs)
    lines += ["", f"Validation (train drawers minus {args.val_drawers}, evaluated on drawers {args.val_drawers}; "
              f"seeds {seeds}): teacher {_pm([r['teacher'] for r in val_runs])}; "
              + ", ".join(f"{n} {_pm([r[n] for r in val_runs])}" for n in val_runs[0] if n not in ("seed", "teacher"))
              + f". Selected: {sel}."]
    return "\n".join(lines)


def plot(runs: list[dict], args, selected: tuple[float, float], path: Path) -> None:
    """Left: the (T, alpha) sweep vs the scratch student; right: BAN generations, their ensemble, the control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    names = list(runs[0]["sweep"])
    stats = [mean_std([100 * r["sweep"][n] for r in runs]) for n in names]
    sel = setting_key(*selected)
    axes[0].bar(range(len(names)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3,
                color=["C3" if n == sel else "C1" for n in names])
    extra = [("scratch", "C0", "-", "student from scratch"), ("teacher", "C7", ":", "teacher"),
             ("strong_distilled", "C2", "--", "distilled from the stronger teacher")]
    for key, color, ls, label in extra:
        axes[0].axhline(mean_std([100 * r[key] for r in runs])[0], color=color, ls=ls, label=label)
    axes[0].set_xticks(range(len(names)))
    axes[0].set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
    low = min(s[0] - s[1] for s in stats)
    axes[0].set(ylim=(max(0, low - 8), 85), ylabel="test accuracy %",
                title=f"distilled students (red: selected on validation, {sel})")
    axes[0].legend(fontsize=7, loc="lower right")
    gens = list(range(args.generations + 1))
    series = (("ban", "BAN generation k", 0, "C1", "-"), ("ban_ensemble", "BAN ensemble of 1..k", 1, "C3", "-"),
              ("control", "control k (no teacher)", 1, "C0", "--"),
              ("control_ensemble", "control ensemble of 1..k", 1, "C2", "--"))
    for key, label, start, color, ls in series:
        ms = [mean_std([100 * r[key][k] for r in runs]) for k in gens[start:]]
        axes[1].errorbar(gens[start:], [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3,
                         label=label, color=color, ls=ls)
    axes[1].axhline(mean_std([100 * r["teacher"] for r in runs])[0], color="C7", ls=":", label="teacher")
    axes[1].set(xlabel="generation (0 = student from scratch)", ylabel="test accuracy %",
                title="born-again networks vs independent students")
    axes[1].set_xticks(gens)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder with images_background_small{1,2}.zip")
    p.add_argument("--seeds", type=int_list_arg, default=[0, 1, 2])
    p.add_argument("--test-drawers", type=int_list_arg, default=[16, 17, 18, 19, 20])
    p.add_argument("--val-drawers", type=int_list_arg, default=[14, 15],
                   help="training drawers held out to select (T, alpha)")
    p.add_argument("--val-seeds", type=int_list_arg, default=None,
                   help="seeds of the validation sweep (default --seeds)")
    p.add_argument("--teacher", default="resnet12")
    p.add_argument("--teacher-kwargs", default='{"widths": [16, 32, 64, 128]}')
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--student", default="conv4")
    p.add_argument("--student-kwargs", default='{"hidden": 16}')
    p.add_argument("--epochs", type=int, default=15, help="epochs of every student")
    p.add_argument("--sweep-temperatures", type=_floats, default=[1.0, 4.0, 8.0])
    p.add_argument("--sweep-alphas", type=_floats, default=[0.1, 0.5])
    p.add_argument("--temperature", type=float, default=4.0, help="the setting reported as 'distilled' in the JSON")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--ban-temperature", type=float, default=4.0)
    p.add_argument("--ban-alpha", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--shift", type=int, default=2, help="random translation (pixels) of training images")
    p.add_argument("--reuse-results", default=None, help="an earlier distill_omniglot.json (see the module docstring)")
    p.add_argument("--out", default="runs/distill_omniglot")
    args = p.parse_args()
    if args.val_seeds is None:
        args.val_seeds = list(args.seeds)
    root = Path(args.root)
    if not all((root / f"images_{s}.zip").is_file() or (root / f"images_{s}").is_dir() for s in SUBSETS):
        print(f"skipped: Omniglot small background subsets not found in {root} "
              "(expected images_background_small1.zip and images_background_small2.zip; see ../shared/data)")
        return 0
    torch.set_num_threads(1)
    command = "python benchmarks/distill_omniglot.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    previous = None
    if args.reuse_results:
        previous = json.loads(Path(args.reuse_results).read_text())
        mismatched = [k for k in REUSE_KEYS if previous["options"].get(k) != vars(args)[k]]
        if mismatched:
            print(f"not reusing {args.reuse_results}: its options differ in {', '.join(mismatched)}")
            previous = None
    fingerprint = hashlib.sha256(json.dumps({k: vars(args)[k] for k in FINGERPRINT_KEYS}, sort_keys=True)
                                 .encode()).hexdigest()[:12]
    out = Path(args.out)
    store = Store(out / "cache" / fingerprint)

    data = load_omniglot(root, subsets=SUBSETS)
    masks = drawer_split(data, test_drawers=args.test_drawers, val_drawers=args.val_drawers)
    train, test = data.select(~masks["test"]), data.select(masks["test"])
    train_val, val = data.select(masks["train"]), data.select(masks["val"])
    print(f"{data.num_classes} characters; train: {len(train)} drawings, test: {len(test)} "
          f"(drawers {args.test_drawers}); validation: {len(train_val)} / {len(val)} (drawers {args.val_drawers})")
    start, cpu0 = time.perf_counter(), time.process_time()
    print("validation sweep:")
    val_runs = [{"seed": s, **validation_sweep(s, train_val, val, args, store)} for s in args.val_seeds]
    selected = select_setting(val_runs, args)
    print(f"selected on validation: {setting_key(*selected)}")
    runs = [run_seed(seed, train, test, args, store, selected, previous) for seed in args.seeds]
    md = markdown(runs, val_runs, selected, args)
    cpu = time.process_time() - cpu0
    print(f"\n`{command}`\n\n{md}\n\n{len(runs)} seeds, {cpu:.0f} CPU s in this run (cached results not counted), "
          f"{time.perf_counter() - start:.0f} s wall, 1 thread")
    plot(runs, args, selected, out / "distill_omniglot.png")
    (out / "distill_omniglot.json").write_text(json.dumps(
        {"command": command, "options": vars(args), "markdown": md, "cpu_seconds_this_run": cpu,
         "selected": setting_key(*selected), "validation": val_runs, "runs": runs, "cache": str(store.folder)},
        indent=2) + "\n")
    print(f"wrote {out / 'distill_omniglot.png'} and {out / 'distill_omniglot.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
