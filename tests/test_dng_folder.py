"""A folder of DNGs (issue 11, part 4): detected by ``scan_dataset``, cut into packed patches on the
fly with each file's own levels, renderings cut into aligned sRGB tiles, one-line errors for bad
sizes, and ``uotisp train`` / ``uotisp eval`` end to end. DNGs are written here with pidng."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import one_line_error
from dng_writer import PIDNG_CFA, write_dng
from uotisp_lib import io as uio
from uotisp_lib.cli import main
from uotisp_lib.data.datasets import load_raw_patches, load_srgb_patches
from uotisp_lib.data.dng_folder import cut_tiles, rendering_offset
from uotisp_lib.data.layouts import LayoutError, scan_dataset

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.xdist_group("cli_train")]
pytest.importorskip("rawpy")
pytest.importorskip("pidng")

WHITE = 1023
#: (row, col) of R, Gr, Gb, B in the 2x2 block at the packing's origin (a red site)
SITES = ((0, 0), (0, 1), (1, 0), (1, 1))
#: red site of each file pattern: the packing drops these rows / columns at the top / left
CROP = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}
#: black levels of the packed channels R, Gr, Gb, B
BLACK = (60, 62, 64, 66)


def _site_black(pattern: str) -> list[int]:
    """Per-site (2x2 row-major) black levels giving the packed channels :data:`BLACK`."""
    red_row = pattern.index("R") // 2
    out = []
    for i, c in enumerate(pattern):
        out.append({"R": BLACK[0], "B": BLACK[3]}.get(c, BLACK[1] if i // 2 == red_row else BLACK[2]))
    return out


def _dng(path: Path, shape=(64, 96), pattern="RGGB", seed=0) -> np.ndarray:
    """Write a random 10-bit mosaic of ``shape`` as a DNG; return the mosaic."""
    mosaic = np.random.default_rng(seed).integers(0, WHITE + 1, shape, dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dng(path, mosaic, PIDNG_CFA[pattern], _site_black(pattern), white=WHITE)
    return mosaic


def _expected_packed(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """``(raw - black) / (white - black)`` clipped to [0, 1], packed [R, Gr, Gb, B] from the red site."""
    dy, dx = CROP[pattern]
    m = mosaic[dy:, dx:].astype(np.float64)
    h, w = m.shape[0] // 2, m.shape[1] // 2
    return np.stack([np.clip((m[y : 2 * h : 2, x : 2 * w : 2] - b) / (WHITE - b), 0, 1)
                     for (y, x), b in zip(SITES, BLACK)], axis=-1)


def _image(path: Path, shape, seed=0) -> np.ndarray:
    """Write a random sRGB image (PNG exactly, JPEG at quality 100); return what reading it gives."""
    img = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    uio.save_image(path, img, quality=100)
    return uio.read_srgb(path)


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------- arrays


def test_cut_tiles_is_row_major_and_drops_the_remainder():
    img = np.arange(7 * 9 * 2).reshape(7, 9, 2)
    tiles = cut_tiles(img, 3)  # 2 x 3 tiles; the last row and nothing else dropped
    assert tiles.shape == (6, 3, 3, 2)
    for k in range(6):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(tiles[k], img[3 * r : 3 * r + 3, 3 * c : 3 * c + 3])
    shifted = cut_tiles(img, 3, offset=(1, 1))  # 6 x 8 left: 2 x 2 tiles
    assert shifted.shape == (4, 3, 3, 2)
    np.testing.assert_array_equal(shifted[3], img[4:7, 4:7])
    assert cut_tiles(img, 8).shape == (0, 8, 8, 2)


def test_rendering_offset_accepts_twice_the_packed_size_or_the_mosaic_size():
    # GRBG 64x97: the packing drops column 0 -> packed 32x48
    assert rendering_offset((64, 96), (32, 48), (64, 97), (0, 1)) == (0, 0)
    assert rendering_offset((64, 97), (32, 48), (64, 97), (0, 1)) == (0, 1)
    assert rendering_offset((64, 98), (32, 48), (64, 97), (0, 1)) is None
    assert rendering_offset((96, 64), (32, 48), (64, 97), (0, 1)) is None  # rotated


# ------------------------------------------------------------------------------------- reading


def test_flat_folder_patch_counts_stems_and_values(tmp_path):
    """DNGs in the root are the train split; patch 12 leaves tails (dropped); values are
    ``(raw - black) / (white - black)`` per channel with the file's own levels, for any pattern."""
    a = _dng(tmp_path / "a.dng", (64, 96), "RGGB", seed=1)  # packed 32x48 -> 2 x 4 patches of 12
    b = _dng(tmp_path / "IMG_0007.dng", (72, 64), "BGGR", seed=2)  # crop (1,1): packed 35x31 -> 2 x 2
    a[24, 26] = 541  # R of packed (12, 13): patch a_5 (row 1, col 1), local (0, 1)
    write_dng(tmp_path / "a.dng", a, PIDNG_CFA["RGGB"], _site_black("RGGB"), white=WHITE)
    layout = scan_dataset(tmp_path, patch=12)
    assert layout.format == "dng" and layout.splits == ("train",)
    assert list(layout.files["train"]) == ["raws"]  # no renderings, no targets
    raw = load_raw_patches(layout, "train")
    assert raw.stems == tuple([f"IMG_0007_{i}" for i in range(4)] + [f"a_{i}" for i in range(8)])
    assert raw.images.shape == (12, 4, 12, 12) and raw.images.dtype == torch.float32
    assert layout.images("train") == {"IMG_0007": [f"IMG_0007_{i}" for i in range(4)],
                                      "a": [f"a_{i}" for i in range(8)]}
    assert raw.select(["a_5"])[0, 0, 0, 1].item() == pytest.approx((541 - 60) / (1023 - 60), abs=1e-7)
    for name, mosaic, pattern, cols in (("a", a, "RGGB", 4), ("IMG_0007", b, "BGGR", 2)):
        want = _expected_packed(mosaic, pattern)
        for k in range(len(layout.images("train")[name])):
            r, c = divmod(k, cols)
            got = raw.select([f"{name}_{k}"])[0].permute(1, 2, 0).numpy()
            np.testing.assert_allclose(got, want[12 * r : 12 * r + 12, 12 * c : 12 * c + 12], atol=1e-7)
    assert raw.images.min() == 0.0  # values below black are clipped
    # patch-level paths name the source file; read_image gives the UP-ISP 10-bit units
    assert layout.paths("train")["a_7"] == tmp_path / "a.dng"
    ten_bit = layout.read_image("train", "raws", "a")
    assert ten_bit.dtype == np.uint16 and ten_bit.shape == (8, 12, 12, 4)
    np.testing.assert_array_equal(ten_bit[5, 0, 1], np.rint(raw.select(["a_5"])[0, :, 0, 1].numpy() * 1023))


def test_renderings_are_cut_into_tiles_aligned_with_their_raw_patches(tmp_path):
    """A rendering twice the packed size is cut from (0, 0); one of the mosaic's size (GRBG 64x97)
    from the packing's crop (0, 1). The gt tile of every stem covers its RAW patch's scene."""
    _dng(tmp_path / "train" / "a.dng", (64, 96), "RGGB")
    a_img = _image(tmp_path / "train" / "a.png", (64, 96), seed=3)
    _dng(tmp_path / "test" / "c.dng", (64, 97), "GRBG", seed=4)
    c_img = _image(tmp_path / "test" / "c.png", (64, 97), seed=5)
    _dng(tmp_path / "test" / "d.dng", (64, 97), "GRBG", seed=6)
    d_img = _image(tmp_path / "test" / "d.png", (64, 96), seed=7)
    _image(tmp_path / "test" / "unrelated.png", (10, 10))  # no DNG of that stem: ignored
    layout = scan_dataset(tmp_path, patch=16)
    assert layout.splits == ("train", "test")
    assert sorted(layout.files["test"]["gt"]) == ["c", "d"]
    for split, name, img, offset in (("train", "a", a_img, (0, 0)), ("test", "c", c_img, (0, 1)),
                                     ("test", "d", d_img, (0, 0))):
        raw, gt = load_raw_patches(layout, split), load_srgb_patches(layout, split, "gt")
        assert gt.stems == raw.stems and gt.images.shape[1:] == (3, 32, 32)
        stems = [s for s in raw.stems if s.rsplit("_", 1)[0] == name]
        assert stems == [f"{name}_{k}" for k in range(6)]  # packed 32x48 -> 2 x 3 patches of 16
        for k, stem in enumerate(stems):
            r, c = divmod(k, 3)
            y, x = offset[0] + 32 * r, offset[1] + 32 * c
            want = _chw(img[y : y + 32, x : x + 32]).float() / 255
            assert torch.equal(gt.select([stem])[0], want), stem
    pairs = layout.paired("test")
    assert [p[0] for p in pairs] == [f"c_{k}" for k in range(6)] + [f"d_{k}" for k in range(6)]
    assert pairs[0][1:] == (tmp_path / "test" / "c.dng", tmp_path / "test" / "c.png")
    # without a jpegs/ folder the train renderings are the targets (the same tensors)
    assert layout.files["train"]["jpegs"] == layout.files["train"]["gt"]
    assert load_srgb_patches(layout, "train", "jpegs") is load_srgb_patches(layout, "train", "gt")


def test_targets_come_from_the_jpegs_folder(tmp_path):
    """``[train/]jpegs/`` images of any size are cut into 2*patch tiles from the top-left."""
    _dng(tmp_path / "a.dng")
    t = _image(tmp_path / "jpegs" / "t.png", (70, 40), seed=8)  # patch 16 -> 32-pixel tiles: 2 x 1
    layout = scan_dataset(tmp_path, patch=16)
    assert "gt" not in layout.files["train"]
    targets = load_srgb_patches(layout, "train", "jpegs")
    assert targets.stems == ("t_0", "t_1")
    assert torch.equal(targets.select(["t_1"])[0], _chw(t[32:64, 0:32]).float() / 255)
    _image(tmp_path / "jpegs" / "small.png", (31, 40))
    with pytest.raises(uio.ImageFormatError, match=r"small\.png: 31x40 pixels are smaller than one 32x32 target tile"):
        load_srgb_patches(scan_dataset(tmp_path, patch=16), "train", "jpegs")


def test_bad_sizes_raise_one_line_errors_naming_the_file(tmp_path):
    _dng(tmp_path / "a.dng", (64, 97), "GRBG")
    png = tmp_path / "a.png"
    _image(png, (60, 96))
    with pytest.raises(uio.ImageFormatError) as err:
        load_raw_patches(scan_dataset(tmp_path, patch=16), "train")
    assert str(err.value) == (f"{png}: 60x96 pixels do not match a.dng; expected 64x96 (twice its packed RAW 32x48) "
                              "or 64x97 (its Bayer mosaic), height x width")
    png.unlink()
    with pytest.raises(uio.RawFormatError, match=r"a\.dng: packed RAW 32x48 is smaller than one 40x40 patch"):
        load_raw_patches(scan_dataset(tmp_path, patch=40), "train")


def test_detection_and_layout_errors(tmp_path):
    from uotisp_lib import config
    from uotisp_lib.data import ensure_dataset

    _dng(tmp_path / "flat" / "a.dng")
    run = config.resolve_run("smoke", data_root=str(tmp_path / "flat"), results_dir=tmp_path / "res")
    assert ensure_dataset(run) == tmp_path / "flat"  # a flat DNG folder has no train/ but is data
    _dng(tmp_path / "flat" / "test" / "b.dng")
    with pytest.raises(LayoutError, match=r"flat: DNG files both in the folder and in test/"):
        scan_dataset(tmp_path / "flat")
    (tmp_path / "flat" / "test" / "b.dng").unlink()
    _dng(tmp_path / "flat" / "b.DNG")  # any case
    _image(tmp_path / "flat" / "b.jpg", (64, 96))
    layout = scan_dataset(tmp_path / "flat")
    assert list(layout.files["train"]["raws"]) == ["a", "b"] and list(layout.files["train"]["gt"]) == ["b"]
    lonely = r"flat: 1 DNG files have no rendering <name>\.jpg\|\.jpeg\|\.png beside them .*: \[a\]"
    with pytest.raises(LayoutError, match=lonely):
        layout.paired("train")
    with pytest.raises(ValueError, match=r"patch 0: expected a positive integer"):
        scan_dataset(tmp_path / "flat", patch=0)
    from uotisp_lib.cli import train as train_cli
    from uotisp_lib.data import layouts

    assert train_cli.DNG_PATCH == layouts.DNG_PATCH == 256  # the CLI's copy (kept for a fast --help)


# ------------------------------------------------------------------------------------- command line


@pytest.fixture()
def dng_data(tmp_path):
    """train/: 4 DNGs with JPEG renderings; test/: 2 (64x96 mosaics, patch 16: 6 patches each).
    The renderings are a smooth function of the mosaic, so the map has something to learn."""
    root = tmp_path / "dngs"
    mosaics = {}
    for split, names in (("train", ("t0", "t1", "t2", "t3")), ("test", ("e0", "e1"))):
        for k, name in enumerate(names):
            pattern = ("RGGB", "GRBG")[k % 2]
            shape = (64, 96) if pattern == "RGGB" else (64, 97)
            mosaic = _dng(root / split / f"{name}.dng", shape, pattern, seed=10 + k + 5 * (split == "test"))
            packed = _expected_packed(mosaic, pattern)  # [32, 48, 4]
            rgb = np.stack([packed[..., 0], (packed[..., 1] + packed[..., 2]) / 2, packed[..., 3]], axis=-1) ** 0.5
            img = np.repeat(np.repeat(np.rint(rgb * 255).astype(np.uint8), 2, axis=0), 2, axis=1)
            uio.save_image(root / split / f"{name}.jpg", img, quality=95)  # 64x96: twice the packed size
            mosaics[name] = (mosaic, pattern)
    return root, mosaics


def test_train_paired_then_eval_on_a_dng_folder(dng_data, tmp_path, capsys):
    """Paired UOT for 2 epochs on 24 patches (no val split: selected on the proxy), then eval scores
    each test DNG; its PSNR equals the one computed here from patches cut independently."""
    root, mosaics = dng_data
    out, csv_path = tmp_path / "run", tmp_path / "m.csv"
    argv = ["train", "--data", str(root), "--out", str(out), "--trainer", "uot", "--mode", "paired",
            "--patch", "16", "--set", "epochs=2", "--device", "cpu"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"train uot (paired, tinyraw) on {root}: 24 RAW patches, 18 target patches" in said  # 1 of 4 held out
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(0 < float(r["proxy"]) < 10 for r in rows)
    assert json.loads((out / "data.json").read_text()) == {"data": str(root.resolve()), "patch": 16}
    # a resume on differently cut patches is refused in one line, and the run is left as it was
    before = sorted(p.name for p in (out / "ckpt").iterdir())
    assert main([a if a != "16" else "8" for a in argv]) == 2  # --patch 8
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"uotisp train: error: --patch 8: the run in {out} was trained on --patch 16; use the same, "
                   "or --fresh to move the run aside, or another --out"]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == before
    assert main(["eval", "--checkpoint", str(out / "best"), "--data", str(root), "--patch", "16",
                 "--out", str(csv_path)]) == 0
    with open(csv_path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["image"] for r in got] == ["e0", "e1"]  # one row per test DNG
    # the same PSNR from patches cut here, independently of the layout
    from uotisp_lib.inference import load_isp, render
    from uotisp_lib.metrics import PSNR_CAP, evaluate

    bundle = load_isp(out / "best", "cpu")
    for row in got:
        mosaic, pattern = mosaics[row["image"]]
        raw = torch.stack([_chw(t) for t in cut_tiles(_expected_packed(mosaic, pattern).astype(np.float32), 16)])
        jpeg = uio.read_srgb(root / "test" / f"{row['image']}.jpg")
        gt = torch.stack([_chw(t) for t in cut_tiles(jpeg, 32)]).float() / 255
        psnr = evaluate(render(bundle, raw, 16), gt)["psnr"].clamp(max=PSNR_CAP).double().mean().item()
        assert 5 < psnr < 60
        assert float(row["psnr"]) == pytest.approx(psnr, abs=1e-3)


def test_train_unpaired_on_a_flat_folder_with_targets(tmp_path, capsys):
    """A flat folder: DNGs without renderings, targets in jpegs/; unpaired UOT runs and logs the proxy."""
    root = tmp_path / "flat"
    for k in range(3):
        _dng(root / f"r{k}.dng", seed=20 + k)
        _image(root / "jpegs" / f"t{k}.jpg", (64, 64), seed=30 + k)  # 2 x 2 tiles of 32
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(out), "--patch", "16", "--set", "epochs=1",
                 "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"train uot (unpaired, tinyraw) on {root}: 18 RAW patches, " in said
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and 0 < float(rows[0]["proxy"]) < 10


def test_cli_refuses_bad_dng_folders_in_one_line(dng_data, tmp_path, capsys):
    """A rendering of the wrong size, a DNG without rendering in paired mode, a bad --patch: one line,
    exit 2, before any training (and before rendering, for eval)."""
    root, _ = dng_data
    out = tmp_path / "run"
    base = ["train", "--data", str(root), "--out", str(out), "--mode", "paired", "--set", "epochs=1",
            "--device", "cpu"]
    bad = root / "train" / "t1.jpg"
    uio.save_image(bad, np.zeros((64, 90, 3), np.uint8))
    err = one_line_error(capsys, base + ["--patch", "16"])
    assert err == (f"uotisp train: error: {bad}: 64x90 pixels do not match t1.dng; expected 64x96 (twice its packed "
                   "RAW 32x48) or 64x97 (its Bayer mosaic), height x width")
    assert not (out / "ckpt").exists()  # refused before any training
    err = one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path), "--data", str(root), "--split", "train",
                                  "--patch", "16"])
    assert f"{bad}: 64x90 pixels do not match t1.dng" in err
    bad.unlink()
    err = one_line_error(capsys, base)
    assert err == (f"uotisp train: error: {root / 'train'}: 1 DNG files have no rendering <name>.jpg|.jpeg|.png "
                   "beside them (paired mode and the metrics need one per DNG): [t1]")
    err = one_line_error(capsys, base + ["--patch", "0"])
    assert err == "uotisp train: error: --patch 0: expected an integer >= 1"
    err = one_line_error(capsys, ["train", "--trainer", "pseudo-pairs", "--data", str(root), "--out", str(out)])
    assert err == ("uotisp train: error: --pairs fgw: pair graphs are not built on DNG folders; expected --pairs random "
                   "or --mode paired (or --trainer uot)")
    err = one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path), "--data", str(root), "--patch", "-3"])
    assert err == "uotisp eval: error: --patch -3: expected an integer >= 1"
    upisp = tmp_path / "upisp"
    uio.save_raw(upisp / "train" / "raws" / "a_0.npy", np.zeros((8, 8, 4), np.uint16))
    uio.save_image(upisp / "train" / "jpegs" / "a_0.jpg", np.zeros((16, 16, 3), np.uint8))
    err = one_line_error(capsys, ["train", "--data", str(upisp), "--out", str(out), "--patch", "16"])
    assert err == (f"uotisp train: error: --patch 16: applies to DNG folders only; {upisp} is a upisp folder of "
                   "fixed patches")


@pytest.mark.parametrize("pairs", ["paired", "random"])
def test_pseudo_pairs_trains_on_a_dng_folder(dng_data, tmp_path, capsys, pairs):
    """The pseudo-pair trainer reads the same patches: true pairs, or random pairs of the targets."""
    root, _ = dng_data
    out = tmp_path / "run"
    mode = ["--mode", "paired"] if pairs == "paired" else ["--pairs", "random"]
    assert main(["train", "--trainer", "pseudo-pairs", *mode, "--data", str(root), "--out", str(out), "--patch", "16",
                 "--set", "stage1_epochs=1", "--set", "stage2_epochs=0", "--device", "cpu"]) == 0
    assert "24 RAW patches, 18 target patches" in capsys.readouterr().out
    assert (out / "export" / "isp.json").is_file()


def test_grid_summary_and_image_layout_of_a_dng_folder(dng_data):
    """The patch grid of each DNG comes from its size (no inference); the summary counts patches;
    notebooks stitch test images on that grid (:func:`experiments.image_layout`)."""
    from uotisp_lib.experiments import image_layout, load_training_data
    from uotisp_lib.stitching import stitch

    root, _ = dng_data
    layout = scan_dataset(root, patch=16)
    assert layout.grid("train", "t1") == layout.grid("test", "e0", "gt") == (2, 3)  # packed 32x48 (GRBG: cropped)
    assert layout.grid("train", "t0", "jpegs") == (2, 3)  # no jpegs/ folder: the renderings
    with pytest.raises(LayoutError, match="no image 'zz' in test raws"):
        layout.grid("test", "zz")
    rows = {r["split"]: r for r in layout.summary()}
    assert [rows["train"][k] for k in ("raw_images", "raw_patches", "gt_images", "gt_patches", "jpeg_images")] == [4, 24, 4, 24, 4]
    assert rows["test"]["raw_patches"] == 12 and 0 <= rows["test"]["raw_min"] < rows["test"]["raw_max"] <= 1023
    data = load_training_data(root, patch=16)
    assert data.layout is not None and image_layout(data, data.gt_test, "e1", split="test") == (2, 3)
    assert image_layout(data, data.gt_test, "e1") == (2, 3)  # split None: the first split holding it
    whole = stitch(data.gt_test.select([f"e1_{i}" for i in range(6)]), 2, 3)
    img = uio.read_srgb(root / "test" / "e1.jpg")
    np.testing.assert_allclose(whole.permute(1, 2, 0).numpy(), img[:64, :96] / 255.0, atol=1e-6)
