"""Pseudo-classes from an unlabelled pool: k-means, cluster cores, appending, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from meta.fewshot import FewShotConfig
from meta.protonet import ProtoNet
from meta.pseudoclasses import (
    DUPLICATE_DISTANCE,
    append_classes,
    drop_copies,
    embed_images,
    kmeans,
    load_pool,
    pseudo_classes,
)
from mtl import create_backbone
from mtl.cli import main
from mtl.data.base import LabelledImages
from mtl.data.glyphs import make_glyphs
from mtl.errors import ConfigError, DatasetError


def blobs(k=4, n=10, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(k, dim, generator=g)
    x = centres.repeat_interleave(n, 0) + 0.1 * torch.randn(k * n, dim, generator=g)
    return x, torch.arange(k).repeat_interleave(n)


def test_kmeans_recovers_separated_blobs_deterministically():
    x, truth = blobs()
    assign, dist = kmeans(x, 4, seed=1)
    assert dist.shape == (40, 4) and torch.equal(dist.argmin(1), assign)
    for j in range(4):  # every cluster is exactly one blob
        assert len(truth[assign == j].unique()) == 1 and (assign == j).sum() == 10
    again, _ = kmeans(x, 4, seed=1)
    assert torch.equal(assign, again)
    for bad in (0, 41):
        with pytest.raises(ConfigError, match="k must be in 1..40"):
            kmeans(x, bad)


def test_pseudo_classes_keep_cluster_cores_and_drop_small_clusters():
    x, truth = blobs(k=3, n=10)
    x = torch.cat([x, 50 + torch.randn(2, 8)])  # a 2-point outlier cluster
    groups = pseudo_classes(x, 4, size=6, min_size=3)
    assert len(groups) == 3 and all(len(g) == 6 for g in groups)
    normed = torch.nn.functional.normalize(x, dim=1)
    for g in groups:
        assert len(truth[g].unique()) == 1 and int(g.max()) < 30  # pure, and no outlier kept
        # sorted by distance to the cluster's centre: the first member is its most central one
        blob = torch.cat([truth, torch.tensor([-1, -1])]) == truth[g[0]]  # the whole (pure) cluster
        centre = normed[blob].mean(0)
        d = (normed[g] - centre).norm(dim=1)
        assert torch.all(d[1:] >= d[:-1] - 1e-6)
    with pytest.raises(ConfigError, match="min_size=7 is larger than size=6"):
        pseudo_classes(x, 4, size=6, min_size=7)


def test_append_classes_adds_training_classes_after_the_dataset():
    data = LabelledImages(torch.zeros(6, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2]), ["a/0", "a/1", "b/0"],
                          {"alphabet": torch.tensor([0, 0, 0, 0, 1, 1]), "drawer": torch.arange(6)},
                          {"alphabet": ["a", "b"]})
    pool = torch.rand(10, 1, 4, 4)
    out, new = append_classes(data, pool, [torch.tensor([3, 1]), torch.tensor([7, 8, 9])])
    assert new == [3, 4] and out.class_names[3:] == ["pseudo/0", "pseudo/1"]
    assert out.targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert torch.equal(out.images[6:8], pool[[3, 1]])
    assert out.attribute_names["alphabet"] == ["a", "b", "pseudo"] and out.attributes["alphabet"][6:].eq(2).all()
    assert out.attributes["drawer"][6:].eq(0).all() and data.num_classes == 3  # the input is unchanged
    with pytest.raises(DatasetError, match="no pseudo-classes"):
        append_classes(data, pool, [])
    with pytest.raises(DatasetError, match=r"\(1, 5, 5\)"):
        append_classes(data, torch.rand(3, 1, 5, 5), [torch.tensor([0, 1])])


def test_embed_images_is_protonets_embedding_in_eval_mode():
    torch.manual_seed(0)
    net = create_backbone("conv4", in_channels=1, image_size=16, hidden=4)
    algo = ProtoNet(net)
    x = torch.rand(7, 1, 16, 16)
    algo.train()
    algo.outer_backward(x[None, :3], torch.arange(3)[None], x[None, 3:], torch.tensor([[0, 1, 2, 0]]))  # BN stats
    emb = embed_images(net, x, batch_size=3)
    assert net.training  # mode restored
    algo.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb, algo._embed(None, x))


def _glyph_png(path, image):
    Image.fromarray((image.squeeze(0).numpy() * 255).astype(np.uint8)).save(path)


def test_load_pool_reads_sheets_and_folders(tmp_path):
    glyphs = make_glyphs(3, samples_per_class=3, seed=1).images  # [9, 1, 28, 28]
    sheet = torch.zeros(28, 28 * 20)
    for i in range(9):
        sheet[:, 28 * i:28 * (i + 1)] = glyphs[i, 0]
    _glyph_png(tmp_path / "sheet.png", sheet[None])
    pool = load_pool(tmp_path / "sheet.png", (1, 28, 28))
    assert pool.shape == (9, 1, 28, 28) and (pool - glyphs).abs().max() < 1 / 255 + 1e-6
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(4):
        _glyph_png(folder / f"{i}.png", glyphs[i])
    assert load_pool(folder, (1, 28, 28)).shape == (4, 1, 28, 28)
    with pytest.raises(DatasetError, match="sprite sheet or a folder"):
        load_pool(tmp_path / "x.jpg", (1, 28, 28))
    with pytest.raises(DatasetError, match=r"\(1, 28, 28\) images, the dataset \(1, 32, 32\)"):
        load_pool(tmp_path / "sheet.png", (1, 32, 32))
    both = load_pool([folder, tmp_path / "sheet.png"], (1, 28, 28))  # several pools: one, in order
    assert both.shape == (13, 1, 28, 28) and torch.equal(both[4:], pool)
    with pytest.raises(DatasetError, match="no path given"):
        load_pool([], (1, 28, 28))


def test_drop_copies_removes_near_duplicates_of_the_reference_only():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(5, 1, 8, 8, generator=g)
    others = torch.rand(6, 1, 8, 8, generator=g)
    copies = reference[[4, 0]] + 0.01 * torch.randn(2, 1, 8, 8, generator=g)  # resized copies are not exact
    pool = torch.cat([others[:3], copies[:1], others[3:], copies[1:]])
    kept, dropped = drop_copies(pool, reference, chunk=4)  # chunks smaller than the pool
    assert dropped.tolist() == [False] * 3 + [True] + [False] * 3 + [True]
    assert torch.equal(kept, others)
    kept, dropped = drop_copies(pool, reference[:0])  # nothing to compare with: nothing dropped
    assert torch.equal(kept, pool) and not dropped.any()
    with pytest.raises(ConfigError, match="max_distance must be >= 0"):
        drop_copies(pool, reference, max_distance=-1.0)
    with pytest.raises(DatasetError, match=r"pool images are \(1, 8, 8\), the reference's \(1, 9, 9\)"):
        drop_copies(pool, torch.rand(2, 1, 9, 9))


def test_omniglot_sheet_copies_of_the_labelled_images_are_all_found(omniglot_original, omniglot28):
    """The background sheet holds every image of the labelled subsets (test alphabets included) once:
    all 4,840 are found and removed, and nothing left is near a labelled image."""
    from meta.fewshot import _omniglot_copies_reference

    cfg = FewShotConfig(algo="protonet", dataset="omniglot", root=str(omniglot_original))
    reference = _omniglot_copies_reference(cfg)
    assert reference.shape == (4840, 1, 28, 28)
    sheet = load_pool(omniglot28 / "images_background.png", (1, 28, 28))
    kept, dropped = drop_copies(sheet, reference)
    assert int(dropped.sum()) == 4840 and len(kept) == 19280 - 4840
    nearest = torch.cat([torch.cdist(reference.flatten(1), kept[i:i + 4096].flatten(1)).amin(1, keepdim=True)
                         for i in range(0, len(kept), 4096)], 1).amin(1)
    assert float(nearest.min()) > DUPLICATE_DISTANCE  # no second, farther copy slipped through
    evaluation = load_pool(omniglot28 / "images_evaluation.png", (1, 28, 28))
    assert not drop_copies(evaluation, reference)[1].any()  # other alphabets: nothing is a copy


TINY = ["--glyph-classes", "12,6,6", "--backbone-kwargs", '{"hidden": 8}', "--queries", "3",
        "--validation-tasks", "4", "--test-tasks", "6", "--no-progress", "--threads", "1"]


def test_cli_trains_with_pseudo_classes(tmp_path, capsys):
    trunk = tmp_path / "trunk"
    assert main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "2", "--out", str(trunk), *TINY]) == 0
    pool, pool2 = tmp_path / "pool", tmp_path / "pool2"  # two pools, clustered together
    pool.mkdir()
    pool2.mkdir()
    for i, img in enumerate(make_glyphs(10, samples_per_class=6, seed=99).images):  # classes unseen in training
        _glyph_png((pool if i < 30 else pool2) / f"{i:03d}.png", img)
    js = tmp_path / "r.json"
    args = ["fewshot", "train", "--algo", "protonet", "--budget-iterations", "3", "--init", str(trunk / "best.pt"),
            "--pseudo-pool", str(pool), str(pool2), "--pseudo-classes", "8", "--pseudo-size", "6",
            "--out", str(tmp_path / "run"), "--json", str(js), *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pseudo-classes:" in out and "of 8 clusters kept" in out and "pseudo-classes (" in out
    assert " of 60 in " in out
    assert json.loads(js.read_text())["meta_iterations"] == 3
    from mtl.utils import load_checkpoint

    record = load_checkpoint(tmp_path / "run" / "last.pt")["config"]["extra"]["fewshot"]
    assert record["pseudo_classes"] == 8 and record["pseudo_pool"] == f"{pool}{os.pathsep}{pool2}"
    plain = load_checkpoint(trunk / "last.pt")["config"]["extra"]["fewshot"]
    assert not any(k.startswith("pseudo") for k in plain)  # older checkpoints stay resumable
    # evaluation rebuilds the test tasks without the pool
    assert main(["fewshot", "evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--test-tasks", "6",
                 "--no-progress"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--pseudo-pool", "x.png"], "pseudo_pool and pseudo_classes go together"),
    (["--pseudo-classes", "5"], "pseudo_pool and pseudo_classes go together"),
    (["--pseudo-pool", "x.png", "--pseudo-classes", "5"], "need a trained network to embed the pool"),
    (["--pseudo-pool", "x.png", "--pseudo-classes", "5", "--pseudo-size", "2", "--init", "c.pt"],
     "pseudo_size=2 is below shots + queries = 4"),
])
def test_cli_pseudo_class_errors(extra, message, capsys):
    code = main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "1", *TINY, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_several_pools_are_recorded_as_one_path_list():
    cfg = FewShotConfig(algo="protonet", pseudo_pool=["a.png", "b"], pseudo_classes=3, init="c.pt")
    assert cfg.pseudo_pool == os.pathsep.join(["a.png", "b"])


def test_config_refuses_pseudo_classes_for_regression():
    with pytest.raises(ConfigError, match="sinusoid"):
        FewShotConfig(algo="maml", dataset="sinusoid", pseudo_pool="x.png", pseudo_classes=3, init="c.pt")


def test_no_cluster_large_enough_is_a_clear_error(tmp_path, capsys):
    trunk = tmp_path / "trunk"
    assert main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "1", "--out", str(trunk), *TINY]) == 0
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, img in enumerate(make_glyphs(2, samples_per_class=2, seed=3).images):  # 4 images, 4 clusters of 1
        _glyph_png(pool / f"{i}.png", img)
    capsys.readouterr()
    code = main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "1", "--init", str(trunk / "best.pt"),
                 "--pseudo-pool", str(pool), "--pseudo-classes", "4", "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no pseudo-classes" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_pool_is_embedded_by_the_network_as_its_checkpoint_built_it(tmp_path):
    """A run whose own network differs (here conv4 without its last pooling) still clusters the
    pool with the embedding the --init checkpoint was trained to produce."""
    from meta.fewshot import _make_pseudo_classes

    trunk = tmp_path / "trunk"
    assert main(["fewshot", "train", "--algo", "protonet", "--budget-iterations", "2", "--out", str(trunk), *TINY]) == 0
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, img in enumerate(make_glyphs(8, samples_per_class=6, seed=5).images):
        _glyph_png(pool / f"{i:03d}.png", img)
    base = dict(algo="protonet", glyph_classes=(12, 6, 6), queries=3, init=str(trunk / "best.pt"),
                pseudo_pool=str(pool), pseudo_classes=6, pseudo_size=6)
    same = _make_pseudo_classes(FewShotConfig(**base, backbone_kwargs={"hidden": 8}), log=lambda _: None)
    other = _make_pseudo_classes(FewShotConfig(**base, backbone_kwargs={"hidden": 8, "final_pool": False}),
                                 log=lambda _: None)
    assert torch.equal(same[0], other[0])
    assert [g.tolist() for g in same[1]] == [g.tolist() for g in other[1]]
