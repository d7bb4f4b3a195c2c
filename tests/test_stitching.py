"""Tests of uotisp_lib.stitching (grid inference, stitch/unstitch) and the ``stitch`` CLI."""

from __future__ import annotations

import argparse
import csv
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from uotisp_lib import io as uio
from uotisp_lib import grid_scoring as gs
from uotisp_lib import stitching as st
from uotisp_lib.cli.stitch import CSV_COLUMNS, add_parser, raw_preview, run
from uotisp_lib.config import CHALLENGE_LAYOUTS

# --------------------------------------------------------------------------------------------------
# Synthetic layouts from natural-looking images
# --------------------------------------------------------------------------------------------------

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SOURCES = PHOTOS + ("field",)
LAYOUTS = list(CHALLENGE_LAYOUTS) + [(3, 4), (4, 3), (1, 5), (5, 1), (2, 2), (1, 7), (7, 1), (3, 3)]
PATCH = 16  # RAW patch side (its full-resolution mosaic is 2 * PATCH); sRGB patches are also 16 px


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> torch.Tensor:
    return torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1).float() / 255


def _smooth_field(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth random colour field [3, height, width] in [0, 1] (bicubic upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, height // 8 + 2, width // 8 + 2, generator=g)
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)[0]
    return (x - x.min()) / (x.max() - x.min())


def _scene(source: str, height: int, width: int, seed: int) -> torch.Tensor:
    """A [3, height, width] image: a random crop (of the target aspect) of a photo, resized."""
    if source == "field":
        return _smooth_field(height, width, seed)
    rng = np.random.default_rng(seed)
    photo = _photo(source)
    ph, pw = photo.shape[1:]
    ch = int(min(ph, pw * height / width) * rng.uniform(0.6, 1.0))
    cw = int(ch * width / height)
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[None, :, y : y + ch, x : x + cw]
    out = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def _raw_from_rgb(rgb: torch.Tensor, noisy: bool, seed: int) -> torch.Tensor:
    """RGGB mosaic of rgb [3, 2h, 2w] packed to [4, h, w] = [R, Gr, Gb, B]; optionally with shot and
    read noise and 10-bit quantisation."""
    x = torch.stack([rgb[0, 0::2, 0::2], rgb[1, 0::2, 1::2], rgb[1, 1::2, 0::2], rgb[2, 1::2, 1::2]])
    if noisy:
        g = torch.Generator().manual_seed(seed)
        x = 0.8 * x + 0.02
        x = x + torch.randn(x.shape, generator=g) * torch.sqrt(0.002 * x + 1e-6)
        x = torch.round(x.clamp(0, 1) * uio.RAW_MAX) / uio.RAW_MAX
    return x


def make_patches(rows: int, cols: int, source: str, kind: str, seed: int = 0, noisy: bool = False, patch: int = PATCH):
    """Row-major patches [rows*cols, C, patch, patch] of one synthetic image, and the full image."""
    if kind == "raw":
        full = _raw_from_rgb(_scene(source, 2 * rows * patch, 2 * cols * patch, seed), noisy, seed)
    else:
        full = torch.round(_scene(source, rows * patch, cols * patch, seed) * 255) / 255
    return st.unstitch(full, patch), full


# --------------------------------------------------------------------------------------------------
# factor_pairs, score_map
# --------------------------------------------------------------------------------------------------


def test_factor_pairs_known_values():
    assert st.factor_pairs(1) == [(1, 1)]
    assert st.factor_pairs(7) == [(1, 7), (7, 1)]
    assert st.factor_pairs(12) == [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]
    assert st.factor_pairs(36)[4] == (6, 6) and len(st.factor_pairs(36)) == 9
    assert st.factor_pairs(42) == [(1, 42), (2, 21), (3, 14), (6, 7), (7, 6), (14, 3), (21, 2), (42, 1)]
    for n in range(1, 60):
        assert all(r * c == n for r, c in st.factor_pairs(n))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "6"])
def test_factor_pairs_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="factor_pairs: expected a positive integer number of patches"):
        st.factor_pairs(bad)


def test_score_map_known_values_and_shapes():
    raw = torch.zeros(2, 4, 3, 5)
    raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3] = 0.9, 0.2, 0.4, 0.7
    m = st.score_map(raw, "raw")
    assert m.shape == (2, 3, 5) and torch.allclose(m, torch.full((2, 3, 5), 0.3))
    rgb = torch.tensor([0.3, 0.6, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(st.score_map(rgb, "rgb"), torch.full((2, 4, 4), 0.3))


def test_score_map_errors_name_what_was_expected():
    want = r"kind='raw' expects patches \[N,4,h,w\] packed \[R,Gr,Gb,B\], got shape \(2, 3, 4, 4\)"
    with pytest.raises(ValueError, match=want):
        st.score_map(torch.zeros(2, 3, 4, 4), "raw")
    with pytest.raises(ValueError, match=r"kind='rgb' expects patches \[N,3,h,w\] RGB, got shape \(2, 4, 4, 4\)"):
        st.score_map(torch.zeros(2, 4, 4, 4), "rgb")
    with pytest.raises(ValueError, match="unknown kind 'bayer'; expected 'raw' or 'rgb'"):
        st.score_map(torch.zeros(2, 4, 4, 4), "bayer")


# --------------------------------------------------------------------------------------------------
# Known answers and the vectorised scores against a naive loop
# --------------------------------------------------------------------------------------------------


def _tiny_pair() -> torch.Tensor:
    """Two 2x2 grey patches whose side-by-side image is the ramp 0, .1, .2, .3 on both rows."""
    p0 = torch.tensor([[0.0, 0.1], [0.0, 0.1]])
    p1 = torch.tensor([[0.2, 0.3], [0.2, 0.3]])
    return torch.stack([p0, p1])[:, None].expand(2, 3, 2, 2)


def test_known_answer_tiny_example_by_hand():
    patches = _tiny_pair()
    # Borelli: every strip pixel differs by 0.2 across both seams -> a tie.
    assert st.seam_scores(patches, "rgb", border=2, method="mean") == pytest.approx({(1, 2): 0.2, (2, 1): 0.2})
    g = st.infer_grid(patches, "rgb", border=2, method="mean")
    assert (g.rows, g.cols, g.confidence, g.low_confidence) == (1, 2, 0.0, True)
    # Evidence: horizontal seam jump 0.1 = inner steps 0.1 -> r = 1; vertical seam jump 0.2,
    # inner steps 0 -> r = (0.2 + eps) / eps = 101.
    t_h = 2 * (math.log(1.0) - math.log(2))
    t_v = 2 * (math.log(0.202 / 0.002) - math.log(2))
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    s12 = (sp(t_h) + sp(-t_v)) / 2  # 1x2 claims the horizontal seam, denies the vertical one
    s21 = (sp(-t_h) + sp(t_v)) / 2
    assert st.seam_scores(patches, "rgb", border=2) == pytest.approx({(1, 2): s12, (2, 1): s21}, rel=1e-5)
    g = st.infer_grid(patches, "rgb", border=2)
    assert (g.rows, g.cols) == (1, 2)
    assert g.score == pytest.approx(s12, rel=1e-5) and g.confidence == pytest.approx((s21 - s12) / s21, rel=1e-5)
    assert g.candidates[1][:2] == (2, 1) and g.second == g.candidates[1] and not g.low_confidence


def _naive_scores(maps: torch.Tensor, b: int, method: str) -> dict[tuple[int, int], float]:
    """Loop-over-seams reference of both rankings on score maps [N, h, w] (float64)."""
    n = maps.shape[0]
    m = maps.double()

    def seam(a_strip, c_strip):  # columns oriented: a's last and c's first column touch the seam
        if method == "mean":
            return (a_strip - c_strip).abs().mean().item()
        jump = (a_strip[:, -1] - c_strip[:, 0]).abs().mean()
        steps = [(s[:, 1:] - s[:, :-1]).abs().mean() for s in (a_strip, c_strip)]
        inner = 0.5 * (steps[0] + steps[1])
        return 2 * (math.log((jump.item() + 2e-3) / (inner.item() + 2e-3)) - math.log(2))

    def h_cost(i, j):
        return seam(m[i][:, -b:], m[j][:, :b])

    def v_cost(i, j):
        return seam(m[i][-b:, :].T, m[j][:b, :].T)

    union = [("h", i, i + 1) for i in range(n - 1)]
    union += [("v", i, i + c) for _, c in st.factor_pairs(n) if c < n for i in range(n - c)]
    cost = {s: (h_cost if s[0] == "h" else v_cost)(s[1], s[2]) for s in union}
    out = {}
    for r, c in st.factor_pairs(n):
        claimed = {("h", i, i + 1) for i in range(n - 1) if i % c != c - 1} | {("v", i, i + c) for i in range(n - c)}
        if method == "mean":
            out[(r, c)] = sum(cost[s] for s in claimed) / len(claimed)
        else:
            sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
            out[(r, c)] = sum(sp(cost[s]) if s in claimed else sp(-cost[s]) for s in union) / len(union)
    return out


@pytest.mark.parametrize("method", st.METHODS)
@pytest.mark.parametrize("n", [2, 6, 12])
def test_vectorised_scores_match_a_naive_loop(method, n):
    g = torch.Generator().manual_seed(n)
    patches = torch.rand(n, 4, 6, 5, generator=g)
    expected = _naive_scores(st.score_map(patches, "raw"), 3, method)
    assert st.seam_scores(patches, "raw", border=3, method=method) == pytest.approx(expected, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Every layout right, RAW and RGB
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda rc: f"{rc[0]}x{rc[1]}")
def test_true_grid_wins_on_natural_images(layout):
    rows, cols = layout
    for seed, source in enumerate(SOURCES):
        for kind, noisy in (("raw", False), ("raw", True), ("rgb", False)):
            patches, _ = make_patches(rows, cols, source, kind, seed=seed, noisy=noisy)
            g = st.infer_grid(patches, kind=kind)
            where = f"{source} {kind} noisy={noisy}"
            assert (g.rows, g.cols) == layout, f"{where}: chose {g.rows}x{g.cols}, candidates {g.candidates}"
            assert g.confidence > st.DEFAULT_MIN_CONFIDENCE and not g.low_confidence, where
            assert g.candidates[0] == (rows, cols, g.score)
            assert [c[2] for c in g.candidates] == sorted(c[2] for c in g.candidates)


def test_borelli_mean_picks_the_degenerate_row_but_evidence_does_not():
    # the failure the evidence ranking fixes: a 1x14 row beats the true 2x7 under the plain mean
    patches, _ = make_patches(2, 7, "coffee", "raw", seed=0, patch=32)
    mean = st.infer_grid(patches, method="mean")
    assert (mean.rows, mean.cols, mean.method) == (1, 14, "mean") and mean.confidence > 0.2  # confidently wrong
    g = st.infer_grid(patches)
    assert (g.rows, g.cols, g.method) == (2, 7, "evidence") and g.confidence > 0.3


def test_confidence_is_high_on_challenge_layouts():
    confs = [
        st.infer_grid(make_patches(r, c, "coffee", "raw", seed=3, noisy=True, patch=32)[0]).confidence
        for r, c in ((6, 7), (5, 7), (2, 7))
    ]
    assert min(confs) > 0.3, confs


def test_batched_path_matches_single_images():
    batch = torch.stack([make_patches(2, 7, s, "rgb", seed=i)[0] for i, s in enumerate(SOURCES)])
    many = st.infer_grids(batch, kind="rgb")
    one = [st.infer_grid(p, kind="rgb") for p in batch]
    assert [(g.rows, g.cols) for g in many] == [(2, 7)] * len(SOURCES)
    for a, b in zip(many, one):
        assert (a.rows, a.cols) == (b.rows, b.cols) and a.score == pytest.approx(b.score, rel=1e-5)
    assert st.infer_grids(batch[:0], kind="rgb") == []


def test_strips_from_file_slices_give_the_same_choice():
    """Strips built from border slices only (as a reader of .npy files would) equal the full path."""
    patches, _ = make_patches(5, 7, "rocket", "raw", seed=2)
    m, b = st.score_map(patches, "raw"), 4
    strips = st.Strips(  # lines parallel to the seam, ordered across it: [B, N, b, L]
        right=m[None, :, :, -b:].transpose(-1, -2),
        left=m[None, :, :, :b].transpose(-1, -2),
        bottom=m[None, :, -b:, :],
        top=m[None, :, :b, :],
    )
    a, full = st.infer_grids(strips)[0], st.infer_grid(patches)
    assert (a.rows, a.cols) == (full.rows, full.cols) == (5, 7) and a.score == pytest.approx(full.score, rel=1e-5)
    want = r"Strips: inconsistent shapes .*; expected right, left \[B,N,b,h\] and bottom, top \[B,N,b,w\]"
    with pytest.raises(ValueError, match=want):
        st.Strips(strips.right, strips.left[:, :3], strips.bottom, strips.top)
    with pytest.raises(TypeError, match="Strips: expected floating-point strips, got dtype torch.int64"):
        st.Strips(*(x.long() for x in (strips.right, strips.left, strips.bottom, strips.top)))


# --------------------------------------------------------------------------------------------------
# N = 1, prime N, ties
# --------------------------------------------------------------------------------------------------


def test_single_patch_is_one_by_one_with_full_confidence():
    g = st.infer_grid(torch.rand(1, 4, 8, 8))
    assert (g.rows, g.cols, g.score, g.confidence, g.low_confidence) == (1, 1, 0.0, 1.0, False)
    assert g.candidates == ((1, 1, 0.0),) and g.second is None
    assert st.seam_scores(torch.rand(1, 3, 8, 8), "rgb") == {(1, 1): 0.0}


def test_prime_n_has_only_a_row_and_a_column():
    patches, _ = make_patches(1, 13, "coffee", "raw", seed=5)
    g = st.infer_grid(patches)
    assert {c[:2] for c in g.candidates} == {(1, 13), (13, 1)} and (g.rows, g.cols) == (1, 13)


@pytest.mark.parametrize("method", st.METHODS)
@pytest.mark.parametrize("n", [42, 7])
def test_ties_report_zero_confidence(method, n):
    flat = torch.full((n, 4, 8, 8), 0.5)  # featureless: 6x7 and 7x6 (or 1x7 and 7x1) tie exactly
    g = st.infer_grid(flat, method=method)
    assert g.confidence == 0.0 and g.low_confidence
    assert g.candidates[0][2] == pytest.approx(g.candidates[1][2])
    # ties keep factor-pair order; evidence prefers the grids with most seams, the mean scores all 0
    expected = (1, n) if method == "mean" or n == 7 else (6, 7)
    assert (g.rows, g.cols) == expected


def test_min_confidence_sets_the_flag():
    patches, _ = make_patches(2, 7, "chelsea", "raw", seed=0)
    g = st.infer_grid(patches)
    assert not g.low_confidence
    assert st.infer_grid(patches, min_confidence=g.confidence + 1e-3).low_confidence


# --------------------------------------------------------------------------------------------------
# Bad input to infer_grid
# --------------------------------------------------------------------------------------------------


def test_infer_grid_bad_inputs_have_clear_messages():
    with pytest.raises(ValueError, match=r"infer_grid: expected patches of shape \[N,C,h,w\], got shape \(4, 8, 8\)"):
        st.infer_grid(torch.rand(4, 8, 8))
    with pytest.raises(TypeError, match=r"expected a floating-point tensor in \[0, 1\], got dtype torch.int32"):
        st.infer_grid(torch.zeros(4, 4, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"border must be an integer in \[2, 8\] for 8x8 patches, got 9"):
        st.infer_grid(torch.rand(4, 4, 8, 8), border=9)
    with pytest.raises(ValueError, match=r"border must be an integer in \[2, 8\] for 8x8 patches, got 1"):
        st.infer_grid(torch.rand(4, 4, 8, 8), border=1)
    with pytest.raises(ValueError, match="unknown method 'max'; expected one of evidence, mean"):
        st.infer_grid(torch.rand(4, 4, 8, 8), method="max")
    with pytest.raises(ValueError, match=r"expected at least one patch, got shape \(0, 4, 8, 8\)"):
        st.infer_grid(torch.rand(0, 4, 8, 8))
    with pytest.raises(ValueError, match=r"differing shapes: patch 0 is \(4, 8, 8\), patch 2 is \(4, 8, 6\)"):
        st.infer_grid([torch.rand(4, 8, 8), torch.rand(4, 8, 8), torch.rand(4, 8, 6)])
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        st.infer_grid(np.zeros((4, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"infer_grids: expected patches of shape \[B,N,C,h,w\] or Strips"):
        st.infer_grids(torch.rand(4, 4, 8, 8))


# --------------------------------------------------------------------------------------------------
# stitch / unstitch
# --------------------------------------------------------------------------------------------------


def test_stitch_known_layout():
    patches = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 2, 3)  # patch i is filled with i
    img = st.stitch(patches, 2, 3)
    assert img.shape == (2, 4, 9)
    assert img[0, ::2, ::3].tolist() == [[0, 1, 2], [3, 4, 5]]  # row-major placement


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 7), (7, 2), (1, 5), (3, 4)])
def test_stitch_unstitch_round_trip(rows, cols):
    g = torch.Generator().manual_seed(rows * 10 + cols)
    patches = torch.rand(rows * cols, 3, 4, 5, generator=g)
    img = st.stitch(patches, rows, cols)
    assert img.shape == (3, rows * 4, cols * 5)
    assert torch.equal(st.unstitch(img, (4, 5)), patches)
    image = torch.rand(4, 12, 8, generator=g)
    assert torch.equal(st.stitch(st.unstitch(image, 4), 3, 2), image)


def test_stitch_gradcheck_float64():
    x = torch.rand(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: st.stitch(p, 2, 3), (x,))
    y = torch.rand(2, 6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda im: st.unstitch(im, 3), (y,))


def test_scores_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 4, 5, 5, dtype=torch.float64, generator=g).requires_grad_(True)
    for method in st.METHODS:
        fn = lambda p: st.strip_scores(st.border_strips(st.score_map(p, "raw"), 3), method)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))


def test_stitch_unstitch_errors_name_the_numbers():
    with pytest.raises(ValueError, match=r"stitch: a 2x3 grid needs 6 patches, got N=5"):
        st.stitch(torch.rand(5, 3, 4, 4), 2, 3)
    with pytest.raises(ValueError, match=r"stitch: expected patches of shape \[N,C,h,w\], got shape \(3, 4, 4\)"):
        st.stitch(torch.rand(3, 4, 4), 1, 3)
    with pytest.raises(ValueError, match=r"unstitch: image 10x8 is not divisible into 4x4 patches"):
        st.unstitch(torch.rand(3, 10, 8), 4)
    with pytest.raises(ValueError, match=r"unstitch: expected an image of shape \[C,H,W\], got \(10, 8\)"):
        st.unstitch(torch.rand(10, 8), 4)
    with pytest.raises(ValueError, match=r"differing shapes: patch 0 is \(3, 4, 4\), patch 1 is \(3, 4, 5\)"):
        st.stitch([torch.rand(3, 4, 4), torch.rand(3, 4, 5)], 1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_like_on_cpu():
    patches, _ = make_patches(5, 7, "astronaut", "raw", seed=0)
    a, b = st.infer_grid(patches), st.infer_grid(patches.cuda())
    assert (a.rows, a.cols) == (b.rows, b.cols) and a.score == pytest.approx(b.score, rel=1e-4)
    assert st.stitch(patches.cuda(), 5, 7).device.type == "cuda"


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["stitch", *argv]))


def _write_raw_image(folder, image_id, rows, cols, source, seed, skip=()):
    _, full = make_patches(rows, cols, source, "raw", seed=seed, noisy=True)
    mosaic = np.rint(full.permute(1, 2, 0).numpy() * uio.RAW_MAX).astype(np.uint16)
    for i, p in enumerate(st.unstitch(torch.from_numpy(mosaic.astype(np.int32)).permute(2, 0, 1), PATCH)):
        if i not in skip:
            uio.save_raw(folder / f"{image_id}_{i}.npy", p.permute(1, 2, 0).numpy().astype(np.uint16))
    return mosaic


def _read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return {r["image_id"]: r for r in reader}


def test_cli_raw_stitches_and_reports_a_missing_index_by_name(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good = _write_raw_image(src, "scene_a", 2, 7, "astronaut", 0)
    _write_raw_image(src, "scene_b", 5, 7, "coffee", 1, skip=(12,))
    assert _cli("--input", str(src), "--output", str(out)) == 1
    err = capsys.readouterr().err
    assert "image 'scene_b' skipped: missing indices [12] (expected exactly 0..34)" in err
    rows = _read_csv(out / "layouts.csv")
    assert set(rows) == {"scene_a", "scene_b"}
    a, b = rows["scene_a"], rows["scene_b"]
    assert (a["n_patches"], a["rows"], a["cols"], a["status"], a["low_confidence"]) == ("14", "2", "7", "ok", "False")
    assert float(a["confidence"]) > st.DEFAULT_MIN_CONFIDENCE and float(a["second_score"]) > float(a["score"])
    skip = "skipped: missing indices [12] (expected exactly 0..34)"
    assert (b["n_patches"], b["rows"], b["status"]) == ("34", "", skip)
    assert np.array_equal(uio.read_raw(out / "scene_a.npy"), good)
    assert uio.read_srgb(out / "scene_a.png").shape == (2 * PATCH, 7 * PATCH, 3)
    assert not (out / "scene_b.npy").exists()


def test_cli_rgb_round_trip_and_duplicates(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    patches, full = make_patches(3, 4, "chelsea", "rgb", seed=4)
    as_u8 = lambda t: np.rint(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # noqa: E731
    for i, p in enumerate(patches):
        uio.save_image(src / f"cat_{i}.png", as_u8(p))
        uio.save_image(src / f"dup_{i}.png", as_u8(p))
    uio.save_image(src / "dup_03.png", as_u8(patches[0]))  # a second index 3
    assert _cli("--input", str(src), "--output", str(out)) == 1
    assert np.array_equal(uio.read_srgb(out / "cat.png"), as_u8(full))
    rows = _read_csv(out / "layouts.csv")
    assert (rows["cat"]["rows"], rows["cat"]["cols"], rows["cat"]["status"]) == ("3", "4", "ok")
    assert rows["dup"]["status"] == "skipped: duplicated indices [3]"
    assert "image 'dup' skipped: duplicated indices [3]" in capsys.readouterr().err


def test_cli_skips_unreadable_and_mismatched_groups(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        uio.save_raw(src / f"odd_{i}.npy", np.zeros((8, 8 + 2 * i, 4), np.uint16))
        uio.save_raw(src / f"bad_{i}.npy", np.zeros((8, 8, 4), np.uint16))
    (src / "bad_1.npy").write_bytes(b"not a numpy file")
    uio.save_raw(src / "notes.npy", np.zeros((8, 8, 4), np.uint16))  # no _<idx>
    for i in range(2):
        uio.save_raw(src / f"tiny_{i}.npy", np.zeros((3, 3, 4), np.uint16))  # smaller than the border
    assert _cli("--input", str(src), "--output", str(out)) == 1
    rows = _read_csv(out / "layouts.csv")
    assert rows["notes"]["status"] == "skipped: stem 'notes': expected <image_id>_<index> with a non-negative integer index"
    assert "image 'notes' skipped" in capsys.readouterr().err
    assert rows["tiny"]["status"] == "skipped: border_strips: border must be an integer in [2, 3] for 3x3 patches, got 4"
    skip = "skipped: patches of differing shapes: odd_1.npy is (8, 10, 4), odd_0.npy is (8, 8, 4)"
    assert rows["odd"]["status"] == skip
    assert rows["bad"]["status"].startswith(f"skipped: {src / 'bad_1.npy'}: could not be read as .npy")


def test_cli_flags_low_confidence_but_still_stitches(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):  # featureless: 2x3 and 3x2 tie
        uio.save_raw(src / f"flat_{i}.npy", np.full((8, 8, 4), 300, np.uint16))
    assert _cli("--input", str(src), "--output", str(out), "--min-confidence", "0.1") == 0
    row = _read_csv(out / "layouts.csv")["flat"]
    got = (row["rows"], row["cols"], row["confidence"], row["low_confidence"], row["status"])
    assert got == ("2", "3", "0.0000", "True", "low_confidence")
    assert (row["second_rows"], row["second_cols"], row["second_score"]) == ("3", "2", row["score"])
    assert "image 'flat': grid 2x3 chosen with low confidence 0.000 (< 0.1)" in capsys.readouterr().err
    assert uio.read_raw(out / "flat.npy").shape == (16, 24, 4)


def test_stitch_keeps_integer_dtypes():
    patches = torch.arange(4, dtype=torch.int32).view(4, 1, 1, 1).expand(4, 4, 2, 2)
    img = st.stitch(patches, 2, 2)
    assert img.dtype == torch.int32 and img[0].tolist()[0] == [0, 0, 1, 1]


def test_cli_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no patches found; expected <img>_<idx>.npy RAW patch files"):
        _cli("--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"nowhere: input folder does not exist"):
        _cli("--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    mixed = tmp_path / "mixed"
    uio.save_raw(mixed / "a_0.npy", np.zeros((4, 4, 4), np.uint16))
    uio.save_image(mixed / "b_0.png", np.zeros((8, 8, 3), np.uint8))
    want = r"mixed: holds both .npy RAW and .png/.jpg sRGB patches; pass --kind raw or --kind rgb"
    with pytest.raises(ValueError, match=want):
        _cli("--input", str(mixed), "--output", str(tmp_path / "out"))
    assert _cli("--input", str(mixed), "--output", str(tmp_path / "out"), "--kind", "rgb") == 0
    with pytest.raises(ValueError, match=r"--border must be at least 2 pixels, got 1"):
        _cli("--input", str(mixed), "--output", str(tmp_path / "out"), "--kind", "raw", "--border", "1")
    with pytest.raises(ValueError, match=r"output folder must differ from the input folder"):
        _cli("--input", str(mixed), "--output", str(mixed), "--kind", "raw")


def test_raw_preview_is_normalised_per_image():
    mosaic = np.zeros((4, 4, 4), np.uint16)
    mosaic[..., 0], mosaic[..., 1], mosaic[..., 2], mosaic[..., 3] = 100, 200, 400, 50
    prev = raw_preview(mosaic)
    assert prev.dtype == np.uint8 and prev.shape == (4, 4, 3)
    # (R, G, B) = (100, 300, 50) over the 99.5th percentile (300), gamma 1/2.2
    expected = np.rint(np.array([1 / 3, 1.0, 1 / 6]) ** (1 / 2.2) * 255)
    assert prev[0, 0].tolist() == expected.tolist()
    assert raw_preview(np.zeros((2, 2, 4), np.uint16)).max() == 0


def test_evaluate_grid_choice_on_rendered_cases():
    from uotisp_lib.data.synth import grid_cases
    from uotisp_lib.stitching import evaluate_grid_choice

    cases = grid_cases([(2, 7), (3, 1)], per_layout=1, patch=16, seed=3)
    assert [(c.rows, c.cols) for c in cases] == [(2, 7), (3, 1)]
    assert cases[0].raw.shape == (14, 4, 16, 16) and cases[0].rgb.shape == (14, 3, 32, 32)
    rows = evaluate_grid_choice(cases, methods=("evidence",))
    assert len(rows) == 4 and all(r["correct"] for r in rows)
    assert {r["layout"] for r in rows} == {"2x7", "3x1"} and {r["kind"] for r in rows} == {"raw", "rgb"}


# --------------------------------------------------------------------------------------------------
# Fast path: grids from the border strips of RAW patch files
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _grid_cases():
    from uotisp_lib.data.synth import grid_cases

    return tuple(grid_cases([(2, 7), (7, 2), (5, 7), (3, 4)], 1, 16, seed=3))


def _save_case(folder, case):
    packed = case.raw.permute(0, 2, 3, 1).numpy().astype(np.uint16)
    return [uio.save_raw(folder / f"{case.image_id}_{i}.npy", p) for i, p in enumerate(packed)]


@pytest.mark.parametrize("method", st.METHODS)
def test_infer_grid_from_files_equals_the_full_load_path(tmp_path, method):
    files = [_save_case(tmp_path, c) for c in _grid_cases()]
    for case, paths in zip(_grid_cases(), files):
        full = torch.from_numpy(uio.load_raw_batch(paths).astype(np.float32)).permute(0, 3, 1, 2) / uio.RAW_MAX
        for border in (2, 4, 16):
            want = st.infer_grid(full, kind="raw", border=border, method=method)  # torch scoring
            got = st.infer_grid_from_files(paths, border=border, method=method)  # NumPy scoring
            assert [c[:2] for c in got.candidates] == [c[:2] for c in want.candidates]
            assert [c[2] for c in got.candidates] == pytest.approx([c[2] for c in want.candidates], rel=1e-5)
            assert got.confidence == pytest.approx(want.confidence, rel=1e-4, abs=1e-6)
            assert (got.rows, got.cols, got.low_confidence) == (want.rows, want.cols, want.low_confidence)
            # the same NumPy scoring on the fully loaded stack: bit for bit
            stack = uio.load_raw_batch(paths)
            assert gs.choose_from_raw_strips(gs.raw_strips_of(stack, border), method=method)[0] == got
            if border == 4:
                assert (got.rows, got.cols) == (case.rows, case.cols)
    # batched: images with the same N in one call, same choices as one at a time (scores may differ
    # in the last bits: a batched matmul sums in another order)
    same_n = [files[0], files[1]]
    many = st.infer_grids_from_files(same_n, method=method)
    for a, b in zip(many, [st.infer_grid_from_files(p, method=method) for p in same_n], strict=True):
        assert [c[:2] for c in a.candidates] == [c[:2] for c in b.candidates]
        assert [c[2] for c in a.candidates] == pytest.approx([c[2] for c in b.candidates], rel=1e-5)
        assert a.confidence == pytest.approx(b.confidence, rel=1e-4, abs=1e-6)
    assert st.infer_grids_from_files([]) == []
    with pytest.raises(ValueError, match=r"every image needs the same N >= 1 patch files, got N in \[14, 35\]"):
        st.infer_grids_from_files([files[0], files[2]])


def test_infer_grid_from_files_errors_name_the_file(tmp_path):
    paths = _save_case(tmp_path, _grid_cases()[3])
    odd = uio.save_raw(tmp_path / "odd.npy", np.zeros((16, 12, 4), np.uint16))
    with pytest.raises(uio.RawFormatError, match=r"odd\.npy: \.npy header \(shape \(16, 12, 4\).*differs"):
        st.infer_grid_from_files([*paths[:-1], odd])
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage" * 20)
    with pytest.raises(uio.RawFormatError, match=r"bad\.npy: could not be read as \.npy"):
        st.infer_grid_from_files([*paths[:-1], tmp_path / "bad.npy"])
    with pytest.raises(ValueError, match=r"read_raw_strips: border 17 exceeds the 16x16 patches of .*_0\.npy"):
        st.infer_grid_from_files(paths, border=17)
    with pytest.raises(ValueError, match="border must be an integer >= 2, got 1"):
        st.infer_grid_from_files(paths, border=1)
    with pytest.raises(ValueError, match="unknown method 'median'"):
        st.infer_grid_from_files(paths, method="median")


def _reader_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("uotisp-strips")]


def _same_results(a, b):
    """Equal choices (exact floats) and equal exceptions (type and message), in order."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, Exception):
            assert (type(x), str(x)) == (type(y), str(y))
        else:
            assert x == y


@pytest.mark.parametrize("method", st.METHODS)
def test_prefetching_reader_returns_what_the_sequential_path_returns(tmp_path, method):
    files = [_save_case(tmp_path, c) for c in _grid_cases()]
    junk = tmp_path / "junk_1.npy"
    junk.write_bytes(b"\x93NUMPY garbage" * 20)
    hot = np.load(files[2][0])
    hot[0, 0, 1] = 2000  # in the top strip: out of the 10-bit range
    hot_path = tmp_path / "hot_0.npy"
    np.save(hot_path, hot)
    images = [
        files[0],
        [files[1][0], junk, *files[1][2:]],
        files[2],
        [*files[3][:-1], tmp_path / "gone_11.npy"],
        files[3],
        [hot_path, *files[2][1:]],
        files[1],
    ]
    seq = list(gs.iter_grids_from_files(images, method=method, prefetch=0))
    assert [type(r).__name__ for r in seq] == ["GridChoice", "RawFormatError", "GridChoice", "FileNotFoundError"] + [
        "GridChoice",
        "RawFormatError",
        "GridChoice",
    ]
    assert str(seq[1]).startswith(f"{junk}: could not be read as .npy")
    assert str(seq[3]) == f"{tmp_path / 'gone_11.npy'}: no such file; expected a .npy packed RAW patch (HxWx4)"
    assert str(seq[5]).startswith(f"{hot_path}: values outside the 10-bit range 0..1023 in its border strips")
    for i, k in ((0, 0), (2, 2), (4, 3), (6, 1)):
        assert seq[i] == st.infer_grid_from_files(files[k], method=method)
        assert (seq[i].rows, seq[i].cols) == (_grid_cases()[k].rows, _grid_cases()[k].cols)
    for prefetch in (1, 2, 8):
        _same_results(list(gs.iter_grids_from_files(images, method=method, prefetch=prefetch)), seq)
        assert _reader_threads() == []
    assert list(gs.iter_grids_from_files([], prefetch=2)) == []
    _same_results(list(gs.iter_grids_from_files(images[:1], method=method, prefetch=2)), seq[:1])


def test_prefetching_reader_stops_when_the_caller_stops_or_fails(tmp_path, monkeypatch):
    files = [_save_case(tmp_path, c) for c in _grid_cases()] * 3
    gen = gs.iter_grids_from_files(files, prefetch=2)
    assert next(gen) == st.infer_grid_from_files(files[0])
    gen.close()  # the caller breaks off: pending reads are cancelled, the running one joined
    assert _reader_threads() == []
    real = gs.choose_from_raw_strips
    calls = []

    def failing(raw, *args):
        calls.append(raw.paths[0])
        if len(calls) == 2:
            raise RuntimeError("scorer failed")
        return real(raw, *args)

    monkeypatch.setattr(gs, "choose_from_raw_strips", failing)
    with pytest.raises(RuntimeError, match="scorer failed"):
        list(gs.iter_grids_from_files(files, prefetch=2))
    assert _reader_threads() == []
    monkeypatch.setattr(gs, "choose_from_raw_strips", real)

    def reader_fails(paths, *args, **kwargs):
        raise MemoryError("reader failed")  # not a file problem: propagates from the thread

    monkeypatch.setattr(gs, "read_raw_strips", reader_fails)
    with pytest.raises(MemoryError, match="reader failed"):
        list(gs.iter_grids_from_files(files, prefetch=2))
    assert _reader_threads() == []
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"prefetch must be an integer >= 0, got {bad!r}"):
            next(gs.iter_grids_from_files(files, prefetch=bad))


def test_reader_advises_the_next_image_only_when_it_is_not_cached(tmp_path, monkeypatch):
    files = [_save_case(tmp_path, c) for c in _grid_cases()]
    assert uio.is_cached(files[1][-1])  # just written
    cached = {str(f[-1]): True for f in files}
    cached[str(files[2][-1])] = False  # image 2 is on the disk only
    advised = []
    monkeypatch.setattr(gs, "is_cached", lambda p: cached[str(p)])
    monkeypatch.setattr(gs, "advise_willneed", lambda paths: advised.append(list(paths)))
    got = list(gs.iter_grids_from_files(files, prefetch=0))
    assert got == [st.infer_grid_from_files(f) for f in files]
    assert advised == [files[2]]  # asked while reading image 1
    assert uio.is_cached(tmp_path / "missing.npy")  # the read reports it


def test_cli_layouts_only_writes_the_same_csv_and_no_images(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _write_raw_image(src, "scene_a", 2, 7, "astronaut", 0)
    _write_raw_image(src, "scene_b", 7, 2, "coffee", 1)
    uio.save_raw(src / "odd_0.npy", np.zeros((8, 8, 4), np.uint16))
    uio.save_raw(src / "odd_1.npy", np.zeros((8, 10, 4), np.uint16))
    assert _cli("--input", str(src), "--output", str(tmp_path / "full")) == 1
    assert _cli("--input", str(src), "--output", str(tmp_path / "fast"), "--layouts-only") == 1
    assert "inferred grids of 2 of 3 images (raw)" in capsys.readouterr().out
    full, fast = _read_csv(tmp_path / "full" / "layouts.csv"), _read_csv(tmp_path / "fast" / "layouts.csv")
    for k in ("scene_a", "scene_b"):
        assert fast[k] == full[k]
    assert (fast["scene_a"]["rows"], fast["scene_a"]["cols"]) == ("2", "7")
    assert fast["odd"]["status"].startswith(f"skipped: {src / 'odd_1.npy'}: .npy header (shape (8, 10, 4)")
    assert sorted(p.name for p in (tmp_path / "fast").iterdir()) == ["layouts.csv"]
    assert _reader_threads() == []


# --------------------------------------------------------------------------------------------------
# One scoring implementation (grid_scoring) for torch and NumPy, against the torch-only version it
# replaced (copied here as the oracle)
# --------------------------------------------------------------------------------------------------


def _old_strip_scores(strips, method):
    import math

    import torch.nn.functional as F

    def inner_step(s):
        return (s[..., 1:, :] - s[..., :-1, :]).abs().mean(dim=(-1, -2))

    def pair_costs(first, second, ia, ib):
        if method == "mean":
            return (first.index_select(1, ia) - second.index_select(1, ib)).abs().mean(dim=(-1, -2))
        jump = (first[:, :, -1].index_select(1, ia) - second[:, :, 0].index_select(1, ib)).abs().mean(dim=-1)
        inner = 0.5 * (inner_step(first).index_select(1, ia) + inner_step(second).index_select(1, ib))
        return 2.0 * (torch.log((jump + 2e-3) / (inner + 2e-3)) - math.log(2.0))

    n = strips.right.shape[1]
    if n == 1:
        return strips.right.new_zeros(strips.right.shape[0], 1)
    cols = torch.tensor([c for _, c in st.factor_pairs(n)])
    i = torch.arange(n - 1)
    claim_h = (i[None, :] % cols[:, None]) != (cols[:, None] - 1)
    widths = [int(c) for c in cols.tolist() if c < n]
    v_a = torch.cat([torch.arange(n - c) for c in widths])
    step = torch.cat([torch.full((n - c,), c) for c in widths])
    claim = torch.cat([claim_h, step[None, :] == cols[:, None]], dim=1).to(strips.right.dtype)
    cost = torch.cat([pair_costs(strips.right, strips.left, i, i + 1), pair_costs(strips.bottom, strips.top, v_a, v_a + step)], 1)
    if method == "mean":
        return (cost @ claim.T) / claim.sum(dim=1)
    return (F.softplus(cost) @ claim.T + F.softplus(-cost) @ (1 - claim).T) / cost.shape[1]


@pytest.mark.parametrize("method", st.METHODS)
@pytest.mark.parametrize("shape", [(12, 16, 16), (12, 16, 24), (7, 8, 8), (1, 8, 8), (36, 12, 12)])
def test_torch_and_numpy_scoring_equal_the_replaced_implementation(method, shape):
    n, h, w = shape
    g = torch.Generator().manual_seed(n * h + w)
    maps = torch.rand(3, n, h, w, generator=g)
    maps[1] = maps[1] * 0.1 + torch.linspace(0, 0.5, w)  # smooth content: small inner steps
    strips = st.border_strips(maps, 4)
    old = _old_strip_scores(strips, method)
    new = st.strip_scores(strips, method)
    assert new.shape == old.shape == (3, len(st.factor_pairs(n)))
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)
    arrays = [x.numpy() for x in (strips.right, strips.left, strips.bottom, strips.top)]
    np.testing.assert_allclose(gs.score_strips(*arrays, method=method), old.numpy(), rtol=1e-5, atol=1e-7)
    assert gs.score_strips(*arrays, method=method).dtype == np.float32
    # and the choices agree on the natural cases, torch full load vs NumPy
    for case in _grid_cases():
        a = st.infer_grid(case.raw.float() / uio.RAW_MAX, kind="raw", method=method)
        stack = case.raw.permute(0, 2, 3, 1).numpy().astype(np.uint16)
        b = gs.choose_from_raw_strips(gs.raw_strips_of(stack), method=method)[0]
        assert (a.rows, a.cols) == (b.rows, b.cols) == (case.rows, case.cols)
