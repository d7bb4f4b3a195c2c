"""Tests for uotisp_lib.io: RAW .npy, Bayer PNG, DNG (written here with pidng), sRGB, atomic writes."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from uotisp_lib import io as uio

from dng_writer import CM as _CM
from dng_writer import PIDNG_CFA as _PIDNG_CFA
from dng_writer import write_dng as _write_dng


def _one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------- read_raw


def test_save_raw_read_raw_round_trip_is_byte_identical(tmp_path):
    raw = _rng().integers(0, 1024, size=(5, 7, 4), dtype=np.uint16)
    raw[0, 0] = [0, 1023, 512, 1]
    path = uio.save_raw(tmp_path / "a_0.npy", raw)
    back = uio.read_raw(path)
    assert back.dtype == np.uint16 and back.shape == (5, 7, 4)
    assert back.tobytes() == raw.tobytes()
    uio.save_raw(tmp_path / "b_0.npy", back)
    assert (tmp_path / "b_0.npy").read_bytes() == path.read_bytes()


def test_read_raw_converts_any_integer_dtype(tmp_path):
    raw = np.array([[[0, 5, 1023, 7]]], dtype=np.int64)
    np.save(tmp_path / "i.npy", raw)
    out = uio.read_raw(tmp_path / "i.npy")
    assert out.dtype == np.uint16 and out.tolist() == [[[0, 5, 1023, 7]]]


def test_read_raw_bits_sets_the_range(tmp_path):
    np.save(tmp_path / "r.npy", np.full((1, 1, 4), 4095, np.uint16))
    assert int(uio.read_raw(tmp_path / "r.npy", bits=12).max()) == 4095
    with pytest.raises(uio.RawFormatError, match=r"outside the 10-bit range 0\.\.1023: found min 4095, max 4095"):
        uio.read_raw(tmp_path / "r.npy")
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.16"):
        uio.read_raw(tmp_path / "r.npy", bits=17)


def test_read_raw_missing_file(tmp_path):
    path = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy: no such file; expected a .npy packed RAW patch") as err:
        uio.read_raw(path)
    _one_line_naming(err, path)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello world" * 20, "no NumPy header"),
        (b"", "no NumPy header"),
        ("truncated", "could only read"),
    ],
)
def test_read_raw_corrupt_file(tmp_path, content, reason):
    path = tmp_path / "bad.npy"
    if content == "truncated":
        np.save(path, np.zeros((4, 4, 4), np.uint16))
        path.write_bytes(path.read_bytes()[:-10])
    else:
        path.write_bytes(content)
    with pytest.raises(uio.RawFormatError, match=rf"bad\.npy: could not be read as \.npy \(.*{reason}") as err:
        uio.read_raw(path)
    _one_line_naming(err, path)


def test_read_raw_rejects_npz_and_object_arrays(tmp_path):
    np.savez(tmp_path / "z.npy", a=np.zeros((1, 1, 4)))  # savez appends .npz
    with pytest.raises(uio.RawFormatError, match=r"z\.npy\.npz: could not be read as \.npy \(it is an \.npz archive"):
        uio.read_raw(tmp_path / "z.npy.npz")
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(uio.RawFormatError, match=r"o\.npy: could not be read as \.npy \(Object arrays"):
        uio.read_raw(tmp_path / "o.npy")


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((4, 4, 3), np.uint16), r"expected HxWx4 packed RGGB \[R, Gr, Gb, B\] \(H, W > 0\), got shape \(4, 4, 3\)"),
        (np.zeros((16, 4), np.uint16), r"expected HxWx4 packed RGGB .* got shape \(16, 4\)"),
        (np.zeros((0, 4, 4), np.uint16), r"got shape \(0, 4, 4\)"),
        (np.zeros((2, 2, 4), np.float32), r"expected an integer dtype \(uint16 values 0\.\.1023\), got dtype float32"),
        (np.zeros((2, 2, 4), np.bool_), r"got dtype bool"),
        (np.full((2, 2, 4), 1024, np.uint16), r"outside the 10-bit range 0\.\.1023: found min 1024, max 1024"),
        (np.full((2, 2, 4), -3, np.int16), r"outside the 10-bit range 0\.\.1023: found min -3, max -3"),
    ],
)
def test_read_raw_validates_content(tmp_path, arr, match):
    path = tmp_path / "x_0.npy"
    np.save(path, arr)
    with pytest.raises(uio.RawFormatError, match=match) as err:
        uio.read_raw(path)
    _one_line_naming(err, path)


def test_load_raw_batch_stacks_in_order_and_names_bad_files(tmp_path):
    raws = [np.full((2, 3, 4), v, np.uint16) for v in (1, 2, 3)]
    paths = [uio.save_raw(tmp_path / f"p_{i}.npy", r) for i, r in enumerate(raws)]
    batch = uio.load_raw_batch([paths[2], paths[0], paths[1]])
    assert batch.shape == (3, 2, 3, 4) and batch.dtype == np.uint16
    assert batch[:, 0, 0, 0].tolist() == [3, 1, 2]
    odd = uio.save_raw(tmp_path / "odd.npy", np.zeros((3, 3, 4), np.uint16))
    with pytest.raises(uio.RawFormatError, match=r"odd\.npy: shape \(3, 3, 4\) differs from \(2, 3, 4\) of .*p_0\.npy"):
        uio.load_raw_batch([paths[0], paths[1], odd])
    (tmp_path / "bad.npy").write_bytes(b"x")
    with pytest.raises(uio.RawFormatError, match=r"bad\.npy: could not be read"):
        uio.load_raw_batch([paths[0], tmp_path / "bad.npy", odd])
    with pytest.raises(ValueError, match="no paths given"):
        uio.load_raw_batch([])


# ------------------------------------------------------------------------------------- Bayer


def _mosaic_from_packed(packed: np.ndarray) -> np.ndarray:
    """RGGB mosaic (R at 0,0) from packed [R, Gr, Gb, B]: the inverse of packing, written out here."""
    h, w, _ = packed.shape
    m = np.zeros((2 * h, 2 * w), packed.dtype)
    m[0::2, 0::2], m[0::2, 1::2] = packed[..., 0], packed[..., 1]
    m[1::2, 0::2], m[1::2, 1::2] = packed[..., 2], packed[..., 3]
    return m


#: pattern -> rows/cols to add at top/left of an RGGB mosaic to obtain that pattern.
_PAD = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}


def _mosaic_with_pattern(packed: np.ndarray, pattern: str, fill: int = 7) -> np.ndarray:
    """Mosaic whose top-left 2x2 reads ``pattern``: pad an RGGB mosaic by one row/col each side."""
    dy, dx = _PAD[pattern]
    return np.pad(_mosaic_from_packed(packed), ((dy, dy), (dx, dx)), constant_values=fill)


def test_pack_bayer_known_values_rggb():
    m = np.arange(16, dtype=np.uint16).reshape(4, 4)
    p = uio.pack_bayer(m)
    assert p.shape == (2, 2, 4) and p.dtype == np.uint16
    assert p[0, 0].tolist() == [0, 1, 4, 5] and p[1, 1].tolist() == [10, 11, 14, 15]


@pytest.mark.parametrize("pattern", uio.BAYER_PATTERNS)
def test_pack_bayer_every_pattern_recovers_the_packed_array(pattern):
    packed = _rng(1).integers(0, 1024, size=(3, 5, 4), dtype=np.uint16)
    mosaic = _mosaic_with_pattern(packed, pattern)
    assert uio.bayer_offset(pattern) == _PAD[pattern]
    np.testing.assert_array_equal(uio.pack_bayer(mosaic, pattern), packed)


def test_pack_bayer_trims_odd_sides_and_rejects_bad_input():
    assert uio.pack_bayer(np.zeros((5, 7)), "RGGB").shape == (2, 3, 4)
    assert uio.pack_bayer(np.zeros((5, 7)), "BGGR").shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"CFA pattern 'RGBG' is not a 2x2 Bayer pattern; expected one of RGGB, GRBG"):
        uio.pack_bayer(np.zeros((4, 4)), "RGBG")
    with pytest.raises(ValueError, match=r"expected a 2-D Bayer mosaic HxW, got shape \(4, 4, 1\)"):
        uio.pack_bayer(np.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="too small"):
        uio.pack_bayer(np.zeros((2, 2)), "BGGR")


def test_read_bayer_png_packs_and_validates(tmp_path):
    import imageio.v3 as iio

    packed = _rng(2).integers(0, 1024, size=(4, 6, 4), dtype=np.uint16)
    iio.imwrite(tmp_path / "ok.png", _mosaic_from_packed(packed))
    out = uio.read_bayer_png(tmp_path / "ok.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, packed)

    iio.imwrite(tmp_path / "hi.png", np.full((4, 4), 1024, np.uint16))
    with pytest.raises(uio.RawFormatError, match=r"hi\.png: values outside the 10-bit range 0\.\.1023: found min 1024"):
        uio.read_bayer_png(tmp_path / "hi.png")
    iio.imwrite(tmp_path / "u8.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(uio.RawFormatError, match=r"u8\.png: expected a 16-bit 1-channel Bayer PNG, got dtype uint8"):
        uio.read_bayer_png(tmp_path / "u8.png")
    iio.imwrite(tmp_path / "odd.png", np.zeros((4, 5), np.uint16))
    with pytest.raises(uio.RawFormatError, match=r"odd\.png: expected even height and width .* got \(4, 5\)"):
        uio.read_bayer_png(tmp_path / "odd.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(uio.RawFormatError, match=r"bad\.png: could not be read as PNG"):
        uio.read_bayer_png(tmp_path / "bad.png")


# ------------------------------------------------------------------------------------- DNG

#: XYZ -> camera ColorMatrix1 written into the test DNGs (rationals over 10000).
#: LibRaw's linear sRGB -> XYZ (D65) constant, used to predict its camera -> sRGB matrix.
_XYZ_RGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "BGGR", "GBRG"])
def test_read_dng_round_trips_packed_values_for_any_cfa(tmp_path, pattern):
    pytest.importorskip("rawpy")
    packed = _rng(3).integers(0, 1024, size=(12, 13, 4), dtype=np.uint16)  # LibRaw needs >= 22 px
    mosaic = _mosaic_with_pattern(packed, pattern)
    dy, dx = _PAD[pattern]
    # per-site black levels of the *file* pattern, chosen so each packed channel gets a distinct one
    site_black = {"R": 60, "B": 66}
    letters = pattern
    greens = [i for i, c in enumerate(letters) if c == "G"]
    # green on the red row is Gr (62), on the blue row Gb (64)
    red_row = letters.index("R") // 2
    black = [site_black.get(c, 0) for c in letters]
    for i in greens:
        black[i] = 62 if i // 2 == red_row else 64
    dng = uio.read_dng(_write_dng(tmp_path / f"{pattern}.dng", mosaic, _PIDNG_CFA[pattern], black))
    assert dng.cfa_pattern == pattern and dng.crop == (dy, dx)
    np.testing.assert_array_equal(dng.packed, packed)
    assert dng.packed.dtype == np.uint16
    assert dng.black_level == (60, 62, 64, 66)
    assert dng.white_level == 1023 and dng.bits == 10
    assert dng.camera_wb == pytest.approx((2.0, 1.0, 4.0), rel=1e-4)


def test_read_dng_colour_matrices(tmp_path):
    pytest.importorskip("rawpy")
    mosaic = _mosaic_from_packed(np.full((12, 12, 4), 100, np.uint16))
    dng = uio.read_dng(_write_dng(tmp_path / "c.dng", mosaic, _PIDNG_CFA["RGGB"], [0, 0, 0, 0]))
    # LibRaw: cam_rgb = CM @ xyz_rgb with rows normalised to sum 1, cam_to_srgb = its inverse
    cam_rgb = _CM @ _XYZ_RGB
    cam_rgb /= cam_rgb.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dng.cam_to_srgb, np.linalg.inv(cam_rgb), atol=2e-3)
    np.testing.assert_allclose(dng.cam_to_srgb.sum(axis=1), 1.0, atol=1e-4)
    # LibRaw leaves cam_xyz empty for DNG (LibRaw issue #751); if a later LibRaw fills it, it is CM
    if dng.rgb_xyz_matrix is not None:
        np.testing.assert_allclose(dng.rgb_xyz_matrix, _CM, atol=1e-3)


def test_dng_to_packed10_known_values(tmp_path):
    pytest.importorskip("rawpy")
    packed = np.zeros((12, 12, 4), np.uint16)
    packed[0, 0] = [64, 64, 64, 64]  # black -> 0
    packed[0, 1] = [4095, 4095, 4095, 4095]  # white -> 1023
    packed[0, 2] = [1064, 1065, 1066, 1067]  # black + 1000 -> 1000 / (4095 - black) * 1023 ~ 253.8
    packed[0, 3] = [10, 10, 10, 10]  # below black -> clipped to 0
    black = [64, 65, 66, 67]  # RGGB sites R, Gr, Gb, B
    dng = uio.read_dng(_write_dng(tmp_path / "s.dng", _mosaic_from_packed(packed), _PIDNG_CFA["RGGB"], black, white=4095))
    assert dng.bits == 12 and dng.black_level == (64, 65, 66, 67)
    out = uio.dng_to_packed10(dng)
    assert out.dtype == np.uint16
    assert out[0, 0].tolist() == [0, 0, 0, 0] and out[0, 1].tolist() == [1023] * 4
    expected = [round(1000 / (4095 - 64 - c) * 1023) for c in range(4)]
    assert out[0, 2].tolist() == expected == [254, 254, 254, 254]
    assert out[0, 3].tolist() == [0, 0, 0, 0]


def test_dng_to_packed10_is_identity_for_black0_white1023(tmp_path):
    pytest.importorskip("rawpy")
    packed = _rng(4).integers(0, 1024, size=(11, 12, 4), dtype=np.uint16)
    mosaic = _mosaic_with_pattern(packed, "GRBG")
    dng = uio.read_dng(_write_dng(tmp_path / "g.dng", mosaic, _PIDNG_CFA["GRBG"], [0, 0, 0, 0]))
    np.testing.assert_array_equal(uio.dng_to_packed10(dng), packed)


def test_read_dng_rejects_corrupt_and_non_bayer_files(tmp_path):
    pytest.importorskip("rawpy")
    junk = tmp_path / "junk.dng"
    junk.write_bytes(b"not a dng" * 50)
    with pytest.raises(uio.RawFormatError, match=r"junk\.dng: could not be read as DNG/RAW by LibRaw \(Unsupported") as err:
        uio.read_dng(junk)
    _one_line_naming(err, junk)

    mosaic = _rng(5).integers(0, 1024, size=(24, 24), dtype=np.uint16)
    good = _write_dng(tmp_path / "full.dng", mosaic, _PIDNG_CFA["RGGB"], [0, 0, 0, 0])
    cut = tmp_path / "cut.dng"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(uio.RawFormatError, match=r"cut\.dng: could not be read as DNG/RAW by LibRaw"):
        uio.read_dng(cut)

    stripes = _write_dng(tmp_path / "stripes.dng", mosaic, [0, 1, 2, 1], [0, 0, 0, 0])  # R G / B G
    with pytest.raises(uio.RawFormatError, match=r"stripes\.dng: CFA pattern 'RGBG' is not a 2x2 Bayer pattern"):
        uio.read_dng(stripes)
    four = _write_dng(tmp_path / "four.dng", mosaic, [0, 1, 2, 3], [0, 0, 0, 0])  # 4 colours
    with pytest.raises(uio.RawFormatError, match=r"four\.dng: expected a 2x2 Bayer CFA with 3 colours"):
        uio.read_dng(four)
    with pytest.raises(FileNotFoundError, match=r"missing\.dng: no such file; expected a Bayer DNG file"):
        uio.read_dng(tmp_path / "missing.dng")


# ------------------------------------------------------------------------------------- sRGB


def _smooth_rgb(h: int = 32, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


def test_save_image_png_is_lossless(tmp_path):
    img = _rng(6).integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    back = uio.read_srgb(uio.save_image(tmp_path / "a.png", img))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)


def test_save_image_png_levels_are_lossless_and_trade_size(tmp_path):
    img = _smooth_rgb()
    sizes = {}
    for level in (None, 0, 1, 9):
        path = uio.save_image(tmp_path / f"a{level}.png", img, png_level=level)
        np.testing.assert_array_equal(uio.read_srgb(path), img)
        sizes[level] = path.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[None] >= sizes[9], sizes  # 0 stores, 9 compresses most
    with pytest.raises(ValueError, match=r"a\.png: png_level 10: expected an integer from 0 to 9"):
        uio.save_image(tmp_path / "a.png", img, png_level=10)


@pytest.mark.parametrize("quality", [95, 100])
def test_save_image_jpeg_high_quality_is_close(tmp_path, quality):
    img = _smooth_rgb()
    back = uio.read_srgb(uio.save_image(tmp_path / "a.jpg", img, quality=quality))
    diff = np.abs(back.astype(int) - img.astype(int))
    assert back.shape == img.shape and diff.mean() < 1.5 and diff.max() <= 12, (diff.mean(), diff.max())


def test_save_image_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"a\.tif: unsupported image suffix '\.tif'"):
        uio.save_image(tmp_path / "a.tif", _smooth_rgb())
    with pytest.raises(ValueError, match=r"a\.png: expected uint8 HxWx3, got float32"):
        uio.save_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.float32))


def test_read_srgb_gray_alpha_and_palette(tmp_path):
    from PIL import Image

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = uio.read_srgb(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and all((out[..., c] == gray).all() for c in range(3))

    rgba = np.concatenate([_smooth_rgb(4, 5), np.full((4, 5, 1), 9, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(uio.read_srgb(tmp_path / "a.png"), rgba[..., :3])

    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(uio.read_srgb(tmp_path / "la.png")[..., 1], gray)

    rgb = _smooth_rgb(4, 5)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    pal = uio.read_srgb(tmp_path / "p.png")
    assert pal.shape == (4, 5, 3) and np.abs(pal.astype(int) - rgb).max() <= 8

    Image.fromarray(gray > 100).save(tmp_path / "b.png")
    assert sorted(np.unique(uio.read_srgb(tmp_path / "b.png")).tolist()) == [0, 255]


def test_read_srgb_16bit_needs_opt_in(tmp_path):
    import imageio.v3 as iio

    g16 = np.array([[0, 257, 32896, 65535]], np.uint16)
    iio.imwrite(tmp_path / "g16.png", g16)
    with pytest.raises(uio.ImageFormatError, match=r"g16\.png: expected an 8-bit sRGB image, got dtype uint16 \(pass allow_16bit=True"):
        uio.read_srgb(tmp_path / "g16.png")
    out = uio.read_srgb(tmp_path / "g16.png", allow_16bit=True)
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_read_srgb_errors_name_the_file(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match=r"none\.jpg: no such file; expected an sRGB JPEG or PNG image"):
        uio.read_srgb(tmp_path / "none.jpg")
    uio.save_image(tmp_path / "t.jpg", _smooth_rgb())
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "t.jpg").read_bytes()[:300])
    with pytest.raises(uio.ImageFormatError, match=r"cut\.jpg: could not be read as an image") as err:
        uio.read_srgb(cut)
    _one_line_naming(err, cut)
    (tmp_path / "junk.png").write_bytes(b"junk" * 10)
    with pytest.raises(uio.ImageFormatError, match=r"junk\.png: could not be read as an image"):
        uio.read_srgb(tmp_path / "junk.png")
    Image.fromarray(_smooth_rgb(8, 8)).convert("CMYK").save(tmp_path / "c.jpg")
    with pytest.raises(uio.ImageFormatError, match=r"c\.jpg: expected an RGB, RGBA or grayscale image, got CMYK"):
        uio.read_srgb(tmp_path / "c.jpg")
    with pytest.raises(IsADirectoryError, match="is not a regular file"):
        uio.read_srgb(tmp_path)


# ------------------------------------------------------------------------------------- atomic writes


def test_atomic_open_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = uio.atomic_write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError, match="boom"):
        with uio.atomic_open(path, "wb") as fh:
            fh.write(b"new partial data")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.txt"]
    uio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["t.txt"]


def test_save_raw_rejects_bad_array_without_touching_the_old_file(tmp_path):
    old = np.ones((2, 2, 4), np.uint16)
    path = uio.save_raw(tmp_path / "r.npy", old)
    before = path.read_bytes()
    with pytest.raises(uio.RawFormatError, match=r"r\.npy: values exceed the 10-bit range 0\.\.1023 \(max 2000\)"):
        uio.save_raw(path, np.full((2, 2, 4), 2000, np.uint16))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["r.npy"]


def test_save_image_interrupted_encoding_keeps_old_file(tmp_path, monkeypatch):
    path = uio.save_image(tmp_path / "i.png", _smooth_rgb(4, 4))
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(uio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        uio.save_image(path, np.zeros((4, 4, 3), np.uint8))
    assert path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if re.search(r"\.tmp$", p)] == []


# --------------------------------------------------------------------------------------------------
# read_raw_strips: border strips only (fast path of grid inference)
# --------------------------------------------------------------------------------------------------


def _patches(tmp_path, n=3, shape=(6, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, uio.RAW_MAX + 1, shape, dtype=np.uint16) for _ in range(n)]
    return arrays, [uio.save_raw(tmp_path / f"p_{i}.npy", a) for i, a in enumerate(arrays)]


@pytest.mark.parametrize("border", [1, 2, 5])
def test_read_raw_strips_equal_slices_of_read_raw(tmp_path, border):
    arrays, paths = _patches(tmp_path)
    s = uio.read_raw_strips(paths, border)
    full = np.stack([uio.read_raw(p) for p in paths])
    assert s.shape == (6, 5, 4) and s.paths == tuple(paths)
    assert all(x.dtype == np.uint16 for x in (s.right, s.left, s.bottom, s.top))
    assert np.array_equal(s.right, full[:, :, -border:]) and np.array_equal(s.left, full[:, :, :border])
    assert np.array_equal(s.bottom, full[:, -border:]) and np.array_equal(s.top, full[:, :border])


def test_read_raw_strips_other_integer_dtypes_and_fortran_order(tmp_path):
    a = np.arange(6 * 5 * 4, dtype=np.int32).reshape(6, 5, 4)
    for i in range(2):
        np.save(tmp_path / f"i_{i}.npy", np.asfortranarray(a + i))
    s = uio.read_raw_strips([tmp_path / "i_0.npy", tmp_path / "i_1.npy"], 2)
    assert s.right.dtype == np.uint16 and np.array_equal(s.right[1], (a + 1)[:, -2:])
    assert np.array_equal(s.top[0], a[:2])


def test_read_raw_strips_errors_name_the_file(tmp_path):
    _, paths = _patches(tmp_path)
    other = uio.save_raw(tmp_path / "other.npy", np.zeros((6, 7, 4), np.uint16))
    want = rf"^{re.escape(str(other))}: \.npy header \(shape \(6, 7, 4\).* differs from \(shape \(6, 5, 4\).* of {re.escape(str(paths[0]))}"
    with pytest.raises(uio.RawFormatError, match=want):
        uio.read_raw_strips([*paths, other], 2)
    np.save(tmp_path / "i32.npy", np.zeros((6, 5, 4), np.int32))
    with pytest.raises(uio.RawFormatError, match=r"i32\.npy: \.npy header \(shape \(6, 5, 4\), dtype int32"):
        uio.read_raw_strips([paths[0], tmp_path / "i32.npy"], 2)
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all, but long enough to compare" * 4)
    with pytest.raises(uio.RawFormatError, match=rf"^{re.escape(str(tmp_path / 'junk.npy'))}: could not be read as \.npy"):
        uio.read_raw_strips([paths[0], tmp_path / "junk.npy"], 2)
    with pytest.raises(uio.RawFormatError, match=r"junk\.npy: could not be read as \.npy"):
        uio.read_raw_strips([tmp_path / "junk.npy"], 2)
    data = paths[1].read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-10])
    with pytest.raises(uio.RawFormatError, match=r"cut\.npy: could not be read as \.npy \(truncated"):
        uio.read_raw_strips([paths[0], tmp_path / "cut.npy"], 2)
    with pytest.raises(FileNotFoundError, match=r"gone\.npy: no such file"):
        uio.read_raw_strips([paths[0], tmp_path / "gone.npy"], 2)
    np.save(tmp_path / "flat.npy", np.zeros((6, 5), np.uint16))
    with pytest.raises(uio.RawFormatError, match=r"flat\.npy: expected HxWx4 .* got shape \(6, 5\)"):
        uio.read_raw_strips([tmp_path / "flat.npy"], 2)
    np.save(tmp_path / "f.npy", np.zeros((6, 5, 4), np.float32))
    with pytest.raises(uio.RawFormatError, match=r"f\.npy: expected an integer dtype"):
        uio.read_raw_strips([tmp_path / "f.npy"], 2)
    with pytest.raises(ValueError, match="no paths given"):
        uio.read_raw_strips([], 2)


def test_read_raw_strips_border_and_range(tmp_path):
    _, paths = _patches(tmp_path)
    with pytest.raises(ValueError, match=r"read_raw_strips: border 6 exceeds the 6x5 patches of .*p_0\.npy"):
        uio.read_raw_strips(paths, 6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="border must be a positive integer"):
            uio.read_raw_strips(paths, bad)
    hot = np.zeros((6, 5, 4), np.uint16)
    hot[0, 0, 1] = 2000
    np.save(tmp_path / "hot.npy", hot)
    with pytest.raises(uio.RawFormatError, match=r"hot\.npy: values outside the 10-bit range 0\.\.1023 in its border strips: found min 0, max 2000"):
        uio.read_raw_strips([paths[0], tmp_path / "hot.npy"], 2)
    assert uio.read_raw_strips([tmp_path / "hot.npy"], 2, bits=11).top[0, 0, 0, 1] == 2000
    neg = np.zeros((6, 5, 4), np.int32)
    neg[5, 4, 3] = -3  # other integer dtypes are range-checked before the cast to uint16
    np.save(tmp_path / "neg.npy", neg)
    with pytest.raises(uio.RawFormatError, match=r"neg\.npy: values outside .* found min -3, max 0"):
        uio.read_raw_strips([tmp_path / "neg.npy"], 2)
    inner = np.zeros((6, 5, 4), np.uint16)
    inner[3, 2, 0] = 4000  # interior pixel: never read (documented)
    np.save(tmp_path / "inner.npy", inner)
    assert uio.read_raw_strips([tmp_path / "inner.npy"], 2).right.max() == 0


# ------------------------------------------------------------------- read_srgb's JPEG fast path
def _photo_crop(h: int = 48, w: int = 64) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:100 + h, 150:150 + w])


def _pillow_decode(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("variant", ["baseline", "progressive", "subsampled 4:2:0", "grayscale", "png"])
def test_read_srgb_fast_jpeg_path_equals_pillow(tmp_path, variant):
    from PIL import Image

    img = _photo_crop()
    path = tmp_path / ("a.png" if variant == "png" else "a.jpg")
    pil = Image.fromarray(img).convert("L") if variant == "grayscale" else Image.fromarray(img)
    kw = {"png": {}, "baseline": {"quality": 95, "subsampling": 0}, "progressive": {"quality": 90, "progressive": True},
          "grayscale": {"quality": 95}, "subsampled 4:2:0": {"quality": 80, "subsampling": 2}}[variant]
    pil.save(path, **kw)
    fast = uio._decode_colour_jpeg(path)
    assert (fast is None) == (variant in ("png", "grayscale"))  # only colour JPEGs take the fast path
    got = uio.read_srgb(path)
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    np.testing.assert_array_equal(got, _pillow_decode(path))  # bit-identical to Pillow's decode


def test_read_srgb_jpeg_errors_are_unchanged(tmp_path):
    from PIL import Image

    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo_crop()).convert("CMYK").save(cmyk, quality=95)
    assert uio._decode_colour_jpeg(cmyk) is None
    with pytest.raises(uio.ImageFormatError, match=r"cmyk\.jpg: expected an RGB, RGBA or grayscale image, got CMYK"):
        uio.read_srgb(cmyk)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(uio.ImageFormatError, match=r"bad\.jpg: could not be read as an image"):
        uio.read_srgb(bad)
