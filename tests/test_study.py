"""Issue 10: the seeded study runner (per-image scores, paired differences, resume, verdict) and the
study's benchmark (held-out test photos, photos-only builds)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from uotisp_lib import study as st
from uotisp_lib.config import SynthConfig, UOTStudy
from uotisp_lib.data import sources as src
from uotisp_lib.data import synth


# ------------------------------------------------------------------------------ per-image scores
def test_per_image_scores_average_patches_then_images():
    gt = torch.full((3, 3, 16, 16), 0.5)
    pred = gt.clone()
    pred[0] += 0.1  # image a, patch 0: MSE 0.01 -> 20 dB
    pred[1] += 0.01  # image a, patch 1: MSE 1e-4 -> 40 dB
    pred[2] += 0.1  # image b: 20 dB
    df = st.per_image_scores(pred, gt, ["a_0", "a_1", "b_0"])
    assert list(df.image) == ["a", "b"]
    assert df.psnr.tolist() == pytest.approx([30.0, 20.0], abs=1e-3)
    assert set(df.columns) == {"image", "psnr", "ssim", "de2000"}
    with pytest.raises(ValueError, match="per_image_scores: 2 stems"):
        st.per_image_scores(pred, gt, ["a_0", "a_1"])


def _per_image(diff_by_seed_image: dict[tuple[int, str], float], base: float = 20.0) -> pd.DataFrame:
    rows = []
    for (seed, img), d in diff_by_seed_image.items():
        rows.append({"arch": "n", "variant": "paired L1", "seed": seed, "image": img, "psnr": base, "ssim": 0.5, "de2000": 5.0})
        rows.append({"arch": "n", "variant": "x", "seed": seed, "image": img, "psnr": base + d, "ssim": 0.5, "de2000": 5.0})
    return pd.DataFrame(rows)


def test_paired_difference_known_value():
    # d[s, i]: seed 0: 1, 3; seed 1: 2, 4 -> mean 2.5; by image (1.5, 3.5) var 2; by seed (2, 3) var 0.5
    pi = _per_image({(0, "a"): 1.0, (0, "b"): 3.0, (1, "a"): 2.0, (1, "b"): 4.0})
    d, se = st.paired_difference(pi, "n", "x", "paired L1", "psnr")
    assert d == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(2.0 / 2 + 0.5 / 2))
    d, se = st.paired_difference(pi, "n", "missing", "paired L1", "psnr")
    assert math.isnan(d) and math.isnan(se)


def test_summarise_study_means_and_standard_errors():
    rows = pd.DataFrame([
        {"arch": "n", "variant": "paired L1", "seed": s, "psnr": 20.0, "ssim": 0.5, "de2000": 5.0, "n_test_images": 2} for s in (0, 1)
    ] + [
        {"arch": "n", "variant": "x", "seed": s, "psnr": p, "ssim": 0.5, "de2000": 5.0, "n_test_images": 2} for s, p in ((0, 22.0), (1, 23.0))
    ])
    pi = _per_image({(0, "a"): 1.0, (0, "b"): 3.0, (1, "a"): 2.0, (1, "b"): 4.0})
    summary = st.summarise_study(rows, pi)
    x = summary[summary.variant == "x"].iloc[0]
    assert x.n_seeds == 2 and x.n_test_images == 2
    assert x.psnr == pytest.approx(22.5) and x.psnr_se == pytest.approx(0.5)  # std 0.707 / sqrt 2
    assert x.d_psnr == pytest.approx(2.5)
    base = summary[summary.variant == "paired L1"].iloc[0]
    assert base.d_psnr == 0.0 and list(summary.variant) == ["paired L1", "x"]


def test_verdict_rules():
    summary = pd.DataFrame([
        {"arch": "n", "variant": "reference", "psnr": 18.0},
        {"arch": "n", "variant": "paired L1", "psnr": 25.0},
        {"arch": "n", "variant": "paired UOT", "psnr": 26.0, "d_psnr": 1.0, "d_psnr_se": 0.1, "d_ssim": 0.02,
         "d_ssim_se": 0.005, "d_de2000": -0.5, "d_de2000_se": 0.1},
        {"arch": "n", "variant": "unpaired UOT", "psnr": 24.5, "d_psnr": -0.5, "d_psnr_se": 0.2},
        {"arch": "n", "variant": "unpaired balanced", "psnr": 17.0},
    ])
    rows = []
    for v, p in (("unpaired UOT", 24.5), ("unpaired balanced", 24.4)):
        for s in (0, 1):
            for i, img in enumerate("abc"):
                rows.append({"arch": "n", "variant": v, "seed": s, "image": img, "psnr": p + 0.3 * i + 0.1 * s})
    for s in (0, 1):
        for i, img in enumerate("abc"):
            rows.append({"arch": "n", "variant": "reference", "seed": s, "image": img, "psnr": 25.4 + 0.2 * i})
    got = {r["claim"]: r for r in st.verdict(summary, pd.DataFrame(rows))}
    assert got["paired UOT beats paired training"]["holds"] == "yes"
    assert got["unpaired rivals paired (within 1 dB)"]["holds"] == "yes"
    # semi - balanced is exactly 0.1 everywhere: SE 0, so it counts
    assert got["the unbalanced relaxation resists outlier targets (semi vs balanced)"]["holds"] == "yes"
    floor = got["no unpaired arm below the reference rendering"]
    # balanced is 1.0 dB below the reference's 18.0 in the summary; per image, balanced - reference is
    # -1.0 + 0.3 i + 0.1 s - (0.2 i): (-1.0, -0.9, -0.8 | -0.9, -0.8, -0.7): mean -0.85, far beyond 2 SE
    assert floor["holds"] == "no"
    assert "unpaired balanced -0.85 +- " in floor["evidence"] and "by more than 2 SE: unpaired balanced" in floor["evidence"]


def test_verdict_floor_within_noise_is_not_shown():
    summary = pd.DataFrame([{"arch": "n", "variant": "reference", "psnr": 20.0},
                            {"arch": "n", "variant": "unpaired no cost", "psnr": 19.9}])
    rows = [{"arch": "n", "variant": v, "seed": s, "image": img, "psnr": p}
            for s in (0, 1) for img, dv in zip("ab", (-1.0, 0.8))
            for v, p in (("reference", 20.0), ("unpaired no cost", 20.0 + dv + 0.1 * s))]
    floor = {r["claim"]: r for r in st.verdict(summary, pd.DataFrame(rows))}["no unpaired arm below the reference rendering"]
    assert floor["holds"] == "not shown"  # mean -0.05 dB, SE about 0.9: inside the noise
    assert "unpaired no cost -0.05 +- " in floor["evidence"] and "by more than 2 SE" not in floor["evidence"]
    summary.loc[1, "psnr"] = 20.5
    assert {r["claim"]: r for r in st.verdict(summary, pd.DataFrame(rows))}[
        "no unpaired arm below the reference rendering"]["holds"] == "yes"


# ------------------------------------------------------------------------------------ benchmark
TINY_HELD = SynthConfig(
    patch=8, layouts=((1, 2),), n_train_raw=3, n_train_jpeg=3, n_val=2, n_test=3, procedural_fraction=0.34,
    photos=("astronaut", "chelsea", "coffee", "flower"), val_photos=("flower",), test_photos=("coffee",),
)


def test_builtin_photos_from_several_packages_have_credits():
    photos = src.builtin_photos(list(src.BUILTIN_PHOTOS))
    names = [p.name for p in photos]
    assert {"sklearn:china", "sklearn:flower", "matplotlib:grace_hopper", "skimage:motorcycle"} <= set(names)
    for p in photos:
        assert p.image.dtype == np.float32 and p.image.ndim == 3 and p.credit and p.licence
        assert 0.0 <= p.image.min() and p.image.max() <= 1.0


def test_held_out_photos_appear_only_in_their_split(tmp_path):
    out = synth.build_benchmark(tmp_path / "b", TINY_HELD, 0)
    meta = json.loads((out / "meta.json").read_text())
    for rec in meta["images"]:
        source = rec["scene"]["source"]
        if rec["scene"]["kind"] == "procedural":
            continue
        if rec["split"] == "test":
            assert source == "skimage:coffee", rec
        elif rec["split"] == "val":
            assert source == "sklearn:flower", rec
        else:
            assert source not in ("skimage:coffee", "sklearn:flower"), rec
    assert meta["photo_pools"]["test/raw"] == {"photos": ["skimage:coffee"], "region": [0.0, 1.0]}
    assert meta["photo_pools"]["train/jpeg"]["region"] == [0.5, 1.0]


def test_held_out_photo_config_is_checked():
    with pytest.raises(ValueError, match="must be among photos"):
        synth.plan_images(dataclasses.replace(TINY_HELD, test_photos=("rocket",)), 0)
    with pytest.raises(ValueError, match="must be disjoint"):
        synth.plan_images(dataclasses.replace(TINY_HELD, val_photos=("coffee",)), 0)


def test_photos_only_uses_the_folder_alone(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        iio.imwrite(folder / f"{name}.png", (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    out = synth.build_benchmark(tmp_path / "b", TINY_HELD, 0, photo_dir=folder, photos_only=True)
    meta = json.loads((out / "meta.json").read_text())
    kinds = {r["scene"]["kind"] for r in meta["images"]}
    sources = {r["scene"]["source"] for r in meta["images"]}
    assert kinds == {"photo"} and sources <= {"folder:a.png", "folder:b.png"}
    assert set(meta["sources"]) == {"folder:a.png", "folder:b.png", "dead_leaves"}
    with pytest.raises(ValueError, match="photos_only needs a photo folder"):
        synth.build_benchmark(tmp_path / "c", TINY_HELD, 0, photos_only=True)


def test_cli_photos_only_needs_photos(tmp_path, capsys):
    from uotisp_lib.cli import main

    assert main(["synth", "--out", str(tmp_path / "x"), "--photos-only"]) == 2
    assert "--photos-only needs --photos DIR" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ the runner
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from uotisp_lib.experiments import load_training_data

    cfg = SynthConfig(patch=8, layouts=((1, 2),), n_train_raw=3, n_train_jpeg=4, n_val=1, n_test=2)
    root = synth.build_benchmark(tmp_path_factory.mktemp("study") / "b", cfg, 0)
    return load_training_data(root, proxy_fraction=0.25)


TINY_STUDY = UOTStudy(arch="tinyraw", archs=("tinyraw",), epochs=1, batch_size=4, seeds=2, potential_width=4, expert_width=4)


def test_arm_configs_differ_in_exactly_their_factor(tiny_data):
    base = st.arm_config("unpaired UOT", TINY_STUDY, "tinyraw", 0, tiny_data)[1]
    assert base.arch_kwargs == (("base", "reference"),)
    assert st.arm_config("unpaired no cost", TINY_STUDY, "tinyraw", 0, tiny_data)[1].uot.tau == 0.0
    assert st.arm_config("unpaired balanced", TINY_STUDY, "tinyraw", 0, tiny_data)[1].uot.psi_target == "linear"
    assert st.arm_config("unpaired no experts", TINY_STUDY, "tinyraw", 0, tiny_data)[1].experts == ()
    assert st.arm_config("paired UOT", TINY_STUDY, "tinyraw", 0, tiny_data)[1].mode == "paired"
    _, _, d = st.arm_config("unpaired true targets", TINY_STUDY, "tinyraw", 0, tiny_data)
    assert d.targets is tiny_data.gt_train
    _, _, d = st.arm_config("unpaired outliers removed", TINY_STUDY, "tinyraw", 0, tiny_data)
    assert not set(tiny_data.outlier_images) & {s.rsplit("_", 1)[0] for s in d.targets.stems}
    kind, pcfg, _ = st.arm_config("paired L1", TINY_STUDY, "tinyraw", 1, tiny_data)
    assert kind == "paired_l1" and pcfg.paired and pcfg.seed == 1 and pcfg.arch_kwargs == (("base", "reference"),)
    with pytest.raises(ValueError, match="unknown study arm 'magic'"):
        st.arm_config("magic", TINY_STUDY, "tinyraw", 0, tiny_data)


@pytest.mark.slow
def test_run_study_rows_resume_and_refuse_another_config(tiny_data, tmp_path):
    arms = ("reference", "unpaired UOT")
    rows, per_image = st.run_study(tiny_data, TINY_STUDY, tmp_path, variants=arms, log=None)
    assert list(rows.columns[:9]) == ["arch", "variant", "seed", "psnr", "ssim", "de2000", "colour_w", "psnr_no_offset",
                                      "n_test_images"]
    assert rows.psnr_no_offset.notna().all() and (rows.psnr_no_offset > rows.psnr).mean() > 0.5  # casts removed
    assert len(rows) == 4 and sorted(rows.seed.unique()) == [0, 1]
    assert (rows.n_test_images == 2).all() and len(per_image) == 8
    ref = rows[rows.variant == "reference"]
    assert ref.psnr.nunique() == 1  # untrained: the same for every seed
    # the row's mean is the mean over images of the per-image values
    one = per_image[(per_image.variant == "unpaired UOT") & (per_image.seed == 1)]
    assert rows[(rows.variant == "unpaired UOT") & (rows.seed == 1)].psnr.item() == pytest.approx(one.psnr.mean())
    wall = st.study_wall(tmp_path)
    assert wall["runs_trained"] == 4 and wall["executions"] == 1 and wall["seconds"] >= rows.seconds.max() - 0.1
    # resume: a second call reads every result back (same seconds), trains nothing, logs no wall time
    again, _ = st.run_study(tiny_data, TINY_STUDY, tmp_path, variants=arms, log=None)
    pd.testing.assert_frame_equal(rows, again)
    assert st.study_wall(tmp_path) == wall
    with pytest.raises(ValueError, match="a result of another configuration is stored here"):
        st.run_study(tiny_data, dataclasses.replace(TINY_STUDY, lr_map=1e-2), tmp_path, variants=arms, log=None)
    with pytest.raises(ValueError, match="unknown arms"):
        st.run_study(tiny_data, TINY_STUDY, tmp_path, variants=("nope",), log=None)


def test_study_wall_sums_the_executions_that_trained(tmp_path):
    assert st.study_wall(tmp_path) == {"seconds": 0, "runs_trained": 0, "executions": 0}
    st.record_wall(tmp_path, 100.04, 3, workers=2)
    st.record_wall(tmp_path, 20.0, 1)
    assert st.study_wall(tmp_path) == {"seconds": 120.0, "runs_trained": 4, "executions": 2}


def test_cost_check_table_on_validation(tiny_data):
    t = st.cost_check_table(tiny_data, costs=("quadratic", "structure"))
    assert len(t) == 4 and set(t.reference) == {"camera", "gray_world"}
    assert t.truth_ratio.is_monotonic_increasing
    assert (t.c_ref.abs() < 1e-3).all() and (t.c_gt > 0).all()


def test_quadrant_regions_keep_raw_and_jpeg_scenes_apart(tmp_path):
    cfg = dataclasses.replace(TINY_HELD, regions="quadrants", procedural_fraction=0.0, n_train_raw=4, n_train_jpeg=4)
    out = synth.build_benchmark(tmp_path / "q", cfg, 1)
    meta = json.loads((out / "meta.json").read_text())
    shapes = {n: v["shape"] for n, v in meta["sources"].items() if "shape" in v}
    for rec in meta["images"]:
        if rec["split"] != "train":
            continue
        top, left, ch, cw = rec["scene"]["crop"]
        ph, pw = shapes[rec["scene"]["source"]][:2]
        # the crop's box lies inside one quadrant: raw -> diagonal (TL or BR), jpeg -> anti-diagonal
        in_top, in_left = top + ch <= round(0.5 * ph), left + cw <= round(0.5 * pw)
        in_bottom, in_right = top >= round(0.5 * ph), left >= round(0.5 * pw)
        assert (in_top or in_bottom) and (in_left or in_right), rec
        diagonal = (in_top and in_left) or (in_bottom and in_right)
        assert diagonal == (rec["role"] == "raw"), rec
    with pytest.raises(ValueError, match="regions must be 'halves' or 'quadrants'"):
        synth.plan_images(dataclasses.replace(TINY_HELD, regions="stripes"), 0)


def test_ensure_dataset_builds_the_study_benchmark_beside_the_profiles(tmp_path, monkeypatch):
    from uotisp_lib.config import resolve_run
    from uotisp_lib.data import ensure_dataset

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path))
    run = resolve_run("smoke", seed=3)
    cfg = SynthConfig(patch=8, layouts=((1, 2),), n_train_raw=1, n_train_jpeg=1, n_val=1, n_test=1)
    root = ensure_dataset(run, cfg, "uot")
    assert root.name == "smoke-uot-seed3" and root.parent == run.data_root.parent
    assert synth.is_complete(root, cfg, 3) and not run.data_root.exists()
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert ensure_dataset(run, cfg, "uot") == root and (root / "meta.json").stat().st_mtime_ns == stamp  # reused


def test_best_validation_epoch_is_exported_and_scored(tiny_data, tmp_path):
    from uotisp_lib.experiments import run_uot
    from uotisp_lib.inference import load_isp, render

    cfg = dataclasses.replace(st.base_config(dataclasses.replace(TINY_STUDY, epochs=3, lr_map=5e-2), "tinyraw", 0))
    _, trainer = run_uot(tiny_data, cfg, tmp_path / "r")
    hist = [h["val_psnr"] for h in trainer.state.history]
    best = int(np.argmax(hist)) + 1
    assert trainer.state.extra["best_epoch"] == best and trainer.state.extra["best_val_psnr"] == pytest.approx(max(hist))
    assert trainer.state.extra["selection"] == "val_psnr"  # validation ground truth: selected on PSNR
    assert json.loads((tmp_path / "r" / "best" / "isp.json").read_text())["meta"]["selected_on"] == "val_psnr"
    # the best export reproduces the best epoch's validation PSNR
    from uotisp_lib import metrics

    preds = render(load_isp(tmp_path / "r" / "best"), tiny_data.raw_val.images)
    got = metrics.summarise(metrics.evaluate(preds, tiny_data.gt_val.select(tiny_data.raw_val.stems)))["psnr"]
    assert got == pytest.approx(max(hist), abs=1e-3)
    rec = st.run_configured("uot", cfg, tiny_data, data=tiny_data, study=TINY_STUDY, arch="tinyraw", variant="x", seed=0,
                            path=tmp_path / "rec.json", run_dir=tmp_path / "r")
    assert rec["epoch"] == best and rec["n_test_images"] == 2
    # the test scores are those of the best export, and colour_w its colour distance to the ground truth
    test_preds = render(load_isp(tmp_path / "r" / "best"), tiny_data.raw_test.images)
    gt = tiny_data.gt_test.select(tiny_data.raw_test.stems)
    assert rec["colour_w"] == pytest.approx(st.colour_distance(test_preds, gt), rel=1e-6)
    want = st.per_image_scores(test_preds, gt, tiny_data.raw_test.stems)
    assert rec["psnr"] == pytest.approx(float(want.psnr.mean()), abs=1e-4)


def test_without_ground_truth_the_proxy_selects_the_best_export(tiny_data, tmp_path):
    """Real unpaired data: no gt anywhere. The proxy is computed on the val RAW alone, the best
    export is the epoch with the LOWEST proxy, and the state and export say so."""
    from uotisp_lib.experiments import run_uot
    from uotisp_lib.inference import load_isp, render
    from uotisp_lib.train import colour_distance

    data = dataclasses.replace(tiny_data, gt_train=None, gt_val=None, gt_test=None)
    cfg = st.base_config(dataclasses.replace(TINY_STUDY, epochs=3, lr_map=5e-2), "tinyraw", 0)
    row, trainer = run_uot(data, cfg, tmp_path / "r")
    proxy = [h["proxy"] for h in trainer.state.history]
    assert len(proxy) == 3 and all(np.isfinite(proxy)) and not any("val_psnr" in h for h in trainer.state.history)
    extra = trainer.state.extra
    assert extra["selection"] == "proxy" and extra["best_epoch"] == int(np.argmin(proxy)) + 1
    assert extra["best_score"] == pytest.approx(min(proxy)) and "best_val_psnr" not in extra
    best = tmp_path / "r" / "best"
    assert json.loads((best / "isp.json").read_text())["meta"]["selected_on"] == "proxy"
    # the best export reproduces the best epoch's proxy on the val RAW
    again = colour_distance(render(load_isp(best), data.raw_val.images), data.proxy.images)
    assert again == pytest.approx(min(proxy), abs=1e-4)
    assert np.isnan([row["psnr"], row["ssim"], row["de2000"]]).all() and row["proxy"] == pytest.approx(proxy[-1])


def test_validation_raw_falls_back_to_train_patches_without_a_val_split(tiny_data):
    from uotisp_lib.experiments import PROXY_TRAIN_PATCHES, validation_raw

    raw, gt = validation_raw(tiny_data)
    assert raw is tiny_data.raw_val and gt is tiny_data.gt_val
    raw, gt = validation_raw(dataclasses.replace(tiny_data, raw_val=None, gt_val=None))
    assert gt is None and raw.stems == tiny_data.raw_train.stems[:PROXY_TRAIN_PATCHES]


def test_has_ground_truth_prints_one_reason(tiny_data):
    from uotisp_lib.experiments import has_ground_truth, run_uot

    said: list[str] = []
    assert has_ground_truth(tiny_data, "test", "the bars", log=said.append) and said == []
    data = dataclasses.replace(tiny_data, gt_train=None, gt_val=None)
    assert not has_ground_truth(data, "val", "the cost check", log=said.append)
    assert not has_ground_truth(data, "train", "the paired upper bound", log=said.append)
    assert said == [f"skipped the cost check: {tiny_data.root}/val/gt has no ground truth",
                    f"skipped the paired upper bound: {tiny_data.root}/train/gt has no ground truth"]
    cfg = dataclasses.replace(st.base_config(TINY_STUDY, "tinyraw", 0), mode="paired")
    with pytest.raises(ValueError, match=r"train/gt: no ground truth; mode 'paired' needs train/gt/<stem>.png"):
        run_uot(data, cfg, tiny_data.root / "never")


def test_colour_distance_is_zero_on_the_truth_and_grows_with_a_colour_cast(tiny_data):
    gt = tiny_data.gt_test.images
    assert st.colour_distance(gt, gt) == 0.0
    cast = [st.colour_distance((gt * torch.tensor(g).view(1, 3, 1, 1)).clamp(0, 1), gt) for g in ([1.0, 1.0, 0.9], [1.0, 1.0, 0.7])]
    assert 0 < cast[0] < cast[1]


def test_discuss_verdict_groups_architectures_by_outcome():
    rows = [
        {"claim": "the committee helps", "arch": "colornet", "holds": "yes", "evidence": "PSNR +0.41 +- 0.19 dB"},
        {"claim": "the committee helps", "arch": "tinyraw", "holds": "not shown", "evidence": "PSNR +0.05 +- 0.20 dB"},
        {"claim": "unpaired rivals paired", "arch": "colornet", "holds": "no", "evidence": "-2.14 dB"},
    ]
    text = st.discuss_verdict(rows)
    assert text.splitlines() == [
        "- **the committee helps**: holds for colornet (PSNR +0.41 +- 0.19 dB). not shown for tinyraw (PSNR +0.05 +- 0.20 dB).",
        "- **unpaired rivals paired**: does not hold for colornet (-2.14 dB).",
    ]


@pytest.mark.slow
def test_run_study_in_worker_processes_equals_in_process(tiny_data, tmp_path):
    study = dataclasses.replace(TINY_STUDY, seeds=1)
    arms = ("reference", "unpaired UOT")
    one, pi_one = st.run_study(tiny_data, study, tmp_path / "a", variants=arms, log=None)
    two, pi_two = st.run_study(tiny_data, study, tmp_path / "b", variants=arms, workers=2, log=None)
    assert list(two.variant) == list(arms) and len(pi_two) == len(pi_one)
    # one intra-op thread in the workers: equal up to float summation order
    np.testing.assert_allclose(two[["psnr", "ssim", "de2000", "colour_w"]], one[["psnr", "ssim", "de2000", "colour_w"]], rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "b" / "results" / "tinyraw").glob("*.json")) == [
        "reference-seed0.json", "unpaired_UOT-seed0.json"]
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        st.run_jobs({}, workers=0)
