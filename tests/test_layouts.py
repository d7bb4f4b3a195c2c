"""Tests for uotisp_lib.data.layouts: stems, grouping, UP-ISP and Zurich folder layouts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from uotisp_lib import io as uio
from uotisp_lib.data import layouts as L

# ------------------------------------------------------------------------------------- stems


@pytest.mark.parametrize(
    "stem, expected",
    [("a_b_12", ("a_b", 12)), ("x_007", ("x", 7)), ("img_0", ("img", 0)), ("_a_3", ("_a", 3)), ("a__1", ("a_", 1))],
)
def test_parse_stem_splits_on_the_last_underscore(stem, expected):
    assert L.parse_stem(stem) == expected


@pytest.mark.parametrize("stem", ["x", "x_", "_3", "x_-1", "x_1.5", "x_ 3", "x_3 ", "x_\u0663", "x_1a", ""])
def test_parse_stem_rejects_stems_without_a_numeric_suffix(stem):
    with pytest.raises(ValueError, match=rf"stem {re.escape(repr(stem))}: expected <image_id>_<index> with a non-negative integer index"):
        L.parse_stem(stem)


def test_natural_key_orders_numbers_numerically():
    stems = ["img_10", "img_2", "a_b_1", "img_1", "a_10", "a_9"]
    assert sorted(stems, key=L.natural_key) == ["a_9", "a_10", "a_b_1", "img_1", "img_2", "img_10"]


def test_group_stems_sorts_by_index_not_by_text():
    stems = ["b_1", "a_10", "a_2", "b_0"] + [f"a_{i}" for i in (0, 1, 3, 4, 5, 6, 7, 8, 9, 11)]
    groups = L.group_stems(stems)
    assert list(groups) == ["a", "b"]
    assert groups["a"] == [f"a_{i}" for i in range(12)] and groups["b"] == ["b_0", "b_1"]


def test_group_stems_missing_indices_exact_message():
    with pytest.raises(L.LayoutError, match=r"^image 'img_x': missing indices \[1, 3\] \(expected exactly 0\.\.4\)$"):
        L.group_stems(["img_x_0", "img_x_2", "img_x_4"])
    with pytest.raises(L.LayoutError, match=r"^image 'p': missing indices \[0\] \(expected exactly 0\.\.1\)$"):
        L.group_stems(["p_1"])


def test_group_stems_duplicate_indices_exact_message():
    with pytest.raises(L.LayoutError, match=r"^image 'x': duplicated indices \[1\]$"):
        L.group_stems(["x_0", "x_1", "x_01"])
    with pytest.raises(
        L.LayoutError,
        match=r"^image 'x': duplicated indices \[0\]; missing indices \[1, 2, 3, 4, 5\] and 1 more \(expected exactly 0\.\.7\)$",
    ):
        L.group_stems(["x_0", "x_00", "x_7"])


def test_group_stems_strict_rejects_unparseable_stems():
    with pytest.raises(ValueError, match=r"stem 'oops': expected <image_id>_<index>"):
        L.group_stems(["a_0", "oops"])


def test_group_stems_lenient_returns_good_groups_and_problems():
    stems = ["good_1", "good_0", "gap_0", "gap_2", "dup_0", "dup_00", "oops", "ok2_0"]
    groups, problems = L.group_stems(stems, strict=False)
    assert groups == {"good": ["good_0", "good_1"], "ok2": ["ok2_0"]}
    assert problems == [
        L.LayoutProblem("oops", "unparseable", "stem 'oops': expected <image_id>_<index> with a non-negative integer index"),
        L.LayoutProblem("dup", "duplicate", "duplicated indices [0]"),
        L.LayoutProblem("gap", "missing", "missing indices [1] (expected exactly 0..2)"),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        problems[0].kind = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------- UP-ISP


def _raw(value: int) -> np.ndarray:
    return np.full((2, 2, 4), value, np.uint16)


def _make_upisp(root: Path, with_gt: bool = True) -> None:
    """train: image 'scene_a' 12 patches (idx 10, 11 sort before 2 as text), 'b' 2; val: 'v' 3."""
    for split, images in {"train": {"scene_a": 12, "b": 2}, "val": {"v": 3}}.items():
        for img, n in images.items():
            for i in range(n):
                value = 100 * (img == "b") + 200 * (split == "val") + i  # encodes the stem
                uio.save_raw(root / split / "raws" / f"{img}_{i}.npy", _raw(value))
                if with_gt:
                    uio.save_image(root / split / "gt" / f"{img}_{i}.png", np.full((4, 4, 3), value, np.uint8))
    for i in range(3):
        uio.save_image(root / "train" / "jpegs" / f"other_{i}.jpg", np.zeros((4, 4, 3), np.uint8))


def test_scan_upisp_lists_splits_and_stems_in_natural_order(tmp_path):
    _make_upisp(tmp_path)
    (tmp_path / "train" / "raws" / ".DS_Store").write_bytes(b"")  # hidden: ignored
    (tmp_path / "train" / "raws" / "notes.txt").write_text("x")  # other suffix: ignored
    lay = L.scan_upisp(tmp_path)
    assert lay.splits == ("train", "val")
    assert lay.raw_stems("train") == ["b_0", "b_1"] + [f"scene_a_{i}" for i in range(12)]
    assert lay.images("train") == {"b": ["b_0", "b_1"], "scene_a": [f"scene_a_{i}" for i in range(12)]}
    assert list(lay.paths("train", "jpegs")) == ["other_0", "other_1", "other_2"]
    assert lay.paths("val", "jpegs") == {}
    assert lay.paths("val", "raws")["v_2"] == tmp_path / "val" / "raws" / "v_2.npy"


def test_paired_matches_by_stem_not_by_listing_position(tmp_path):
    _make_upisp(tmp_path)
    pairs = L.scan_upisp(tmp_path).paired("train")
    assert [s for s, _, _ in pairs] == ["b_0", "b_1"] + [f"scene_a_{i}" for i in range(12)]
    for stem, raw_path, gt_path in pairs:
        assert raw_path.stem == gt_path.stem == stem
        raw_value = int(uio.read_raw(raw_path)[0, 0, 0])
        assert int(uio.read_srgb(gt_path)[0, 0, 0]) == raw_value  # same encoded scene
    assert [int(uio.read_raw(p)[0, 0, 0]) for _, p, _ in pairs[2:]] == list(range(12))


def test_paired_without_ground_truth_lists_up_to_five_stems(tmp_path):
    _make_upisp(tmp_path)
    for i in (2, 3, 4, 5, 10, 11):
        (tmp_path / "train" / "gt" / f"scene_a_{i}.png").unlink()
    lay = L.scan_upisp(tmp_path)
    gt_dir = tmp_path / "train" / "gt"
    with pytest.raises(
        L.LayoutError,
        match=rf"^{re.escape(str(gt_dir))}: 6 RAW patches have no ground truth <stem>\.png: "
        r"\[scene_a_2, scene_a_3, scene_a_4, scene_a_5, scene_a_10\] and 1 more$",
    ):
        lay.paired("train")
    assert len(lay.paired("val")) == 3  # other splits unaffected


def test_paired_without_gt_folder(tmp_path):
    _make_upisp(tmp_path, with_gt=False)
    with pytest.raises(L.LayoutError, match=r"train/gt: no ground truth; paired mode needs train/gt/<stem>\.png"):
        L.scan_upisp(tmp_path).paired("train")


def test_images_reports_the_folder_and_the_bad_image(tmp_path):
    _make_upisp(tmp_path, with_gt=False)
    (tmp_path / "train" / "raws" / "scene_a_5.npy").unlink()
    lay = L.scan_upisp(tmp_path)
    with pytest.raises(L.LayoutError, match=rf"^{re.escape(str(tmp_path / 'train' / 'raws'))}: image 'scene_a': missing indices \[5\]"):
        lay.images("train")


def test_unknown_split_and_kind(tmp_path):
    _make_upisp(tmp_path, with_gt=False)
    lay = L.scan_upisp(tmp_path)
    with pytest.raises(L.LayoutError, match=r"test: no such split with files \(present: train, val\)"):
        lay.raw_stems("test")
    with pytest.raises(ValueError, match=r"unknown kind 'png'; expected one of raws, jpegs, gt"):
        lay.paths("train", "png")


def test_scan_upisp_empty_missing_and_wrong_layouts(tmp_path):
    with pytest.raises(L.LayoutError, match=rf"^{re.escape(str(tmp_path))}: no RAW patches found; expected <root>/<split>/raws/<img>_<idx>\.npy"):
        L.scan_upisp(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere: dataset folder does not exist; expected <root>/<split>/raws"):
        L.scan_upisp(tmp_path / "nowhere")
    (tmp_path / "train" / "raws").mkdir(parents=True)
    uio.save_image(tmp_path / "train" / "jpegs" / "x_0.jpg", np.zeros((2, 2, 3), np.uint8))
    uio.save_raw(tmp_path / "raws" / "x_0.npy", _raw(1))  # raws at the wrong depth
    with pytest.raises(L.LayoutError, match="no RAW patches found"):
        L.scan_upisp(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file: is not a folder"):
        L.scan_upisp(tmp_path / "file")


def test_scan_upisp_duplicate_stem_in_one_folder(tmp_path):
    _make_upisp(tmp_path, with_gt=False)
    uio.save_image(tmp_path / "train" / "jpegs" / "other_1.jpeg", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(L.LayoutError, match=r"jpegs: stem 'other_1' appears twice \(other_1\.(jpg|jpeg), other_1\.(jpeg|jpg)\)"):
        L.scan_upisp(tmp_path)


# ------------------------------------------------------------------------------------- Zurich


def _write_bayer_png(path: Path, mosaic: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, mosaic.astype(np.uint16))


def _make_zurich(root: Path, stems=("0", "1", "2", "10")) -> None:
    for split in ("train", "test"):
        for s in stems:
            _write_bayer_png(root / split / "huawei_raw" / f"{s}.png", np.full((4, 4), int(s), np.uint16))
            uio.save_image(root / split / "canon" / f"{s}.jpg", np.full((8, 8, 3), int(s), np.uint8))


def test_scan_zurich_pairs_by_stem_in_numeric_order(tmp_path):
    _make_zurich(tmp_path)
    lay = L.scan_zurich(tmp_path)
    assert lay.splits == ("train", "test")
    pairs = lay.paired("train")
    assert [s for s, _, _ in pairs] == ["0", "1", "2", "10"]
    for stem, raw_path, rgb_path in pairs:
        assert raw_path == tmp_path / "train" / "huawei_raw" / f"{stem}.png"
        assert rgb_path == tmp_path / "train" / "canon" / f"{stem}.jpg"
        assert int(L.read_zurich_raw(raw_path)[0, 0, 0]) == int(stem)


def test_scan_zurich_mismatch_and_missing_folders(tmp_path):
    _make_zurich(tmp_path)
    (tmp_path / "test" / "canon" / "2.jpg").unlink()
    with pytest.raises(L.LayoutError, match=r"test/canon: 1 RAW files have no <stem>\.jpg: \[2\]$"):
        L.scan_zurich(tmp_path)
    (tmp_path / "test" / "huawei_raw" / "2.png").unlink()
    (tmp_path / "test" / "huawei_raw" / "1.png").unlink()
    with pytest.raises(L.LayoutError, match=r"test/huawei_raw: 1 sRGB files have no <stem>\.png: \[1\]$"):
        L.scan_zurich(tmp_path)
    for p in (tmp_path / "test" / "canon").iterdir():
        p.unlink()
    (tmp_path / "test" / "canon").rmdir()
    with pytest.raises(L.LayoutError, match=r"test/canon: missing folder; expected <root>/train\|test/huawei_raw"):
        L.scan_zurich(tmp_path)
    with pytest.raises(L.LayoutError, match=rf"^{re.escape(str(tmp_path / 'empty'))}: no RAW/sRGB pairs found"):
        (tmp_path / "empty").mkdir()
        L.scan_zurich(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="absent: dataset folder does not exist"):
        L.scan_zurich(tmp_path / "absent")


def test_scan_zurich_single_split_and_unknown_split(tmp_path):
    _make_zurich(tmp_path / "z", stems=("3",))
    (tmp_path / "z" / "test" / "canon" / "3.jpg").unlink()
    (tmp_path / "z" / "test" / "huawei_raw" / "3.png").unlink()
    lay = L.scan_zurich(tmp_path / "z")  # empty test folders: no test split
    assert lay.splits == ("train",)
    with pytest.raises(L.LayoutError, match=r"test: no such split \(present: train\)"):
        lay.paired("test")


def test_read_zurich_raw_packs_rggb_and_validates(tmp_path):
    mosaic = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 1023]], np.uint16)
    _write_bayer_png(tmp_path / "0.png", mosaic)
    packed = L.read_zurich_raw(tmp_path / "0.png")
    assert packed.dtype == np.uint16 and packed.shape == (2, 2, 4)
    assert packed[0, 0].tolist() == [1, 2, 5, 6]  # R (0,0), Gr (0,1), Gb (1,0), B (1,1)
    assert packed[1, 1].tolist() == [11, 12, 15, 1023]
    _write_bayer_png(tmp_path / "1.png", np.where(mosaic == 1023, 4095, mosaic))
    with pytest.raises(uio.RawFormatError, match=r"1\.png: values outside the 10-bit range 0\.\.1023: found min 1, max 4095$"):
        L.read_zurich_raw(tmp_path / "1.png")
    uio.save_image(tmp_path / "2.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(uio.RawFormatError, match=r"2\.png: expected a 16-bit 1-channel Bayer PNG, got dtype uint8 shape \(4, 4, 3\)"):
        L.read_zurich_raw(tmp_path / "2.png")


def test_scan_dataset_detects_zurich_and_upisp(tmp_path):
    _make_zurich(tmp_path / "z")
    lay = L.scan_dataset(tmp_path / "z")
    assert lay.format == "zurich" and lay.splits == ("train", "test")
    assert set(lay.files["train"]) == {"raws", "gt", "jpegs"} and set(lay.files["test"]) == {"raws", "gt"}
    assert lay.images("train", "raws") == {"0": ["0"], "1": ["1"], "2": ["2"], "10": ["10"]}  # each file a whole image
    assert lay.paths("train", "jpegs") == lay.paths("train", "gt")  # the canon JPEGs: targets and ground truth
    raws = lay.read_raws(list(lay.paths("test", "raws").values()))
    assert raws.shape == (4, 2, 2, 4) and raws.dtype == np.uint16 and raws[:, 0, 0, 0].tolist() == [0, 1, 2, 10]
    assert lay.read_image("train", "raws", "10").shape == (1, 2, 2, 4)
    train = lay.summary()[0]
    assert (train["split"], train["raw_images"], train["gt_images"], train["jpeg_images"], train["raw_max"]) == ("train", 4, 4, 4, 10)
    _make_upisp(tmp_path / "u")
    assert L.scan_dataset(tmp_path / "u").format == "upisp"
    (tmp_path / "z" / "test" / "canon").rename(tmp_path / "z" / "test" / "sony")
    with pytest.raises(L.LayoutError, match=r"test/canon: missing folder; expected <root>/train\|test/huawei_raw"):
        L.scan_dataset(tmp_path / "z")  # the detected layout's own one-line error


def test_read_image_and_summary_of_a_built_benchmark(tmp_path):
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark
    from uotisp_lib.data.synth import read_meta

    cfg = get_profile("smoke").synth
    root = build_benchmark(tmp_path / "b", cfg, seed=1)
    lay = L.scan_upisp(root)
    meta = read_meta(root)
    first = next(m for m in meta["images"] if m["role"] == "raw" and m["split"] == "val")
    rows, cols = first["layout"]
    raw = lay.read_image("val", "raws", first["id"])
    assert raw.shape == (rows * cols, cfg.patch, cfg.patch, 4) and raw.dtype == np.uint16
    t = lay.read_patches("val", "raws", first["id"])
    assert t.shape == (rows * cols, 4, cfg.patch, cfg.patch) and t.dtype == torch.float32
    assert np.array_equal(t.permute(0, 2, 3, 1).numpy(), raw.astype(np.float32))
    assert float(lay.read_patches("val", "gt", first["id"]).max()) <= 1.0
    gt = lay.read_image("val", "gt", first["id"])
    assert gt.shape == (rows * cols, 2 * cfg.patch, 2 * cfg.patch, 3) and gt.dtype == np.uint8
    summary = {r["split"]: r for r in lay.summary()}
    assert summary["train"]["raw_images"] == cfg.n_train_raw and summary["train"]["jpeg_images"] == cfg.n_train_jpeg
    assert summary["test"]["gt_images"] == cfg.n_test and 0 <= summary["val"]["raw_min"] <= summary["val"]["raw_max"] <= 1023
    with pytest.raises(L.LayoutError, match="no image 'nope'"):
        lay.read_image("val", "raws", "nope")
