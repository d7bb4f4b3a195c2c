"""Scene sources and the synthetic UP-ISP benchmark: layout, counts, values, determinism, cutting."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from uotisp_lib import config
from uotisp_lib.cli import main
from uotisp_lib.data import build_benchmark, ensure_dataset
from uotisp_lib.data import camera as cm
from uotisp_lib.data import sources as src
from uotisp_lib.data import synth

SMOKE = config.get_profile("smoke").synth
TINY = dataclasses.replace(SMOKE, patch=4, layouts=((1, 2),), n_train_raw=1, n_train_jpeg=1, n_val=0, n_test=0)
STEM = re.compile(r"s\d{4}_\d+")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return build_benchmark(tmp_path_factory.mktemp("bench") / "smoke", SMOKE, 0)


@pytest.fixture(scope="module")
def meta(bench) -> dict:
    return json.loads((bench / "meta.json").read_text())


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stitch(patches: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    return np.concatenate([np.concatenate(patches[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def load_patches(root: Path, rec: dict, folder: str, ext: str) -> list[np.ndarray]:
    paths = [root / rec["split"] / folder / f"{rec['id']}_{i}{ext}" for i in range(rec["n_patches"])]
    return [np.load(p) if ext == ".npy" else iio.imread(p) for p in paths]


# ------------------------------------------------------------------------------------ sources
def test_builtin_photos_load_offline_with_credits():
    photos = src.builtin_photos()
    assert [p.name for p in photos] == [f"skimage:{n}" for n in src.SKIMAGE_PHOTOS]
    for p in photos:
        assert p.image.dtype == np.float32 and p.image.ndim == 3 and p.image.shape[2] == 3
        assert 0.0 <= p.image.min() and p.image.max() <= 1.0 and p.image.std() > 0.05
        assert p.credit and p.licence
    with pytest.raises(ValueError, match=r"unknown photo\(s\) \['lena'\]"):
        src.builtin_photos(["lena"])


def test_folder_source_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path / 'nope'))}: photo folder not found"):
        src.folder_source(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}: no photos found; expected JPEG or PNG"):
        src.folder_source(tmp_path)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg: cannot read image"):
        src.folder_source(tmp_path)


def test_folder_source_reads_gray_and_rgba(tmp_path):
    iio.imwrite(tmp_path / "a.png", np.full((10, 12), 255, np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((9, 9, 4), np.uint8))
    a, b = src.folder_source(tmp_path)
    assert a.name == "folder:a.png" and a.image.shape == (10, 12, 3) and a.image.min() == 1.0
    assert b.image.shape == (9, 9, 3) and b.image.max() == 0.0


def test_sample_scene_is_deterministic_and_respects_the_region():
    photos = src.builtin_photos(["chelsea"])
    a, info = src.sample_scene_info(np.random.default_rng(3), 40, 60, photos, region=(0.5, 1.0))
    b = src.sample_scene(np.random.default_rng(3), 40, 60, photos, region=(0.5, 1.0))
    c = src.sample_scene(np.random.default_rng(4), 40, 60, photos, region=(0.5, 1.0))
    assert a.shape == (40, 60, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    top, left, h, w = info["crop"]
    pw = photos[0].image.shape[1]
    assert left >= round(0.5 * pw) and left + w <= pw and h / w == pytest.approx(40 / 60, rel=0.05)


def test_sample_scene_upsamples_small_photos():
    tiny = src.PhotoSource("tiny", np.random.default_rng(0).random((10, 10, 3), dtype=np.float32))
    out, info = src.sample_scene_info(np.random.default_rng(0), 64, 48, [tiny])
    assert out.shape == (64, 48, 3) and info["crop"][2] <= 10 and info["crop"][3] <= 10
    with pytest.raises(ValueError, match="expected at least one scene source"):
        src.sample_scene(np.random.default_rng(0), 8, 8, [])


def test_dead_leaves_deterministic_and_natural():
    pal = src.natural_palette(src.builtin_photos(), np.random.default_rng(0), k=64)
    dl = src.DeadLeavesSource(pal)
    a = src.dead_leaves(np.random.default_rng(1), 96, 64, dl)
    assert np.array_equal(a, src.dead_leaves(np.random.default_rng(1), 96, 64, dl))
    assert not np.array_equal(a, src.dead_leaves(np.random.default_rng(2), 96, 64, dl))
    assert a.shape == (96, 64, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    # many occluding disks: many distinct colours, and edges (not one flat colour)
    assert len(np.unique(a.reshape(-1, 3).round(2), axis=0)) > 50 and np.abs(np.diff(a, axis=0)).max() > 0.1


# ---------------------------------------------------------------------------------- benchmark
def test_layout_and_names(bench, meta):
    files = [p.relative_to(bench) for p in bench.rglob("*") if p.is_file()]
    assert Path("meta.json") in files
    for f in files:
        if f.name != "meta.json":
            assert f.parts[0] in ("train", "val", "test") and f.parts[1] in ("raws", "jpegs", "gt"), f
            assert STEM.fullmatch(f.stem) and f.suffix == {"raws": ".npy", "jpegs": ".jpg", "gt": ".png"}[f.parts[1]]
    for rec in meta["images"]:
        folders = ("raws", "gt") if rec["role"] == "raw" else ("jpegs",)
        ext = {"raws": ".npy", "gt": ".png", "jpegs": ".jpg"}
        for folder in folders:
            stems = sorted(p.stem for p in (bench / rec["split"] / folder).glob(f"{rec['id']}_*"))
            assert stems == sorted(f"{rec['id']}_{i}" for i in range(rec["layout"][0] * rec["layout"][1]))
            assert all((bench / rec["split"] / folder / f"{s}{ext[folder]}").is_file() for s in stems)
    assert not list(bench.parent.glob(".*tmp*")), "temporary build folder left behind"


def test_counts_per_split_match_config(bench, meta):
    by = {}
    for rec in meta["images"]:
        by.setdefault((rec["split"], rec["role"]), []).append(rec)
        assert tuple(rec["layout"]) in SMOKE.layouts
    assert {k: len(v) for k, v in by.items()} == {
        ("train", "raw"): SMOKE.n_train_raw,
        ("train", "jpeg"): SMOKE.n_train_jpeg,
        ("val", "raw"): SMOKE.n_val,
        ("test", "raw"): SMOKE.n_test,
    }
    patches = {k: sum(r["n_patches"] for r in v) for k, v in by.items()}
    counts = synth.count_files(bench)
    assert counts == meta["counts"]
    assert counts["train"] == {"raws": patches["train", "raw"], "gt": patches["train", "raw"], "jpegs": patches["train", "jpeg"]}
    assert counts["val"] == {"raws": patches["val", "raw"], "gt": patches["val", "raw"]}
    assert counts["test"] == {"raws": patches["test", "raw"], "gt": patches["test", "raw"]}
    n_proc = sum(r["scene"]["kind"] == "procedural" for r in by["train", "raw"])
    assert n_proc == round(SMOKE.procedural_fraction * SMOKE.n_train_raw)


def test_raw_values_dtype_and_sizes(bench, meta):
    p = SMOKE.patch
    for f in sorted(bench.glob("*/raws/*.npy")):
        raw = np.load(f)
        assert raw.dtype == np.uint16 and raw.shape == (p, p, 4) and int(raw.max()) <= 1023, f
    for f in sorted(bench.glob("*/gt/*.png")) + sorted(bench.glob("train/jpegs/*.jpg")):
        img = iio.imread(f)
        assert img.dtype == np.uint8 and img.shape == (2 * p, 2 * p, 3), f  # 2x the RAW size
    raws = np.stack([np.load(f) for f in sorted(bench.glob("train/raws/*.npy"))])
    assert raws.max() > 300 and raws.std() > 20  # real content, not a blank


def test_train_raws_and_jpegs_come_from_different_scenes(meta):
    raw_side = [r for r in meta["images"] if r["role"] == "raw"]
    jpeg_side = [r for r in meta["images"] if r["role"] == "jpeg"]
    assert not {r["id"] for r in raw_side} & {r["id"] for r in jpeg_side}
    for recs, (lo, hi) in ((raw_side, synth.RAW_REGION), (jpeg_side, synth.JPEG_REGION)):
        for r in recs:
            scene = r["scene"]
            if scene["kind"] == "photo":  # disjoint halves of each photo: no shared pixels
                width = meta["sources"][scene["source"]]["shape"][1]
                top, left, h, w = scene["crop"]
                assert round(lo * width) <= left and left + w <= round(hi * width), r["id"]
    seeds = [r["scene"]["seed"] for r in meta["images"] if r["scene"]["kind"] == "procedural"]
    assert len(seeds) == len(set(seeds))


def test_outliers_count_and_look_applied(bench, meta):
    outliers = meta["outliers"]
    assert len(outliers) == round(SMOKE.outlier_fraction * SMOKE.n_train_jpeg) >= 1
    assert set(outliers.values()) <= set(cm.OUTLIER_LOOKS)
    plans = {p.image_id: p for p in synth.plan_images(SMOKE, 0)}
    photos = src.builtin_photos()
    dead = src.DeadLeavesSource(src.natural_palette(photos, np.random.default_rng([0, 10**9 + 1])))
    oid = sorted(outliers)[0]
    rec = next(r for r in meta["images"] if r["id"] == oid)
    stored = stitch(load_patches(bench, rec, "jpegs", ".jpg"), *rec["layout"]).astype(np.float32)
    as_built, _ = synth.render_image(plans[oid], SMOKE, 0, photos, dead)
    as_phone, _ = synth.render_image(dataclasses.replace(plans[oid], look="phone"), SMOKE, 0, photos, dead)
    assert np.abs(stored - as_built["jpeg"]).mean() < 3.0  # JPEG q95 error only
    assert np.abs(stored - as_phone["jpeg"]).mean() > 10.0  # the outlier look was applied


def test_raw_patches_stitch_back_to_the_camera_model_output(bench, meta):
    rec = next(r for r in meta["images"] if r["role"] == "raw" and r["layout"][0] != r["layout"][1])
    rows, cols = rec["layout"]
    patches = load_patches(bench, rec, "raws", ".npy")
    full = stitch(patches, rows, cols)
    plan = next(p for p in synth.plan_images(SMOKE, 0) if p.image_id == rec["id"])
    photos = src.builtin_photos()
    dead = src.DeadLeavesSource(src.natural_palette(photos, np.random.default_rng([0, 10**9 + 1])))
    arrays, _ = synth.render_image(plan, SMOKE, 0, photos, dead)
    assert np.array_equal(full, arrays["raw"])
    # the clean camera model of the same scene (first draw of the image's stream) and recorded gains
    h, w = 2 * SMOKE.patch * rows, 2 * SMOKE.patch * cols
    sources = [dead] if rec["scene"]["kind"] == "procedural" else photos
    scene, info = src.sample_scene_info(np.random.default_rng([0, plan.index]), h, w, sources, synth.RAW_REGION)
    assert info == rec["scene"]
    x = torch.from_numpy(scene).permute(2, 0, 1)[None]
    clean = cm.forward(x, torch.tensor(rec["gains"]), noise=False)[0].permute(1, 2, 0).numpy() * 1023
    err = np.abs(full - clean).mean()
    assert err < 0.01 * 1023
    # reading the indices column-major instead puts patches in the wrong places: far larger error
    col_major = [patches[c * rows + r] for r in range(rows) for c in range(cols)]
    assert np.abs(stitch(col_major, rows, cols) - clean).mean() > 3 * err


def test_determinism_via_ensure_dataset_and_no_rebuild(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    run = config.resolve_run("smoke", seed=0, results_dir=tmp_path / "res")
    root = ensure_dataset(run)
    assert root == config.synthetic_root("smoke", 0)
    assert all_bytes(root) == all_bytes(bench)  # same seed + config -> byte-identical files

    def boom(*a, **k):
        raise AssertionError("rebuilt a complete benchmark")

    monkeypatch.setattr(synth, "build_benchmark", boom)
    assert ensure_dataset(run) == root


def test_cli_different_seed_gives_different_bytes(bench, tmp_path, capsys):
    out = tmp_path / "s1"
    assert main(["synth", "--profile", "smoke", "--out", str(out), "--seed", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("synth smoke seed 1: train raws=") and str(out) in line
    assert len(line.splitlines()) == 1
    a, b = all_bytes(bench), all_bytes(out)
    raw_keys = [k for k in a if k.endswith(".npy") and k in b]
    assert raw_keys and all(a[k] != b[k] for k in raw_keys[:5])
    assert json.loads(b["meta.json"])["seed"] == 1


def test_refuses_foreign_folder_and_replaces_own(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(synth.BenchmarkExistsError, match="mine: folder exists and is not empty"):
        build_benchmark(foreign, TINY, 0, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    assert main(["synth", "--out", str(foreign)]) == 2
    assert "folder exists and is not empty" in capsys.readouterr().err
    own = build_benchmark(tmp_path / "own", TINY, 0)
    assert synth.is_complete(own, TINY, 0) and not synth.is_complete(own, TINY, 1)
    build_benchmark(own, TINY, 1, overwrite=True)
    assert synth.is_complete(own, TINY, 1) and len(list(own.glob("train/raws/*.npy"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "own"]  # nothing left aside


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def fail_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    real = synth.render_image
    monkeypatch.setattr(synth, "render_image", fail_second)
    with pytest.raises(KeyboardInterrupt):
        build_benchmark(tmp_path / "b", TINY, 0)
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_real_folder_errors(tmp_path):
    run = config.resolve_run("smoke", data_root=str(tmp_path / "upisp"), results_dir=tmp_path / "res")
    with pytest.raises(FileNotFoundError, match=r"upisp: data folder not found; expected a dataset folder with train/ or test/"):
        ensure_dataset(run)
    (tmp_path / "upisp" / "photos").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"upisp: no train/ or test/ split; expected <root>/train/raws"):
        ensure_dataset(run)
    (tmp_path / "upisp" / "test" / "raws").mkdir(parents=True)
    assert ensure_dataset(run) == tmp_path / "upisp"


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match=r"outlier_fraction must lie in \[0, 1\]"):
        synth.plan_images(dataclasses.replace(SMOKE, outlier_fraction=1.5), 0)
    with pytest.raises(ValueError, match="layouts must be a non-empty list"):
        synth.plan_images(dataclasses.replace(SMOKE, layouts=()), 0)


def test_user_photo_folder_joins_the_sources(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    iio.imwrite(photos / "red.png", np.tile(np.array([200, 30, 30], np.uint8), (40, 50, 1)))
    out = build_benchmark(tmp_path / "b", TINY, 0, photo_dir=photos)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["photo_dir"] == str(photos) and meta["sources"]["folder:red.png"]["shape"] == [40, 50, 3]
    assert synth.is_complete(out, TINY, 0, photo_dir=photos) and not synth.is_complete(out, TINY, 0)
    with pytest.raises(ValueError, match="no photos found"):
        build_benchmark(tmp_path / "c", TINY, 0, photo_dir=tmp_path / "b" / "train")
