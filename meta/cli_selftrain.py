"""``mtlmeta selftrain``: self-training with pseudo-labels (Scudder 1965; Yarowsky 1995; Lee 2013).

Examples::

    mtlmeta selftrain --dataset glyphs --labelled-per-class 2 --rounds 3 --topk 3 --json runs/st.json
    mtlmeta selftrain --dataset omniglot --root ../shared/data/omniglot-original --labelled-per-class 5 \\
        --pool rest+sheets --sheets-root ../shared/data/omniglot28 --threshold 0.9 --out runs/st

Per round it prints and records (``--json``, ``--out DIR/metrics.csv``) the test accuracy, the
pseudo-labels added and, where the pool's true classes are known, their precision. Round 0 is
the supervised-only baseline.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from meta.selftrain import (
    LABEL_MODES,
    OnlineConfig,
    SelfTrainConfig,
    UnlabelledPool,
    make_pool,
    pseudo_label_online,
    self_train,
    split_labelled_unlabelled,
)
from mtl.cli import budget_from_args
from mtl.data.base import LabelledImages
from mtl.errors import ConfigError

__all__ = ["register", "run_selftrain"]

POOLS = ("rest", "sheets", "rest+sheets")
RUN_FILES = ("metrics.csv", "curves.png", "model.pt", "last.pt", "last.prev.pt")
TEST_SPLIT_SEED = 12_345  # the glyph test split is the same for every training seed


def load_selftrain_data(args: argparse.Namespace) -> tuple[LabelledImages, UnlabelledPool, LabelledImages, dict]:
    """Labelled set, unlabelled pool and test set for ``mtlmeta selftrain`` (Lee 2013 protocol).

    glyphs: ``--glyph-classes`` classes of 20 drawings, ``--test-per-class`` held out for testing
    (the same for every seed); omniglot: the drawers in ``--test-drawers`` held out. Of the rest,
    ``--labelled-per-class`` per class are labelled (chosen by ``--seed``), the others form the
    pool (``rest``), optionally with the unlabelled 28x28 sprite sheets (``sheets``).
    """
    from mtl.cli import load_image_data
    from mtl.data import drawer_split, load_omniglot_sprites

    uses_sheets = "sheets" in args.pool
    if uses_sheets and not args.sheets_root:
        raise ConfigError(f"--pool {args.pool} needs --sheets-root DIR (the folder with images_background.png)")
    if args.dataset == "glyphs" and args.test_per_class + args.labelled_per_class >= 20:
        raise ConfigError(f"glyphs have 20 drawings per class: --test-per-class {args.test_per_class} plus "
                          f"--labelled-per-class {args.labelled_per_class} must leave at least one for the pool")
    # The sheets were resized with plain bilinear: match them when they are mixed in.
    data, info = load_image_data(args, resample="bilinear" if uses_sheets else "lanczos")
    if args.dataset == "omniglot":
        masks = drawer_split(data, test_drawers=args.test_drawers)
        test, rest = data.select(masks["test"]), data.select(~masks["test"])
        info["test_drawers"] = args.test_drawers
    else:
        test, rest = split_labelled_unlabelled(data, args.test_per_class, seed=TEST_SPLIT_SEED)
        info["test_per_class"] = args.test_per_class
    labelled, remaining = split_labelled_unlabelled(rest, args.labelled_per_class, seed=args.seed)
    sources: list[Any] = []
    if args.pool in ("rest", "rest+sheets"):
        sources.append(remaining)
    if uses_sheets:
        sheets = load_omniglot_sprites(args.sheets_root, args.sheets_subset)
        if args.sheets_limit is not None:
            keep = torch.randperm(len(sheets), generator=torch.Generator().manual_seed(args.seed))[:args.sheets_limit]
            sheets = sheets[torch.sort(keep).values]
        sources.append(sheets)
    pool = make_pool(sources)
    info.update({"labelled": len(labelled), "labelled_per_class": args.labelled_per_class, "pool": len(pool),
                 "pool_source": args.pool, "test": len(test), "classes": labelled.num_classes})
    return labelled, pool, test, info


def _configs(args: argparse.Namespace) -> SelfTrainConfig | OnlineConfig:
    threshold = args.threshold
    if threshold is None and args.topk is None:
        threshold = 0.95 if args.method == "online" else 0.9
    if threshold is not None and not 0 < threshold <= 1:
        raise ConfigError(f"--threshold must be a probability in (0, 1], got {threshold!r}")
    if args.topk is not None and args.topk < 1:
        raise ConfigError(f"--topk must be an integer >= 1 (pseudo-labels per class), got {args.topk!r}")
    common = dict(threshold=threshold, k_per_class=args.topk, labels=args.labels, ema_decay=args.ema_decay,
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, shift=args.shift, seed=args.seed,
                  precision=args.precision, progress=not args.no_progress)
    if args.method == "online":
        ramp = args.ramp or [1, 5]
        if len(ramp) != 2:
            raise ConfigError(f"--ramp takes two epochs START,END, got {','.join(map(str, ramp))}")
        return OnlineConfig(alpha_final=args.alpha, ramp_start=ramp[0], ramp_end=ramp[1],
                            unlabelled_batch_size=args.unlabelled_batch_size, **common)
    if args.steps is not None and args.method == "online":
        raise ConfigError("--steps applies to --method rounds only; online training runs --epochs passes over the pool")
    return SelfTrainConfig(rounds=args.rounds, reinit=args.student == "reinit", pseudo_weight=args.pseudo_weight,
                           steps=args.steps, **common)


def run_selftrain(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mtlmeta selftrain`` from parsed arguments; returns the JSON-ready result."""
    from mtl.utils import (
        CSVLogger,
        atomic_write_json,
        check_new_output,
        plot_curves,
        prepare_out_dir,
        resolve_device,
        save_checkpoint,
        seed_everything,
    )
    from mtl.utils.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise ConfigError("selftrain runs in one process; start it without torchrun (fewshot train and "
                          "multitask run distributed)")
    check_new_output(args.json, args.overwrite, what="--json")
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out DIR (the folder of the run to continue)")
    if args.resume and args.overwrite:
        raise ConfigError("give either --resume (continue the run in --out) or --overwrite (start it anew), not both")
    config = _configs(args)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    out_dir = prepare_out_dir(args.out, resume=args.resume, overwrite=args.overwrite) if args.out else None
    if args.resume and not (out_dir / "last.pt").is_file():  # type: ignore[operator]
        raise ConfigError(f"--resume: no last.pt in {str(out_dir)!r} to continue from")
    if out_dir is not None and args.overwrite:
        for name in RUN_FILES:  # only this command's own files, and only with --overwrite
            (out_dir / name).unlink(missing_ok=True)
    labelled, pool, test, info = load_selftrain_data(args)
    kwargs = dict(args.backbone_kwargs)
    if args.backbone == "mlp":
        kwargs.setdefault("in_features", int(torch.tensor(labelled.image_shape).prod()))
    else:
        kwargs.setdefault("in_channels", labelled.image_shape[0])
        kwargs.setdefault("image_size", labelled.image_shape[1])
    budget = budget_from_args(args)
    run = pseudo_label_online if args.method == "online" else self_train
    result = run(args.backbone, labelled, pool, config, backbone_kwargs=kwargs, test=test, budget=budget,
                 device=device, log=print, checkpoint=out_dir / "last.pt" if out_dir is not None else None,
                 resume=args.resume)
    out = result.to_dict()
    out.update({"command": "selftrain", "data": info, "backbone": args.backbone, "backbone_kwargs": kwargs,
                "seed": args.seed, "device": str(device)})
    rounds = out["rounds"]
    best = max(rounds, key=lambda r: r["accuracy"])
    print(f"{result.stop_reason}. Test accuracy: supervised-only {100 * rounds[0]['accuracy']:.2f}%, "
          f"final {100 * rounds[-1]['accuracy']:.2f}%, best {100 * best['accuracy']:.2f}% (round {best['round']})")
    if out_dir is not None:
        (out_dir / "metrics.csv").unlink(missing_ok=True)  # this run's own log, rewritten whole from its rounds
        log = CSVLogger(out_dir / "metrics.csv", step_key="round")
        for r in rounds:
            log.log({k: ("" if v is None else v) for k, v in r.items()})
        xs = [r["round"] for r in rounds]
        nan = float("nan")
        series = {"test accuracy": [r["accuracy"] for r in rounds],
                  "precision (added)": [nan if r["precision_added"] is None else r["precision_added"] for r in rounds],
                  "precision (all in use)": [nan if r["precision"] is None else r["precision"] for r in rounds]}
        panels = [["test accuracy"]]
        if any(r["precision"] is not None for r in rounds):
            panels.append(["precision (added)", "precision (all in use)"])
        plot_curves(out_dir / "curves.png", xs, series, title=f"self-training ({args.method}) on {info['dataset']}",
                    xlabel="epoch" if args.method == "online" else "round", panels=panels)
        save_checkpoint(out_dir / "model.pt", {
            "state_dict": result.model.state_dict(), "backbone": args.backbone, "backbone_kwargs": kwargs,
            "class_names": list(labelled.class_names), "result": json.loads(json.dumps(out)),
        })
        print(f"wrote {out_dir / 'metrics.csv'}, {out_dir / 'curves.png'}, {out_dir / 'model.pt'}")
    if args.json:
        atomic_write_json(args.json, out)
    return out


def _cmd_selftrain(args: argparse.Namespace) -> int:
    run_selftrain(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``selftrain`` subcommand (pseudo-label self-training, Lee 2013; Yarowsky 1995)."""
    from mtl.cli import (
        add_image_data_args,
        add_precision_arg,
        add_training_args,
        int_list_arg,
        integer_arg,
        json_object_arg,
        number_arg,
        positive_float_arg,
        positive_int_arg,
    )

    p = sub.add_parser("selftrain", help="self-training with pseudo-labels (round-based or online, Lee 2013)",
                       description=__doc__.split("\n")[0])
    g = p.add_argument_group("data")
    add_image_data_args(g, glyph_classes=20)
    g.add_argument("--test-drawers", type=int_list_arg, default=[16, 17, 18, 19, 20], metavar="D,D,...",
                   help="omniglot: drawers held out as the test set (default 16-20)")
    g.add_argument("--test-per-class", type=positive_int_arg, default=5,
                   help="glyphs: drawings per class held out as the test set (default 5)")
    g.add_argument("--labelled-per-class", type=positive_int_arg, default=1,
                   help="labelled drawings per class; the rest are the unlabelled pool (default 1)")
    g.add_argument("--pool", default="rest", choices=POOLS,
                   help="unlabelled pool: the rest of the drawings, the 28x28 sprite sheets, or both")
    g.add_argument("--sheets-root", default=None, help="folder with images_background.png / images_evaluation.png")
    g.add_argument("--sheets-subset", default="background", choices=("background", "evaluation", "all"))
    g.add_argument("--sheets-limit", type=positive_int_arg, default=None,
                   help="use a random subset of this many sheet images (by --seed)")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default="conv4", help="registry name (default conv4)")
    g.add_argument("--backbone-kwargs", type=json_object_arg, default={}, metavar="JSON",
                   help='extra backbone arguments, e.g. \'{"hidden": 32}\'')
    g = p.add_argument_group("self-training")
    g.add_argument("--method", default="rounds", choices=("rounds", "online"),
                   help="rounds: train, pseudo-label, retrain (default); online: Lee 2013 masked loss every step")
    g.add_argument("--rounds", type=positive_int_arg, default=5, help="pseudo-labelling rounds (default 5)")
    g.add_argument("--threshold", type=number_arg, default=None,
                   help="keep predictions with confidence >= P, P in (0, 1] (default 0.9; online 0.95; "
                        "none when only --topk is given)")
    g.add_argument("--topk", type=integer_arg, default=None, metavar="K",
                   help="keep at most K new pseudo-labels per predicted class per round (class-balanced)")
    g.add_argument("--labels", default="hard", choices=LABEL_MODES, help="hard (arg-max) or soft (probabilities)")
    g.add_argument("--student", default="reinit", choices=("reinit", "continue"),
                   help="a fresh student each round (default) or keep training the same one")
    g.add_argument("--ema-decay", type=number_arg, default=None,
                   help="pseudo-label with a mean teacher of this decay (Tarvainen & Valpola 2017), e.g. 0.99")
    g.add_argument("--pseudo-weight", type=positive_float_arg, default=1.0,
                   help="loss weight of pseudo-labelled examples (default 1)")
    g.add_argument("--alpha", type=number_arg, default=3.0, help="online: final unlabelled-loss weight (Lee: 3)")
    g.add_argument("--ramp", type=int_list_arg, default=None, metavar="START,END",
                   help="online: epochs of the linear alpha ramp (default 1,5)")
    g.add_argument("--unlabelled-batch-size", type=positive_int_arg, default=128, help="online (default 128)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int_arg, default=10, help="epochs per round (online: in total)")
    g.add_argument("--steps", type=positive_int_arg, default=None,
                   help="rounds: train every round for exactly this many steps (equal compute per round)")
    g.add_argument("--batch-size", type=positive_int_arg, default=64)
    g.add_argument("--lr", type=positive_float_arg, default=1e-3, help="Adam learning rate")
    g.add_argument("--shift", type=integer_arg, default=0,
                   help="random translation of training images by up to this many pixels (default 0)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (written after every round / epoch)")
    add_precision_arg(g, "the students' training forward passes (pseudo-labelling stays float32)")
    add_training_args(p)
    p.set_defaults(func=_cmd_selftrain)
