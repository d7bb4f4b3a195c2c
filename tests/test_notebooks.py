"""Every notebook runs under papermill in the smoke profile and writes what it promises (pyhf style).

Also checks that each Jupytext pair (.py percent <-> .ipynb) is in sync and committed output-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PY_FILES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))

#: notebook -> (tables it must write, figures it must write, extra papermill parameters runs)
EXPECTED: dict[str, dict] = {
    "00_data": {"tables": ["data_summary"], "figures": ["raw_channels", "camera_model", "target_look", "outliers"]},
    "01_preprocessing": {
        "tables": ["preprocessing_quality"],
        "figures": ["preprocessing_stages", "preprocessing_tradeoff", "demosaic_crops", "demosaic_de2000"],
    },
    "02_stitching": {
        "tables": ["stitching_benchmark", "stitching_accuracy"],
        "figures": ["stitched_images", "seam_landscape", "low_confidence"],
    },
    "03_matching": {
        "tables": ["matching_methods"],
        "figures": ["matching_topk", "transport_plans"],
    },
    "04_train_pseudo_pairs": {
        "tables": ["pseudo_pair_results"],
        "figures": ["loss_examples", "training_curves", "pseudo_pair_bars", "test_outputs", "colour_histograms", "de2000_maps"],
    },
    "05_train_uot": {
        "tables": ["uot_cost_check", "uot_run_unpaired_tinyraw", "uot_study", "uot_study_summary", "uot_verdict",
                   "uot_target_mass_unpaired"],
        "figures": ["uot_curves_unpaired", "uot_samples_unpaired", "uot_study", "uot_colour_histograms_unpaired",
                    "uot_de2000_unpaired", "uot_target_weights_unpaired", "uot_whole_0_unpaired", "uot_whole_de2000_0_unpaired"],
    },
    "06_ablations": {
        "tables": ["ablation_runs", "ablation_summary", "ablation_outliers"],
        "figures": ["ablation_groups", "ablation_outliers"],
    },
}

#: further runs of a notebook with other parameters: (notebook, parameters, tables, figures)
EXTRA_RUNS = [
    ("05_train_uot", {"mode": "paired", "compare": False}, ["uot_run_paired_tinyraw", "uot_target_mass_paired"],
     ["uot_curves_paired", "uot_samples_paired", "uot_colour_histograms_paired", "uot_de2000_paired", "uot_target_weights_paired",
      "uot_whole_0_paired", "uot_whole_de2000_0_paired"]),
]


def _cells(nb: dict) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"]).strip()) for c in nb["cells"]]


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in PY_FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_pair_in_sync_and_output_free(py):
    import jupytext

    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb} missing: run 'jupytext --sync {py}'"
    committed = json.loads(ipynb.read_text())
    from_py = json.loads(jupytext.writes(jupytext.read(py), fmt="ipynb"))
    assert _cells(committed) == _cells(from_py), f"{ipynb} differs from {py}: run 'jupytext --sync {py}'"
    assert not any(c.get("outputs") for c in committed["cells"]), f"{ipynb} has outputs: strip them"
    assert committed["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in committed["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{ipynb}: exactly one cell must be tagged 'parameters'"
    src = "".join(tagged[0]["source"])
    for name in ("profile", "data_root", "device", "seed", "results_dir"):
        assert f"{name} =" in src, f"{ipynb}: parameters cell lacks {name!r}"


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("uotisp-cache")


def _run(nb_name: str, tmp_path: Path, cache: Path, monkeypatch, **params) -> Path:
    import papermill as pm

    monkeypatch.setenv("UOTISP_CACHE", str(cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    results = tmp_path / "results" / "smoke"
    pm.execute_notebook(
        str(NOTEBOOKS / f"{nb_name}.ipynb"),
        str(tmp_path / f"{nb_name}.out.ipynb"),
        parameters={"profile": "smoke", "results_dir": str(results), **params},
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
    )
    return results


def _check_outputs(nb_name: str, results: Path, tables: list[str], figures: list[str]) -> None:
    for table in tables:
        df = pd.read_csv(results / "tables" / f"{table}.csv")
        assert len(df) > 0 and not df.isna().all(axis=None), f"{nb_name}: table {table} is empty"
        meta = json.loads((results / "tables" / f"{table}.json").read_text())
        assert meta["run"]["profile"]["name"] == "smoke" and "versions" in meta
    for fig in figures:
        png = results / "figures" / f"{fig}.png"
        assert png.read_bytes()[:4] == b"\x89PNG", f"{nb_name}: figure {fig} missing"


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("nb_name", sorted(EXPECTED))
def test_notebook_runs_and_writes_results(nb_name, tmp_path, synth_cache, monkeypatch):
    results = _run(nb_name, tmp_path, synth_cache, monkeypatch)
    _check_outputs(nb_name, results, EXPECTED[nb_name]["tables"], EXPECTED[nb_name]["figures"])
    check = NOTEBOOK_CHECKS.get(nb_name)
    if check:
        check(results)


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("nb_name, params, tables, figures", EXTRA_RUNS, ids=lambda v: str(v))
def test_notebook_with_other_parameters(nb_name, params, tables, figures, tmp_path, synth_cache, monkeypatch):
    results = _run(nb_name, tmp_path, synth_cache, monkeypatch, **params)
    _check_outputs(nb_name, results, tables, figures)


@pytest.fixture(scope="session")
def smoke_benchmark(tmp_path_factory) -> Path:
    """The smoke benchmark (seed 0), built once, for the real-data layouts made from it."""
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    return build_benchmark(tmp_path_factory.mktemp("smoke") / "upisp", get_profile("smoke").synth, seed=0)


@pytest.fixture(scope="session")
def unpaired_root(smoke_benchmark, tmp_path_factory) -> Path:
    """Real unpaired data as a user has it: the smoke benchmark with gt/ and meta.json removed, val
    renamed dev (train/raws, train/jpegs, dev/raws, test/raws)."""
    import shutil

    root = Path(shutil.copytree(smoke_benchmark, tmp_path_factory.mktemp("unpaired") / "upisp"))
    for gt in root.glob("*/gt"):
        shutil.rmtree(gt)
    (root / "meta.json").unlink()
    (root / "val").rename(root / "dev")
    return root


def _printed(out: Path, prefix: str) -> list[str]:
    """The lines an executed notebook printed that start with ``prefix``."""
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stdout")
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
def test_notebooks_03_to_05_on_unpaired_data_without_ground_truth(unpaired_root, tmp_path, synth_cache, monkeypatch):
    """Notebooks 03-05 on a UP-ISP folder with no ground truth at all: every ground-truth step is
    skipped with one printed line naming the missing folder, the tables hold a finite proxy, and
    the best export is selected on the proxy."""
    root = unpaired_root
    results = {nb: _run(nb, tmp_path, synth_cache, monkeypatch, data_root=str(root))
               for nb in ("03_matching", "04_train_pseudo_pairs", "05_train_uot")}
    skipped = {nb: _printed(tmp_path / f"{nb}.out.ipynb", "skipped ") for nb in results}
    match = pd.read_csv(results["03_matching"] / "tables" / "matching_methods.csv").set_index("method")
    assert set(match.index) == {"fgw", "ot", "uot", "knn", "random"} and "pair_quality" not in match
    assert match.loc["ot", "image_usage_entropy"] > 0.9 > match.loc["knn", "image_usage_entropy"]  # as with meta.json
    assert skipped["03_matching"] == [
        f"skipped pair_quality: {root} is not our synthetic benchmark, so the true scene of each image is unknown"]
    pp = pd.read_csv(results["04_train_pseudo_pairs"] / "tables" / "pseudo_pair_results.csv")
    assert set(pp.pairing) == {"random", "kNN", "OT (FGW)"} and len(pp) == 7  # no paired upper bound
    assert pp[["psnr", "ssim", "de2000"]].isna().all(axis=None) and (pp.proxy > 0).all() and pp.proxy.lt(10).all()
    assert skipped["04_train_pseudo_pairs"] == [
        f"skipped the paired upper bound: {root}/train/gt has no ground truth",
        f"skipped the bar chart of the test metrics: {root}/test/gt has no ground truth",
        f"skipped the test renderings beside the ground truth: {root}/test/gt has no ground truth",
    ]
    uot_dir = results["05_train_uot"]
    run = pd.read_csv(uot_dir / "tables" / "uot_run_unpaired_tinyraw.csv")
    assert len(run) == 1 and run.psnr.isna().all() and 0 < run.proxy[0] < 10
    assert not (uot_dir / "tables" / "uot_study.csv").exists()
    assert skipped["05_train_uot"] == [
        f"skipped the cost check: {root}/dev/gt has no ground truth",
        f"skipped the sample outputs beside the ground truth: {root}/test/gt has no ground truth",
        f"skipped the whole test images beside the ground truth: {root}/test/gt has no ground truth",
        f"skipped the study (its paired arms train on train/gt): {root}/train/gt has no ground truth",
    ]
    (best,) = (uot_dir / "runs" / "uot").glob("*/best/isp.json")
    assert json.loads(best.read_text())["meta"]["selected_on"] == "proxy"
    history = pd.read_csv(best.parent.parent / "history.csv")
    assert "val_psnr" not in history and history.proxy.notna().all()
    assert json.loads(best.read_text())["meta"]["epoch"] == int(history.proxy.idxmin()) + 1


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
def test_notebooks_on_a_zurich_folder(smoke_benchmark, tmp_path, synth_cache, monkeypatch):
    """Notebooks 00, 04 (with its paired upper bound) and 05 (mode=paired) on a Zurich RAW-to-RGB
    folder (huawei_raw Bayer PNGs + canon JPEGs, no val split), the layout detected from the folder."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from zurich_writer import write_zurich

    root = write_zurich(smoke_benchmark, tmp_path / "zurich")
    n_train, n_test = (len(list((smoke_benchmark / s / "raws").glob("*.npy"))) for s in ("train", "test"))
    res = _run("00_data", tmp_path, synth_cache, monkeypatch, data_root=str(root))
    summary = pd.read_csv(res / "tables" / "data_summary.csv").set_index("split")
    assert list(summary.index) == ["train", "test"]  # Zurich has no val split
    assert summary.loc["train", ["raw_images", "raw_patches", "jpeg_images", "gt_images"]].tolist() == [n_train] * 4
    assert summary.loc["test", ["raw_images", "gt_images", "jpeg_images"]].tolist() == [n_test, n_test, 0]
    assert summary.raw_max.max() <= 1023 and (res / "figures" / "ground_truth.png").is_file()
    res = _run("04_train_pseudo_pairs", tmp_path, synth_cache, monkeypatch, data_root=str(root))
    pp = pd.read_csv(res / "tables" / "pseudo_pair_results.csv").set_index("pairing")
    assert pp[["psnr", "ssim", "de2000", "proxy"]].notna().all(axis=None)
    upper = pp.loc["true pairs (upper bound)"]
    assert upper.model == "colornet (conv1x1)" and upper.psnr > pp[pp.model == "colornet (conv1x1)"].loc["random", "psnr"]
    res = _run("05_train_uot", tmp_path, synth_cache, monkeypatch, data_root=str(root), mode="paired", compare=False)
    row = pd.read_csv(res / "tables" / "uot_run_paired_tinyraw.csv").iloc[0]
    assert row["mode"] == "paired" and 10 < row.psnr < 60 and 0 < row.proxy < 10
    (best,) = (res / "runs" / "uot").glob("paired-*/best/isp.json")
    assert json.loads(best.read_text())["meta"]["selected_on"] == "proxy"  # no val split: selected on the proxy


def _write_dng_folder(root: Path) -> Path:
    """A tiny DNG folder: train/ (4 DNGs), val/ and test/ (2 each), RGGB 64x96 mosaics (packed 32x48:
    6 patches of 16), each with its JPEG rendering (twice the packed size) beside it, and 3 unpaired
    target JPEGs of 64x96 in train/jpegs/ (6 tiles of 32 each). Scenes are smooth, so the renderings
    are learnable."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dng_writer import PIDNG_CFA, write_dng

    from uotisp_lib import io as uio

    yy, xx = np.mgrid[0:32, 0:48] / np.array([32.0, 48.0])[:, None, None]
    for k, (split, name) in enumerate([("train", f"t{i}") for i in range(4)] + [("val", "v0"), ("val", "v1"),
                                                                                  ("test", "e0"), ("test", "e1")]):
        ph = 0.7 * k
        rgb = np.stack([0.5 + 0.4 * np.sin(3 * xx + ph), 0.5 + 0.4 * np.cos(2 * yy + xx + ph),
                        0.5 + 0.4 * np.sin(4 * yy - ph)], axis=-1)  # packed-resolution scene, [32, 48, 3] in (0, 1)
        mosaic = np.zeros((64, 96), np.uint16)
        for (dy, dx), c in zip(((0, 0), (0, 1), (1, 0), (1, 1)), (0, 1, 1, 2)):
            mosaic[dy::2, dx::2] = np.rint(64 + rgb[..., c] * (1023 - 64))
        (root / split).mkdir(parents=True, exist_ok=True)
        write_dng(root / split / f"{name}.dng", mosaic, PIDNG_CFA["RGGB"], [64] * 4, white=1023)
        look = np.clip(rgb[..., [0, 1, 2]] * np.array([1.1, 1.0, 0.85]), 0, 1) ** (1 / 2.2)
        img = np.repeat(np.repeat(np.rint(look * 255).astype(np.uint8), 2, axis=0), 2, axis=1)  # 64x96
        uio.save_image(root / split / f"{name}.jpg", img, quality=95)
        if split == "train" and k < 3:
            uio.save_image(root / "train" / "jpegs" / f"look{k}.jpg", np.ascontiguousarray(img[:, ::-1]), quality=95)
    return root


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
def test_notebooks_on_a_dng_folder(tmp_path, synth_cache, monkeypatch):
    """Notebooks 00, 04 and 05 (paired and unpaired) on a folder of DNGs cut into 16x16 patches:
    the table of 00 counts DNGs and patches, the grid of each image is its DNG's (no inference),
    04 runs random pairing and the paired upper bound (pair graphs skipped in one printed line),
    05 scores both modes on the test renderings."""
    pytest.importorskip("rawpy")
    pytest.importorskip("pidng")
    root = _write_dng_folder(tmp_path / "dngs")
    res = _run("00_data", tmp_path, synth_cache, monkeypatch, data_root=str(root), patch=16)
    summary = pd.read_csv(res / "tables" / "data_summary.csv").set_index("split")
    assert list(summary.index) == ["train", "val", "test"]
    cols = ["raw_images", "raw_patches", "gt_images", "gt_patches", "jpeg_images", "jpeg_patches"]
    assert summary.loc["train", cols].tolist() == [4, 24, 4, 24, 3, 18]
    assert summary.loc["val", cols].tolist() == summary.loc["test", cols].tolist() == [2, 12, 2, 12, 0, 0]
    assert summary.raw_min.min() >= 0 and 900 < summary.raw_max.max() <= 1023
    for fig in ("raw_channels", "outliers", "ground_truth"):
        assert (res / "figures" / f"{fig}.png").is_file(), fig
    assert _printed(tmp_path / "00_data.out.ipynb", "skipped ") == []

    res = _run("04_train_pseudo_pairs", tmp_path, synth_cache, monkeypatch, data_root=str(root), patch=16)
    pp = pd.read_csv(res / "tables" / "pseudo_pair_results.csv")
    assert list(zip(pp.model, pp.pairing)) == [("colornet (conv1x1)", "random"), ("colornet (lut3d)", "random"),
                                               ("tinyraw (organisers')", "random"),
                                               ("colornet (conv1x1)", "true pairs (upper bound)")]
    assert np.isfinite(pp[["psnr", "ssim", "de2000", "proxy"]]).all(axis=None) and (pp.psnr > 0).all()
    assert pp.psnr.iloc[3] > pp.psnr.iloc[0]  # the paired upper bound beats random pairing
    assert _printed(tmp_path / "04_train_pseudo_pairs.out.ipynb", "skipped ") == [
        f"skipped the kNN and OT (FGW) pair graphs: {root} is a DNG folder (pair graphs are built on UP-ISP patch files); "
        "random pairing only"]
    assert (res / "figures" / "test_outputs.png").is_file()

    for mode in ("paired", "unpaired"):
        res = _run("05_train_uot", tmp_path, synth_cache, monkeypatch, data_root=str(root), patch=16, mode=mode,
                   compare=False)
        row = pd.read_csv(res / "tables" / f"uot_run_{mode}_tinyraw.csv").iloc[0]
        assert row["mode"] == mode and np.isfinite(row.psnr) and 5 < row.psnr < 60 and 0 < row.proxy < 10
        for fig in (f"uot_samples_{mode}", f"uot_whole_0_{mode}", f"uot_whole_1_{mode}"):
            assert (res / "figures" / f"{fig}.png").is_file(), fig
        (best,) = (res / "runs" / "uot").glob(f"{mode}-*/best/isp.json")
        assert json.loads(best.read_text())["meta"]["selected_on"] == "val_psnr"  # the val split has renderings
    assert (res / "tables" / "uot_cost_check.csv").is_file()


def _check_00(results: Path) -> None:
    df = pd.read_csv(results / "tables" / "data_summary.csv").set_index("split")
    # smoke profile: 4 train RAW images, 4 JPEG images, 2 val, 2 test (see config.SynthConfig)
    assert df.loc["train", "raw_images"] == 4 and df.loc["train", "jpeg_images"] == 4
    assert df.loc["val", "gt_images"] == 2 and df.loc["test", "gt_images"] == 2
    assert (df["raw_max"] <= 1023).all()


def _check_01(results: Path) -> None:
    df = pd.read_csv(results / "tables" / "preprocessing_quality.csv").set_index("backend")
    assert {"malvar+none", "bilinear+none", "demosaicnet+none"} <= set(df.index)
    assert (df["psnr"] > 20).all() and (df["ssim"] <= 1).all() and (df["mp_per_s"] > 0).all()
    # learned demosaicing beats bilinear against the clean sensor image
    assert df.loc["demosaicnet+none", "psnr"] > df.loc["bilinear+none", "psnr"]


def _check_02(results: Path) -> None:
    acc = pd.read_csv(results / "tables" / "stitching_accuracy.csv")
    challenge = {"6x7", "7x6", "5x7", "7x5", "2x7", "7x2"}
    assert challenge <= set(acc["layout"]), "every challenge layout is in the sweep"
    assert (acc["correct_evidence"] == 1.0).all() and (acc["min_confidence_evidence"] > 0.05).all()
    bench = pd.read_csv(results / "tables" / "stitching_benchmark.csv")
    assert (bench.loc[bench.method == "evidence", "correct"] == 1.0).all()


def _check_03(results: Path) -> None:
    df = pd.read_csv(results / "tables" / "matching_methods.csv").set_index("method")
    assert set(df.index) == {"fgw", "ot", "uot", "knn", "random"}
    # kNN collapses: every source image on one target image of the smoke set; OT spreads them
    assert df.loc["knn", "image_max_in_degree"] > df.loc["ot", "image_max_in_degree"]
    assert df.loc["ot", "image_usage_entropy"] > 0.9 > df.loc["knn", "image_usage_entropy"]
    assert (df["random_floor"] > 0).all() and df["pair_quality"].notna().all()


def _check_04(results: Path) -> None:
    df = pd.read_csv(results / "tables" / "pseudo_pair_results.csv")
    assert {"random", "kNN", "OT (FGW)", "true pairs (upper bound)"} <= set(df["pairing"])
    params = dict(zip(df["model"], df["params"]))
    assert params["colornet (conv1x1)"] == 7055 and params["colornet (lut3d)"] == 7055 + 107811
    assert params["tinyraw (organisers')"] == 3060
    assert df[["psnr", "ssim", "de2000"]].notna().all(axis=None)
    # standard errors over the 2 smoke test images: finite and positive (the bars' error bars)
    assert (df[["psnr_se", "ssim_se", "de2000_se"]] > 0).all(axis=None)


def _check_05(results: Path) -> None:
    from uotisp_lib.study import VARIANTS

    rows = pd.read_csv(results / "tables" / "uot_study.csv")
    assert list(rows.columns[:9]) == ["arch", "variant", "seed", "psnr", "ssim", "de2000", "colour_w", "psnr_no_offset",
                                      "n_test_images"]
    assert list(dict.fromkeys(rows["variant"])) == list(VARIANTS)  # every arm, named exactly
    assert rows[["psnr", "ssim", "de2000"]].notna().all(axis=None) and (rows["params"] == 3060).all()
    summary = pd.read_csv(results / "tables" / "uot_study_summary.csv").set_index("variant")
    assert summary.loc["paired L1", "d_psnr"] == 0.0 and summary["n_seeds"].min() >= 1
    checks = pd.read_csv(results / "tables" / "uot_cost_check.csv")
    assert {"structure", "quadratic"} <= set(checks["cost"]) and checks["truth_ratio"].is_monotonic_increasing
    verdict = pd.read_csv(results / "tables" / "uot_verdict.csv")
    assert set(verdict["holds"]) <= {"yes", "no", "not shown"}


def _check_06(results: Path) -> None:
    from uotisp_lib import ablations
    from uotisp_lib.config import get_profile

    rows = pd.read_csv(results / "tables" / "ablation_runs.csv")
    ablate = get_profile("smoke").ablate
    assert list(rows.columns) == list(ablations.ROW_COLUMNS)
    assert set(rows.group) == set(ablate.groups) and (rows.groupby(["group", "arm"]).seed.nunique() == ablate.seeds).all()
    summary = pd.read_csv(results / "tables" / "ablation_summary.csv", keep_default_na=False)
    assert (pd.to_numeric(summary[summary.vs == ""].d_psnr) == 0).all()
    assert set(ablate.arms) <= set(summary.group + "/" + summary.arm)
    curve = pd.read_csv(results / "tables" / "ablation_outliers.csv")
    # smoke: 3 target images, 1 an outlier; 40% asked keeps it and round(1 x 0.6 / 0.4) = 1 typical image: 50%
    assert curve.outlier_fraction.tolist() == [0.0, 0.5]


NOTEBOOK_CHECKS = {"00_data": _check_00, "01_preprocessing": _check_01, "02_stitching": _check_02,
                   "03_matching": _check_03, "04_train_pseudo_pairs": _check_04, "05_train_uot": _check_05,
                   "06_ablations": _check_06}
