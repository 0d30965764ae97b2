"""End-to-end few-shot runs through ``mtlmeta fewshot``: outputs, resume, predict, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from meta.fewshot import FewShotConfig, run_fewshot
from mtl.cli import main
from mtl.data.glyphs import make_glyphs
from mtl.errors import CheckpointError
from mtl.utils import Budget, load_checkpoint

TINY = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
        "--validation-tasks", "4", "--test-tasks", "6", "--no-progress"]


def run(args, capsys=None):
    code = main(["fewshot", *args])
    return code, (capsys.readouterr() if capsys else None)


def test_train_writes_json_checkpoints_and_plot(tmp_path, capsys):
    out, js = tmp_path / "run", tmp_path / "r.json"
    code, cap = run(["train", "--algo", "fomaml", "--budget-iterations", "4", "--validate-every", "2",
                     "--meta-batch", "2", "--out", str(out), "--json", str(js), *TINY], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    for key in ("algorithm", "dataset", "backbone", "ways", "shots", "queries", "meta_iterations",
                "train_seconds", "test_tasks", "accuracy", "ci95", "tasks_per_second", "checkpoint"):
        assert key in res
    assert res["meta_iterations"] == 4 and res["test_tasks"] == 6 and 0 <= res["accuracy"] <= 1
    assert {"best.pt", "last.pt", "metrics.csv", "learning_curve.png"} <= {p.name for p in out.iterdir()}
    assert "accuracy" in cap.out


def _final_params(out):
    return load_checkpoint(out / "last.pt")["algo"]


def test_resume_reaches_the_same_result(tmp_path):
    cfg = FewShotConfig(algo="maml", glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3,
                        meta_batch=2, validation_tasks=4, test_tasks=6, validate_every=3, checkpoint_every=3)
    full = run_fewshot(cfg, Budget(iterations=6), out_dir=tmp_path / "a", progress=False, log=lambda s: None)
    run_fewshot(cfg, Budget(iterations=3), out_dir=tmp_path / "b", progress=False, log=lambda s: None)
    resumed = run_fewshot(cfg, Budget(iterations=6), out_dir=tmp_path / "b", resume=True, progress=False,
                          log=lambda s: None)
    a, b = _final_params(tmp_path / "a"), _final_params(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["accuracy"] == full["accuracy"] and resumed["meta_iterations"] == 6


def test_resume_of_a_run_started_from_init_weights(tmp_path, protonet_checkpoint):
    """A run that began with --init resumes (the starting weights are not loaded again) and ends
    where the uninterrupted run ends."""
    cfg = FewShotConfig(algo="protonet", glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3,
                        validation_tasks=4, test_tasks=6, validate_every=2, checkpoint_every=2,
                        init=str(protonet_checkpoint))
    quiet = {"progress": False, "log": lambda s: None}
    full = run_fewshot(cfg, Budget(iterations=4), out_dir=tmp_path / "a", **quiet)
    run_fewshot(cfg, Budget(iterations=2), out_dir=tmp_path / "b", **quiet)
    resumed = run_fewshot(cfg, Budget(iterations=4), out_dir=tmp_path / "b", resume=True, **quiet)
    a, b = _final_params(tmp_path / "a"), _final_params(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["accuracy"] == full["accuracy"] and resumed["meta_iterations"] == 4


def test_resume_with_other_configuration_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--algo", "fomaml", "--budget-iterations", "2", "--meta-batch", "2",
                "--out", str(out), *TINY])[0] == 0
    before = (out / "last.pt").read_bytes()
    code, cap = run(["train", "--algo", "fomaml", "--budget-iterations", "4", "--meta-batch", "2",
                     "--ways", "3", "--out", str(out), "--resume", *TINY], capsys)
    assert code == 2 and "configuration differs" in cap.err and "ways" in cap.err
    assert (out / "last.pt").read_bytes() == before


def test_non_finite_loss_stops_with_iteration_and_keeps_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code, cap = run(["train", "--algo", "maml", "--inner-lr", "1e30", "--budget-iterations", "5",
                     "--meta-batch", "2", "--out", str(out), *TINY], capsys)
    assert code == 2
    assert "at iteration 1" in cap.err and cap.err.count("\n") == 1


def test_existing_outputs_are_not_overwritten(tmp_path, capsys):
    js = tmp_path / "r.json"
    js.write_text("keep")
    code, cap = run(["train", "--budget-iterations", "1", "--json", str(js), *TINY], capsys)
    assert code == 2 and "already exists" in cap.err and js.read_text() == "keep"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ways", "7"], "ways"),
        (["--shots", "15", "--queries", "10"], "shots"),
        (["--dataset", "omniglot", "--root", "/nonexistent/omniglot"], "root="),
        (["--backbone", "conv5"], "did you mean conv4"),
    ],
)
def test_impossible_requests_are_clear_errors(args, message, capsys):
    code, cap = run(["train", "--budget-iterations", "1", *TINY, *args], capsys)
    assert code == 2, cap.err
    assert message in cap.err and cap.err.count("\n") == 1


@pytest.mark.parametrize("flag, value", [("--inner-lr", "0"), ("--inner-lr", "-1"), ("--ways", "0")])
def test_argument_validation_exit_2(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fewshot", "train", flag, value])
    assert exc.value.code == 2
    assert value in capsys.readouterr().err


def _save_png(path, image, dark_on_light=True):
    array = image.squeeze(0).numpy()
    if dark_on_light:
        array = 1.0 - array
    Image.fromarray((array * 255).astype(np.uint8)).resize((64, 64)).save(path)


@pytest.fixture(scope="module")
def protonet_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("proto") / "run"
    assert main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "3", "--validate-every", "1",
                 "--out", str(out), *TINY]) == 0
    return out / "best.pt"


def test_predict_on_user_folders(tmp_path, protonet_checkpoint, capsys):
    data = make_glyphs(3, samples_per_class=4, seed=5)
    support, query = tmp_path / "support", tmp_path / "query"
    for c, name in enumerate(["alpha", "beta", "gamma"]):
        (support / name).mkdir(parents=True)
        idx = (data.targets == c).nonzero().flatten()
        for j in idx[:2]:
            _save_png(support / name / f"{int(j)}.png", data.images[j])
        query.mkdir(exist_ok=True)
        _save_png(query / f"{name}_q.png", data.images[idx[3]])
    js = tmp_path / "pred.json"
    code, cap = run(["predict", "--checkpoint", str(protonet_checkpoint), "--support", str(support),
                     "--query", str(query), "--json", str(js)], capsys)
    assert code == 0, cap.err
    pred = json.loads(js.read_text())
    assert pred["classes"] == ["alpha", "beta", "gamma"]
    assert sorted(p["file"] for p in pred["predictions"]) == ["alpha_q.png", "beta_q.png", "gamma_q.png"]
    assert all(p["class"] in pred["classes"] and 0 < p["probability"] <= 1 for p in pred["predictions"])


def test_predict_bad_folders(tmp_path, protonet_checkpoint, capsys):
    support, query = tmp_path / "support", tmp_path / "query"
    (support / "empty").mkdir(parents=True)
    query.mkdir()
    (query / "broken.png").write_bytes(b"not an image")
    code, cap = run(["predict", "--checkpoint", str(protonet_checkpoint), "--support", str(support),
                     "--query", str(query)], capsys)
    assert code == 2 and "holds no images" in cap.err
    (support / "empty" / "a.png").write_bytes(b"not an image either")
    code, cap = run(["predict", "--checkpoint", str(protonet_checkpoint), "--support", str(support),
                     "--query", str(query)], capsys)
    assert code == 2 and "cannot read image" in cap.err


def test_predict_refuses_unsafe_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"x": CheckpointError("pickled object")}, bad)
    code, cap = run(["predict", "--checkpoint", str(bad), "--support", str(tmp_path), "--query", str(tmp_path)],
                    capsys)
    assert code == 2 and "refused" in cap.err


def test_sinusoid_regression_run(tmp_path):
    cfg = FewShotConfig(algo="maml", dataset="sinusoid", shots=5, queries=5, meta_batch=4, validation_tasks=10,
                        test_tasks=20, validate_every=5)
    res = run_fewshot(cfg, Budget(iterations=10), out_dir=tmp_path / "s", progress=False, log=lambda s: None)
    assert "mse" in res and res["mse"] > 0 and res["backbone"] == "mlp"


def test_evaluate_checkpoint_at_other_ways_and_shots(tmp_path, protonet_checkpoint, capsys):
    js = tmp_path / "e.json"
    code, cap = run(["evaluate", "--checkpoint", str(protonet_checkpoint), "--ways", "3", "--shots", "2",
                     "--queries", "2", "--test-tasks", "5", "--no-progress", "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert (res["ways"], res["shots"], res["test_tasks"]) == (3, 2, 5) and 0 <= res["accuracy"] <= 1


def test_evaluate_lists_confused_class_pairs(tmp_path, protonet_checkpoint, capsys):
    js = tmp_path / "e.json"
    code, cap = run(["evaluate", "--checkpoint", str(protonet_checkpoint), "--queries", "3", "--test-tasks", "8",
                     "--confusions", "3", "--no-progress", "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    conf = res["confusions"]
    assert conf["accuracy"] == pytest.approx(res["accuracy"]) and conf["queries"] == 8 * 5 * 3
    assert conf["errors"] == round((1 - res["accuracy"]) * conf["queries"])
    errs = [r["errors"] for r in conf["pairs"]]
    assert 1 <= len(errs) <= 3 and errs == sorted(errs, reverse=True)
    assert "most confused class pairs" in cap.out


def test_train_from_init_weights(tmp_path, protonet_checkpoint, capsys):
    from meta.fewshot import load_fewshot_checkpoint

    # a ProtoNet's trunk as MAML's starting point (MAML's head is not in it: it keeps its own init)
    out = tmp_path / "maml"
    code, cap = run(["train", "--algo", "fomaml", "--budget-iterations", "1", "--meta-batch", "1", "--meta-lr", "1e-9",
                     "--init", str(protonet_checkpoint), "--out", str(out), *TINY], capsys)
    assert code == 0, cap.err
    assert "restored" in cap.out and "1 missing" not in cap.out
    _, proto, _ = load_fewshot_checkpoint(protonet_checkpoint)
    _, maml, _ = load_fewshot_checkpoint(out / "last.pt")
    w0 = proto.model.state_dict()["features.block1.conv.weight"]
    assert torch.allclose(maml.model.state_dict()["features.block1.conv.weight"], w0, atol=1e-6)
    # the starting weights are validated too (iteration 0), so best.pt can be the init itself
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    assert first["iteration"] == "0" and first["val_accuracy"] not in ("", None)
    # a state dict of another network, or no file at all: exit 2, nothing written
    other = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(3, 3)}, other)
    for bad, message in ((other, "does not fit"), (tmp_path / "nope.pt", "init must be a checkpoint file")):
        code, cap = run(["train", "--algo", "protonet", "--budget-iterations", "1", "--init", str(bad),
                         "--out", str(tmp_path / "bad"), *TINY], capsys)
        assert code == 2 and message in cap.err, cap.err
        assert not (tmp_path / "bad" / "last.pt").exists()
    # a checkpoint of another registry backbone: refused by name, with the option that fits it
    code, cap = run(["train", "--algo", "protonet", "--budget-iterations", "1", "--init", str(protonet_checkpoint),
                     "--out", str(tmp_path / "bad"), *TINY, "--backbone", "resnet12", "--backbone-kwargs", "{}"],
                    capsys)
    assert code == 2 and "holds a 'conv4' backbone" in cap.err and "pass --backbone conv4" in cap.err, cap.err
    assert "check_backbone" not in cap.err and not (tmp_path / "bad" / "last.pt").exists()


def test_evaluate_maml_at_other_ways_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["train", "--algo", "fomaml", "--budget-iterations", "1", "--meta-batch", "1",
                "--out", str(out), *TINY])[0] == 0
    code, cap = run(["evaluate", "--checkpoint", str(out / "last.pt"), "--ways", "3"], capsys)
    assert code == 2 and "meta-trained 5-way" in cap.err


def test_download_without_network_fails_fast_naming_root(tmp_path, monkeypatch, capsys):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, cap = run(["train", "--dataset", "omniglot", "--root", str(tmp_path / "omni"), "--download",
                     "--budget-iterations", "1", "--no-progress"], capsys)
    assert code == 2 and "root=" in cap.err and cap.err.count("\n") == 1


def test_augmented_training_is_reproducible_and_resumable(tmp_path):
    """--augment-shift/--augment-rotate change the training images (a different model than without
    them), the draws depend only on (seed, iteration), and a resumed run ends where an
    uninterrupted one does."""
    common = dict(algo="protonet", glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3,
                  validation_tasks=4, test_tasks=6, validate_every=2, checkpoint_every=2,
                  schedule="cosine", schedule_iterations=4)
    quiet = dict(progress=False, log=lambda s: None)
    augmented = FewShotConfig(**common, augment_shift=2, augment_rotate=10.0)
    run_fewshot(augmented, Budget(iterations=4), out_dir=tmp_path / "a", **quiet)
    run_fewshot(augmented, Budget(iterations=2), out_dir=tmp_path / "b", **quiet)
    run_fewshot(augmented, Budget(iterations=4), out_dir=tmp_path / "b", resume=True, **quiet)
    run_fewshot(FewShotConfig(**common), Budget(iterations=4), out_dir=tmp_path / "c", **quiet)
    a, b, c = (_final_params(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_shifted_episode_moves_images_and_keeps_labels():
    from meta.fewshot import shifted_episode
    from mtl.data.episodes import EpisodeSampler

    data = make_glyphs(6, samples_per_class=5, seed=0)
    episode = EpisodeSampler(data, 3, 1, 2, seed=0).batch(0, 2)
    moved = shifted_episode(episode, 2, (0, 0))
    assert moved.support_x.shape == episode.support_x.shape and moved.query_x.shape == episode.query_x.shape
    assert torch.equal(moved.query_y, episode.query_y) and torch.equal(moved.support_y, episode.support_y)
    assert not torch.equal(moved.query_x, episode.query_x)
    assert torch.equal(shifted_episode(episode, 2, (0, 0)).query_x, moved.query_x)
    assert not torch.equal(shifted_episode(episode, 2, (0, 1)).query_x, moved.query_x)
    # a shift only moves ink: the total per image is unchanged unless ink is pushed off the border
    assert (moved.query_x.sum((-1, -2, -3)) <= episode.query_x.sum((-1, -2, -3)) + 1e-4).all()


@pytest.mark.parametrize("flag, value, message", [
    ("--augment-shift", "9", "augment_shift"), ("--augment-shift", "-1", "augment_shift"),
    ("--augment-rotate", "-5", "augment_rotate"), ("--augment-scale", "0.95", "augment_scale"),
    ("--augment-shear", "nan", "nan"),
    ("--schedule", "linear", "invalid choice"), ("--schedule-iterations", "0", "0"),
])
def test_augmentation_and_schedule_bad_values(flag, value, message, capsys):
    try:
        code = main(["fewshot", "train", "--budget-iterations", "1", *TINY, flag, value])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and value in err


def test_overwritten_run_starts_a_new_metrics_log(tmp_path):
    """Training again into the same folder (no --resume) must not append to the old run's log."""
    from mtl.utils.logging import CSVLogger

    cfg = FewShotConfig(algo="protonet", glyph_classes=(12, 6, 6), backbone_kwargs={"hidden": 8}, queries=3,
                        validation_tasks=4, test_tasks=6, validate_every=2, checkpoint_every=2)
    quiet = dict(progress=False, log=lambda s: None)
    run_fewshot(cfg, Budget(iterations=3), out_dir=tmp_path, **quiet)
    run_fewshot(cfg, Budget(iterations=2), out_dir=tmp_path, overwrite=True, **quiet)
    assert CSVLogger(tmp_path / "metrics.csv").column("iteration") == [1.0, 2.0]


def test_val_ways_validates_on_a_split_smaller_than_the_training_ways(tmp_path, capsys):
    """A MAML head trained 8-way, validated 5-way on a 6-class validation split (as 20-way Omniglot
    training with the 17 characters of Tagalog for validation)."""
    args = ["train", "--algo", "fomaml", "--ways", "8", "--meta-batch", "1", "--budget-iterations", "2",
            "--validate-every", "1", *TINY, "--glyph-classes", "12,6,8"]
    code, cap = run(args, capsys)
    assert code == 2 and "ways=8 is more than the 6 classes of split 'val'" in cap.err
    out = tmp_path / "run"
    code, cap = run([*args, "--val-ways", "5", "--out", str(out)], capsys)
    assert code == 0, cap.err
    from meta.fewshot import TaskSources

    cfg = FewShotConfig(algo="fomaml", ways=8, val_ways=5, queries=3, glyph_classes=(12, 6, 8))
    tasks = TaskSources(cfg, torch.device("cpu"))
    assert tasks.val(0).support_y.unique().tolist() == list(range(5))
    assert tasks.train(0).support_y.unique().tolist() == list(range(8))
    assert load_checkpoint(out / "last.pt")["config"]["extra"]["fewshot"]["val_ways"] == 5
    plain = tmp_path / "plain"
    assert run(["train", "--budget-iterations", "1", "--out", str(plain), *TINY])[0] == 0
    assert "val_ways" not in load_checkpoint(plain / "last.pt")["config"]["extra"]["fewshot"]  # old identity
    # test-time settings are chosen on the validation classes: evaluate --split val, at the validation ways
    js = tmp_path / "val.json"
    code, cap = run(["evaluate", "--checkpoint", str(out / "last.pt"), "--split", "val", "--eval-inner-steps", "2",
                     "--test-tasks", "4", "--no-progress", "--json", str(js)], capsys)
    assert code == 0, cap.err
    res = json.loads(js.read_text())
    assert res["classes"] == "val" and res["ways"] == 5 and res["test_tasks"] == 4
    assert "5-way 1-shot" in cap.out and "over 4 val tasks" in cap.out


@pytest.mark.parametrize("kwargs, message", [
    ({"algo": "fomaml", "ways": 5, "val_ways": 6}, "val_ways=6 is more than the 5 outputs of fomaml's head"),
    ({"algo": "protonet", "val_ways": 1}, "val_ways must be an integer >= 2, got 1"),
])
def test_val_ways_bad_values(kwargs, message):
    from mtl.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FewShotConfig(**kwargs)


def test_zero_head_starts_the_meta_learned_head_at_zero(tmp_path, capsys):
    out = tmp_path / "run"
    code, cap = run(["train", "--algo", "fomaml", "--budget-iterations", "1", "--meta-batch", "1",
                     "--meta-lr", "1e-9", "--zero-head", "--out", str(out), *TINY], capsys)
    assert code == 0, cap.err
    assert "head starts at zero: head.weight (5, 8), head.bias (5,)" in cap.out
    state = load_checkpoint(out / "last.pt")
    assert state["algo"]["model.head.weight"].abs().max() < 1e-6
    assert state["config"]["extra"]["fewshot"]["zero_head"] is True
    plain = tmp_path / "plain"
    assert run(["train", "--algo", "fomaml", "--budget-iterations", "1", "--meta-batch", "1", "--meta-lr", "1e-9",
                "--out", str(plain), *TINY])[0] == 0
    state = load_checkpoint(plain / "last.pt")
    assert state["algo"]["model.head.weight"].abs().max() > 1e-2
    assert "zero_head" not in state["config"]["extra"]["fewshot"]  # runs without it keep their identity
    for algo in ("protonet", "protomaml"):
        code, cap = run(["train", "--algo", algo, "--zero-head", "--budget-iterations", "1", *TINY], capsys)
        assert code == 2 and f"zero_head starts a meta-learned head at zero; {algo} has none" in cap.err


def test_one_inner_step_from_a_zero_head_points_each_class_at_its_centred_support():
    """From a zero head, one step of lr on the mean cross-entropy of a 1-shot support set gives
    class k the weights lr / N * (f_k - mean_j f_j) and equal biases: a dot-product prototype head."""
    from meta.fewshot import zero_head
    from meta.maml import MAML
    from mtl import create_backbone

    torch.manual_seed(0)
    model = create_backbone("conv4", hidden=8, num_classes=4, track_running_stats=False)
    maml = MAML(model, inner_lr=0.3, inner_steps=1)
    zero_head(maml)
    sx, sy = torch.randn(4, 1, 28, 28), torch.tensor([2, 0, 3, 1])
    predictor = maml.adapt(sx, sy)
    f = model.forward_features(sx).flatten(1).detach()
    centred = (f - f.mean(0)) * 0.3 / 4
    assert torch.allclose(predictor.params["head.weight"][sy], centred, atol=1e-6)
    bias = predictor.params["head.bias"]
    assert torch.allclose(bias, bias[0].expand(4), atol=1e-7)


def test_mamlpp_defaults_follow_the_length_of_training():
    from meta.fewshot import build_algorithm

    cfg = FewShotConfig(algo="mamlpp", schedule_iterations=300).resolved()
    assert (cfg.inner_steps, cfg.inner_lr, cfg.msl_iterations, cfg.first_order_until) == (5, 0.1, 30, 100)
    algo = build_algorithm(cfg, (1, 28, 28))
    assert (algo.inner_steps, algo.msl_iterations, algo.first_order_until) == (5, 30, 100)
    assert algo.learn_inner_lr == "per_layer_per_step" and algo.per_step_bn and algo.multi_step_loss
    mine = FewShotConfig(algo="mamlpp", inner_steps=2, msl_iterations=7, first_order_until=0).resolved()
    assert (mine.inner_steps, mine.msl_iterations, mine.first_order_until) == (2, 7, 0)
    plain = FewShotConfig(algo="maml").resolved()
    assert (plain.inner_steps, plain.inner_lr, plain.msl_iterations, plain.first_order_until) == (1, 0.4, None, None)


def test_mamlpp_run_records_its_settings_and_others_keep_their_identity(tmp_path, capsys):
    out = tmp_path / "pp"
    code, cap = run(["train", "--algo", "mamlpp", "--budget-iterations", "2", "--meta-batch", "1", "--inner-steps",
                     "2", "--msl-iterations", "4", "--first-order-until", "1", "--out", str(out), *TINY], capsys)
    assert code == 0, cap.err
    record = load_checkpoint(out / "last.pt")["config"]["extra"]["fewshot"]
    assert (record["inner_steps"], record["msl_iterations"], record["first_order_until"]) == (2, 4, 1)
    plain = tmp_path / "fo"
    assert run(["train", "--algo", "fomaml", "--budget-iterations", "1", "--meta-batch", "1",
                "--out", str(plain), *TINY])[0] == 0
    record = load_checkpoint(plain / "last.pt")["config"]["extra"]["fewshot"]
    assert "msl_iterations" not in record and "first_order_until" not in record and record["inner_steps"] == 1
    for flag, value in (("--msl-iterations", "5"), ("--first-order-until", "5")):
        code, cap = run(["train", "--algo", "maml", flag, value, "--budget-iterations", "1", *TINY], capsys)
        assert code == 2 and "is a MAML++ setting (algo 'mamlpp'), got algo 'maml'" in cap.err, cap.err
    code, cap = run(["train", "--algo", "mamlpp", "--first-order-until", "-1", "--budget-iterations", "1", *TINY],
                    capsys)
    assert code == 2 and "first_order_until must be an integer >= 0, got -1" in cap.err, cap.err


def test_evaluate_reports_several_test_step_counts(tmp_path, protonet_checkpoint, capsys):
    """--eval-inner-steps 1,3 reports both counts from one adaptation per task; the headline is
    the larger one, the same as --eval-inner-steps 3 alone."""
    out = tmp_path / "run"
    assert run(["train", "--algo", "fomaml", "--budget-iterations", "2", "--meta-batch", "1",
                "--out", str(out), *TINY])[0] == 0
    ckpt = str(out / "last.pt")
    both, alone = tmp_path / "both.json", tmp_path / "alone.json"
    code, cap = run(["evaluate", "--checkpoint", ckpt, "--eval-inner-steps", "3,1", "--test-tasks", "5",
                     "--no-progress", "--json", str(both)], capsys)
    assert code == 0, cap.err
    assert "after   1 steps" in cap.out and "after   3 steps" in cap.out and "3 inner steps" in cap.out
    code, cap = run(["evaluate", "--checkpoint", ckpt, "--eval-inner-steps", "3", "--test-tasks", "5",
                     "--no-progress", "--json", str(alone)], capsys)
    assert code == 0, cap.err
    assert "after" not in cap.out
    res, ref = json.loads(both.read_text()), json.loads(alone.read_text())
    assert res["eval_inner_steps"] == 3 and [r["steps"] for r in res["by_steps"]] == [1, 3]
    assert res["accuracy"] == ref["accuracy"] == res["by_steps"][1]["accuracy"]
    assert res["ci95"] == ref["ci95"] and "by_steps" not in ref
    # bad values: exit 2, one line naming the option, no JSON written
    bad = ["--test-tasks", "2", "--no-progress", "--json", str(tmp_path / "bad.json")]
    with pytest.raises(SystemExit) as exc:
        run(["evaluate", "--checkpoint", ckpt, "--eval-inner-steps", "0,2", *bad])
    assert exc.value.code == 2 and "argument --eval-inner-steps: expected positive integers" in capsys.readouterr().err
    code, cap = run(["evaluate", "--checkpoint", str(protonet_checkpoint), "--eval-inner-steps", "2", *bad], capsys)
    assert code == 2 and "--eval-inner-steps: protonet has no inner steps" in cap.err, cap.err
    assert not (tmp_path / "bad.json").exists()


def test_evaluate_task_workers_give_the_same_result(tmp_path, capsys):
    from fewshot_helpers import tiny_checkpoints

    ckpt = tiny_checkpoints(tmp_path, ("fomaml",))["fomaml"]
    results = []
    for workers in ("1", "2"):
        out = tmp_path / f"r{workers}.json"
        assert main(["fewshot", "evaluate", "--checkpoint", ckpt, "--test-tasks", "7", "--task-workers", workers,
                     "--eval-inner-steps", "1,3", "--no-progress", "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[1]["accuracy"] == pytest.approx(results[0]["accuracy"], abs=1e-9)
    assert results[1]["by_steps"] == pytest.approx(results[0]["by_steps"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fewshot", "evaluate", "--checkpoint", ckpt, "--task-workers", "0", "--no-progress"])
    assert exit_info.value.code == 2
    assert "--task-workers: expected a positive integer, got '0'" in capsys.readouterr().err
