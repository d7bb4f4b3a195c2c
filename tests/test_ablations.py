"""Tests of uotisp_lib.ablations: the arms, the outlier-fraction target sets, the seeded runner."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from uotisp_lib import ablations as ab
from uotisp_lib import study as st
from uotisp_lib.config import AblationStudy, SynthConfig, UOTStudy
from uotisp_lib.data import synth

STUDY = UOTStudy(arch="tinyraw", archs=("tinyraw",), epochs=1, batch_size=4, seeds=2, potential_width=4, expert_width=4,
                 alpha=0.5, cost="quadratic")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from uotisp_lib.experiments import load_training_data

    cfg = SynthConfig(patch=8, layouts=((1, 2),), n_train_raw=3, n_train_jpeg=4, n_val=1, n_test=2)
    root = synth.build_benchmark(tmp_path_factory.mktemp("abl") / "b", cfg, 0)
    return load_training_data(root, proxy_fraction=0.25)


def _diff(a, b) -> dict:
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def test_each_arm_changes_exactly_its_factor(tiny_data):
    ablate = AblationStudy(arch="tinyraw", alphas=(0.5, 1.0), taus=(0.0, 1.0, 3.0), costs=("quadratic", "luma"),
                           outlier_fractions=(0.0,), colour_ot=0.3)
    arms = ab.ablation_arms(STUDY, ablate)
    names = [a.key for a in arms]
    assert len(names) == len(set(names))
    assert names[:10] == ["committee/all experts", "committee/no experts", "committee/only colour", "committee/only structure",
                          "committee/only frequency", "committee/without colour", "committee/without structure",
                          "committee/without frequency", "committee/all, no balancing", "committee/all + colour OT (0.3)"]
    # the study's own alpha and tau are the group baselines, not extra arms
    assert "psi/semi softplus, alpha 1" in names and "psi/semi softplus, alpha 0.5" in names
    assert names.count("psi/semi softplus, alpha 0.5") == 1 and "cost/quadratic, tau 1" in names
    base = st.base_config(STUDY, "tinyraw", 0)
    want = {
        "committee/no experts": {"experts"},
        "committee/only colour": {"experts"},
        "committee/all, no balancing": {"expert_balance"},
        "committee/all + colour OT (0.3)": {"colour_ot"},
        "psi/balanced": {"uot"},
        "cost/luma, tau 1": {"uot"},
        "cost/quadratic, tau 0": {"uot"},
    }
    by_key = {a.key: a for a in arms}
    for key, fields in want.items():
        cfg, d, extra = ab.arm_setup(by_key[key], STUDY, ablate, "tinyraw", 0, tiny_data)
        assert set(_diff(cfg, base)) == fields, key
        assert d is tiny_data and extra["n_target_images"] == len(tiny_data.target_image_ids)
    cfg = ab.arm_setup(by_key["committee/only colour"], STUDY, ablate, "tinyraw", 0, tiny_data)[0]
    assert cfg.experts == ("colour",)
    cfg = ab.arm_setup(by_key["committee/without structure"], STUDY, ablate, "tinyraw", 0, tiny_data)[0]
    assert cfg.experts == ("colour", "frequency")
    assert _diff(ab.arm_setup(by_key["psi/balanced"], STUDY, ablate, "tinyraw", 0, tiny_data)[0].uot, base.uot) == {
        "psi_target": ("linear", "softplus_norm")}
    assert _diff(ab.arm_setup(by_key["cost/quadratic, tau 0"], STUDY, ablate, "tinyraw", 0, tiny_data)[0].uot, base.uot) == {
        "tau": (0.0, 1.0)}
    # every compared arm names a baseline of its own group
    for a in arms:
        if a.baseline:
            assert f"{a.group}/{a.baseline}" in names
    assert ab.arm_setup(arms[0], STUDY, dataclasses.replace(ablate, epochs=7), "tinyraw", 0, tiny_data)[0].epochs == 7
    with pytest.raises(ValueError, match="unknown groups \\['magic'\\]"):
        ab.ablation_arms(STUDY, AblationStudy(groups=("magic",)))


def _fake_targets(tiny_data, n_images: int, bad: list[int]):
    from uotisp_lib.data.datasets import PatchSet

    stems = tuple(f"t{i:03d}_{k}" for i in range(n_images) for k in range(2))
    imgs = tiny_data.targets.images[:1].expand(len(stems), -1, -1, -1).clone()
    return dataclasses.replace(tiny_data, targets=PatchSet(stems, imgs), outlier_images=tuple(f"t{i:03d}" for i in bad))


@pytest.mark.parametrize("fraction, n_bad, n_good", [(0.0, 0, 15), (0.1, 2, 15), (0.25, 5, 15), (0.4, 5, 8)])
def test_with_outlier_fraction_known_counts(tiny_data, fraction, n_bad, n_good):
    # 20 target images, 5 of them outliers (25%)
    data = _fake_targets(tiny_data, 20, bad=[1, 4, 7, 10, 13])
    out, achieved, n = ab.with_outlier_fraction(data, fraction, seed=3)
    ids = set(out.target_image_ids)
    assert len(ids & set(data.outlier_images)) == n_bad and len(ids - set(data.outlier_images)) == n_good
    assert n == n_bad + n_good and achieved == pytest.approx(n_bad / n)
    assert len(out.targets) == 2 * n  # whole images, both patches
    again = ab.with_outlier_fraction(data, fraction, seed=3)[0]
    assert again.targets.stems == out.targets.stems


def test_with_outlier_fraction_errors(tiny_data):
    data = _fake_targets(tiny_data, 4, bad=[])
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\), got 1.0"):
        ab.with_outlier_fraction(data, 1.0)
    with pytest.raises(ValueError, match="no outlier target images"):
        ab.with_outlier_fraction(data, 0.2)
    assert ab.with_outlier_fraction(data, 0.0)[2] == 4


@pytest.mark.slow
def test_run_ablations_shares_identical_runs_resumes_and_summarises(tiny_data, tmp_path):
    ablate = AblationStudy(arch="tinyraw", seeds=2, groups=("psi", "cost"), alphas=(), taus=(0.0,), costs=("quadratic",))
    rows, per_image = ab.run_ablations(tiny_data, STUDY, ablate, tmp_path, log=None)
    # psi: baseline, balanced, kl, chi2, unbalanced; cost: baseline (the same run as psi's), tau 0
    assert len(rows) == 7 * 2 and list(rows.columns) == list(ab.ROW_COLUMNS)
    stored = sorted((tmp_path / "results" / "tinyraw").glob("*.json"))
    assert len(stored) == 6 * 2  # the shared baseline trained once per seed
    a = rows[(rows.group == "psi") & (rows.arm == "semi softplus, alpha 0.5")].set_index("seed")
    b = rows[(rows.group == "cost") & (rows.arm == "quadratic, tau 1")].set_index("seed")
    pd.testing.assert_frame_equal(a[["psnr", "colour_w"]], b[["psnr", "colour_w"]])
    # a second call reads every run back: nothing is retrained, the rows are the same
    mtimes = [p.stat().st_mtime_ns for p in stored]
    again, _ = ab.run_ablations(tiny_data, STUDY, ablate, tmp_path, log=None)
    pd.testing.assert_frame_equal(rows, again)
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    assert json.loads(stored[0].read_text())["n_test_images"] == 2
    summary = ab.summarise_ablations(rows, per_image, ab.ablation_arms(STUDY, ablate))
    assert len(summary) == 7 and (summary.n_seeds == 2).all()
    base = summary[summary.vs == ""]
    assert (base.d_psnr == 0).all() and len(base) == 2
    # a compared arm's difference is the mean over seeds and images of the paired per-image difference
    r = summary[summary.arm == "quadratic, tau 0"].iloc[0]
    x = per_image[per_image.variant == "cost/quadratic, tau 0"].set_index(["seed", "image"]).psnr
    y = per_image[per_image.variant == "cost/quadratic, tau 1"].set_index(["seed", "image"]).psnr
    assert r.d_psnr == pytest.approx(float((x - y).mean()))
    assert r.psnr == pytest.approx(float(rows[rows.arm == "quadratic, tau 0"].psnr.mean()))


def test_outlier_curve_known_values():
    rows = []
    for f, bal, semi, d in ((0.0, 20.0, 20.5, 0.5), (0.4, 18.0, 19.5, 1.5)):
        rows.append({"group": "outliers", "arm": f"balanced, {100 * f:g}% outliers", "vs": "", "psnr": bal, "psnr_se": 0.1,
                     "outlier_fraction": f, "n_target_images": 10, "d_psnr": 0.0, "d_psnr_se": 0.0})
        rows.append({"group": "outliers", "arm": f"semi, {100 * f:g}% outliers", "vs": f"balanced, {100 * f:g}% outliers",
                     "psnr": semi, "psnr_se": 0.2, "outlier_fraction": f, "n_target_images": 10, "d_psnr": d, "d_psnr_se": 0.3})
    curve = ab.outlier_curve(pd.DataFrame(rows))
    assert curve.outlier_fraction.tolist() == [0.0, 0.4]
    assert curve.balanced.tolist() == [20.0, 18.0] and curve.semi.tolist() == [20.5, 19.5]
    assert curve.semi_minus_balanced.tolist() == [0.5, 1.5] and curve.se.tolist() == [0.3, 0.3]


def test_discuss_names_better_worse_and_ties_from_the_numbers():
    rows = [
        {"group": "cost", "arm": "luma, tau 1", "vs": "", "psnr": 22.0, "psnr_se": 0.1, "colour_w": 0.05, "n_seeds": 3,
         "n_test_images": 40, "d_psnr": 0.0, "d_psnr_se": 0.0},
        {"group": "cost", "arm": "luma, tau 3", "vs": "luma, tau 1", "psnr": 23.0, "psnr_se": 0.1, "colour_w": 0.04,
         "n_seeds": 3, "n_test_images": 40, "d_psnr": 1.0, "d_psnr_se": 0.2},
        {"group": "cost", "arm": "luma, tau 0", "vs": "luma, tau 1", "psnr": 21.0, "psnr_se": 0.1, "colour_w": 0.06,
         "n_seeds": 3, "n_test_images": 40, "d_psnr": -1.0, "d_psnr_se": 0.3},
        {"group": "cost", "arm": "quadratic, tau 1", "vs": "luma, tau 1", "psnr": 22.1, "psnr_se": 0.1, "colour_w": 0.05,
         "n_seeds": 3, "n_test_images": 40, "d_psnr": 0.1, "d_psnr_se": 0.2},
    ]
    text = ab.discuss(pd.DataFrame(rows))
    assert "baseline *luma, tau 1*: 22.00 +- 0.10 dB" in text and "3 seeds x 40 test images" in text
    assert "better: luma, tau 3 (+1.00 +- 0.20 dB)" in text
    assert "Worse: luma, tau 0 (-1.00 +- 0.30 dB)" in text
    assert "Within two standard errors: quadratic, tau 1." in text


def test_arms_subset_keeps_the_baselines_it_needs():
    ablate = AblationStudy(outlier_fractions=(0.0, 0.4), taus=(0.0,),
                           arms=("committee/no experts", "cost/quadratic, tau 0", "outliers/semi, 40% outliers"))
    keys = [a.key for a in ab.ablation_arms(STUDY, ablate)]
    assert keys == ["committee/all experts", "committee/no experts", "cost/quadratic, tau 1", "cost/quadratic, tau 0",
                    "outliers/balanced, 40% outliers", "outliers/semi, 40% outliers"]
    with pytest.raises(ValueError, match=r"unknown arms \['committee/magic'\]"):
        ab.ablation_arms(STUDY, dataclasses.replace(ablate, arms=("committee/magic",)))


# ------------------------------------------------------------------------------------------ pairing
PAIRING_KEYS = ["pairing/random, 1x1", "pairing/kNN, 1x1", "pairing/OT, 1x1", "pairing/FGW, 1x1",
                "pairing/random, 3D LUT", "pairing/kNN, 3D LUT", "pairing/OT, 3D LUT", "pairing/FGW, 3D LUT"]
MATCH = dict(k_images=2, k_patches=2, backend="efficientnet_lite0")


def test_pairing_arms_change_exactly_their_factor(tiny_data):
    from uotisp_lib.config import TrainStudy
    from uotisp_lib.experiments import pseudo_pair_config

    train = TrainStudy(stage1_epochs=2, stage2_epochs=1, batch_size=4, d_width=4)
    ablate = AblationStudy(arch="tinyraw", groups=("pairing",), epochs=9)
    arms = ab.ablation_arms(STUDY, ablate)
    assert [a.key for a in arms] == PAIRING_KEYS
    assert [a.pairing for a in arms] == ["random", "knn", "ot", "fgw"] * 2
    assert arms[0].baseline == "" and all(a.baseline == "random, 1x1" for a in arms[1:])
    by_key = {a.key: ab.arm_setup(a, STUDY, ablate, "tinyraw", 3, tiny_data, train) for a in arms}
    base_cfg, base_data, base_extra = by_key["pairing/random, 1x1"]
    # notebook 04's pseudo-pair colornet of the train study, 1x1 head; not the UOT study's arch or epochs
    assert base_cfg == pseudo_pair_config(train, "colornet", 3, arch_kwargs=(("head", "conv1x1"),))
    assert (base_cfg.arch, base_cfg.stage1_epochs, base_cfg.stage2_epochs, base_cfg.seed) == ("colornet", 2, 1, 3)
    assert base_data is tiny_data and base_extra["pairing"] == "random"
    for key, (cfg, d, extra) in by_key.items():
        method_label, head_label = key.split("/")[1].split(", ")
        want_head = {"1x1": "conv1x1", "3D LUT": "lut3d"}[head_label]
        want_method = {"random": "random", "kNN": "knn", "OT": "ot", "FGW": "fgw"}[method_label]
        assert _diff(cfg, base_cfg) == ({} if want_head == "conv1x1" else
                                        {"arch_kwargs": ((("head", "lut3d"),), (("head", "conv1x1"),))}), key
        assert {k: v for k, v in extra.items() if base_extra[k] != v} == (
            {} if want_method == "random" else {"pairing": want_method}), key
        assert d is tiny_data
    # the setup hash tells the pairings apart (identical configurations, different pair sources)
    hashes = {ab._setup_hash(*v) for v in by_key.values()}
    assert len(hashes) == 8


def test_pair_function_of_each_method_draws_only_training_targets(tiny_data, tmp_path, monkeypatch):
    import torch

    from uotisp_lib.config import MatchStudy
    from uotisp_lib.experiments import pseudo_pair_fn

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    train_targets, proxy = set(tiny_data.targets.stems), set(tiny_data.proxy.stems)
    assert proxy and not proxy & train_targets
    test_stems = set(tiny_data.gt_test.stems)
    sources = list(tiny_data.raw_train.stems) * 50
    for _, method in ab.PAIRINGS:
        graph, digest = (None, "") if method == "random" else ab.pairing_graph(tiny_data, method, MatchStudy(**MATCH), tmp_path / "g")
        if graph is not None:
            used = {str(t) for t in graph.targets.ravel() if t}
            assert used <= train_targets, method
            assert graph.meta["method"] == method and sorted(map(str, graph.sources)) == sorted(tiny_data.raw_train.stems)
            assert len(list((tmp_path / "g").glob(f"{method}-{digest}.npz"))) == 1
        drawn = pseudo_pair_fn(method, tiny_data.targets.stems, graph)(sources, torch.Generator().manual_seed(0))
        assert len(drawn) == len(sources)
        assert set(drawn) <= train_targets and not set(drawn) & (proxy | test_stems), method
        if method == "random":  # 300 uniform draws over the 6 training targets reach every one
            assert set(drawn) == train_targets
    # read back from the folder, not rebuilt: same arrays, same digest
    path = next((tmp_path / "g").glob("fgw-*.npz"))
    mtime = path.stat().st_mtime_ns
    again, d2 = ab.pairing_graph(tiny_data, "fgw", MatchStudy(**MATCH), tmp_path / "g")
    assert path.stat().st_mtime_ns == mtime and path.name == f"fgw-{d2}.npz"
    assert (again.targets == ab.pairing_graph(tiny_data, "fgw", MatchStudy(**MATCH), None)[0].targets).all()
    # another k is another graph
    assert ab.pairing_graph(tiny_data, "fgw", MatchStudy(**{**MATCH, "k_patches": 1}), tmp_path / "g")[1] != d2
    with pytest.raises(ValueError, match="pairing 'knn' needs its pair graph"):
        pseudo_pair_fn("knn", tiny_data.targets.stems)


@pytest.mark.slow
def test_run_ablations_pairing_arms_two_seeds(tiny_data, tmp_path, monkeypatch):
    import numpy as np

    from uotisp_lib.config import MatchStudy, TrainStudy

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    train = TrainStudy(stage1_epochs=1, stage2_epochs=1, batch_size=4, d_width=4)
    ablate = AblationStudy(arch="tinyraw", seeds=2, groups=("pairing",), arms=("pairing/kNN, 1x1",))
    arms = ab.ablation_arms(STUDY, ablate)
    assert [a.key for a in arms] == ["pairing/random, 1x1", "pairing/kNN, 1x1"]  # the baseline comes along
    kw = dict(train=train, match=MatchStudy(**MATCH), log=None)
    rows, per_image = ab.run_ablations(tiny_data, STUDY, ablate, tmp_path, **kw)
    assert len(rows) == 4 and (rows.arch == "colornet").all() and sorted(rows.seed.unique()) == [0, 1]
    assert np.isfinite(rows[["psnr", "ssim", "de2000", "colour_w", "val_psnr"]].to_numpy()).all()
    assert (rows.psnr > 5).all() and (rows.n_test_images == 2).all() and (rows.epoch >= 1).all()
    stored = sorted((tmp_path / "results" / "colornet").glob("*.json"))
    assert len(stored) == 4 and len(list((tmp_path / "graphs").glob("knn-*.npz"))) == 1
    assert sorted(json.loads(p.read_text())["setup"]["extra"]["pairing"] for p in stored) == ["knn", "knn", "random", "random"]
    # the two pairings train different maps (the same seeds, other pairs)
    a = rows[rows.arm == "kNN, 1x1"].set_index("seed").psnr
    b = rows[rows.arm == "random, 1x1"].set_index("seed").psnr
    assert (a != b).all()
    summary = ab.summarise_ablations(rows, per_image, arms)
    assert summary.arm.tolist() == ["random, 1x1", "kNN, 1x1"] and (summary.n_seeds == 2).all()
    r = summary.iloc[1]
    x = per_image[per_image.variant == "pairing/kNN, 1x1"].set_index(["seed", "image"]).psnr
    y = per_image[per_image.variant == "pairing/random, 1x1"].set_index(["seed", "image"]).psnr
    assert len(x) == 4 and r.d_psnr == pytest.approx(float((x - y).mean())) and r.d_psnr != 0
    assert np.isfinite([r.d_psnr, r.d_psnr_se, r.d_de2000, r.d_de2000_se]).all() and r.d_psnr_se > 0
    assert summary.iloc[0].d_psnr == 0 and r.vs == "random, 1x1"
    assert "**pairing** (baseline *random, 1x1*" in ab.discuss(summary)
    # a second call reads every run and the graph back
    mtimes = [p.stat().st_mtime_ns for p in stored]
    again, _ = ab.run_ablations(tiny_data, STUDY, ablate, tmp_path, **kw)
    pd.testing.assert_frame_equal(rows, again)
    assert [p.stat().st_mtime_ns for p in stored] == mtimes


def test_pairing_heads_select_the_heads_and_keep_the_baseline():
    keys = [a.key for a in ab.ablation_arms(STUDY, AblationStudy(groups=("pairing",), pairing_heads=("1x1",)))]
    assert keys == ["pairing/random, 1x1", "pairing/kNN, 1x1", "pairing/OT, 1x1", "pairing/FGW, 1x1"]
    assert len(ab.ablation_arms(STUDY, AblationStudy(groups=("pairing",)))) == 8
    with pytest.raises(ValueError, match="pairing_heads must name heads of \\['1x1', '3D LUT'\\] including the baseline's '1x1'"):
        ab.ablation_arms(STUDY, AblationStudy(groups=("pairing",), pairing_heads=("3D LUT",)))
    with pytest.raises(ValueError, match="got \\['1x1', 'lut'\\]"):
        ab.ablation_arms(STUDY, AblationStudy(groups=("pairing",), pairing_heads=("1x1", "lut")))
