from __future__ import annotations

import numpy as np
import pytest
import torch

from uotisp_lib.config import get_profile
from uotisp_lib.data import build_benchmark
from uotisp_lib.experiments import graph_pair_fn, load_training_data, random_pair_fn
from uotisp_lib.matching import PairGraph


def _graph():
    sources = np.array(["a_0", "a_1"])
    targets = np.array([["t_0", "t_1", ""], ["t_2", "t_0", "t_1"]])
    weights = np.array([[0.75, 0.25, 0.0], [0.5, 0.3, 0.2]])
    return PairGraph(sources, targets, weights, {})


def test_graph_sampler_frequencies_follow_weights_and_allowed_set():
    pair = graph_pair_fn(_graph())
    g = torch.Generator().manual_seed(0)
    draws = pair(["a_0"] * 4000, g)
    assert set(draws) == {"t_0", "t_1"}
    assert draws.count("t_0") / 4000 == pytest.approx(0.75, abs=0.03)
    only = graph_pair_fn(_graph(), allowed_targets={"t_1", "t_2"})
    d = only(["a_1"] * 3000, torch.Generator().manual_seed(1))
    assert set(d) == {"t_1", "t_2"} and d.count("t_2") / 3000 == pytest.approx(0.5 / 0.7, abs=0.03)
    with pytest.raises(KeyError, match="'a_0' has no allowed target"):
        graph_pair_fn(_graph(), allowed_targets={"t_2"})
    again = graph_pair_fn(_graph())(["a_1"] * 50, torch.Generator().manual_seed(5))
    assert again == pair(["a_1"] * 50, torch.Generator().manual_seed(5))


def test_random_pairs_and_training_data_split(tmp_path):
    root = build_benchmark(tmp_path / "b", get_profile("smoke").synth, seed=3)
    data = load_training_data(root, proxy_fraction=0.25, seed=0)
    target_imgs = {s.rsplit("_", 1)[0] for s in data.targets.stems}
    proxy_imgs = {s.rsplit("_", 1)[0] for s in data.proxy.stems}
    assert target_imgs and proxy_imgs and not (target_imgs & proxy_imgs)
    assert set(data.raw_val.stems) == set(data.gt_val.stems)
    assert data.outlier_images and data.without_outliers().targets.stems
    assert not {s.rsplit("_", 1)[0] for s in data.without_outliers().targets.stems} & set(data.outlier_images)
    pairs = random_pair_fn(data.targets.stems)(data.raw_train.stems[:5], torch.Generator().manual_seed(0))
    assert len(pairs) == 5 and set(pairs) <= set(data.targets.stems)


def test_training_data_from_a_zurich_folder(tmp_path):
    """A Zurich folder (detected) is read like a UP-ISP benchmark: RAW in [0,1] keyed by stem, the
    canon JPEGs as ground truth of their RAW and as the (proxy-split) unpaired targets."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from zurich_writer import write_zurich

    smoke = build_benchmark(tmp_path / "b", get_profile("smoke").synth, seed=0)
    zurich = write_zurich(smoke, tmp_path / "z")
    up, zd = load_training_data(smoke), load_training_data(zurich, proxy_fraction=0.25, seed=0)
    n = len(up.raw_train)
    assert zd.raw_train.stems == tuple(str(k) for k in range(n)) and zd.raw_val is None and zd.gt_val is None
    torch.testing.assert_close(zd.raw_train.images, up.raw_train.images)  # the Bayer PNG round trip is exact
    assert zd.gt_train.stems == zd.raw_train.stems and zd.gt_train.images.shape == up.gt_train.images.shape
    assert (zd.gt_train.images - up.gt_train.images).abs().mean() < 0.02  # the same ground truth, as JPEG
    assert sorted(zd.targets.stems + zd.proxy.stems, key=int) == list(zd.raw_train.stems)
    assert len(zd.proxy) == round(0.25 * n) and not set(zd.proxy.stems) & set(zd.targets.stems)
    assert len(zd.raw_test) == len(zd.gt_test) == len(up.raw_test) and zd.outlier_images == ()


def test_pair_graph_restricted_to_training_targets(tmp_path, monkeypatch):
    from uotisp_lib.matching import build_pair_graph

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    root = build_benchmark(tmp_path / "b", get_profile("smoke").synth, seed=3)
    data = load_training_data(root, proxy_fraction=0.5, seed=0)
    graph, diag = build_pair_graph(root, "ot", k=2, k_patch=4, target_ids=data.target_image_ids)
    used = {str(t).rsplit("_", 1)[0] for t in np.asarray(graph.targets).ravel() if t}
    assert used and used <= set(data.target_image_ids) and diag["n_target_images"] == len(data.target_image_ids)
    pair = graph_pair_fn(graph, set(data.targets.stems))  # every source keeps an allowed target
    assert set(pair(list(graph.sources), torch.Generator().manual_seed(0))) <= set(data.targets.stems)
    with pytest.raises(ValueError, match="none of the 1 target_ids"):
        build_pair_graph(root, "ot", k=2, target_ids=["nope"])


def test_image_standard_errors_are_over_image_means():
    from uotisp_lib.experiments import image_standard_errors

    stems = ["a_0", "a_1", "b_0", "b_1", "c_0"]
    per = {"psnr": torch.tensor([10.0, 12.0, 20.0, 20.0, 200.0]), "ssim": torch.tensor([0.5, 0.5, 0.7, 0.7, 0.9])}
    se = image_standard_errors(stems, per)
    # image means: psnr 11, 20, 100 (capped at PSNR_CAP=100); ssim 0.5, 0.7, 0.9
    assert se["psnr_se"] == pytest.approx(np.std([11.0, 20.0, 100.0], ddof=1) / np.sqrt(3))
    assert se["ssim_se"] == pytest.approx(0.2 / np.sqrt(3))
    assert np.isnan(image_standard_errors(["a_0", "a_1"], {"psnr": torch.tensor([1.0, 2.0])})["psnr_se"])


def test_image_stems_are_in_patch_index_order():
    from uotisp_lib.data.datasets import PatchSet
    from uotisp_lib.experiments import image_stems

    ps = PatchSet(("x_10", "x_2", "y_0", "x_0"), torch.zeros(4, 3, 2, 2))
    assert image_stems(ps, "x") == ["x_0", "x_2", "x_10"]
    with pytest.raises(KeyError, match="'z'"):
        image_stems(ps, "z")


class _FirstThreeChannels:
    """A stand-in trainer whose map keeps the first three packed RAW channels."""

    preprocess = None

    def eval_model(self):
        return type("M", (), {"input_kind": "packed"})()

    def predict(self, inputs):
        return inputs.images[:, :3]


def test_render_image_and_score_on_with_standard_errors():
    from uotisp_lib.data.datasets import PatchSet
    from uotisp_lib.experiments import render_image, score_on
    from uotisp_lib.metrics import psnr

    g = torch.Generator().manual_seed(0)
    raw = PatchSet(("a_1", "a_0", "b_0"), torch.rand(3, 4, 11, 11, generator=g))
    img = render_image(_FirstThreeChannels(), raw, "a", (1, 2))
    torch.testing.assert_close(img[:, :, :11], raw.images[1, :3])  # a_0 on the left
    torch.testing.assert_close(img[:, :, 11:], raw.images[0, :3])
    gt = PatchSet(raw.stems, (raw.images[:, :3] + torch.tensor([0.05, 0.1, 0.2]).view(3, 1, 1, 1)).clamp(0, 1))
    row = score_on(_FirstThreeChannels(), raw, gt, se=True)
    per = psnr(raw.images[:, :3], gt.images)
    a, b = float(per[:2].mean()), float(per[2])
    assert row["psnr"] == pytest.approx(float(per.mean()), rel=1e-6)
    assert row["psnr_se"] == pytest.approx(abs(a - b) / 2, rel=1e-5)  # std(ddof=1)/sqrt(2) of two means
    assert set(score_on(_FirstThreeChannels(), raw, gt)) == {"psnr", "ssim", "de2000"}


def test_relaxed_mass_shares_and_weights_known_values():
    import math
    import types

    import torch

    from uotisp_lib.data.datasets import PatchSet
    from uotisp_lib.experiments import relaxed_mass
    from uotisp_lib.uot import UOTConfig

    # 3 typical patches with v = 0 (weight 1 under KL, alpha 1) and 1 outlier patch with v = ln 4 (weight 1/4)
    imgs = torch.zeros(4, 3, 4, 4)
    imgs[3] += 1.0
    data = types.SimpleNamespace(targets=PatchSet(("a_0", "a_1", "b_0", "z_0"), imgs), outlier_images=("z",))
    trainer = types.SimpleNamespace(cfg=types.SimpleNamespace(uot=UOTConfig(psi_target="kl", alpha=1.0)), device="cpu",
                                    potential=lambda y: y.mean(dim=(1, 2, 3)) * math.log(4.0))
    table, w, is_out = relaxed_mass(trainer, data, batch=3)
    assert is_out == [False, False, False, True]
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 0.25], dtype=torch.float64))
    t = table.set_index("targets")
    assert t.loc["typical", "patches"] == 3 and t.loc["outlier", "share_of_patches"] == pytest.approx(0.25)
    assert t.loc["outlier", "share_of_mass"] == pytest.approx(0.25 / 3.25)
    assert t.loc["typical", "mean_weight"] == pytest.approx(1.0) and t.loc["outlier", "mean_weight"] == pytest.approx(0.25)
