"""``mtlmeta distill``: knowledge distillation (Hinton et al. 2015) and Born-Again Networks (Furlanello et al. 2018).

Examples::

    mtlmeta distill --dataset glyphs --teacher conv4 --teacher-kwargs '{"hidden": 32}' \\
        --student conv4 --student-kwargs '{"hidden": 8}' --temperature 4 --alpha 0.5 --json runs/kd.json
    mtlmeta distill --mode ban --dataset omniglot --root ../shared/data/omniglot-original \\
        --teacher conv4 --teacher-kwargs '{"hidden": 16}' --generations 3 --out runs/ban

``--mode kd`` (default) trains the teacher (``--teachers N`` of them: an ensemble; or loads
``--teacher-checkpoint`` files), a student from scratch (the baseline; ``--no-baseline`` skips
it) and the same student distilled, all on one schedule, and reports their test accuracy and
agreement with the teacher. ``--mode ban`` trains generation 0 with the teacher's architecture
(or loads it), then ``--generations`` students of that architecture, each taught by the
previous one, and reports every generation and their ensemble.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from mtl.cli import budget_from_args
from mtl.data.base import LabelledImages
from mtl.distill.born_again import born_again
from mtl.distill.losses import check_alpha, check_temperature
from mtl.distill.teachers import EnsembleTeacher
from mtl.distill.trainer import DistillConfig, distill, train_from_scratch
from mtl.errors import ConfigError

__all__ = ["load_distill_data", "register", "run_distill"]

MODES = ("kd", "ban")
RUN_FILES = ("metrics.csv", "results.png", "student.pt", "scratch.pt")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def load_distill_data(args: argparse.Namespace) -> tuple[LabelledImages, LabelledImages, dict[str, Any]]:
    """Training and test sets for ``mtlmeta distill``: every class in both, new drawings in test.

    glyphs: ``--glyph-classes`` classes of 20 drawings, the last ``--test-per-class`` of each
    held out; omniglot: the drawers in ``--test-drawers`` held out (:func:`~mtl.data.drawer_split`).
    """
    from mtl.cli import load_image_data
    from mtl.data import drawer_split

    if args.dataset == "glyphs" and args.test_per_class >= 20:
        raise ConfigError(f"glyphs have 20 drawings per class: --test-per-class must be below 20, "
                          f"got {args.test_per_class}")
    data, info = load_image_data(args)
    if args.dataset == "omniglot":
        masks = drawer_split(data, test_drawers=args.test_drawers)
        info["test_drawers"] = args.test_drawers
    else:
        position = torch.empty_like(data.targets)
        for cls in range(data.num_classes):
            members = torch.nonzero(data.targets == cls).flatten()
            position[members] = torch.arange(len(members))
        masks = {"test": position >= 20 - args.test_per_class}
        info["test_per_class"] = args.test_per_class
    train, test = data.select(~masks["test"]), data.select(masks["test"])
    info.update({"train": len(train), "test": len(test), "classes": data.num_classes})
    return train, test, info


def _kwargs(name: str, given: dict[str, Any], data: LabelledImages, option: str) -> dict[str, Any]:
    kwargs = dict(given)
    if "num_classes" in kwargs and kwargs["num_classes"] != data.num_classes:
        raise ConfigError(f"{option} sets num_classes={kwargs['num_classes']!r} but the dataset has "
                          f"{data.num_classes} classes; leave num_classes out")
    if name == "mlp":
        kwargs.setdefault("in_features", int(torch.tensor(data.image_shape).prod()))
    else:
        kwargs.setdefault("in_channels", data.image_shape[0])
        kwargs.setdefault("image_size", data.image_shape[1])
    return kwargs


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _load_classifier(path: str, data: LabelledImages, device: torch.device) -> tuple[nn.Module, str, dict[str, Any]]:
    """A classifier saved by ``mtlmeta distill --out`` (or any checkpoint with backbone, kwargs, state_dict)."""
    from mtl.backbones import create_backbone
    from mtl.utils import load_checkpoint

    state = load_checkpoint(path)
    for key in ("state_dict", "backbone", "backbone_kwargs"):
        if key not in state:
            raise ConfigError(f"--teacher-checkpoint {path!r} has no {key!r}; give a model.pt written by "
                              "mtlmeta distill --out (teacher_*.pt, student.pt, generation_*.pt)")
    names = state.get("class_names")
    if names is not None and list(names) != list(data.class_names):
        raise ConfigError(f"--teacher-checkpoint {path!r} predicts {len(names)} classes "
                          f"({', '.join(map(str, names[:3]))}, ...) that are not this dataset's "
                          f"{data.num_classes} classes")
    kwargs = dict(state["backbone_kwargs"])
    model = create_backbone(state["backbone"], num_classes=kwargs.pop("num_classes", data.num_classes), **kwargs)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"--teacher-checkpoint {path!r} does not fit {state['backbone']} "
                          f"{state['backbone_kwargs']}: {str(exc).splitlines()[0]}") from None
    return model.to(device), state["backbone"], kwargs


def _save(path: Any, model: nn.Module, name: str, kwargs: dict[str, Any], data: LabelledImages,
          result: dict[str, Any]) -> None:
    from mtl.utils import save_checkpoint

    save_checkpoint(path, {"state_dict": model.state_dict(), "backbone": name, "backbone_kwargs": kwargs,
                           "class_names": list(data.class_names), "result": json.loads(json.dumps(result))})


def _config(args: argparse.Namespace, epochs: int, alpha: float) -> DistillConfig:
    return DistillConfig(temperature=args.temperature, alpha=alpha, epochs=epochs, batch_size=args.batch_size,
                         lr=args.lr, shift=args.shift, cache_teacher=not args.no_cache, seed=args.seed,
                         precision=args.precision, progress=not args.no_progress)


def _teachers(args: argparse.Namespace, train: LabelledImages, test: LabelledImages, cfg: DistillConfig,
              budget: Any, device: torch.device, out_dir: Any) -> tuple[list[nn.Module], dict[str, Any]]:
    members: list[nn.Module] = []
    rows: list[dict[str, Any]] = []
    if args.teacher_checkpoint:
        for path in args.teacher_checkpoint:
            model, name, kwargs = _load_classifier(path, train, device)
            from mtl.training import evaluate_classifier

            members.append(model)
            rows.append({"checkpoint": path, "backbone": name, "backbone_kwargs": kwargs,
                         "accuracy": evaluate_classifier(model, test, device=device)["accuracy"]})
    else:
        name = args.teacher
        kwargs = _kwargs(name, args.teacher_kwargs, train, "--teacher-kwargs")
        for i in range(args.teachers):
            tcfg = replace(cfg, alpha=1.0, epochs=args.teacher_epochs or cfg.epochs, seed=args.seed * 1000 + 1 + i)
            res = train_from_scratch(name, train, tcfg, backbone_kwargs=kwargs, test=test, budget=budget,
                                     device=device)
            members.append(res.model)
            rows.append({"backbone": name, "backbone_kwargs": kwargs, "seed": tcfg.seed, "accuracy": res.accuracy,
                         "steps": res.history.steps, "seconds": res.seconds})
            print(f"teacher {i + 1}/{args.teachers} ({name}): test accuracy {100 * res.accuracy:.2f}%")
            if out_dir is not None:
                _save(out_dir / f"teacher_{i + 1}.pt", res.model, name, kwargs, train, rows[-1])
    info = {"members": rows, "parameters": sum(_params(m) for m in members)}
    return members, info


def _run_kd(args: argparse.Namespace, train: LabelledImages, test: LabelledImages, budget: Any,
            device: torch.device, out_dir: Any) -> dict[str, Any]:
    cfg = _config(args, args.epochs, args.alpha)
    student_name = args.student or "conv4"
    skw = _kwargs(student_name, args.student_kwargs, train, "--student-kwargs")
    members, teacher_info = _teachers(args, train, test, cfg, budget, device, out_dir)
    teacher: nn.Module = members[0] if len(members) == 1 else EnsembleTeacher(members, combine=args.combine)
    if len(members) > 1:
        from mtl.training import evaluate_classifier

        teacher_info["ensemble_accuracy"] = evaluate_classifier(teacher, test, device=device)["accuracy"]
        teacher_info["combine"] = args.combine
    results: dict[str, Any] = {"teacher": teacher_info}
    if not args.no_baseline:
        scratch = train_from_scratch(student_name, train, cfg, backbone_kwargs=skw, test=test, reference=teacher,
                                     budget=budget, device=device)
        results["scratch"] = scratch.to_dict()
        print(f"student from scratch ({student_name}): test accuracy {100 * scratch.accuracy:.2f}%, "
              f"agreement with the teacher {100 * scratch.agreement:.2f}%")
        if out_dir is not None:
            _save(out_dir / "scratch.pt", scratch.model, student_name, skw, train, results["scratch"])
    res = distill(teacher, student_name, train, cfg, backbone_kwargs=skw, test=test, budget=budget, device=device)
    results["distilled"] = res.to_dict()
    results["teacher"]["accuracy"] = res.teacher_accuracy
    results["student"] = {"backbone": student_name, "backbone_kwargs": skw, "parameters": _params(res.model)}
    print(f"distilled student ({student_name}, T={args.temperature:g}, alpha={args.alpha:g}): test accuracy "
          f"{100 * res.accuracy:.2f}%, agreement with the teacher {100 * res.agreement:.2f}% "
          f"(teacher {100 * res.teacher_accuracy:.2f}%)")
    if out_dir is not None:
        _save(out_dir / "student.pt", res.model, student_name, skw, train, results["distilled"])
    return results


def _run_ban(args: argparse.Namespace, train: LabelledImages, test: LabelledImages, budget: Any,
             device: torch.device, out_dir: Any) -> dict[str, Any]:
    if args.student is not None or args.student_kwargs:
        raise ConfigError("--mode ban trains every generation with the teacher's architecture; "
                          "use --teacher/--teacher-kwargs, not --student/--student-kwargs")
    if args.teachers != 1:
        raise ConfigError(f"--mode ban has one generation 0; --teachers must be 1, got {args.teachers}")
    cfg = _config(args, args.epochs, args.alpha)
    gen0, name, kwargs = None, args.teacher, _kwargs(args.teacher, args.teacher_kwargs, train, "--teacher-kwargs")
    if args.teacher_checkpoint:
        if len(args.teacher_checkpoint) != 1:
            raise ConfigError(f"--mode ban takes one --teacher-checkpoint (generation 0), "
                              f"got {len(args.teacher_checkpoint)}")
        gen0, name, kwargs = _load_classifier(args.teacher_checkpoint[0], train, device)
    tcfg = replace(cfg, alpha=1.0, epochs=args.teacher_epochs or cfg.epochs)
    res = born_again(name, train, args.generations, cfg, teacher_config=tcfg, teacher=gen0, backbone_kwargs=kwargs,
                     test=test, budget=budget, device=device, log=print)
    if out_dir is not None:
        for k, model in enumerate(res.models):
            _save(out_dir / f"generation_{k}.pt", model, name, kwargs, train, res.to_dict()["generations"][k])
    out = res.to_dict()
    out["architecture"] = {"backbone": name, "backbone_kwargs": kwargs, "parameters": _params(res.models[0])}
    return out


def run_distill(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta distill`` from parsed arguments; returns the JSON-ready result."""
    from mtl.utils import (
        CSVLogger,
        atomic_write_json,
        check_new_output,
        plot_curves,
        prepare_out_dir,
        resolve_device,
        seed_everything,
    )

    check_temperature(args.temperature)
    check_alpha(args.alpha)
    check_new_output(args.json, args.overwrite, what="--json")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    out_dir = prepare_out_dir(args.out, overwrite=args.overwrite) if args.out else None
    if out_dir is not None and args.overwrite:
        own = [*(out_dir / n for n in RUN_FILES), *out_dir.glob("teacher_*.pt"), *out_dir.glob("generation_*.pt")]
        for path in own:
            path.unlink(missing_ok=True)  # only this command's own files, and only with --overwrite
    train, test, info = load_distill_data(args)
    budget = budget_from_args(args)
    run = _run_ban if args.mode == "ban" else _run_kd
    out = run(args, train, test, budget, device, out_dir)
    out.update({"command": "distill", "mode": args.mode, "data": info, "temperature": args.temperature,
                "alpha": args.alpha, "seed": args.seed, "device": str(device)})
    if out_dir is not None:
        log = CSVLogger(out_dir / "metrics.csv", step_key="model")
        if args.mode == "ban":
            rows = [{"model": f"generation {g['generation']}", "accuracy": g["accuracy"],
                     "ensemble_accuracy": "" if g["ensemble_accuracy"] is None else g["ensemble_accuracy"],
                     "agreement": "" if g["agreement"] is None else g["agreement"]} for g in out["generations"]]
            xs = [g["generation"] for g in out["generations"]]
            series = {"generation": [g["accuracy"] for g in out["generations"]],
                      "ensemble 1..k": [float("nan") if g["ensemble_accuracy"] is None else g["ensemble_accuracy"]
                                        for g in out["generations"]]}
            plot_curves(out_dir / "results.png", xs, series, title=f"born-again networks on {info['dataset']}",
                        xlabel="generation", panels=[list(series)])
        else:
            rows = [{"model": "teacher", "accuracy": out["teacher"]["accuracy"], "agreement": 1.0}]
            for key in ("scratch", "distilled"):
                if key in out:
                    rows.append({"model": key, "accuracy": out[key]["accuracy"], "agreement": out[key]["agreement"]})
        for row in rows:
            log.log(row)
        print(f"wrote {out_dir}")
    if args.json:
        atomic_write_json(args.json, out)
    return out


def _cmd_distill(args: argparse.Namespace) -> int:
    run_distill(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``distill`` subcommand (Hinton et al. 2015; Born-Again Networks, Furlanello et al. 2018)."""
    from mtl.cli import (
        add_image_data_args,
        add_precision_arg,
        add_training_args,
        int_list_arg,
        json_object_arg,
        number_arg,
        positive_int_arg,
    )

    p = sub.add_parser("distill", help="knowledge distillation and born-again networks (Hinton et al. 2015)",
                       description=__doc__.split("\n")[0])
    p.add_argument("--mode", default="kd", choices=MODES,
                   help="kd: teacher -> student vs a student from scratch (default); ban: born-again generations")
    g = p.add_argument_group("data")
    add_image_data_args(g, glyph_classes=50)
    g.add_argument("--test-drawers", type=int_list_arg, default=[16, 17, 18, 19, 20], metavar="D,D,...",
                   help="omniglot: drawers held out as the test set (default 16-20)")
    g.add_argument("--test-per-class", type=positive_int_arg, default=5,
                   help="glyphs: drawings per class held out as the test set (default 5 of 20)")
    g = p.add_argument_group("models")
    g.add_argument("--teacher", default="conv4", help="teacher (ban: every generation's) backbone (default conv4)")
    g.add_argument("--teacher-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='teacher backbone arguments, e.g. \'{"hidden": 64}\'')
    g.add_argument("--teachers", type=positive_int_arg, default=1,
                   help="kd: train this many teachers (seeds differ) and distil their ensemble (default 1)")
    g.add_argument("--combine", default="logits", choices=("logits", "probs"),
                   help="ensemble of teachers: mean logits (default) or mean probabilities")
    g.add_argument("--teacher-checkpoint", action="append", default=None, metavar="PATH",
                   help="use a trained teacher (teacher_*.pt, student.pt, generation_*.pt of an earlier --out) "
                        "instead of training one; repeat for an ensemble")
    g.add_argument("--student", default=None, help="kd: student backbone (default conv4)")
    g.add_argument("--student-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='student backbone arguments, e.g. \'{"hidden": 8}\'')
    g = p.add_argument_group("distillation")
    g.add_argument("--temperature", "-T", type=number_arg, default=4.0, help="softmax temperature T > 0 (default 4)")
    g.add_argument("--alpha", type=number_arg, default=0.5,
                   help="weight of the hard-label loss in [0, 1]; the soft term weighs (1 - alpha) T^2 (default 0.5)")
    g.add_argument("--generations", type=positive_int_arg, default=3, help="ban: student generations (default 3)")
    g.add_argument("--no-cache", action="store_true",
                   help="run the teacher on every augmented batch instead of caching its logits once")
    g.add_argument("--no-baseline", action="store_true", help="kd: skip the student trained from scratch")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int_arg, default=10, help="epochs of every student (default 10)")
    g.add_argument("--teacher-epochs", type=positive_int_arg, default=None,
                   help="epochs of the teacher / generation 0 (default --epochs)")
    g.add_argument("--batch-size", type=positive_int_arg, default=64)
    g.add_argument("--lr", type=number_arg, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--shift", type=_non_negative_int, default=0,
                   help="random translation of training images by up to this many pixels (default 0: none)")
    add_precision_arg(g, "every student's and teacher's training forward passes")
    add_training_args(p)
    p.set_defaults(func=_cmd_distill)
