"""Bad-input sweep: every CLI subcommand and public constructor, fed wrong types, impossible sizes, empty
datasets, NaN inputs, mismatched task names and missing or corrupt files, must give a clear error:
exit code 2 with a one-line message on the CLI (never a hang or a traceback), a ``ConfigError`` from
the library, and never delete or overwrite an existing output.

The CLI cases are one table, ``CLI_CASES``: ``(argv, expected substring of the error)``, with
placeholders ``{name}`` filled from the fixture files below. Add rows there for new subcommands."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch

from mtl.cli import main
from mtl.errors import ConfigError
from mtl.utils import save_checkpoint

FS = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3", "--validation-tasks", "2",
      "--test-tasks", "2", "--meta-batch", "2", "--budget-iterations", "1", "--no-progress", "--threads", "1"]
MT = ["--dataset", "synthetic", "--train-samples", "64", "--batch-size", "16", "--epochs", "1", "--no-progress",
      "--threads", "1"]
ST = ["--glyph-classes", "4", "--backbone", "mlp", "--backbone-kwargs", '{"hidden": [8]}', "--rounds", "1",
      "--epochs", "1", "--no-progress", "--threads", "1"]
TRAIN = ["fewshot", "train", *FS]
EVAL = ["fewshot", "evaluate", "--test-tasks", "2", "--no-progress"]
PREDICT = ["fewshot", "predict"]
BENCH = ["fewshot", "benchmark", *FS]
MULTI = ["multitask", *MT]
SELF = ["selftrain", *ST]

CLI_CASES: list[tuple[list[str], str]] = [
    # the top level
    ([], "required"),
    (["no-such-command"], "invalid choice"),
    (["--import", "no_such_module_for_mtlmeta", "backbones"], "--import 'no_such_module_for_mtlmeta' failed"),
    # backbones, datasets
    (["backbones", "zzz*"], "no backbone matches"),
    (["backbones", "--bogus"], "unrecognized arguments"),
    (["datasets", "extra"], "unrecognized arguments"),
    # fewshot train: wrong types and impossible sizes
    ([*TRAIN, "--ways", "0"], "expected a positive integer"),
    ([*TRAIN, "--ways", "five"], "expected a positive integer"),
    ([*TRAIN, "--ways", "50"], "ways=50"),
    ([*TRAIN, "--shots", "15", "--queries", "10"], "shots + queries"),
    ([*TRAIN, "--meta-lr", "nan"], "finite number > 0"),
    ([*TRAIN, "--meta-lr", "inf"], "finite number > 0"),
    ([*TRAIN, "--inner-lr", "-1"], "finite number > 0"),
    ([*TRAIN, "--glyph-classes", "1,2"], "three positive integers"),
    ([*TRAIN, "--glyph-classes", "2,2,2"], "ways=5"),
    ([*TRAIN, "--backbone", "conv5"], "did you mean conv4"),
    ([*TRAIN, "--backbone-kwargs", "[1]"], "expected a JSON object"),
    ([*TRAIN, "--backbone-kwargs", '{"no_such_option": 1}'], "does not accept"),
    ([*TRAIN, "--dataset", "omniglot"], "needs --root"),
    ([*TRAIN, "--dataset", "omniglot", "--root", "{missing}"], "no Omniglot found"),
    ([*TRAIN, "--dataset", "omniglot", "--root", "{empty_dir}"], "no Omniglot found"),
    ([*TRAIN, "--dataset", "sinusoid", "--algo", "protonet"], "cannot run on the regression dataset"),
    ([*TRAIN, "--algo", "maml", "--train-ways", "7"], "only protonet"),
    ([*TRAIN, "--algo", "maml", "--inner-lr", "1e30"], "meta-loss became"),  # NaN from an exploding inner loop
    ([*TRAIN, "--seed", "-1"], "seed must be a non-negative integer"),
    ([*TRAIN, "--seed", "x"], "invalid int value"),
    ([*TRAIN, "--device", "tpu"], "invalid choice"),
    ([*TRAIN, "--budget-seconds", "0"], "finite number > 0"),
    ([*TRAIN, "--algo", "nope"], "invalid choice"),
    # fewshot train: outputs and checkpoints
    ([*TRAIN, "--resume"], "--resume needs --out"),
    ([*TRAIN, "--out", "{run}"], "already holds results"),
    ([*TRAIN, "--out", "{file}"], "is not a folder"),
    ([*TRAIN, "--json", "{json}"], "already exists"),
    ([*TRAIN, "--json", "{empty_dir}"], "is a folder"),
    ([*TRAIN, "--out", "{fresh}", "--resume"], "has no last.pt"),
    ([*TRAIN, "--out", "{corrupt_run}", "--resume"], "truncated or corrupted"),
    ([*TRAIN, "--out", "{pickle_run}", "--resume"], "refused"),
    # fewshot evaluate / predict / benchmark
    ([*EVAL, "--checkpoint", "{missing}"], "does not exist"),
    ([*EVAL, "--checkpoint", "{corrupt}"], "truncated or corrupted"),
    ([*EVAL, "--checkpoint", "{textfile}"], "not a checkpoint file"),
    ([*EVAL, "--checkpoint", "{pickle}"], "refused"),
    ([*EVAL, "--checkpoint", "{empty_dir}"], "is a folder"),
    ([*EVAL, "--checkpoint", "{foreign}"], "was not written by 'mtlmeta fewshot train'"),
    ([*EVAL, "--checkpoint", "{good}", "--ways", "3"], "cannot be tested 3-way"),
    ([*EVAL, "--checkpoint", "{good}", "--shots", "30"], "shots + queries"),
    ([*EVAL, "--checkpoint", "{good}", "--json", "{json}"], "already exists"),
    ([*EVAL], "--checkpoint"),
    ([*PREDICT, "--checkpoint", "{good}", "--support", "{missing}", "--query", "{empty_dir}"], "is not a folder"),
    ([*PREDICT, "--checkpoint", "{good}", "--support", "{empty_dir}", "--query", "{empty_dir}"],
     "no class sub-folders"),
    ([*PREDICT, "--checkpoint", "{good}", "--support", "{support2}", "--query", "{queries}"], "meta-trained 5-way"),
    ([*PREDICT, "--checkpoint", "{corrupt}", "--support", "{support2}", "--query", "{queries}"],
     "truncated or corrupted"),
    ([*PREDICT, "--checkpoint", "{good}", "--support", "{support2}"], "--query"),
    ([*BENCH, "--algos", "maml,nope", "--out", "{fresh}"], "unknown algorithm 'nope'"),
    ([*BENCH, "--algos", ",", "--out", "{fresh}"], "--algos"),
    ([*BENCH, "--out", "{run}"], "already holds results"),
    ([*BENCH, "--json", "{json}", "--out", "{fresh}"], "already exists"),
    # multitask
    ([*MULTI, "--dataset", "nope"], "invalid choice"),
    ([*MULTI, "--correlation", "2"], "correlation"),
    ([*MULTI, "--correlation", "nan"], "finite number"),
    ([*MULTI, "--label-fraction", "0"], "--label-fraction must be in (0, 1]"),
    ([*MULTI, "--label-fraction", "nan"], "finite number"),
    ([*MULTI, "--weighting", "fixed"], "needs --task-weights"),
    ([*MULTI, "--weighting", "fixed", "--task-weights", '{"nope": 1, "y2": 1}'], "nope"),
    ([*MULTI, "--weighting", "fixed", "--task-weights", '{"y1": "heavy", "y2": 1}'], "y1"),
    ([*MULTI, "--task-weights", '{"y1": 1}'], "applies to --weighting fixed only"),
    ([*MULTI, "--experts", "3"], "applies to --arch mmoe only"),
    ([*MULTI, "--arch", "soft", "--lambda", "-1"], "lambda"),
    ([*MULTI, "--train-samples", "0"], "expected a positive integer"),
    ([*MULTI, "--lr", "0"], "finite number > 0"),
    ([*MULTI, "--weight-decay", "-1"], "weight_decay"),
    ([*MULTI, "--batch-size", "-4"], "expected a positive integer"),
    ([*MULTI, "--baseline-json", "{missing}"], "cannot be read"),
    ([*MULTI, "--baseline-json", "{textfile}"], "cannot be read"),
    ([*MULTI, "--baseline-json", "{json}"], "is not the JSON"),
    ([*MULTI, "--dataset", "omniglot"], "--train-samples applies to synthetic"),
    (["multitask", "--dataset", "omniglot", "--no-progress"], "root"),
    ([*MULTI, "--resume"], "--resume needs --out"),
    ([*MULTI, "--out", "{run}"], "already holds results"),
    ([*MULTI, "--json", "{json}"], "already exists"),
    ([*MULTI, "--out", "{fresh}", "--resume"], "no last.pt"),
    ([*MULTI, "--out", "{corrupt_run}", "--resume"], "truncated or corrupted"),
    ([*MULTI, "--out", "{fewshot_run}", "--resume"], "not a multi-task training checkpoint"),
    # selftrain
    ([*SELF, "--threshold", "1.5"], "(0, 1]"),
    ([*SELF, "--threshold", "nan"], "--threshold: expected a finite number"),
    ([*SELF, "--threshold", "1.5"], "(0, 1]"),
    ([*SELF, "--topk", "0"], "--topk must be an integer >= 1"),
    ([*SELF, "--ema-decay", "1"], "ema_decay must be in (0, 1)"),
    ([*SELF, "--ema-decay", "nan"], "--ema-decay: expected a finite number"),
    ([*SELF, "--alpha", "nan", "--method", "online"], "--alpha: expected a finite number"),
    ([*SELF, "--labelled-per-class", "25"], "glyphs have 20 drawings"),
    ([*SELF, "--glyph-classes", "0"], "expected a positive integer"),
    ([*SELF, "--dataset", "omniglot"], "needs --root"),
    ([*SELF, "--dataset", "omniglot", "--root", "{empty_dir}"], "{empty_dir}"),
    ([*SELF, "--pool", "sheets"], "needs --sheets-root"),
    ([*SELF, "--pool", "sheets", "--sheets-root", "{empty_dir}"], "{empty_dir}"),
    ([*SELF, "--method", "online", "--ramp", "1,2,3"], "--ramp takes two epochs"),
    ([*SELF, "--method", "online", "--ramp", "5,1"], "ramp_end"),
    ([*SELF, "--shift", "-1"], "shift"),
    ([*SELF, "--backbone", "nope"], "nope"),
    ([*SELF, "--resume"], "--resume needs --out"),
    ([*SELF, "--out", "{run}"], "already holds results"),
    ([*SELF, "--json", "{json}"], "already exists"),
    ([*SELF, "--out", "{fresh}", "--resume"], "no last.pt"),
    ([*SELF, "--out", "{corrupt_run}", "--resume"], "truncated or corrupted"),
    ([*SELF, "--out", "{fewshot_run}", "--resume"], "not a round-based self-training checkpoint"),
    # subcommands of other packages (skipped where the subcommand is not installed)
    (["transfer", "nope"], "invalid choice"),
    (["transfer", "inspect", "{corrupt}"], "truncated or corrupted"),
    (["transfer", "inspect", "{missing}"], "does not exist"),
    (["transfer", "inspect", "{pickle}"], "refused"),
    (["distill", "--temperature", "0", "--no-progress"], "temperature"),
    (["distill", "--json", "{json}", "--no-progress"], "already exists"),
    (["distill", "--dataset", "omniglot", "--no-progress"], "needs --root"),
    (["distill", "--teacher-checkpoint", "{textfile}", "--epochs", "1", "--no-progress"], "not a checkpoint file"),
    (["affinity", "--json", "{json}", "--no-progress"], "already exists"),
    (["affinity", "--correlations", "[[1,2]]", "--no-progress"], "square matrix"),
    (["affinity", "--dataset", "omniglot", "--no-progress"], "needs --root"),
]
OPTIONAL_COMMANDS = ("transfer", "distill", "affinity", "adapt")


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Existing outputs that must survive every case, and broken inputs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("sweep")
    good_run = root / "good_run"
    assert main(["fewshot", "train", "--algo", "maml", *FS, "--out", str(good_run)]) == 0
    paths = {"missing": root / "does_not_exist", "empty_dir": root / "empty", "fresh": root / "fresh",
             "file": root / "a_file.txt", "json": root / "existing.json", "run": root / "existing_run",
             "textfile": root / "notes.txt", "corrupt": root / "corrupt.pt", "pickle": root / "pickle.pt",
             "foreign": root / "foreign.pt", "good": good_run / "best.pt", "corrupt_run": root / "corrupt_run",
             "pickle_run": root / "pickle_run", "fewshot_run": root / "fewshot_run", "support2": root / "support",
             "queries": root / "queries"}
    paths["empty_dir"].mkdir()
    paths["file"].write_text("keep me\n")
    paths["json"].write_text('{"keep": true}\n')
    paths["run"].mkdir()
    (paths["run"] / "metrics.csv").write_text("iteration,loss\n1,0.5\n")
    paths["textfile"].write_text("not a checkpoint\n")
    raw = (good_run / "last.pt").read_bytes()
    paths["corrupt"].write_bytes(raw[: len(raw) // 2])
    torch.save({"x": _Evil()}, paths["pickle"])
    save_checkpoint(paths["foreign"], {"format": "something-else", "weights": torch.zeros(2)})
    for name, payload in (("corrupt_run", raw[:-7]), ("fewshot_run", raw)):
        paths[name].mkdir()
        (paths[name] / "last.pt").write_bytes(payload)
    paths["pickle_run"].mkdir()
    torch.save({"x": _Evil()}, paths["pickle_run"] / "last.pt")
    for cls in ("a", "b"):
        (paths["support2"] / cls).mkdir(parents=True)
        Image.new("L", (28, 28), 255).save(paths["support2"] / cls / "1.png")
    paths["queries"].mkdir()
    Image.new("L", (28, 28), 0).save(paths["queries"] / "q.png")
    return {k: str(v) for k, v in paths.items()}


def _commands() -> set[str]:
    import argparse

    from mtl.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices) if actions else set()


def _fill(text: str, files: dict[str, str]) -> str:
    for key, value in files.items():
        text = text.replace("{" + key + "}", value)
    return text


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def _ids(case):
    return " ".join(a for a in case[0][:4] if not a.startswith("{"))[:60] or "<none>"


@pytest.mark.parametrize("argv, expected", CLI_CASES, ids=[f"{i}-{_ids(c)}" for i, c in enumerate(CLI_CASES)])
def test_cli_bad_input_is_a_clear_error(files, argv, expected, capsys):
    if argv and argv[0] in OPTIONAL_COMMANDS and argv[0] not in _commands():
        pytest.skip(f"subcommand {argv[0]!r} is not installed")
    argv = [_fill(a, files) for a in argv]
    expected = _fill(expected, files)
    root = Path(files["json"]).parent
    before = _snapshot(root)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse reports its own errors with exit code 2
            code = exc.code
    except _Hang:
        pytest.fail(f"mtlmeta {' '.join(argv)} did not finish within 120 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert expected in err, err
    last = err.strip().splitlines()[-1]
    assert "error" in last and len(err.strip().splitlines()) <= 30
    after = _snapshot(root)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"existing outputs changed or deleted: {changed}"


# ---------------------------------------------------------------------------------------- library


def _glyphs(n_classes=4, per_class=6):
    from mtl.data.glyphs import make_glyphs

    return make_glyphs(n_classes, samples_per_class=per_class, seed=0)


def _empty_images():
    from mtl.data.base import LabelledImages

    return LabelledImages(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), [])


def _mt_problem():
    from mtl.multitask.data import load_problem

    return load_problem("synthetic", num_train=32, seed=0)


def _mt_trainer(**changes):
    from mtl.multitask.architectures import build_model
    from mtl.multitask.trainer import MultiTaskConfig, MultiTaskTrainer

    p = _mt_problem()
    args = {"model": build_model("hard", p.tasks, "mlp", {"in_features": p.input_shape[0], "hidden": [8]}),
            "tasks": p.tasks, "train": p.train, "val": p.val, "config": MultiTaskConfig(epochs=1, progress=False)}
    args.update({k: (v(p) if callable(v) and k != "weighting" else v) for k, v in changes.items()})
    return MultiTaskTrainer(**args)


def _meta_trainer(**changes):
    from meta.fewshot import FewShotConfig, TaskSources, build_algorithm
    from meta.trainer import MetaTrainer, MetaTrainerConfig

    cfg = FewShotConfig(algo="fomaml", glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3)
    tasks = TaskSources(cfg, torch.device("cpu"))
    args = {"algo": build_algorithm(cfg, tasks.image_shape), "train_tasks": tasks.train, "val_tasks": tasks.val,
            "config": MetaTrainerConfig(progress=False)}
    args.update(changes)
    return MetaTrainer(**args)


def _selftrain(**changes):
    from meta.selftrain import SelfTrainConfig, self_train, split_labelled_unlabelled

    labelled, pool = split_labelled_unlabelled(_glyphs(), 2, seed=0)
    args = {"model": "mlp", "labelled": labelled, "unlabelled": pool,
            "config": SelfTrainConfig(rounds=1, epochs=1), "backbone_kwargs": {"in_features": 784, "hidden": [8]},
            "log": None}
    args.update(changes)
    return self_train(**args)


def _lazy(module, name, *args, **kwargs):
    def call():
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return call


NAN = math.nan
LIBRARY_CASES: list[tuple[str, object, str]] = [
    # configs: wrong types, impossible values, NaN
    ("MetaTrainerConfig lr str", _lazy("meta.trainer", "MetaTrainerConfig", meta_lr="fast"), "meta_lr"),
    ("MetaTrainerConfig lr nan", _lazy("meta.trainer", "MetaTrainerConfig", meta_lr=NAN), "meta_lr"),
    ("MetaTrainerConfig every 0", _lazy("meta.trainer", "MetaTrainerConfig", validate_every=0), "validate_every"),
    ("MetaTrainerConfig schedule", _lazy("meta.trainer", "MetaTrainerConfig", schedule="linear"), "schedule"),
    ("MetaTrainerConfig clip", _lazy("meta.trainer", "MetaTrainerConfig", grad_clip=-1.0), "grad_clip"),
    ("MetaTrainerConfig clip str", _lazy("meta.trainer", "MetaTrainerConfig", grad_clip="x"), "grad_clip"),
    ("MetaTrainerConfig decay nan", _lazy("meta.trainer", "MetaTrainerConfig", weight_decay=NAN), "weight_decay"),
    ("MultiTaskConfig epochs", _lazy("mtl.multitask.trainer", "MultiTaskConfig", epochs=0), "epochs"),
    ("MultiTaskConfig batch float", _lazy("mtl.multitask.trainer", "MultiTaskConfig", batch_size=2.5), "batch_size"),
    ("MultiTaskConfig lr nan", _lazy("mtl.multitask.trainer", "MultiTaskConfig", lr=NAN), "lr"),
    ("MultiTaskConfig clip str", _lazy("mtl.multitask.trainer", "MultiTaskConfig", grad_clip="x"), "grad_clip"),
    ("MultiTaskConfig select", _lazy("mtl.multitask.trainer", "MultiTaskConfig", select_by="best"), "select_by"),
    ("MultiTaskConfig decay nan", _lazy("mtl.multitask.trainer", "MultiTaskConfig", weight_decay=NAN),
     "weight_decay"),
    ("FewShotConfig ways", _lazy("meta.fewshot", "FewShotConfig", ways=0), "ways"),
    ("FewShotConfig algo", _lazy("meta.fewshot", "FewShotConfig", algo="magic"), "algo"),
    ("FewShotConfig inner_lr nan", _lazy("meta.fewshot", "FewShotConfig", inner_lr=NAN), "inner_lr"),
    ("SelfTrainConfig threshold", _lazy("meta.selftrain", "SelfTrainConfig", threshold=2.0), "threshold"),
    ("SelfTrainConfig rounds", _lazy("meta.selftrain", "SelfTrainConfig", rounds=0), "rounds"),
    ("SelfTrainConfig lr nan", _lazy("meta.selftrain", "SelfTrainConfig", lr=NAN), "lr"),
    ("OnlineConfig ramp", _lazy("meta.selftrain", "OnlineConfig", ramp_start=5, ramp_end=1), "ramp_end"),
    ("Budget nan", _lazy("mtl.utils", "Budget", seconds=NAN), "seconds"),
    ("Budget iterations", _lazy("mtl.utils", "Budget", iterations=0), "iterations"),
    # data: empty datasets, impossible sizes, NaN images
    ("EpisodeSampler empty", lambda: _lazy("mtl.data.episodes", "EpisodeSampler", _empty_images(), 5, 1, 1)(),
     "no samples"),
    ("EpisodeSampler ways", lambda: _lazy("mtl.data.episodes", "EpisodeSampler", _glyphs(), 9, 1, 1)(), "ways=9"),
    ("EpisodeSampler shots", lambda: _lazy("mtl.data.episodes", "EpisodeSampler", _glyphs(), 2, 5, 5)(),
     "shots + queries"),
    ("make_pool empty", _lazy("meta.selftrain", "make_pool", []), "empty"),
    ("make_pool nan", _lazy("meta.selftrain", "make_pool", torch.full((2, 1, 4, 4), NAN)), "[0, 1]"),
    ("self_train empty labelled", lambda: _selftrain(labelled=_empty_images()), "empty"),
    ("self_train config type", lambda: _selftrain(config={"rounds": 1}), "SelfTrainConfig"),
    ("self_train resume no path", lambda: _selftrain(resume=True), "checkpoint=PATH"),
    # models and registries
    ("create_backbone name", _lazy("mtl.backbones", "create_backbone", "conv5"), "conv5"),
    ("create_backbone kwargs", _lazy("mtl.backbones", "create_backbone", "mlp", wings=2), "does not accept"),
    ("make_weighting name", _lazy("mtl.multitask.weighting", "make_weighting", "magic"), "magic"),
    ("make_weighting fixed empty", _lazy("mtl.multitask.weighting", "make_weighting", "fixed", weights={}),
     "fixed"),
    # trainers: wrong types, empty data, mismatched task names, NaN inputs
    ("MultiTaskTrainer tasks type", lambda: _mt_trainer(tasks="y1"), "tasks"),
    ("MultiTaskTrainer no tasks", lambda: _mt_trainer(tasks=[]), "no tasks"),
    ("MultiTaskTrainer names", lambda: _mt_trainer(tasks=lambda p: p.tasks[:1]), "head"),
    ("MultiTaskTrainer train type", lambda: _mt_trainer(train=[1, 2, 3]), "train"),
    ("MultiTaskTrainer weighting", lambda: _mt_trainer(weighting="magic"), "magic"),
    ("MultiTaskTrainer fixed names", lambda: _mt_trainer(weighting=_lazy(
        "mtl.multitask.weighting", "make_weighting", "fixed", weights={"a": 1.0, "b": 1.0})()), "fixed"),
    ("MultiTaskTrainer config", lambda: _mt_trainer(config={"epochs": 1}), "MultiTaskConfig"),
    ("MultiTaskTrainer NaN inputs", lambda: _nan_multitask().fit(), "became nan"),
    ("MetaTrainer algo", lambda: _meta_trainer(algo="maml"), "outer_loss"),
    ("MetaTrainer tasks", lambda: _meta_trainer(train_tasks=[1, 2]), "train_tasks"),
    ("MetaTrainer config", lambda: _meta_trainer(config={"meta_lr": 1e-3}), "MetaTrainerConfig"),
    ("MetaTrainer budget", lambda: _meta_trainer().fit(10), "Budget"),
    # checkpoints
    ("load_checkpoint folder", lambda: _lazy("mtl.utils", "load_checkpoint", Path(__file__).parent)(), "folder"),
    ("load_checkpoint missing", _lazy("mtl.utils", "load_checkpoint", "/nonexistent/x.pt"), "does not exist"),
    ("save_checkpoint not dict", _lazy("mtl.utils", "save_checkpoint", "/tmp/never-written.pt", [1, 2]), "dict"),
]


def _nan_multitask():
    from mtl.multitask.trainer import MultiTaskConfig

    p = _mt_problem()
    p.train.inputs[:] = NAN
    return _mt_trainer(train=p.train, config=MultiTaskConfig(epochs=1, progress=False))


@pytest.mark.parametrize("name, call, expected", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_bad_input_is_a_config_error(name, call, expected):
    with pytest.raises(ConfigError) as info:
        call()
    assert expected in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
